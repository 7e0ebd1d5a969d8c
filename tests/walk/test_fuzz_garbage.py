"""Garbage-table fuzzing: random 64-bit values written with
``mm.set_entry`` at every level -- table-looking links to live tables linked
elsewhere (aliases), to freed tables and to ids never handed out, PS leaves
at PGD/P4D, bad entries, A/D-only values, swap entries and markers -- then
walks of every kind with Python callbacks and with C built-in ops.

* never a crash; the compiled walker and the reference walker agree exactly
  (trace with raw entry values, return value or exception, final tables,
  counters) with Python callbacks;
* C ops (``CountOp``, ``MincoreOp``, ``FillOp``) on the compiled walker give
  what their Python mirrors give (same results, tables and counters);
* ``mm.validate()`` passes after every build and every walk;
* bad links are handled as docs/decisions.md item 5 says (targeted tests).

The recipes come from tests/helpers/garbage.py (shared with the long standalone run,
tests/walk/fuzz_garbage_long.py, whose figures are in docs/robustness.md).
"""

import random

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import pgwalk
from pgwalk import P4D, PGD, PMD, PTE, PUD, mk_table
from pgwalk._builtin import CountOp, FillOp

from helpers import garbage as G
from helpers.support import CYTHON, IMPLS, REFERENCE

GiB = 1 << 30
MiB = 1 << 20


@settings(max_examples=350, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2 ** 64 - 1))
def test_garbage_tables_walkers_agree(seed):
    recipe = G.random_recipe(random.Random(seed))
    want = G.run(recipe, REFERENCE)
    got = G.run(recipe, CYTHON)
    assert got["build"] == want["build"]
    for i, (g, w) in enumerate(zip(got["steps"], want["steps"])):
        assert g["trace"] == w["trace"], (i, recipe["steps"][i])
        assert g["ret"] == w["ret"], (i, recipe["steps"][i])
        assert g["result"] == w["result"], (i, recipe["steps"][i])
        assert g["tables"] == w["tables"], (i, recipe["steps"][i])
        assert g["stats"] == w["stats"], (i, recipe["steps"][i])
    assert G.run(recipe, CYTHON, c_ops=True) == got


def test_generator_reaches_garbage_paths():
    """The recipes must reach aliases, bad-entry clearing, frees, installs
    and every entry point (on a fixed sample)."""
    seen = dict.fromkeys(["alias", "clear_bad", "install", "hugetlb", "refused", "c_ops"], 0)
    apis = set()
    for seed in range(150):
        recipe = G.random_recipe(random.Random(seed))
        out = G.run(recipe, CYTHON)
        seen["alias"] += any(it[0] == "alias" for it in recipe["items"])
        prev = 0
        for step, r in zip(recipe["steps"], out["steps"]):
            apis.add(step["api"])
            seen["clear_bad"] += r["stats"]["clear_bad"] > prev
            prev = r["stats"]["clear_bad"]
            seen["install"] += any(t[0] == "install_pte" for t in r["trace"])
            seen["hugetlb"] += any(t[0] == "hugetlb_entry" for t in r["trace"])
            seen["refused"] += any(t[0] == "set-refused" for t in r["trace"])
            seen["c_ops"] += step["ops"] in ("count", "mincore", "fill")
    assert apis == set(G.APIS)
    assert all(n >= (1 if k == "hugetlb" else 3) for k, n in seen.items()), repr(seen)


# --- decisions.md item 5, level by level ---------------------------------------------

def _ops(trace):
    def mk(name):
        return lambda e, a, n, w: trace.append((name, a, int(e))) or 0
    return pgwalk.MMWalkOps(
        pgd_entry=mk("pgd"), p4d_entry=mk("p4d"), pud_entry=mk("pud"), pmd_entry=mk("pmd"),
        pte_entry=mk("pte"), pte_hole=lambda a, n, d, w: trace.append(("hole", a, n, d)) or 0,
        hugetlb_entry=lambda e, h, a, n, w: trace.append(("huge", a, int(e))) or 0)


def _alias_setup(levels, level, mode, freed=False):
    """An mm with a page at X and, at the slot of Y = X + one slot at
    ``level``, a link to the table that X's slot at ``level`` links (an
    alias) -- or, with ``freed``, to a table that has been freed."""
    kernel = mode == "init"
    mm = pgwalk.init_mm(levels) if kernel else pgwalk.MM(levels)
    x = (0xFFFF888000000000 if levels == 4 else 0xFF11000000000000) if kernel else 0x7F0000000000
    size = {PGD: 1 << (39 if levels == 4 else 48), P4D: 1 << 39, PUD: GiB, PMD: 2 * MiB}[level]
    y = x + size
    mm.map(x)
    tid, idx = mm._locate(x, level, False)
    child = mm._child(tid, idx)
    if freed:
        mm.set_entry(x, level, 0)            # frees the subtree: child is a freed id now
    mm.set_entry(y, level, mk_table(child))
    if mode in ("vma", "hugetlb", "install"):
        mm.add_vma(y, y + 2 * MiB, pgwalk.VM_HUGETLB if mode == "hugetlb" else 0)
    return mm, x, y


def _walk(mm, impl, mode, y, ops):
    if mode in ("vma", "hugetlb"):
        with mm.mmap_read_lock():
            return impl.walk_page_range(mm, y, y + 2 * MiB, ops)
    if mode == "install":
        with mm.mmap_read_lock():
            return impl.walk_page_range_mm(mm, y, y + 2 * MiB, ops)
    lock = mm.mmap_read_lock() if mm.is_init_mm else mm.mmap_write_lock()
    with lock:
        return impl.walk_page_range_novma(mm, y, y + 2 * MiB, ops)


CASES = [(levels, level, mode, freed)
         for levels in (4, 5)
         for level in ([PGD, P4D, PUD, PMD] if levels == 5 else [PGD, PUD, PMD])
         for mode in ("vma", "novma_user", "init", "hugetlb")
         for freed in (False, True)
         if mode != "hugetlb" or level in (PUD, PMD)]


@pytest.mark.parametrize("levels,level,mode,freed", CASES)
def test_bad_link_handled_as_decided(levels, level, mode, freed):
    results = []
    for impl in IMPLS:
        mm, x, y = _alias_setup(levels, level, mode, freed)
        mm.validate()
        link = mm.entry(y, level)
        x_pte = mm.entry(x, PTE)
        before = mm.stats
        trace = []
        assert _walk(mm, impl, mode, y, _ops(trace)) == 0
        mm.validate()
        after = mm.stats
        assert mm.entry(x, PTE) == x_pte                 # the aliased tables are untouched
        assert after["tables"] == before["tables"]
        below = [t for t in trace if t[0] in ("pmd", "pte") and t[2] != link
                 and not (t[0] == "pmd" and level == PMD)]
        cleared = after["clear_bad"] - before["clear_bad"]
        if mode == "hugetlb":
            if level == PUD:
                # no PMD table to find the huge entry in: "no table", a hole at -1
                assert trace == [("hole", y, y + 2 * MiB, -1)]
            else:
                # the PMD slot is the huge entry itself: handed over, not followed
                assert trace == [("huge", y, link)]
            assert mm.entry(y, level) == link and not cleared
        elif level in (PGD, P4D):
            # *_bad: cleared and reported as a hole
            depth = 0 if level == PGD or levels == 4 else 1
            assert trace[-1] == ("hole", y, y + 2 * MiB, depth)
            assert mm.entry(y, level) == 0 and cleared == 1
        elif level == PUD:
            # no bad check at PUD: the descent is skipped, the value stays
            assert trace[-1] == ("pud", y, link)
            assert mm.entry(y, level) == link and not cleared
        elif mode == "init":
            # pte_offset_kernel validates nothing: the PTE loop is skipped
            assert trace[-1] == ("pmd", y, link)
            assert mm.entry(y, level) == link and not cleared
        else:
            # pmd_bad by pte_offset_map: cleared, ACTION_AGAIN, then a hole
            assert trace[-2:] == [("pmd", y, link), ("hole", y, y + 2 * MiB, 3)]
            assert mm.entry(y, level) == 0 and cleared == 1
        assert not below
        results.append((trace, G.raw_dump(mm)))
    assert results[0] == results[1]


@pytest.mark.parametrize("levels,level", [(4, PGD), (5, PGD), (5, P4D), (4, PMD), (5, PMD)])
def test_bad_link_repopulated_by_install(levels, level):
    """PGD/P4D/PMD garbage links are cleared and the range re-populated by
    install_pte (C FillOp and Python), leaving the aliased table alone."""
    dumps = []
    for impl, c in ((CYTHON, True), (CYTHON, False), (REFERENCE, False)):
        mm, x, y = _alias_setup(levels, level, "install")
        x_pte = mm.entry(x, PTE)
        fill = FillOp() if c else G.PyFill()
        count = CountOp() if c else G.PyCount()
        ops = pgwalk.MMWalkOps(install_pte=fill.install_pte, pte_entry=count.pte_entry,
                               pmd_entry=count.pmd_entry, pte_hole=count.pte_hole)
        assert _walk(mm, impl, "install", y, ops) == 0
        mm.validate()
        assert mm.entry(x, PTE) == x_pte
        assert pgwalk.pte_present(mm.entry(y, PTE))
        assert pgwalk.pte_present(mm.entry(y + 2 * MiB - 4096, PTE))
        assert mm.stats["clear_bad"] == 1
        dumps.append((G.raw_dump(mm), count.counts, mm.stats))
    assert dumps[0] == dumps[1] == dumps[2]
