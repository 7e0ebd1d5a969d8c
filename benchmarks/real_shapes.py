"""Real shapes: the callback tiers of benchmarks/run.py over snapshots of
real processes (``pgwalk.MM.from_process``) instead of synthetic shapes.

    python benchmarks/real_shapes.py [--samples 5] [--min-time 0.2] [--json out.json]

Processes: this benchmark's own interpreter, a child with a 1 GiB THP heap
(MADV_HUGEPAGE, every page written) and the largest readable process running
(by resident pages, others than those two).  For each: how long the
snapshot took, its VMAs, mapped pages and THPs, then each tier's walk of
every VMA (VMAs above 64 GiB left out; one walk, with one MincoreOp, per
cluster of VMAs spanning at most 4 GiB), as ns per page of the VMAs walked
and ms per whole walk.  Tiers as run.py's: c-pmd
(MincoreOp in mm/mincore.c's shape), c-slot (its pte_entry slot), batch
(pgwalk.batch with a count_nonzero body), python (an empty pte_entry).
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import measure  # noqa: E402  (also puts an in-place build first on sys.path)

import pgwalk  # noqa: E402
from pgwalk._builtin import MincoreOp  # noqa: E402

GiB = 1 << 30
VMA_CAP = 64 * GiB
CLUSTER = 4 * GiB

THP_CHILD = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    G, M2 = 1 << 30, 1 << 21
    raw = libc.mmap(None, G + M2, 3, 0x22, -1, 0)
    base = (raw + M2 - 1) & ~(M2 - 1)
    libc.madvise(base, G, 14)                 # MADV_HUGEPAGE
    ctypes.memset(base, 1, G)
    print(hex(base), flush=True)
    sys.stdin.readline()
""")


def largest_process(exclude):
    """Pids by resident pages, largest first (those readable are tried in turn)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in exclude:
            continue
        try:
            with open(f"/proc/{d}/statm") as f:
                out.append((int(f.read().split()[1]), int(d)))
        except (OSError, IndexError, ValueError):
            pass
    return [pid for _, pid in sorted(out, reverse=True)]


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def tiers(mm, samples, min_time):
    """Each tier's walk of every VMA of ``mm`` (at most VMA_CAP each)."""
    vmas = [v for v in mm.vmas if v.vm_end - v.vm_start <= VMA_CAP]
    # one walk per cluster of VMAs spanning at most CLUSTER (the gaps are
    # pte_hole calls), so that few Python-level walk calls are timed
    spans = []
    for v in vmas:
        if spans and v.vm_end - spans[-1][0] <= CLUSTER:
            spans[-1][1] = v.vm_end
        else:
            spans.append([v.vm_start, v.vm_end])
    ops = [((lo, hi), MincoreOp(lo, (hi - lo) >> 12)) for lo, hi in spans]
    n = sum((v.vm_end - v.vm_start) >> 12 for v in vmas)

    def walk(make):
        made = [(r, make(op)) for r, op in ops]

        def run():
            for (lo, hi), o in made:
                pgwalk.walk_page_range(mm, lo, hi, o)
        return run

    makers = {
        "c-pmd": lambda op: pgwalk.MMWalkOps(pmd_entry=op.pte_range, pte_hole=op.pte_hole),
        "c-slot": lambda op: pgwalk.MMWalkOps(pte_entry=op.pte_entry, pmd_entry=op.pmd_entry,
                                              pte_hole=op.pte_hole),
        "batch": lambda op: pgwalk.MMWalkOps(
            pte_entry=pgwalk.batch(lambda e, a, nx, w: np.count_nonzero(e) * 0),
            pmd_entry=op.pmd_entry, pte_hole=op.pte_hole),
        "python": lambda op: pgwalk.MMWalkOps(pte_entry=lambda e, a, nx, w: 0,
                                              pmd_entry=op.pmd_entry, pte_hole=op.pte_hole),
    }
    res = {}
    with mm.mmap_read_lock():
        for name, make in makers.items():
            m = measure(walk(make), n, samples if name != "python" else max(3, samples // 2), min_time)
            m["walk_ms"] = m["median"] * n / 1e6
            res[name] = m
    return res, n, len(vmas), len(spans)


def guest_root(qemu_dir, levels):
    """(dump, the guest process's PGD, levels) as
    tests/fixtures/make_qemu_image.sh records them, or None without that dump."""
    d = Path(qemu_dir) / f"l{levels}"
    if not (d / "guest.elf").exists() or not (d / "cr3.txt").exists():
        return None
    rec = dict(ln.split("=") for ln in (d / "cr3.txt").read_text().split())
    return d / "guest.elf", int(rec["kernel_pgd"], 16), levels


def one(label, pid, samples, min_time, image=None):
    """A snapshot (of process ``pid``, or of ``image`` = (dump path, root,
    levels) with MM.from_image) timed at every tier."""
    t0 = time.perf_counter()
    if image is None:
        mm = pgwalk.MM.from_process(pid)
    else:
        path, root, levels = image
        mm = pgwalk.MM.from_image(pgwalk.PhysImage.open(path), root, levels)
    snap = time.perf_counter() - t0
    mapped = 0
    for v in mm.vmas:
        if v.vm_end - v.vm_start <= VMA_CAP:
            mapped += int(np.count_nonzero(mm.pagemap(v.vm_start, v.vm_end) >> np.uint64(63)))
    t, n, nv, nw = tiers(mm, samples, min_time)
    return {"label": label, "pid": pid, "comm": comm(pid) if image is None else "guest dump",
            "snapshot_s": snap, "vmas": len(mm.vmas),
            "vmas_walked": nv, "walks": nw, "vma_pages": n, "mapped_pages": mapped, "tables": mm.nr_tables,
            "thp": mm.snapshot_info.get("thp", 0), "real_pfns": mm.snapshot_info.get("real_pfns", 0),
            "tiers": t}


def report(rows):
    print("Real shapes: the tiers over snapshots of real processes (ns per page of the VMAs walked)\n")
    print(f"{'process':<28} {'VMAs':>5} {'VMA pages':>11} {'mapped':>9} {'THPs':>5} {'tables':>6} "
          f"{'snapshot':>9}  " + "  ".join(f"{t:>17}" for t in ("c-pmd", "c-slot", "batch", "python")))
    for r in rows:
        cells = "  ".join(f"{r['tiers'][t]['median']:7.2f} ({r['tiers'][t]['walk_ms']:6.1f} ms)"
                          for t in ("c-pmd", "c-slot", "batch", "python"))
        name = f"{r['label']} ({r['comm']})"[:28]
        print(f"{name:<28} {r['vmas']:>5} {r['vma_pages']:>11} {r['mapped_pages']:>9} {r['thp']:>5} "
              f"{r['tables']:>6} {r['snapshot_s'] * 1e3:7.1f}ms  {cells}")
    print("\nns/page: the tier's walks of every VMA (up to 64 GiB each; one walk per cluster of VMAs "
          "within 4 GiB) divided by the VMAs' pages; (ms): all the walks once; snapshot: MM.from_process.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--qemu-dir", default=os.environ.get("PGWALK_QEMU_DIR", "/tmp/pgwalk-qemu"),
                    help="the QEMU guest fixture (tests/fixtures/make_qemu_image.sh); its process is "
                         "walked too when the dump is there")
    a = ap.parse_args(argv)
    rows = [one("self", os.getpid(), a.samples, a.min_time)]
    child = subprocess.Popen([sys.executable, "-c", THP_CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        rows.append(one("1 GiB THP heap", child.pid, a.samples, a.min_time))
        for pid in largest_process({os.getpid(), child.pid}):
            try:
                rows.append(one("largest", pid, a.samples, a.min_time))
                break
            except (PermissionError, ProcessLookupError):
                continue
    finally:
        child.stdin.close()
        child.wait()
    for levels in (4, 5):
        g = guest_root(a.qemu_dir, levels)
        if g is None:
            print(f"(no QEMU guest dump in {a.qemu_dir}/l{levels}: its process is left out; "
                  f"tests/fixtures/make_qemu_image.sh makes it)", file=sys.stderr)
            continue
        rows.append(one(f"QEMU guest process ({levels}-level)", None, a.samples, a.min_time, image=g))
    report(rows)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
