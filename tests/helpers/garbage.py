"""Random garbage page tables and walks over them, shared by
tests/walk/test_fuzz_garbage.py (hypothesis drives the ``random.Random``) and
tests/walk/fuzz_garbage_long.py (seeded, 100,000s of tables).

A recipe is plain data drawn from one ``random.Random``: paging mode, a
window of address space (user or kernel), VMAs, edits that build tables with
``mm.set_entry`` writing arbitrary 64-bit values at every level -- random
words, table-looking links to live tables linked elsewhere (aliases, of the
same or another level), to freed tables and to ids never handed out, leaves
where no leaf can be (PS at PGD/P4D), bad entries, A/D-only values, swap
entries and markers -- and a sequence of walks of every kind, each with
scripted Python callbacks or with C built-in ops.

``run(recipe, impl, c_ops)`` builds the tables and runs the walks with one
walker; with ``c_ops`` the C-op steps use ``pgwalk._builtin`` ops (compiled
walker only), otherwise their Python mirrors (either walker).  It returns
everything the walkers must agree on.
"""

import numpy as np

import pgwalk
from pgwalk import _builtin
from pgwalk import entries as E
from .support import apply_action, call_walk, recording_callback
from pgwalk.constants import (
    ACTION_AGAIN, ACTION_CONTINUE, P4D, PGD, PMD, PTE, PTE_MARKER_GUARD,
    PUD, VM_HUGETLB, VM_PFNMAP,
)

MiB = 1 << 20
GiB = 1 << 30
PRESENT = 0x67
USER_ANCHORS = {
    4: [0x7F0000000000, GiB, 1 << 39, (1 << 47) - 8 * MiB, 64 * GiB, 8 * MiB],
    5: [0x7F0000000000, GiB, 1 << 39, 1 << 48, (1 << 56) - 8 * MiB, 3 << 48],
}
KERNEL_ANCHORS = {
    4: [0xFFFF888000000000, 0xFFFFC90000000000, 0xFFFFFFFF80000000, 0xFFFF808000000000],
    5: [0xFF11000000000000, 0xFFA0000000000000, 0xFFFFFFFF80000000, 0xFF01000000000000],
}
GARBAGE = [0xE3, 0x20, 0x40, 0x60, 0x80, 0x100, 0x2, 0x67, 0x63, 0x65, 0x1,
           1 << 58 | 0x80 | 1, 0xFFFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0067,
           0x8000_0000_0000_0000, 0x7FF0_0000_0000_0E7]
LEVELS_OF = {4: [PGD, PUD, PMD, PTE], 5: [PGD, P4D, PUD, PMD, PTE]}
APIS = ["walk_page_range", "walk_page_range_mm", "walk_page_vma",
        "walk_page_range_vma", "walk_page_range_novma"]
PY_CALLBACKS = ["pgd_entry", "p4d_entry", "pud_entry", "pmd_entry", "pte_entry",
                "pte_hole", "hugetlb_entry", "test_walk", "pre_vma", "post_vma"]


# --- recipes -------------------------------------------------------------------

def random_value(rng, level):
    """A 64-bit value for a slot at ``level``: anything at all."""
    k = rng.randrange(14)
    if k == 0:
        return rng.getrandbits(64)
    if k in (1, 2):                              # table-looking link, flags varied
        tid = rng.choice([rng.randrange(64), rng.randrange(4096), rng.getrandbits(40)])
        return (tid << 12) & E.PTE_PFN_MASK | rng.choice(
            [0x67, 0x67, 0x63, 0x65, 0x27, 0xE7, 0x1, 0x7, 0x66, 1 << 63 | 0x67])
    if k == 3:                                   # a leaf, legal here or not (PS)
        return rng.getrandbits(30) << 21 | rng.choice([0xE7, 0xE3, 0x87, 0x80, 0xA7])
    if k == 4:                                   # A/D-only and flag-only values
        return rng.choice([0x20, 0x40, 0x60, 0x100, 0x200, 0xE00, 0x10, 0x8])
    if k == 5:                                   # swap entries of every type
        return E.swp_entry_to_pte(E.swp_entry(rng.randrange(32), rng.getrandbits(rng.choice([0, 9, 20, 39]))))
    if k == 6:                                   # markers
        return (31 << 52) | (rng.choice([1, 2, 3, 4, 5, 7, 0, 8, 1 << 20]) << 12) | 2   # raw: invalid bits too
    if k == 7:                                   # PMD migration entries
        return E.swp_entry_to_pmd(E.swp_entry(rng.choice([25, 26, 27, 0, 31]), rng.getrandbits(20) * 512))
    if k == 8:                                   # present PTE-style
        return E.pfn_pte(rng.getrandbits(rng.choice([1, 20, 40])), rng.choice([PRESENT, 0x25, 0x1, 0x3]))
    if k == 9:                                   # PROTNONE-ish, bit 8 without P
        return rng.getrandbits(40) << 12 | rng.choice([0x100, 0x120, 0x180, 0x102])
    if k == 10:                                  # devmap / NX / special bits
        return rng.getrandbits(40) << 12 | rng.choice([1 << 58, 1 << 63, 1 << 9, 1 << 10]) | rng.choice([0, 1, 0x81, 0x67])
    return rng.choice(GARBAGE)


DEVMAP = 1 << 58


def livelock_free(v):
    """``v`` without the livelock found by the long run (docs/robustness.md,
    Open findings; fixed by decision 17): a present (P or PROTNONE), non-PS value with _PAGE_DEVMAP at
    a PMD makes a no-VMA walk of user addresses retry for ever
    (pte_offset_map refuses a devmap PMD without clearing it; ACTION_AGAIN),
    as the kernel's code would."""
    if v & 0x101 and v & DEVMAP and not v & 0x80:     # present (P or PROTNONE), not PS
        return v & ~DEVMAP
    return v


def _strip_livelock(recipe):
    items = []
    for it in recipe["items"]:
        if it[0] == "set":
            it = it[:3] + (livelock_free(it[3]),)
        elif it[0] == "alias":
            it = it[:5] + (it[5] & ~DEVMAP if it[5] > 0 else it[5],)
        items.append(it)
    recipe["items"] = items
    for step in recipe["steps"]:
        for cb in step["script"].values():
            if "set_at" in cb:
                cb["set_at"] = {n: livelock_free(v) for n, v in cb["set_at"].items()}
            if "value" in cb:
                cb["value"] = livelock_free(cb["value"])
    return recipe


def random_recipe(rng, livelock=True):
    """A recipe; with ``livelock=False`` the values that made no-VMA walks
    retry for ever before decision 17 (docs/decisions.md) are left out."""
    r = _random_recipe(rng)
    return r if livelock else _strip_livelock(r)


def _random_recipe(rng):
    levels = rng.choice([4, 5])
    kernel = rng.randrange(4) == 0
    anchor = rng.choice((KERNEL_ANCHORS if kernel else USER_ANCHORS)[levels])
    lo, hi = anchor - 4 * MiB, anchor + 4 * MiB
    pmds = list(range(lo, hi, 2 * MiB))

    def addr():
        return rng.choice(pmds) + rng.randrange(512) * 4096

    items = []
    for _ in range(rng.randrange(16)):
        k = rng.randrange(12)
        base = rng.choice(pmds)
        if k <= 1:
            items.append(("table", base, PMD))
            for _ in range(rng.randrange(10)):
                items.append(("set", base + rng.randrange(512) * 4096, PTE, random_value(rng, PTE)))
        elif k == 2:
            items.append(("map", base, PMD))
        elif k == 3:
            items.append(("map", base & ~(GiB - 1), PUD))
        elif k == 4:
            items.append(("table", addr(), rng.choice(LEVELS_OF[levels][:-1])))
        elif k in (5, 6, 7):
            items.append(("set", addr(), rng.choice(LEVELS_OF[levels]), random_value(rng, None)))
        elif k in (8, 9):                        # alias: link a table linked elsewhere
            items.append(("alias", addr(), rng.choice(LEVELS_OF[levels][:-1]),
                          addr(), rng.choice(LEVELS_OF[levels][:-1]),
                          rng.choice([0, 0, 0x4, 0x80, 1 << 63, -2])))
        elif k == 10:                            # overwrite a link: frees a subtree
            items.append(("set", addr(), rng.choice(LEVELS_OF[levels][:-1]),
                          rng.choice([0, 0, random_value(rng, None)])))
        else:
            items.append(("map", base + rng.randrange(512) * 4096, PTE))
    vmas = []
    if not kernel:
        edges = sorted({rng.choice([rng.randrange(lo // (2 * MiB), hi // (2 * MiB) + 1) * 2 * MiB,
                                    rng.randrange(lo // 4096, hi // 4096 + 1) * 4096])
                        for _ in range(rng.randrange(0, 7))})
        for a, b in zip(edges[::2], edges[1::2]):
            kind = rng.choice(["anon", "anon", "anon", "file", "pfnmap", "hugetlb"])
            if kind == "hugetlb":
                a, b = a & ~(2 * MiB - 1), (b + 2 * MiB - 1) & ~(2 * MiB - 1)
            if vmas and a < vmas[-1][1]:
                continue
            vmas.append((a, b, kind))
        if not vmas or rng.randrange(3) == 0:
            if not vmas:
                vmas.append((lo, hi, rng.choice(["anon", "anon", "file", "hugetlb"])))
    for a, b, kind in vmas:                      # huge entries (and garbage) where hugetlb looks
        if kind == "hugetlb" and rng.randrange(3):
            items.append(("map", a, PMD))
            items.append(("set", rng.randrange(a // (2 * MiB), b // (2 * MiB)) * 2 * MiB, PMD,
                          random_value(rng, PMD)))
    steps = []
    for _ in range(rng.randint(1, 3)):
        steps.append(random_step(rng, kernel, lo, hi, vmas))
    return {"levels": levels, "kernel": kernel, "init_mm": kernel and rng.randrange(2) == 0,
            "lo": lo, "hi": hi, "items": items, "vmas": vmas, "steps": steps}


def random_step(rng, kernel, lo, hi, vmas):
    api = "walk_page_range_novma" if kernel else rng.choice(APIS)
    vi = None
    a, b = lo, hi
    if api in ("walk_page_vma", "walk_page_range_vma"):
        vi = rng.randrange(len(vmas))
        a, b = vmas[vi][0], vmas[vi][1]
    if rng.randrange(3) == 0:
        start, end = a, b
    else:
        start = rng.randrange(a // 4096, b // 4096) * 4096
        end = min(b, start + rng.randint(1, 2048) * 4096)
        if rng.randrange(8) == 0:
            start += rng.choice([8, 4095])
    ops = rng.choice(["py", "py", "py", "count", "mincore"] +
                     (["fill", "fill", "py_install", "py_install", "py_install", "py_install"]
                      if api == "walk_page_range_mm" else []))
    script = {}
    if ops in ("py", "py_install"):
        names = [n for n in PY_CALLBACKS if rng.randrange(2)] or ["pte_entry"]
        if "hugetlb_entry" not in names and any(v[2] == "hugetlb" for v in vmas) and rng.randrange(2):
            names.append("hugetlb_entry")
        for n in names:
            script[n] = {
                "ret_at": {rng.randrange(300): rng.choice([1, -5, 7])} if rng.randrange(6) == 0 else {},
                "action_at": {rng.randrange(300): rng.choice([ACTION_CONTINUE, ACTION_AGAIN])
                              for _ in range(rng.randrange(3))},
                "set_at": ({rng.randrange(1, rng.choice([4, 30, 200])): random_value(rng, None) for _ in range(rng.randrange(3))}
                           if n.endswith("_entry") else {}),
            }
        if ops == "py_install":
            script["install_pte"] = {"how": rng.choice(["present", "guard", "garbage", "nothing"]),
                                     "value": random_value(rng, PTE)}
    return {"api": api, "vma": vi, "start": start, "end": end, "ops": ops, "script": script,
            "fail_at": [rng.randint(1, 5)] if rng.randrange(10) == 0 else []}


# --- building --------------------------------------------------------------------

def build(recipe):
    levels = recipe["levels"]
    mm = pgwalk.init_mm(levels) if recipe["init_mm"] else pgwalk.MM(levels)
    for it in recipe["items"]:
        try:
            if it[0] == "table":
                mm.alloc_table(it[1], it[2])
            elif it[0] == "map":
                mm.map(it[1], it[2])
            elif it[0] == "set":
                mm.set_entry(it[1], it[2], it[3])
            else:
                _, addr, level, src, src_level, extra = it
                loc = mm._locate(src, src_level, False)
                child = mm._child(*loc) if loc is not None else -1
                if child < 0:
                    child = mm.nr_tables                 # likely freed or never handed out
                value = E.mk_table(child)
                value = value & ~0x67 if extra == -2 else value | extra
                mm.set_entry(addr, level, value)
        except (ValueError, OSError):
            pass                      # a leaf or garbage above blocks this edit: same in every build
    for a, b, kind in recipe["vmas"]:
        v = mm.add_vma(a, b, {"pfnmap": VM_PFNMAP, "hugetlb": VM_HUGETLB}.get(kind, 0))
        if kind == "file":
            v.vm_ops = "file"
    return mm


def raw_dump(tables):
    """Every non-zero slot as (level, path of indices, raw value or 'T' for a link)."""
    out = []

    def visit(tid, level, path):
        t = np.asarray(tables._table(tid))
        for i in np.flatnonzero(t):
            i = int(i)
            child = tables._child(tid, i) if level < PTE else -1
            out.append((level, path + (i,), "T" if child >= 0 else int(t[i])))
            if child >= 0:
                visit(child, PUD if (tables.levels == 4 and level == PGD) else level + 1, path + (i,))

    visit(tables.pgd_id, PGD, ())
    return out


# --- ops -----------------------------------------------------------------------------

def py_ops(step, trace, mm):
    """Scripted Python callbacks: each records its call; the n-th call of a
    callback may return non-zero, set an action, or write a value through
    its entry (refused for table links: ValueError is recorded)."""
    calls = {}
    fired = set()
    script = step["script"]

    def behave(name, walk, addr, entry=None):
        cb = script[name]
        n = calls[name] = calls.get(name, 0) + 1
        apply_action(walk, cb["action_at"].get(n), fired, (name, addr))
        if entry is not None and n in cb["set_at"]:
            try:
                entry.set(cb["set_at"][n])
            except ValueError as e:
                trace.append(("set-refused", str(e)))
        return cb["ret_at"].get(n, 0)

    def mk(name):
        if name != "install_pte":
            return recording_callback(name, trace, behave)
        how, value = script[name]["how"], script[name]["value"]

        def install(addr, ptep):
            if how == "present":
                ptep.set(E.pfn_pte(addr >> 12 & ((1 << 40) - 1), PRESENT))
            elif how == "guard":
                ptep.set(E.make_pte_marker(PTE_MARKER_GUARD))
            elif how == "garbage":
                ptep.set(value)
        return recording_callback(name, trace, lambda *a: 0, install)

    return pgwalk.MMWalkOps(**{n: mk(n) for n in script})


class PyCount:
    """CountOp's callbacks in Python (for the reference walker)."""

    def __init__(self):
        self.n = dict.fromkeys(["pte_present", "pte_none", "pte_swap", "pmd_table",
                                "pmd_thp", "pmd_other", "holes", "calls"], 0)

    def pte_entry(self, entry, addr, next, walk):
        v = int(entry)
        self.n["calls"] += 1
        self.n["pte_none" if E.pte_none(v) else "pte_present" if E.pte_present(v) else "pte_swap"] += 1
        return 0

    def pmd_entry(self, entry, addr, next, walk):
        v = int(entry)
        self.n["calls"] += 1
        if E.pmd_trans_huge(v):
            self.n["pmd_thp"] += 1
        elif E.pmd_leaf(v) or not v & 1:
            self.n["pmd_other"] += 1
        else:
            self.n["pmd_table"] += 1
        return 0

    def pte_hole(self, addr, next, depth, walk):
        self.n["calls"] += 1
        self.n["holes"] += 1
        return 0

    @property
    def counts(self):
        return dict(self.n)


class PyMincore:
    """MincoreOp's callbacks in Python."""

    def __init__(self, start, npages):
        self.start = start & ~4095
        self.vec = np.zeros(npages, dtype=np.uint8)

    def _fill(self, addr, next, v):
        if next <= self.start:
            return
        lo = (addr - self.start) >> 12 if addr > self.start else 0
        hi = min((next - self.start + 4095) >> 12, len(self.vec))
        if lo < hi:
            self.vec[lo:hi] = v

    def pte_entry(self, entry, addr, next, walk):
        i = (addr - self.start) >> 12
        if 0 <= i < len(self.vec):
            self.vec[i] = E.pte_present(int(entry))
        return 0

    def pmd_entry(self, entry, addr, next, walk):
        if E.pmd_trans_huge(int(entry)):
            self._fill(addr, next, 1)
            walk.action = ACTION_CONTINUE
        return 0

    def pte_hole(self, addr, next, depth, walk):
        self._fill(addr, next, 0)
        return 0


class PyFill:
    """FillOp(stride=4096)'s install_pte in Python."""

    def __init__(self, pfn_base=1 << 24, prot=0x67):
        self.pfn_base, self.prot = pfn_base, prot

    def install_pte(self, addr, next, ptep, walk):
        if addr & 4095 == 0:             # FillOp(stride=4096): only at a page-aligned addr
            ptep.set(((self.pfn_base + (addr >> 12)) << 12) & E.PTE_PFN_MASK | self.prot)
        return 0


def step_ops(step, trace, mm, c_ops):
    """(ops, result getter) of one step."""
    kind = step["ops"]
    if kind in ("py", "py_install"):
        return py_ops(step, trace, mm), lambda: None
    npages = max(1, min(4096, (step["end"] - step["start"] + 4095) >> 12))
    if kind == "count" or kind == "fill":
        op = _builtin.CountOp() if c_ops else PyCount()
        kw = dict(pte_entry=op.pte_entry, pmd_entry=op.pmd_entry, pte_hole=op.pte_hole)
        if kind == "fill":
            fill = _builtin.FillOp() if c_ops else PyFill()
            kw["install_pte"] = fill.install_pte
        return pgwalk.MMWalkOps(**kw), lambda: op.counts
    op = _builtin.MincoreOp(step["start"], npages) if c_ops else PyMincore(step["start"], npages)
    return (pgwalk.MMWalkOps(pte_entry=op.pte_entry, pmd_entry=op.pmd_entry, pte_hole=op.pte_hole),
            lambda: op.vec.tobytes())


# --- running ---------------------------------------------------------------------------

def run_step(mm, step, impl, c_ops):
    trace = []
    ops, result = step_ops(step, trace, mm, c_ops)
    api, s, e = step["api"], step["start"], step["end"]
    if step["fail_at"]:
        mm.fail_table_alloc(at=step["fail_at"])
    if api == "walk_page_range_novma":
        lock = mm.mmap_read_lock() if mm.is_init_mm else mm.mmap_write_lock()
    else:
        lock = mm.mmap_read_lock()
    vmas = mm.vmas
    with lock:
        out = call_walk(impl, api, mm, s, e, ops,
                        vma=vmas[step["vma"]] if api in ("walk_page_vma", "walk_page_range_vma") else None)
    mm.fail_table_alloc(at=())
    return {"ret": out, "trace": trace, "result": result()}


def run(recipe, impl, c_ops=False, check_validate=True, dump=True):
    """Build and walk; ``dump=False`` leaves out the table dumps (speed)."""
    mm = build(recipe)
    if check_validate:
        mm.validate()
    out = {"build": raw_dump(mm) if dump else None, "steps": []}
    for step in recipe["steps"]:
        r = run_step(mm, step, impl, c_ops)
        if check_validate:
            mm.validate()
        st = mm.stats
        r["tables"] = raw_dump(mm) if dump else None
        r["stats"] = st
        r["nr_tables"] = mm.nr_tables
        out["steps"].append(r)
    return out
