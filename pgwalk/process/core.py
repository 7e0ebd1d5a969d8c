"""``ProcessCore``: the named internal interface of the process model.

A process's mm is an ``AddressSpace`` (the walker's tables, VMA tree and
mmap lock) plus the physical-page bookkeeping it shares with forked
children (``phys``, a ``Phys`` of ``_mmops``; ``phys_group``).  The syscall
families (``mmap.py``, ``mprotect.py``, ``faults.py``, ``madvise.py``,
``mremap.py``, ``fork.py``, ``collapse.py``, ``guard.py``, ``shmem.py``,
``introspect.py``, ``validate.py``) are functions of an mm that use only
what this class defines, besides the walker's public calls:

* VMA bookkeeping: ``vmas_in``, ``new_vma``, ``insert_vma``, ``remove_vma``,
  ``split_vma``, ``isolate``, ``can_merge``, ``merge_pair``,
  ``merge_around``, ``anon_vma_prepare``;
* the table work, each a walk with a C op of ``_mmops``: ``new_op``,
  ``setup_op``, ``walk_ops``, ``zap``, ``free_pgtables``, ``unmap``;
* the process group: ``live_mms``, ``join_group``, ``check_alive``,
  ``mark_inexact``.

``pgwalk.MM`` (``mm.py``) is this class with the syscalls as methods.
"""

import weakref

from ..constants import (
    FIRST_DATA_PFN, HUGE_ZERO_PFN, PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, VM_LOCKED, VM_MAYBE_GUARD,
    VM_SHARED, VM_SOFTDIRTY, VM_SPECIAL, ZERO_PFN,
)
from ..walker import AddressSpace, MMWalkOps, VMA, walk_page_range, walk_page_range_novma
from ._mmops import FolioHook, MMOp, Phys
from .objects import AnonVma, PF_LARGE, PF_SHMEM, pte_prot, rw_bits, VM_ACCESS, zero_prot

VM_MERGE_IGNORE = VM_SOFTDIRTY | VM_MAYBE_GUARD      # "sticky" flags do not block merges


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
        """Add ``mm`` to the group, held weakly; returns its key.  Should the mm vanish
        without ``exit()``, the group becomes inexact."""
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
        """The members that still exist (exited or not), as a list of mms."""
        return [m for m in (r() for r in list(self.members.values())) if m is not None]


class ProcessCore(AddressSpace):
    """An ``AddressSpace`` with a process's physical-page bookkeeping and
    the operations the syscall families share (see the module docstring)."""

    def __init__(self, levels=4, is_init_mm=False):
        super().__init__(levels, is_init_mm)
        self.phys = Phys(FIRST_DATA_PFN)   # shared with forked children
        self.phys.attach(self)             # splits that clear shmem PMDs update its counts
        self.join_group(PhysGroup())
        self.exited = False

    def join_group(self, group):
        """Join ``group``: the mms that share one physical memory."""
        self.phys_group = group
        self.group_key = group.add(self)

    def _lowlevel_edit(self, what):
        """A low-level edit bypasses the process model's bookkeeping: the
        process-model invariants are no longer checked for this mm's group."""
        group = self.phys_group
        if group.inexact is None:
            group.inexact = f"low-level edit ({what})"

    def mark_inexact(self, why):
        """This mm's tables did not come from the process model (a snapshot):
        its group's map counts are no longer checked by ``validate()``."""
        group = self.phys_group
        if group.inexact is None:
            group.inexact = why

    def alloc_pfn(self, nr=1, align=1):
        """Hand out ``nr`` fresh data PFNs (aligned), from the group's physical memory."""
        return self.phys.alloc(nr, align)

    def pt_folio(self, vma, addr, pfn):
        """``page_folio`` from the physical-memory model (for
        ``pt_range_walk``): a shmem page met at its place in the object has
        the folio of its order (``obj.order``); another page flagged
        PF_LARGE belongs to a PMD-sized THP (head aligned to 512 PFNs);
        any other page is an order-0 folio.  ``_mmops.FolioHook`` is the
        same answer in C."""
        flags = self.phys.flags(pfn) if pfn >= 0 else 0
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
        return FolioHook(self.phys, vma)

    def new_op(self):
        """A fresh C op (``_mmops.MMOp``) on this mm's tables and physical memory, to be
        set up and walked with."""
        return MMOp(self.phys, self)


    def walk_ops(self, op, name, **kw):
        """The ``MMWalkOps`` whose callbacks are ``op``'s C slot functions for the
        operation ``name`` (``populate``, ``move``, ...); ``kw`` sets further ops
        fields."""
        return MMWalkOps(**op.slots(name), **kw)


    def check_alive(self):
        """Raise RuntimeError if this mm has run ``exit()``: the syscalls refuse an
        exited mm."""
        if self.exited:
            raise RuntimeError("this mm has exited")


    def vmas_in(self, start, end):
        """The VMAs overlapping [start, end), in order."""
        return self.vma_tree.range(start, end)


    def new_vma(self, start, end, vm_flags, pgoff, vm_ops=None, vm_file=None, anon_vma=None):
        """A new VMA of this mm for ``[start, end)`` with its page offset, ops, shmem
        object and anon_vma; not in the VMA tree yet (see ``insert_vma``)."""
        v = VMA(start, end, vm_flags, vm_mm=self, vm_ops=vm_ops)
        v.vm_pgoff = pgoff
        v.vm_file = vm_file
        v.anon_vma = anon_vma
        return v


    def insert_vma(self, vma):
        """Add ``vma`` to this mm's VMA tree (ValueError if it overlaps another)."""
        self.vma_tree.insert(vma)


    def remove_vma(self, vma):
        """Take ``vma`` out of the VMA tree; once no VMA of this mm maps its shmem
        object any more, the mm leaves the object's list of mms."""
        self.vma_tree.remove(vma)
        if vma.vm_file is not None and not any(v.vm_file is vma.vm_file for v in self.vma_tree):
            try:
                vma.vm_file.mms.remove(self)
            except ValueError:
                pass


    def split_vma(self, vma, addr):
        """Split ``vma`` at ``addr``; returns the upper part (the lower part
        is ``vma`` itself)."""
        if not vma.vm_start < addr < vma.vm_end:
            raise AssertionError("bad split")
        if addr % PMD_SIZE:
            # vma_adjust_trans_huge: a huge PMD across the new boundary is split
            op = self.new_op().setup()
            walk_page_range(self, addr, addr + PAGE_SIZE, self.walk_ops(op, "split"))
        hi = self.new_vma(addr, vma.vm_end, vma.vm_flags,
                           vma.vm_pgoff + (addr - vma.vm_start) // PAGE_SIZE,
                           vma.vm_ops, vma.vm_file, vma.anon_vma)
        self.vma_tree.split(vma, hi)
        return hi


    def isolate(self, start, end):
        """Split so that [start, end) is covered by whole VMAs; returns them."""
        out = []
        for vma in self.vmas_in(start, end):
            if vma.vm_start < start:
                vma = self.split_vma(vma, start)
            if vma.vm_end > end:
                self.split_vma(vma, end)
            out.append(vma)
        return out


    @staticmethod
    def can_merge(a, b):
        """Whether ``a`` and the VMA ``b`` right after it may become one VMA: adjacent,
        equal flags but for the sticky ones, same object and ops, continuous page
        offsets, not special, and compatible anon_vmas."""
        if a.vm_end != b.vm_start:
            return False
        if (a.vm_flags ^ b.vm_flags) & ~VM_MERGE_IGNORE:
            return False
        if a.vm_file is not b.vm_file or a.vm_ops != b.vm_ops:
            return False
        if a.vm_pgoff + (a.vm_end - a.vm_start) // PAGE_SIZE != b.vm_pgoff:
            return False
        if a.vm_flags & VM_SPECIAL:
            return False
        if a.anon_vma is None and b.anon_vma is None:
            return True
        if a.anon_vma is None or b.anon_vma is None:
            # vma_had_uncowed_parents: a forked child's VMA (its anon_vma
            # chain is not singular) only merges with the same anon_vma
            other = a.anon_vma or b.anon_vma
            return other.singular
        return a.anon_vma is b.anon_vma


    def merge_pair(self, a, b):
        """Merge ``b`` into its lower neighbour ``a``: ``a`` covers both, keeps an
        anon_vma of either and gains ``b``'s sticky flags.  Returns ``a``."""
        self.vma_tree.merge(a, b)
        a.anon_vma = a.anon_vma or b.anon_vma
        a.vm_flags |= b.vm_flags & VM_MERGE_IGNORE
        return a


    def merge_around(self, start, end):
        """Try to merge VMAs across every boundary in [start, end] (the
        edges of a range whose VMAs just changed, and the boundaries inside)."""
        vmas = self.vma_tree
        i = 0
        while i + 1 < len(vmas):
            a, b = vmas[i], vmas[i + 1]
            if start <= a.vm_end <= end and self.can_merge(a, b):
                self.merge_pair(a, b)
                continue
            i += 1


    def anon_vma_prepare(self, vma):
        """``anon_vma_prepare``: give ``vma`` an anon_vma before it gets anonymous
        pages, reusing the singular one of a compatible neighbour (so that the two can
        still merge), else a new one."""
        if vma.anon_vma is not None:
            return
        for other in (self.vma_tree.next(vma), self.vma_tree.prev(vma)):
            if other is None or other.anon_vma is None or not other.anon_vma.singular:
                continue
            if other.vm_end != vma.vm_start and vma.vm_end != other.vm_start:
                continue
            if (other.vm_flags ^ vma.vm_flags) & ~(VM_ACCESS | VM_MERGE_IGNORE):
                continue
            if other.vm_file is not vma.vm_file:
                continue
            if other.vm_pgoff - vma.vm_pgoff != (other.vm_start - vma.vm_start) // PAGE_SIZE:
                continue
            vma.anon_vma = other.anon_vma
            return
        vma.anon_vma = AnonVma()


    def live_mms(self):
        """How many mms (this one and its fork relatives) are alive."""
        g = self.phys_group
        return sum(1 for k, r in g.members.items() if k not in g.exited and r() is not None)


    def setup_op(self, op, vma, **kw):
        """Per-VMA fields of an op (protections, shmem object, locked VMAs
        near it, whose pages a folio split must not remap to the zero page)."""
        shm = vma.vm_file.pages if vma.vm_file is not None else None
        lk = [(v.vm_start, v.vm_end) for v in self.vmas_in(max(0, vma.vm_start - PMD_SIZE),
                                                             vma.vm_end + PMD_SIZE)
              if v.vm_flags & VM_LOCKED]
        op.setup(prot=pte_prot(vma.vm_flags), zprot=zero_prot(vma.vm_flags),
                 rw=rw_bits(vma.vm_flags), shared=bool(vma.vm_flags & VM_SHARED),
                 shm=shm, pgoff0=vma.vm_pgoff if shm is not None else 0,
                 vstart=vma.vm_start, nmms=self.live_mms(),
                 shm_order=vma.vm_file.order if shm is not None else None, **kw)
        return op.no_zero_remap(lk)


    def zap(self, start, end, zap_markers=False, reclaim=False):
        """zap_page_range: unmap pages in [start, end) (VMA walk); guard
        markers stay unless ``zap_markers`` (munmap, exit).  ``reclaim``: free
        PTE tables of whole 2 MiB ranges left empty (MADV_DONTNEED, 6.14+)."""
        op = self.new_op().setup(zap_markers=zap_markers)
        walk_page_range(self, start, end, self.walk_ops(op, "zap"))
        if reclaim and end - start >= PMD_SIZE:
            op.setup()
            walk_page_range(self, start, end, self.walk_ops(op, "reclaim"))
        return op


    def free_pgtables(self, start, end):
        """free_pgtables after an unmap of [start, end): every table whose
        span lies wholly in the gap left between the neighbouring VMAs."""
        prev = nxt = None
        for v in self.vma_tree:
            if v.vm_end <= start:
                prev = v
            elif v.vm_start >= end and nxt is None:
                nxt = v
        lo = prev.vm_end if prev else 0
        hi = nxt.vm_start if nxt else 1 << (47 if self.levels == 4 else 56)
        op = self.new_op().setup(lo=lo, hi=hi)
        walk_page_range_novma(self, start, end, self.walk_ops(op, "free_tables"))


    def unmap(self, start, end):
        """do_vmi_munmap: split, zap (markers included), drop the VMAs, free tables."""
        vmas = self.isolate(start, end)
        if not vmas:
            return
        self.zap(start, end, zap_markers=True)
        for v in vmas:
            self.remove_vma(v)
        self.free_pgtables(start, end)
