"""madvise (mm/madvise.c) outside the guard and collapse advices (those
have test_guard_regions.py and test_collapse.py): errnos, ranges with holes,
DONTNEED / DONTNEED_LOCKED / REMOVE / FREE and the populate advices.
Scenario tests run on ``pgwalk.MM`` and, where this kernel can, live
(tests/helpers/live_kernel.py)."""

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


def test_dontneed_reclaims_empty_pte_tables_but_not_guarded_ones():
    """MADV_DONTNEED over a whole 2 MiB range frees its PTE table when it
    is left empty (6.14+ PT reclaim), but not one that holds a guard marker."""
    mm = P.MM()
    a = mm.mmap(None, 4 << 20, RW, PRIV)
    mm.madvise(a, 4 << 20, P.MADV_NOHUGEPAGE)
    mm.madvise(a, 4 << 20, P.MADV_POPULATE_WRITE)
    mm.madvise(a + (2 << 20), PS, P.MADV_GUARD_INSTALL)
    mm.madvise(a, 4 << 20, P.MADV_DONTNEED)
    assert mm.entry(a, P.PMD) == 0
    assert mm.entry(a + (2 << 20), P.PMD) != 0
