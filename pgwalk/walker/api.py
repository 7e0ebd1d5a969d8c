"""The public walk entry points (include/linux/pagewalk.h), on the compiled
core.  Each applies the kernel's checks in the kernel's order, then runs the
Cython walker.

``stats=pgwalk.WalkStats()`` (keyword) asks for the walk's counters: calls
per slot (the indirect calls made), tables and entries visited, and what the
walk changed in the mm's counters (tables allocated, splits)."""

from . import _core
from ._args import check_mm, check_ops, check_pgd, check_range, check_stats, check_vma
from ..constants import EINVAL


def walk_page_range(mm, start, end, ops, private=None, *, stats=None):
    """Walk ``[start, end)`` of ``mm`` VMA by VMA.  Returns 0, the first
    non-zero callback result, or a negative errno.  Refuses ``install_pte``."""
    check_mm(mm)
    check_ops(ops)
    check_stats(stats)
    check_range(mm, start, end)
    if ops.install_pte is not None:
        return -EINVAL
    return _walk_page_range_mm(mm, start, end, ops, private, stats)


def _walk_page_range_mm(mm, start, end, ops, private, stats=None):
    if start >= end or mm is None:
        return -EINVAL
    mm._process_mm_walk_lock(ops.walk_lock)
    return _core._walk_range(mm, start, end, ops, private, stats)


def walk_page_range_vma(vma, start, end, ops, private=None, *, stats=None):
    """Walk ``[start, end)`` inside one VMA; no ``test_walk``, no PFN-map skip."""
    check_vma(vma)
    check_ops(ops)
    check_stats(stats)
    mm = vma.vm_mm
    check_range(mm, start, end)
    if start >= end or mm is None:
        return -EINVAL
    if start < vma.vm_start or end > vma.vm_end:
        return -EINVAL
    if ops.install_pte is not None:
        return -EINVAL
    mm._process_mm_walk_lock(ops.walk_lock)
    mm._process_vma_walk_lock(vma, ops.walk_lock)
    return _core._walk_vma(vma, start, end, ops, private, stats)


def walk_page_vma(vma, ops, private=None, *, stats=None):
    """Walk the whole of one VMA; no ``test_walk``, no PFN-map skip."""
    check_vma(vma)
    check_ops(ops)
    check_stats(stats)
    mm = vma.vm_mm
    if mm is None or ops.install_pte is not None:
        return -EINVAL
    mm._process_mm_walk_lock(ops.walk_lock)
    mm._process_vma_walk_lock(vma, ops.walk_lock)
    return _core._walk_vma(vma, vma.vm_start, vma.vm_end, ops, private, stats)


def walk_page_range_novma(mm, start, end, ops, pgd=None, private=None, *, stats=None):
    """Walk page tables with no VMAs (ptdump-style), optionally another
    tree's top-level table ``pgd``.  Huge leaves are never split."""
    check_mm(mm)
    check_ops(ops)
    check_stats(stats)
    check_pgd(mm, pgd)
    check_range(mm, start, end)
    if start >= end or mm is None:
        return -EINVAL
    if ops.install_pte is not None:
        return -EINVAL
    mm._assert_novma_lock()
    return _core._walk_novma(mm, start, end, ops, pgd, private, stats)
