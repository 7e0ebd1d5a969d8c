"""Replaying ``kpw-trace/1`` scenarios: a page-table state, VMAs, a walk API
and scripted callbacks, written down as JSON (docs/trace-format.md).

``run_scenario`` builds the scenario's address space, runs the walk on the
compiled walker or on the reference walker and returns the result in the
scenario format's own ``result`` shape; ``first_difference`` compares two
results the way the golden traces are checked.  The test suite and
``python -m pgwalk trace`` both use this module, so a scenario means the
same thing everywhere."""

import json
from contextlib import contextmanager

from .. import entries as E
from ..constants import (
    LEVEL_NAMES,
    ACTION_AGAIN, ACTION_CONTINUE, ACTION_SUBTREE, P4D, PGD, PGWALK_RDLOCK, PGWALK_WRLOCK,
    PGWALK_WRLOCK_VERIFY, PMD, PTE, PTE_MARKER_GUARD, PUD, SWP_MIGRATION_READ, VM_HUGETLB,
    VM_PFNMAP, _PAGE_PRESENT, _PAGE_RW,
)
from . import api, reference
from ._args import KERNELS
from .addrspace import AddressSpace
from .internal import walk_page_range_mm
from .locks import vma_start_write
from .ops import MMWalkOps
from .vma import VMA

__all__ = [
    "FORMAT", "ScenarioError", "Difference", "run_scenario", "first_difference", "check_scenario",
    "read_scenarios", "validate", "dump", "expand", "compress", "build_tables", "scripted_ops",
    "kind_of", "locked_for", "stats_delta",
]

FORMAT = "kpw-trace/1"
LEVELS = {name: level for level, name in enumerate(LEVEL_NAMES)}      # "pgd" -> PGD ...
ACTIONS = {"ACTION_SUBTREE": ACTION_SUBTREE, "ACTION_CONTINUE": ACTION_CONTINUE,
           "ACTION_AGAIN": ACTION_AGAIN}
LOCKS = {"PGWALK_RDLOCK": PGWALK_RDLOCK, "PGWALK_WRLOCK": PGWALK_WRLOCK,
         "PGWALK_WRLOCK_VERIFY": PGWALK_WRLOCK_VERIFY}
FLAGS = {"VM_PFNMAP": VM_PFNMAP, "VM_HUGETLB": VM_HUGETLB}
PRESENT = _PAGE_PRESENT | _PAGE_RW
APIS = ("walk_page_range", "walk_page_range_mm", "walk_page_range_novma",
        "walk_page_vma", "walk_page_range_vma")
CALLBACKS = ("pgd_entry", "p4d_entry", "pud_entry", "pmd_entry", "pte_entry", "pte_hole",
             "hugetlb_entry", "test_walk", "pre_vma", "post_vma", "install_pte")
# the kinds an entry list may give at each level (FORMAT.md section 2)
KINDS = {"pgd": {"table", "bad"}, "p4d": {"table", "bad"}, "pud": {"table", "leaf", "nonpresent"},
         "pmd": {"table", "leaf", "nonpresent"}, "pte": {"present", "nonpresent", "guard"}}
PFN_KINDS = {"present", "leaf", "nonpresent"}
# the counters pgwalk measures, in the format's order; the shim's "warn" and
# "vm_bug_on" have no counterpart (pgwalk raises instead)
COUNTERS = ("alloc", "alloc_failed", "split_pmd", "split_pud", "update_mmu_cache",
            "set_pte_at", "pte_map_ok", "pte_map_null", "clear_bad")
# the counters a check compares: the format's list, plus the pte_offset_map
# counts, which pgwalk keeps as the kernel's shim does
CHECKED_COUNTERS = ("alloc", "alloc_failed", "split_pmd", "split_pud", "update_mmu_cache",
                    "clear_bad", "set_pte_at", "pte_map_ok", "pte_map_null")
# a scripted walk with more callback events than this is taken as endless
MAX_EVENTS = 1_000_000
U64 = (1 << 64) - 1


class ScenarioError(ValueError):
    """A scenario that cannot be replayed: malformed, or one the kernel's
    walker would BUG on; ``where`` names it (file, line, id) once known."""

    def __init__(self, message, where=None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self):
        return f"{self.where}: {self.message}" if self.where else self.message


class _Runaway(Exception):
    """Raised from a scripted callback when a walk does not end."""


def level_size(levels, level):
    """Bytes one slot at ``level`` covers with ``levels``-level paging."""
    if level == PGD:
        return 1 << (39 if levels == 4 else 48)
    return 1 << (12 + 9 * (4 - level))


# --- entries: classifying, dumping, run lists ----------------------------------

def kind_of(mm_or_tables, level, value, linked=None):
    """The format's kind of a slot value at ``level`` ("none", "table",
    "present", "leaf", "nonpresent", "guard" or "bad")."""
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
    """Every non-empty slot, top-down, as (level name, addr, kind, pfn);
    a value with no kind (accessed/dirty bits only) is ("raw", value)."""
    levels = tables.levels
    top_bits = 48 if levels == 4 else 57

    def canon(addr):
        if addr >= 1 << (top_bits - 1):
            addr |= U64 & ~((1 << top_bits) - 1)
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
                rows.setdefault(level, []).append((LEVEL_NAMES[level], addr, "raw", v))
                continue
            if kind == "present":
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
    out = []
    for level in sorted(rows):
        out.extend(sorted(rows[level], key=lambda r: r[1]))
    return out


def expand(levels, entry_list):
    """A run-compressed entry list as ``dump()`` rows, in ``dump()`` order."""
    rows = {}
    for e in entry_list:
        level = LEVELS[e["level"]]
        size = level_size(levels, level)
        for i in range(e.get("n", 1)):
            if e["kind"] == "raw":
                pfn = e["value"]
            else:
                pfn = e["pfn"] + i * size // 4096 if "pfn" in e else None
            rows.setdefault(level, []).append((e["level"], e["addr"] + i * size, e["kind"], pfn))
    out = []
    for level in sorted(rows):
        out.extend(sorted(rows[level], key=lambda r: r[1]))
    return out


def compress(levels, rows):
    """``dump()`` rows as the format's canonical run-compressed entry list."""
    out = []
    for name, addr, kind, pfn in rows:
        size = level_size(levels, LEVELS[name])
        if out and kind != "raw":
            last = out[-1]
            n = last.get("n", 1)
            if (last["level"] == name and last["kind"] == kind
                    and last["addr"] + n * size == addr
                    and (pfn is None or last.get("pfn", -1) + n * size // 4096 == pfn)):
                last["n"] = n + 1
                continue
        e = {"level": name, "addr": addr, "kind": kind}
        if kind == "raw":
            e["value"] = pfn
        elif pfn is not None:
            e["pfn"] = pfn
        out.append(e)
    return out


def value_for(kind, level, pfn):
    """The raw x86-64 value of an entry of ``kind`` at ``level``."""
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
    """Write an entry list into ``mm``'s tables, top-down."""
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


# --- scripted callbacks ----------------------------------------------------------

def scripted_ops(spec, trace, vma_index, levels_of, max_events=None):
    """MMWalkOps whose callbacks append their events to ``trace`` and behave
    as ``spec`` (the scenario's ``ops``) scripts them.  ``vma_index(vma)``
    names a VMA; ``levels_of`` is the mm whose paging mode classifies
    entries; past ``max_events`` events a callback raises (a walk that does
    not end)."""
    fired_again = set()
    kw = {}

    def record(event):
        if max_events is not None and len(trace) >= max_events:
            raise _Runaway(f"the walk made more than {max_events} callback calls "
                           f"without ending (last: {event[0]} at {event[1]:#x})")
        trace.append(event)

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
            record([name, addr, next, kind_of(levels_of, level, int(entry))])
            return behave(name, cb, walk, addr)
        return f

    for name, cb in spec["callbacks"].items():
        if name in ("pgd_entry", "p4d_entry", "pud_entry", "pmd_entry", "pte_entry"):
            kw[name] = entry_cb(name, LEVELS[name[:3]], cb)
        elif name == "pte_hole":
            def f(addr, next, depth, walk, cb=cb):
                record(["pte_hole", addr, next, depth])
                return behave("pte_hole", cb, walk, addr)
            kw[name] = f
        elif name == "hugetlb_entry":
            def f(entry, hmask, addr, next, walk, cb=cb):
                record(["hugetlb_entry", addr, next, [hmask, kind_of(levels_of, PMD, int(entry))]])
                return behave("hugetlb_entry", cb, walk, addr)
            kw[name] = f
        elif name in ("test_walk", "pre_vma"):
            def f(start, end, walk, cb=cb, name=name):
                idx = vma_index(walk.vma)
                record([name, start, end, idx])
                behave(name, cb, walk, start)
                return dict((i, r) for i, r in cb.get("ret_vma", ())).get(idx, cb.get("ret", 0))
            kw[name] = f
        elif name == "post_vma":
            def f(walk):
                record(["post_vma", None, None, vma_index(walk.vma)])
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
                record(["install_pte", addr, next, what])
                return r
            kw[name] = f
        else:
            raise ValueError(name)
    return MMWalkOps(walk_lock=LOCKS[spec.get("walk_lock", "PGWALK_RDLOCK")], **kw)


@contextmanager
def locked_for(mm, api_name, ops, vmas):
    """Hold the lock a walk through ``api_name`` with ``ops`` needs: the mmap
    lock its walk_lock asks for (a no-VMA walk: read for the kernel mm, write
    for a user mm), with ``vmas`` write-locked for PGWALK_WRLOCK_VERIFY."""
    if api_name == "walk_page_range_novma":
        lock = mm.mmap_read_lock() if mm.is_init_mm else mm.mmap_write_lock()
    elif ops.walk_lock == PGWALK_RDLOCK:
        lock = mm.mmap_read_lock()
    else:
        lock = mm.mmap_write_lock()
    with lock:
        if ops.walk_lock == PGWALK_WRLOCK_VERIFY and api_name != "walk_page_range_novma":
            for v in vmas:
                vma_start_write(v)
        yield


def stats_delta(before, after):
    """What a walk counted: ``mm.stats`` after minus before, by counter."""
    out = {"alloc": {k: after["alloc"][k] - before["alloc"][k] for k in ("p4d", "pud", "pmd", "pte")}}
    for k in ("alloc_failed", "split_pmd", "split_pud", "update_mmu_cache", "clear_bad", "set_pte_at"):
        out[k] = after[k] - before[k]
    return out


def _counters(before, after):
    """``stats_delta`` plus the pte_offset_map counts."""
    out = stats_delta(before, after)
    for k in ("pte_map_ok", "pte_map_null"):
        out[k] = after[k] - before[k]
    return out


# --- checking a scenario's shape -------------------------------------------------

def _int(v, what, lo=0, hi=U64):
    if not isinstance(v, int) or isinstance(v, bool):
        raise ScenarioError(f"{what} must be an integer, not {json.dumps(v)}")
    if not lo <= v <= hi:
        raise ScenarioError(f"{what} = {v} is out of range [{lo}, {hi}]")
    return v


def _choice(v, what, allowed):
    if v not in allowed:
        raise ScenarioError(f"{what} = {json.dumps(v)}: not one of {', '.join(map(str, allowed))}")
    return v


def _list(v, what):
    if not isinstance(v, list):
        raise ScenarioError(f"{what} must be a list, not {json.dumps(v)[:60]}")
    return v


def _dict(v, what):
    if not isinstance(v, dict):
        raise ScenarioError(f"{what} must be an object, not {json.dumps(v)[:60]}")
    return v


def _pairs(v, what, check_key, check_val):
    for i, p in enumerate(_list(v, what)):
        if not isinstance(p, list) or len(p) != 2:
            raise ScenarioError(f"{what}[{i}] must be a [key, value] pair, not {json.dumps(p)}")
        check_key(p[0], f"{what}[{i}][0]")
        check_val(p[1], f"{what}[{i}][1]")


def _entries(levels, lst, what):
    for i, e in enumerate(_list(lst, what)):
        w = f"{what}[{i}]"
        _dict(e, w)
        names = ("pgd", "p4d", "pud", "pmd", "pte") if levels == 5 else ("pgd", "pud", "pmd", "pte")
        level = _choice(e.get("level"), f"{w}.level", names)
        kind = _choice(e.get("kind"), f"{w}.kind", sorted(KINDS[level]))
        _int(e.get("addr"), f"{w}.addr")
        if kind in PFN_KINDS:
            _int(e.get("pfn"), f"{w}.pfn", 0, (1 << 40) - 1)
        _int(e.get("n", 1), f"{w}.n", 1, 1 << 27)
        extra = set(e) - {"level", "addr", "kind", "pfn", "n"}
        if extra:
            raise ScenarioError(f"{w}: unknown field(s) {', '.join(sorted(extra))}")


def validate(scn):
    """Raise ScenarioError unless ``scn`` is a well-formed kpw-trace/1
    scenario (its ``result``, if any, is not checked here)."""
    _dict(scn, "scenario")
    if scn.get("format") != FORMAT:
        raise ScenarioError(f"format must be \"{FORMAT}\", not {json.dumps(scn.get('format'))}")
    if "id" in scn and not isinstance(scn["id"], str):
        raise ScenarioError("id must be a string")
    levels = _choice(scn.get("paging_levels"), "paging_levels", (4, 5))
    _choice(scn.get("mm", "user"), "mm", ("user", "init_mm", "null"))
    vmas = _list(scn.get("vmas", []), "vmas")
    for i, v in enumerate(vmas):
        _dict(v, f"vmas[{i}]")
        _int(v.get("start"), f"vmas[{i}].start")
        _int(v.get("end"), f"vmas[{i}].end")
        for j, f in enumerate(_list(v.get("flags", []), f"vmas[{i}].flags")):
            _choice(f, f"vmas[{i}].flags[{j}]", sorted(FLAGS))
    _entries(levels, scn.get("entries", []), "entries")
    call = _dict(scn.get("call"), "call")
    name = _choice(call.get("api"), "call.api", APIS)
    if name != "walk_page_vma":
        for k in ("start", "end"):
            if k not in call:
                raise ScenarioError(f"call.{k} is missing ({name} takes a range)")
            _int(call[k], f"call.{k}")
    if name in ("walk_page_vma", "walk_page_range_vma"):
        if "vma" not in call:
            raise ScenarioError(f"call.vma is missing ({name} takes a VMA index)")
        if not vmas:
            raise ScenarioError(f"{name} needs a VMA, and vmas is empty")
        _int(call["vma"], "call.vma", 0, len(vmas) - 1)
    if "kernel" in call:
        _choice(call["kernel"], "call.kernel", KERNELS)
    pgd = _choice(call.get("pgd", "mm"), "call.pgd", ("mm", "alt"))
    if pgd == "alt":
        if name != "walk_page_range_novma":
            raise ScenarioError("call.pgd \"alt\" is for walk_page_range_novma only")
        if "alt_entries" not in scn:
            raise ScenarioError("call.pgd is \"alt\" but alt_entries is missing")
        _entries(levels, scn["alt_entries"], "alt_entries")
    ops = _dict(scn.get("ops"), "ops")
    _choice(ops.get("walk_lock", "PGWALK_RDLOCK"), "ops.walk_lock", tuple(LOCKS))
    cbs = _dict(ops.get("callbacks", {}), "ops.callbacks")
    cint = (lambda v, w: _int(v, w, -(1 << 31), (1 << 31) - 1))
    for cname, cb in cbs.items():
        w = f"ops.callbacks.{cname}"
        _choice(cname, "callback name", CALLBACKS)
        _dict(cb, w)
        extra = set(cb) - {"ret", "ret_at", "action_at", "ret_vma", "install"}
        if extra:
            raise ScenarioError(f"{w}: unknown field(s) {', '.join(sorted(extra))}")
        cint(cb.get("ret", 0), f"{w}.ret")
        _pairs(cb.get("ret_at", []), f"{w}.ret_at", _int, cint)
        _pairs(cb.get("action_at", []), f"{w}.action_at", _int,
               lambda v, w2: _choice(v, w2, tuple(ACTIONS)))
        _pairs(cb.get("ret_vma", []), f"{w}.ret_vma", _int, cint)
        if "install" in cb:
            if cname != "install_pte":
                raise ScenarioError(f"{w}.install is for install_pte only")
            _choice(cb["install"], f"{w}.install", ("present", "guard"))
    for i, k in enumerate(_list(scn.get("alloc_fail_at", []), "alloc_fail_at")):
        _int(k, f"alloc_fail_at[{i}]", 1, 1 << 31)


# --- running ---------------------------------------------------------------------

def _walker(walker):
    """The entry points of ``walker``: "compiled", "reference" or an object
    with the five entry points as attributes."""
    if walker in (None, "compiled"):
        return api.walk_page_range, walk_page_range_mm, api.walk_page_range_novma, \
            api.walk_page_vma, api.walk_page_range_vma
    if walker == "reference":
        walker = reference
    return walker.walk_page_range, walker.walk_page_range_mm, walker.walk_page_range_novma, \
        walker.walk_page_vma, walker.walk_page_range_vma


def run_scenario(scn, walker="compiled", max_events=MAX_EVENTS, new_mm=AddressSpace, kernel=None):
    """Replay scenario ``scn`` (a parsed kpw-trace/1 object) on ``walker``
    ("compiled", "reference", or an object with the five entry points);
    return its result in the format's ``result`` shape.  ``new_mm(levels,
    is_init_mm=...)`` makes the address spaces (an ``AddressSpace``, or any
    subclass such as the process model's ``MM``).  ``kernel`` picks the
    walk loops ("6.13", "7.0" or "today"; None: the scenario's ``call.kernel``,
    else the default).  ScenarioError for a malformed scenario or one the
    kernel's walker would BUG on."""
    validate(scn)
    wpr, wprm, novma, wpv, wprv = _walker(walker)
    levels = scn["paging_levels"]
    kind = scn.get("mm", "user")
    mm = new_mm(levels, is_init_mm=kind == "init_mm")
    try:
        build_tables(mm, scn.get("entries", []))
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        raise ScenarioError(f"entries: {exc}") from None
    vmas = []
    for i, v in enumerate(scn.get("vmas", [])):
        flags = 0
        for f in v.get("flags", []):
            flags |= FLAGS[f]
        try:
            if kind == "null":
                vmas.append(VMA(v["start"], v["end"], flags))
            else:
                vmas.append(mm.add_vma(v["start"], v["end"], flags))
        except (ValueError, TypeError) as exc:
            raise ScenarioError(f"vmas[{i}]: {exc}") from None
    call = scn["call"]
    alt = None
    if call.get("pgd", "mm") == "alt":
        alt = new_mm(levels, is_init_mm=False)
        try:
            build_tables(alt, scn["alt_entries"])
        except (ValueError, TypeError, OSError, RuntimeError) as exc:
            raise ScenarioError(f"alt_entries: {exc}") from None
    ids = {id(v): i for i, v in enumerate(vmas)}
    trace = []
    ops = scripted_ops(scn["ops"], trace, lambda vma: ids.get(id(vma)), mm, max_events)
    if scn.get("alloc_fail_at"):
        mm.fail_table_alloc(at=scn["alloc_fail_at"])
    before = mm.stats
    alt_before = alt.stats if alt is not None else None
    name = call["api"]
    target = None if kind == "null" else mm
    kernel = call.get("kernel") if kernel is None else kernel
    k = {} if kernel is None else {"kernel": kernel}
    try:
        with locked_for(mm, name, ops, vmas if kind != "null" else ()):
            if name == "walk_page_range":
                ret = wpr(target, call["start"], call["end"], ops, **k)
            elif name == "walk_page_range_mm":
                ret = wprm(target, call["start"], call["end"], ops, **k)
            elif name == "walk_page_vma":
                ret = wpv(vmas[call["vma"]], ops, **k)
            elif name == "walk_page_range_vma":
                ret = wprv(vmas[call["vma"]], call["start"], call["end"], ops, **k)
            else:
                ret = novma(target, call["start"], call["end"], ops,
                            pgd=alt.pgd if alt is not None else None, **k)
    except _Runaway as exc:
        raise ScenarioError(str(exc)) from None
    except TypeError as exc:
        if "NULL" in str(exc):
            raise ScenarioError(f"the kernel's walker would BUG on this scenario: {exc}") from None
        raise ScenarioError(f"{name} refused the call: {exc}") from None
    except (ValueError, OverflowError) as exc:
        raise ScenarioError(f"{name} refused the call: {exc}") from None
    mm.validate()
    counters = _counters(before, mm.stats)
    if alt is not None:         # a walk of the alternate tree counts on its tables
        alt.validate()
        for k, v in _counters(alt_before, alt.stats).items():
            counters[k] = ({lv: counters[k][lv] + n for lv, n in v.items()}
                           if isinstance(v, dict) else counters[k] + v)
    result = {"outcome": "ok", "ret": ret,
              "counters": {k: counters[k] for k in COUNTERS},
              "trace": trace,
              "final_entries": compress(levels, dump(mm))}
    if alt is not None:
        result["final_alt_entries"] = compress(levels, dump(alt))
    return result


# --- comparing -------------------------------------------------------------------

class Difference:
    """The first place two results differ: ``field`` ("trace", "ret",
    "final_entries", "counters.alloc.pte", ...), ``index`` into a list
    field (None otherwise), and the ``expected`` and ``got`` values there
    (None past the end of a list)."""

    def __init__(self, field, index, expected, got):
        self.field, self.index, self.expected, self.got = field, index, expected, got

    def as_dict(self):
        """The difference as a plain dict (``field``, ``index``, ``expected``, ``got``),
        for JSON."""
        return {"field": self.field, "index": self.index, "expected": self.expected, "got": self.got}

    def __repr__(self):
        return f"Difference({self.field!r}, {self.index!r}, {self.expected!r}, {self.got!r})"

    def __str__(self):
        def show(v, ended):
            return "(nothing: the list ends here)" if ended else json.dumps(v)
        where = self.field if self.index is None else f"{self.field}[{self.index}]"
        return (f"{where}: expected {show(self.expected, self._ended('expected'))}, "
                f"got {show(self.got, self._ended('got'))}")

    def _ended(self, side):
        return self.index is not None and getattr(self, side) is None


def _plain(v):
    """``v`` as JSON would give it back (tuples become lists)."""
    return json.loads(json.dumps(v))


def _first_in_list(field, want, got):
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            return Difference(field, i, a, b)
    if len(want) != len(got):
        i = min(len(want), len(got))
        return Difference(field, i, want[i] if i < len(want) else None,
                          got[i] if i < len(got) else None)
    return None


def _row_entry(row):
    name, addr, kind, pfn = row
    e = {"level": name, "addr": addr, "kind": kind}
    if kind == "raw":
        e["value"] = pfn
    elif pfn is not None:
        e["pfn"] = pfn
    return e


def first_difference(levels, expected, got):
    """The first Difference between two results of a ``levels``-level
    scenario, or None when they match.  Compared in the format's order of
    importance: outcome, trace, ret, final entries (slot by slot, whatever
    the runs), then the counters a check compares."""
    expected, got = _plain(expected), _plain(got)
    if expected.get("outcome", "ok") != got.get("outcome", "ok"):
        return Difference("outcome", None, expected.get("outcome"), got.get("outcome"))
    d = _first_in_list("trace", expected.get("trace", []), got.get("trace", []))
    if d:
        return d
    if expected.get("ret") != got.get("ret"):
        return Difference("ret", None, expected.get("ret"), got.get("ret"))
    for field in ("final_entries", "final_alt_entries"):
        if field not in expected and field not in got:
            continue
        w = [_row_entry(r) for r in expand(levels, expected.get(field, []))]
        g = [_row_entry(r) for r in expand(levels, got.get(field, []))]
        d = _first_in_list(field, w, g)
        if d:
            return d
    wc, gc = expected.get("counters", {}), got.get("counters", {})
    for k in CHECKED_COUNTERS:
        a, b = wc.get(k), gc.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            for lv in sorted(set(a) | set(b)):
                if a.get(lv) != b.get(lv):
                    return Difference(f"counters.{k}.{lv}", None, a.get(lv), b.get(lv))
        elif a != b:
            return Difference(f"counters.{k}", None, a, b)
    return None


def check_scenario(scn, walker="compiled"):
    """Replay ``scn`` and compare with its stored ``result``: the first
    Difference, or None when pgwalk agrees."""
    validate(scn)
    if not isinstance(scn.get("result"), dict):
        raise ScenarioError("no \"result\" object to check against")
    got = run_scenario(scn, walker)
    return first_difference(scn["paging_levels"], scn["result"], got)


# --- reading files -----------------------------------------------------------------

def read_scenarios(text, name="<input>"):
    """The JSON values in ``text`` (one object, JSON lines, objects one
    after another, or an array of them), each as (location "name:line",
    value).  Text that is not JSON ends the list with (location,
    ScenarioError): the values before it are still read."""
    dec = json.JSONDecoder()
    out = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            break
        line = text.count("\n", 0, pos) + 1
        try:
            value, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            out.append((f"{name}:{line}", ScenarioError(
                f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                where=f"{name}:{line}")))
            break
        if isinstance(value, list):
            out.extend((f"{name}:{line}[{i}]", v) for i, v in enumerate(value))
        else:
            out.append((f"{name}:{line}", value))
        pos = end
    if not out:
        out.append((name, ScenarioError("no scenario in the input", where=name)))
    return out
