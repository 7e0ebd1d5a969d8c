"""madvise (mm/madvise.c) outside the guard and collapse advices (those
have test_guard_regions.py and test_collapse.py): errnos, ranges with holes,
DONTNEED / DONTNEED_LOCKED / REMOVE / FREE and the populate advices.
Scenario tests run on ``pgwalk.MM`` and, where this kernel can, live
(pgwalk/process/conformance/)."""

import errno

import pgwalk as P
from pgwalk import PAGE_SIZE as PS

from helpers import live_kernel as L
from helpers.family import EXCL, FILE, PA, PRESENT, PRIV, RW, SA, run


def test_dontneed_reclaims_empty_pte_tables_but_not_guarded_ones():
    """MADV_DONTNEED over a whole 2 MiB range frees its PTE table when it
    is left empty (6.14+ PT reclaim), but not one that holds a guard marker."""
    mm = P.MM()
    a = mm.mmap(None, 4 << 20, RW, PRIV)
    mm.madvise(a, 4 << 20, P.MADV_NOHUGEPAGE)
    mm.madvise(a, 4 << 20, P.MADV_POPULATE_WRITE)
    mm.madvise(a + (2 << 20), PS, P.MADV_GUARD_INSTALL)
    mm.madvise(a, 4 << 20, P.MADV_DONTNEED)
    assert mm.entry(a, P.PMD) == 0
    assert mm.entry(a + (2 << 20), P.PMD) != 0


def test_madvise_argument_errnos():
    """madvise with an unknown advice or an unaligned start fails with
    EINVAL (madvise_behavior_valid, madvise_should_skip; mm/madvise.c);
    checked live as well."""
    model, live = L.call_errnos([("madvise", 0, PS, 999), ("madvise", 1, PS, P.MADV_DONTNEED),
                                 ("madvise", 0, PS, P.MADV_DONTNEED)])
    assert model == [errno.EINVAL, errno.EINVAL, 0]
    assert live in (None, model)


def test_dontneed_across_a_hole_zaps_both_sides_and_fails_enomem():
    """MADV_DONTNEED over a range with a hole still zaps every mapped part
    and then fails with ENOMEM (madvise_walk_vmas' unmapped error); a read
    of a zapped private page then maps the zero page."""
    steps = [("mmap", 0, 2, RW, PA), ("mmap", 3, 1, RW, PA), ("touch", 0, True), ("touch", 3, True),
             ("madvise", 0, 4, P.MADV_DONTNEED), ("touch", 0, False)]
    mm, obs = run(steps, 4)
    assert obs[3][1] == [PRESENT | EXCL, 0, 0, PRESENT | EXCL]
    assert obs[4][0] == errno.ENOMEM and obs[4][1] == [0, 0, 0, 0]
    assert obs[5][1][0] == PRESENT


def test_dontneed_of_a_locked_vma_is_einval_and_dontneed_locked_zaps_it():
    """MADV_DONTNEED on an mlocked VMA fails with EINVAL and keeps the
    pages (madvise_dontneed_free_valid_vma); MADV_DONTNEED_LOCKED zaps them."""
    steps = [("mmap", 0, 4, RW, PA), ("mlock", 0, 4), ("madvise", 0, 4, P.MADV_DONTNEED),
             ("madvise", 0, 4, P.MADV_DONTNEED_LOCKED)]
    mm, obs = run(steps, 4)
    assert obs[2][0] == errno.EINVAL and obs[2][1] == [PRESENT | EXCL] * 4
    assert obs[3][0] == 0 and obs[3][1] == [0] * 4


def test_remove_is_einval_on_private_memory_and_punches_shared_memory():
    """MADV_REMOVE on a private anonymous VMA fails with EINVAL; on shared
    anonymous memory it frees the object's pages (madvise_remove ->
    vfs_fallocate punch hole): unmapped, and a read then gets a new page."""
    mm, obs = run([("mmap", 0, 4, RW, PA), ("madvise", 0, 4, P.MADV_REMOVE)], 4)
    assert obs[1][0] == errno.EINVAL
    steps = [("mmap", 0, 4, RW, SA), ("touch", 0, True), ("touch", 1, True),
             ("madvise", 0, 4, P.MADV_REMOVE), ("touch", 0, False)]
    mm, obs = run(steps, 4)
    assert obs[2][1][:2] == [PRESENT | FILE | EXCL] * 2
    assert obs[3][0] == 0 and obs[3][1] == [0] * 4
    assert obs[4][1][0] == PRESENT | FILE | EXCL


def test_dontneed_of_shared_memory_unmaps_but_keeps_the_object_page():
    """MADV_DONTNEED on shared anonymous memory zaps the PTE (pagemap: not
    present) while the page stays in the shmem object: a read maps the same
    data back as a file page (zap_page_range_single, shmem)."""
    steps = [("mmap", 0, 4, RW, SA), ("touch", 0, True), ("madvise", 0, 4, P.MADV_DONTNEED),
             ("touch", 0, False)]
    mm, obs = run(steps, 4)
    assert obs[2][0] == 0 and obs[2][1] == [0] * 4
    assert obs[3][1][0] & (PRESENT | FILE) == PRESENT | FILE
