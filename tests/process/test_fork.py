"""fork (kernel/fork.c dup_mmap, mm/memory.c copy_page_range): what the
child's page tables hold right after fork, copy-on-write on either side,
MADV_DONTFORK and MADV_WIPEONFORK.  Scenario tests run on ``pgwalk.MM`` and,
where this kernel can, live (pgwalk/process/conformance/): the ``fork``
step observes the child's pagemap, ``child`` steps run in the child."""

import pgwalk as P

from helpers.family import EXCL, FILE, PA, PRESENT, RW, SA, run


def test_fork_write_protects_private_pages_on_both_sides():
    """After fork every private page is shared: present but not exclusive
    in parent and child (copy_present_pte write-protects both); a write in
    the child gives it an exclusive copy, and then the parent's page, mapped
    once again, reads exclusive too (pagemap's PM_MMAP_EXCLUSIVE is a map
    count of 1, fs/proc/task_mmu.c); a page neither side wrote stays shared."""
    steps = [("mmap", 0, 4, RW, PA), ("touch", 0, True), ("touch", 1, True), ("touch", 2, False),
             ("fork",), ("child", ("touch", 0, True)), ("touch", 1, True)]
    mm, obs = run(steps, 4)
    assert obs[4][0] == [PRESENT, PRESENT, PRESENT, 0]            # the child's pagemap
    assert obs[4][1] == [PRESENT, PRESENT, PRESENT, 0]            # the parent's
    result, child_flags, _ = obs[5][0]
    assert result == "ok" and child_flags[0] == PRESENT | EXCL
    assert obs[5][1][:3] == [PRESENT | EXCL, PRESENT, PRESENT]
    assert obs[6][1][:3] == [PRESENT | EXCL, PRESENT | EXCL, PRESENT]
    assert obs[6][0] == "ok"


def test_dontfork_range_is_absent_from_the_child():
    """A MADV_DONTFORK range is not copied into the child: no VMA there (an
    access is SIGSEGV) while the rest is (dup_mmap skips VM_DONTCOPY)."""
    steps = [("mmap", 0, 4, RW, PA), ("touch", 0, True), ("madvise", 2, 2, P.MADV_DONTFORK),
             ("fork",), ("child", ("touch", 2, False)), ("child", ("touch", 0, False))]
    mm, obs = run(steps, 4)
    assert obs[4][0][0] == "SEGV" and obs[4][0][2] == [(0, 2, RW, "p")]
    assert obs[5][0][0] == "ok"
    assert obs[4][2] == [(0, 2, RW, "p"), (2, 4, RW, "p")]        # the parent keeps both


def test_wipeonfork_range_is_empty_in_the_child():
    """A MADV_WIPEONFORK range is in the child but without its pages (its
    PTEs are not copied: a read maps the zero page); the parent keeps them."""
    steps = [("mmap", 0, 4, RW, PA), ("touch", 0, True), ("touch", 1, True),
             ("madvise", 0, 2, P.MADV_WIPEONFORK), ("fork",), ("child", ("touch", 0, False))]
    mm, obs = run(steps, 4)
    assert obs[4][0] == [0, 0, 0, 0]
    assert obs[4][1][:2] == [PRESENT | EXCL] * 2
    assert obs[5][0][0] == "ok" and obs[5][0][1][0] == PRESENT


def test_shared_anonymous_ptes_are_not_copied_at_fork():
    """fork does not copy the PTEs of a shared anonymous VMA (vma_needs_copy:
    a fault fills them): the child's pagemap is empty, and a read in the
    child maps the parent's page, present and file but no longer exclusive."""
    steps = [("mmap", 0, 4, RW, SA), ("touch", 0, True), ("fork",), ("child", ("touch", 0, False))]
    mm, obs = run(steps, 4)
    assert obs[1][1][0] == PRESENT | FILE | EXCL
    assert obs[2][0] == [0, 0, 0, 0]
    assert obs[3][0][1][0] == PRESENT | FILE
    assert obs[3][1][0] == PRESENT | FILE
