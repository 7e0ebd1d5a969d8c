"""Test support: the walker implementations, recording callbacks, random
walks for the differential tests, and the golden corpus.

The scenario format itself (scripted callbacks as in
tests/data/golden/FORMAT.md, section 3; table dumps; the replay) is the package's
``pgwalk.walker.trace``; its pieces are re-exported here for the tests that
use them.
"""

import json

import hypothesis.strategies as st
from pathlib import Path

import pgwalk
from pgwalk import entries as E
from pgwalk import reference
from pgwalk.constants import ACTION_AGAIN, ACTION_CONTINUE, PGD, PTE, PTE_MARKER_GUARD, PUD
from pgwalk.internal import walk_page_range_mm
from pgwalk.walker import trace
# the scenario format's pieces live in the package (pgwalk/walker/trace.py);
# the tests that use them import them from here
from pgwalk.walker.trace import (
    PRESENT, dump, expand, level_size, locked_for, scripted_ops, stats_delta,
)

REEXPORTED = (dump, level_size, locked_for, scripted_ops, stats_delta)

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "data" / "golden"
# the counters the golden replay compares (FORMAT.md section 6)
GOLDEN_COUNTERS = ("alloc", "alloc_failed", "split_pmd", "split_pud", "update_mmu_cache",
                   "clear_bad", "set_pte_at")


class Impl:
    """One walker implementation: the compiled one or the reference."""

    def __init__(self, name, mod, mm_fn):
        self.name = name
        self.walk_page_range = mod.walk_page_range
        self.walk_page_vma = mod.walk_page_vma
        self.walk_page_range_vma = mod.walk_page_range_vma
        self.walk_page_range_novma = mod.walk_page_range_novma
        self.walk_page_range_mm = mm_fn

    def __repr__(self):
        return self.name


CYTHON = Impl("cython", pgwalk, walk_page_range_mm)
REFERENCE = Impl("reference", reference, reference.walk_page_range_mm)
IMPLS = [CYTHON, REFERENCE]


def call_walk(impl, api, mm, start, end, ops, vma=None, pgd=None, kernel=None):
    """One walk through entry point ``api`` of ``impl`` (pgwalk or
    pgwalk.reference; ``kernel``: which loops, None for the default): its
    return value, or (exception name, message) for the TypeError/ValueError
    a bad argument gives."""
    k = {"kernel": kernel}
    try:
        if api == "walk_page_range":
            return impl.walk_page_range(mm, start, end, ops, **k)
        if api == "walk_page_range_mm":
            return impl.walk_page_range_mm(mm, start, end, ops, **k)
        if api == "walk_page_range_novma":
            return impl.walk_page_range_novma(mm, start, end, ops, pgd=pgd, **k)
        if api == "walk_page_vma":
            return impl.walk_page_vma(vma, ops, **k)
        return impl.walk_page_range_vma(vma, start, end, ops, **k)
    except (TypeError, ValueError) as exc:
        return (type(exc).__name__, str(exc))


def apply_action(walk, act, fired, key):
    """A scripted action: ACTION_CONTINUE as given; ACTION_AGAIN only the
    first time for ``key`` (a slot retried for ever would never end)."""
    if act == ACTION_CONTINUE:
        walk.action = act
    elif act == ACTION_AGAIN and key not in fired:
        fired.add(key)
        walk.action = act


def recording_callback(name, trace, behave, install=None, vma_key=None):
    """A callback for slot ``name`` that appends its arguments (raw entry
    values included) to ``trace`` and returns ``behave(name, walk, addr
    [, entry])``; ``install(addr, ptep)`` writes install_pte's value;
    ``vma_key(vma)``, when given, is recorded for the VMA-level callbacks."""
    key = (lambda walk: (vma_key(walk.vma),)) if vma_key else (lambda walk: ())
    if name in ("pgd_entry", "p4d_entry", "pud_entry", "pmd_entry", "pte_entry"):
        def f(entry, addr, next, walk):
            trace.append((name, addr, next, int(entry), walk.action))
            return behave(name, walk, addr, entry)
    elif name == "pte_hole":
        def f(addr, next, depth, walk):
            trace.append((name, addr, next, depth) + key(walk))
            return behave(name, walk, addr)
    elif name == "hugetlb_entry":
        def f(entry, hmask, addr, next, walk):
            trace.append((name, addr, next, hmask, int(entry)))
            return behave(name, walk, addr)
    elif name in ("test_walk", "pre_vma"):
        def f(start, end, walk):
            trace.append((name, start, end) + key(walk))
            return behave(name, walk, start)
    elif name == "post_vma":
        def f(walk):
            trace.append((name,) + key(walk))
    else:
        def f(addr, next, ptep, walk):
            trace.append((name, addr, next, int(ptep)))
            r = behave(name, walk, addr)
            install(addr, ptep)
            return r
    return f


# --- random walks (the differential tests) -----------------------------------

APIS = ["walk_page_range", "walk_page_range_mm", "walk_page_range_novma",
        "walk_page_vma", "walk_page_range_vma"]
CALLBACKS = ["pgd_entry", "p4d_entry", "pud_entry", "pmd_entry", "pte_entry",
             "pte_hole", "hugetlb_entry", "test_walk", "pre_vma", "post_vma",
             "install_pte"]


@st.composite
def callback_script(draw, name, addrs):
    # hypothesis favours the first choice and small numbers: keep the
    # ordinary case (return 0, no script) first so that rare cases stay rare.
    cb = {"ret": draw(st.sampled_from([0, 0, 0, 0, 0, 0, 0, 1, -5]))
          if name != "test_walk" else draw(st.sampled_from([0, 0, 0, 0, 1, -3]))}
    cb["ret_at"] = dict(draw(st.lists(st.tuples(st.sampled_from(addrs), st.sampled_from([0, 3, -4])), max_size=2)))
    cb["action_at"] = dict(draw(st.lists(st.tuples(st.sampled_from(addrs), st.sampled_from(
        [ACTION_AGAIN, ACTION_CONTINUE])), max_size=2)))
    if name in ("pte_entry", "pmd_entry", "pud_entry"):
        cb["set_at"] = dict(draw(st.lists(st.tuples(st.sampled_from(addrs), st.sampled_from(
            [0, E.make_pte_marker(PTE_MARKER_GUARD), E.pfn_pte(77, PRESENT)])), max_size=2)))
    if name == "install_pte":
        cb["install"] = draw(st.sampled_from(["present", "guard", "nothing"]))
    return cb


def raw_dump(tables):
    """Every non-zero slot as (level, table-relative path, raw value or 'T')."""
    out = []

    def visit(tid, level, path):
        t = tables._table(tid)
        for i in range(512):
            v = int(t[i])
            if not v:
                continue
            child = tables._child(tid, i) if level < PTE else -1
            out.append((level, path + (i,), "T" if child >= 0 else v))
            if child >= 0:
                visit(child, PUD if (tables.levels == 4 and level == PGD) else level + 1, path + (i,))

    visit(tables.pgd_id, PGD, ())
    return out


def run_walk(mm, vmas, recipe, impl, alt=None):
    """One walk of ``recipe`` (api, vma index, start, end, ops scripts from
    ``callback_script``, walk_lock, fail_at) over ``mm`` (whose VMAs, in
    order, are ``vmas``) through ``impl``; returns what two implementations
    must agree on (``assert_same_walk``)."""
    trace = []
    fired = set()
    index = {id(v): i for i, v in enumerate(vmas)}

    def behave(name, walk, addr, entry=None):
        cb = recipe["ops"][name]
        apply_action(walk, cb["action_at"].get(addr), fired, (name, addr))
        if entry is not None and addr in cb.get("set_at", {}):
            entry.set(cb["set_at"][addr])
        return cb["ret_at"].get(addr, cb["ret"])

    def mk(name):
        def install(addr, ptep):
            how = recipe["ops"][name]["install"]
            if how == "present":
                ptep.set(E.pfn_pte(addr >> 12, PRESENT))
            elif how == "guard":
                ptep.set(E.make_pte_marker(PTE_MARKER_GUARD))
        return recording_callback(name, trace, behave, install, lambda vma: index.get(id(vma)))

    ops = pgwalk.MMWalkOps(walk_lock=recipe["walk_lock"],
                           **{n: mk(n) for n in recipe["ops"]})
    if recipe["fail_at"]:
        mm.fail_table_alloc(at=recipe["fail_at"])
    before = mm.stats
    api, s, e = recipe["api"], recipe["start"], recipe["end"]
    kernel = recipe.get("kernel")
    with locked_for(mm, api, ops, vmas):
        if api in ("walk_page_vma", "walk_page_range_vma") and recipe["vma"] is None:
            out = call_walk(impl, "walk_page_range", mm, s, e, ops, kernel=kernel) if s < e else -22
        else:
            out = call_walk(impl, api, mm, s, e, ops, pgd=alt.pgd if alt else None,
                            vma=None if recipe["vma"] is None else vmas[recipe["vma"]],
                            kernel=kernel)
    mm.validate()
    after = mm.stats
    if alt is not None:
        alt.validate()
    return {"result": out, "trace": trace, "tables": raw_dump(mm),
            "alt": raw_dump(alt) if alt is not None else None,
            "stats": {k: after[k] for k in after if k != "freed"} | {"before": before},
            "again_fired": len(fired)}


def assert_same_walk(got, want):
    assert got["trace"] == want["trace"]
    assert got["result"] == want["result"]
    assert got["tables"] == want["tables"]
    assert got["alt"] == want["alt"]
    assert got["stats"] == want["stats"]
    assert got["again_fired"] == want["again_fired"]


# --- the golden adapter (the package's runner, pgwalk/walker/trace.py) ----------

def load_golden():
    return sorted(GOLDEN_DIR.glob("*.json"))


def replay(scn, impl, kernel=None):
    """Run one golden scenario through ``impl`` with the package's runner,
    on the process model's ``pgwalk.MM`` (``kernel``: which loops, None for
    the default); returns what to compare (``expected`` gives the same keys)."""
    return comparable(scn["paging_levels"],
                      trace.run_scenario(scn, impl, new_mm=pgwalk.MM, kernel=kernel))


def expected(scn, key="result"):
    """The stored result ``key`` of a scenario, in ``replay``'s form."""
    return comparable(scn["paging_levels"], scn[key])


def comparable(levels, r):
    """What a replay and a stored result are compared on: return value,
    trace, the final tables (expanded) and the golden counters."""
    out = {"ret": r["ret"], "trace": r["trace"],
           "final_entries": expand(levels, r["final_entries"]),
           "counters": {k: r["counters"][k] for k in GOLDEN_COUNTERS}}
    if "final_alt_entries" in r:
        out["final_alt_entries"] = expand(levels, r["final_alt_entries"])
    return out


def load(path):
    return json.loads(Path(path).read_text())
