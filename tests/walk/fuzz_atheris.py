"""Coverage-guided fuzzing with atheris (not collected by pytest; needs the
``fuzz`` extra: ``pip install -e .[fuzz]``).

One input is decoded into: 4 or 5 levels; VMAs (plain, VM_PFNMAP,
VM_HUGETLB); page-table edits with ``map`` / ``alloc_table`` and raw
``set_entry`` values (random words, flag soups, links copied from other
slots, so aliases); an optional failing table allocation; then one walk
(walk_page_range, walk_page_range_mm with install_pte, walk_page_vma,
walk_page_range_novma) with scripted Python callbacks at every level that
return scripted values, set ``walk.action`` and write scripted values
through their entry references.

Each input is run on two identical mms, by the compiled walker and by
``pgwalk.reference``: the traces (callback, address, raw value), the
result or the exception's type, and the final tables must be equal, and
``mm.validate()`` must pass.  A C-tier walk (CountOp, MincoreOp) of the
compiled mm follows.  atheris instruments the Python code, so the
guidance comes from the reference walker (which mirrors the compiled one
branch by branch) and the wrappers; crashes of the compiled core end the
run with its input saved.

    python tests/walk/fuzz_atheris.py -max_total_time=600 -max_len=512 -len_control=0 \
        -rss_limit_mb=4096 [corpus_dir]
"""

import gc
import sys

import atheris

with atheris.instrument_imports(include=["pgwalk"]):
    import pgwalk as P
    from pgwalk import reference
    from pgwalk.internal import walk_page_range_mm

from pgwalk._builtin import CountOp, MincoreOp

PS = P.PAGE_SIZE
M2, G1 = 2 << 20, 1 << 30
BASES = [0x200000, G1 - M2, G1, 2 * G1 + 7 * PS, 512 * G1 - M2, 3 * 512 * G1]
BITS = [1, 2, 4, 0x20, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800, 1 << 57, 1 << 58, 1 << 62, 1 << 63]
LEVELS = [P.PGD, P.P4D, P.PUD, P.PMD, P.PTE]
SIZES = {P.PTE: PS, P.PMD: M2, P.PUD: G1}
MAX_CALLS = 3000


class Enough(Exception):
    """A scripted walk that goes on too long (ACTION_AGAIN loops) is ended
    the same way in both walkers."""


def decode(data):
    fdp = atheris.FuzzedDataProvider(data)
    r = {"levels": 4 + fdp.ConsumeBool(), "vmas": [], "edits": [], "script": []}

    def addr():
        return BASES[fdp.ConsumeIntInRange(0, len(BASES) - 1)] + fdp.ConsumeIntInRange(0, 1100) * PS

    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        kind = fdp.ConsumeIntInRange(0, 3)
        base = BASES[fdp.ConsumeIntInRange(0, len(BASES) - 1)]
        if kind == 3:
            r["vmas"].append((base & ~(M2 - 1), (base & ~(M2 - 1)) + M2 * fdp.ConsumeIntInRange(1, 2),
                              P.VM_HUGETLB))
        else:
            start = base + fdp.ConsumeIntInRange(0, 600) * PS
            r["vmas"].append((start, start + fdp.ConsumeIntInRange(1, 1200) * PS,
                              [P.VM_READ | P.VM_WRITE, 0, P.VM_PFNMAP][kind]))
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        op = fdp.ConsumeIntInRange(0, 4)
        level = LEVELS[fdp.ConsumeIntInRange(0, 4)]
        if op == 0:
            r["edits"].append(("map", addr(), [P.PTE, P.PMD, P.PUD][fdp.ConsumeIntInRange(0, 2)]))
        elif op == 1:
            r["edits"].append(("alloc_table", addr(), [P.PGD, P.PUD, P.PMD][fdp.ConsumeIntInRange(0, 2)]))
        elif op == 2:
            r["edits"].append(("set", addr(), level, fdp.ConsumeIntInRange(0, (1 << 64) - 1)))
        elif op == 3:
            v = fdp.ConsumeIntInRange(0, 0xFFFF) << 12
            for b in BITS:
                if fdp.ConsumeBool():
                    v |= b
            r["edits"].append(("set", addr(), level, v))
        else:
            r["edits"].append(("copy", addr(), addr(), level))
    r["fail_at"] = [fdp.ConsumeIntInRange(1, 6)] if fdp.ConsumeBool() else []
    r["api"] = fdp.ConsumeIntInRange(0, 3)
    r["start"] = addr() & ~(PS - 1)
    r["len"] = fdp.ConsumeIntInRange(1, 3000) * PS
    for _ in range(fdp.ConsumeIntInRange(0, 16)):
        r["script"].append((fdp.ConsumeIntInRange(0, 300),                  # call number
                            fdp.ConsumeIntInRange(-3, 2),                   # return value
                            fdp.ConsumeIntInRange(-1, 2),                   # action, -1: leave
                            fdp.ConsumeIntInRange(0, (1 << 64) - 1) if fdp.ConsumeBool() else None))
    return r


def build(r):
    mm = P.MM(r["levels"])
    for start, end, flags in r["vmas"]:
        try:
            mm.add_vma(start, end, flags)
        except ValueError:
            pass
    for e in r["edits"]:
        try:
            if e[0] == "map":
                a = e[1] & ~(SIZES[e[2]] - 1)
                mm.map(a, level=e[2])
            elif e[0] == "alloc_table":
                mm.alloc_table(e[1], e[2])
            elif e[0] == "set":
                mm.set_entry(e[1], e[2], e[3])
            else:
                mm.set_entry(e[2], e[3], mm.entry(e[1], e[3]))
        except (ValueError, OSError):
            pass
    mm.validate()
    mm.fail_table_alloc(at=r["fail_at"])
    return mm


def tables(mm):
    out = []

    def visit(tid, level, base):
        t = mm._table(tid)
        size = 1 << (12 + 9 * (4 - level)) if level else (1 << (39 if mm.levels == 4 else 48))
        for i in range(512):
            v = int(t[i])
            if v:
                child = mm._child(tid, i) if level < P.PTE else -1
                out.append((level, base + i * size, "table" if child >= 0 else v))
                if child >= 0:
                    visit(child, P.PUD if (mm.levels == 4 and level == P.PGD) else level + 1,
                          base + i * size)
    visit(mm.pgd_id, P.PGD, 0)
    return out


def walk(impl, r, mm):
    trace = []
    script = {c: (ret, act, val) for c, ret, act, val in r["script"]}

    def step(name, addr, entry=None, walk_=None):
        trace.append((name, addr, None if entry is None else int(entry)))
        if len(trace) > MAX_CALLS:
            raise Enough()
        s = script.get(len(trace))
        if s is None:
            return 0
        ret, act, val = s
        if act >= 0 and walk_ is not None:
            walk_.action = act
        if val is not None and entry is not None:
            try:
                entry.set(val)
                trace.append(("set", val))
            except ValueError:
                trace.append(("refused", val))
        return ret

    def ent(name):
        return lambda e, a, n, w: step(name, a, e, w)

    kw = {f"{n}_entry": ent(n) for n in ("pgd", "p4d", "pud", "pmd", "pte")}
    kw["pte_hole"] = lambda a, n, d, w: step(("hole", d), a, None, w)
    kw["hugetlb_entry"] = lambda e, h, a, n, w: step("hugetlb", a, e, w)
    api = r["api"]
    if api == 1:
        def install(a, n, ptep, w):
            ptep.set(P.pfn_pte(0x4242, 0x67))
            return step("install", a, None, w)
        kw["install_pte"] = install
    ops = P.MMWalkOps(**kw)
    start, end = r["start"], min(r["start"] + r["len"], mm.task_size)
    mod = P if impl == "cython" else reference
    try:
        if api == 3:
            with mm.mmap_write_lock():
                rc = mod.walk_page_range_novma(mm, start, end, ops)
        elif api == 2:
            vma = mm.find_vma(start)
            if vma is None:
                return trace, "no vma"
            with mm.mmap_read_lock():
                rc = mod.walk_page_vma(vma, ops)
        else:
            fn = (walk_page_range_mm if impl == "cython" else reference.walk_page_range_mm) \
                if api == 1 else mod.walk_page_range
            with mm.mmap_read_lock():
                rc = fn(mm, start, end, ops)
    except (Enough, ValueError, OverflowError, TypeError) as e:
        rc = type(e).__name__
    return trace, rc


_runs = [0]


def one_input(data):
    _runs[0] += 1
    if _runs[0] % 50 == 0:
        gc.collect()             # an mm and its VMAs form a cycle: free their slabs now
    r = decode(data)
    mm1, mm2 = build(r), build(r)
    t1, rc1 = walk("cython", r, mm1)
    t2, rc2 = walk("reference", r, mm2)
    mm1.validate()
    mm2.validate()
    if (t1, rc1) != (t2, rc2):
        raise AssertionError(f"walkers differ: {rc1!r} vs {rc2!r}, "
                             f"first diff at {next((i for i, (x, y) in enumerate(zip(t1, t2)) if x != y), min(len(t1), len(t2)))}")
    if tables(mm1) != tables(mm2):
        raise AssertionError("final tables differ")
    start = r["start"]
    end = min(start + r["len"], mm1.task_size)
    c = CountOp()
    m = MincoreOp(start, (end - start) // PS)
    with mm1.mmap_read_lock():
        P.walk_page_range(mm1, start, end, P.MMWalkOps(pte_entry=c.pte_entry, pmd_entry=c.pmd_entry,
                                                        pte_hole=c.pte_hole))
        P.walk_page_range(mm1, start, end, P.MMWalkOps(pte_entry=m.pte_entry, pmd_entry=m.pmd_entry,
                                                        pte_hole=m.pte_hole))
    mm1.validate()


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
