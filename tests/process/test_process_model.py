"""The process model on its own (no live kernel needed): syscall argument
errnos, address choice, faults, THP faults, fork, exit, introspection
formats, table bookkeeping, and 4- vs 5-level paging giving the same
observations."""

import errno

import numpy as np
import pytest

import pgwalk as P
from pgwalk import PAGE_SIZE as PS

from helpers import live_kernel as L
from pgwalk.process.conformance import scenarios as S

RW = P.PROT_READ | P.PROT_WRITE
PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS
SHARED = P.MAP_SHARED | P.MAP_ANONYMOUS
PRESENT, SWAP, FILE, GUARD, EXCL = 1 << 63, 1 << 62, 1 << 61, 1 << 58, 1 << 56


def err(fn, *a):
    with pytest.raises(OSError) as e:
        fn(*a)
    return e.value.errno


def test_exit_and_munmap_free_every_table():
    """exit() unmaps everything and frees every table but the top level;
    munmap frees the tables that no longer cover any VMA (free_pgtables)."""
    mm = P.MM()
    a = mm.mmap(None, 8 << 20, RW, PRIV)
    mm.madvise(a, 8 << 20, P.MADV_POPULATE_WRITE)
    mm.madvise(a, PS, P.MADV_GUARD_INSTALL)
    before = mm.nr_tables
    mm.munmap(a, 4 << 20)
    assert mm.nr_tables < before
    mm.exit()
    assert mm.nr_tables == 1 and mm.vmas == []
    mm.validate()


def test_mincore_smaps_ptdump_formats():
    """mincore: 1 per resident page, 0 for guard pages of anonymous memory,
    ENOMEM across a hole, EINVAL for an unaligned start; smaps: Rss and
    Anonymous in kB, the zero page not counted, Locked for mlocked VMAs (mlock
    over a guard: ENOMEM, the VMA locked and populated up to the guard);
    ptdump: one line per run of like entries."""
    mm = P.MM()
    a = mm.mmap(None, 8 * PS, RW, PRIV)
    mm.touch(a, write=True)
    mm.touch(a + PS)
    mm.madvise(a + 2 * PS, PS, P.MADV_GUARD_INSTALL)
    assert mm.mincore(a, 8 * PS).tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert err(mm.mincore, a + 1, PS) == errno.EINVAL
    assert err(mm.mincore, a, 64 * PS) == errno.ENOMEM
    sm = mm.smaps()[0]
    assert sm["Rss"] == 4 and sm["Anonymous"] == 4 and sm["Size"] == 32
    assert err(mm.mlock, a, 8 * PS) == errno.ENOMEM      # populate stops at the guard
    sm = mm.smaps()[0]
    assert sm["Locked"] == sm["Rss"] == 8 and "lo" in sm["VmFlags"] and "gu" in sm["VmFlags"]
    text = mm.ptdump()
    assert "guard" in text and "pte" in text
    ktext = mm.ptdump(kernel_format=True)
    assert "USR RW" in ktext and " pte\n" in ktext
    s = mm.mmap(None, 4 * PS, RW, SHARED)
    mm.touch(s, write=True)
    mm.madvise(s, 4 * PS, P.MADV_DONTNEED)
    assert mm.mincore(s, 4 * PS).tolist() == [1, 0, 0, 0]      # still in the shmem object


@pytest.mark.parametrize("gen", [S.scenario, S.thp_scenario], ids=["random", "thp"])
def test_four_and_five_level_paging_observe_the_same(gen):
    """The same scenarios on MM(levels=4) and MM(levels=5) give identical
    observations (results, pagemap flags, VMAs); exit frees every table."""
    for seed in range(0, 60):
        steps, n = gen(seed)
        mm4, a = L.run_model(steps, n, levels=4)
        mm5, b = L.run_model(steps, n, levels=5)
        assert a == b, f"seed {seed}"
        for mm in (mm4, mm5):
            mm.exit()
            assert mm.nr_tables == 1
            mm.validate()


from hypothesis import given, settings            # noqa: E402
from hypothesis import strategies as st           # noqa: E402


@given(st.lists(st.tuples(st.sampled_from(["touch", "write", "guard", "unguard", "dontneed", "thp"]),
                          st.integers(0, 1023), st.integers(1, 600)), max_size=12),
       st.sampled_from([4, 5]))
@settings(max_examples=40, deadline=None)
def test_mincore_of_anonymous_memory_is_pagemaps_present_bit(steps, levels):
    """MM.mincore reads whole PTE tables in its pmd_entry (the kernel's
    mincore_pte_range shape); for private anonymous memory its answer must be
    pagemap's present bit page by page (THP, guard markers, zapped pages)."""
    mm = P.MM(levels)
    a = mm.mmap(None, 1024 * PS, RW, PRIV)
    for op, i, n in steps:
        n = min(n, 1024 - i)
        if op in ("touch", "write"):
            for k in range(i, i + n, 37):
                try:
                    mm.touch(a + k * PS, write=(op == "write"))
                except P.SegmentationFault:
                    pass
        elif op == "guard":
            mm.madvise(a + i * PS, n * PS, P.MADV_GUARD_INSTALL)
        elif op == "unguard":
            mm.madvise(a + i * PS, n * PS, P.MADV_GUARD_REMOVE)
        elif op == "dontneed":
            mm.madvise(a + i * PS, n * PS, P.MADV_DONTNEED)
        else:
            mm.madvise(a, 1024 * PS, P.MADV_HUGEPAGE)
            try:
                mm.touch(a + ((i * PS) & ~((2 << 20) - 1)), write=True)
            except P.SegmentationFault:
                pass
    for lo, hi in ((0, 1024), (3, 700), (511, 513)):
        got = mm.mincore(a + lo * PS, (hi - lo) * PS)
        want = (mm.pagemap(a + lo * PS, a + hi * PS) & PRESENT) != 0
        assert got.tolist() == want.astype(np.uint8).tolist()
    mm.validate()


def test_split_folio_heads_are_not_capped():
    """The rmap pass after folio splits looks for every split folio (it
    once kept only the first 16): the heads round-trip sorted, any number."""
    mm = P.MM()
    heads = [(1 << 20) + 512 * k for k in range(40, 0, -1)]
    op = mm.new_op().setup().set_split_heads(heads)
    assert op.split_heads == sorted(heads)

@pytest.mark.parametrize("advice", ["MADV_FREE", "MADV_COLD", "MADV_PAGEOUT", "MADV_DONTNEED",
                                    "MADV_GUARD_INSTALL", "MADV_COLLAPSE"])
def test_a_pfn_beyond_the_models_memory_is_a_page_without_books(advice):
    """A low-level edit (or a callback) can put any 40-bit PFN in a table;
    the process model keeps per-PFN books only for its own physical memory,
    so such a page reads as unmapped, unflagged and its books are not
    written: every syscall over it runs and the tables stay valid (before,
    madvise indexed the per-PFN arrays with it and crashed the process)."""
    import pgwalk as P
    mm = P.MM()
    a = mm.mmap(0, 1 << 22, P.PROT_READ | P.PROT_WRITE, P.MAP_PRIVATE | P.MAP_ANONYMOUS)
    mm.touch(a, True)
    far = (1 << 39) + 5
    mm.map(a + 8192, pfn=far)
    try:
        mm.madvise(a, 1 << 22, getattr(P, advice))
    except OSError:
        pass                            # an errno is an answer; a crash is not
    child = mm.fork()
    mm.mprotect(a, 1 << 22, P.PROT_READ)
    try:
        mm.touch(a + 8192)
    except P.SegmentationFault:
        assert advice == "MADV_GUARD_INSTALL"   # the guard replaced the page
    assert mm.phys.get(far) == (0, 0)
    child.exit()
    mm.munmap(a, 1 << 22)
    mm.validate()
