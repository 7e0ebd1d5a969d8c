"""Same-shape timings of two builds for a before/after comparison: the
walk tiers over 1 GiB dense (c-pmd, c-slot, batch, python), MM.mincore and
MM.pagemap, a 256 MiB mmap/fork/mprotect/madvise/munmap cycle and 200 small
syscall rounds; one JSON line.  Run each build in turn, interleaved:

    for t in OLD NEW OLD NEW; do PYTHONPATH=$t python benchmarks/before_after.py; done

(each tree built in place with ``python setup.py build_ext --inplace``; the
APIs used exist in every version since the process model).
"""
import json, sys, time
import numpy as np
import pgwalk as P
from pgwalk._builtin import MincoreOp

def best(fn, n=7):
    t = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); t.append(time.perf_counter() - t0)
    return min(t)

R = {}
size = 1 << 30                      # 1 GiB dense
mm = P.MM()
a = mm.mmap(0, size, P.PROT_READ | P.PROT_WRITE, P.MAP_PRIVATE | P.MAP_ANONYMOUS | P.MAP_POPULATE)
pages = size >> 12
vma = mm.find_vma(a)
op = MincoreOp(a, pages)
ops_pmd = P.MMWalkOps(pmd_entry=op.pte_range, pte_hole=op.pte_hole)
ops_slot = P.MMWalkOps(pmd_entry=op.pmd_entry, pte_entry=op.pte_entry, pte_hole=op.pte_hole)
def walk(ops, lo=a, hi=a + size):
    with mm.mmap_read_lock():
        assert P.walk_page_range(mm, lo, hi, ops) == 0
R["c-pmd ns/page"] = best(lambda: walk(ops_pmd)) / pages * 1e9
R["c-slot ns/page"] = best(lambda: walk(ops_slot)) / pages * 1e9
py = P.MMWalkOps(pte_entry=lambda e, ad, nx, w: 0)
small = 64 << 20
R["python ns/page"] = best(lambda: walk(py, a, a + small), 3) / (small >> 12) * 1e9
bt = P.MMWalkOps(pte_entry=P.batch(lambda e, ad, nx, w: 0))
R["batch ns/page"] = best(lambda: walk(bt), 3) / pages * 1e9
R["MM.mincore ns/page"] = best(lambda: mm.mincore(a, size)) / pages * 1e9
R["MM.pagemap ns/page"] = best(lambda: mm.pagemap(a, a + size)) / pages * 1e9
def cycle():
    m = P.MM()
    b = m.mmap(0, 256 << 20, P.PROT_READ | P.PROT_WRITE, P.MAP_PRIVATE | P.MAP_ANONYMOUS | P.MAP_POPULATE)
    c = m.fork()
    m.mprotect(b, 128 << 20, P.PROT_READ)
    m.madvise(b, 64 << 20, P.MADV_DONTNEED)
    c.exit()
    m.munmap(b, 256 << 20)
R["syscall cycle (256 MiB) ms"] = best(cycle, 5) * 1e3
def small_calls():
    m = P.MM()
    for i in range(200):
        b = m.mmap(0, 1 << 16, P.PROT_READ | P.PROT_WRITE, P.MAP_PRIVATE | P.MAP_ANONYMOUS)
        m.touch(b, True)
        m.mprotect(b, 4096, P.PROT_READ)
        m.munmap(b, 1 << 16)
R["200 small mmap/touch/mprotect/munmap ms"] = best(small_calls, 5) * 1e3
print(json.dumps(R))
