"""The process model's mm: ``MM``, an ``AddressSpace`` with a process's
physical-page bookkeeping (``Phys``, shared with forked children through a
``PhysGroup``), its syscalls and faults (``ProcessMixin``, ``syscalls.py``),
the madvise, mremap and fork families (``madvise.py``, ``mremap.py``,
``fork.py``) and its introspection (``IntrospectMixin``).

This is the one module that puts the families together: none of them
imports it, so the process model has no import cycle."""

import weakref

from ..constants import FIRST_DATA_PFN, HUGE_ZERO_PFN, PAGE_SHIFT, ZERO_PFN
from ..walker import AddressSpace
from . import madvise as _madvise
from . import mremap as _mremap
from ._mmops import FolioHook, Phys
from .objects import PF_LARGE, PF_SHMEM
from .fork import copy_mm
from .introspect import IntrospectMixin
from .syscalls import ProcessMixin
from .validate import validate_process


class PhysGroup:
    """The mms that share one physical-memory map (``Phys``): an mm and the
    processes forked from it.  ``validate()`` sums their mappings to check
    the per-PFN map counts, which only holds while the group is *exact*:
    no member edited its tables or VMAs with the low-level calls (``map``,
    ``set_entry``, ``add_vma``), which bypass the physical-page bookkeeping,
    and no member was dropped without ``exit()`` (its mappings vanished
    with it while the map counts stayed)."""

    __slots__ = ("members", "exited", "inexact", "_seq", "__weakref__")

    def __init__(self):
        self.members = {}        # key -> weakref to the mm
        self.exited = set()      # keys of members that ran exit()
        self.inexact = None      # why the map counts can no longer be checked
        self._seq = 0

    def add(self, mm):
        key = self._seq
        self._seq += 1
        gref = weakref.ref(self)

        def gone(_ref, key=key):
            group = gref()
            if group is None:
                return
            group.members.pop(key, None)
            if key not in group.exited and group.inexact is None:
                group.inexact = "an mm of the group was dropped without exit()"
        self.members[key] = weakref.ref(mm, gone)
        return key

    def live(self):
        return [m for m in (r() for r in list(self.members.values())) if m is not None]


class MM(ProcessMixin, IntrospectMixin, AddressSpace):
    """A model process address space (``struct mm_struct``): the tables,
    VMAs and mmap lock of ``AddressSpace``; the process model (``mmap``,
    ``touch``, ``madvise``, ``fork``, ... in ``syscalls.py``) and its
    introspection (``pagemap``, ``mincore``, ``smaps``, ``ptdump`` in
    ``introspect.py``)."""

    def __init__(self, levels=4, is_init_mm=False):
        super().__init__(levels, is_init_mm)
        self._phys = Phys(FIRST_DATA_PFN)   # shared with forked children
        self._phys.attach(self)             # splits that clear shmem PMDs update its counts
        self._join_group(PhysGroup())
        self._exited = False

    def _join_group(self, group):
        self._phys_group = group
        self._group_key = group.add(self)

    def _lowlevel_edit(self, what):
        """A low-level edit bypasses the process model's bookkeeping: the
        process-model invariants are no longer checked for this mm's group."""
        group = self._phys_group
        if group.inexact is None:
            group.inexact = f"low-level edit ({what})"

    def pt_folio(self, vma, addr, pfn):
        """``page_folio`` from the physical-memory model (for
        ``pt_range_walk``): a shmem page met at its place in the object has
        the folio of its order (``obj.order``); another page flagged
        PF_LARGE belongs to a PMD-sized THP (head aligned to 512 PFNs);
        any other page is an order-0 folio.  ``_mmops.FolioHook`` is the
        same answer in C."""
        flags = self._phys.flags(pfn) if pfn >= 0 else 0
        obj = vma.vm_file
        if obj is not None and flags & PF_SHMEM:
            idx = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
            if 0 <= idx < len(obj.pages) and int(obj.pages[idx]) == pfn:
                n = 1 << int(obj.order[idx])
                return int(obj.pages[idx & ~(n - 1)]), n, False
        if flags & PF_LARGE:
            return pfn & ~511, 512, False
        return pfn, 1, pfn in (ZERO_PFN, HUGE_ZERO_PFN)

    def pt_folio_hook(self, vma):
        """``pt_folio`` for the compiled walker: a C function bound to ``vma``."""
        return FolioHook(self._phys, vma)

    def alloc_pfn(self, nr=1, align=1):
        """Hand out ``nr`` fresh data PFNs (aligned), from the group's physical memory."""
        return self._phys.alloc(nr, align)

    def madvise(self, addr, length, advice):
        """madvise(2), including MADV_GUARD_INSTALL / MADV_GUARD_REMOVE."""
        self._check_alive()
        return _madvise.madvise(self, addr, length, advice)

    def mremap(self, addr, old_len, new_len, flags=0, new_addr=None):
        """mremap(2); returns the (new) address."""
        self._check_alive()
        return _mremap.mremap(self, addr, old_len, new_len, flags, new_addr)

    def fork(self):
        """fork(2): a child mm sharing anonymous pages copy-on-write, guard
        markers copied, WIPEONFORK ranges empty, DONTFORK VMAs absent."""
        self._check_alive()
        child = MM(self.levels)
        child._phys = self._phys
        child._phys.attach(child)
        child._join_group(self._phys_group)
        return copy_mm(self, child)

    def validate(self):
        """Check every structural invariant (``AddressSpace.validate``) and,
        for a user mm whose group only the process model has touched, what
        the kernel guarantees of a process's tables (``validate.py``); raise
        InvariantError on the first broken one."""
        super().validate()
        if not self.is_init_mm and self._phys_group.inexact is None:
            validate_process(self)


def init_mm(levels=4):
    """A new, empty kernel mm (no VMAs), for no-VMA walks of kernel addresses."""
    return MM(levels, is_init_mm=True)


