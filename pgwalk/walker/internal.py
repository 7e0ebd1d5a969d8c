"""The mm-internal walk entry points (the kernel's ``mm/internal.h``).

They accept unsafe ops (``install_pte``); guard regions and other mm
internals use them.  ``walk_page_range_mm`` is 6.13's name of
``walk_page_range_mm_unsafe``; ``walk_page_range_vma_unsafe`` is today's."""

from ._args import check_kernel, check_mm, check_ops, check_range, check_stats, check_vma
from .api import _walk_page_range_mm, _walk_page_range_vma, walk_page_range_debug

__all__ = ["walk_page_range_debug", "walk_page_range_mm", "walk_page_range_mm_unsafe",
           "walk_page_range_vma_unsafe"]


def walk_page_range_mm_unsafe(mm, start, end, ops, private=None, *, stats=None, kernel=None):
    """``walk_page_range`` without the ``install_pte`` refusal."""
    check_mm(mm)
    check_ops(ops)
    check_stats(stats)
    check_range(mm, start, end)
    return _walk_page_range_mm(mm, start, end, ops, private, stats, check_kernel(kernel))


walk_page_range_mm = walk_page_range_mm_unsafe          # 6.13's name


def walk_page_range_vma_unsafe(vma, start, end, ops, private=None, *, stats=None, kernel=None):
    """``walk_page_range_vma`` without the ``install_pte`` refusal."""
    check_vma(vma)
    check_ops(ops)
    check_stats(stats)
    return _walk_page_range_vma(vma, start, end, ops, private, stats, check_kernel(kernel), False)
