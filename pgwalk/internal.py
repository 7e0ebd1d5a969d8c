"""mm-internal entry points (the kernel's mm/internal.h), kept importable as
``pgwalk.internal``; they live in ``pgwalk.walker.internal``.

They accept unsafe ops (``install_pte``): ``walk_page_range_mm_unsafe``
(6.13's ``walk_page_range_mm``, kept) and ``walk_page_range_vma_unsafe``;
``walk_page_range_debug`` is the debug-only no-VMA walk (ptdump)."""

from .walker.internal import (
    walk_page_range_debug, walk_page_range_mm, walk_page_range_mm_unsafe,
    walk_page_range_vma_unsafe,
)

__all__ = ["walk_page_range_debug", "walk_page_range_mm", "walk_page_range_mm_unsafe",
           "walk_page_range_vma_unsafe"]
