"""Callback tiers beyond plain Python: batched pte_entry, walk statistics,
the inlined-op baseline; and the PTE loop's bound at the bottom of the
address space."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pgwalk
from pgwalk import PMD, PTE
from pgwalk import reference  # noqa: F401  (pgwalk.reference used below)
from pgwalk._builtin import MincoreOp
from pgwalk.internal import walk_page_range_mm

B = 0x7F0000000000


def populated(levels=4):
    mm = pgwalk.MM(levels)
    mm.add_vma(B, B + (8 << 21))
    for i in range(4):
        mm.alloc_table(B + (i << 21), PMD)
    for k in (0, 1, 5, 511, 600, 1100, 1536):
        mm.map(B + k * 4096, pfn=100 + k)
    mm.set_entry(B + 7 * 4096, PTE, pgwalk.swp_entry_to_pte(pgwalk.swp_entry(1, 3)))
    return mm


def per_entry_trace(mm, start, end):
    out = []
    ops = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: out.append((a, int(e))) or 0)
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, start, end, ops) == 0
    return out


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("start,end", [(B, B + (8 << 21)), (B + 8, B + 3 * 4096 + 16),
                                       (B + 4096 * 510, B + 4096 * 1030)])
def test_batch_sees_what_per_entry_callbacks_see(levels, start, end):
    """One call per contiguous run of one PTE table; same slots, same values."""
    mm = populated(levels)
    calls = []

    def fn(entries, addr, next, walk):
        assert entries.dtype == np.uint64 and len(entries) == -(-(next - addr) // 4096)
        calls.append((addr, next))
        for i, v in enumerate(entries):
            got.append((addr + i * 4096, int(v)))
        return 0

    got = []
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, start, end, pgwalk.MMWalkOps(pte_entry=pgwalk.batch(fn))) == 0
    assert got == per_entry_trace(populated(levels), start, end)
    assert all((a >> 21) == ((n - 1) >> 21) for a, n in calls)          # never spans tables
    assert len(calls) == len({a >> 21 for a, _ in got})


def test_batch_writes_return_and_again():
    mm = populated()
    seen_pmd = []

    def fn(entries, addr, next, walk):
        entries[:] = 0                                  # writes reach the live slots
        if addr == B + (1 << 21):
            return 9                                    # stops the walk, returned
        return 0

    ops = pgwalk.MMWalkOps(pte_entry=pgwalk.batch(fn),
                           pmd_entry=lambda e, a, n, w: seen_pmd.append(a) or 0)
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B, B + (8 << 21), ops) == 9
    assert mm.entry(B, PTE) == 0 and mm.entry(B + 1536 * 4096, PTE) != 0
    assert seen_pmd == [B, B + (1 << 21)]

    again = {"n": 0}

    def fn2(entries, addr, next, walk):
        if again["n"] == 0:
            again["n"] = 1
            walk.action = pgwalk.ACTION_AGAIN           # redoes the whole PMD, as pte_entry's AGAIN
        return 0

    seen_pmd.clear()
    ops = pgwalk.MMWalkOps(pte_entry=pgwalk.batch(fn2),
                           pmd_entry=lambda e, a, n, w: seen_pmd.append(a) or 0)
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B, B + (1 << 21), ops) == 0
    assert seen_pmd == [B, B]


def test_batch_with_install_pte_keeps_address_order():
    """With install_pte, none slots go to install_pte one by one and each run
    of non-none slots to the batch, in address order."""
    mm = populated()
    events = []

    def install(addr, next, ptep, walk):
        events.append(("I", addr))
        ptep.set(pgwalk.make_pte_marker(pgwalk.PTE_MARKER_GUARD))
        return 0

    def fn(entries, addr, next, walk):
        events.append(("B", addr, next))
        return 0

    ops = pgwalk.MMWalkOps(pte_entry=pgwalk.batch(fn), install_pte=install)
    with mm.mmap_read_lock():
        assert walk_page_range_mm(mm, B, B + 10 * 4096, ops) == 0
    assert events == [("B", B, B + 2 * 4096), ("I", B + 2 * 4096), ("I", B + 3 * 4096),
                      ("I", B + 4 * 4096), ("B", B + 5 * 4096, B + 6 * 4096), ("I", B + 6 * 4096),
                      ("B", B + 7 * 4096, B + 8 * 4096), ("I", B + 8 * 4096), ("I", B + 9 * 4096)]


def test_batch_in_every_slot():
    """decisions.md 18: every slot takes a batch (see tests/walk/test_batch_slots.py
    for what each does with it); hugetlb_entry a Python one only."""
    for name in ("pte_hole", "install_pte", "test_walk", "pre_vma", "post_vma", "hugetlb_entry"):
        pgwalk.MMWalkOps(**{name: pgwalk.batch(lambda *a: 0)})
    with pytest.raises(TypeError):
        pgwalk.batch(3)


def upper_trace(mm, start, end, level_name, batched, extra=None, install=False):
    """(slot addr, value) for every slot handed to ``level_name``'s callback,
    and the PTE addresses pte_entry saw, per-entry or batched."""
    slots, ptes, calls = [], [], []

    def per_entry(e, a, n, w):
        slots.append((a, int(e)))
        return 0

    def batch_fn(entries, a, n, w):
        calls.append((a, n, len(entries)))
        size = {"pgd_entry": 1 << (39 if mm.levels == 4 else 48), "p4d_entry": 1 << 39,
                "pud_entry": 1 << 30, "pmd_entry": 1 << 21}[level_name]
        for i, v in enumerate(entries):
            slots.append((a if i == 0 else (a & ~(size - 1)) + i * size, int(v)))
        return 0

    kw = {level_name: pgwalk.batch(batch_fn) if batched else per_entry,
          "pte_entry": lambda e, a, n, w: ptes.append(a) or 0}
    kw.update(extra or {})
    ops = pgwalk.MMWalkOps(**kw)
    with mm.mmap_read_lock():
        rc = (walk_page_range_mm if install else pgwalk.walk_page_range)(mm, start, end, ops)
    return rc, slots, ptes, calls


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("level_name", ["pgd_entry", "p4d_entry", "pud_entry", "pmd_entry"])
def test_upper_level_batch_hands_over_the_same_slots(levels, level_name):
    """A batched upper-level entry slot sees exactly the slots, in order,
    that per-entry calls see; the walk below is the same."""
    start, end = B - (1 << 30), B + (8 << 21) + 4096
    mm1, mm2 = populated(levels), populated(levels)
    for m in (mm1, mm2):
        m.add_vma(B - (1 << 30), B)
        m.alloc_table(B - (1 << 21), PMD)
        m.map(B - (2 << 21), PMD)
    rc1, slots1, ptes1, _ = upper_trace(mm1, start, end, level_name, batched=False)
    rc2, slots2, ptes2, calls = upper_trace(mm2, start, end, level_name, batched=True)
    assert (rc1, slots1, ptes1) == (rc2, slots2, ptes2)
    assert len(calls) <= len(slots2)
    assert mm1.stats == mm2.stats


def test_pmd_batch_runs_actions_and_read_only_view():
    mm = populated()
    calls = []

    def fn(entries, a, n, w):
        calls.append((a, n, len(entries)))
        with pytest.raises(ValueError):
            entries[0] = 0                       # upper-level views are read only
        w.action = pgwalk.ACTION_CONTINUE        # applies to the whole run
        return 0

    ptes = []
    ops = pgwalk.MMWalkOps(pmd_entry=pgwalk.batch(fn), pte_entry=lambda e, a, n, w: ptes.append(a) or 0)
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B, B + (8 << 21), ops) == 0
    assert calls == [(B, B + (4 << 21), 4)]      # the 4 PTE tables: one run; then none slots
    assert ptes == []
    again = []

    def fn2(entries, a, n, w):
        again.append(a)
        if len(again) == 1:
            w.action = pgwalk.ACTION_AGAIN       # the run is handed over again
        return 0

    ops = pgwalk.MMWalkOps(pmd_entry=pgwalk.batch(fn2), pte_entry=lambda *a: 0)
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B, B + (8 << 21), ops) == 0
    assert again == [B, B]                       # AGAIN: the same run, handed over once more

    def stop(entries, a, n, w):
        return 7

    ops = pgwalk.MMWalkOps(pmd_entry=pgwalk.batch(stop), pte_entry=lambda *a: 1 / 0)
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B, B + (8 << 21), ops) == 7   # stops before any PTE


def test_walk_stats_count_indirect_calls():
    mm = populated()
    st = pgwalk.WalkStats()
    ops = pgwalk.MMWalkOps(pte_entry=lambda *a: 0, pmd_entry=lambda *a: 0,
                           pte_hole=lambda *a: 0)
    with mm.mmap_read_lock():
        pgwalk.walk_page_range(mm, B - 4096, B + (8 << 21), ops, stats=st)
    assert st.calls == {"pte_entry": 4 * 512, "pmd_entry": 4, "pte_hole": 1 + 4}
    assert st.indirect_calls == 4 * 512 + 4 + 5
    assert st.tables == {"pgd": 1, "pud": 1, "pmd": 1, "pte": 4}
    assert st.entries == 4 * 512
    st2 = pgwalk.WalkStats()
    with mm.mmap_read_lock():
        pgwalk.walk_page_range(mm, B, B + (8 << 21), pgwalk.MMWalkOps(pte_entry=pgwalk.batch(lambda *a: 0)),
                               stats=st2)
    assert st2.calls == {"pte_entry": 4}                 # one call per PTE table
    st3 = pgwalk.WalkStats()
    with mm.mmap_read_lock():
        walk_page_range_mm(mm, B + (8 << 21) - 4096, B + (8 << 21), pgwalk.MMWalkOps(
            install_pte=lambda a, n, p, w: 0), stats=st3)
    assert st3.mm["alloc"] == {"p4d": 0, "pud": 0, "pmd": 0, "pte": 1}
    assert st3.calls == {"install_pte": 1}


@pytest.mark.parametrize("levels", [4, 5])
def test_inlined_op_gives_what_the_slot_op_gives(levels):
    """The benchmark's inlined baseline computes exactly what the same op
    computes through the pte_entry slot (so their difference is the call)."""
    mm = populated(levels)
    mm.map(B + (5 << 21), PMD)                      # a THP: counted whole, not split
    n = 8 * 512 + 3
    op, op2 = MincoreOp(B, n), MincoreOp(B, n)
    ops = pgwalk.MMWalkOps(pte_entry=op.pte_entry, pmd_entry=op.pmd_entry, pte_hole=op.pte_hole)
    ops2 = pgwalk.MMWalkOps(pte_entry=op2.pte_entry, pmd_entry=op2.pmd_entry, pte_hole=op2.pte_hole)
    inline = op2.vec                                # written by op2's pmd_entry and by the inlined PTE op
    inline[:] = 7
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B, B + (8 << 21), ops) == 0
        assert pgwalk.walker._core._walk_inline_mincore(mm, B, B + (8 << 21), ops2, inline) == 0
    want = np.zeros(n, dtype=np.uint8)
    for k in (0, 1, 5, 511, 600, 1100, 1536):
        want[k] = 1
    want[5 * 512:6 * 512] = 1
    assert (op.vec == want).all()
    inline[n - 3:] = 0                              # past the walked range: left as it was
    assert (inline == want).all()
    assert pgwalk.pmd_trans_huge(mm.entry(B + (5 << 21), PMD))


@pytest.mark.parametrize("levels", [4, 5])
def test_pte_loop_never_leaves_its_table_at_address_zero(levels):
    """[0, 100): the kernel's `addr >= end - PAGE_SIZE` underflows there and
    would run past the PTE table; pgwalk visits the one slot (docs/decisions.md)."""
    mm = pgwalk.MM(levels)
    mm.map(0, pfn=3)
    seen = []
    ops = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: seen.append((a, n, int(e))) or 0)
    with mm.mmap_write_lock():
        assert pgwalk.walk_page_range_novma(mm, 0, 100, ops) == 0
        assert pgwalk.reference.walk_page_range_novma(mm, 0, 100, ops) == 0
    assert seen == [(0, 4096, mm.entry(0, PTE))] * 2


@pytest.mark.parametrize("impl", ["cython", "reference"])
def test_unmappable_pmd_is_not_retried_for_ever(impl):
    """A devmap PMD without PS in a no-VMA walk of user addresses: the kernel
    would retry it for ever; pgwalk calls pmd_entry three times and moves on
    (docs/decisions.md 17; found by the garbage-table fuzzer)."""
    walker = pgwalk if impl == "cython" else pgwalk.reference
    mm = pgwalk.MM(4)
    mm.set_entry(0x200000, PMD, (1 << 58) | 1)
    mm.map(0x400000)
    seen = []
    ops = pgwalk.MMWalkOps(pmd_entry=lambda e, a, n, w: seen.append(("P", a)) or 0,
                           pte_entry=lambda e, a, n, w: seen.append(("E", a)) or 0)
    with mm.mmap_write_lock():
        assert walker.walk_page_range_novma(mm, 0x200000, 0x401000, ops) == 0
    assert seen == [("P", 0x200000)] * 3 + [("P", 0x400000), ("E", 0x400000)]
    assert mm.entry(0x200000, PMD) == (1 << 58) | 1          # left as it was


def _mincore_both_shapes(mm, start, end, vec_start, n):
    """MincoreOp per PTE (pmd_entry + pte_entry) and in the kernel's shape
    (pte_range as the pmd_entry, no pte_entry): both vectors and stats."""
    a, b = MincoreOp(vec_start, n), MincoreOp(vec_start, n)
    a.vec[:] = b.vec[:] = 7
    per_pte = pgwalk.MMWalkOps(pte_entry=a.pte_entry, pmd_entry=a.pmd_entry, pte_hole=a.pte_hole)
    kernel = pgwalk.MMWalkOps(pmd_entry=b.pte_range, pte_hole=b.pte_hole)
    sa, sb = pgwalk.WalkStats(), pgwalk.WalkStats()
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, start, end, per_pte, stats=sa) == 0
        assert pgwalk.walk_page_range(mm, start, end, kernel, stats=sb) == 0
    return a.vec, b.vec, sa, sb


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("start,end,vec_off,n", [
    (B, B + (8 << 21), 0, 8 * 512),                       # the whole range, vec exact
    (B + 3 * 4096, B + (3 << 21) + 5 * 4096, 0, 8 * 512),  # unaligned ends inside tables
    (B, B + (8 << 21), 100, 1000),                        # vec starts later, ends earlier
    (B + 4096 * 509, B + 4096 * 515, 0, 600),             # across a table boundary
])
def test_kernel_shaped_mincore_gives_what_the_per_pte_op_gives(levels, start, end, vec_off, n):
    """MincoreOp.pte_range reads each PTE table itself, as the kernel's
    mincore_pte_range does (mm/mincore.c: a pmd_entry, no pte_entry, so the
    walker never descends): same bytes as the per-PTE op, with one call per
    table instead of one per PTE, and no THP split."""
    mm = populated(levels)
    mm.map(B + (5 << 21), PMD)                                  # THP: 512 ones
    mm.set_entry(B + 9 * 4096, PTE, 0x7000 | (1 << 8))          # PROTNONE: present to mincore
    va, vb, sa, sb = _mincore_both_shapes(mm, start, end, B + vec_off * 4096, n)
    assert (va == vb).all()
    lo = max(0, (start - B) // 4096 - vec_off)
    hi = min(n, -(-(end - B) // 4096) - vec_off)
    assert (vb[lo:hi] != 7).all() and (vb[:lo] == 7).all() and (vb[hi:] == 7).all()
    tables = sum(1 for i in range(8) if i < 4 or i == 5)        # PTE tables and the THP
    assert sa.calls.get("pte_entry", 0) > 0 and "pte_entry" not in sb.calls
    assert sb.calls["pmd_entry"] <= tables
    assert pgwalk.pmd_trans_huge(mm.entry(B + (5 << 21), PMD))


@given(st.lists(st.sampled_from(["none", "present", "protnone", "swap", "marker"]),
                min_size=512, max_size=512),
       st.integers(0, 511), st.integers(1, 512))
@settings(max_examples=60, deadline=None)
def test_kernel_shaped_mincore_random_tables(kinds, lo, length):
    mm = pgwalk.MM(4)
    mm.add_vma(B, B + (1 << 21))
    mm.alloc_table(B, PMD)
    values = {"none": 0, "present": 0x5067, "protnone": 0x5000 | (1 << 8),
              "swap": pgwalk.swp_entry_to_pte(pgwalk.swp_entry(1, 9)),
              "marker": pgwalk.make_pte_marker(pgwalk.PTE_MARKER_GUARD)}
    for i, k in enumerate(kinds):
        if k != "none":
            mm.set_entry(B + i * 4096, PTE, values[k])
    end = B + min(512, lo + length) * 4096
    va, vb, _, _ = _mincore_both_shapes(mm, B + lo * 4096, end, B, 512)
    assert (va == vb).all()
    want = [1 if k in ("present", "protnone") else 0 for k in kinds]
    assert vb[lo:min(512, lo + length)].tolist() == want[lo:min(512, lo + length)]
