"""Bulk work of the process model is C: populating, forking and zapping a
large range costs a bounded number of Python calls, not one per page (the
walks' slots are all C functions of pgwalk/_mmops.pyx), and the benchmark
script stays runnable."""

import importlib.util
import sys
from pathlib import Path

import pgwalk as P
from pgwalk import PAGE_SIZE as PS

ROOT = Path(__file__).resolve().parents[2]


def python_calls(fn):
    """Python-level function calls made while ``fn()`` runs."""
    n = 0

    def prof(frame, event, arg):
        nonlocal n
        if event == "call":
            n += 1
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return n


def test_populate_fork_zap_munmap_make_no_python_call_per_page():
    """1 GiB of 4 KiB pages (262,144 PTEs): each bulk operation makes fewer
    than 2,000 Python calls (argument checks, per-VMA orchestration)."""
    size = 1 << 30
    mm = P.MM()
    a = mm.mmap(None, size, P.PROT_READ | P.PROT_WRITE, P.MAP_PRIVATE | P.MAP_ANONYMOUS)
    mm.madvise(a, size, P.MADV_NOHUGEPAGE)
    assert python_calls(lambda: mm.madvise(a, size, P.MADV_POPULATE_WRITE)) < 2000
    assert int(mm.pagemap(a + size - PS, a + size)[0]) >> 63
    box = []
    assert python_calls(lambda: box.append(mm.fork())) < 2000
    assert python_calls(box[0].exit) < 2000
    assert python_calls(lambda: mm.madvise(a, size, P.MADV_DONTNEED)) < 2000
    assert python_calls(lambda: mm.madvise(a, size, P.MADV_GUARD_INSTALL)) < 2000
    assert python_calls(lambda: mm.munmap(a, size)) < 2000
    assert mm.nr_tables == 1
    mm.validate()


def test_benchmark_script_runs(capsys):
    """benchmarks/bulk_ops.py (here on 1 GiB) prints one line per operation."""
    spec = importlib.util.spec_from_file_location("bulk_ops", ROOT / "benchmarks" / "bulk_ops.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(1)
    out = capsys.readouterr().out
    assert out.count("ns/page") == 5
