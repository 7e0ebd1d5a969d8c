"""Lightweight guard regions (MADV_GUARD_INSTALL / MADV_GUARD_REMOVE) as the
kernel implements them (mm/madvise.c, 6.13-6.18): installation is a
``walk_page_range_mm`` walk whose ``install_pte`` writes guard markers into
empty PTEs, retried after a zap when it meets populated entries; removal is
a walk whose ``pte_entry`` clears the markers.  The slot functions are C
(``_mmops.pyx``: ``guard_install`` and ``guard_remove`` ops).
"""

from ..constants import EINVAL, VM_HUGETLB, VM_LOCKED, VM_MAYBE_GUARD, VM_SPECIAL
from ..walker import walk_page_range_mm, walk_page_range_vma

MAX_MADVISE_GUARD_RETRIES = 3


def guard_eligible(vma, allow_locked):
    """Section 3: special and hugetlb VMAs are refused; a locked VMA only
    for installation (6.15+: any backing, any protection)."""
    disallowed = VM_SPECIAL | VM_HUGETLB
    if not allow_locked:
        disallowed |= VM_LOCKED
    return not vma.vm_flags & disallowed


def guard_install(mm, vma, start, end):
    """madvise_guard_install for [start, end) inside ``vma``: 0 or an errno.
    ``mm.stats``-visible effects: markers, the tables they need, and (when
    pages were present) one zap per retry."""
    if not guard_eligible(vma, allow_locked=False):
        return EINVAL
    # 6.18 on these machines: VM_MAYBE_GUARD ("gu", sticky) makes fork copy
    # the page tables; an anon_vma is attached to anonymous VMAs only
    if vma.vm_ops is None:
        mm.anon_vma_prepare(vma)
    vma.vm_flags |= VM_MAYBE_GUARD
    op = mm.new_op()
    ops = mm.walk_ops(op, "guard_install")
    while True:                        # restart_syscall() after the retries: run again
        for _ in range(MAX_MADVISE_GUARD_RETRIES):
            op.setup()
            rc = walk_page_range_mm(mm, start, end, ops)
            if rc < 0:
                return -rc
            if rc == 0:
                return 0
            mm.zap(start, end)        # DONTNEED semantics, markers kept, no reclaim


def guard_remove(mm, vma, start, end):
    """madvise_guard_remove: clear every guard marker in [start, end)."""
    if not guard_eligible(vma, allow_locked=True):
        return EINVAL
    op = mm.new_op().setup()
    rc = walk_page_range_vma(vma, start, end, mm.walk_ops(op, "guard_remove"))
    return -rc if rc < 0 else 0
