"""pagemap, mincore, smaps and clear_refs on a PMD migration entry (a THP
being migrated: a non-present, swap-format PMD holding a migration entry),
on both walkers.

The kernel's consumers are pmd_entry callbacks (pagemap_pmd_range,
mincore_pte_range, smaps_pte_range, clear_refs_pte_range) that take such a
PMD whole under pmd_trans_huge_lock, which returns the lock for any swap PMD;
their ops have no pte_entry, so walk_pmd_range never splits it.  Each test
pins one consumer's answer for the whole PMD and checks the PMD is left as
it was.  The model gets PMD migration entries from ``set_entry`` (as the
random states of tests/walk/test_pt_range_walk.py do): nothing in it
migrates pages."""

import pytest

import pgwalk
from pgwalk import constants as C, entries as E
from pgwalk.constants import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PMD, PMD_SIZE

RW = C.PROT_READ | C.PROT_WRITE
WALKERS = ("callbacks", "pt_range")
NR = PMD_SIZE // PAGE_SIZE
MIGRATION_TYPES = (C.SWP_MIGRATION_READ, C.SWP_MIGRATION_READ_EXCLUSIVE, C.SWP_MIGRATION_WRITE)


def thp_mm(fork=False):
    """An mm with one THP at ``h`` (2 MiB aligned) in a private anonymous
    VMA; with ``fork``, also mapped by a child (its pages' map count 2)."""
    mm = pgwalk.MM()
    a = mm.mmap(None, 4 * PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.madvise(a, 4 * PMD_SIZE, C.MADV_HUGEPAGE)
    h = (a + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    mm.touch(h, write=True)
    assert E.pmd_trans_huge(mm.entry(h, PMD)), "the model made no THP here"
    child = mm.fork() if fork else None
    return mm, child, h


def migrate(mm, h, typ=C.SWP_MIGRATION_WRITE):
    """Replace the THP's PMD at ``h`` by a migration entry of type ``typ``
    for its head page, as try_to_migrate leaves it; returns the entry."""
    pfn = E.pmd_pfn(mm.entry(h, PMD))
    v = E.swp_entry_to_pmd(E.swp_entry(typ, pfn))
    mm.set_entry(h, PMD, v)
    assert E.is_pmd_migration_entry(v)
    return v


def splits(mm):
    """The mm's count of split PMDs and of allocated PTE tables: a consumer
    changes neither."""
    return mm.stats["split_pmd"], mm.stats["alloc"]["pte"]


def test_consumer_ops_have_the_kernels_shape():
    """pagemap_ops (pagemap_pmd_range, pagemap_pte_hole), mincore_walk_ops
    (mincore_pte_range, mincore_unmapped_range), smaps_walk_ops
    (smaps_pte_range) and clear_refs_walk_ops (clear_refs_pte_range): a
    pmd_entry and no pte_entry (the model has no hugetlb_entry, and no
    shmem swap for smaps' pte_hole), so the walker never descends for them."""
    op = pgwalk.MM().new_op()
    assert set(op.slots("pagemap")) == {"pmd_entry", "pte_hole"}
    assert set(op.slots("mincore")) == {"pmd_entry", "pte_hole"}
    assert set(op.slots("smaps")) == {"pmd_entry"}
    assert set(op.slots("clear_refs")) == {"pmd_entry"}


def _pagemap_words(v, addr, n, file):
    """pagemap_pmd_range_thp's words for a swap PMD ``v``, from the page at
    ``addr``: PM_SWAP, the type in bits 0-4 and the offset from bit 5
    advancing by one per page from the entry's offset plus the page's index
    in the PMD (frame += 1 << MAX_SWAPFILES_SHIFT); PM_FILE for a page that
    is not anonymous; never PM_MMAP_EXCLUSIVE (only present entries)."""
    e = E.pmd_to_swp_entry(v)
    idx = (addr & (PMD_SIZE - 1)) // PAGE_SIZE
    flags = C.PM_SWAP | (C.PM_FILE if file else 0)
    return [flags | ((E.swp_type(e) | ((E.swp_offset(e) + idx + i) << 5)) & C.PM_PFN_MASK)
            for i in range(n)]


@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize("typ", MIGRATION_TYPES)
def test_pagemap_takes_a_pmd_migration_entry_whole(walker, typ):
    """pagemap_pmd_range / pagemap_pmd_range_thp: one PM_SWAP word per
    page with the swap offset advancing per page, not exclusive, not file
    (an anonymous THP), over the whole PMD and over a part of it; the PMD is
    left whole (no split)."""
    mm, _, h = thp_mm()
    before = mm.pagemap(h, h + PMD_SIZE)
    assert int(before[0]) & C.PM_MMAP_EXCLUSIVE          # present: exclusive
    v = migrate(mm, h, typ)
    stats = splits(mm)
    got = mm.pagemap(h, h + PMD_SIZE, walker=walker).tolist()
    assert got == _pagemap_words(v, h, NR, file=False)
    s, e = h + 3 * PAGE_SIZE, h + PMD_SIZE - 2 * PAGE_SIZE
    assert mm.pagemap(s, e, walker=walker).tolist() == _pagemap_words(v, s, NR - 5, file=False)
    # the same words the 512 PTE migration entries of a split PMD would give
    assert got == [E.swp_type(E.pmd_to_swp_entry(v)) | ((int(b) & C.PM_PFN_MASK) << 5) | C.PM_SWAP
                   for b in before]
    assert mm.entry(h, PMD) == v and splits(mm) == stats
    mm.validate()


@pytest.mark.parametrize("walker", WALKERS)
def test_pagemap_pmd_migration_entry_of_a_shmem_page_is_file(walker):
    """pagemap_pmd_range_thp: PM_FILE when the entry's page is not
    anonymous (folio_test_anon), here a shmem page; still not exclusive."""
    mm = pgwalk.MM()
    a = mm.mmap(None, 4 * PMD_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS)
    h = (a + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    mm.touch(h + PMD_SIZE, write=True)
    w = int(mm.pagemap(h + PMD_SIZE, h + PMD_SIZE + PAGE_SIZE)[0])
    assert w & C.PM_PRESENT and w & C.PM_FILE
    v = E.swp_entry_to_pmd(E.swp_entry(C.SWP_MIGRATION_READ, w & C.PM_PFN_MASK))
    mm.set_entry(h, PMD, v)
    assert mm.pagemap(h, h + PMD_SIZE, walker=walker).tolist() == _pagemap_words(v, h, NR, file=True)
    assert mm.entry(h, PMD) == v


@pytest.mark.parametrize("walker", WALKERS)
def test_pagemap_swap_file_entry_at_pmd_level(walker):
    """pagemap_pmd_range_thp on a swap PMD that is not a migration entry
    (the kernel warns once and goes on): the same rule, the swap offset
    (not a PFN) plus the page's index, advancing per page."""
    mm, _, h = thp_mm()
    v = E.swp_entry_to_pmd(E.swp_entry(3, 0x4000))
    mm.set_entry(h, PMD, v)
    s = h + 7 * PAGE_SIZE
    assert mm.pagemap(s, h + PMD_SIZE, walker=walker).tolist() == _pagemap_words(v, s, NR - 7, file=False)
    assert mm.entry(h, PMD) == v


@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize("shared", [False, True])
def test_mincore_reports_a_pmd_migration_entry_resident(walker, shared):
    """mincore_pte_range: pmd_trans_huge_lock holds for a swap PMD, and the
    whole range under it is reported resident (1), for an anonymous and a
    shmem VMA alike; the PMD is left whole."""
    if shared:
        mm = pgwalk.MM()
        a = mm.mmap(None, 4 * PMD_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS)
        h = (a + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        mm.touch(h + PMD_SIZE, write=True)
        pfn = int(mm.pagemap(h + PMD_SIZE, h + PMD_SIZE + PAGE_SIZE)[0]) & C.PM_PFN_MASK
        v = E.swp_entry_to_pmd(E.swp_entry(C.SWP_MIGRATION_READ, pfn))
        mm.set_entry(h, PMD, v)
    else:
        mm, _, h = thp_mm()
        v = migrate(mm, h)
    stats = splits(mm)
    assert mm.mincore(h, PMD_SIZE, walker=walker).tolist() == [1] * NR
    assert mm.mincore(h + 5 * PAGE_SIZE, 9 * PAGE_SIZE, walker=walker).tolist() == [1] * 9
    # the PMD after it: untouched (anonymous) or no page of the object there
    assert mm.mincore(h + PMD_SIZE + PAGE_SIZE, PAGE_SIZE, walker=walker).tolist() == [0]
    assert mm.entry(h, PMD) == v and splits(mm) == stats


def _smaps_of(mm, h, walker):
    return next(d for d in mm.smaps(walker=walker) if d["start"] <= h < d["end"])


@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize("fork", [False, True])
def test_smaps_accounts_a_pmd_migration_entry(walker, fork):
    """smaps_pmd_entry, smaps_account(compound, present=false): the THP's
    2 MiB stay in Rss, Anonymous and AnonHugePages; as a non-present entry
    it is "maybe shared": Pss gets the full 2 MiB whatever the map counts
    (the forked pair's present THP had half each) and the size moves from
    Private_* to Shared_* (dirty: the folio is); a migration entry is not
    Swap; Referenced comes from the PMD's accessed bit, which a swap entry
    does not carry."""
    mm, _, h = thp_mm(fork)
    before = _smaps_of(mm, h, walker)
    kb = PMD_SIZE >> 10
    assert before["Rss"] == before["AnonHugePages"] == kb
    assert before["Pss"] == (kb // 2 if fork else kb)
    v = migrate(mm, h)
    stats = splits(mm)
    after = _smaps_of(mm, h, walker)
    for k in ("Rss", "Anonymous", "AnonHugePages"):
        assert after[k] == before[k] == kb, k
    assert after["Pss"] == kb
    dirty = before["Private_Dirty"] + before["Shared_Dirty"]
    clean = before["Private_Clean"] + before["Shared_Clean"]
    assert (after["Shared_Dirty"], after["Shared_Clean"]) == (dirty, clean) and dirty + clean == kb
    assert after["Private_Dirty"] == after["Private_Clean"] == 0
    assert after["Swap"] == 0 and after["Referenced"] == 0 and before["Referenced"] == kb
    assert mm.entry(h, PMD) == v and splits(mm) == stats


@pytest.mark.parametrize("walker", WALKERS)
def test_smaps_swap_file_entry_at_pmd_level_adds_nothing(walker):
    """smaps_pmd_entry: a swap PMD that names no page (softleaf_has_pfn is
    false for a swap file's entry) adds to no counter, not even Swap."""
    mm, _, h = thp_mm()
    mm.set_entry(h, PMD, E.swp_entry_to_pmd(E.swp_entry(2, 0x777)))
    d = _smaps_of(mm, h, walker)
    assert all(d[k] == 0 for k in ("Rss", "Pss", "Anonymous", "AnonHugePages", "Swap",
                                   "Shared_Clean", "Shared_Dirty", "Private_Clean",
                                   "Private_Dirty", "Referenced"))


@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize("kind", [1, 2, 3, 4, 5])
def test_clear_refs_leaves_a_pmd_migration_entry(walker, kind):
    """clear_refs_pte_range: under pmd_trans_huge_lock a non-present PMD is
    left as it is (clear_soft_dirty_pmd is empty without
    CONFIG_MEM_SOFT_DIRTY); never split.  A present THP beside it still has
    its accessed bit cleared (kinds 1 and 2)."""
    mm, _, h = thp_mm()
    mm.touch(h + PMD_SIZE, write=True)
    other = mm.entry(h + PMD_SIZE, PMD)
    assert E.pmd_trans_huge(other) and other & C._PAGE_ACCESSED
    v = migrate(mm, h)
    stats = splits(mm)
    mm.clear_refs(kind, walker=walker)
    assert mm.entry(h, PMD) == v and splits(mm) == stats
    assert bool(mm.entry(h + PMD_SIZE, PMD) & C._PAGE_ACCESSED) == (kind not in (1, 2))
