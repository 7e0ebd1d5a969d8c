"""pgwalk.batch() beyond the entry slots (docs/decisions.md 18): a batched
install_pte (one call per run of none PTE slots, scratch stored on return 0),
a batched pte_hole (one call per run of holes of one table at one depth), and
a batched hugetlb_entry (Python: one call per run of huge pages in one
table), and the per-VMA slots (test_walk, pre_vma, post_vma: the function
itself).  Each
is checked against the per-entry walk of the same tables: the batch calls
must be exactly the per-entry calls grouped into runs, and the tables the
same afterwards."""

import ctypes

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

import pgwalk
from pgwalk import PMD, PTE
from pgwalk.internal import walk_page_range_mm
from helpers.support import dump

GiB = 1 << 30
MiB = 1 << 20
# windows that cross PMD-, PUD- and (4-level) P4D/PGD-table boundaries
WINDOWS = {4: [(GiB - 8 * MiB, 16 * MiB), ((1 << 39) - 6 * MiB, 12 * MiB), (0x7F0000000000, 8 * MiB)],
           5: [((1 << 48) - 6 * MiB, 12 * MiB), ((1 << 39) - 6 * MiB, 12 * MiB)]}
# the span of one table whose slots have this hole depth (decisions.md 18)
TABLE_SHIFT = {4: {3: 30, 2: 39, 0: 64}, 5: {3: 30, 2: 39, 1: 48, 0: 64}}


@st.composite
def layout(draw):
    levels = draw(st.sampled_from([4, 5]))
    base, size = draw(st.sampled_from(WINDOWS[levels]))
    pages = draw(st.lists(st.integers(0, size // 4096 - 1), max_size=40))
    thps = draw(st.lists(st.integers(0, size // (2 * MiB) - 1), max_size=2))
    lo = draw(st.integers(0, size // 4096 - 1))
    hi = draw(st.integers(lo + 1, size // 4096))
    return levels, base, size, sorted(set(pages)), sorted(set(thps)), lo, hi


def build(levels, base, size, pages, thps):
    mm = pgwalk.MM(levels)
    mm.add_vma(base, base + size)
    for t in thps:
        mm.map(base + t * 2 * MiB, PMD, pfn=512 * (t + 1))
    for p in pages:
        a = base + p * 4096
        if not pgwalk.pmd_trans_huge(mm.entry(a, PMD)):
            mm.map(a, pfn=1000 + p)
    return mm


def merge_holes(trace, levels):
    """Group consecutive hole calls (no other call between) of one depth
    that continue each other inside one table: what a batched pte_hole gets."""
    out = []
    for ev in trace:
        if (ev[0] == "hole" and out and out[-1][0] == "hole" and out[-1][3] == ev[3]
                and out[-1][2] == ev[1] and ev[3] >= 0
                and (out[-1][1] >> TABLE_SHIFT[levels][ev[3]]) == (ev[1] >> TABLE_SHIFT[levels][ev[3]])):
            out[-1] = ("hole", out[-1][1], ev[2], ev[3])
        else:
            out.append(ev)
    return out


def traced_ops(trace, batched_hole):
    def hole(a, n, d, w):
        trace.append(("hole", a, n, d))
        return 0
    return pgwalk.MMWalkOps(
        pmd_entry=lambda e, a, n, w: trace.append(("pmd", a, n)) or 0,
        pte_entry=lambda e, a, n, w: trace.append(("pte", a, n, int(e))) or 0,
        pte_hole=pgwalk.batch(hole) if batched_hole else hole)


@given(layout(), st.booleans())
@settings(max_examples=150, deadline=None)
def test_batched_hole_is_the_per_entry_holes_grouped(lay, novma):
    levels, base, size, pages, thps, lo, hi = lay
    start, end = base + lo * 4096, base + hi * 4096
    traces = []
    for batched in (False, True):
        mm = build(levels, base, size, pages, thps)
        trace = []
        if novma:
            with mm.mmap_write_lock():
                assert pgwalk.walk_page_range_novma(mm, start, end, traced_ops(trace, batched)) == 0
        else:
            with mm.mmap_read_lock():
                assert pgwalk.walk_page_range(mm, start, end, traced_ops(trace, batched)) == 0
        traces.append(trace)
    assert traces[1] == merge_holes(traces[0], levels)


def test_batched_hole_spans_empty_upper_tables():
    """The whole 4-level user space with one page: the PGD table's holes come
    as runs (the folded P4D reports them at depth 0), the PUD and PMD tables'
    as one run before and one after the page."""
    mm = pgwalk.MM(4)
    mm.map(0x7F0000200000)
    calls = []
    ops = pgwalk.MMWalkOps(pte_hole=pgwalk.batch(lambda a, n, d, w: calls.append((a, n, d)) or 0),
                           pte_entry=lambda e, a, n, w: 0)
    with mm.mmap_write_lock():
        assert pgwalk.walk_page_range_novma(mm, 0, 1 << 47, ops) == 0
    assert calls == [(0, 0x7F0000000000, 0), (0x7F0000000000, 0x7F0000200000, 3),
                     (0x7F0000400000, 0x7F0040000000, 3), (0x7F0040000000, 0x7F8000000000, 2),
                     (0x7F8000000000, 1 << 47, 0)]
    # the kernel's rule kept: with no entry callback below the PGD the walk
    # does not descend, and a 4-level (folded) walk then reports no hole
    calls.clear()
    with mm.mmap_write_lock():
        assert pgwalk.walk_page_range_novma(mm, 0, 1 << 47, pgwalk.MMWalkOps(
            pte_hole=pgwalk.batch(lambda a, n, d, w: calls.append((a, n, d)) or 0))) == 0
    assert calls == []


def test_batched_hole_error_stops_the_walk():
    mm = pgwalk.MM(4)
    mm.map(0x7F0000200000)
    calls = []

    def hole(a, n, d, w):
        calls.append((a, n, d))
        return -5 if d == 3 else 0

    ops = pgwalk.MMWalkOps(pte_hole=pgwalk.batch(hole), pte_entry=lambda e, a, n, w: calls.append("pte") or 0)
    with mm.mmap_write_lock():
        assert pgwalk.walk_page_range_novma(mm, 0, 1 << 47, ops) == -5
    assert calls == [(0, 0x7F0000000000, 0), (0x7F0000000000, 0x7F0000200000, 3)]


def fill_value(addr):
    return ((addr >> 12) & 0xFFFFF) << 12 | 0x67


@given(layout(), st.integers(0, 4))
@settings(max_examples=120, deadline=None)
def test_batched_install_equals_per_entry_install(lay, fail_run):
    """Same tables, same pte_entry calls in the same order; one install call
    per maximal run of none PTE slots (in one table, in range).  A non-zero
    return from the batch of run k stops the walk with nothing of run k
    stored -- what per-entry install_pte gives when it fails at the run's
    first slot."""
    levels, base, size, pages, thps, lo, hi = lay
    start, end = base + lo * 4096, base + hi * 4096
    runs = []

    def per_entry(trace):
        def install(a, n, p, w):
            if runs_seen[0] < len(runs) and a == runs[runs_seen[0]][0]:
                runs_seen[0] += 1
                if runs_seen[0] == fail_run:
                    return -12
            p.set(fill_value(a))
            return 0
        runs_seen = [0]
        return pgwalk.MMWalkOps(install_pte=install,
                                pte_entry=lambda e, a, n, w: trace.append(("pte", a, int(e))) or 0)

    def batched(trace):
        def install(ptes, a, n, w):
            runs.append((a, n))
            if len(runs) == fail_run:
                ptes[:] = 0x1234067               # stored only on success: never seen
                return -12
            ptes[:] = [fill_value(a + i * 4096) for i in range(len(ptes))]
            assert len(ptes) == (n - a) // 4096
            return 0
        return pgwalk.MMWalkOps(install_pte=pgwalk.batch(install),
                                pte_entry=lambda e, a, n, w: trace.append(("pte", a, int(e))) or 0)

    results = {}
    for name in ("batched", "per_entry"):           # batched first: it finds the runs
        mm = build(levels, base, size, pages, thps)
        trace = []
        ops = batched(trace) if name == "batched" else per_entry(trace)
        st_ = pgwalk.WalkStats()
        with mm.mmap_read_lock():
            rc = walk_page_range_mm(mm, start, end, ops, stats=st_)
        results[name] = (rc, trace, dump(mm), mm.stats["set_pte_at"])
        mm.validate()
        if name == "batched":
            assert st_.calls.get("install_pte", 0) == len(runs)
    assert results["batched"] == results["per_entry"]
    for a, n in runs:                                # runs never leave a PTE table
        assert (a >> 21) == ((n - 1) >> 21)


def test_batched_install_from_c():
    """A C function of the batch signature (here through ctypes) in
    install_pte, bare or wrapped in batch(): the walk runs it once per run."""
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_uint64), ctypes.c_int,
                             ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p)
    seen = []

    @proto
    def fill(ptes, n, addr, next_, walk, ctx):
        seen.append((addr, next_, n))
        for i in range(n):
            ptes[i] = fill_value(addr + i * 4096)
        return 0

    for wrap in (lambda f: f, pgwalk.batch):
        seen.clear()
        mm = pgwalk.MM(4)
        mm.add_vma(GiB, GiB + 4 * MiB)
        mm.map(GiB + 5 * 4096)
        llc = pgwalk.LowLevelCallable(fill)
        ops = pgwalk.MMWalkOps(install_pte=wrap(llc), pte_entry=lambda e, a, n, w: 0)
        with mm.mmap_read_lock():
            assert walk_page_range_mm(mm, GiB, GiB + 4 * MiB, ops) == 0
        assert seen == [(GiB, GiB + 5 * 4096, 5), (GiB + 6 * 4096, GiB + 2 * MiB, 506),
                        (GiB + 2 * MiB, GiB + 4 * MiB, 512)]
        assert mm.entry(GiB + 7 * 4096, PTE) == fill_value(GiB + 7 * 4096)
        assert mm.entry(GiB + 5 * 4096, PTE) != fill_value(GiB + 5 * 4096)


def test_batched_install_view_is_scratch_and_zeroed():
    """The array handed over is the walk's scratch, zeros on every call (not
    the live slots); a kept array does not write the tables afterwards."""
    mm = pgwalk.MM(4)
    mm.add_vma(GiB, GiB + 4 * MiB)
    kept = []

    def install(ptes, a, n, w):
        assert ptes.dtype == np.uint64 and not ptes.any() and ptes.flags.writeable
        kept.append(ptes)
        ptes[0] = 0x5067
        return 0

    with mm.mmap_read_lock():
        assert walk_page_range_mm(mm, GiB, GiB + 4 * MiB, pgwalk.MMWalkOps(install_pte=pgwalk.batch(install))) == 0
    kept[0][1] = 0x9067
    assert mm.entry(GiB + 4096, PTE) == 0 and mm.entry(GiB, PTE) == 0x5067


@pytest.mark.parametrize("slot", ["test_walk", "pre_vma", "post_vma"])
def test_per_vma_slots_take_a_batch_as_the_function_itself(slot):
    calls = []
    fns = {"test_walk": lambda s, e, w: calls.append((s, e)) or 0,
           "pre_vma": lambda s, e, w: calls.append((s, e)) or 0,
           "post_vma": lambda w: calls.append(w.vma.vm_start)}
    mm = pgwalk.MM(4)
    mm.add_vma(GiB, GiB + 2 * MiB)
    mm.add_vma(GiB + 4 * MiB, GiB + 6 * MiB)
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, GiB, GiB + 8 * MiB,
                                      pgwalk.MMWalkOps(**{slot: pgwalk.batch(fns[slot])})) == 0
    want = [GiB, GiB + 4 * MiB] if slot == "post_vma" else [(GiB, GiB + 2 * MiB), (GiB + 4 * MiB, GiB + 6 * MiB)]
    assert calls == want


def test_batch_of_a_c_function_of_the_wrong_signature_is_refused():
    from pgwalk._builtin import MincoreOp
    op = MincoreOp(0, 1)
    with pytest.raises(ValueError, match="pte_hole"):
        pgwalk.MMWalkOps(pte_hole=pgwalk.batch(op.pte_entry))
    with pytest.raises(ValueError, match="install_pte"):
        pgwalk.MMWalkOps(install_pte=pgwalk.batch(op.pte_hole))
    pgwalk.MMWalkOps(pte_hole=pgwalk.batch(op.pte_hole))        # a hole function: fine


def group_hugetlb(trace, shift):
    """Consecutive hugetlb calls whose slots follow each other in one table."""
    out = []
    for ev in trace:
        if (ev[0] == "T" and out and out[-1][0] == "T" and out[-1][2] == ev[1]
                and (out[-1][1] >> (shift + 9)) == ((ev[2] - 1) >> (shift + 9))):
            out[-1] = ("T", out[-1][1], ev[2], out[-1][3], out[-1][4] + ev[4])
        else:
            out.append(ev)
    return out


@st.composite
def hugetlb_layout(draw):
    levels = draw(st.sampled_from([4, 5]))
    size = draw(st.sampled_from([2 * MiB, GiB]))
    npages = 40 if size == 2 * MiB else 6
    base = draw(st.sampled_from([GiB - 8 * size, (1 << 39) - 3 * size])) if size == 2 * MiB else \
        draw(st.sampled_from([(1 << 39) - 3 * size, 8 * GiB]))
    leaves = draw(st.lists(st.integers(0, npages - 1), max_size=npages, unique=True))
    tables = draw(st.lists(st.integers(0, npages - 1), max_size=4))
    lo = draw(st.integers(0, npages * size // 4096 - 1))
    hi = draw(st.integers(lo + 1, npages * size // 4096))
    return levels, size, npages, base, leaves, tables, lo, hi


@given(hugetlb_layout())
@settings(max_examples=80, deadline=None)
def test_batched_hugetlb_is_the_per_entry_calls_grouped(lay):
    """A batched hugetlb_entry gets, per call, the slots that per-entry calls
    would get one by one, grouped while they follow each other in one table
    (a page whose tables are missing stays a hole)."""
    levels, size, npages, base, leaves, tables, lo, hi = lay
    level = PMD if size == 2 * MiB else pgwalk.PUD
    start, end = base + lo * 4096, base + hi * 4096

    def build():
        mm = pgwalk.MM(levels)
        mm.add_vma(base, base + npages * size, pgwalk.VM_HUGETLB, hugepage_size=size)
        above = pgwalk.PUD if size == 2 * MiB else pgwalk.PGD
        for t in tables:                                 # tables above some pages only
            mm.alloc_table(base + t * size, above)
        for i in leaves:
            if i in tables or not tables:
                mm.map(base + i * size, level=level, pfn=(i + 1) * (size >> 12))
        return mm

    per, bat = [], []
    ops_per = pgwalk.MMWalkOps(
        hugetlb_entry=lambda e, h, a, n, w: per.append(("T", a, n, h, [int(e)])) or 0,
        pte_hole=lambda a, n, d, w: per.append(("H", a, n, d)) or 0)

    def fn(entries, h, a, n, w):
        assert not entries.flags.writeable
        bat.append(("T", a, n, h, [int(x) for x in entries]))
        return 0

    ops_bat = pgwalk.MMWalkOps(hugetlb_entry=pgwalk.batch(fn),
                               pte_hole=lambda a, n, d, w: bat.append(("H", a, n, d)) or 0)
    for ops in (ops_per, ops_bat):
        mm = build()
        with mm.mmap_read_lock():
            assert pgwalk.walk_page_range(mm, start, end, ops) == 0
    shift = 21 if size == 2 * MiB else 30
    assert bat == group_hugetlb(per, shift)


def test_hugetlb_batch_is_python_only():
    from pgwalk._builtin import MincoreOp
    with pytest.raises(ValueError, match="Python only"):
        pgwalk.MMWalkOps(hugetlb_entry=pgwalk.batch(MincoreOp(0, 1).pte_entry))
