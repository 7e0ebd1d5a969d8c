"""Runs of none PUD and PMD entries, walked without pte_hole or install_pte.

mm/pagewalk.c's walk_pud_range and walk_pmd_range do nothing for a none
entry when the ops have neither ``pte_hole`` nor ``install_pte`` (they go on
to the next slot); the compiled walker steps over such a run in one scan.
Sparse tables (a kernel's preallocated vmalloc PUD tables are almost all
none) with ranges starting and ending anywhere, on 6.13's, 7.0's and
today's loops: both walkers make the same calls with the same arguments and
return the same value.
"""

import hypothesis.strategies as st
from hypothesis import given, settings

import pgwalk
from pgwalk import entries as E
from pgwalk.constants import PMD, PTE, PUD
from helpers.support import CYTHON, PRESENT, REFERENCE

GiB = 1 << 30
MiB = 1 << 20
BASE = 1 << 39                      # PGD slot 1: one PUD table under test
SPAN = 512 * GiB


def _pmd_table(draw, pud_addr):
    """Edits for a sparse PMD table under the PUD slot at ``pud_addr``."""
    edits = [("table", pud_addr, PUD, None)]
    for i in draw(st.lists(st.integers(0, 511), max_size=6, unique=True)):
        addr = pud_addr + i * 2 * MiB
        kind = draw(st.sampled_from(["thp", "ptes", "ad", "garbage"]))
        if kind == "thp":
            edits.append(("set", addr, PMD, E.pfn_pmd(draw(st.integers(1, 1 << 20)) << 9, PRESENT)))
        elif kind == "ptes":
            edits.append(("set", addr + draw(st.integers(0, 511)) * 4096, PTE,
                          E.pfn_pte(draw(st.integers(1, 1 << 20)), PRESENT)))
        elif kind == "ad":
            edits.append(("set", addr, PMD, 0x60))       # none: A and D are ignored (pmd_none)
        else:
            edits.append(("set", addr, PMD, 0x2))        # not present, not none
    return edits


@st.composite
def sparse_tables(draw):
    edits = [("table", BASE, 1, None)]                   # PGD slot links an empty PUD table
    for i in draw(st.lists(st.integers(0, 511), max_size=6, unique=True)):
        addr = BASE + i * GiB
        kind = draw(st.sampled_from(["pmds", "pmds", "leaf", "ad"]))
        if kind == "pmds":
            edits += _pmd_table(draw, addr)
        elif kind == "leaf":
            edits.append(("set", addr, PUD, E.pfn_pud(draw(st.integers(1, 1 << 10)) << 18, PRESENT)))
        else:
            edits.append(("set", addr, PUD, 0x60))
    start = BASE + draw(st.integers(0, SPAN // 4096 - 1)) * 4096
    end = draw(st.integers(start // 4096 + 1, (BASE + SPAN) // 4096)) * 4096
    if draw(st.booleans()):                              # a range inside one PUD slot
        end = min(end, (start | (GiB - 1)) + 1)
    return edits, start, end


def _walk(impl, edits, start, end, api, kernel, with_pte):
    mm = pgwalk.MM(4)
    for what, addr, level, value in edits:
        if what == "table":
            mm.alloc_table(addr, pgwalk.PGD if level == 1 else level)
        else:
            mm.set_entry(addr, level, value)
    trace = []

    def rec(name):
        def cb(entry, addr, next, walk):
            trace.append((name, addr, next, entry.val))
            return 0
        return cb

    fns = {"pud_entry": rec("pud"), "pmd_entry": rec("pmd")}
    if with_pte:
        fns["pte_entry"] = rec("pte")
    ops = pgwalk.MMWalkOps(**fns)
    if api == "novma":
        with mm.mmap_write_lock():                       # a user mm's no-VMA walk
            ret = impl.walk_page_range_novma(mm, start, end, ops, kernel=kernel)
    else:
        mm.add_vma(BASE, BASE + SPAN)
        with mm.mmap_read_lock():
            ret = impl.walk_page_range(mm, start, end, ops, kernel=kernel)
    return ret, trace


@settings(max_examples=300, deadline=None)
@given(sparse_tables(), st.sampled_from(["novma", "vma"]), st.sampled_from(["6.13", "7.0", "today"]),
       st.booleans())
def test_none_runs_give_the_reference_walk(tables, api, kernel, with_pte):
    edits, start, end = tables
    got = _walk(CYTHON, edits, start, end, api, kernel, with_pte)
    want = _walk(REFERENCE, edits, start, end, api, kernel, with_pte)
    assert got == want


def test_a_long_none_run_is_stepped_over_to_the_next_entry():
    """Entries after a run of hundreds of none slots are still met, at their
    own addresses (the scan must stop at the first non-none slot)."""
    edits = [("table", BASE, 1, None),
             ("set", BASE + 3 * GiB, PUD, E.pfn_pud(1 << 18, PRESENT)),
             ("set", BASE + 500 * GiB, PUD, E.pfn_pud(2 << 18, PRESENT)),
             ("set", BASE + 510 * GiB + 7 * 2 * MiB, PMD, E.pfn_pmd(1 << 9, PRESENT))]
    for impl in (CYTHON, REFERENCE):
        ret, trace = _walk(impl, edits, BASE + 4096, BASE + SPAN - 4096, "novma", None, False)
        assert ret == 0
        assert [(n, a) for n, a, _, _ in trace] == [
            ("pud", BASE + 3 * GiB), ("pud", BASE + 500 * GiB), ("pud", BASE + 510 * GiB),
            ("pmd", BASE + 510 * GiB + 14 * MiB)], impl.name
