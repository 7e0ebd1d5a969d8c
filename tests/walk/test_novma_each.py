"""``walk_page_range_novma_each``: one walk set-up for several ranges, the
same calls and return as ``walk_page_range_novma`` called once per range
(on the compiled walker and on the reference walker)."""

import pytest

import pgwalk
from pgwalk import entries as E
from pgwalk.constants import EINVAL, PMD, PTE, PUD
from pgwalk.walker.api import walk_page_range_novma_each
from helpers.support import CYTHON, PRESENT, REFERENCE

G, M = 1 << 30, 1 << 20
TOP = (1 << 64) - (1 << 47)                 # the first kernel-half address


def _mm():
    mm = pgwalk.MM(4, is_init_mm=True)
    mm.set_entry(G + 4096, PTE, E.pfn_pte(7, PRESENT))
    mm.set_entry(2 * G + 2 * M, PMD, E.pfn_pmd(512, PRESENT))
    mm.set_entry(TOP + 3 * G, PUD, E.pfn_pud(1 << 18, PRESENT))
    mm.set_entry(TOP + 5 * G + 8192, PTE, 0x2)     # not present, not none
    return mm


def _ops(trace, stop_at=None):
    def rec(name):
        def cb(*args):
            walk, addr = args[-1], args[1] if name != "pte_hole" else args[0]
            trace.append((name, addr))
            return 1 if addr == stop_at else 0
        return cb
    return pgwalk.MMWalkOps(**{n: rec(n) for n in ("pud_entry", "pmd_entry", "pte_entry", "pte_hole")})


RANGES = [(0, 1 << 47), (TOP, (1 << 64) - 1)]


@pytest.mark.parametrize("stop_at", [None, 2 * G + 2 * M, TOP + 3 * G])
def test_each_range_as_one_call_per_range(stop_at):
    each, want = [], []
    mm = _mm()
    with mm.mmap_read_lock():
        got = walk_page_range_novma_each(mm, RANGES, _ops(each, stop_at))
    for impl in (CYTHON, REFERENCE):
        calls, ret = [], 0
        mm = _mm()
        with mm.mmap_read_lock():
            for start, end in RANGES:
                ret = impl.walk_page_range_novma(mm, start, end, _ops(calls, stop_at))
                if ret:
                    break
        want.append((ret, calls))
    assert want[0] == want[1] and len(want[0][1]) > 4
    assert (got, each) == want[0]
    assert got == (0 if stop_at is None else 1)


def test_checks_every_range_first():
    mm = _mm()
    trace = []
    with mm.mmap_read_lock():
        assert walk_page_range_novma_each(mm, [(0, G), (G, G)], _ops(trace)) == -EINVAL
        with pytest.raises(ValueError):
            walk_page_range_novma_each(mm, [(0, G), (0, 1 << 48)], _ops(trace))
    assert trace == []                      # nothing walked before a bad range was found
    with pytest.raises(pgwalk.LockAssertionError):
        walk_page_range_novma_each(mm, RANGES, _ops(trace))
