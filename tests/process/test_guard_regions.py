"""Guard regions on anonymous memory, case by case as the kernel's selftests
(tools/testing/selftests/mm/guard-regions.c) list them.  Each test states the
kernel behaviour it pins and checks it on ``pgwalk.MM``; where this kernel
has guard regions the same steps also run live and must observe the same
(errnos, faults, pagemap flags, VMAs)."""

import errno

import numpy as np
import pytest

import pgwalk as P
from pgwalk import PAGE_SIZE as PS

from helpers import live_kernel as L

LIVE, WHY = L.guard_regions_supported()
RW = P.PROT_READ | P.PROT_WRITE
PA = P.MAP_PRIVATE | P.MAP_ANONYMOUS | P.MAP_FIXED
GI, GR = P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE
PRESENT, SWAP, GUARD, EXCL = 1 << 63, 1 << 62, 1 << 58, 1 << 56


def run(steps, npages):
    """Run on the model (and, when possible, live: the observations must be
    identical); returns the model's observations and its mm."""
    mm, model = L.run_model(steps, npages)
    if LIVE:
        _, live = L.run_live(steps, npages)
        for i, (m, lv) in enumerate(zip(model, live)):
            assert m == lv, f"step {i} {steps[i]}: model {m[0]}/{m[2]} live {lv[0]}/{lv[2]}"
    return mm, model


def flags(obs, i):
    return obs[i][1]


def test_basic_install_faults_and_remove_restores_zero_fill():
    """Install over populated pages zaps them and leaves markers (pagemap:
    swap + guard); a touch of a guard page is SIGSEGV and allocates nothing;
    after removal, anonymous pages read back as fresh (zero-filled) memory."""
    steps = [("mmap", 0, 10, RW, PA)] + [("touch", i, True) for i in range(10)] + [
        ("madvise", 0, 10, GI), ("touch", 3, False), ("touch", 3, True),
        ("madvise", 0, 10, GR), ("touch", 3, False), ("touch", 4, True)]
    mm, obs = run(steps, 10)
    assert all(f == SWAP | GUARD for f in flags(obs, 11))
    assert obs[12][0] == obs[13][0] == "SEGV"
    assert flags(obs, 13) == flags(obs, 11)               # the guard hit allocated nothing
    assert flags(obs, 15)[3] == PRESENT                    # the zero page: present, not exclusive
    assert flags(obs, 16)[4] == PRESENT | EXCL
    assert mm.stats["alloc_failed"] == 0


def test_multi_vma_range_with_holes_is_guarded_and_fails_enomem():
    """A range spanning VMAs and holes: every mapped part gets markers and
    madvise still fails with ENOMEM; the same for removal."""
    steps = [("mmap", 0, 3, RW, PA), ("mmap", 5, 2, RW, PA), ("mmap", 9, 1, RW, PA),
             ("madvise", 0, 10, GI), ("madvise", 0, 10, GR)]
    mm, obs = run(steps, 10)
    assert obs[3][0] == obs[4][0] == errno.ENOMEM
    assert [f & GUARD != 0 for f in flags(obs, 3)] == [1, 1, 1, 0, 0, 1, 1, 0, 0, 1]
    assert not any(f & GUARD for f in flags(obs, 4))


def test_install_is_idempotent_and_survives_dontneed_free_pageout_mprotect():
    """Installing twice is a no-op; DONTNEED, FREE, COLD, PAGEOUT and any
    mprotect keep the markers (and the VMA stays one VMA)."""
    steps = [("mmap", 0, 8, RW, PA), ("madvise", 2, 3, GI), ("madvise", 0, 8, GI),
             ("madvise", 0, 8, GR), ("madvise", 2, 3, GI),
             ("madvise", 0, 8, P.MADV_DONTNEED), ("madvise", 0, 8, P.MADV_FREE),
             ("madvise", 0, 8, P.MADV_COLD), ("madvise", 0, 8, P.MADV_PAGEOUT),
             ("mprotect", 0, 8, P.PROT_NONE), ("mprotect", 0, 8, P.PROT_READ),
             ("mprotect", 0, 8, RW), ("touch", 2, False)]
    mm, obs = run(steps, 8)
    assert [bool(f & GUARD) for f in flags(obs, 11)] == [0, 0, 1, 1, 1, 0, 0, 0]
    assert obs[12][0] == "SEGV"
    assert obs[11][2] == [(0, 8, RW, "p")]


def test_munmap_and_map_fixed_drop_markers():
    """munmap (and MAP_FIXED over the range) remove the markers with the
    mapping: a new mapping there is unguarded."""
    steps = [("mmap", 0, 6, RW, PA), ("madvise", 0, 6, GI), ("munmap", 2, 2),
             ("mmap", 2, 2, RW, PA), ("touch", 2, True), ("mmap", 4, 2, RW, PA),
             ("touch", 5, False), ("touch", 0, False)]
    mm, obs = run(steps, 6)
    assert obs[4][0] == obs[6][0] == "ok" and obs[7][0] == "SEGV"


def test_lock_rules():
    """Install on an mlocked VMA is EINVAL, removal is allowed; mlock over a
    guard fails with ENOMEM, after locking the VMA and populating the pages
    before the guard; POPULATE_READ/WRITE over a guard fail with EFAULT after
    populating what precedes it."""
    steps = [("mmap", 0, 8, RW, PA), ("madvise", 4, 1, GI), ("mlock", 0, 8),
             ("madvise", 0, 8, GI), ("madvise", 0, 8, GR), ("munlock", 0, 8),
             ("madvise", 0, 8, P.MADV_DONTNEED), ("madvise", 4, 1, GI),
             ("madvise", 0, 8, P.MADV_POPULATE_READ), ("madvise", 0, 8, P.MADV_POPULATE_WRITE)]
    mm, obs = run(steps, 8)
    assert obs[2][0] == errno.ENOMEM
    assert [f & PRESENT != 0 for f in flags(obs, 2)] == [1, 1, 1, 1, 0, 0, 0, 0]
    assert obs[3][0] == errno.EINVAL and obs[4][0] == 0
    assert obs[8][0] == obs[9][0] == errno.EFAULT
    assert flags(obs, 9)[0] == PRESENT | EXCL and flags(obs, 9)[5] == 0


def test_split_merge_mremap_keep_markers_at_their_offsets():
    """Partial mprotect/munmap keep markers in what stays mapped; mremap
    moves them with the pages (fixed and DONTUNMAP moves), growing in place
    leaves the new tail unguarded, shrinking drops the cut-off markers."""
    steps = [("mmap", 0, 8, RW, PA), ("madvise", 0, 8, GI), ("mprotect", 2, 2, P.PROT_READ),
             ("munmap", 6, 1), ("madvise", 0, 8, GR), ("madvise", 1, 1, GI),
             ("touch", 0, True), ("mremap", 0, 2, 2, 3, 12), ("mremap", 12, 2, 2, 7, 20),
             ("mremap", 20, 2, 1, 0, 0), ("mremap", 20, 1, 3, 0, 0), ("touch", 21, True)]
    mm, obs = run(steps, 24)
    assert obs[3][2][:3] == [(0, 2, RW, "p"), (2, 4, P.PROT_READ, "p"), (4, 6, RW, "p")]
    assert flags(obs, 8)[21] == SWAP | GUARD and flags(obs, 8)[20] == PRESENT | EXCL
    assert flags(obs, 8)[12:14] == [0, 0]                  # DONTUNMAP: old range empty
    assert obs[11][0] == "ok"                              # the re-grown tail is unguarded


def test_fork_copies_markers_and_wipeonfork_child_has_none():
    """fork copies the markers (and both sides lose exclusivity of the
    shared pages); in a WIPEONFORK range the child has no markers."""
    steps = [("mmap", 0, 4, RW, PA), ("touch", 0, True), ("madvise", 1, 1, GI), ("fork",),
             ("child_exit",), ("madvise", 0, 4, P.MADV_WIPEONFORK), ("fork",)]
    mm, obs = run(steps, 4)
    child = obs[3][0]
    assert child[0] == PRESENT and child[1] == SWAP | GUARD
    assert flags(obs, 3)[0] == PRESENT                     # parent: shared now
    assert obs[6][0] == [0, 0, 0, 0]


def test_fork_cow_child_install_remove_reads_zero_parent_keeps_data():
    """fork_cow: guard install + remove in the child discards the child's
    copy; the parent's page is untouched (and exclusive again)."""
    mm = P.MM()
    a = mm.mmap(None, 4 * PS, RW, P.MAP_PRIVATE | P.MAP_ANONYMOUS)
    mm.touch(a, write=True)
    pfn = int(mm.pagemap(a, a + PS)[0]) & ((1 << 55) - 1)
    child = mm.fork()
    child.madvise(a, PS, GI)
    child.madvise(a, PS, GR)
    child.touch(a)
    assert int(child.pagemap(a, a + PS)[0]) & ((1 << 55) - 1) == P.ZERO_PFN
    w = int(mm.pagemap(a, a + PS)[0])
    assert w & ((1 << 55) - 1) == pfn and w & EXCL
    child.exit()
    mm.validate()


def test_thp_install_splits_and_leftover_table_blocks_thp():
    """Installing a guard in a THP splits the PMD (the rest stays mapped);
    after removal the PTE table left behind keeps the range from getting a
    THP again; the huge zero page becomes 4K zero pages."""
    steps = [("mmap", 0, 1024, RW, PA), ("madvise", 0, 1024, P.MADV_HUGEPAGE),
             ("touch", 0, True), ("touch", 512, False), ("madvise", 10, 1, GI),
             ("madvise", 600, 1, GI), ("madvise", 0, 1024, GR), ("touch", 10, True)]
    mm, obs = run(steps, 1024)
    assert flags(obs, 4)[10] == SWAP | GUARD and flags(obs, 4)[11] == PRESENT | EXCL
    assert flags(obs, 5)[601] == PRESENT                   # 4K zero pages now
    assert P.pmd_leaf(mm.entry(0x7F0000000000, P.PMD)) is False
    assert not P.pmd_leaf(mm.entry(0x7F0000000000 + (2 << 20), P.PMD))


def test_guard_install_eligibility_and_errnos_without_live():
    """EINVAL for hugetlb/special VMAs and locked VMAs (install only); an
    empty length is 0; an unaligned start EINVAL; a range with no VMA ENOMEM."""
    mm = P.MM()
    v = mm.add_vma(0x200000, 0x400000, P.VM_READ | P.VM_WRITE | P.VM_PFNMAP)
    with pytest.raises(OSError) as e:
        mm.madvise(v.vm_start, PS, GI)
    assert e.value.errno == errno.EINVAL
    a = mm.mmap(None, 4 * PS, RW, P.MAP_PRIVATE | P.MAP_ANONYMOUS)
    assert mm.madvise(a, 0, GI) == 0
    with pytest.raises(OSError) as e:
        mm.madvise(a + 1, PS, GI)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        mm.madvise(0x10000000, PS, GI)
    assert e.value.errno == errno.ENOMEM


def test_install_walk_count_is_two_walks_and_one_zap_over_populated_memory():
    """Installation over populated memory takes exactly 2 walks and 1 zap
    (the first walk stops at the first populated PTE, keeping the markers it
    wrote before it); over empty memory 1 walk."""
    from pgwalk import internal
    from pgwalk.process import guard
    calls = []
    real = internal.walk_page_range_mm

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    mm = P.MM()
    a = mm.mmap(None, 8 * PS, RW, P.MAP_PRIVATE | P.MAP_ANONYMOUS)
    mm.touch(a + 4 * PS, write=True)
    old = guard.walk_page_range_mm
    guard.walk_page_range_mm = counting
    try:
        mm.madvise(a, 8 * PS, GI)
        assert len(calls) == 2
        calls.clear()
        mm.madvise(a, 8 * PS, GI)
        assert len(calls) == 1
    finally:
        guard.walk_page_range_mm = old
    assert np.all(mm.pagemap(a, a + 8 * PS) == [SWAP | GUARD | 0x9F] * 8)


PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS


def err(fn, *a):
    with pytest.raises(OSError) as e:
        fn(*a)
    return e.value.errno


def test_guard_install_table_allocation_failure_is_enomem_and_keeps_progress():
    """A page-table allocation that fails during installation makes madvise
    fail with ENOMEM; markers already written stay (the kernel leaves a
    partially guarded range)."""
    mm = P.MM()
    a = mm.mmap(None, 8 << 20, RW, PRIV)
    mm.madvise(a, 8 << 20, P.MADV_NOHUGEPAGE)
    mm.fail_table_alloc(at=[4])
    assert err(mm.madvise, a, 8 << 20, P.MADV_GUARD_INSTALL) == errno.ENOMEM
    flags = mm.pagemap(a, a + (8 << 20))
    assert (flags[:512] & np.uint64(GUARD)).all()
    mm.validate()
