"""Every check of ``MM.validate()`` can fail: each test builds a sound mm,
checks that it validates, breaks exactly one invariant (through the pool's
test hook ``_pool_poke``, a private table view or a private attribute) and
expects ``InvariantError`` naming what broke."""

import gc

import numpy as np
import pytest

import pgwalk
import pgwalk.reference
from pgwalk import entries as E
from pgwalk.constants import (
    FIRST_DATA_PFN, MADV_COLD, MADV_COLLAPSE, MADV_FREE, MADV_GUARD_INSTALL, MADV_HUGEPAGE,
    MADV_PAGEOUT, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PGD, PMD, PROT_NONE, PROT_READ, PROT_WRITE, PTE, PUD,
    _PAGE_PRESENT, _PAGE_RW,
)
from pgwalk.mm import InvariantError

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
MiB = 1 << 20


def broken(mm, match):
    with pytest.raises(InvariantError, match=match):
        mm.validate()


def slot(mm, addr, level):
    """(numpy view of the table, index) of the slot for ``addr`` at ``level``."""
    tid, idx = mm._locate(addr, level, False)
    return mm._table(tid), idx


# --- the pool and the tree (C, pgwalk/_core.pyx) ------------------------------------

def tree():
    """A low-level mm with tables at every level and a freed table."""
    mm = pgwalk.MM(4)
    mm.map(0x40000000 + 5 * PAGE_SIZE)              # PUD, PMD, PTE tables
    mm.alloc_table(0x80000000, PUD)                 # an empty PMD table
    mm.alloc_table(1 << 39, PGD)                    # a PUD table in another PGD slot...
    mm.set_entry(1 << 39, PGD, 0)                   # ...freed
    mm.validate()
    return mm


def live_tid(mm, level):
    for tid in range(1, 64):
        try:
            if mm._table_level(tid) == level and tid != mm.pgd_id:
                return tid
        except ValueError:
            pass
    raise AssertionError("no such table")


def freed_tid(mm):
    for tid in range(1, 64):
        try:
            mm._table_level(tid)
        except ValueError:
            return tid
    raise AssertionError("no free table")


def test_pool_live_count():
    mm = tree()
    mm._pool_poke("live", value=1)
    broken(mm, "live .* free tables, but ids")


def test_pool_ids_within_the_slabs():
    mm = tree()
    mm._pool_poke("ntables", value=512)             # more ids than one slab holds
    broken(mm, "table ids for 1 slab")


def test_pool_free_list_length():
    mm = pgwalk.MM(4)                               # ids handed out: the top-level table only
    mm._pool_poke("push_free", 5)
    mm._pool_poke("push_free", 6)
    broken(mm, "2 free ids among 1")


def test_pool_free_id_never_handed_out():
    mm = tree()
    mm._pool_poke("push_free", 10_000)
    mm._pool_poke("live", value=-1)
    broken(mm, "free id 10000 was never handed out")


def test_pool_free_id_twice():
    mm = tree()
    mm._pool_poke("push_free", freed_tid(mm))
    mm._pool_poke("live", value=-1)
    broken(mm, "on the free list twice")


def test_pool_free_table_still_owned():
    mm = tree()
    mm._pool_poke("push_free", live_tid(mm, PMD))
    mm._pool_poke("live", value=-1)
    broken(mm, "free table .* still has a level or an owner")


def test_pool_free_table_zeroed():
    mm = tree()
    mm._pool_poke("free_word", freed_tid(mm), 0x67)
    broken(mm, "free table .* is not zeroed")


def test_pool_level_of_a_live_table():
    mm = tree()
    mm._pool_poke("level", live_tid(mm, PMD), 7)
    broken(mm, "neither free nor of a level")
    mm = tree()
    mm._pool_poke("level", live_tid(mm, PMD), 1)     # a P4D table in a 4-level mm
    broken(mm, "neither free nor of a level")


def test_pool_owner_of_a_live_table():
    mm = tree()
    mm._pool_poke("owner_null", live_tid(mm, PTE))
    broken(mm, "has no owner slot")


def test_pool_one_top_level_table():
    mm = tree()
    mm._pool_poke("level", live_tid(mm, PUD), 0)
    broken(mm, "2 top-level tables")


def test_top_level_table_is_the_pools():
    mm = tree()
    mm._pool_poke("level", mm.pgd_id, 2)
    broken(mm, "top-level table .* is not the pool's owner-less level-0 table")


def test_tree_child_level():
    mm = tree()
    mm._pool_poke("level", live_tid(mm, PMD), PTE)
    broken(mm, "holds level 4, expected 3")


def test_tree_table_not_linked_from_its_owner():
    mm = tree()
    mm._pool_poke("owner_of", live_tid(mm, PTE), live_tid(mm, PUD))
    broken(mm, "is not linked from its owner slot")


def test_tree_table_linked_from_outside_the_tree():
    mm = pgwalk.MM(4)
    mm.alloc_table(0, PGD)                          # PUD table, tid 2
    mm.alloc_table(1 << 39, PGD)                    # PUD table, tid 3
    mm.set_entry(0, PGD, 0)                         # tid 2 freed
    mm.alloc_table(1 << 39, PUD)                    # PMD table under tid 3 reuses tid 2
    mm.validate()
    t, i = slot(mm, 1 << 39, PGD)
    t[i] = 0                                        # cut tid 3 off, without freeing it
    broken(mm, "table 2 .* is linked from a slot that is not in the tree")


def test_counters_per_level():
    mm = tree()
    mm._pool_poke("stat_alloc", PMD, 1)
    broken(mm, "live level-3 tables, but allocated - freed")
    mm = tree()
    mm._pool_poke("stat_freed", PUD, 1)
    broken(mm, "live level-2 tables, but allocated - freed")
    mm = tree()
    mm._pool_poke("stat_alloc", PTE, -1)
    broken(mm, "live PTE tables, outside allocated - freed")
    mm = tree()
    mm._pool_poke("stat_alloc", PGD, 1)
    broken(mm, "top-level table was counted")


def test_counters_allow_the_tables_thp_splits_deposit():
    """A PTE table a THP split takes is not a counted allocation: at most
    one per split_pmd is allowed on top of allocated - freed."""
    mm = pgwalk.MM(4)
    a = mm.mmap(None, 4 * MiB, RW, ANON)
    mm.madvise(a, 4 * MiB, MADV_HUGEPAGE)
    mm.touch(a, write=True)
    mm.munmap(a + PAGE_SIZE, PAGE_SIZE)             # splits the THP
    assert mm.stats["split_pmd"] == 1 and mm.stats["alloc"]["pte"] == 0
    mm.validate()


# --- VMAs ----------------------------------------------------------------------------

def two_vmas():
    mm = pgwalk.MM(4)
    a = mm.mmap(None, 8 * PAGE_SIZE, RW, ANON)
    b = mm.mmap(a + 16 * PAGE_SIZE, 8 * PAGE_SIZE, PROT_READ, ANON)
    mm.validate()
    return mm, a, b


def test_vmas_disjoint():
    mm, a, b = two_vmas()
    mm.vma_tree[0].vm_end = b + PAGE_SIZE
    mm.vma_tree._ends[:] = [v.vm_end for v in mm.vma_tree]
    broken(mm, "overlaps the VMA before it")


def test_vma_index():
    mm, a, b = two_vmas()
    mm.vma_tree._ends[0] += PAGE_SIZE
    broken(mm, "index out of date")
    mm, a, b = two_vmas()
    mm.vma_tree._ends.pop()
    broken(mm, "VMA index is out of date")


def test_vma_owner():
    mm, a, b = two_vmas()
    other = pgwalk.MM(4)
    mm.vma_tree[1].vm_mm = other
    broken(mm, "index out of date")


def test_vma_alignment_and_size():
    mm, a, b = two_vmas()
    mm.vma_tree[1].vm_end = mm.vma_tree[1].vm_start
    mm.vma_tree._ends[:] = [v.vm_end for v in mm.vma_tree]
    broken(mm, "empty or not page aligned")
    mm, a, b = two_vmas()
    mm.vma_tree[0].vm_start += 8
    broken(mm, "empty or not page aligned")


# --- the process model (Python, pgwalk/mm.py) -----------------------------------------

def process():
    """A process-model mm: private pages (one THP), a guard page, shmem, a child."""
    mm = pgwalk.MM(4)
    a = mm.mmap(None, 4 * MiB, RW, ANON)
    mm.madvise(a, 2 * MiB, MADV_HUGEPAGE)
    mm.touch(a, write=True)                         # THP at a
    mm.touch(a + 2 * MiB, write=True)               # a small page
    mm.touch(a + 2 * MiB + PAGE_SIZE)               # the zero page
    mm.madvise(a + 2 * MiB + 2 * PAGE_SIZE, PAGE_SIZE, MADV_GUARD_INSTALL)
    s = mm.mmap(None, 16 * PAGE_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS)
    mm.touch(s, write=True)
    mm.touch(s + PAGE_SIZE, write=True)
    mm.validate()
    return mm, a, s


def test_sound_process_model_mms_validate():
    mm, a, s = process()
    child = mm.fork()
    child.touch(a + 2 * MiB, write=True)            # COW break in the child
    mm.touch(a + PAGE_SIZE, write=True)             # the parent's THP is shared: split + COW
    mm.validate()
    child.validate()
    child.exit()
    mm.validate()


def test_entry_outside_any_vma():
    mm, a, s = process()
    t, i = slot(mm, a + 2 * MiB, PTE)
    mm.munmap(a + 2 * MiB + 3 * PAGE_SIZE, PAGE_SIZE)
    t[i + 3] = t[i]                                 # a present PTE in the hole
    broken(mm, "outside any VMA")


def test_no_leaf_above_the_pmd_level():
    mm, a, s = process()
    t, i = slot(mm, a, PUD)
    t[(i + 1) % 512] = E.pfn_pud(1 << 18, _PAGE_PRESENT)
    broken(mm, "leaf or bad entry at level 2")
    mm, a, s = process()
    mm._table(mm.pgd_id)[300] = 0xE3                # kernel half
    broken(mm, "above TASK_SIZE")


def test_pmd_neither_table_nor_huge_page():
    mm, a, s = process()
    t, i = slot(mm, a, PMD)
    t[i] = 0x60                                     # A|D bits where the THP was
    broken(mm, "neither a present page nor a guard marker")


def test_pte_neither_present_nor_guard():
    mm, a, s = process()
    t, i = slot(mm, a + 2 * MiB + 5 * PAGE_SIZE, PTE)
    t[i] = E.swp_entry_to_pte(E.swp_entry(1, 42))
    broken(mm, "neither a present page nor a guard marker")


def test_present_bit_follows_protection():
    mm, a, s = process()
    mm.mprotect(a + 2 * MiB, PAGE_SIZE, PROT_NONE)
    mm.validate()
    t, i = slot(mm, a + 2 * MiB, PTE)
    t[i] = int(t[i]) | _PAGE_PRESENT
    broken(mm, "present bit does not match the protection")


def test_write_bit_follows_protection():
    mm, a, s = process()
    mm.mprotect(a + 2 * MiB, PAGE_SIZE, PROT_READ)
    mm.validate()
    t, i = slot(mm, a + 2 * MiB, PTE)
    t[i] = int(t[i]) | _PAGE_RW
    broken(mm, "writable in VMA")


def test_zero_page_never_writable():
    mm, a, s = process()
    t, i = slot(mm, a + 2 * MiB + PAGE_SIZE, PTE)
    t[i] = int(t[i]) | _PAGE_RW
    broken(mm, "zero page mapped writable")


def test_shmem_page_is_the_objects():
    mm, a, s = process()
    t, i = slot(mm, s, PTE)
    t[i], t[i + 1] = t[i + 1], t[i]                 # the two object pages swapped
    broken(mm, "not the shmem object's page")


def test_shmem_folio_orders():
    """A huge shmem folio (MADV_COLLAPSE) validates; its order array broken
    (a folio not aligned, or not contiguous) does not."""
    mm = pgwalk.MM()
    s = mm.mmap(None, 1024 * PAGE_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS)
    s = (s + 2 * MiB - 1) & ~(2 * MiB - 1)
    mm.touch(s, True)
    mm.madvise(s, 2 * MiB, MADV_COLLAPSE)
    mm.validate()
    obj = mm.find_vma(s).vm_file
    k = int(np.flatnonzero(obj.order == 9)[0])
    obj.order[k + 1] = 3
    broken(mm, "not aligned, whole and contiguous")
    obj.order[k + 1] = 9
    obj.pages[k + 5], obj.pages[k + 6] = obj.pages[k + 6], obj.pages[k + 5]
    broken(mm, "not aligned, whole and contiguous|not the shmem object's page")


def test_writable_private_page_mapped_once():
    mm, a, s = process()
    child = mm.fork()
    t, i = slot(child, a + 2 * MiB, PTE)
    t[i] = int(t[i]) | _PAGE_RW                     # a COW-shared page made writable
    broken(mm, "writable private page .* map count is 2")    # the group's check
    broken(child, "writable private page .* map count is 2")


def test_map_count_matches_the_tables():
    mm, a, s = process()
    pfn = E.pte_pfn(mm.entry(a + 2 * MiB, PTE))
    mm.phys.add_map(pfn, 1, 1)
    broken(mm, f"PFN {pfn:#x}: map count 2, but the group's tables map it 1")
    mm, a, s = process()
    t, i = slot(mm, a + 2 * MiB, PTE)
    t[i + 7] = int(t[i]) & ~_PAGE_RW                # the same page twice
    broken(mm, "map count 1, but the group's tables map it 2")


def test_thp_counts_once_per_subpage():
    mm, a, s = process()
    pfn = E.pmd_pfn(mm.entry(a, PMD))
    mm.phys.add_map(pfn + 511, 1, 1)
    broken(mm, f"PFN {pfn + 511:#x}: map count 2, but the group's tables map it 1")


def test_fork_shares_counted_in_both():
    mm, a, s = process()
    child = mm.fork()
    pfn = E.pte_pfn(mm.entry(a + 2 * MiB, PTE))
    assert mm.phys.mapcount(pfn) == 2
    t, i = slot(child, a + 2 * MiB, PTE)
    t[i] = 0                                        # the child's mapping gone, count left
    broken(mm, "map count 2, but the group's tables map it 1")


def test_pfn_never_handed_out():
    mm, a, s = process()
    t, i = slot(mm, a + 2 * MiB, PTE)
    t[i + 9] = E.pfn_pte(mm.phys.next_pfn + 5, _PAGE_PRESENT) & ~_PAGE_RW
    broken(mm, "never handed out")
    mm, a, s = process()
    t, i = slot(mm, a + 2 * MiB, PTE)
    t[i + 9] = E.pfn_pte(FIRST_DATA_PFN - 3, _PAGE_PRESENT)
    broken(mm, "never handed out")


def test_unmapped_page_is_free():
    mm, a, s = process()
    pfn = E.pte_pfn(mm.entry(a + 2 * MiB, PTE))
    mm.munmap(a + 2 * MiB, PAGE_SIZE)
    mm.validate()
    mm.phys.set_flags(pfn, 1)                      # PF_DATA on a freed page
    broken(mm, "mapped nowhere but not free")


# --- which mms the process-model checks apply to --------------------------------------

def test_low_level_edits_turn_the_process_checks_off():
    """map/set_entry/add_vma bypass the physical-page bookkeeping: the
    group's process-model checks stop (the structural ones go on)."""
    for edit in (lambda mm, a: mm.map(a + 2 * MiB + 9 * PAGE_SIZE),
                 lambda mm, a: mm.set_entry(a + 2 * MiB + 9 * PAGE_SIZE, PTE, 0x67 | 5 << 12),
                 lambda mm, a: mm.add_vma(1 << 40, (1 << 40) + PAGE_SIZE)):
        mm, a, s = process()
        child = mm.fork()
        edit(child, a)
        mm.phys.add_map(E.pte_pfn(mm.entry(a + 2 * MiB, PTE)), 1, 1)
        mm.validate()
        assert mm.phys_group.inexact.startswith("low-level edit")
        mm._pool_poke("live", value=1)
        broken(mm, "live .* free tables")


def test_a_child_dropped_without_exit_turns_them_off():
    mm, a, s = process()
    child = mm.fork()
    child.exit()
    del child
    mm.phys.add_map(E.pte_pfn(mm.entry(a + 2 * MiB, PTE)), 1, 1)
    broken(mm, "map count")                         # an exited child: still checked
    mm, a, s = process()
    child = mm.fork()
    del child                                       # its mappings vanished, counts stayed
    gc.collect()
    assert mm.phys_group.inexact == "an mm of the group was dropped without exit()"
    mm.validate()


def test_kernel_mms_are_not_process_model_mms():
    mm = pgwalk.init_mm(4)
    mm._table(mm.pgd_id)[300] = 0x67 | (5 << 12)    # not a table link: garbage
    mm.validate()
    mm = pgwalk.MM(4)
    mm._table(mm.pgd_id)[300] = 0x67 | (5 << 12)
    broken(mm, "above TASK_SIZE")


@pytest.mark.parametrize("impl", ["compiled", "reference"])
def test_walk_splitting_a_shmem_thp_keeps_the_map_counts(impl):
    """Finding 7, fixed: the kernel's split of a non-anonymous huge PMD zaps
    it and removes its rmap (the folio's map count falls,
    __split_huge_pmd_locked); pgwalk's walkers clear the PMD and tell the
    pool's owner (Phys.attach), so the process model's per-PFN counts follow
    -- and a later fault maps the page exclusively again."""
    walker = pgwalk if impl == "compiled" else pgwalk.reference
    mm = pgwalk.MM(4)
    a = mm.mmap(0x7F0000000000, 4 * MiB, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    mm.madvise(a, 4 * MiB, MADV_HUGEPAGE)
    mm.touch(a, write=True)
    mm.madvise(a, 2 * MiB, MADV_COLLAPSE)           # a shmem THP
    assert pgwalk.pmd_leaf(mm.entry(a, PMD))
    mm.validate()
    ops = pgwalk.MMWalkOps(pte_entry=lambda e, addr, next, walk: 0)
    with mm.mmap_read_lock():
        assert walker.walk_page_range(mm, a, a + PAGE_SIZE, ops) == 0
    assert mm.entry(a, PMD) == 0                    # split: the PMD was cleared
    mm.validate()                                   # was: map count 1, mapped 0 times
    mm.touch(a)
    assert mm.pagemap(a, a + PAGE_SIZE)[0] & (1 << 56)     # exclusively mapped again
    mm.validate()


def test_page_kind_follows_the_vma():
    mm, a, s = process()
    pfn = E.pte_pfn(mm.entry(a + 2 * MiB, PTE))
    mm.phys.set_flags(pfn, 4)                      # PF_SHMEM on an anonymous page
    broken(mm, "not an anonymous page")
    mm, a, s = process()
    pfn = E.pte_pfn(mm.entry(s, PTE))
    mm.phys.set_flags(pfn, 16, 4)                  # the shmem page made anonymous
    broken(mm, "not a shmem page")
    mm, a, s = process()
    pfn = E.pmd_pfn(mm.entry(a, PMD))
    mm.phys.set_flags(pfn + 300, 0, 16)            # one subpage of the THP
    broken(mm, f"PFN {pfn + 300:#x} with page flags .* not an anonymous page")


def test_failed_fork_gives_the_map_counts_back(monkeypatch):
    """A fork whose copy fails (a page-table allocation in the child) tears
    the half-built child down, as the kernel's failed fork drops the new
    mm: the parent's pages are mapped once again and the group stays
    checked."""
    mm, a, s = process()
    pfn = E.pmd_pfn(mm.entry(a, PMD))                # the THP is copied before the failure
    join = pgwalk.MM.join_group

    def failing_join(self, group):
        join(self, group)
        if group is mm.phys_group:
            self.fail_table_alloc(at=[3])           # inside the copy of the first VMA
    monkeypatch.setattr(pgwalk.MM, "join_group", failing_join)
    with pytest.raises(OSError) as exc:
        mm.fork()
    assert exc.value.errno == 12
    monkeypatch.undo()
    del exc                                         # its traceback holds the child
    gc.collect()
    assert len(mm.phys_group.live()) == 1
    assert mm.phys_group.inexact is None
    assert mm.phys.mapcount(pfn) == mm.phys.mapcount(pfn + 511) == 1
    mm.validate()


@pytest.mark.parametrize("advice", [MADV_COLD, MADV_PAGEOUT, MADV_FREE])
def test_folio_split_remaps_with_each_vmas_protection(advice):
    """Found by the state machine (docs/robustness.md): a THP covered in
    part by MADV_COLD/PAGEOUT/FREE is split and its never-written subpages
    become the zero page -- in the neighbouring VMA too, whose protection
    the zero-page PTE must take (the kernel builds it from the protection
    of the VMA mapping it), not the advised VMA's."""
    mm = pgwalk.MM(4)
    a = mm.mmap(0x7F0000000000, 4 * MiB, RW, ANON | MAP_FIXED)
    mm.madvise(a, 4 * MiB, MADV_HUGEPAGE)
    mm.touch(a, write=True)                         # a THP; only its first page written
    mm.mprotect(a + MiB, MiB, PROT_NONE)            # PMD split, the folio stays large
    mm.madvise(a + MiB, MiB, advice)                # partial cover: the folio is split
    rw = mm.entry(a + PAGE_SIZE, PTE)               # in the RW VMA
    none = mm.entry(a + MiB + PAGE_SIZE, PTE)       # in the PROT_NONE VMA
    assert E.pte_pfn(rw) == E.pte_pfn(none) == 1    # both the zero page
    assert rw & _PAGE_PRESENT and not none & _PAGE_PRESENT
    mm.validate()
