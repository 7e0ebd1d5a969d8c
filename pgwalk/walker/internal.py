"""The mm-internal walk entry point (the kernel's ``mm/internal.h``).

``walk_page_range_mm`` is the only entry point that accepts ``install_pte``;
guard regions and other mm internals use it."""

from ._args import check_mm, check_ops, check_range, check_stats
from .api import _walk_page_range_mm

__all__ = ["walk_page_range_mm"]


def walk_page_range_mm(mm, start, end, ops, private=None, *, stats=None):
    """``walk_page_range`` without the ``install_pte`` refusal."""
    check_mm(mm)
    check_ops(ops)
    check_stats(stats)
    check_range(mm, start, end)
    return _walk_page_range_mm(mm, start, end, ops, private, stats)
