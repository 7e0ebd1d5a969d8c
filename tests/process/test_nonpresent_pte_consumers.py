"""pagemap, mincore and smaps on non-present PTEs that name a page
(migration, device and hwpoison entries: ``is_pfn_swap_entry``), beside
swap-file entries and markers, on both walkers.  The kernel's per-PTE rules
(fs/proc/task_mmu.c: pte_to_pagemap_entry, smaps_pte_entry; mm/mincore.c:
mincore_pte_range, mincore_swap) are pinned here; the whole-PMD rules are in
test_pmd_migration_consumers.py.  The entries come from ``set_entry``, as in
the random states of tests/walk/test_pt_range_walk.py (a PMD migration entry
split by a walk leaves PTE migration entries too)."""

import pytest

import pgwalk
from pgwalk import constants as C, entries as E
from pgwalk.constants import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PTE
from pgwalk.process.objects import PF_FDIRTY, PF_SHMEM_DIRTY

RW = C.PROT_READ | C.PROT_WRITE
WALKERS = ("callbacks", "pt_range")
PFN_TYPES = (C.SWP_MIGRATION_READ, C.SWP_MIGRATION_READ_EXCLUSIVE, C.SWP_MIGRATION_WRITE,
             C.SWP_HWPOISON, C.SWP_DEVICE_WRITE, C.SWP_DEVICE_READ, C.SWP_DEVICE_EXCLUSIVE)


def region(shared, n=8):
    """An mm with ``n`` written pages at ``a`` (private anonymous or shmem);
    returns (mm, a, their PFNs)."""
    mm = pgwalk.MM()
    flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS
    a = mm.mmap(None, n * PAGE_SIZE, RW, flags)
    for i in range(n):
        mm.touch(a + i * PAGE_SIZE, write=True)
    pfns = [int(w) & C.PM_PFN_MASK for w in mm.pagemap(a, a + n * PAGE_SIZE)]
    return mm, a, pfns


def swp_pte(typ, offset):
    return E.swp_entry_to_pte(E.swp_entry(typ, offset))


@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("typ", PFN_TYPES)
def test_pagemap_pfn_entry_is_file_when_its_page_is(walker, shared, typ):
    """pte_to_pagemap_entry: a non-present PTE is PM_SWAP with its type and
    offset; one that names a page gets PM_FILE when that page's folio is not
    anonymous (shmem here), and never PM_MMAP_EXCLUSIVE (present only)."""
    mm, a, pfns = region(shared)
    before = [int(w) for w in mm.pagemap(a, a + PAGE_SIZE)]
    assert before[0] & C.PM_MMAP_EXCLUSIVE and bool(before[0] & C.PM_FILE) == shared
    mm.set_entry(a, PTE, swp_pte(typ, pfns[0]))
    w = int(mm.pagemap(a, a + PAGE_SIZE, walker=walker)[0])
    assert w == C.PM_SWAP | (C.PM_FILE if shared else 0) | typ | (pfns[0] << 5)


@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize("shared", [False, True])
def test_mincore_non_present_ptes(walker, shared):
    """mincore_pte_range: an entry naming a page (migration, device,
    hwpoison) is resident ("always uptodate": mincore_swap gives !shmem for
    a non-swap entry, and the PTE path passes shmem false); a swap file's
    entry is resident only in the swap cache, which the model does not
    keep (0); a marker (a guard, a poison marker) gets the unmapped range's
    answer: 0 for anonymous memory, the object's page for shmem."""
    mm, a, pfns = region(shared, n=len(PFN_TYPES) + 3)
    for i, t in enumerate(PFN_TYPES):
        mm.set_entry(a + i * PAGE_SIZE, PTE, swp_pte(t, pfns[i]))
    k = len(PFN_TYPES)
    mm.set_entry(a + k * PAGE_SIZE, PTE, swp_pte(1, 0x55))
    mm.set_entry(a + (k + 1) * PAGE_SIZE, PTE, E.make_pte_marker(C.PTE_MARKER_GUARD))
    mm.set_entry(a + (k + 2) * PAGE_SIZE, PTE, E.make_pte_marker(C.PTE_MARKER_POISONED))
    got = mm.mincore(a, (k + 3) * PAGE_SIZE, walker=walker).tolist()
    marker = 1 if shared else 0                   # shmem: the object still has the page
    assert got == [1] * k + [0, marker, marker]


def _smaps_of(mm, a, walker):
    return next(d for d in mm.smaps(walker=walker) if d["start"] <= a < d["end"])


@pytest.mark.parametrize("walker", WALKERS)
@pytest.mark.parametrize("typ", [C.SWP_MIGRATION_READ, C.SWP_MIGRATION_WRITE, C.SWP_HWPOISON,
                                 C.SWP_DEVICE_EXCLUSIVE])
def test_smaps_non_present_entry_naming_a_page(walker, typ):
    """smaps_pte_entry: the page a migration (hwpoison, device-exclusive)
    entry names is accounted by smaps_account with present false: it stays
    in Rss, Anonymous and Pss (in full), moves from Private_Dirty to
    Shared_Dirty ("maybe shared"), is not Referenced (a swap entry is not
    young) and is not Swap."""
    mm, a, pfns = region(False, n=4)
    before = _smaps_of(mm, a, walker)
    mm.set_entry(a, PTE, swp_pte(typ, pfns[0]))
    after = _smaps_of(mm, a, walker)
    for k in ("Rss", "Pss", "Anonymous"):
        assert after[k] == before[k] == 16, k
    assert before["Private_Dirty"] == 16 and after["Private_Dirty"] == 12
    # dirty: the entry carries no D bit, so the folio's own dirty flag decides
    folio_dirty = bool(mm.phys.flags(pfns[0]) & (PF_FDIRTY | PF_SHMEM_DIRTY))
    assert (after["Shared_Dirty"], after["Shared_Clean"]) == ((4, 0) if folio_dirty else (0, 4))
    assert after["Referenced"] == before["Referenced"] - 4 and after["Swap"] == 0


@pytest.mark.parametrize("walker", WALKERS)
def test_smaps_device_private_entry_counts_as_present(walker):
    """smaps_pte_entry: a device-private entry's page is accounted as
    present (its map count decides private or shared); a swap file's entry
    adds to Swap only; a marker adds nothing."""
    mm, a, pfns = region(False, n=4)
    mm.set_entry(a, PTE, swp_pte(C.SWP_DEVICE_WRITE, pfns[0]))
    mm.set_entry(a + PAGE_SIZE, PTE, swp_pte(C.SWP_DEVICE_READ, pfns[1]))
    mm.set_entry(a + 2 * PAGE_SIZE, PTE, swp_pte(3, 0x99))
    mm.set_entry(a + 3 * PAGE_SIZE, PTE, E.make_pte_marker(C.PTE_MARKER_POISONED))
    d = _smaps_of(mm, a, walker)
    assert (d["Rss"], d["Pss"], d["Anonymous"], d["Swap"]) == (8, 8, 8, 4)
    assert d["Shared_Dirty"] == d["Shared_Clean"] == 0 and d["Referenced"] == 0
    assert d["Private_Dirty"] + d["Private_Clean"] == 8
