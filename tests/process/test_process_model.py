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
from helpers import scenarios as S

RW = P.PROT_READ | P.PROT_WRITE
PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS
SHARED = P.MAP_SHARED | P.MAP_ANONYMOUS
PRESENT, SWAP, FILE, GUARD, EXCL = 1 << 63, 1 << 62, 1 << 61, 1 << 58, 1 << 56


def err(fn, *a):
    with pytest.raises(OSError) as e:
        fn(*a)
    return e.value.errno


def test_mmap_argument_errnos():
    """mmap: length 0 -> EINVAL; no MAP_PRIVATE/MAP_SHARED -> EINVAL; a file
    mapping without a file -> EBADF; MAP_FIXED at an unaligned address ->
    EINVAL; MAP_FIXED_NOREPLACE over a mapping -> EEXIST; MAP_SHARED_VALIDATE
    with an unknown flag -> EOPNOTSUPP."""
    mm = P.MM()
    assert err(mm.mmap, None, 0, RW, PRIV) == errno.EINVAL
    assert err(mm.mmap, None, PS, RW, P.MAP_ANONYMOUS) == errno.EINVAL
    assert err(mm.mmap, None, PS, RW, P.MAP_PRIVATE) == errno.EBADF
    assert err(mm.mmap, 0x10001000 + 1, PS, RW, PRIV | P.MAP_FIXED) == errno.EINVAL
    a = mm.mmap(None, 4 * PS, RW, PRIV)
    assert err(mm.mmap, a + PS, PS, RW, PRIV | P.MAP_FIXED_NOREPLACE) == errno.EEXIST
    assert err(mm.mmap, None, PS, RW, P.MAP_SHARED_VALIDATE | P.MAP_ANONYMOUS | (1 << 22)) \
        == errno.EOPNOTSUPP


def test_mmap_addresses_top_down_hint_and_thp_alignment():
    """Without MAP_FIXED the address is chosen top-down below the mmap base;
    a free hint is honoured; a private mapping whose length is a multiple
    of 2 MiB is 2 MiB-aligned (thp_get_unmapped_area); adjacent compatible
    anonymous mappings merge into one VMA."""
    mm = P.MM()
    a = mm.mmap(None, 4 * PS, RW, PRIV)
    b = mm.mmap(None, 4 * PS, RW, PRIV)
    assert b + 4 * PS == a and len(mm.vmas) == 1
    h = mm.mmap(0x200000000, PS, RW, PRIV)
    assert h == 0x200000000
    t = mm.mmap(None, 4 << 20, RW, PRIV)
    assert t % (2 << 20) == 0
    s = mm.mmap(None, 4 * PS, RW, SHARED)
    assert len([v for v in mm.vmas if v.vm_start in (s,)]) == 1


def test_touch_faults_and_errors():
    """Read fault on private anonymous memory maps the zero page (present,
    not exclusive); a write allocates an exclusive page; a write to a
    read-only VMA, any access to PROT_NONE or an unmapped address is
    SIGSEGV; on shared anonymous memory a read allocates a shmem page
    (present, file, exclusive) and an access past the object's end after
    mremap growth is SIGBUS."""
    mm = P.MM()
    a = mm.mmap(None, 4 * PS, P.PROT_READ, PRIV)
    mm.touch(a)
    assert mm.pagemap(a, a + PS)[0] == PRESENT | P.ZERO_PFN
    with pytest.raises(P.SegmentationFault) as e:
        mm.touch(a + PS, write=True)
    assert e.value.addr == a + PS
    mm.mprotect(a, 4 * PS, P.PROT_NONE)
    with pytest.raises(P.SegmentationFault):
        mm.touch(a)
    with pytest.raises(P.SegmentationFault):
        mm.touch(a + 64 * PS)
    s = mm.mmap(None, 2 * PS, RW, SHARED)
    mm.touch(s)
    w = int(mm.pagemap(s, s + PS)[0])
    assert w & (PRESENT | FILE | EXCL) == PRESENT | FILE | EXCL
    s2 = mm.mremap(s, 2 * PS, 4 * PS, P.MREMAP_MAYMOVE)
    with pytest.raises(P.BusError):
        mm.touch(s2 + 3 * PS)
    mm.validate()


def test_thp_fault_huge_zero_page_and_cow_after_fork():
    """A MADV_HUGEPAGE range faults in a PMD leaf: the huge zero page on a
    read (present + file in pagemap), a THP on a write; after fork the THP
    is shared (not exclusive on either side); a write in the child splits
    its PMD and copies one 4K page."""
    mm = P.MM()
    a = mm.mmap(None, 4 << 20, RW, PRIV)
    mm.madvise(a, 4 << 20, P.MADV_HUGEPAGE)
    mm.touch(a)
    assert P.pmd_pfn(mm.entry(a, P.PMD)) == P.HUGE_ZERO_PFN
    assert int(mm.pagemap(a, a + PS)[0]) & (PRESENT | FILE) == PRESENT | FILE
    mm.touch(a + (2 << 20), write=True)
    assert P.pmd_trans_huge(mm.entry(a + (2 << 20), P.PMD))
    child = mm.fork()
    assert not int(mm.pagemap(a + (2 << 20), a + (2 << 20) + PS)[0]) & EXCL
    child.touch(a + (2 << 20) + 5 * PS, write=True)
    assert not P.pmd_leaf(child.entry(a + (2 << 20), P.PMD))
    pm = child.pagemap(a + (2 << 20), a + (4 << 20))
    assert int(pm[5]) & EXCL and not int(pm[4]) & EXCL
    assert P.pmd_trans_huge(mm.entry(a + (2 << 20), P.PMD))
    child.exit()
    mm.validate()


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
    op = mm._op().setup().set_split_heads(heads)
    assert op.split_heads == sorted(heads)


def test_mremap_move_leaves_an_empty_pte_table_at_the_destination():
    """move_page_tables (6.18) allocates the destination's PMD and PTE table
    for every extent whose source PMD is a table, even when no PTE in the
    extent is set; that empty table then stops a THP fault there (a read
    fault maps the 4K zero page, not the huge zero page).  An extent whose
    source PMD is none allocates nothing at the destination."""
    mm = P.MM()
    base = 0x7F0000000000
    mm.mmap(base, 1023 * PS, RW, PRIV | P.MAP_FIXED)
    mm.madvise(base, 1023 * PS, P.MADV_HUGEPAGE)
    mm.touch(base + 941 * PS)                       # a PTE table for block 512..1023
    mm.mremap(base + 887 * PS, 42 * PS, 16 * PS, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, base + 91 * PS)
    v = mm.entry(base, P.PMD)
    assert not P.entries.pte_none(v) and not P.entries.pmd_leaf(v)
    mm.madvise(base + 119 * PS, PS, P.MADV_POPULATE_READ)
    assert mm.pagemap(base + 119 * PS, base + 120 * PS)[0] & (PRESENT | FILE) == PRESENT

    mm = P.MM()
    mm.mmap(base, 1024 * PS, RW, PRIV | P.MAP_FIXED)
    mm.mremap(base + 900 * PS, 8 * PS, 8 * PS, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, base + 91 * PS)
    assert P.entries.pte_none(mm.entry(base, P.PMD))
    mm.validate()
