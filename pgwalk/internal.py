"""mm-internal entry points (the kernel's mm/internal.h), kept importable as
``pgwalk.internal``; ``walk_page_range_mm`` lives in ``pgwalk.walker.internal``.

``walk_page_range_mm`` is the only entry point that accepts ``install_pte``;
the guard-region code and other mm internals use it."""

from .walker.internal import walk_page_range_mm

__all__ = ["walk_page_range_mm"]
