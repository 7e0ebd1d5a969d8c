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

Rules of this module (the Python driver, shared by both walkers):

* the mmap lock must be held (read or write) at every step, as the kernel's
  ``mmap_assert_locked``: otherwise ``LockAssertionError``;
* a step after the mm changed under the iterator (the mmap write lock was
  taken and released, or a page table was freed, since the previous step)
  raises ``RuntimeError``: the records and table pointers it kept may be
  stale;
* closing or dropping the iterator runs ``pt_range_walk_done``.
"""

import warnings

from ..constants import (
    HUGE_ZERO_PFN, PAGE_SIZE, PT_TYPE_ALL, PTW_ABORT, PTW_DONE, ZERO_PFN,
)
from ._args import check_range
from ._core import LockAssertionError, PageTables
from .vma import VMA

__all__ = ["PtRangeRecord", "PtRangeWalk", "default_folio", "mm_generation"]

RECORD_FIELDS = ("type", "level", "curr_addr", "next_addr", "nr_entries", "size",
                 "writable", "young", "dirty", "present", "pmd_shared", "entry",
                 "softleaf_entry", "pfn", "folio")


class PtRangeRecord:
    """What one step reported: the ``struct pt_range_walk`` fields after a
    step returned ``type``.  ``entry`` is the raw value of the (first) entry
    the record is about; ``pfn`` is the page at ``curr_addr`` (the kernel's
    ``ptw->page``) and ``folio`` its folio's head PFN, -1 where the kernel
    leaves them NULL.  ``softleaf_entry`` is the kernel's field as it is left:
    set by the last non-present entry met, never cleared."""

    __slots__ = RECORD_FIELDS

    def __init__(self, type, level, curr_addr, next_addr, nr_entries, size, writable, young,
                 dirty, present, pmd_shared, entry, softleaf_entry, pfn, folio):
        self.type, self.level, self.curr_addr, self.next_addr = type, level, curr_addr, next_addr
        self.nr_entries, self.size, self.writable, self.young = nr_entries, size, writable, young
        self.dirty, self.present, self.pmd_shared, self.entry = dirty, present, pmd_shared, entry
        self.softleaf_entry, self.pfn, self.folio = softleaf_entry, pfn, folio

    def astuple(self):
        """The record's fields as a tuple in ``RECORD_FIELDS`` order (what ``==``
        compares)."""
        return tuple(getattr(self, n) for n in RECORD_FIELDS)

    def __eq__(self, other):
        return isinstance(other, PtRangeRecord) and self.astuple() == other.astuple()

    __hash__ = None

    def __repr__(self):
        from .. import constants as C
        names = {getattr(C, n): n for n in dir(C) if n.startswith("PTW_") and "LEVEL" not in n}
        levels = {C.PTW_PUD_LEVEL: "pud", C.PTW_PMD_LEVEL: "pmd", C.PTW_PTE_LEVEL: "pte"}
        return (f"<{names.get(self.type, self.type)} {levels.get(self.level, self.level)} "
                f"[{self.curr_addr:#x}, {self.next_addr:#x}) nr={self.nr_entries} "
                f"entry={self.entry:#x} pfn={self.pfn} folio={self.folio}"
                f"{' W' if self.writable else ''}{' Y' if self.young else ''}"
                f"{' D' if self.dirty else ''}{' P' if self.present else ''}>")


def default_folio(pfn):
    """The folio answer of an address space that knows nothing of folios:
    every PFN its own order-0 folio; the two shared zero pages are zero pages.
    Returns (head PFN, number of pages, is a zero page)."""
    return pfn, 1, pfn in (ZERO_PFN, HUGE_ZERO_PFN)


def mm_generation(mm):
    """What changes when the mm may have changed under a live iterator: the
    mmap lock's write count and the number of page tables freed."""
    freed = mm.stats["freed"]
    return (mm._lock.seq, sum(freed.values()))


def check_args(vma, start, end, flags, mm):
    """Python's checks before any kernel rule (ValueError/TypeError naming the
    argument).  Returns the mm to walk (None: the VMA has no mm)."""
    if not isinstance(vma, VMA):
        raise TypeError(f"vma must be a pgwalk.VMA, not {type(vma).__name__}")
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    if flags < 0 or flags & ~PT_TYPE_ALL:
        raise ValueError(f"flags must be a set of PT_TYPE_* bits: {flags:#x}")
    vmm = vma.vm_mm
    if mm is None:
        mm = vmm
    elif not isinstance(mm, PageTables):
        raise TypeError(f"mm must be a pgwalk.MM or None, not {type(mm).__name__}")
    elif mm is not vmm:
        # the kernel would read one mm's tables with another mm's VMA
        raise ValueError("mm: the VMA does not belong to this mm")
    check_range(mm, start, end)
    # An unaligned range can make a PTE batch empty (max_nr 0), and the
    # kernel's walk would then return the same record forever.
    if start % PAGE_SIZE:
        raise ValueError(f"start {start:#x} is not page aligned")
    if end % PAGE_SIZE:
        raise ValueError(f"end {end:#x} is not page aligned")
    return mm


class PtRangeWalk:
    """The iterator over one walk: each ``next()`` is one
    ``pt_range_walk_start``/``_next`` step on ``stepper`` (the compiled or the
    reference walker), under the driver's rules (module docstring)."""

    def __init__(self, stepper, mm, vma, start, end, flags):
        self._stepper = stepper
        self.mm, self.vma, self.start, self.end, self.flags = mm, vma, start, end, flags
        self._started = False
        self._finished = False
        self._gen = None
        self.last_type = None
        # the stepper's own (cheaper) reading of mm_generation, if it has one
        gen = getattr(stepper, "generation", None)
        self._generation = gen if gen is not None else (lambda: mm_generation(mm))

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        st = self._stepper
        mm = self.mm
        if mm is not None:
            gen = self._generation()
            if self._started and gen != self._gen:
                self.close()
                raise RuntimeError("pt_range_walk: the mm changed under the walk (a page "
                                   "table was freed or the mmap write lock was taken "
                                   "since the previous step); start a new walk")
            if st.will_step(self._started) and not mm._lock.held():
                raise LockAssertionError("pt_range_walk needs the mmap lock: "
                                         "use `with mm.mmap_read_lock():`")
            self._gen = gen
        t = st.next() if self._started else st.start()
        self._started = True
        self.last_type = t
        if st.warned():
            warnings.warn(f"pt_range_walk: the walk's address {st.addr():#x} is outside "
                          f"{self.vma!r} (the kernel warns once and returns PTW_DONE)",
                          RuntimeWarning, stacklevel=2)
        if t == PTW_DONE or t == PTW_ABORT:
            self.close()
            raise StopIteration
        return st.record(t)

    def close(self):
        """``pt_range_walk_done``: release what the walk holds; no further records."""
        if not self._finished:
            self._finished = True
            self._stepper.done()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
