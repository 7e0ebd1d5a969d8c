"""Walking page tables in a physical-memory image: pgwalk against a
vectorised numpy walker, per page, on a synthetic 4-level image.

    python benchmarks/images.py [--gib 8] [--samples 5]

The image holds GIB GiB of 4 KiB mappings (one PTE table per 2 MiB) at the
bottom of the user half, plus a copy at the start of the kernel half.  The
numpy walker resolves all PTEs level by level with fancy indexing (gathers):
the best a vectorised pure-numpy walk does.  Same harness as run.py (median,
min-max over samples after a warm-up)."""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import pgwalk
from pgwalk._builtin import MincoreOp

TABLE = 0x67
PFN_MASK = ((1 << 52) - 1) & ~0xFFF


def build_image(gib):
    """Frames: 0 unused, 1 pgd, 2 pud, 3.. pmd tables, then PTE tables, then data."""
    n_pte_tables = gib * 512
    n_pmd_tables = gib
    first_pmd, first_pte = 3, 3 + n_pmd_tables
    nframes = first_pte + n_pte_tables
    img = np.zeros(nframes * 512, dtype=np.uint64)
    img[512 + 0] = (2 << 12) | TABLE                       # pgd[0]: user half
    img[512 + 256] = (2 << 12) | TABLE                     # pgd[256]: the kernel half, same tables
    img[2 * 512 + np.arange(gib)] = ((first_pmd + np.arange(gib, dtype=np.uint64)) << 12) | TABLE
    pmd = img[first_pmd * 512:(first_pmd + n_pmd_tables) * 512]
    pmd[:] = ((first_pte + np.arange(n_pte_tables, dtype=np.uint64)) << 12) | TABLE
    ptes = img[first_pte * 512:]
    ptes[:] = ((np.arange(ptes.size, dtype=np.uint64) + (1 << 24)) << 12) | 0x63
    return img


def numpy_walk(img, root):
    """All present 4 KiB leaves of the user half, vectorised: (va, pa)."""
    frames = img.reshape(-1, 512)
    pgd = frames[root]
    i0 = np.flatnonzero(pgd[:256] & 1)
    pud_frames = (pgd[i0] & PFN_MASK) >> 12
    pud = frames[pud_frames.astype(np.int64)]
    j, k = np.nonzero(pud & 1)
    pmd_frames = (pud[j, k] & PFN_MASK) >> 12
    pmd = frames[pmd_frames.astype(np.int64)]
    a, b = np.nonzero(pmd & 1)
    pte_frames = (pmd[a, b] & PFN_MASK) >> 12
    pte = frames[pte_frames.astype(np.int64)]
    c, d = np.nonzero(pte & 1)
    va = (i0[j[a[c]]].astype(np.uint64) << 39) | (k[a[c]].astype(np.uint64) << 30) | \
        (b[c].astype(np.uint64) << 21) | (d.astype(np.uint64) << 12)
    return va, pte[c, d] & PFN_MASK


def measure(fn, n, samples):
    fn()
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) / n * 1e9)
    return statistics.median(out), min(out), max(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=8)
    ap.add_argument("--samples", type=int, default=5)
    a = ap.parse_args(argv)
    img = build_image(a.gib)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "image.raw"
        img.tofile(path)
        mm = pgwalk.PhysImage.open(path).mm(1 << 12)
        pages = a.gib << 18
        res = {}
        res["pgwalk mappings() (user half)"] = measure(lambda: mm.mappings(0, 1 << 47), pages, a.samples)
        res["numpy vectorised walker"] = measure(lambda: numpy_walk(img, 1), pages, a.samples)
        vas = (np.random.default_rng(1).integers(0, pages, 1 << 20, dtype=np.uint64) << np.uint64(12))
        res["pgwalk translate() (1M random VAs)"] = measure(lambda: mm.translate(vas), 1 << 20, a.samples)
        op = MincoreOp(0, pages)
        ops = pgwalk.MMWalkOps(pte_entry=op.pte_entry, pmd_entry=op.pmd_entry, pte_hole=op.pte_hole)

        def c_tier():
            with mm.mmap_read_lock():
                pgwalk.walk_page_range_novma(mm, 0, a.gib << 30, ops)
        res["pgwalk C tier (MincoreOp)"] = measure(c_tier, pages, a.samples)
        small = min(pages, 1 << 18)
        pops = pgwalk.MMWalkOps(pte_entry=lambda e, ad, n, w: 0)

        def py_tier():
            with mm.mmap_read_lock():
                pgwalk.walk_page_range_novma(mm, 0, small << 12, pops)
        res["pgwalk Python tier (per PTE)"] = measure(py_tier, small, max(3, a.samples // 2))
        got = mm.mappings(0, 1 << 47)
        va, pa = numpy_walk(img, 1)
        assert (got["va"] == va).all() and (got["pa"] == pa).all(), "pgwalk and numpy disagree"
    print(f"{a.gib} GiB of 4 KiB mappings ({pages:,} pages), ns per page, median (min-max):")
    for k, (med, lo, hi) in res.items():
        print(f"  {k:<36} {med:8.2f}  ({lo:.2f}-{hi:.2f})   {1e3 / med:8.1f} Mpages/s")
    base = res["numpy vectorised walker"][0]
    print(f"  mappings() is {base / res['pgwalk mappings() (user half)'][0]:.1f}x the numpy walker per page")
    return res


if __name__ == "__main__":
    main()
