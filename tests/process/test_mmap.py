"""mmap and munmap (mm/mmap.c, mm/vma.c): argument errnos, address
choice, MAP_FIXED replacing what was there, MAP_FIXED_NOREPLACE, MAP_POPULATE
and munmap splitting VMAs.  Scenario tests run on ``pgwalk.MM`` and, where
this kernel can, live (tests/helpers/live_kernel.py): every observation must
be the same."""

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


def test_mmap_argument_errnos():
    """mmap: length 0 -> EINVAL; no MAP_PRIVATE/MAP_SHARED -> EINVAL; a file
    mapping without a file -> EBADF; MAP_FIXED at an unaligned address ->
    EINVAL; MAP_FIXED_NOREPLACE over a mapping -> EEXIST; MAP_SHARED_VALIDATE
    with an unknown flag -> EOPNOTSUPP."""
    mm = P.MM()
    assert err(mm.mmap, None, 0, RW, PRIV) == errno.EINVAL
    assert err(mm.mmap, None, PS, RW, P.MAP_ANONYMOUS) == errno.EINVAL
    assert err(mm.mmap, None, PS, RW, P.MAP_PRIVATE) == errno.EBADF
    assert err(mm.mmap, 0x10001000 + 1, PS, RW, PRIV | P.MAP_FIXED) == errno.EINVAL
    a = mm.mmap(None, 4 * PS, RW, PRIV)
    assert err(mm.mmap, a + PS, PS, RW, PRIV | P.MAP_FIXED_NOREPLACE) == errno.EEXIST
    assert err(mm.mmap, None, PS, RW, P.MAP_SHARED_VALIDATE | P.MAP_ANONYMOUS | (1 << 22)) \
        == errno.EOPNOTSUPP

def test_mmap_addresses_top_down_hint_and_thp_alignment():
    """Without MAP_FIXED the address is chosen top-down below the mmap base;
    a free hint is honoured; a private mapping whose length is a multiple
    of 2 MiB is 2 MiB-aligned (thp_get_unmapped_area); adjacent compatible
    anonymous mappings merge into one VMA."""
    mm = P.MM()
    a = mm.mmap(None, 4 * PS, RW, PRIV)
    b = mm.mmap(None, 4 * PS, RW, PRIV)
    assert b + 4 * PS == a and len(mm.vmas) == 1
    h = mm.mmap(0x200000000, PS, RW, PRIV)
    assert h == 0x200000000
    t = mm.mmap(None, 4 << 20, RW, PRIV)
    assert t % (2 << 20) == 0
    s = mm.mmap(None, 4 * PS, RW, SHARED)
    assert len([v for v in mm.vmas if v.vm_start in (s,)]) == 1
