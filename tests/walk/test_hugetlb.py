"""Hugetlb walks with 1 GiB pages (no golden trace has them): the
PUD-level slot is handed to hugetlb_entry whenever the tables above it exist,
even when it is none; hmask is the unsigned ~(1 GiB - 1); ranges are clipped
per huge page; without those tables each huge page is a pte_hole(-1)."""

import pytest

import pgwalk
from pgwalk.constants import PUD
from helpers.support import IMPLS

GiB = 1 << 30
HMASK_1G = 0xFFFF_FFFF_C000_0000


def walk(impl, mm, start, end):
    trace = []
    ops = pgwalk.MMWalkOps(
        hugetlb_entry=lambda e, hmask, a, n, w: trace.append(("T", a, n, hmask, int(e))) or 0,
        pte_hole=lambda a, n, d, w: trace.append(("H", a, n, d)) or 0,
        pte_entry=lambda e, a, n, w: trace.append(("E", a)) or 0)
    with mm.mmap_read_lock():
        rc = impl.walk_page_range(mm, start, end, ops)
    mm.validate()
    return rc, trace


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
def test_1g_hugetlb_without_tables_reports_holes(impl, levels):
    mm = pgwalk.MM(levels)
    mm.add_vma(2 * GiB, 4 * GiB, pgwalk.VM_HUGETLB, hugepage_size=GiB)
    assert walk(impl, mm, 2 * GiB, 4 * GiB) == (0, [("H", 2 * GiB, 3 * GiB, -1),
                                                   ("H", 3 * GiB, 4 * GiB, -1)])


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
def test_1g_hugetlb_slots_and_clipping(impl, levels):
    mm = pgwalk.MM(levels)
    mm.add_vma(2 * GiB, 4 * GiB, pgwalk.VM_HUGETLB, hugepage_size=GiB)
    leaf = mm.map(3 * GiB, level=PUD)          # the PUD table above 2G and 3G now exists
    rc, trace = walk(impl, mm, 2 * GiB + 4096, 3 * GiB + 8192)
    assert rc == 0
    assert trace == [("T", 2 * GiB + 4096, 3 * GiB, HMASK_1G, 0),
                     ("T", 3 * GiB, 3 * GiB + 8192, HMASK_1G, leaf)]
    assert mm.entry(3 * GiB, PUD) == leaf      # a hugetlb walk never splits


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
def test_hugetlb_entry_return_stops(impl):
    mm = pgwalk.MM(4)
    mm.add_vma(2 * GiB, 5 * GiB, pgwalk.VM_HUGETLB, hugepage_size=GiB)
    mm.alloc_table(2 * GiB, pgwalk.PGD)
    seen = []
    ops = pgwalk.MMWalkOps(hugetlb_entry=lambda e, h, a, n, w: seen.append(a) or (7 if a == 3 * GiB else 0))
    with mm.mmap_read_lock():
        assert impl.walk_page_range(mm, 2 * GiB, 5 * GiB, ops) == 7
    assert seen == [2 * GiB, 3 * GiB]
