"""The public walk entry points (include/linux/pagewalk.h), on the compiled
core.  Each applies the kernel's checks in the kernel's order, then runs the
Cython walker.

``stats=pgwalk.WalkStats()`` (keyword) asks for the walk's counters: calls
per slot (the indirect calls made), tables and entries visited, and what the
walk changed in the mm's counters (tables allocated, splits).

``kernel="6.13"|"7.0"|"today"`` (keyword; default ``get_default_kernel()``,
"6.13" unless changed) picks the level loops: 6.13's, 7.0's (the PUD
re-check) or today's (and the action reset, 7.3 on)
(docs/pagewalk-releases.md).  Every entry point takes it.

Entry points of 6.13 and of today's kernel live side by side:
``walk_page_range_novma`` (6.13) beside ``walk_kernel_page_table_range``,
``walk_kernel_page_table_range_lockless`` and ``walk_page_range_debug``."""

from . import _core
from ._args import (
    check_kernel, check_mm, check_ops, check_ops_safe, check_pgd, check_range, check_stats,
    check_vma,
)
from ..constants import EINVAL


def walk_page_range(mm, start, end, ops, private=None, *, stats=None, kernel=None):
    """Walk ``[start, end)`` of ``mm`` VMA by VMA.  Returns 0, the first
    non-zero callback result, or a negative errno.  Refuses ``install_pte``."""
    check_mm(mm)
    check_ops(ops)
    check_stats(stats)
    check_range(mm, start, end)
    newer = check_kernel(kernel)
    if not check_ops_safe(ops):
        return -EINVAL
    return _walk_page_range_mm(mm, start, end, ops, private, stats, newer)


def _walk_page_range_mm(mm, start, end, ops, private, stats=None, newer=0):
    if start >= end or mm is None:
        return -EINVAL
    mm._process_mm_walk_lock(ops.walk_lock)
    return _core._walk_range(mm, start, end, ops, private, stats, newer)


def _walk_page_range_vma(vma, start, end, ops, private, stats, newer, safe_only):
    mm = vma.vm_mm
    check_range(mm, start, end)
    if safe_only and not check_ops_safe(ops):
        return -EINVAL
    if start >= end or mm is None:
        return -EINVAL
    if start < vma.vm_start or end > vma.vm_end:
        return -EINVAL
    mm._process_mm_walk_lock(ops.walk_lock)
    mm._process_vma_walk_lock(vma, ops.walk_lock)
    return _core._walk_vma(vma, start, end, ops, private, stats, newer)


def walk_page_range_vma(vma, start, end, ops, private=None, *, stats=None, kernel=None):
    """Walk ``[start, end)`` inside one VMA; no ``test_walk``, no PFN-map skip."""
    check_vma(vma)
    check_ops(ops)
    check_stats(stats)
    return _walk_page_range_vma(vma, start, end, ops, private, stats, check_kernel(kernel), True)


def walk_page_vma(vma, ops, private=None, *, stats=None, kernel=None):
    """Walk the whole of one VMA; no ``test_walk``, no PFN-map skip."""
    check_vma(vma)
    check_ops(ops)
    check_stats(stats)
    newer = check_kernel(kernel)
    mm = vma.vm_mm
    if mm is None or not check_ops_safe(ops):
        return -EINVAL
    mm._process_mm_walk_lock(ops.walk_lock)
    mm._process_vma_walk_lock(vma, ops.walk_lock)
    return _core._walk_vma(vma, vma.vm_start, vma.vm_end, ops, private, stats, newer)


def walk_page_range_novma(mm, start, end, ops, pgd=None, private=None, *, stats=None, kernel=None):
    """(6.13) Walk page tables with no VMAs (ptdump-style), optionally another
    tree's top-level table ``pgd``.  Huge leaves are never split.  Today's
    kernel splits it into ``walk_kernel_page_table_range`` and
    ``walk_page_range_debug``."""
    return walk_page_range_novma_each(mm, ((start, end),), ops, pgd, private, stats=stats,
                                      kernel=kernel)


def walk_page_range_novma_each(mm, ranges, ops, pgd=None, private=None, *, stats=None, kernel=None):
    """pgwalk's own: ``walk_page_range_novma`` of each ``(start, end)`` of
    ``ranges`` in turn, on one walk set-up (a call per range sets up a walk
    each: ``ImageMM.mappings`` walks the two canonical halves this way).
    The checks, in ``walk_page_range_novma``'s order, cover every range
    first; the first non-zero return ends it and is returned."""
    check_mm(mm)
    check_ops(ops)
    check_stats(stats)
    check_pgd(mm, pgd)
    ranges = [(start, end) for start, end in ranges]
    for start, end in ranges:
        check_range(mm, start, end)
    newer = check_kernel(kernel)
    if mm is None or any(start >= end for start, end in ranges):
        return -EINVAL
    if not check_ops_safe(ops):
        return -EINVAL
    mm._assert_novma_lock()
    return _core._walk_novma(mm, ranges, ops, pgd, private, stats, newer)


def _kernel_mm(mm, pgd):
    """The kernel mm (``&init_mm``) a kernel-table walk runs as: ``mm`` if
    given, else the tree of ``pgd``."""
    check_mm(mm)
    if mm is None:
        if pgd is None:
            raise TypeError("walk_kernel_page_table_range needs the kernel mm: pass mm=init_mm "
                            "(pgwalk has no global init_mm) or a pgd of a kernel mm")
        check_pgd(None, pgd)
        mm = pgd.tables
    if not mm.is_init_mm:
        raise ValueError("walk_kernel_page_table_range walks as the kernel mm: mm must be "
                         "a kernel mm (pgwalk.init_mm()); walk a user mm with walk_page_range_debug")
    check_pgd(mm, pgd)
    return mm


def walk_kernel_page_table_range(start, end, ops, pgd=None, private=None, *, mm=None,
                                 stats=None, kernel=None):
    """Walk kernel page tables (no VMAs) with ``init_mm``'s mmap lock held
    (read is enough).  ``mm`` names the kernel mm (default: ``pgd``'s
    tree); ``pgd`` may be another tree's top-level table."""
    check_ops(ops)
    mm = _kernel_mm(mm, pgd)
    if not mm._lock.held():
        from ._core import LockAssertionError
        raise LockAssertionError("walk_kernel_page_table_range needs the kernel mm's mmap lock: "
                                 "use `with init_mm.mmap_read_lock():` (or the _lockless variant)")
    return _kernel_walk(mm, start, end, ops, pgd, private, stats, kernel)


def walk_kernel_page_table_range_lockless(start, end, ops, pgd=None, private=None, *, mm=None,
                                          stats=None, kernel=None):
    """``walk_kernel_page_table_range`` without the lock assertion: the
    caller guarantees it alone touches the range."""
    check_ops(ops)
    mm = _kernel_mm(mm, pgd)
    return _kernel_walk(mm, start, end, ops, pgd, private, stats, kernel)


def _kernel_walk(mm, start, end, ops, pgd, private, stats, kernel):
    check_stats(stats)
    check_range(mm, start, end)
    newer = check_kernel(kernel)
    if start >= end:
        return -EINVAL
    if not check_ops_safe(ops):
        return -EINVAL
    return _core._walk_novma(mm, ((start, end),), ops, pgd, private, stats, newer)


def walk_page_range_debug(mm, start, end, ops, pgd=None, private=None, *, init_mm=None,
                          stats=None, kernel=None):
    """(Debug only, mm-internal in the kernel.)  Walk ``mm``'s tables (or
    ``pgd``'s) with no VMAs; needs the mmap write lock of ``mm`` and of
    the kernel mm (``init_mm``, when given: pgwalk has no global one)."""
    check_mm(mm)
    check_mm(init_mm, "init_mm")
    check_ops(ops)
    check_stats(stats)
    check_pgd(mm, pgd)
    check_range(mm, start, end)
    newer = check_kernel(kernel)
    if mm is None:
        return -EINVAL          # the kernel would dereference NULL (decision 25)
    from ._core import LockAssertionError
    for who, m in (("mm", mm), ("init_mm", init_mm)):
        if m is not None and not m._lock.write_held():
            raise LockAssertionError(f"walk_page_range_debug needs the mmap write lock of {who}: "
                                     f"use `with {who}.mmap_write_lock():`")
    if start >= end:
        return -EINVAL
    if not check_ops_safe(ops):
        return -EINVAL
    return _core._walk_novma(mm, ((start, end),), ops, pgd, private, stats, newer)
