"""mprotect (mm/mprotect.c) and mlock / munlock (mm/mlock.c): VMA splits
and merges, partial success before a hole, write faults after a downgrade,
and mlock's populate.  Scenario tests run on ``pgwalk.MM`` and, where this
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
