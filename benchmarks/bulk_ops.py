"""Bulk page-table work of the process model: populate, zap and fork 64 GiB
of 4 KiB pages (16 M PTEs), each as one call whose per-page work is C walk
ops (no Python per page).

    python benchmarks/bulk_ops.py [GiB]

Prints one line per operation: wall time, pages, ns per page, tables.
"""

import sys
import time

_ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
if list((_ROOT / "pgwalk").rglob("_core.*.so")):      # this checkout, when built in place
    sys.path.insert(0, str(_ROOT))                       # (else the installed pgwalk)
import pgwalk  # noqa: E402
from pgwalk import MADV_DONTNEED, MADV_NOHUGEPAGE, MADV_POPULATE_WRITE, PAGE_SIZE

GIB = 1 << 30


def main(gib=64):
    size = gib * GIB
    npages = size // PAGE_SIZE
    mm = pgwalk.MM(levels=4)
    prot = pgwalk.PROT_READ | pgwalk.PROT_WRITE
    flags = pgwalk.MAP_PRIVATE | pgwalk.MAP_ANONYMOUS | pgwalk.MAP_NORESERVE
    a = mm.mmap(None, size, prot, flags)
    mm.madvise(a, size, MADV_NOHUGEPAGE)               # 4 KiB pages, no THP
    mm.phys.reserve(2 * npages)                        # the model's "RAM" for the PFNs

    def report(name, t, n):
        print(f"{name:<28} {t:8.3f} s  {n:>10} pages  {t / n * 1e9:7.1f} ns/page  "
              f"tables {mm.nr_tables}")

    t = time.perf_counter()
    mm.madvise(a, size, MADV_POPULATE_WRITE)
    report("populate (POPULATE_WRITE)", time.perf_counter() - t, npages)
    assert mm.pagemap(a, a + PAGE_SIZE)[0] >> 63 == 1

    t = time.perf_counter()
    child = mm.fork()
    report("fork (copy-on-write)", time.perf_counter() - t, npages)
    assert mm.pagemap(a, a + PAGE_SIZE)[0] >> 56 & 1 == 0     # shared with the child now

    t = time.perf_counter()
    child.exit()
    report("child exit (zap + free)", time.perf_counter() - t, npages)

    t = time.perf_counter()
    mm.madvise(a, size, MADV_DONTNEED)
    report("zap (MADV_DONTNEED)", time.perf_counter() - t, npages)
    assert mm.pagemap(a, a + PAGE_SIZE)[0] == 0

    t = time.perf_counter()
    mm.madvise(a, size, MADV_POPULATE_WRITE)
    mm.munmap(a, size)
    report("populate + munmap", time.perf_counter() - t, 2 * npages)
    mm.validate()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
