"""The batched, caller-driven walker (``pt_range_walk``, from the RFC
"Implement a new generic pagewalk API", v3): an iterator over the entries of
one VMA's range, one record per entry or batch, instead of callbacks.

The kernel's interface is three calls on a caller-owned ``struct
pt_range_walk``: ``pt_range_walk_start``, ``pt_range_walk_next`` (each
returns a ``PTW_*`` type and fills the struct) and ``pt_range_walk_done``.
``pt_range_walk(vma, start, end, flags)`` drives them as a Python iterator
(the compiled steps of ``_ptrange``; ``ptrange_reference`` is the same
walker in plain Python) and yields a ``PtRangeRecord`` per step until
``PTW_DONE``.

Rules of the iterator (the driver of the steps, shared by both walkers):

* the mmap lock must be held (read or write) at every step, as the kernel's
  ``mmap_assert_locked``: otherwise ``LockAssertionError``;
* a step after the mm changed under the iterator (the mmap write lock was
  taken and released, or a page table was freed, since the previous step)
  raises ``RuntimeError``: the records and table pointers it kept may be
  stale;
* closing or dropping the iterator runs ``pt_range_walk_done``.

The iterator (``PtRangeWalk``) and the record (``PtRangeRecord``) are
compiled (``_ptrange``), with a C path for the compiled steps that makes
these checks without calling Python while the mm and its lock are
unchanged; a stepper in Python (the reference's) is driven through its
methods under the same rules.  They are re-exported here.
"""

from ..constants import HUGE_ZERO_PFN, ZERO_PFN
from ._args import check_pt_range_args as check_args
from ._ptrange import RECORD_FIELDS, PtRangeRecord, PtRangeWalk, mm_generation

__all__ = ["RECORD_FIELDS", "PtRangeRecord", "PtRangeWalk", "check_args", "default_folio",
           "mm_generation"]


def default_folio(pfn):
    """The folio answer of an address space that knows nothing of folios:
    every PFN its own order-0 folio; the two shared zero pages are zero pages.
    Returns (head PFN, number of pages, is a zero page)."""
    return pfn, 1, pfn in (ZERO_PFN, HUGE_ZERO_PFN)
