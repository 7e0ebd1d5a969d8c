"""What the syscall-family tests (tests/process/test_<family>.py) share:
mapping flags, pagemap bits, an errno catcher and the model-and-live
scenario runner."""

import pytest

import pgwalk as P

from . import live_kernel as L

RW = P.PROT_READ | P.PROT_WRITE
PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS
SHARED = P.MAP_SHARED | P.MAP_ANONYMOUS
PA = PRIV | P.MAP_FIXED                 # the scenario steps' mappings (live_kernel.py)
SA = SHARED | P.MAP_FIXED
# the pagemap bits, under short names
PRESENT, SWAP, FILE, GUARD, EXCL = (P.PM_PRESENT, P.PM_SWAP, P.PM_FILE, P.PM_GUARD_REGION,
                                    P.PM_MMAP_EXCLUSIVE)


def err(fn, *a):
    """The errno of the OSError ``fn(*a)`` must raise."""
    with pytest.raises(OSError) as e:
        fn(*a)
    return e.value.errno


def run(steps, npages):
    """The steps on the model and, where this kernel can, live (every
    observation identical: ``live_kernel.run_checked``)."""
    return L.run_checked(steps, npages)
