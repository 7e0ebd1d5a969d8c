"""mremap (mm/mremap.c): argument errnos, shrinking in place, growing,
moves (MREMAP_FIXED, MREMAP_DONTUNMAP, across VMAs) and what a move leaves
in the page tables.  Scenario tests run on ``pgwalk.MM`` and, where this
kernel can, live (tests/helpers/live_kernel.py)."""

import errno

import numpy as np
import pytest

import pgwalk as P
from pgwalk import PAGE_SIZE as PS

from helpers import live_kernel as L

RW = P.PROT_READ | P.PROT_WRITE
PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS
SHARED = P.MAP_SHARED | P.MAP_ANONYMOUS
PA = PRIV | P.MAP_FIXED                 # the scenario steps' mappings (tests/helpers/live_kernel.py)
SA = SHARED | P.MAP_FIXED
PRESENT, SWAP, FILE, GUARD, EXCL = 1 << 63, 1 << 62, 1 << 61, 1 << 58, 1 << 56


def err(fn, *a):
    with pytest.raises(OSError) as e:
        fn(*a)
    return e.value.errno


def run(steps, npages):
    """The steps on the model and, where this kernel can, live (every
    observation identical: ``live_kernel.run_checked``)."""
    return L.run_checked(steps, npages)


def test_mremap_move_leaves_an_empty_pte_table_at_the_destination():
    """move_page_tables (6.18) allocates the destination's PMD and PTE table
    for every extent whose source PMD is a table, even when no PTE in the
    extent is set; that empty table then stops a THP fault there (a read
    fault maps the 4K zero page, not the huge zero page).  An extent whose
    source PMD is none allocates nothing at the destination."""
    mm = P.MM()
    base = 0x7F0000000000
    mm.mmap(base, 1023 * PS, RW, PRIV | P.MAP_FIXED)
    mm.madvise(base, 1023 * PS, P.MADV_HUGEPAGE)
    mm.touch(base + 941 * PS)                       # a PTE table for block 512..1023
    mm.mremap(base + 887 * PS, 42 * PS, 16 * PS, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, base + 91 * PS)
    v = mm.entry(base, P.PMD)
    assert not P.entries.pte_none(v) and not P.entries.pmd_leaf(v)
    mm.madvise(base + 119 * PS, PS, P.MADV_POPULATE_READ)
    assert mm.pagemap(base + 119 * PS, base + 120 * PS)[0] & (PRESENT | FILE) == PRESENT

    mm = P.MM()
    mm.mmap(base, 1024 * PS, RW, PRIV | P.MAP_FIXED)
    mm.mremap(base + 900 * PS, 8 * PS, 8 * PS, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, base + 91 * PS)
    assert P.entries.pte_none(mm.entry(base, P.PMD))
    mm.validate()
