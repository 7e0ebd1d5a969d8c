"""pgwalk's benchmark suite: what one callback per entry costs, tier by tier.

    python benchmarks/run.py [--quick] [--json out.json] [--plot out.png]
                             [--levels 4 5] [--sizes 1 16 256 1024]

For every paging mode, shape (dense 4K, sparse: one page per 2 MiB, THP, and
empty) and size (GiB of mapped range), it builds a model mm in C, then times
each callback tier over it and prints ns per entry, entries per second and
the ratio to the floor measured in the same run.  Protocol (our own harness,
see benchmarks/README.md): each case runs in its own worker process; samples
are calibrated to last at least --min-time; one warm-up sample is dropped;
the median and min-max of --samples samples are reported.

Every figure is per page (4 KiB) of the walked range, like the kernel's.

Tiers (the op is mincore: one byte per page; THPs are not split)
  inline      MincoreOp's pte_entry inlined in the walker's PTE loop
  c-pmd       the built-in MincoreOp in the kernel's own shape (mm/mincore.c): its
              pmd_entry reads the PTE table, one indirect call per table
  c-slot      the built-in MincoreOp, through the pte_entry slot (one call per page)
  lowlevel    the same pte_entry in C loaded through ctypes (pgwalk.LowLevelCallable)
  batch       pgwalk.batch with a numpy count_nonzero body (one call per table)
  python      a plain Python pte_entry with an empty body, one call per entry
Floors
  memory      np.count_nonzero over the same number of table entries
  py-call     a Python function with 4 arguments called from C
  kernel      mincore(2), /proc/self/pagemap and the PAGEMAP_SCAN ioctl over a
              real mapping of the same shape (skipped with a reason when absent)
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # no idle BLAS threads spinning beside the walks

import argparse
import ctypes
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
if list((_ROOT / "pgwalk").rglob("_core.*.so")):      # this checkout, when built in place
    sys.path.insert(0, str(_ROOT))                       # (else the installed pgwalk)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))

GiB = 1 << 30
MiB = 1 << 20
PAGE = 4096
BASE = 0x100000000000          # 16 TiB: room for 1 TiB ranges in 4- and 5-level
SHAPES = ("dense", "sparse", "thp", "empty")
SLOW_TIER_CAP = 1 * GiB        # python and batch tiers walk at most this much of the range


def progress(msg):
    sys.stderr.write("\r\033[K" + msg)
    sys.stderr.flush()


# --- timing --------------------------------------------------------------------

def measure(fn, entries, samples, min_time):
    """Calibrate loops so one sample lasts >= min_time, drop one warm-up
    sample, return ns/entry (median, min, max) over ``samples`` samples."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(min_time / one))
    out = []
    for _ in range(samples + 1):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        out.append((time.perf_counter() - t0) / loops / max(entries, 1) * 1e9)
    out = out[1:]
    return {"median": statistics.median(out), "min": min(out), "max": max(out),
            "loops": loops, "samples": samples}


# --- building the model -----------------------------------------------------------

def build_mm(levels, shape, size):
    import pgwalk
    from pgwalk._builtin import FillOp, map_thp_range
    from pgwalk.internal import walk_page_range_mm
    mm = pgwalk.MM(levels)
    mm.add_vma(BASE, BASE + size)
    if shape in ("dense", "sparse"):
        op = FillOp(stride=PAGE if shape == "dense" else 2 * MiB)
        with mm.mmap_read_lock():
            rc = walk_page_range_mm(mm, BASE, BASE + size, pgwalk.MMWalkOps(install_pte=op.install_pte))
        assert rc == 0, rc
    elif shape == "thp":
        map_thp_range(mm, BASE, BASE + size)
    return mm


def pages(size):
    return size // PAGE


# --- the C function for the low-level tier ------------------------------------------

C_SOURCE = r"""
#include <stdint.h>
struct mc { uint8_t *vec; uint64_t start, n; };
int mincore_pte(uint64_t *e, uint64_t a, uint64_t nx, void *w, void *ctx)
{ struct mc *s = ctx; uint64_t i = (a - s->start) >> 12; if (i < s->n) s->vec[i] = (*e & 0x101) != 0; return 0; }
"""


class McState(ctypes.Structure):
    _fields_ = [("vec", ctypes.c_void_p), ("start", ctypes.c_uint64), ("n", ctypes.c_uint64)]


def load_c_counter(tmpdir):
    import shutil
    import subprocess
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = Path(tmpdir) / "c.c"
    src.write_text(C_SOURCE)
    so = Path(tmpdir) / "libc.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    lib = ctypes.CDLL(str(so))
    f = lib.mincore_pte
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64, ctypes.c_uint64,
                  ctypes.c_void_p, ctypes.c_void_p]
    return f


# --- one case, in a worker process ---------------------------------------------------

def run_case(levels, shape, size, samples, min_time, q):
    import pgwalk
    from pgwalk.walker import _core
    from pgwalk._builtin import MincoreOp, call_python_4
    res = {"levels": levels, "shape": shape, "size_gib": size / GiB, "tiers": {}, "floors": {}}
    t0 = time.perf_counter()
    mm = build_mm(levels, shape, size)
    res["build_s"] = time.perf_counter() - t0
    res["tables"] = mm.nr_tables
    n = pages(size)
    res["pages"] = n
    end = BASE + size
    op = MincoreOp(BASE, n)
    slot_ops = pgwalk.MMWalkOps(pte_entry=op.pte_entry, pmd_entry=op.pmd_entry, pte_hole=op.pte_hole)
    tiers = res["tiers"]
    with mm.mmap_read_lock():
        tiers["c-slot"] = measure(lambda: pgwalk.walk_page_range(mm, BASE, end, slot_ops), n, samples, min_time)
        op3 = MincoreOp(BASE, n)
        kops = pgwalk.MMWalkOps(pmd_entry=op3.pte_range, pte_hole=op3.pte_hole)
        tiers["c-pmd"] = measure(lambda: pgwalk.walk_page_range(mm, BASE, end, kops), n, samples, min_time)
        assert (op3.vec == op.vec).all(), "kernel-shaped and per-PTE ops disagree"
        op2 = MincoreOp(BASE, n)          # its pmd_entry/pte_hole slots and the inlined PTE op share op2.vec
        ops2 = pgwalk.MMWalkOps(pte_entry=op2.pte_entry, pmd_entry=op2.pmd_entry, pte_hole=op2.pte_hole)
        tiers["inline"] = measure(lambda: _core._walk_inline_mincore(mm, BASE, end, ops2, op2.vec),
                                  n, samples, min_time)
        assert (op2.vec == op.vec).all(), "inline and slot ops disagree"
        with tempfile.TemporaryDirectory() as d:
            f = load_c_counter(d)
            if f is not None:
                vec = np.zeros(n, dtype=np.uint8)
                st = McState(vec.ctypes.data, BASE, n)
                llc_ops = pgwalk.MMWalkOps(pte_entry=pgwalk.LowLevelCallable(f, user_data=st),
                                           pmd_entry=op.pmd_entry, pte_hole=op.pte_hole)
                tiers["lowlevel"] = measure(lambda: pgwalk.walk_page_range(mm, BASE, end, llc_ops),
                                            n, samples, min_time)
        small = min(size, SLOW_TIER_CAP)
        bops = pgwalk.MMWalkOps(pte_entry=pgwalk.batch(lambda entries, a, nx, w: np.count_nonzero(entries) * 0),
                                pmd_entry=op.pmd_entry, pte_hole=op.pte_hole)
        tiers["batch"] = measure(lambda: pgwalk.walk_page_range(mm, BASE, BASE + small, bops),
                                 pages(small), samples, min_time)
        pops = pgwalk.MMWalkOps(pte_entry=lambda e, a, nx, w: 0, pmd_entry=op.pmd_entry, pte_hole=op.pte_hole)
        tiers["python"] = measure(lambda: pgwalk.walk_page_range(mm, BASE, BASE + small, pops),
                                  pages(small), max(3, samples // 2), min_time)
        st = pgwalk.WalkStats()
        pgwalk.walk_page_range(mm, BASE, end, slot_ops, stats=st)
        res["indirect_calls_per_walk"] = st.indirect_calls
        res["walk_stats"] = {"calls": st.calls, "tables": st.tables, "entries": st.entries}
    fl = res["floors"]
    mem = np.ones(mm.nr_tables * 512, dtype=np.uint64)        # as much memory as the tables
    fl["memory"] = measure(lambda: np.count_nonzero(mem), n, samples, min_time)
    fl["py-call"] = measure(lambda: call_python_4(lambda a, b, c, d: 0, 100000), 100000, samples, min_time)
    fl.update(kernel_floors(shape, size, samples, min_time))
    if hasattr(mm, "mincore") and size <= 4 * GiB:
        for name, call in (("model-mincore", lambda: mm.mincore(BASE, size)),
                           ("model-pagemap", lambda: mm.pagemap(BASE, end))):
            try:
                fl[name] = measure(call, n, samples, min_time)
            except Exception as e:                  # the process model may not serve this shape
                fl[name] = {"skipped": f"{type(e).__name__}: {e}"}
    q.put(res)


# --- the kernel's own walkers over a real mapping --------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
KERNEL_CAP = {"dense": 1 * GiB, "sparse": 64 * GiB, "thp": 8 * GiB, "empty": 1024 * GiB}
PAGEMAP_SCAN = 0xC0606610          # _IOWR('f', 16, struct pm_scan_arg)
PAGE_IS_PRESENT = 1 << 3


class PmScanArg(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


def kernel_floors(shape, size, samples, min_time):
    out = {}
    size = min(size, KERNEL_CAP[shape])
    prot, flags = 3, 0x02 | 0x20 | 0x4000          # RW, PRIVATE|ANONYMOUS|NORESERVE
    addr = libc.mmap(None, size + 2 * MiB, prot, flags, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        return {"kernel": {"skipped": f"mmap failed: errno {ctypes.get_errno()}"}}
    a = (addr + 2 * MiB - 1) & ~(2 * MiB - 1)
    try:
        if shape == "thp":
            libc.madvise(a, size, 14)                  # MADV_HUGEPAGE
        step = {"dense": PAGE, "sparse": 2 * MiB, "thp": 2 * MiB, "empty": 0}[shape]
        if step:
            arr = np.frombuffer((ctypes.c_char * size).from_address(a), dtype=np.uint8)
            arr[::step] = 1                            # touch: fault the pages in
        pages = size // PAGE
        vec = (ctypes.c_ubyte * pages)()
        out["kernel-mincore"] = measure(lambda: libc.mincore(a, size, vec), pages, samples, min_time)
        if shape == "thp" and vec[0] == 0:
            out["kernel-mincore"]["note"] = "THP not granted"
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            cap = min(pages, 1 << 18)
            out["kernel-pagemap"] = measure(lambda: os.pread(fd, cap * 8, (a // PAGE) * 8), cap,
                                            samples, min_time)
            regions = (ctypes.c_uint64 * (3 * 4096))()
            arg = PmScanArg(size=ctypes.sizeof(PmScanArg), start=a, end=a + size,
                            vec=ctypes.addressof(regions), vec_len=4096,
                            category_anyof_mask=PAGE_IS_PRESENT, return_mask=PAGE_IS_PRESENT)
            r = libc.ioctl(fd, PAGEMAP_SCAN, ctypes.byref(arg))
            if r < 0:
                out["kernel-pagemap_scan"] = {"skipped": f"PAGEMAP_SCAN: errno {ctypes.get_errno()}"}
            else:
                out["kernel-pagemap_scan"] = measure(
                    lambda: libc.ioctl(fd, PAGEMAP_SCAN, ctypes.byref(arg)), pages, samples, min_time)
        finally:
            os.close(fd)
        for v in out.values():
            v.setdefault("measured_gib", size / GiB)
    finally:
        libc.munmap(addr, size + 2 * MiB)
    return out


# --- cross-case measurements -----------------------------------------------------------

def run_threads(levels, samples, min_time, q):
    """Two threads walking disjoint halves vs one thread walking both (C tier)."""
    import threading
    import pgwalk
    from pgwalk._builtin import MincoreOp
    size = 16 * GiB
    mm = build_mm(levels, "dense", size)
    half = BASE + size // 2
    ops = []
    for lo in (BASE, half):
        op = MincoreOp(lo, pages(size // 2))
        ops.append(pgwalk.MMWalkOps(pte_entry=op.pte_entry, pmd_entry=op.pmd_entry, pte_hole=op.pte_hole))
    whole = MincoreOp(BASE, pages(size))
    whole_ops = pgwalk.MMWalkOps(pte_entry=whole.pte_entry, pmd_entry=whole.pmd_entry, pte_hole=whole.pte_hole)

    def one():
        with mm.mmap_read_lock():
            pgwalk.walk_page_range(mm, BASE, BASE + size, whole_ops)

    def part(k, lo, hi):
        with mm.mmap_read_lock():
            pgwalk.walk_page_range(mm, lo, hi, ops[k])

    def two():
        ts = [threading.Thread(target=part, args=(0, BASE, half)),
              threading.Thread(target=part, args=(1, half, BASE + size))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    # The machine's own two-thread floor for memory-bound work, same run: a
    # GIL-free numpy reduction over as much memory as the tables, in halves.
    mem = np.ones(mm.nr_tables * 512, dtype=np.uint64)
    halves = (mem[: mem.size // 2], mem[mem.size // 2:])

    def mem_one():
        mem.sum()

    def mem_two():
        ts = [threading.Thread(target=h.sum) for h in halves]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    n = pages(size)
    t1 = measure(one, n, samples, min_time)
    t2 = measure(two, n, samples, min_time)
    m1 = measure(mem_one, n, samples, min_time)
    m2 = measure(mem_two, n, samples, min_time)
    q.put({"levels": levels, "one_thread": t1, "two_threads": t2, "size_gib": size / GiB,
           "speedup": t1["median"] / t2["median"], "memory_speedup": m1["median"] / m2["median"],
           "cpus": os.cpu_count(), "loadavg": os.getloadavg()})


def run_sparse_space(levels, samples, min_time, q):
    """1000 scattered pages over the whole user address space, walked whole,
    against the same 1000 one-page tables packed side by side and walked as
    one range: the cost must follow populated tables, not the range."""
    import random
    import pgwalk
    from pgwalk._builtin import MincoreOp
    mm = pgwalk.MM(levels)
    rng = random.Random(7)
    top = mm.task_size
    pages_ = sorted({rng.randrange(GiB, top - GiB) & ~(2 * MiB - 1) for _ in range(1000)})
    for p in pages_:
        mm.add_vma(p, p + PAGE)
        mm.map(p)
    packed = pgwalk.MM(levels)
    packed.add_vma(BASE, BASE + len(pages_) * 2 * MiB)
    for i in range(len(pages_)):
        packed.map(BASE + i * 2 * MiB)
    op = MincoreOp(0, 1)                       # only the walk matters here, not the answer
    ops = pgwalk.MMWalkOps(pte_entry=op.pte_entry, pmd_entry=op.pmd_entry, pte_hole=op.pte_hole)
    with mm.mmap_read_lock(), packed.mmap_read_lock():
        w = measure(lambda: pgwalk.walk_page_range(mm, 0, top, ops), len(pages_), samples, min_time)
        t = measure(lambda: pgwalk.walk_page_range(packed, BASE, BASE + len(pages_) * 2 * MiB, ops),
                    len(pages_), samples, min_time)
    q.put({"levels": levels, "pages": len(pages_), "whole_space": w, "tables_only": t,
           "ratio": w["median"] / t["median"], "vmas": len(pages_)})


def in_worker(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while True:
        try:
            res = q.get(timeout=1.0)
            break
        except Exception:                          # queue.Empty: is the worker still there?
            if not p.is_alive():
                raise RuntimeError(f"benchmark worker {target.__name__}{args} died "
                                   f"(exit code {p.exitcode})") from None
    p.join()
    return res


# --- reporting ---------------------------------------------------------------------------

def floor_for(res, tier):
    if tier in ("python",):
        return "py-call"
    if tier == "batch":
        return "memory"
    return "kernel-mincore" if "median" in res["floors"].get("kernel-mincore", {}) else "memory"


def table(results):
    lines = []
    hdr = f"{'lv':>2} {'shape':<6} {'GiB':>6} {'tier':<10} {'ns/page':>9} {'min-max':>15} {'Mpages/s':>11} {'floor':<15} {'x floor':>8}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in results:
        for tier, m in r["tiers"].items():
            fname = floor_for(r, tier)
            f = r["floors"].get(fname, {})
            ratio = m["median"] / f["median"] if "median" in f else float("nan")
            lines.append(f"{r['levels']:>2} {r['shape']:<6} {r['size_gib']:>6g} {tier:<10} {m['median']:>9.3f} "
                         f"{m['min']:>7.3f}-{m['max']:<7.3f} {1e3 / m['median']:>11.1f} {fname:<15} {ratio:>8.2f}")
        for fname, f in r["floors"].items():
            if "median" in f:
                lines.append(f"{r['levels']:>2} {r['shape']:<6} {r['size_gib']:>6g} {'[' + fname + ']':<26} "
                             f"{f['median']:>9.3f} {f['min']:>7.3f}-{f['max']:<7.3f}")
            else:
                lines.append(f"{r['levels']:>2} {r['shape']:<6} {r['size_gib']:>6g} [{fname}] {f.get('skipped', '')}")
    return "\n".join(lines)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install 'pgwalk[plot]')", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(SHAPES), figsize=(4 * len(SHAPES), 4), sharey=True)
    for ax, shape in zip(axes, SHAPES):
        for tier in ("inline", "c-pmd", "c-slot", "lowlevel", "batch", "python"):
            for lv, style in ((4, "-o"), (5, "--s")):
                pts = [(r["size_gib"], r["tiers"][tier]["median"]) for r in results
                       if r["shape"] == shape and r["levels"] == lv and tier in r["tiers"]]
                if pts:
                    xs, ys = zip(*sorted(pts))
                    ax.plot(xs, ys, style, label=f"{tier} ({lv}-level)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(shape)
        ax.set_xlabel("mapped range (GiB)")
    axes[0].set_ylabel("ns per page")
    # the tiers' legend, taken from a panel that has lines (a quick run may
    # leave the last one empty)
    legend = next((ax.get_legend_handles_labels() for ax in axes
                   if ax.get_legend_handles_labels()[0]), None)
    if legend is not None:
        axes[-1].legend(*legend, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a one-minute run: small sizes, fewer samples")
    ap.add_argument("--levels", type=int, nargs="+", default=[4, 5])
    ap.add_argument("--sizes", type=float, nargs="+", help="GiB of mapped range")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    ap.add_argument("--samples", type=int)
    ap.add_argument("--min-time", type=float)
    ap.add_argument("--no-extra", action="store_true", help="skip the threads and sparse-space cases")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--plot", help="write a PNG of ns/page by tier and size here")
    a = ap.parse_args(argv)
    sizes = a.sizes or ([1, 4] if a.quick else [1, 16, 256, 1024])
    samples = a.samples or (3 if a.quick else 5)
    min_time = a.min_time or (0.02 if a.quick else 0.1)
    cases = [(lv, sh, int(s * GiB)) for lv in a.levels for sh in a.shapes for s in sizes]
    results = []
    t0 = time.perf_counter()
    for i, (lv, sh, size) in enumerate(cases):
        progress(f"[{i + 1}/{len(cases)}] {lv}-level {sh} {size / GiB:g} GiB ({time.perf_counter() - t0:.0f} s)")
        results.append(in_worker(run_case, lv, sh, size, samples, min_time))
    extra = {}
    for lv in ([] if a.no_extra else a.levels):
        progress(f"two threads, sparse address space ({lv}-level)")
        extra[f"threads_{lv}"] = in_worker(run_threads, lv, samples, min_time)
        extra[f"sparse_space_{lv}"] = in_worker(run_sparse_space, lv, samples, min_time)
    progress("")
    sys.stderr.write("\r\033[K")
    print(table(results))
    print()
    for lv in ([] if a.no_extra else a.levels):
        th, sp = extra[f"threads_{lv}"], extra[f"sparse_space_{lv}"]
        print(f"{lv}-level: two threads on disjoint halves (C tier): {th['speedup']:.2f}x one thread "
              f"({th['cpus']} CPUs; a numpy sum over as much memory: {th['memory_speedup']:.2f}x)")
        print(f"{lv}-level: whole user space with {sp['pages']} scattered pages: "
              f"{sp['ratio']:.2f}x the cost of walking only their tables")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    out = {"results": results, "extra": extra, "argv": sys.argv[1:], "python": sys.version,
           "machine": {k: getattr(os.uname(), k) for k in ("sysname", "release", "machine")}, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    if a.plot:
        plot(results, a.plot)
    return out


if __name__ == "__main__":
    main()
