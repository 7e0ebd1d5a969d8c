"""Test support: scripted callbacks, table dumps and the golden-trace adapter.

Scripted callbacks follow the golden corpus' rules (tests/data/golden/
FORMAT.md section 3) so that one scenario format drives the golden replay,
the worked examples and the random differential tests.
"""

import json

import hypothesis.strategies as st
from contextlib import contextmanager
from pathlib import Path

import pgwalk
from pgwalk import entries as E
from pgwalk import reference
from pgwalk.constants import (
    ACTION_AGAIN, ACTION_CONTINUE, ACTION_SUBTREE, P4D, PGD, PMD,
    PGWALK_RDLOCK, PGWALK_WRLOCK, PGWALK_WRLOCK_VERIFY, PTE, PTE_MARKER_GUARD,
    PUD, SWP_MIGRATION_READ, VM_HUGETLB, VM_PFNMAP, _PAGE_PRESENT, _PAGE_RW,
)
from pgwalk.internal import walk_page_range_mm

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "data" / "golden"
LEVELS = {"pgd": PGD, "p4d": P4D, "pud": PUD, "pmd": PMD, "pte": PTE}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
ACTIONS = {"ACTION_SUBTREE": ACTION_SUBTREE, "ACTION_CONTINUE": ACTION_CONTINUE,
           "ACTION_AGAIN": ACTION_AGAIN}
LOCKS = {"PGWALK_RDLOCK": PGWALK_RDLOCK, "PGWALK_WRLOCK": PGWALK_WRLOCK,
         "PGWALK_WRLOCK_VERIFY": PGWALK_WRLOCK_VERIFY}
FLAGS = {"VM_PFNMAP": VM_PFNMAP, "VM_HUGETLB": VM_HUGETLB}
PRESENT = _PAGE_PRESENT | _PAGE_RW


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


def level_size(levels, level):
    if level == PGD:
        return 1 << (39 if levels == 4 else 48)
    return 1 << (12 + 9 * (4 - level))


# --- classifying and dumping entries -------------------------------------------

def kind_of(mm_or_tables, level, value, linked=None):
    """The golden corpus' kind of a slot value at ``level``."""
    levels = mm_or_tables.levels
    if level == PTE:
        if E.pte_none(value):
            return "none"
        if E.pte_present(value):
            return "present"
        if E.is_guard_marker(value):
            return "guard"
        return "nonpresent"
    if level == PGD and levels == 5:
        if value == 0:
            return "none"
    elif E.pte_none(value):
        return "none"
    if level in (PUD, PMD):
        if E.pmd_leaf(value) and (E.pmd_present(value) if level == PMD else E.pud_present(value)):
            return "leaf"
        if not (E.pmd_present(value) if level == PMD else E.pud_present(value)):
            return "nonpresent"
    if linked is None:
        if level == PGD and levels == 5:
            linked = not E.pgd_bad(value, 5)
        elif level in (PGD, P4D):
            linked = not E.p4d_bad(value)
        else:
            linked = True
    return "table" if linked else "bad"


def dump(tables):
    """Every non-empty slot, top-down, as (level_name, addr, kind, pfn)."""
    levels = tables.levels
    out = []
    top_bits = 48 if levels == 4 else 57

    def canon(addr):
        if addr >= 1 << (top_bits - 1):
            addr |= ((1 << 64) - 1) & ~((1 << top_bits) - 1)
        return addr

    def visit(tid, level, base, rows):
        table = tables._table(tid)
        size = level_size(levels, level)
        for i in range(512):
            v = int(table[i])
            if v == 0:
                continue
            addr = canon(base + i * size)
            child = tables._child(tid, i) if level < PTE else -1
            kind = kind_of(tables, level, v, linked=child >= 0)
            if kind == "none":
                # an A/D-only value: not an entry the corpus lists
                rows.setdefault(level, []).append((LEVEL_NAMES[level], addr, "raw", v))
                continue
            if kind in ("present",):
                pfn = E.pte_pfn(v)
            elif kind == "leaf":
                pfn = E.pmd_pfn(v) if level == PMD else E.pud_pfn(v)
            elif kind == "nonpresent":
                pfn = E.swp_offset(E.pte_to_swp_entry(v))
            else:
                pfn = None
            rows.setdefault(level, []).append((LEVEL_NAMES[level], addr, kind, pfn))
            if child >= 0:
                cl = PUD if (levels == 4 and level == PGD) else level + 1
                visit(child, cl, base + i * size, rows)

    rows = {}
    visit(tables.pgd_id, PGD, 0, rows)
    for level in sorted(rows):
        out.extend(sorted(rows[level], key=lambda r: r[1]))
    return out


def expand(levels, entry_list):
    """Golden run-compressed entries, expanded and in dump() order."""
    rows = {}
    for e in entry_list:
        level = LEVELS[e["level"]]
        size = level_size(levels, level)
        for i in range(e.get("n", 1)):
            pfn = e["pfn"] + i * size // 4096 if "pfn" in e else None
            rows.setdefault(level, []).append((e["level"], e["addr"] + i * size, e["kind"], pfn))
    out = []
    for level in sorted(rows):
        out.extend(sorted(rows[level], key=lambda r: r[1]))
    return out


def value_for(kind, level, pfn):
    if kind == "present":
        return E.pfn_pte(pfn, PRESENT)
    if kind == "leaf":
        return E.pfn_pmd(pfn, PRESENT) if level == PMD else E.pfn_pud(pfn, PRESENT)
    if kind == "nonpresent":
        if level == PMD:
            return E.swp_entry_to_pmd(E.swp_entry(SWP_MIGRATION_READ, pfn))
        return E.swp_entry_to_pte(E.swp_entry(0, pfn))
    if kind == "guard":
        return E.make_pte_marker(PTE_MARKER_GUARD)
    if kind == "bad":
        return 0xE3
    raise ValueError(kind)


def build_tables(mm, entry_list):
    for e in entry_list:
        level = LEVELS[e["level"]]
        size = level_size(mm.levels, level)
        for i in range(e.get("n", 1)):
            addr = e["addr"] + i * size
            if e["kind"] == "table":
                mm.alloc_table(addr, level)
            else:
                pfn = e["pfn"] + i * size // 4096 if "pfn" in e else 0
                mm.set_entry(addr, level, value_for(e["kind"], level, pfn))


# --- scripted callbacks --------------------------------------------------------

def scripted_ops(spec, trace, vma_index, levels_of):
    """MMWalkOps whose callbacks record into ``trace`` and behave as scripted
    (golden FORMAT.md section 3).  ``vma_index(vma)`` names a VMA;
    ``levels_of`` is the mm whose paging mode classifies entries."""
    fired_again = set()
    kw = {}

    def behave(name, cb, walk, addr):
        for a, act in cb.get("action_at", ()):
            if a != addr:
                continue
            if act == "ACTION_AGAIN":
                if (name, addr) not in fired_again:
                    fired_again.add((name, addr))
                    walk.action = ACTION_AGAIN
            else:
                walk.action = ACTIONS[act]
        return dict((a, r) for a, r in cb.get("ret_at", ())).get(addr, cb.get("ret", 0))

    def entry_cb(name, level, cb):
        def f(entry, addr, next, walk):
            trace.append([name, addr, next, kind_of(levels_of, level, int(entry))])
            return behave(name, cb, walk, addr)
        return f

    for name, cb in spec["callbacks"].items():
        if name in ("pgd_entry", "p4d_entry", "pud_entry", "pmd_entry", "pte_entry"):
            kw[name] = entry_cb(name, LEVELS[name[:3]], cb)
        elif name == "pte_hole":
            def f(addr, next, depth, walk, cb=cb):
                trace.append(["pte_hole", addr, next, depth])
                return behave("pte_hole", cb, walk, addr)
            kw[name] = f
        elif name == "hugetlb_entry":
            def f(entry, hmask, addr, next, walk, cb=cb):
                trace.append(["hugetlb_entry", addr, next, [hmask, kind_of(levels_of, PMD, int(entry))]])
                return behave("hugetlb_entry", cb, walk, addr)
            kw[name] = f
        elif name in ("test_walk", "pre_vma"):
            def f(start, end, walk, cb=cb, name=name):
                idx = vma_index(walk.vma)
                trace.append([name, start, end, idx])
                behave(name, cb, walk, start)
                return dict((i, r) for i, r in cb.get("ret_vma", ())).get(idx, cb.get("ret", 0))
            kw[name] = f
        elif name == "post_vma":
            def f(walk):
                trace.append(["post_vma", None, None, vma_index(walk.vma)])
            kw[name] = f
        elif name == "install_pte":
            def f(addr, next, ptep, walk, cb=cb):
                r = behave("install_pte", cb, walk, addr)
                what = None
                if r == 0:
                    if cb.get("install") == "guard":
                        ptep.set(E.make_pte_marker(PTE_MARKER_GUARD))
                        what = "guard"
                    else:
                        ptep.set(E.pfn_pte((addr >> 12) & ((1 << 40) - 1), PRESENT))
                        what = "present"
                trace.append(["install_pte", addr, next, what])
                return r
            kw[name] = f
        else:
            raise ValueError(name)
    return pgwalk.MMWalkOps(walk_lock=LOCKS[spec.get("walk_lock", "PGWALK_RDLOCK")], **kw)


def call_walk(impl, api, mm, start, end, ops, vma=None, pgd=None, kernel=None):
    """One walk through entry point ``api`` of ``impl`` (pgwalk or
    pgwalk.reference): its return value, or (exception name, message) for
    the TypeError/ValueError a bad argument gives."""
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


# --- the golden adapter ----------------------------------------------------------

def load_golden():
    return sorted(GOLDEN_DIR.glob("*.json"))


def stats_delta(before, after):
    d = {k: after["alloc"][k] - before["alloc"][k] for k in ("p4d", "pud", "pmd", "pte")}
    out = {"alloc": d}
    for k in ("alloc_failed", "split_pmd", "split_pud", "update_mmu_cache", "clear_bad", "set_pte_at"):
        out[k] = after[k] - before[k]
    return out


@contextmanager
def locked_for(mm, api, ops, vmas):
    """Hold the lock a walk through ``api`` with ``ops`` needs: the mmap lock
    its walk_lock asks for (a no-VMA walk: read for the kernel mm, write for a
    user mm), with ``vmas`` write-locked for PGWALK_WRLOCK_VERIFY."""
    if api == "walk_page_range_novma":
        lock = mm.mmap_read_lock() if mm.is_init_mm else mm.mmap_write_lock()
    elif ops.walk_lock == PGWALK_RDLOCK:
        lock = mm.mmap_read_lock()
    else:
        lock = mm.mmap_write_lock()
    with lock:
        if ops.walk_lock == PGWALK_WRLOCK_VERIFY and api != "walk_page_range_novma":
            for v in vmas:
                pgwalk.vma_start_write(v)
        yield


def replay(scn, impl, kernel=None):
    """Run one golden scenario through ``impl`` (``kernel``: which loops);
    returns what to compare."""
    levels = scn["paging_levels"]
    mm = pgwalk.init_mm(levels) if scn["mm"] == "init_mm" else pgwalk.MM(levels)
    build_tables(mm, scn["entries"])
    vmas = []
    for v in scn["vmas"]:
        flags = 0
        for f in v["flags"]:
            flags |= FLAGS[f]
        if scn["mm"] == "null":
            vmas.append(pgwalk.VMA(v["start"], v["end"], flags))
        else:
            vmas.append(mm.add_vma(v["start"], v["end"], flags))
    alt = None
    call = scn["call"]
    if call.get("pgd") == "alt":
        alt = pgwalk.MM(levels)
        build_tables(alt, scn["alt_entries"])
    ids = {id(v): i for i, v in enumerate(vmas)}
    trace = []
    ops = scripted_ops(scn["ops"], trace, lambda vma: ids.get(id(vma)), mm)
    if "alloc_fail_at" in scn:
        mm.fail_table_alloc(at=scn["alloc_fail_at"])
    before = mm.stats
    api = call["api"]
    target = None if scn["mm"] == "null" else mm
    k = {} if kernel is None else {"kernel": kernel}
    with locked_for(mm, api, ops, vmas if scn["mm"] != "null" else ()):
        if api == "walk_page_range":
            ret = impl.walk_page_range(target, call["start"], call["end"], ops, **k)
        elif api == "walk_page_range_mm":
            ret = impl.walk_page_range_mm(target, call["start"], call["end"], ops, **k)
        elif api == "walk_page_vma":
            ret = impl.walk_page_vma(vmas[call["vma"]], ops, **k)
        elif api == "walk_page_range_vma":
            ret = impl.walk_page_range_vma(vmas[call["vma"]], call["start"], call["end"], ops, **k)
        elif api == "walk_page_range_novma":
            ret = impl.walk_page_range_novma(target, call["start"], call["end"], ops,
                                             pgd=alt.pgd if alt is not None else None, **k)
        else:
            raise ValueError(api)
    mm.validate()
    result = {"ret": ret, "trace": trace, "final_entries": dump(mm),
              "counters": stats_delta(before, mm.stats)}
    if alt is not None:
        alt.validate()
        result["final_alt_entries"] = dump(alt)
    return result


def expected(scn, key="result"):
    r = scn[key]
    c = r["counters"]
    out = {"ret": r["ret"], "trace": r["trace"],
           "final_entries": expand(scn["paging_levels"], r["final_entries"]),
           "counters": {"alloc": c["alloc"], "alloc_failed": c["alloc_failed"],
                        "split_pmd": c["split_pmd"], "split_pud": c["split_pud"],
                        "update_mmu_cache": c["update_mmu_cache"],
                        "clear_bad": c["clear_bad"], "set_pte_at": c["set_pte_at"]}}
    if "final_alt_entries" in r:
        out["final_alt_entries"] = expand(scn["paging_levels"], r["final_alt_entries"])
    return out


def load(path):
    return json.loads(Path(path).read_text())
