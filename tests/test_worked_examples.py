"""Worked examples of the kernel's walker (A to N) and the traps an
implementer falls into, plus decision 8.1 (docs/decisions.md), as tests.

Every test runs on a 4-level (p4d folded) and a 5-level address space and
against both walkers (the compiled one and ``pgwalk.reference``).  The
expected traces are written out by hand from mm/pagewalk.c; where folding makes
the 4-level and 5-level answers differ, both are spelled out.

Trace events: ``("G"|"Q"|"U"|"P"|"E", addr, next)`` for pgd/p4d/pud/pmd/
pte_entry, ``("H", addr, next, depth)`` for pte_hole, ``("I", addr, next)``
for install_pte, ``("T", start, end)`` test_walk, ``("pre", start, end)``,
``("post",)``, ``("HT", addr, next, hmask)`` hugetlb_entry.
"""

import pytest

import pgwalk
from pgwalk.constants import (
    ACTION_AGAIN, ACTION_CONTINUE, EINVAL, P4D, PGD, PMD, PTE, PTE_MARKER_GUARD,
    PUD, VM_HUGETLB, VM_PFNMAP,
)

from helpers.support import IMPLS

PG = 4096
M2 = 2 << 20
G1 = 1 << 30
V = 0x7f0000200000            # top-level slot 254 (4-level), PUD slot 0, PMD slot 1
G0 = 0x7f0040000000           # PUD slot 1 of the same top-level slot
THP_PFN = 0x40000             # 2 MiB aligned
PUD_PFN = 0x80000             # 1 GiB aligned
PROT = 0x67                   # P | RW | US | A | D: what mm.map() uses by default
GUARD = pgwalk.make_pte_marker(PTE_MARKER_GUARD)

impls = pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
both_levels = pytest.mark.parametrize("levels", (4, 5), ids=lambda n: f"{n}level")

NAMES = {"G": "pgd_entry", "Q": "p4d_entry", "U": "pud_entry", "P": "pmd_entry",
         "E": "pte_entry"}


# --- helpers ---------------------------------------------------------------------

def thp(pfn):
    """The raw value mm.map(level=PMD, pfn=pfn) installs (P RW US A D PS)."""
    return (pfn << 12) | PROT | 0x80


def pte(pfn):
    """A present 4 KiB PTE with the default protection."""
    return (pfn << 12) | PROT


def is_table(v):
    """A present, non-leaf upper-level entry."""
    return bool(v & 1) and not v & 0x80


class Rec:
    """Builds MMWalkOps whose callbacks record every call.

    ``codes`` names the callbacks to define; ``hooks[code](addr, walk, x)``
    (x = entry ref, ptep, depth or None) may act and return the callback's
    result (None means 0).  ``install_pte`` without a hook stores a guard
    marker."""

    def __init__(self, codes, hooks=None):
        self.trace = []
        self.values = []        # (code, addr, raw entry value) of entry callbacks
        self.vmas = []          # walk.vma at each event
        hooks = hooks or {}
        kw = {}

        def result(code, addr, walk, x):
            h = hooks.get(code)
            r = h(addr, walk, x) if h else 0
            return 0 if r is None else r

        def entry_cb(code):
            def f(entry, addr, next, walk):
                self.trace.append((code, addr, next))
                self.values.append((code, addr, int(entry)))
                self.vmas.append(walk.vma)
                return result(code, addr, walk, entry)
            return f

        for code in codes:
            if code in NAMES:
                kw[NAMES[code]] = entry_cb(code)
            elif code == "H":
                def hole(addr, next, depth, walk):
                    self.trace.append(("H", addr, next, depth))
                    self.vmas.append(walk.vma)
                    return result("H", addr, walk, depth)
                kw["pte_hole"] = hole
            elif code == "I":
                def install(addr, next, ptep, walk):
                    self.trace.append(("I", addr, next))
                    self.vmas.append(walk.vma)
                    if "I" in hooks:
                        return result("I", addr, walk, ptep)
                    ptep.set(GUARD)
                    return 0
                kw["install_pte"] = install
            elif code == "T":
                def test_walk(start, end, walk):
                    self.trace.append(("T", start, end))
                    self.vmas.append(walk.vma)
                    return result("T", start, walk, None)
                kw["test_walk"] = test_walk
            elif code == "pre":
                def pre_vma(start, end, walk):
                    self.trace.append(("pre", start, end))
                    self.vmas.append(walk.vma)
                    return result("pre", start, walk, None)
                kw["pre_vma"] = pre_vma
            elif code == "post":
                def post_vma(walk):
                    self.trace.append(("post",))
                    self.vmas.append(walk.vma)
                kw["post_vma"] = post_vma
            elif code == "HT":
                def hugetlb(entry, hmask, addr, next, walk):
                    self.trace.append(("HT", addr, next, hmask))
                    self.vmas.append(walk.vma)
                    return result("HT", addr, walk, entry)
                kw["hugetlb_entry"] = hugetlb
            else:
                raise ValueError(code)
        self.ops = pgwalk.MMWalkOps(**kw)

    def vals(self, code):
        return [(a, v) for c, a, v in self.values if c == code]


def walk(impl, mm, start, end, rec):
    with mm.mmap_read_lock():
        return impl.walk_page_range(mm, start, end, rec.ops)


def walk_mm(impl, mm, start, end, rec):
    with mm.mmap_read_lock():
        return impl.walk_page_range_mm(mm, start, end, rec.ops)


def walk_novma(impl, mm, start, end, rec):
    with mm.mmap_write_lock():
        return impl.walk_page_range_novma(mm, start, end, rec.ops)


def walk_vma(impl, vma, rec):
    with vma.vm_mm.mmap_read_lock():
        return impl.walk_page_vma(vma, rec.ops)


def walk_range_vma(impl, vma, start, end, rec):
    with vma.vm_mm.mmap_read_lock():
        return impl.walk_page_range_vma(vma, start, end, rec.ops)


def E(addr, n=1):
    return [("E", addr + i * PG, addr + (i + 1) * PG) for i in range(n)]


def I(addr, n=1):
    return [("I", addr + i * PG, addr + (i + 1) * PG) for i in range(n)]


def allocs(mm, before):
    after = mm.stats["alloc"]
    return {k: after[k] - before[k] for k in after}


def ptes(mm, addr, n):
    return [mm.entry(addr + i * PG, PTE) for i in range(n)]


# --- A ---------------------------------------------------------------------------------

@impls
@both_levels
def test_A_populated_pte_table_e_only(impl, levels):
    """7.A / 2.1 pte_entry: with only pte_entry, every PTE slot of the range is
    visited, none slots included (five calls for five pages, two present)."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 5 * PG)
    p0 = mm.map(V, PTE, pfn=0x1234)
    p2 = mm.map(V + 2 * PG, PTE, pfn=0x1236)
    rec = Rec("E")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    assert rec.trace == E(V, 5)
    assert rec.vals("E") == [(V, p0), (V + PG, 0), (V + 2 * PG, p2),
                             (V + 3 * PG, 0), (V + 4 * PG, 0)]
    assert p0 == pte(0x1234) and p2 == pte(0x1236)
    mm.validate()


# --- B, B2, B3 ---------------------------------------------------------------------------

@impls
@both_levels
def test_B_empty_mm_e_h(impl, levels):
    """7.B / 4.7: an empty address space with E + H reports one hole of depth
    0: from the P4D loop when P4D is folded (4-level), from the PGD loop when
    the 5-level PGD slot is empty.  Nothing is allocated."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 5 * PG)
    rec = Rec("EH")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    assert rec.trace == [("H", V, V + 5 * PG, 0)]
    assert rec.vmas == [mm.vmas[0]]
    assert mm.nr_tables == 1
    mm.validate()


@impls
def test_B_5level_empty_p4d_slot_depth_1(impl):
    """7.B, 4.7 table (5-level column): a PGD slot that holds a P4D table whose
    P4D slot is empty gives a hole of depth 1 (real_depth(1) with P4D real)."""
    mm = pgwalk.MM(5)
    mm.add_vma(V, V + 5 * PG)
    mm.alloc_table(V, PGD)
    assert mm.entry(V, P4D) == 0
    rec = Rec("GEH")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    assert rec.trace == [("G", V, V + 5 * PG), ("H", V, V + 5 * PG, 1)]
    mm.validate()


@impls
@both_levels
def test_B2_pgd_p4d_hole_on_empty_mm(impl, levels):
    """7.B2 / 9 "with 4-level folding pgd_entry runs for empty top-level slots
    and the hole is reported by the P4D loop with depth 0": G is called, Q is
    not.  5-level, empty PGD slot: the PGD loop reports the hole and calls
    neither G nor Q."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 5 * PG)
    rec = Rec("GQH")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    if levels == 4:
        assert rec.trace == [("G", V, V + 5 * PG), ("H", V, V + 5 * PG, 0)]
        assert rec.vals("G") == [(V, 0)]
    else:
        assert rec.trace == [("H", V, V + 5 * PG, 0)]
    mm.validate()


@impls
@both_levels
def test_B2_pgd_and_hole_only(impl, levels):
    """7.B2 last sentence / 4.1: with only G + H there is no lower callback,
    so the (folded) walk does not descend: just G on 4-level.  On 5-level the
    PGD loop itself reports the empty PGD slot (depth 0) and skips G; with a
    P4D table present but its slot empty, just G (no descent, no hole)."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 5 * PG)
    rec = Rec("GH")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    if levels == 4:
        assert rec.trace == [("G", V, V + 5 * PG)]
    else:
        assert rec.trace == [("H", V, V + 5 * PG, 0)]
        mm.alloc_table(V, PGD)
        rec = Rec("GH")
        assert walk(impl, mm, V, V + 5 * PG, rec) == 0
        assert rec.trace == [("G", V, V + 5 * PG)]
    mm.validate()


@impls
@both_levels
def test_B3_hole_only_reports_no_in_vma_holes(impl, levels):
    """7.B3 / 4.1 / 9 "a walk with only pte_hole reports no in-VMA holes": no
    descent below the PGD loop, so 4-level reports nothing, 5-level reports
    only a depth-0 hole for an empty PGD slot, and nothing once the upper
    tables exist down to an empty PMD slot."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 5 * PG)
    rec = Rec("H")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    assert rec.trace == ([] if levels == 4 else [("H", V, V + 5 * PG, 0)])
    mm.alloc_table(V, PUD)                  # PMD table present, PMD slot 1 none
    assert mm.entry(V, PMD) == 0
    rec = Rec("H")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    assert rec.trace == []
    mm.validate()


@impls
def test_B3_5level_empty_p4d_slot_hole_only(impl):
    """4.1 (5-level): with only pte_hole the PGD loop does not descend, so an
    empty P4D slot under a present PGD slot is not reported (no depth-1 hole)."""
    mm = pgwalk.MM(5)
    mm.add_vma(V, V + 5 * PG)
    mm.alloc_table(V, PGD)
    rec = Rec("H")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    assert rec.trace == []
    mm.validate()


@impls
@both_levels
def test_folded_boundary_crossing(impl, levels):
    """1 (folding), 4.2, 4.3, 4.7: a range crossing a 512 GiB boundary is two
    top-level granules on 4-level (G and a depth-0 hole for each); on 5-level
    it lies in one PGD slot (one depth-0 hole when that slot is empty, and
    with a P4D table: one G, then one depth-1 hole per P4D slot)."""
    b = 0x7f8000000000                       # top-level slot 255 (4-level)
    s, e = b - 4 * PG, b + 4 * PG
    mm = pgwalk.MM(levels)
    mm.add_vma(s, e)
    rec = Rec("GQH")
    assert walk(impl, mm, s, e, rec) == 0
    if levels == 4:
        assert rec.trace == [("G", s, b), ("H", s, b, 0), ("G", b, e), ("H", b, e, 0)]
    else:
        assert rec.trace == [("H", s, e, 0)]
        mm.alloc_table(s, PGD)
        rec = Rec("GQH")
        assert walk(impl, mm, s, e, rec) == 0
        assert rec.trace == [("G", s, e), ("H", s, b, 1), ("H", b, e, 1)]
    mm.validate()


@impls
@both_levels
def test_folded_pgd_and_p4d_see_same_slot(impl, levels):
    """1 (folding) / 2.1 pgd_entry, p4d_entry: with 4-level folding both are
    called for the same slot (same value); on 5-level they see the PGD and
    the P4D slot, which differ."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + PG)
    p = mm.map(V, PTE, pfn=0x777)
    rec = Rec("GQE")
    assert walk(impl, mm, V, V + PG, rec) == 0
    assert rec.trace == [("G", V, V + PG), ("Q", V, V + PG), ("E", V, V + PG)]
    (_, g), = rec.vals("G")
    (_, q), = rec.vals("Q")
    assert g == mm.entry(V, PGD) and is_table(g)
    assert q == mm.entry(V, P4D) and is_table(q)
    if levels == 4:
        assert g == q
    else:
        assert g != q
    assert rec.vals("E") == [(V, p)]
    mm.validate()


# --- C, D --------------------------------------------------------------------------------

@impls
@both_levels
def test_C_pmd_slot_none_depth_3(impl, levels):
    """7.C / 4.5 step 2: PUD entry links a PMD table whose slot 1 is none:
    H(…, 3)."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 5 * PG)
    mm.alloc_table(V, PUD)
    rec = Rec("EH")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    assert rec.trace == [("H", V, V + 5 * PG, 3)]
    mm.validate()


@impls
@both_levels
def test_C_pud_slot_none_depth_2(impl, levels):
    """7.C second sentence / 4.4 step 2: the PUD slot is none: H(…, 2) on
    both paging modes (PUD is never folded)."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 5 * PG)
    mm.alloc_table(V, P4D)                  # PUD table present, PUD slot 0 none
    assert mm.entry(V, PUD) == 0
    rec = Rec("EH")
    assert walk(impl, mm, V, V + 5 * PG, rec) == 0
    assert rec.trace == [("H", V, V + 5 * PG, 2)]
    mm.validate()


@impls
@both_levels
def test_D_range_crossing_pmd_boundary(impl, levels):
    """7.D / 1 clipping rule: [0x7f00003ff000, 0x7f0000401000) with a PTE
    table at PMD slot 1 and slot 2 none: E(…3ff000, …400000) then
    H(…400000, …401000, 3)."""
    s, e = 0x7f00003ff000, 0x7f0000401000
    mm = pgwalk.MM(levels)
    mm.add_vma(s, e)
    mm.alloc_table(s, PMD)
    rec = Rec("EH")
    assert walk(impl, mm, s, e, rec) == 0
    assert rec.trace == [("E", 0x7f00003ff000, 0x7f0000400000),
                         ("H", 0x7f0000400000, 0x7f0000401000, 3)]
    assert rec.vals("E") == [(s, 0)]
    mm.validate()


# --- E: anonymous THP ---------------------------------------------------------------------

def thp_mm(levels, file=False):
    mm = pgwalk.MM(levels)
    vma = mm.add_vma(V, V + M2)
    if file:
        vma.vm_ops = object()
    assert mm.map(V, PMD, pfn=THP_PFN) == thp(THP_PFN)
    return mm


def assert_split_anon(mm):
    """The PMD became a PTE table of 512 present PTEs mapping pfn + i."""
    assert is_table(mm.entry(V, PMD))
    assert ptes(mm, V, 512) == [pte(THP_PFN + i) for i in range(512)]


def assert_unsplit(mm):
    assert mm.entry(V, PMD) == thp(THP_PFN)


@impls
@both_levels
def test_E_thp_p_only(impl, levels):
    """7.E row "P only" / 4.9: no callback below the PMD, so the THP is handed
    to pmd_entry and not split."""
    mm = thp_mm(levels)
    rec = Rec("P")
    before = mm.stats
    assert walk(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == [("P", V, V + M2)]
    assert rec.vals("P") == [(V, thp(THP_PFN))]
    assert_unsplit(mm)
    assert mm.stats["split_pmd"] == before["split_pmd"]
    mm.validate()


@impls
@both_levels
def test_E_thp_e_only_splits(impl, levels):
    """7.E row "E only" / 4.9 split_huge_pmd, anonymous: the walker splits the
    THP into a PTE table of 512 present PTEs (pfn + i, same flags) and calls
    E 512 times; the split reuses the deposited table (no allocation)."""
    mm = thp_mm(levels)
    rec = Rec("E")
    before = mm.stats
    assert walk(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == E(V, 512)
    assert rec.vals("E") == [(V + i * PG, pte(THP_PFN + i)) for i in range(512)]
    assert_split_anon(mm)
    assert mm.stats["split_pmd"] - before["split_pmd"] == 1
    assert allocs(mm, before["alloc"]) == {"p4d": 0, "pud": 0, "pmd": 0, "pte": 0}
    mm.validate()


@impls
@both_levels
def test_E_thp_p_subtree_then_split(impl, levels):
    """7.E row "P + E, P leaves SUBTREE": P sees the THP, then split, E x512."""
    mm = thp_mm(levels)
    rec = Rec("PE")
    assert walk(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == [("P", V, V + M2)] + E(V, 512)
    assert rec.vals("P") == [(V, thp(THP_PFN))]
    assert_split_anon(mm)
    mm.validate()


@impls
@both_levels
def test_E_thp_p_continue_no_split(impl, levels):
    """7.E row "P + E, P sets CONTINUE" / 2.3: CONTINUE skips the subtree, so
    P only and no split."""
    mm = thp_mm(levels)

    def cont(addr, walk, entry):
        walk.action = ACTION_CONTINUE
    rec = Rec("PE", {"P": cont})
    assert walk(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == [("P", V, V + M2)]
    assert_unsplit(mm)
    mm.validate()


@impls
@both_levels
def test_E_thp_h_only(impl, levels):
    """7.E row "H only" / 4.1: no descent, no hole, no split (the upper tables
    exist on both paging modes)."""
    mm = thp_mm(levels)
    rec = Rec("H")
    assert walk(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == []
    assert_unsplit(mm)
    mm.validate()


@impls
@both_levels
def test_E_thp_novma_e(impl, levels):
    """7.E row "E, walk_page_range_novma" / 3.6, 4.5 step 6: a no-VMA walk
    never splits; the leaf is skipped and E is not called."""
    mm = thp_mm(levels)
    rec = Rec("E")
    assert walk_novma(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == []
    assert_unsplit(mm)
    mm.validate()


@impls
@both_levels
def test_E_thp_novma_p_e(impl, levels):
    """7.E row "P + E, walk_page_range_novma": P is called for the leaf, which
    is then skipped (no split, no E); walk.vma is None and walk.no_vma set."""
    mm = thp_mm(levels)
    seen = []
    rec = Rec("PE", {"P": lambda addr, walk, entry: seen.append(walk.no_vma)})
    assert walk_novma(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == [("P", V, V + M2)]
    assert rec.vmas == [None] and seen == [True]
    assert_unsplit(mm)
    mm.validate()


@impls
@both_levels
def test_E_thp_install_only_skips(impl, levels):
    """7.E row "I only" / 4.5 step 5, 4.9: with only install_pte below, a
    present THP is skipped: not split, nothing installed, nothing allocated."""
    mm = thp_mm(levels)
    rec = Rec("I")
    before = mm.stats
    assert walk_mm(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == []
    assert_unsplit(mm)
    assert allocs(mm, before["alloc"]) == {"p4d": 0, "pud": 0, "pmd": 0, "pte": 0}
    assert mm.stats["split_pmd"] == before["split_pmd"]
    mm.validate()


@impls
@both_levels
def test_E_thp_install_and_e_splits(impl, levels):
    """7.E row "I + E" / 4.10: with pte_entry present the THP is split; every
    PTE is present so E runs 512 times and I never."""
    mm = thp_mm(levels)
    rec = Rec("IE")
    assert walk_mm(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == E(V, 512)
    assert_split_anon(mm)
    mm.validate()


# --- F: file THP --------------------------------------------------------------------------

@impls
@both_levels
def test_F_file_thp_split_clears_then_hole(impl, levels):
    """7.F / 4.9 (not anonymous: PMD cleared) / 4.6 step 1 (mapping fails,
    AGAIN) / 9 "after a split that clears the entry the slot is revisited":
    E + H on a file THP gives H(…200000, …400000, 3) and a none PMD."""
    mm = thp_mm(levels, file=True)
    rec = Rec("EH")
    before = mm.stats
    assert walk(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == [("H", V, V + M2, 3)]
    assert mm.entry(V, PMD) == 0
    assert mm.stats["split_pmd"] - before["split_pmd"] == 1
    mm.validate()


@impls
@both_levels
def test_F_file_thp_p_sees_leaf_once(impl, levels):
    """7.F with P added / 4.5 steps 1-2 and 8: P sees the leaf, the split
    clears it, the AGAIN re-run finds the slot none and reports the hole
    without calling P again."""
    mm = thp_mm(levels, file=True)
    rec = Rec("PEH")
    assert walk(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == [("P", V, V + M2), ("H", V, V + M2, 3)]
    assert rec.vals("P") == [(V, thp(THP_PFN))]
    assert mm.entry(V, PMD) == 0
    mm.validate()


@impls
@both_levels
def test_F_file_thp_install_repopulates(impl, levels):
    """7.F last sentence / 4.10: with I + E the cleared PMD gets a fresh PTE
    table (one allocation) and I is called for all 512 slots."""
    mm = thp_mm(levels, file=True)

    def inst(addr, walk, ptep):
        assert int(ptep) == 0
        ptep.set(pte(0x9000 + (addr - V) // PG))
    rec = Rec("IE", {"I": inst})
    before = mm.stats
    assert walk_mm(impl, mm, V, V + M2, rec) == 0
    assert rec.trace == I(V, 512)
    assert is_table(mm.entry(V, PMD))
    assert ptes(mm, V, 512) == [pte(0x9000 + i) for i in range(512)]
    assert allocs(mm, before["alloc"]) == {"p4d": 0, "pud": 0, "pmd": 0, "pte": 1}
    mm.validate()


# --- G: huge PUD leaf ---------------------------------------------------------------------

def pud_mm(levels, file=False):
    mm = pgwalk.MM(levels)
    vma = mm.add_vma(G0, G0 + G1)
    if file:
        vma.vm_ops = object()
    mm.map(G0, PUD, pfn=PUD_PFN)
    assert mm.entry(G0, PUD) == (PUD_PFN << 12) | PROT | 0x80
    return mm


@impls
@both_levels
@pytest.mark.parametrize("file", (False, True), ids=("anon", "file"))
def test_G_pud_leaf_split_clears_then_hole(impl, levels, file):
    """7.G / 4.9 split_huge_pud "always just clears the PUD" / 4.4 step 7:
    P + E + H, no U: the PUD leaf is cleared and re-processed as a depth-2
    hole; no PMD table is created."""
    mm = pud_mm(levels, file)
    rec = Rec("PEH")
    before = mm.stats
    assert walk(impl, mm, G0, G0 + G1, rec) == 0
    assert rec.trace == [("H", G0, G0 + G1, 2)]
    assert mm.entry(G0, PUD) == 0
    assert mm.stats["split_pud"] - before["split_pud"] == 1
    assert allocs(mm, before["alloc"]) == {"p4d": 0, "pud": 0, "pmd": 0, "pte": 0}
    mm.validate()


@impls
@both_levels
def test_G_pud_leaf_install_repopulates(impl, levels):
    """7.G second part / 4.4 step 2, 4.5 step 2, 4.10: with I + P the cleared
    PUD gets a PMD table; each PMD slot of the (clipped) range is none, gets a
    PTE table, then P sees the new table entry, then I runs for its PTEs."""
    mm = pud_mm(levels)
    end = G0 + M2 + 3 * PG
    rec = Rec("PI")
    before = mm.stats
    assert walk_mm(impl, mm, G0, end, rec) == 0
    assert rec.trace == ([("P", G0, G0 + M2)] + I(G0, 512)
                         + [("P", G0 + M2, end)] + I(G0 + M2, 3))
    assert all(is_table(v) for _, v in rec.vals("P"))
    assert is_table(mm.entry(G0, PUD))
    assert ptes(mm, G0, 515) == [GUARD] * 515
    assert mm.entry(G0 + M2 + 3 * PG, PTE) == 0
    assert mm.stats["split_pud"] - before["split_pud"] == 1
    assert allocs(mm, before["alloc"]) == {"p4d": 0, "pud": 0, "pmd": 1, "pte": 2}
    mm.validate()


# --- H: AGAIN -----------------------------------------------------------------------------

def small_mm(levels, npages=4, present=(0,)):
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + npages * PG)
    mm.alloc_table(V, PMD)
    vals = {}
    for i in present:
        vals[i] = mm.map(V + i * PG, PTE, pfn=0x5000 + i)
    return mm, vals


@impls
@both_levels
def test_H_pmd_again_once(impl, levels):
    """7.H / 2.3, 4.5 step 4: P sets AGAIN on its first call only: P, P, then
    E for every PTE."""
    mm, _ = small_mm(levels)
    fired = []

    def again_once(addr, walk, entry):
        if not fired:
            fired.append(addr)
            walk.action = ACTION_AGAIN
    rec = Rec("PE", {"P": again_once})
    assert walk(impl, mm, V, V + 4 * PG, rec) == 0
    assert rec.trace == [("P", V, V + 4 * PG), ("P", V, V + 4 * PG)] + E(V, 4)
    mm.validate()


@impls
@both_levels
def test_trap_pte_again_reruns_whole_pmd(impl, levels):
    """9 "pte_entry setting AGAIN re-runs the whole PMD, including pmd_entry"
    / 2.3, 4.5 step 8: the PTE loop finishes (action is only read after it),
    then the PMD slot is redone from pmd_entry."""
    mm, _ = small_mm(levels)
    fired = []

    def again_at_2(addr, walk, entry):
        if addr == V + 2 * PG and not fired:
            fired.append(addr)
            walk.action = ACTION_AGAIN
    rec = Rec("PE", {"E": again_at_2})
    assert walk(impl, mm, V, V + 4 * PG, rec) == 0
    assert rec.trace == ([("P", V, V + 4 * PG)] + E(V, 4)
                         + [("P", V, V + 4 * PG)] + E(V, 4))
    mm.validate()


# --- I: gaps --------------------------------------------------------------------------------

@impls
@both_levels
def test_I_gaps_between_vmas(impl, levels):
    """7.I / 3.2 step 5: holes outside VMAs are reported with depth -1 and
    walk.vma None; VMAs are walked with walk.vma set."""
    mm = pgwalk.MM(levels)
    a = mm.add_vma(0x400000, 0x402000)
    b = mm.add_vma(0x405000, 0x406000)
    for addr in (0x400000, 0x401000, 0x405000):
        mm.map(addr, PTE)
    rec = Rec("EH")
    assert walk(impl, mm, 0x3ff000, 0x407000, rec) == 0
    assert rec.trace == [("H", 0x3ff000, 0x400000, -1),
                         ("E", 0x400000, 0x401000), ("E", 0x401000, 0x402000),
                         ("H", 0x402000, 0x405000, -1),
                         ("E", 0x405000, 0x406000),
                         ("H", 0x406000, 0x407000, -1)]
    assert rec.vmas == [None, a, a, None, b, None]
    mm.validate()


# --- J: VM_PFNMAP ---------------------------------------------------------------------------

def pfnmap_mm(levels):
    """P = [V, V+4p) VM_PFNMAP, B = [V+4p, V+6p) normal, all six pages mapped."""
    mm = pgwalk.MM(levels)
    p = mm.add_vma(V, V + 4 * PG, VM_PFNMAP)
    b = mm.add_vma(V + 4 * PG, V + 6 * PG)
    for i in range(6):
        mm.map(V + i * PG, PTE)
    return mm, p, b


@impls
@both_levels
@pytest.mark.parametrize("hole_ret,want", ((0, 0), (7, 0), (-5, -5)))
def test_J_pfnmap_hole(impl, levels, hole_ret, want):
    """7.J / 3.3 / 9 "positive pte_hole in the VM_PFNMAP path is swallowed":
    one H(clipped start, clipped end, -1) for the PFN map, which is skipped;
    a positive result is lost and the walk goes on, a negative one aborts."""
    mm, p, b = pfnmap_mm(levels)
    rec = Rec("EH", {"H": lambda addr, walk, depth: hole_ret})
    assert walk(impl, mm, V + PG, V + 5 * PG, rec) == want
    if want == 0:
        assert rec.trace == [("H", V + PG, V + 4 * PG, -1), ("E", V + 4 * PG, V + 5 * PG)]
        assert rec.vmas == [p, b]
    else:
        assert rec.trace == [("H", V + PG, V + 4 * PG, -1)]
    mm.validate()


@impls
@both_levels
def test_J_pfnmap_walk_page_vma_walks_it(impl, levels):
    """7.J last sentence / 3.5 / 9 "walk_page_vma/walk_page_range_vma walk
    VM_PFNMAP VMAs": no VMA test, the PFN map's PTEs are visited."""
    mm, p, _ = pfnmap_mm(levels)
    rec = Rec("EH")
    assert walk_vma(impl, p, rec) == 0
    assert rec.trace == E(V, 4)
    rec = Rec("EH")
    assert walk_range_vma(impl, p, V + PG, V + 3 * PG, rec) == 0
    assert rec.trace == E(V + PG, 2)
    mm.validate()


@impls
@both_levels
def test_trap_walk_page_vma_never_calls_test_walk(impl, levels):
    """9 "walk_page_vma/walk_page_range_vma never call test_walk" / 3.5:
    a test_walk that would skip the VMA is ignored by them, while
    walk_page_range obeys it (positive: skipped silently, result 0)."""
    mm, _ = small_mm(levels, present=(0, 1))
    vma = mm.vmas[0]
    rec = Rec("TE", {"T": lambda addr, walk, x: 1})
    assert walk_vma(impl, vma, rec) == 0
    assert rec.trace == E(V, 4)
    rec = Rec("TE", {"T": lambda addr, walk, x: 1})
    assert walk_range_vma(impl, vma, V + PG, V + 2 * PG, rec) == 0
    assert rec.trace == E(V + PG)
    rec = Rec("TE", {"T": lambda addr, walk, x: 1})
    assert walk(impl, mm, V, V + 4 * PG, rec) == 0
    assert rec.trace == [("T", V, V + 4 * PG)]
    mm.validate()


# --- K: hugetlb -----------------------------------------------------------------------------

@impls
@both_levels
@pytest.mark.parametrize("codes", ("E", "EH"))
def test_K_hugetlb_without_hugetlb_entry(impl, levels, codes):
    """7.K / 3.4 step 3 / 9 "hugetlb VMAs are silently skipped when
    hugetlb_entry is absent": only pre_vma and post_vma run; no E, no hole,
    whether or not the huge page is mapped."""
    for mapped in (False, True):
        mm = pgwalk.MM(levels)
        mm.add_vma(V, V + M2, VM_HUGETLB)
        if mapped:
            mm.map(V, PMD, pfn=THP_PFN)
        rec = Rec(list(codes) + ["pre", "post"])
        assert walk(impl, mm, V, V + M2, rec) == 0
        assert rec.trace == [("pre", V, V + M2), ("post",)]
        mm.validate()


@impls
@both_levels
def test_trap_hugetlb_install_einval_before_pre_vma(impl, levels):
    """9 "hugetlb VMAs ... rejected with -EINVAL (before pre_vma) when
    install_pte is set" / 3.4 step 1: an earlier normal VMA is walked
    (pre, installs, post), then the hugetlb VMA returns -EINVAL without
    pre_vma."""
    a_end = 0x7f0000000000 + 2 * PG
    mm = pgwalk.MM(levels)
    mm.add_vma(0x7f0000000000, a_end)
    mm.add_vma(V, V + M2, VM_HUGETLB)
    rec = Rec(["I", "pre", "post"])
    assert walk_mm(impl, mm, 0x7f0000000000, V + M2, rec) == -EINVAL
    assert rec.trace == ([("pre", 0x7f0000000000, a_end)] + I(0x7f0000000000, 2)
                         + [("post",)])
    assert ptes(mm, 0x7f0000000000, 2) == [GUARD, GUARD]
    mm.validate()


# --- L, M, N: install_pte -------------------------------------------------------------------

class GuardOps:
    """The callbacks of MADV_GUARD_INSTALL's walk (mm/madvise.c)."""

    def __init__(self, mm):
        self.n = 0
        self.snap = {}
        self.mm = mm

        def pud(addr, walk, entry):
            self.snap["U"] = dict(mm.stats["alloc"])
            v = int(entry)
            return 1 if (v & 1 and v & 0x80) else 0

        def pmd(addr, walk, entry):
            self.snap["P"] = dict(mm.stats["alloc"])
            v = int(entry)
            return 1 if (v & 1 and v & 0x80) else 0

        def pte_(addr, walk, entry):
            if pgwalk.is_guard_marker(int(entry)):
                self.n += 1
                return 0
            return 1

        def inst(addr, walk, ptep):
            ptep.set(GUARD)
            self.n += 1
            return 0

        self.rec = Rec("UPEI", {"U": pud, "P": pmd, "E": pte_, "I": inst})


@impls
@both_levels
def test_L_guard_install_on_empty_range(impl, levels):
    """7.L / 4.2-4.5 with install_pte, 4.10: every missing table is allocated
    (P4D only when real), U and P are called for the new table entries
    (PUD and PMD tables allocated before U, the PTE table before P), then I
    stores a guard marker in each of the 4 slots.  Tables stay allocated."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 4 * PG)
    g = GuardOps(mm)
    before = dict(mm.stats["alloc"])
    assert walk_mm(impl, mm, V, V + 4 * PG, g.rec) == 0
    assert g.rec.trace == [("U", V, V + 4 * PG), ("P", V, V + 4 * PG)] + I(V, 4)
    assert all(is_table(v) for c, _, v in g.rec.values if c in "UP")
    p4d = 1 if levels == 5 else 0
    assert allocs(mm, before) == {"p4d": p4d, "pud": 1, "pmd": 1, "pte": 1}
    d = lambda s: {k: s[k] - before[k] for k in s}
    assert d(g.snap["U"]) == {"p4d": p4d, "pud": 1, "pmd": 1, "pte": 0}
    assert d(g.snap["P"]) == {"p4d": p4d, "pud": 1, "pmd": 1, "pte": 1}
    assert g.n == 4
    assert ptes(mm, V, 4) == [GUARD] * 4
    assert is_table(mm.entry(V, PMD))
    mm.validate()


@impls
@both_levels
def test_L_public_walk_refuses_install_pte(impl, levels):
    """3.1 / 4.10: walk_page_range (and the other public entry points) return
    -EINVAL for ops with install_pte, before anything is called or allocated."""
    mm = pgwalk.MM(levels)
    vma = mm.add_vma(V, V + 4 * PG)
    g = GuardOps(mm)
    assert walk(impl, mm, V, V + 4 * PG, g.rec) == -EINVAL
    assert walk_vma(impl, vma, g.rec) == -EINVAL
    assert walk_range_vma(impl, vma, V, V + PG, g.rec) == -EINVAL
    assert walk_novma(impl, mm, V, V + PG, g.rec) == -EINVAL
    assert g.rec.trace == []
    assert mm.nr_tables == 1
    mm.validate()


@impls
@both_levels
def test_M_guard_install_over_present_page(impl, levels):
    """7.M / 4.10 / 9 "pte_entry sees only non-none slots when install_pte is
    set": walk 1 installs slot 0, meets the present slot 1 in E, which
    returns 1: the walk stops with 1, slot 0 keeps its marker.  After the
    caller's zap, walk 2 counts the marker (E) and installs slots 1-3."""
    mm, vals = small_mm(levels, present=(1,))
    g = GuardOps(mm)
    before = dict(mm.stats["alloc"])
    assert walk_mm(impl, mm, V, V + 4 * PG, g.rec) == 1
    assert g.rec.trace == ([("U", V, V + 4 * PG), ("P", V, V + 4 * PG)] + I(V)
                           + E(V + PG))
    assert g.rec.vals("E") == [(V + PG, vals[1])]
    assert ptes(mm, V, 4) == [GUARD, vals[1], 0, 0]
    mm.set_entry(V + PG, PTE, 0)                 # the zap: markers left alone
    g2 = GuardOps(mm)
    assert walk_mm(impl, mm, V, V + 4 * PG, g2.rec) == 0
    assert g2.rec.trace == ([("U", V, V + 4 * PG), ("P", V, V + 4 * PG)] + E(V)
                            + I(V + PG, 3))
    assert g2.rec.vals("E") == [(V, GUARD)]
    assert g2.n == 4
    assert ptes(mm, V, 4) == [GUARD] * 4
    assert allocs(mm, before) == {"p4d": 0, "pud": 0, "pmd": 0, "pte": 0}
    mm.validate()


@impls
@both_levels
def test_N_install_error_midway(impl, levels):
    """7.N / 4.10 Errors, 3.9 last point: I returns -12 on slot 2: slots 0
    and 1 hold the new values, slots 2 and 3 stay none, the tables allocated
    on the way remain, the walk returns -12."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 4 * PG)

    def inst(addr, walk, ptep):
        if addr == V + 2 * PG:
            ptep.set(pte(0xdead))               # not stored: the result is non-zero
            return -12
        ptep.set(pte(0x3000 + (addr - V) // PG))
        return 0
    rec = Rec("I", {"I": inst})
    before = mm.stats
    assert walk_mm(impl, mm, V, V + 4 * PG, rec) == -12
    assert rec.trace == I(V, 3)
    assert ptes(mm, V, 4) == [pte(0x3000), pte(0x3001), 0, 0]
    assert is_table(mm.entry(V, PMD))
    p4d = 1 if levels == 5 else 0
    assert allocs(mm, before["alloc"]) == {"p4d": p4d, "pud": 1, "pmd": 1, "pte": 1}
    assert mm.stats["set_pte_at"] - before["set_pte_at"] == 2
    mm.validate()


@impls
@both_levels
def test_decision_8_1_install_without_pte_entry(impl, levels):
    """8 decision 1: install_pte without pte_entry is accepted; meeting a
    non-none PTE raises TypeError naming its address, leaving what was
    installed before in place and the tables valid."""
    mm, vals = small_mm(levels, present=(2,))
    rec = Rec("I")
    with pytest.raises(TypeError, match=hex(V + 2 * PG)):
        walk_mm(impl, mm, V, V + 4 * PG, rec)
    assert rec.trace == I(V, 2)
    assert ptes(mm, V, 4) == [GUARD, GUARD, vals[2], 0]
    mm.validate()
    # the lock was released: a new walk works
    rec = Rec("E")
    assert walk(impl, mm, V, V + 4 * PG, rec) == 0
    assert rec.trace == E(V, 4)
    mm.validate()


# --- the remaining traps -----------------------------------------------------------

ALL = ["G", "Q", "U", "P", "E", "H", "T", "pre", "post"]


@impls
@both_levels
def test_trap_empty_range_is_einval(impl, levels):
    """9 "empty range (start == end) is -EINVAL, not 0" / 3.2 step 1, 3.5,
    3.6: every entry point, no callback called; start > end likewise."""
    mm, _ = small_mm(levels)
    vma = mm.vmas[0]
    rec = Rec(ALL)
    assert walk(impl, mm, V, V, rec) == -EINVAL
    assert walk(impl, mm, V + PG, V, rec) == -EINVAL
    assert walk_mm(impl, mm, V, V, rec) == -EINVAL
    assert walk_range_vma(impl, vma, V + PG, V + PG, rec) == -EINVAL
    assert walk_novma(impl, mm, V, V, rec) == -EINVAL
    assert rec.trace == []
    mm.validate()


@impls
@both_levels
@pytest.mark.parametrize("ret", (-3, 2))
def test_trap_post_vma_after_failure(impl, levels, ret):
    """9 "post_vma runs even when the VMA's walk failed" / 3.4 step 4: E stops
    the walk at the second page; post_vma still runs; the (negative or
    positive) result is returned."""
    mm, _ = small_mm(levels)
    rec = Rec(["E", "pre", "post"], {"E": lambda a, w, e: ret if a == V + PG else 0})
    assert walk(impl, mm, V, V + 4 * PG, rec) == ret
    assert rec.trace == [("pre", V, V + 4 * PG)] + E(V, 2) + [("post",)]
    mm.validate()


@impls
@both_levels
@pytest.mark.parametrize("ret", (-4, 4))
def test_pre_vma_failure_skips_post_vma(impl, levels, ret):
    """2.1 pre_vma / 3.4 step 2: a non-zero pre_vma (either sign) aborts the
    walk with that value; post_vma is then not called."""
    mm, _ = small_mm(levels)
    rec = Rec(["E", "pre", "post"], {"pre": lambda a, w, x: ret})
    assert walk(impl, mm, V, V + 4 * PG, rec) == ret
    assert rec.trace == [("pre", V, V + 4 * PG)]
    mm.validate()


@impls
@both_levels
def test_trap_test_walk_positive_swallowed(impl, levels):
    """9 "positive return values of test_walk are swallowed" / 3.2, 3.3: a
    VMA whose test_walk returns 1 is skipped silently and the walk goes on to
    the next VMA (result 0); a negative test_walk aborts with its value."""
    mm = pgwalk.MM(levels)
    a = mm.add_vma(V, V + 2 * PG)
    b = mm.add_vma(V + 2 * PG, V + 4 * PG)
    for i in range(4):
        mm.map(V + i * PG, PTE)
    rec = Rec("TE", {"T": lambda addr, walk, x: 1 if walk.vma is a else 0})
    assert walk(impl, mm, V, V + 4 * PG, rec) == 0
    assert rec.trace == [("T", V, V + 2 * PG), ("T", V + 2 * PG, V + 4 * PG)] + E(V + 2 * PG, 2)
    assert rec.vmas == [a, b, b, b]
    rec = Rec("TE", {"T": lambda addr, walk, x: -7 if walk.vma is b else 0})
    assert walk(impl, mm, V, V + 4 * PG, rec) == -7
    assert rec.trace == [("T", V, V + 2 * PG)] + E(V, 2) + [("T", V + 2 * PG, V + 4 * PG)]
    mm.validate()


@impls
@both_levels
@pytest.mark.parametrize("code,ret", (("E", 5), ("H", 9), ("G", 6), ("U", 3), ("P", 8)))
def test_trap_other_positive_values_returned(impl, levels, code, ret):
    """9 "all other positive values are returned" / 3.9: a positive result
    of pte_entry, of the gap's pte_hole (3.2), of pgd_entry, pud_entry or
    pmd_entry stops the walk and reaches the caller unchanged."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 4 * PG)                # then a gap up to the second VMA
    mm.add_vma(V + M2, V + M2 + PG)
    mm.map(V, PTE)
    rec = Rec("GUPEH", {code: lambda a, w, x: ret})
    assert walk(impl, mm, V, V + M2 + PG, rec) == ret
    head = {
        "G": [("G", V, V + 4 * PG)],
        "U": [("G", V, V + 4 * PG), ("U", V, V + 4 * PG)],
        "P": [("G", V, V + 4 * PG), ("U", V, V + 4 * PG), ("P", V, V + 4 * PG)],
        "E": [("G", V, V + 4 * PG), ("U", V, V + 4 * PG), ("P", V, V + 4 * PG),
              ("E", V, V + PG)],
        "H": ([("G", V, V + 4 * PG), ("U", V, V + 4 * PG), ("P", V, V + 4 * PG)]
              + E(V, 4) + [("H", V + 4 * PG, V + M2, -1)]),
    }[code]
    assert rec.trace == head
    mm.validate()


@impls
@both_levels
@pytest.mark.parametrize("ret", (9, -9))
def test_in_vma_hole_value_returned(impl, levels, ret):
    """3.9 / 4.5 step 2: a pte_hole result for an in-VMA hole (depth 3) is
    returned, positive or negative, and stops the walk."""
    mm = pgwalk.MM(levels)
    mm.add_vma(V, V + 2 * M2)
    mm.alloc_table(V, PUD)                  # PMD slots 1 and 2 none
    rec = Rec("EH", {"H": lambda a, w, d: ret})
    assert walk(impl, mm, V, V + 2 * M2, rec) == ret
    assert rec.trace == [("H", V, V + M2, 3)]
    mm.validate()


@impls
@both_levels
def test_trap_none_ptes_go_to_pte_entry_or_install(impl, levels):
    """9 "none PTE slots go to pte_entry (never pte_hole), unless install_pte
    is set, when they go to install_pte and pte_entry sees only non-none
    slots" / 4.6 step 2: present, none, swap, guard marker."""
    mm, vals = small_mm(levels, present=(0,))
    swp = pgwalk.swp_entry_to_pte(pgwalk.swp_entry(1, 0x42))
    mm.set_entry(V + 2 * PG, PTE, swp)
    mm.set_entry(V + 3 * PG, PTE, GUARD)
    rec = Rec("EH")
    assert walk(impl, mm, V, V + 4 * PG, rec) == 0
    assert rec.trace == E(V, 4)
    assert rec.vals("E") == [(V, vals[0]), (V + PG, 0), (V + 2 * PG, swp), (V + 3 * PG, GUARD)]
    rec = Rec("IEH", {"I": lambda a, w, p: p.set(pte(0x6000))})
    assert walk_mm(impl, mm, V, V + 4 * PG, rec) == 0
    assert rec.trace == E(V) + I(V + PG) + E(V + 2 * PG, 2)
    assert rec.vals("E") == [(V, vals[0]), (V + 2 * PG, swp), (V + 3 * PG, GUARD)]
    assert ptes(mm, V, 4) == [vals[0], pte(0x6000), swp, GUARD]
    mm.validate()


@impls
@both_levels
def test_trap_install_pte_scratch(impl, levels):
    """9 "install_pte gets a scratch value, not the live slot; it is only
    offered none slots; no TLB flush" / 4.6 step 2, decisions 8.2: ptep
    starts at 0, writing it does not touch the live slot until the callback
    returns 0; a callback that writes nothing leaves the slot none (the
    store and the MMU-cache update still happen once per installed slot)."""
    mm, vals = small_mm(levels, present=(3,))
    live = []

    def inst(addr, walk, ptep):
        assert int(ptep) == 0
        if addr != V + PG:                     # slot 1: "did nothing"
            ptep.set(pte(0x7000 + (addr - V) // PG))
            assert int(ptep) == pte(0x7000 + (addr - V) // PG)
        live.append(mm.entry(addr, PTE))
        return 0
    rec = Rec("IE", {"I": inst})
    before = mm.stats
    assert walk_mm(impl, mm, V, V + 4 * PG, rec) == 0
    assert rec.trace == I(V, 3) + E(V + 3 * PG)
    assert live == [0, 0, 0]
    assert ptes(mm, V, 4) == [pte(0x7000), 0, pte(0x7002), vals[3]]
    after = mm.stats
    assert after["set_pte_at"] - before["set_pte_at"] == 3
    assert after["update_mmu_cache"] - before["update_mmu_cache"] == 3
    mm.validate()
