"""MADV_COLLAPSE (mm/khugepaged.c, madvise_collapse): what collapses into a
PMD-mapped THP and which ranges fail with which errno.  Scenario tests run
on ``pgwalk.MM`` and, where this kernel can, live
(pgwalk/process/conformance/); the guard-region case is in
test_selftest_cases.py, table-allocation failures in test_fault_injection.py."""

import errno

import pgwalk as P

from helpers.family import EXCL, FILE, PA, PRESENT, RW, SA, run


HUGE = 512                      # pages in a PMD-mapped THP


def test_collapse_of_a_sparse_range_maps_a_thp():
    """MADV_COLLAPSE of a 2 MiB-aligned range with two written pages
    collapses it into one THP: every page present and exclusive, the PMD a
    huge leaf (madvise_collapse -> collapse_huge_page; the max_ptes_none
    limit is khugepaged's, not MADV_COLLAPSE's)."""
    steps = [("mmap", 0, HUGE, RW, PA), ("touch", 0, True), ("touch", 100, True),
             ("madvise", 0, HUGE, P.MADV_COLLAPSE)]
    mm, obs = run(steps, HUGE)
    assert obs[3][0] == 0 and obs[3][1] == [PRESENT | EXCL] * HUGE
    assert P.pmd_trans_huge(mm.entry(0x7F0000000000, P.PMD))


def test_collapse_of_an_empty_range_or_of_zero_pages_only_is_einval():
    """MADV_COLLAPSE of a range with nothing mapped fails with EINVAL, and
    so does one whose only page is the zero page; nothing is collapsed
    (madvise_collapse's errno for the scan result; checked live on 6.18)."""
    mm, obs = run([("mmap", 0, HUGE, RW, PA), ("madvise", 0, HUGE, P.MADV_COLLAPSE)], HUGE)
    assert obs[1][0] == errno.EINVAL and set(obs[1][1]) == {0}
    steps = [("mmap", 0, HUGE, RW, PA), ("touch", 0, False), ("madvise", 0, HUGE, P.MADV_COLLAPSE)]
    mm, obs = run(steps, HUGE)
    assert obs[2][0] == errno.EINVAL and obs[2][1] == [PRESENT] + [0] * (HUGE - 1)


def test_collapse_of_a_vma_too_small_or_nohugepage_is_einval():
    """MADV_COLLAPSE fails with EINVAL when the VMA cannot hold an aligned
    2 MiB block, and when it is MADV_NOHUGEPAGE (thp_vma_allowable_order
    refuses both); the pages stay as they were."""
    steps = [("mmap", 0, 16, RW, PA), ("touch", 0, True), ("madvise", 0, 16, P.MADV_COLLAPSE)]
    mm, obs = run(steps, 16)
    assert obs[2][0] == errno.EINVAL and obs[2][1] == [PRESENT | EXCL] + [0] * 15
    steps = [("mmap", 0, HUGE, RW, PA), ("touch", 0, True), ("madvise", 0, HUGE, P.MADV_NOHUGEPAGE),
             ("madvise", 0, HUGE, P.MADV_COLLAPSE)]
    mm, obs = run(steps, HUGE)
    assert obs[3][0] == errno.EINVAL and obs[3][1] == [PRESENT | EXCL] + [0] * (HUGE - 1)


def test_collapse_of_a_read_only_range_and_of_shared_memory():
    """MADV_COLLAPSE also collapses a range made read-only after it was
    written, and a range of shared anonymous memory (a shmem THP: every page
    present, file, exclusive; collapse_file)."""
    steps = [("mmap", 0, HUGE, RW, PA), ("touch", 0, True), ("mprotect", 0, HUGE, P.PROT_READ),
             ("madvise", 0, HUGE, P.MADV_COLLAPSE)]
    mm, obs = run(steps, HUGE)
    assert obs[3][0] == 0 and obs[3][1] == [PRESENT | EXCL] * HUGE
    steps = [("mmap", 0, HUGE, RW, SA), ("touch", 0, True), ("madvise", 0, HUGE, P.MADV_COLLAPSE)]
    mm, obs = run(steps, HUGE)
    assert obs[2][0] == 0 and obs[2][1] == [PRESENT | FILE | EXCL] * HUGE
