"""Demo: build a large, sparse 5-level address space, walk it, print what it holds.

A tour, not a measurement: the project's main job is the benchmark suite,
benchmarks/run.py (what one callback per entry costs at each tier, against
floors measured in the same run; see benchmarks/README.md).  This script
builds, through the walker itself (install_pte via walk_page_range_mm, as
the kernel's guard-region code populates tables):
  * a dense 1 GiB region of 4 KiB pages (262,144 PTEs in 512 PTE tables),
  * 1,000 single pages scattered over the whole 56-bit user address space,
  * a 64 MiB region of 2 MiB THPs,
then walks the whole user address space with pmd_entry/pte_entry/pte_hole
and prints the counts and the cost per callback.

    python benchmarks/demo.py [--levels 4|5] [--scattered N]
"""

import argparse
import random
import time

import pgwalk
from pgwalk.internal import walk_page_range_mm

GiB = 1 << 30
MiB = 1 << 20


def build(levels, scattered, seed=1):
    mm = pgwalk.MM(levels)
    top = mm.task_size
    dense_start = 0x7F0000000000
    mm.add_vma(dense_start, dense_start + GiB)
    thp_start = 0x100000000
    mm.add_vma(thp_start, thp_start + 64 * MiB)
    for i in range(32):
        mm.map(thp_start + i * 2 * MiB, pgwalk.PMD)
    rng = random.Random(seed)
    pages = set()
    while len(pages) < scattered:
        page = rng.randrange(GiB, top - GiB) & ~(2 * MiB - 1)
        if not (dense_start - 4 * MiB <= page < dense_start + GiB + 4 * MiB
                or thp_start - 4 * MiB <= page < thp_start + 68 * MiB):
            pages.add(page)
    for page in sorted(pages):
        mm.add_vma(page, page + pgwalk.PAGE_SIZE)

    pfn = [mm.alloc_pfn(1 << 18)]

    def install(addr, next, ptep, walk):
        ptep.set(pgwalk.pfn_pte(pfn[0] + ((addr >> 12) & 0x3FFFF), pgwalk.PAGE_DEFAULT))
        return 0

    ops = pgwalk.MMWalkOps(install_pte=install)
    with mm.mmap_read_lock():
        for vma in mm.vmas:
            if vma.vm_start != thp_start:
                assert walk_page_range_mm(mm, vma.vm_start, vma.vm_end, ops) == 0
    mm.validate()
    return mm


def survey(mm):
    counts = {"pte_present": 0, "pte_none": 0, "thp": 0, "pmd_tables": 0,
              "holes": {}, "calls": 0}

    def pmd_entry(entry, addr, next, walk):
        counts["calls"] += 1
        if pgwalk.pmd_trans_huge(int(entry)):
            counts["thp"] += 1
            walk.action = pgwalk.ACTION_CONTINUE      # look, don't split
        else:
            counts["pmd_tables"] += 1
        return 0

    def pte_entry(entry, addr, next, walk):
        counts["calls"] += 1
        if pgwalk.pte_present(int(entry)):
            counts["pte_present"] += 1
        else:
            counts["pte_none"] += 1
        return 0

    def pte_hole(addr, next, depth, walk):
        counts["calls"] += 1
        counts["holes"][depth] = counts["holes"].get(depth, 0) + 1
        return 0

    ops = pgwalk.MMWalkOps(pmd_entry=pmd_entry, pte_entry=pte_entry, pte_hole=pte_hole)
    t0 = time.perf_counter()
    with mm.mmap_read_lock():
        rc = pgwalk.walk_page_range(mm, 0, mm.task_size, ops)
    dt = time.perf_counter() - t0
    return rc, counts, dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, default=5, choices=(4, 5))
    ap.add_argument("--scattered", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    mm = build(args.levels, args.scattered)
    t_build = time.perf_counter() - t0
    print(f"built {mm!r} in {t_build:.2f} s; {len(mm.vmas)} VMAs; "
          f"tables allocated: {mm.stats['alloc']}")
    rc, c, dt = survey(mm)
    print(f"walked [0, {mm.task_size:#x}) in {dt * 1e3:.1f} ms (rc={rc}):")
    print(f"  present PTEs {c['pte_present']:,}  none PTEs {c['pte_none']:,}  "
          f"THPs {c['thp']}  PTE tables {c['pmd_tables']:,}")
    print(f"  holes by depth: {dict(sorted(c['holes'].items()))}")
    print(f"  {c['calls']:,} Python callbacks, {dt / c['calls'] * 1e9:.0f} ns per callback "
          "(plain Python tier)")


if __name__ == "__main__":
    main()
