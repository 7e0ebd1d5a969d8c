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
The run ends with a summary (per tier, on the 4-level dense case at the
largest size: ns/page, the floor of its target, the ratio, the target and
whether it is met) and what each column means; stderr shows progress with
the time left.

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


# --- progress --------------------------------------------------------------------

def format_duration(seconds):
    """42 s, 3 min 05 s, 1 h 02 min."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta_seconds(elapsed_done, weight_done, weight_after, weight_current=0.0, in_current=0.0):
    """Seconds left: the finished steps' seconds per unit of weight, times the
    weight of the steps after the current one, plus what the current step
    should still take (never below zero).  None until a step has finished."""
    if weight_done <= 0 or elapsed_done <= 0:
        return None
    rate = elapsed_done / weight_done
    return rate * weight_after + max(0.0, rate * weight_current - in_current)


def format_progress(done, total, elapsed, eta, label="", width=20):
    """One progress line: a bar, done/total, time elapsed and time left."""
    filled = int(width * done / total) if total else width
    left = "estimating time left" if eta is None else f"about {format_duration(eta)} left"
    line = f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}  {format_duration(elapsed)} elapsed, {left}"
    return f"{line}  ({label})" if label else line


def step_weight(shape, size_gib):
    """Rough relative cost of one case, for the time-left estimate: a fixed part
    (worker start, calibrated samples) and, with PTE tables, a part that grows
    with the range (building the model, walks longer than --min-time)."""
    if shape == "thp":                  # the kernel floor faults in a real THP mapping of up to 8 GiB
        return 1.0 + 2.0 * min(size_gib, KERNEL_CAP["thp"] / GiB)
    return 1.0 + (size_gib / 150 if shape in ("dense", "sparse") else 0.0)


class Progress:
    """done/total, elapsed and time left on stderr: one line rewritten in place
    (and refreshed while a step runs) when stderr is a terminal, else one plain
    line per step."""

    def __init__(self, steps, stream=None, clock=time.perf_counter):
        self.steps = list(steps)                   # [(label, weight)]
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.clock = clock
        self.t0 = self.t_step = clock()
        self.i = 0

    def line(self, now=None):
        now = self.clock() if now is None else now
        ws = [w for _, w in self.steps]
        i = min(self.i, len(ws))
        eta = eta_seconds(self.t_step - self.t0, sum(ws[:i]), sum(ws[i + 1:]),
                          ws[i] if i < len(ws) else 0.0, now - self.t_step)
        label = self.steps[i][0] if i < len(ws) else ""
        return format_progress(i, len(ws), now - self.t0, eta, label)

    def start(self, i):
        self.i, self.t_step = i, self.clock()
        self._show()

    def tick(self):
        if self.tty:
            self._show()

    def _show(self):
        if self.tty:
            import shutil
            cols = shutil.get_terminal_size((100, 20)).columns
            self.stream.write("\r\033[K" + self.line()[:cols - 1])
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self):
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


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


def in_worker(target, *args, tick=None):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while True:
        try:
            res = q.get(timeout=1.0)
            break
        except Exception:                          # queue.Empty: is the worker still there?
            if tick is not None:
                tick()
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
    hdr = (f"{'lv':>2} {'shape':<6} {'GiB':>6} {'tier or [floor]':<21} {'ns/page':>9} {'min-max':>15} "
           f"{'Mpages/s':>9} {'floor':<14} {'x floor':>7}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in results:
        for tier, m in r["tiers"].items():
            fname = floor_for(r, tier)
            f = r["floors"].get(fname, {})
            ratio = m["median"] / f["median"] if "median" in f else float("nan")
            lines.append(f"{r['levels']:>2} {r['shape']:<6} {r['size_gib']:>6g} {tier:<21} {m['median']:>9.3f} "
                         f"{m['min']:>7.3f}-{m['max']:<7.3f} {1e3 / m['median']:>9.1f} {fname:<14} {ratio:>7.2f}")
        for fname, f in r["floors"].items():
            if "median" in f:
                lines.append(f"{r['levels']:>2} {r['shape']:<6} {r['size_gib']:>6g} {'[' + fname + ']':<21} "
                             f"{f['median']:>9.3f} {f['min']:>7.3f}-{f['max']:<7.3f}")
            else:
                lines.append(f"{r['levels']:>2} {r['shape']:<6} {r['size_gib']:>6g} [{fname}] {f.get('skipped', '')}")
    return "\n".join(lines)


# --- the summary at the end of a run ----------------------------------------------------

# What the summary shows per row: (label, key in the case's "tiers" or
# "floors", the floor it is compared to, the target for x floor (None: no
# target), the shapes the target is stated for).  The targets are those of
# benchmarks/README.md ("Targets").
HEADLINE = (
    ("inline", "inline", "memory", 2.0, ("dense",)),
    ("c-pmd", "c-pmd", "kernel-mincore", 1.0, SHAPES),
    ("c-slot", "c-slot", "kernel-mincore", 1.0, SHAPES),
    ("lowlevel", "lowlevel", "kernel-mincore", None, ()),
    ("batch", "batch", "memory", 10.0, ("dense", "sparse")),
    ("python", "python", "py-call", 1.2, ("dense", "sparse")),
    ("MM.mincore", "model-mincore", "kernel-mincore", 1.0, SHAPES),
    ("MM.pagemap", "model-pagemap", "kernel-pagemap_scan", 1.0, SHAPES),
)
THREADS_TARGET = 1.7          # two threads at least this many times one thread (higher is better)
SPARSE_SPACE_TARGET = 2.0     # the whole space at most this many times its tables alone (lower is better)

COLUMNS = """\
Columns
  tier        how the op is called, fastest first (listed at the top of
              benchmarks/run.py and in benchmarks/README.md); MM.mincore and
              MM.pagemap are the process model's own answers, not a walk
  ns/page     median nanoseconds per 4 KiB page of the walked range (lower is better);
              batch and python walk at most the first 1 GiB of a range
  min-max     the fastest and the slowest sample
  Mpages/s    millions of pages per second, 1000 / ns/page (higher is better)
  floor       a reference measured in the same run: memory (reading as many
              table entries with numpy), py-call (one Python call with 4
              arguments from C), kernel-* (this machine's kernel over a real
              mapping of the same shape, capped in size: see "(at N GiB)").
              The full table divides each tier by one floor (kernel mincore
              for the C tiers when measured, else memory; py-call for
              python); the summary uses the floor its target is stated against
  x floor     ns/page / the floor's ns/page: 1.00 = as fast as the floor,
              lower is better
  target      the goal for x floor (benchmarks/README.md, "Targets"); met:
              yes when x floor <= target in the summary's case
  all cases   in how many rows of the full table (the shapes the target is
              stated for, every size and paging level) the target is met
  [name]      a row of the full table giving a floor's own ns/page"""


def format_size(gib):
    """A range in GiB as 16 MiB, 1 GiB, 256 GiB, 1 TiB."""
    for unit, scale in (("TiB", 1024), ("GiB", 1), ("MiB", 1 / 1024)):
        if gib >= scale:
            return f"{gib / scale:g} {unit}"
    return f"{gib * 1024 * 1024:g} KiB"


def _median(res, key):
    m = res["tiers"].get(key) or res["floors"].get(key) or {}
    return m.get("median")


def headline_case(results):
    """(levels, shape, size_gib) of the case the summary reports: 4-level if
    run (else the first level), dense if run (every page costs a callback
    there), the largest size (past the caches)."""
    levels = sorted({r["levels"] for r in results})
    lv = 4 if 4 in levels else levels[0]
    shapes = [r["shape"] for r in results]
    shape = "dense" if "dense" in shapes else shapes[0]
    size = max(r["size_gib"] for r in results if r["levels"] == lv and r["shape"] == shape)
    return lv, shape, size


def headline_rows(results):
    """One dict per HEADLINE row measured in this run: the figure in the
    summary's case (or the largest size of that level and shape where it was
    measured: MM.mincore/pagemap stop at 4 GiB), its floor, the ratio, the
    target, whether it is met there and in how many rows of the full table."""
    lv, shape, _ = headline_case(results)
    rows = []
    for label, key, floor, target, shapes in HEADLINE:
        here = [r for r in results if r["levels"] == lv and r["shape"] == shape
                and _median(r, key) is not None and _median(r, floor) is not None]
        if not here:
            continue
        r = max(here, key=lambda r: r["size_gib"])
        ns, fns = _median(r, key), _median(r, floor)
        ratio = ns / fns if fns else float("inf")
        walked = min(r["size_gib"], SLOW_TIER_CAP / GiB) if key in ("batch", "python") else r["size_gib"]
        floor_gib = r["floors"][floor].get("measured_gib")      # a kernel floor's capped mapping
        row = {"label": label, "levels": lv, "shape": shape, "size_gib": r["size_gib"], "walked_gib": walked,
               "ns": ns, "floor": floor, "floor_ns": fns, "floor_gib": floor_gib, "ratio": ratio,
               "target": target, "met": None if target is None else ratio <= target, "all": None}
        if target is not None:
            ratios = [_median(c, key) / _median(c, floor) for c in results if c["shape"] in shapes
                      and _median(c, key) is not None and _median(c, floor)]
            row["all"] = (sum(x <= target for x in ratios), len(ratios), shapes)
        rows.append(row)
    return rows


def extra_lines(extra):
    """The threads and sparse-address-space cases, each with its direction and target."""
    lines = []
    threads = sorted((v for k, v in extra.items() if k.startswith("threads_")), key=lambda v: v["levels"])
    if threads:
        lines.append(f"Two threads walking disjoint halves vs one thread walking all of it "
                     f"(C tier, {format_size(threads[0]['size_gib'])} dense):")
        for th in threads:
            met = "met" if th["speedup"] >= THREADS_TARGET else "missed"
            lines.append(f"  {th['levels']}-level: speed-up {th['speedup']:.2f}x (higher is better; "
                         f"target >= {THREADS_TARGET:g}x: {met})")
            lines.append(f"           the machine's own two-thread speed-up for memory-bound work, "
                         f"measured beside it: {th['memory_speedup']:.2f}x ({th['cpus']} CPUs)")
    sparse = sorted((v for k, v in extra.items() if k.startswith("sparse_space_")), key=lambda v: v["levels"])
    if sparse:
        lines.append(f"The whole user address space holding {sparse[0]['pages']:,} scattered pages "
                     f"vs walking only their tables:")
        for sp in sparse:
            met = "met" if sp["ratio"] <= SPARSE_SPACE_TARGET else "missed"
            lines.append(f"  {sp['levels']}-level: {sp['ratio']:.2f}x the cost (lower is better; "
                         f"target <= {SPARSE_SPACE_TARGET:g}x: {met})")
    return lines


def format_headline(rows, extra=None):
    """The summary printed at the end of a run."""
    if not rows:
        return "Summary: no case measured"
    r0 = rows[0]
    out = [f"Summary: {r0['levels']}-level {r0['shape']}, {format_size(r0['size_gib'])} "
           f"(the largest size of this run; the full table above has every shape and size)"]
    hdr = (f"{'tier':<11} {'ns/page':>8}  {'floor':<30} {'ns/page':>8}  {'x floor':>7}  "
           f"{'target':<7} {'met':<4} all cases")
    out += [hdr, "-" * len(hdr)]
    for r in rows:
        tier = r["label"]
        if r["size_gib"] != r0["size_gib"] or r["walked_gib"] != r["size_gib"]:
            tier += "*"
        floor = r["floor"]
        if r["floor_gib"] is not None and r["floor_gib"] != r["size_gib"]:
            floor += f" (at {format_size(r['floor_gib'])})"
        target = "-" if r["target"] is None else f"<= {r['target']:g}x"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "no")
        if r["all"] is None:
            everywhere = "-"
        else:
            n, total, shapes = r["all"]
            where = "every shape" if set(shapes) >= set(SHAPES) else " and ".join(shapes)
            everywhere = f"{n} of {total} ({where})"
        out.append(f"{tier:<11} {r['ns']:>8.3f}  {floor:<30} {r['floor_ns']:>8.3f}  {r['ratio']:>6.2f}x  "
                   f"{target:<7} {met:<4} {everywhere}")
    starred = [r for r in rows if r["size_gib"] != r0["size_gib"] or r["walked_gib"] != r["size_gib"]]
    for r in starred:
        if r["walked_gib"] != r["size_gib"]:
            out.append(f"  * {r['label']}: the first {format_size(r['walked_gib'])} of the range")
        else:
            out.append(f"  * {r['label']}: at {format_size(r['size_gib'])}, the largest size where it is measured")
    if extra:
        out.append("")
        out += extra_lines(extra)
    out += ["", COLUMNS]
    return "\n".join(out)


# --- the plot -------------------------------------------------------------------------------

TIER_ORDER = ("inline", "c-pmd", "c-slot", "lowlevel", "batch", "python")
SHAPE_TITLES = {"dense": "dense (every 4 KiB page)", "sparse": "sparse (1 page per 2 MiB)",
                "thp": "thp (2 MiB leaves)", "empty": "empty (no tables)"}
LEVEL_STYLES = {4: ("-", "o"), 5: ("--", "s")}
FLOOR_STYLES = (("memory", "memory floor"), ("py-call", "py-call floor"), ("kernel-mincore", "kernel mincore"))
FLOOR_COLOUR = "0.55"


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(results, path):
    """ns/page by size, one panel per shape: one colour per tier, one line
    style per paging level, the floors as wide pale grey bands labelled in
    place, the legend beside the panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    shapes = [s for s in SHAPES if any(r["shape"] == s for r in results)]
    levels = sorted({r["levels"] for r in results})
    sizes = sorted({r["size_gib"] for r in results})
    colours = dict(zip(TIER_ORDER, plt.get_cmap("tab10").colors))
    ncols = 2 if len(shapes) > 2 else len(shapes)
    nrows = -(-len(shapes) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 1.8, 3.6 * nrows + 0.6), sharey="row",
                             squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(shapes):]:
        ax.set_visible(False)
    floor_lv = levels[0]
    for ax, shape in zip(axes, shapes):
        rows = [r for r in results if r["shape"] == shape]
        for name, label in FLOOR_STYLES:                 # the floors underneath
            pts = sorted((r["size_gib"], r["floors"][name]["median"]) for r in rows
                         if r["levels"] == floor_lv and "median" in r["floors"].get(name, {}))
            if pts:
                if len(pts) == 1:                         # one size: a short band around the point
                    pts = [(pts[0][0] / 1.3, pts[0][1]), (pts[0][0] * 1.3, pts[0][1])]
                ax.plot(*zip(*pts), color=FLOOR_COLOUR, lw=6, alpha=0.35, solid_capstyle="butt", zorder=1)
                ax.annotate(label, xy=pts[-1], xytext=(0, 5), textcoords="offset points", fontsize=7,
                            color="0.3", ha="right", va="bottom", zorder=3,
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
        for tier in TIER_ORDER:
            for lv in levels:
                ls, mk = LEVEL_STYLES.get(lv, (":", "^"))
                pts = sorted((r["size_gib"], r["tiers"][tier]["median"]) for r in rows
                             if r["levels"] == lv and tier in r["tiers"])
                if pts:
                    ax.plot(*zip(*pts), color=colours[tier], linestyle=ls, marker=mk, markersize=4,
                            lw=1.5, zorder=2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_size(v)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(sizes[0] / 1.6, sizes[-1] * 1.6)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_title(SHAPE_TITLES[shape], fontsize=10)
        ax.set_xlabel("mapped range")
        ax.grid(True, which="major", color="0.92", lw=0.6, zorder=0)
    for k in range(0, len(shapes), ncols):        # each row of panels shares its y axis
        axes[k].set_ylabel("ns per 4 KiB page\n(lower is better)")
        lo, hi = axes[k].get_ylim()
        axes[k].set_ylim(lo, hi * 2.5)             # room for the top floor's label

    handles, labels, headers = [], [], []

    def header(text):
        headers.append(len(labels))
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(text)

    header("tier (colour)")
    for tier in TIER_ORDER:
        if any(tier in r["tiers"] for r in results):
            handles.append(Line2D([], [], color=colours[tier], lw=2.5))
            labels.append(tier)
    header("paging (line style)")
    for lv in levels:
        ls, mk = LEVEL_STYLES.get(lv, (":", "^"))
        handles.append(Line2D([], [], color="0.15", linestyle=ls, marker=mk, markersize=4))
        labels.append(f"{lv}-level")
    header("floors, same run")
    handles.append(Line2D([], [], color=FLOOR_COLOUR, lw=6, alpha=0.35, solid_capstyle="butt"))
    labels.append(f"grey bands, labelled\n({floor_lv}-level cases)")
    fig.suptitle("pgwalk: what one callback per page costs, by tier (median)", fontsize=11)
    fig.text(0.01, 0.005, "batch and python walk the first 1 GiB of each range; the kernel's real mapping "
             "is capped in size (benchmarks/README.md)", fontsize=7, color="0.35", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    legend = fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                        frameon=False, handlelength=3)
    for k in headers:
        legend.get_texts()[k].set_fontweight("bold")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


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
    ap.add_argument("--plot", help="write a PNG of ns/page by tier and size here (needs matplotlib: "
                                   "pip install 'pgwalk[plot]')")
    a = ap.parse_args(argv)
    # Everything that would make the run's end fail is checked before it starts.
    if a.plot and not have_matplotlib():
        ap.error("--plot needs matplotlib, which is not installed: pip install 'pgwalk[plot]' "
                 "(the optional 'plot' extra), or run without --plot")
    for opt, path in (("--json", a.json), ("--plot", a.plot)):
        if path and not Path(path).resolve().parent.is_dir():
            ap.error(f"{opt} {path}: the directory {Path(path).resolve().parent} does not exist")
    try:
        import pgwalk  # noqa: F401
    except ImportError as e:
        sys.exit(f"run.py: cannot import pgwalk ({e}): build this checkout in place "
                 f"(python setup.py build_ext --inplace) or install it (python -m pip install .)")
    sizes = a.sizes or ([1, 4] if a.quick else [1, 16, 256, 1024])
    samples = a.samples or (3 if a.quick else 5)
    min_time = a.min_time or (0.02 if a.quick else 0.1)
    cases = [(lv, sh, int(s * GiB)) for lv in a.levels for sh in a.shapes for s in sizes]
    extras = [] if a.no_extra else a.levels
    steps = [(f"{lv}-level {sh} {format_size(size / GiB)}", step_weight(sh, size / GiB))
             for lv, sh, size in cases]
    for lv in extras:
        steps += [(f"{lv}-level two threads", 2.0), (f"{lv}-level sparse address space", 1.0)]
    bar = Progress(steps)
    results = []
    t0 = time.perf_counter()
    for i, (lv, sh, size) in enumerate(cases):
        bar.start(i)
        results.append(in_worker(run_case, lv, sh, size, samples, min_time, tick=bar.tick))
    extra = {}
    k = len(cases)
    for lv in extras:
        bar.start(k)
        extra[f"threads_{lv}"] = in_worker(run_threads, lv, samples, min_time, tick=bar.tick)
        bar.start(k + 1)
        extra[f"sparse_space_{lv}"] = in_worker(run_sparse_space, lv, samples, min_time, tick=bar.tick)
        k += 2
    bar.finish()
    print("All cases (median ns per 4 KiB page; the columns are explained below the summary)")
    print(table(results))
    print()
    print(format_headline(headline_rows(results), extra))
    print(f"\ntotal {format_duration(time.perf_counter() - t0)}")
    out = {"results": results, "extra": extra, "argv": sys.argv[1:], "python": sys.version,
           "machine": {k: getattr(os.uname(), k) for k in ("sysname", "release", "machine")}, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
        print(f"results written to {a.json}")
    if a.plot:
        plot(results, a.plot)
        print(f"plot written to {a.plot}")
    return out


if __name__ == "__main__":
    main()
