"""The plain Python tier's hot path: addresses handed to callbacks are boxed
in ints that the walk rewrites in place when nobody else holds them
(pgwalk/_pyint.h), and the trampoline parks exceptions without a Python-level
try.  What a callback sees, or keeps, must never change."""

import sys

import pytest

import pgwalk
import pgwalk.reference
from pgwalk import PTE
from pgwalk.walker import _core

B = 0x7F0000000000
KERNEL = 0xFFFF888000000000          # above 2**60: a three-digit int in CPython


def walk_all(mm, start, end, ops, novma=False):
    if novma:
        with mm.mmap_write_lock():
            return pgwalk.walk_page_range_novma(mm, start, end, ops)
    with mm.mmap_read_lock():
        return pgwalk.walk_page_range(mm, start, end, ops)


def test_rewrite_is_on_where_its_layout_is_known():
    """The speed-up must not switch itself off silently on the interpreters it
    was written for (CPython 3.11-3.13 with the GIL)."""
    gil = not getattr(sys, "_is_gil_enabled", lambda: True)() is False
    expect = (sys.implementation.name == "cpython" and (3, 11) <= sys.version_info[:2] <= (3, 13)
              and gil and sys.int_info.bits_per_digit == 30)
    assert _core._int_rewrite_enabled() == expect


@pytest.mark.parametrize("levels", [4, 5])
def test_kept_addresses_keep_their_values(levels):
    """A callback that keeps every addr/next it is given (and the tuple that
    holds them) still has the right values after the walk: a kept int is
    never rewritten."""
    mm = pgwalk.MM(levels)
    mm.add_vma(B, B + (4 << 21))
    for k in range(0, 4 * 512, 3):
        mm.map(B + k * 4096)
    kept = []
    ops = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: kept.append((a, n)) or 0)
    assert walk_all(mm, B, B + (4 << 21), ops) == 0
    assert kept == [(B + i * 4096, B + (i + 1) * 4096) for i in range(4 * 512)]
    assert all(type(a) is int and type(n) is int for a, n in kept)


def test_some_kept_some_dropped():
    """Keeping only every third value: the walk reuses the others, and both
    kinds read right afterwards, as keys of a dict and in arithmetic."""
    mm = pgwalk.MM(4)
    mm.add_vma(B, B + (2 << 21))
    mm.map(B)
    mm.map(B + (1 << 21))
    seen = {}
    count = [0]

    def f(e, a, n, w):
        count[0] += 1
        if count[0] % 3 == 0:
            seen[a] = n
        assert n - a == 4096 and hash(a) == hash(int(str(a)))
        return 0

    assert walk_all(mm, B, B + (2 << 21), pgwalk.MMWalkOps(pte_entry=f)) == 0
    assert count[0] == 1024
    assert seen == {B + i * 4096: B + (i + 1) * 4096 for i in range(2, 1024, 3)}


def test_kernel_addresses_and_the_bottom_of_the_space():
    """Values above 2**60 (three 30-bit digits) and below 257 (CPython's
    cached small ints, never rewritten) come out exact."""
    kmm = pgwalk.init_mm(4)
    kmm.map(KERNEL)
    kmm.map(KERNEL + 4096 * 7)
    got = []
    ops = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: got.append((a, n, int(e) != 0)) or 0)
    assert walk_all(kmm, KERNEL, KERNEL + 16 * 4096, ops, novma=True) == 0
    assert [(a, n) for a, n, _ in got] == [(KERNEL + i * 4096, KERNEL + (i + 1) * 4096) for i in range(16)]
    assert [i for i, (_, _, p) in enumerate(got) if p] == [0, 7]

    mm = pgwalk.MM(4)
    mm.map(0)
    low = []
    ops = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: low.append((a, n)) or 0)
    assert walk_all(mm, 0, 3 * 4096, ops, novma=True) == 0
    assert low == [(0, 4096), (4096, 8192), (8192, 12288)]
    assert low[0][0] is 0                       # noqa: F632 -- the cached small int


def test_same_values_as_the_reference_walker():
    """The boxed values are the reference walker's, call for call, across
    holes and several tables (addresses that do not follow each other)."""
    def build():
        mm = pgwalk.MM(4)
        mm.add_vma(B, B + (8 << 21))
        for k in (0, 1, 700, 1500, 2047, 3000, 4095):
            mm.map(B + k * 4096)
        return mm

    def trace(impl):
        out = []
        ops = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: out.append(("pte", a, n)) or 0,
                               pte_hole=lambda a, n, d, w: out.append(("hole", a, n, d)) or 0)
        mm = build()
        with mm.mmap_read_lock():
            assert impl.walk_page_range(mm, B + 4096 * 3, B + (8 << 21) - 4096 * 5, ops) == 0
        return out

    assert trace(pgwalk) == trace(pgwalk.reference)


def test_exception_reaches_the_caller_with_its_traceback():
    mm = pgwalk.MM(4)
    mm.add_vma(B, B + (1 << 21))
    mm.map(B)

    def boom(e, a, n, w):
        if a == B + 5 * 4096:
            raise KeyError("the fifth")
        return 0

    with pytest.raises(KeyError, match="the fifth") as info:
        walk_all(mm, B, B + (1 << 21), pgwalk.MMWalkOps(pte_entry=boom))
    assert info.value.__traceback__ is not None
    assert any(fr.name == "boom" for fr in info.traceback)


@pytest.mark.parametrize("ret,exc", [(None, TypeError), ("0", TypeError), (2**31, OverflowError),
                                     (-2**31 - 1, OverflowError)])
def test_bad_returns_still_refused(ret, exc):
    mm = pgwalk.MM(4)
    mm.add_vma(B, B + (1 << 21))
    mm.map(B)
    with pytest.raises(exc, match="pte_entry"):
        walk_all(mm, B, B + (1 << 21), pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: ret))


@pytest.mark.parametrize("ret", [0, 1, -12, 2**31 - 1, -2**31, True])
def test_int_returns_pass_through(ret):
    mm = pgwalk.MM(4)
    mm.add_vma(B, B + (1 << 21))
    mm.map(B)
    assert walk_all(mm, B, B + (1 << 21), pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: ret)) == int(ret)


def test_entry_reference_kept_by_a_callback_is_replaced():
    """Keeping the EntryRef makes the walk hand out a new one next time; the
    kept one expires (its reads raise) but stays the slot it was."""
    mm = pgwalk.MM(4)
    mm.add_vma(B, B + (1 << 21))
    mm.map(B, pfn=7)
    refs = []
    ops = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: refs.append(e) or 0)
    assert walk_all(mm, B, B + 4 * 4096, ops) == 0
    assert len({id(r) for r in refs}) == 4 and all(r.level == PTE for r in refs)
    with pytest.raises(RuntimeError, match="outside its callback"):
        refs[0].val
