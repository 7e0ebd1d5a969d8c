"""The callback walker against the batched walker (pt_range_walk), tier by tier.

    python benchmarks/ptrange.py [--mib 256] [--rounds 5] [--shapes ...]
                                 [--json out.json] [--plot out.png] [--no-cimport]

For each shape (one VMA of --mib MiB on a pgwalk.MM) and each tier a user
can write, the same question (which pages are present: mincore's) is asked
through walk_page_range (callbacks) and through pt_range_walk; the table
gives ns per 4 KiB page of the range, indirect calls (callbacks) or steps
(pt_range) per page, and pt_range's time over the callbacks'.

Shapes
  dense       every page an order-0 folio (MADV_POPULATE_WRITE, no THP)
  ptemapped   2 MiB THPs split to PTEs by a partial mprotect (and back),
              so each folio stays large: pt_range batches its 512 PTEs
  thp         2 MiB THPs, PMD-mapped
  mixed       smaller large folios: shared memory collapsed to 2 MiB
              folios, then a hole punched at the fourth page of each 2 MiB
              (the non-uniform split leaves folios of 256, 128, ..., 2
              pages and single pages) and faulted back: 12 folios a 2 MiB
  sparse      one order-0 page per 2 MiB
  empty       a VMA with no page
Tiers (callbacks | pt_range)
  builtin C   MincoreOp's pmd_entry in the kernel's shape (one call per PTE
              table) | PtRangeMincoreOp (nogil C over the steps)
  cimport C   the _examples/cython count_present pte_entry (one call per
              PTE) | the _examples/cython ptrange_count steps, each built as
              its test builds it
  python      a Python pte_entry per entry | a Python loop over
              pgwalk.pt_range_walk (one record per batch)
  MM.mincore  the process model's mincore on each walker
Floors: memory (numpy count_nonzero over as many words as the tables hold)
and py-call (a Python call with 4 arguments from C).

Protocol: every case is built once; then --rounds rounds each time every
(tier, walker) pair once, interleaved, with loops calibrated to last
--min-time; the best round is kept (the machine may be loaded).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
if list((_ROOT / "pgwalk").rglob("_core.*.so")):      # this checkout, when built in place
    sys.path.insert(0, str(_ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))

import pgwalk                                           # noqa: E402
from pgwalk import constants as C                       # noqa: E402
from pgwalk._builtin import MincoreOp, PtRangeMincoreOp, call_python_4   # noqa: E402

PAGE = 4096
MiB = 1 << 20
BASE = 0x7E0000000000
SHAPES = ("dense", "ptemapped", "thp", "mixed", "sparse", "empty")
TIERS = ("builtin C", "cimport C", "python", "MM.mincore")
PRESENT = C.PT_TYPE_FOLIO | C.PT_TYPE_PFN

# (label, tier, shape, comparison, target): "ratio" is pt_range / callbacks
# (at most the target), "speedup" callbacks / pt_range (at least the
# target), "floor" pt_range / the memory floor (at most the target).
TARGETS = (
    ("C pt_range <= 1.0x c-pmd, dense 4K", "builtin C", "dense", "ratio", 1.0),
    ("C pt_range >= 4x faster, PTE-mapped 2 MiB", "builtin C", "ptemapped", "speedup", 4.0),
    ("Python pt_range <= 1.2x Python callback, dense 4K", "python", "dense", "ratio", 1.2),
    ("Python pt_range >= 50x faster, PTE-mapped 2 MiB", "python", "ptemapped", "speedup", 50.0),
    ("MM.mincore pt_range <= 1.0x callbacks, dense 4K", "MM.mincore", "dense", "ratio", 1.0),
    ("MM.mincore pt_range <= 1.0x callbacks, PTE-mapped", "MM.mincore", "ptemapped", "ratio", 1.0),
    ("Python pt_range <= 10x memory floor, dense 4K (open)", "python", "dense", "floor", 10.0),
    ("Python pt_range <= 10x memory floor, PTE-mapped (open)", "python", "ptemapped", "floor", 10.0),
)


def build(shape, size):
    """A pgwalk.MM with one anonymous VMA of ``size`` bytes at BASE in ``shape``."""
    mm = pgwalk.MM(4)
    rw = C.PROT_READ | C.PROT_WRITE
    if shape == "mixed":
        a = mm.mmap(BASE, size, rw, C.MAP_SHARED | C.MAP_ANONYMOUS | C.MAP_FIXED)
        mm.madvise(a, size, C.MADV_POPULATE_WRITE)
        mm.madvise(a, size, C.MADV_COLLAPSE)
        for x in range(a, a + size, 2 * MiB):
            mm.madvise(x + 3 * PAGE, PAGE, C.MADV_REMOVE)
        mm.madvise(a, size, C.MADV_POPULATE_WRITE)
        return mm
    a = mm.mmap(BASE, size, rw, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
    if shape in ("ptemapped", "thp"):
        mm.madvise(a, size, C.MADV_HUGEPAGE)
    if shape in ("dense", "ptemapped", "thp"):
        mm.madvise(a, size, C.MADV_POPULATE_WRITE)
    elif shape == "sparse":
        for x in range(a, a + size, 2 * MiB):
            mm.touch(x, write=True)
    if shape == "ptemapped":
        for x in range(a, a + size, 2 * MiB):          # splits the PMD, keeps the folio
            mm.mprotect(x + PAGE, PAGE, C.PROT_READ)
            mm.mprotect(x + PAGE, PAGE, rw)
    return mm


def timed(fn, min_time):
    """Seconds per call: loops calibrated to last ``min_time``."""
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(min_time / one))
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - t0) / loops


def load_examples(tmpdir):
    """The two Cython examples, built as their tests build them (None: no compiler/Cython)."""
    sys.path.insert(0, str(Path(pgwalk.__file__).parent / "_examples" / "cython"))
    try:
        import build as example_build
        return (example_build.build(Path(tmpdir) / "cb", "count_present"),
                example_build.build(Path(tmpdir) / "pt", "ptrange_count"))
    except Exception as e:                              # noqa: BLE001 -- reported, not fatal
        print(f"cimport C tier skipped: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    finally:
        sys.path.pop(0)


def case_calls(mm, examples):
    """(tier, walker) -> (a no-argument call, steps or indirect calls per walk)."""
    lo, hi = BASE, max(v.vm_end for v in mm.vmas)
    n = (hi - lo) // PAGE
    vmas = list(mm.vmas)
    calls = {}

    def cb_stats(ops):
        st = pgwalk.WalkStats()
        with mm.mmap_read_lock():
            pgwalk.walk_page_range(mm, lo, hi, ops, stats=st)
        return st.indirect_calls

    def cb(ops):
        def go():
            with mm.mmap_read_lock():
                pgwalk.walk_page_range(mm, lo, hi, ops)
        return go, cb_stats(ops)

    op = MincoreOp(lo, n)
    calls[("builtin C", "callbacks")] = cb(pgwalk.MMWalkOps(pmd_entry=op.pte_range, pte_hole=op.pte_hole))
    pop = PtRangeMincoreOp(lo, n)

    def pt_builtin():
        with mm.mmap_read_lock():
            return sum(pop.walk(mm, v, v.vm_start, v.vm_end) for v in vmas)
    calls[("builtin C", "pt_range")] = (pt_builtin, pt_builtin())
    if examples is not None:
        cp_mod, ptc_mod = examples
        cp = cp_mod.CountPresent()
        calls[("cimport C", "callbacks")] = cb(pgwalk.MMWalkOps(pte_entry=cp.pte_entry,
                                                                 pmd_entry=op.pmd_entry,
                                                                 pte_hole=op.pte_hole))

        def pt_cimport():
            with mm.mmap_read_lock():
                return sum(ptc_mod.count_present(mm, v, v.vm_start, v.vm_end)[1] + 1 for v in vmas)
        calls[("cimport C", "pt_range")] = (pt_cimport, pt_cimport())
    calls[("python", "callbacks")] = cb(pgwalk.MMWalkOps(pte_entry=lambda e, a, nx, w: 0,
                                                          pmd_entry=op.pmd_entry, pte_hole=op.pte_hole))

    def pt_python():
        steps = 0
        with mm.mmap_read_lock():
            for v in vmas:
                steps += 1
                for _r in pgwalk.pt_range_walk(v, v.vm_start, v.vm_end, PRESENT):
                    steps += 1
        return steps
    calls[("python", "pt_range")] = (pt_python, pt_python())
    for w in ("callbacks", "pt_range"):
        calls[("MM.mincore", w)] = ((lambda w=w: mm.mincore(lo, hi - lo, walker=w)), None)
    # both walkers give the same answer
    assert (op.vec == pop.vec).all(), "MincoreOp and PtRangeMincoreOp disagree"
    assert (mm.mincore(lo, hi - lo) == mm.mincore(lo, hi - lo, walker="pt_range")).all()
    return calls, n


def run(shapes, mib, rounds, min_time, cimport=True, progress=True):
    size = mib * MiB
    res = {"mib": mib, "rounds": rounds, "min_time": min_time, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        examples = load_examples(tmp) if cimport else None
        for shape in shapes:
            t0 = time.perf_counter()
            mm = build(shape, size)
            calls, n = case_calls(mm, examples)
            best = {k: float("inf") for k in calls}
            mem = np.ones(max(mm.nr_tables, 1) * 512, dtype=np.uint64)
            floors = {"memory": float("inf"), "py-call": float("inf")}
            for _ in range(rounds):                     # interleaved: every pair once per round
                for k, (fn, _steps) in calls.items():
                    best[k] = min(best[k], timed(fn, min_time))
                floors["memory"] = min(floors["memory"], timed(lambda: np.count_nonzero(mem), min_time))
                floors["py-call"] = min(floors["py-call"], timed(
                    lambda: call_python_4(lambda a, b, c, d: 0, 10000), min_time) / 10000 * n)
            case = {"shape": shape, "pages": n, "vmas": len(mm.vmas), "tables": mm.nr_tables,
                    "floors_ns": {k: v / n * 1e9 for k, v in floors.items()}, "tiers": {}}
            for (tier, walker), (fn, steps) in calls.items():
                case["tiers"].setdefault(tier, {})[walker] = {
                    "ns_per_page": best[(tier, walker)] / n * 1e9,
                    "calls_per_page": None if steps is None else steps / n}
            res["cases"].append(case)
            if progress:
                print(f"  {shape}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return res


def _cell(x, fmt):
    return "-" if x is None else format(x, fmt)


def table(res):
    hdr = (f"{'shape':<10} {'tier':<11} {'callbacks ns/pg':>15} {'calls/pg':>8} "
           f"{'pt_range ns/pg':>14} {'steps/pg':>8} {'pt/cb':>7}")
    lines = [hdr, "-" * len(hdr)]
    for c in res["cases"]:
        for tier in TIERS:
            t = c["tiers"].get(tier)
            if not t:
                continue
            cb, pt = t["callbacks"], t["pt_range"]
            lines.append(f"{c['shape']:<10} {tier:<11} {cb['ns_per_page']:>15.3f} "
                         f"{_cell(cb['calls_per_page'], '8.4f'):>8} {pt['ns_per_page']:>14.3f} "
                         f"{_cell(pt['calls_per_page'], '8.4f'):>8} "
                         f"{pt['ns_per_page'] / cb['ns_per_page']:>7.2f}")
        fl = c["floors_ns"]
        lines.append(f"{c['shape']:<10} {'[memory]':<11} {fl['memory']:>15.3f}   "
                     f"[py-call] {fl['py-call']:.3f} ns/page")
    return "\n".join(lines)


def targets(res):
    """[(label, value, target, met or None)]: value is the ratio, speedup or x floor."""
    cases = {c["shape"]: c for c in res["cases"]}
    out = []
    for label, tier, shape, kind, target in TARGETS:
        c = cases.get(shape)
        t = c["tiers"].get(tier) if c else None
        if not t:
            out.append((label, None, target, None))
            continue
        cb, pt = t["callbacks"]["ns_per_page"], t["pt_range"]["ns_per_page"]
        if kind == "ratio":
            v, met = pt / cb, pt / cb <= target
        elif kind == "speedup":
            v, met = cb / pt, cb / pt >= target
        else:
            v = pt / c["floors_ns"]["memory"]
            met = v <= target
        out.append((label, v, target, met))
    return out


def format_targets(rows):
    lines = [f"{'target':<56} {'value':>8}  met"]
    for label, v, target, met in rows:
        lines.append(f"{label:<56} {_cell(v, '8.2f'):>8}  "
                     f"{'-' if met is None else ('yes' if met else 'NO')}")
    return "\n".join(lines)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = res["cases"]
    fig, axes = plt.subplots(1, len(TIERS), figsize=(4 * len(TIERS), 4), sharey=True)
    for ax, tier in zip(axes, TIERS):
        shapes = [c["shape"] for c in cases if tier in c["tiers"]]
        x = np.arange(len(shapes))
        for off, w in ((-0.2, "callbacks"), (0.2, "pt_range")):
            ys = [c["tiers"][tier][w]["ns_per_page"] for c in cases if tier in c["tiers"]]
            ax.bar(x + off, ys, width=0.4, label=w)
        ax.set_xticks(x, shapes, rotation=30)
        ax.set_yscale("log")
        ax.set_title(tier)
    axes[0].set_ylabel("ns per 4 KiB page (log)")
    axes[0].legend()
    fig.suptitle(f"callbacks vs pt_range_walk, {res['mib']} MiB per shape")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mib", type=int, default=256, help="MiB per shape (default 256)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.05)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    p.add_argument("--json")
    p.add_argument("--plot")
    p.add_argument("--no-cimport", action="store_true", help="skip building the Cython examples")
    a = p.parse_args(argv)
    res = run(a.shapes, a.mib, a.rounds, a.min_time, cimport=not a.no_cimport)
    print(f"callbacks vs pt_range_walk: {a.mib} MiB per shape, best of {a.rounds} "
          f"interleaved rounds")
    print(table(res))
    print()
    rows = targets(res)
    print(format_targets(rows))
    res["targets"] = [dict(zip(("label", "value", "target", "met"), r)) for r in rows]
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    if a.plot:
        try:
            plot(res, a.plot)
        except ImportError:
            print("--plot needs matplotlib (the optional 'plot' extra)", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
