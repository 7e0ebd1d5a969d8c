"""Lightweight guard regions (MADV_GUARD_INSTALL / MADV_GUARD_REMOVE) as the
kernel implements them (mm/madvise.c, 6.13-6.18): installation is a
``walk_page_range_mm`` walk whose ``install_pte`` writes guard markers into
empty PTEs, retried after a zap when it meets populated entries; removal is
a walk whose ``pte_entry`` clears the markers.  The slot functions are C
(``_mmops.pyx``: ``guard_install`` and ``guard_remove`` ops).

``vma_locked=True`` is today's kernel under the VMA read lock: both walks go
through ``walk_page_range_vma(_unsafe)`` with ``PGWALK_VMA_RDLOCK_VERIFY``
(``madvise_guard_vma_locked`` picks that lock or falls back).
"""

from ..constants import (
    EINVAL, PGWALK_RDLOCK, PGWALK_VMA_RDLOCK_VERIFY, VM_HUGETLB, VM_LOCKED, VM_MAYBE_GUARD,
    VM_SPECIAL,
)
from ..walker import (
    lock_vma_under_rcu, vma_end_read, walk_page_range_mm, walk_page_range_vma,
    walk_page_range_vma_unsafe,
)

MAX_MADVISE_GUARD_RETRIES = 3


def guard_eligible(vma, allow_locked):
    """Section 3: special and hugetlb VMAs are refused; a locked VMA only
    for installation (6.15+: any backing, any protection)."""
    disallowed = VM_SPECIAL | VM_HUGETLB
    if not allow_locked:
        disallowed |= VM_LOCKED
    return not vma.vm_flags & disallowed


def guard_install(mm, vma, start, end, vma_locked=False, kernel=None):
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
    if vma_locked:
        ops = mm.walk_ops(op, "guard_install", walk_lock=PGWALK_VMA_RDLOCK_VERIFY)
    else:
        ops = mm.walk_ops(op, "guard_install")
    while True:                        # restart_syscall() after the retries: run again
        for _ in range(MAX_MADVISE_GUARD_RETRIES):
            op.setup()
            if vma_locked:
                rc = walk_page_range_vma_unsafe(vma, start, end, ops, kernel=kernel)
            else:
                rc = walk_page_range_mm(mm, start, end, ops, kernel=kernel)
            if rc < 0:
                return -rc
            if rc == 0:
                return 0
            mm.zap(start, end)        # DONTNEED semantics, markers kept, no reclaim


def guard_remove(mm, vma, start, end, vma_locked=False, kernel=None):
    """madvise_guard_remove: clear every guard marker in [start, end)."""
    if not guard_eligible(vma, allow_locked=True):
        return EINVAL
    op = mm.new_op().setup()
    lock = PGWALK_VMA_RDLOCK_VERIFY if vma_locked else PGWALK_RDLOCK
    rc = walk_page_range_vma(vma, start, end, mm.walk_ops(op, "guard_remove", walk_lock=lock),
                             kernel=kernel)
    return -rc if rc < 0 else 0


def vma_lock_sufficient(vma, install, end):
    """Today's ``is_vma_lock_sufficient`` for guard advice: the range lies in
    this one VMA, and installing in an anonymous VMA needs its anon_vma
    already (``anon_vma_prepare`` needs the mmap lock).  pgwalk models no
    userfaultfd and no remote callers, the other two refusals."""
    if end > vma.vm_end:
        return False
    if install and vma.vm_ops is None and vma.anon_vma is None:
        return False
    return True


def madvise_guard_vma_locked(mm, start, end, install, kernel="today"):
    """Today's path for guard advice: under the VMA read lock when
    ``lock_vma_under_rcu`` succeeds and the lock suffices; returns the errno
    (0 on success), or None when the caller must fall back to the mmap read
    lock."""
    vma = lock_vma_under_rcu(mm, start)
    if vma is None:
        return None
    try:
        if not vma_lock_sufficient(vma, install, end):
            return None
        if install:
            return guard_install(mm, vma, start, end, vma_locked=True, kernel=kernel)
        return guard_remove(mm, vma, start, end, vma_locked=True, kernel=kernel)
    finally:
        vma_end_read(vma)
