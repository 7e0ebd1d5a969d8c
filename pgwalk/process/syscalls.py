"""The process model's syscalls and page faults on an ``MM``
(``ProcessMixin``): mmap/munmap, mprotect, mlock/munlock, exit, populate and
``touch`` (faults), and the VMA bookkeeping they share (split, merge,
``anon_vma``).

Python here orchestrates per VMA (argument checks and errnos in the
kernel's order, VMA splitting and merging, ``anon_vma`` bookkeeping) and
hands every page-table operation to the one walker as an ops table of C slot
functions (``_mmops.pyx``): populate, zap, table reclaim, protection change,
fork copy, mremap move.  madvise, mremap and fork are their own modules
(``madvise.py``, ``mremap.py``, ``fork.py``); ``mm.py`` puts the families
together.  The reference is Linux 6.18.
"""

import threading

import numpy as np

from .. import constants as C
from ..constants import (
    EEXIST, EFAULT, EINVAL, ENOMEM, EAGAIN, EBADF, EOPNOTSUPP, PAGE_SIZE,
    PMD_SIZE, PMD, PTE, VM_ACCOUNT, VM_HUGEPAGE, VM_HUGETLB,
    VM_LOCKED, VM_LOCKONFAULT, VM_MAYBE_GUARD, VM_MAYEXEC, VM_MAYREAD,
    VM_MAYSHARE, VM_MAYWRITE, VM_NOHUGEPAGE, VM_NORESERVE, VM_PFNMAP, VM_IO,
    VM_READ, VM_SHARED, VM_SOFTDIRTY, VM_SPECIAL, VM_WRITE,
    HUGE_ZERO_PFN, _PAGE_DIRTY, page_align, page_down, _PAGE_RW,
)
from ..entries import pmd_leaf
from ..walker import (
    VMA, MMWalkOps, walk_page_range, walk_page_range_mm, walk_page_range_novma,
)
from ._mmops import MMOp
from .objects import (
    PF_ANON, PF_DATA, PF_FDIRTY, PF_LARGE, PF_SHMEM_DIRTY, VM_ACCESS, SHMEM, AnonVma, BusError, SegmentationFault, ShmemObject, oserror,
    pte_prot, rw_bits, vma_is_anonymous, zero_prot,
)
from .shmem import around_window, whole_folio_ranges

VM_MERGE_IGNORE = VM_SOFTDIRTY | VM_MAYBE_GUARD      # "sticky" flags do not block merges
_FAULT_LOCK = threading.RLock()                      # see touch()


class ProcessMixin:
    """Syscalls (``mmap, munmap, mprotect, mremap, madvise, mlock, munlock,
    fork, exit``) and faults (``touch``) on an ``MM``."""

    # --- small helpers ------------------------------------------------------
    def _op(self):
        return MMOp(self._phys, self)

    def _ops(self, op, name, **kw):
        return MMWalkOps(**op.slots(name), **kw)

    def _check_alive(self):
        if self._exited:
            raise RuntimeError("this mm has exited")

    def _reindex(self):
        self._ends = [v.vm_end for v in self._vmas]

    def _vmas_in(self, start, end):
        """The VMAs overlapping [start, end), in order."""
        out = []
        vma = self.find_vma(start)
        while vma is not None and vma.vm_start < end:
            out.append(vma)
            vma = self.find_vma(vma.vm_end)
        return out

    def _prev(self, vma):
        i = self._vmas.index(vma)
        return self._vmas[i - 1] if i > 0 else None

    def _next(self, vma):
        i = self._vmas.index(vma)
        return self._vmas[i + 1] if i + 1 < len(self._vmas) else None

    def _new_vma(self, start, end, vm_flags, pgoff, vm_ops=None, vm_file=None, anon_vma=None):
        v = VMA(start, end, vm_flags, vm_mm=self, vm_ops=vm_ops)
        v.vm_pgoff = pgoff
        v.vm_file = vm_file
        v.anon_vma = anon_vma
        return v

    def _insert(self, vma):
        i = 0
        while i < len(self._vmas) and self._vmas[i].vm_start < vma.vm_start:
            i += 1
        self._vmas.insert(i, vma)
        self._reindex()

    def _remove(self, vma):
        self._vmas.remove(vma)
        self._reindex()
        if vma.vm_file is not None and not any(v.vm_file is vma.vm_file for v in self._vmas):
            try:
                vma.vm_file.mms.remove(self)
            except ValueError:
                pass

    def _split(self, vma, addr):
        """Split ``vma`` at ``addr``; returns the upper part (the lower part
        is ``vma`` itself)."""
        if not vma.vm_start < addr < vma.vm_end:
            raise AssertionError("bad split")
        if addr % PMD_SIZE:
            # vma_adjust_trans_huge: a huge PMD across the new boundary is split
            op = self._op().setup()
            walk_page_range(self, addr, addr + PAGE_SIZE, self._ops(op, "split"))
        hi = self._new_vma(addr, vma.vm_end, vma.vm_flags,
                           vma.vm_pgoff + (addr - vma.vm_start) // PAGE_SIZE,
                           vma.vm_ops, vma.vm_file, vma.anon_vma)
        vma.vm_end = addr
        i = self._vmas.index(vma)
        self._vmas.insert(i + 1, hi)
        self._reindex()
        return hi

    def _isolate(self, start, end):
        """Split so that [start, end) is covered by whole VMAs; returns them."""
        out = []
        for vma in self._vmas_in(start, end):
            if vma.vm_start < start:
                vma = self._split(vma, start)
            if vma.vm_end > end:
                self._split(vma, end)
            out.append(vma)
        return out

    @staticmethod
    def _can_merge(a, b):
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

    def _merge_pair(self, a, b):
        a.vm_end = b.vm_end
        a.anon_vma = a.anon_vma or b.anon_vma
        a.vm_flags |= b.vm_flags & VM_MERGE_IGNORE
        self._vmas.remove(b)
        self._reindex()
        return a

    def _merge_around(self, start, end):
        """Try to merge VMAs across every boundary in [start, end] (the
        edges of a range whose VMAs just changed, and the boundaries inside)."""
        vmas = self._vmas
        i = 0
        while i + 1 < len(vmas):
            a, b = vmas[i], vmas[i + 1]
            if start <= a.vm_end <= end and self._can_merge(a, b):
                self._merge_pair(a, b)
                continue
            i += 1

    def _anon_vma_prepare(self, vma):
        if vma.anon_vma is not None:
            return
        for other in (self._next(vma), self._prev(vma)):
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

    def _live_mms(self):
        """How many mms (this one and its fork relatives) are alive."""
        g = self._phys_group
        return sum(1 for k, r in g.members.items() if k not in g.exited and r() is not None)

    def _setup(self, op, vma, **kw):
        """Per-VMA fields of an op (protections, shmem object, locked VMAs
        near it, whose pages a folio split must not remap to the zero page)."""
        shm = vma.vm_file.pages if vma.vm_file is not None else None
        lk = [(v.vm_start, v.vm_end) for v in self._vmas_in(max(0, vma.vm_start - PMD_SIZE),
                                                             vma.vm_end + PMD_SIZE)
              if v.vm_flags & VM_LOCKED]
        op.setup(prot=pte_prot(vma.vm_flags), zprot=zero_prot(vma.vm_flags),
                 rw=rw_bits(vma.vm_flags), shared=bool(vma.vm_flags & VM_SHARED),
                 shm=shm, pgoff0=vma.vm_pgoff if shm is not None else 0,
                 vstart=vma.vm_start, nmms=self._live_mms(),
                 shm_order=vma.vm_file.order if shm is not None else None, **kw)
        return op.no_zero_remap(lk)

    # --- page-table work, each a walk -----------------------------------------
    def _zap(self, start, end, zap_markers=False, reclaim=False):
        """zap_page_range: unmap pages in [start, end) (VMA walk); guard
        markers stay unless ``zap_markers`` (munmap, exit).  ``reclaim``: free
        PTE tables of whole 2 MiB ranges left empty (MADV_DONTNEED, 6.14+)."""
        op = self._op().setup(zap_markers=zap_markers)
        walk_page_range(self, start, end, self._ops(op, "zap"))
        if reclaim and end - start >= PMD_SIZE:
            op.setup()
            walk_page_range(self, start, end, self._ops(op, "reclaim"))
        return op

    def _free_pgtables(self, start, end):
        """free_pgtables after an unmap of [start, end): every table whose
        span lies wholly in the gap left between the neighbouring VMAs."""
        prev = nxt = None
        for v in self._vmas:
            if v.vm_end <= start:
                prev = v
            elif v.vm_start >= end and nxt is None:
                nxt = v
        lo = prev.vm_end if prev else 0
        hi = nxt.vm_start if nxt else 1 << (47 if self.levels == 4 else 56)
        op = self._op().setup(lo=lo, hi=hi)
        walk_page_range_novma(self, start, end, self._ops(op, "free_tables"))

    def _unmap(self, start, end):
        """do_vmi_munmap: split, zap (markers included), drop the VMAs, free tables."""
        vmas = self._isolate(start, end)
        if not vmas:
            return
        self._zap(start, end, zap_markers=True)
        for v in vmas:
            self._remove(v)
        self._free_pgtables(start, end)

    def _thp_suitable(self, vma, haddr):
        return (vma_is_anonymous(vma) and not vma.vm_flags & VM_SHARED
                and vma.vm_flags & VM_HUGEPAGE and not vma.vm_flags & VM_NOHUGEPAGE
                and not vma.vm_flags & (VM_SPECIAL | VM_HUGETLB)
                and vma.vm_start <= haddr and haddr + PMD_SIZE <= vma.vm_end
                and ((vma.vm_start >> 12) - vma.vm_pgoff) % 512 == 0)

    def _thp_fault(self, vma, addr, write, mark):
        """do_huge_pmd_anonymous_page: a PMD-mapped THP (write) or the huge
        zero page (read) where the PMD slot is empty.  True if done."""
        haddr = addr & ~(PMD_SIZE - 1)
        if not self._thp_suitable(vma, haddr) or self.entry(haddr, PMD) != 0:
            return False
        self._anon_vma_prepare(vma)
        tid, idx = self._locate(haddr, PMD, True)
        prot = pte_prot(vma.vm_flags) | C._PAGE_PSE
        if write:
            pfn = self._phys.alloc(512, 512)
            self._phys.add_map(pfn, 512)
            for i in range(512):
                self._phys.set_flags(pfn + i, PF_ANON | PF_LARGE | PF_FDIRTY)
            if mark:
                self._phys.set_flags(pfn + (addr - haddr) // PAGE_SIZE, PF_DATA)
            value = ((pfn << 12) & C.PHYSICAL_PMD_PAGE_MASK) | prot | _PAGE_RW | _PAGE_DIRTY
        else:
            value = ((HUGE_ZERO_PFN << 12) & C.PHYSICAL_PMD_PAGE_MASK) | prot
        self._table(tid)[idx] = value
        return True

    def _shmem_pmd_fault(self, vma, addr, write, mark):
        """do_set_pmd: a fault on a page of a PMD-sized folio of the shmem
        object (only MADV_COLLAPSE makes those here) maps the whole folio by
        PMD where the PMD slot is empty, the 2 MiB block lies inside the VMA
        at a 2 MiB-congruent object offset and the VMA is not
        VM_NOHUGEPAGE (the fault-around of a read fault does the same, first).
        True if done."""
        obj = vma.vm_file
        haddr = addr & ~(PMD_SIZE - 1)
        if (not obj.huge or vma.vm_flags & (VM_NOHUGEPAGE | VM_SPECIAL | VM_HUGETLB)
                or haddr < vma.vm_start or haddr + PMD_SIZE > vma.vm_end
                or ((vma.vm_start >> 12) - vma.vm_pgoff) % 512):
            return False
        lo = vma.vm_pgoff + (haddr - vma.vm_start) // PAGE_SIZE
        if lo % 512 or lo + 512 > obj.npages:
            return False
        head = int(obj.pages[lo])
        if not head or obj.order[lo] != 9 or self.entry(haddr, PMD) != 0:
            return False
        tid, idx = self._locate(haddr, PMD, True)
        self._phys.add_map(head, 512)
        value = (((head << 12) & C.PHYSICAL_PMD_PAGE_MASK) | pte_prot(vma.vm_flags) | C._PAGE_PSE
                 | (_PAGE_RW if vma.vm_flags & VM_WRITE else 0))
        if write:
            value |= _PAGE_DIRTY
            for i in range(512):
                self._phys.set_flags(head + i, PF_SHMEM_DIRTY)
            if mark:
                self._phys.set_flags(head + (addr - haddr) // PAGE_SIZE, PF_DATA)
        self._table(tid)[idx] = value
        return True

    def _fault_range(self, vma, start, end, write, mark=False):
        """Fault in [start, end) of one VMA (handle_mm_fault over a range, as
        GUP does): THPs where eligible, then a populate walk.  Returns
        (0, None) or (fault code, address) at the first page that faulted."""
        if vma.vm_file is not None and vma.vm_file.huge:
            # blocks of the shmem object that are one huge folio are mapped
            # by PMD (those the populate reaches before a guard); the rest
            # page by page
            stop = self._populate_stop(start, end)
            rest = []
            a = start
            while a < end:
                b = min(end, (a & ~(PMD_SIZE - 1)) + PMD_SIZE)
                if a >= stop or not self._shmem_pmd_fault(vma, a, write, mark):
                    if rest and rest[-1][1] == a:
                        rest[-1] = (rest[-1][0], b)
                    else:
                        rest.append((a, b))
                a = b
            for a, b in rest:
                code, at = self._fault_pages(vma, a, b, write, mark)
                if code:
                    return code, at
            return 0, None
        return self._fault_pages(vma, start, end, write, mark)

    def _fault_pages(self, vma, start, end, write, mark=False):
        if write and not vma.vm_flags & VM_SHARED:
            self._anon_vma_prepare(vma)
        if write and vma.vm_file is not None and vma.vm_file.huge:
            # a write fault maps a whole large folio of the object at once
            # where it can (finish_fault); the page written gets its data
            whole = self._ops(self._setup(self._op(), vma, write=True), "populate")
            for a0, a1 in whole_folio_ranges(self, vma, start, self._populate_stop(start, end)):
                rc = walk_page_range_mm(self, a0, a1, whole)
                if rc < 0:
                    raise oserror(-rc)
        shared = None
        if write and vma.vm_file is None and self._live_mms() > 1:
            # a write to a page of a large folio reuses it only if no other
            # mm maps the folio (wp_can_reuse_anon_folio)
            shared = self._heads_mapped_elsewhere(start, end)

        def prepared(op):
            self._setup(op, vma, write=write, mark_data=mark)
            if shared is not None:
                op.set_shared_heads(shared)
            return op

        op = prepared(self._op())
        ops = self._ops(op, "populate")
        thp = (vma.vm_flags & VM_HUGEPAGE and vma_is_anonymous(vma)
               and not vma.vm_flags & VM_SHARED)
        chunks = [(start, end)]
        if thp:
            chunks = []
            a = start
            while a < end:
                b = min(end, (a & ~(PMD_SIZE - 1)) + PMD_SIZE)
                chunks.append((a, b))
                a = b
        if vma.vm_file is not None and not write:
            self._fault_around_sim(vma, start, end)
        for a, b in chunks:
            if thp and self._thp_fault(vma, a, write, mark):
                prepared(op)
            rc = walk_page_range_mm(self, a, b, ops)
            if rc == 1:
                return op.fault, op.fault_addr
            if rc < 0:
                raise oserror(-rc)
        return 0, None

    def _pagemap_locked(self, start, end):
        """pagemap words of [start, end), the mmap lock already held."""
        out = np.zeros((end - start) // PAGE_SIZE, dtype=np.uint64)
        walk_page_range(self, start, end, self._ops(self._op().setup(out=out, out_start=start),
                                                    "pagemap"))
        return out

    def _heads_mapped_elsewhere(self, start, end, shmem_huge=False):
        """The first PFNs of the large folios mapped in [start, end) that
        some other mm maps too (folio_maybe_mapped_shared): their map
        counts in all exceed this mm's mappings of them, counted over all
        of this mm (parts of a folio may sit elsewhere after mremap).
        Large anonymous folios (512 pages), and with ``shmem_huge`` the
        large folios of the shmem object mapped there (their orders)."""
        pfn_mask = np.uint64((1 << 55) - 1)
        pm = self._pagemap_locked(start, end)
        pfns = pm[(pm >> np.uint64(63)) == 1] & pfn_mask
        cands = []                                   # (first PFN, pages)
        for h in np.unique(pfns & ~np.uint64(511)).tolist():
            fl = self._phys.flags(int(pfns[(pfns & ~np.uint64(511)) == h][0]))
            if fl & PF_LARGE and not fl & 4:
                cands.append((h, 512))
        if shmem_huge:
            vma = self.find_vma(start)
            obj = vma.vm_file
            i = vma.vm_pgoff + (start - vma.vm_start) // PAGE_SIZE
            stop = vma.vm_pgoff + (min(end, vma.vm_end) - vma.vm_start) // PAGE_SIZE
            while i < min(stop, obj.npages):
                k = int(obj.order[i])
                first = i & ~((1 << k) - 1)
                if k and obj.pages[first]:
                    cands.append((int(obj.pages[first]), 1 << k))
                i = first + (1 << k)
        if not cands:
            return []
        mine = np.concatenate([self._pagemap_locked(v.vm_start, v.vm_end) for v in self._vmas]
                              or [np.zeros(0, np.uint64)])
        mine = mine[(mine >> np.uint64(63)) == 1] & pfn_mask
        out = []
        for h, n in cands:
            here = int(np.count_nonzero((mine >= h) & (mine < h + n)))
            total = sum(self._phys.mapcount(h + i) for i in range(n))
            if total > here:
                out.append(h)
        return out

    @staticmethod
    def _first_marker(pm):
        """Index of the first page whose pagemap word is a swap entry (a
        guard marker here): a populate stops there."""
        stop = np.flatnonzero(pm & np.uint64(1 << 62))
        return int(stop[0]) if stop.size else pm.shape[0]

    def _populate_stop(self, start, end):
        """Where a populate of [start, end) stops: at the first marker."""
        return start + self._first_marker(self._pagemap_locked(start, end)) * PAGE_SIZE

    def _fault_around_sim(self, vma, start, end):
        """Read faults on shmem map the cached pages around them
        (fault-around).  A populate of [start, end) faults at each page
        still empty when it gets there, in order, up to the first guard
        marker (where it stops, faulting nothing around it) or the end of
        the object (SIGBUS, after the fault-around).  Faults are followed
        in that order; only a window reaching outside the range is mapped
        here (the populate walk maps every page inside it anyway)."""
        pm = self._pagemap_locked(start, end)
        n = self._first_marker(pm)
        empty = pm[:n] == 0
        stop = start + n * PAGE_SIZE
        obj = vma.vm_file
        idx0 = vma.vm_pgoff + (start - vma.vm_start) // PAGE_SIZE
        cached = np.zeros(n, dtype=bool)
        m = max(0, min(n, obj.npages - idx0))
        cached[:m] = obj.pages[idx0:idx0 + m] != 0
        ops = None
        for j in np.flatnonzero(empty).tolist():
            if not empty[j]:
                continue                       # mapped by an earlier fault-around
            a = start + j * PAGE_SIZE
            wlo, whi = self._around_window(vma, a)
            if wlo < start or whi > stop:
                if ops is None:
                    ops = self._ops(self._setup(self._op(), vma, around=True), "populate")
                walk_page_range_mm(self, wlo, whi, ops)
            lo_i, hi_i = max(0, (wlo - start) // PAGE_SIZE), min(n, (whi - start) // PAGE_SIZE)
            if lo_i < hi_i:
                empty[lo_i:hi_i] &= ~cached[lo_i:hi_i]
            empty[j] = False
            if idx0 + j >= obj.npages:
                break                          # SIGBUS: the populate stops here

    def _around_window(self, vma, addr):
        """The fault-around window of a read fault at ``addr``
        (do_fault_around: 16 pages aligned in the PTE table, clamped to the
        VMA and the table), widened to whole large folios."""
        pte_off = (addr >> 12) & 511
        vma_off = (addr - vma.vm_start) >> 12
        lo = max(pte_off & ~15, pte_off - min(pte_off, vma_off))
        hi = min(lo + 16, 512, pte_off + (vma.vm_end - vma.vm_start) // PAGE_SIZE - vma_off)
        base = addr - pte_off * PAGE_SIZE
        return around_window(self, vma, base + lo * PAGE_SIZE, base + hi * PAGE_SIZE)

    # --- faults ------------------------------------------------------------------
    def touch(self, addr, write=False):
        """One user access at ``addr`` and its page fault.  Raises
        ``SegmentationFault`` (unmapped, no permission, guard page) or
        ``BusError`` (beyond the end of a shmem object)."""
        self._check_alive()
        if not isinstance(addr, int) or isinstance(addr, bool):
            raise TypeError("addr must be an int")
        page = page_down(addr)
        with self.mmap_read_lock():
            vma = self.find_vma(page)
            if vma is None or vma.vm_start > page:
                raise SegmentationFault(addr, "no VMA")
            if write and not vma.vm_flags & VM_WRITE:
                raise SegmentationFault(addr, "VMA not writable")
            if not vma.vm_flags & VM_ACCESS:
                raise SegmentationFault(addr, "PROT_NONE")
            # faults run under the read lock, so two threads may fault at
            # once; the kernel orders their page-table updates with the page
            # table locks, the model with one lock for all faults (the table
            # pool and the physical pages are shared, with forked children too)
            with _FAULT_LOCK:
                code, _ = self._fault_range(vma, page, page + PAGE_SIZE, bool(write),
                                            mark=bool(write))
        if code == 1:
            raise SegmentationFault(addr, "guard region")
        if code == 2:
            raise BusError(addr, "beyond the end of the shmem object")
        self._mark_accessed(page)

    def _mark_accessed(self, addr):
        """The access itself: the MMU sets the accessed (young) bit of the
        leaf that maps ``addr`` (a populate through GUP does not)."""
        with self.mmap_read_lock(), _FAULT_LOCK:
            for level in (PMD, PTE):
                loc = self._locate(addr, level, False)
                if loc is None:
                    return
                t = self._table(loc[0])
                v = int(t[loc[1]])
                if level == PMD and not pmd_leaf(v):
                    continue
                if v & C._PAGE_PRESENT:
                    t[loc[1]] = v | C._PAGE_ACCESSED
                return

    # --- mmap / munmap ---------------------------------------------------------------
    def _top(self):
        return self.task_size + PAGE_SIZE - C.MMAP_BASE_GAP

    def _free_area(self, length, hint=0, align=PAGE_SIZE):
        """get_unmapped_area: the hint if free, else top-down from the base."""
        if hint:
            hint = page_align(hint)
            if (C.MMAP_MIN_ADDR <= hint and hint + length <= self.task_size + PAGE_SIZE
                    and not self._vmas_in(hint, hint + length)):
                return hint
        top = self._top()
        gaps = []
        prev_end = C.MMAP_MIN_ADDR
        for v in self._vmas:
            gaps.append((prev_end, v.vm_start))
            prev_end = max(prev_end, v.vm_end)
        gaps.append((prev_end, top))
        for lo, hi in reversed(gaps):
            hi = min(hi, top)
            cand = (hi - length) & ~(align - 1)
            if cand >= lo and cand + length <= hi:
                return cand
        raise oserror(ENOMEM)

    def mmap(self, addr, length, prot, flags, fd=-1, offset=0):
        """mmap(2) of anonymous memory, private or shared (shmem); returns the address."""
        self._check_alive()
        addr = addr or 0
        if flags & C.MAP_ANONYMOUS == 0:
            raise oserror(EBADF)
        if length <= 0:
            raise oserror(EINVAL)
        length = page_align(length)
        if length > self.task_size:
            raise oserror(ENOMEM)
        mtype = flags & C.MAP_TYPE
        if mtype == C.MAP_SHARED_VALIDATE:
            known = (C.MAP_SHARED_VALIDATE | C.MAP_FIXED | C.MAP_ANONYMOUS | C.MAP_FIXED_NOREPLACE
                     | C.MAP_POPULATE | C.MAP_NORESERVE | C.MAP_LOCKED | C.MAP_NONBLOCK
                     | C.MAP_STACK | C.MAP_GROWSDOWN | C.MAP_DENYWRITE | C.MAP_EXECUTABLE
                     | C.MAP_SYNC | C.MAP_HUGETLB | 0xFC000000)
            if flags & ~known:
                raise oserror(EOPNOTSUPP)
            shared = True
        elif mtype in (C.MAP_SHARED, C.MAP_PRIVATE):
            shared = mtype == C.MAP_SHARED
        else:
            raise oserror(EINVAL)
        if flags & C.MAP_HUGETLB:
            raise oserror(EINVAL)
        fixed = bool(flags & (C.MAP_FIXED | C.MAP_FIXED_NOREPLACE))
        if fixed:
            if addr & (PAGE_SIZE - 1):
                raise oserror(EINVAL)
            if addr + length > self.task_size + PAGE_SIZE or addr + length < addr:
                raise oserror(ENOMEM)
        with self.mmap_write_lock():
            if fixed:
                start = addr
                if flags & C.MAP_FIXED_NOREPLACE and self._vmas_in(start, start + length):
                    raise oserror(EEXIST)
            else:
                align = PMD_SIZE if (not shared and length % PMD_SIZE == 0 and not addr) else PAGE_SIZE
                start = self._free_area(length, addr, align)
            end = start + length
            vm_flags = (prot & VM_ACCESS) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
            if shared:
                vm_flags |= VM_SHARED | VM_MAYSHARE
            if flags & C.MAP_NORESERVE:
                vm_flags |= VM_NORESERVE
            elif not shared and prot & C.PROT_WRITE:
                vm_flags |= VM_ACCOUNT
            if flags & C.MAP_LOCKED:
                vm_flags |= VM_LOCKED
            self._unmap(start, end)                        # MAP_FIXED replaces
            if shared:
                obj = ShmemObject(length // PAGE_SIZE)
                obj.mms.append(self)
                vma = self._new_vma(start, end, vm_flags, 0, SHMEM, obj)
                self._insert(vma)
            else:
                vma = self._new_vma(start, end, vm_flags, start >> 12)
                self._insert(vma)
                self._merge_around(start, end)
            if flags & C.MAP_LOCKED or (flags & C.MAP_POPULATE and not flags & C.MAP_NONBLOCK):
                self._populate(start, end, mode="auto", ignore_errors=True)
        return start

    def munmap(self, addr, length):
        """munmap(2)."""
        self._check_alive()
        if addr & (PAGE_SIZE - 1) or length <= 0:
            raise oserror(EINVAL)
        length = page_align(length)
        if addr + length > self.task_size + PAGE_SIZE:
            raise oserror(EINVAL)
        with self.mmap_write_lock():
            self._unmap(addr, addr + length)
        return 0

    def exit(self):
        """Tear the process down: every VMA unmapped, every table freed."""
        if self._exited:
            return
        with self.mmap_write_lock():
            if self._vmas:
                self._unmap(self._vmas[0].vm_start, self._vmas[-1].vm_end)
            top = 1 << (47 if self.levels == 4 else 56)
            op = self._op().setup(lo=0, hi=top)
            walk_page_range_novma(self, 0, top - PAGE_SIZE, self._ops(op, "free_tables"))
        self._exited = True
        self._phys_group.exited.add(self._group_key)

    # --- populate (MAP_POPULATE, mlock, MADV_POPULATE_*) ----------------------------------
    def _populate(self, start, end, mode, ignore_errors):
        """__mm_populate / madvise_populate.  mode "auto": write faults for
        private writable VMAs, else read faults (mlock, MAP_POPULATE);
        "read" / "write": MADV_POPULATE_READ / _WRITE.  Returns 0 or the
        errno of the populate (EFAULT for a guard page or SIGBUS, EINVAL for
        a VMA that refuses the access, ENOMEM for a hole)."""
        a = start
        while a < end:
            vma = self.find_vma(a)
            if vma is None or vma.vm_start >= end:
                return 0 if ignore_errors else ENOMEM
            if vma.vm_start > a:
                if not ignore_errors:
                    return ENOMEM
                a = vma.vm_start
            b = min(end, vma.vm_end)
            if mode == "auto":
                if vma.vm_flags & (VM_IO | VM_PFNMAP) or vma.vm_flags & VM_LOCKONFAULT:
                    a = b
                    continue
                if not vma.vm_flags & VM_ACCESS:
                    if ignore_errors:
                        a = b
                        continue
                    return EFAULT
                write = (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
            else:
                write = mode == "write"
                if vma.vm_flags & (VM_IO | VM_PFNMAP):
                    return EINVAL
                if write and not vma.vm_flags & VM_WRITE:
                    return EINVAL
                if not write and not vma.vm_flags & VM_READ:
                    return EINVAL
            try:
                code, where = self._gup_range(vma, a, b, write)
            except OSError as e:
                if e.errno != ENOMEM:
                    raise
                if ignore_errors:          # __mm_populate: on at the next VMA
                    a = b
                    continue
                return ENOMEM
            if code:
                if ignore_errors:
                    a = b
                    continue
                return EFAULT
            a = b
        return 0

    def _gup_range(self, vma, start, end, write):
        """GUP over [start, end) of one VMA, as populate uses it: a page
        table that cannot be allocated is VM_FAULT_OOM, which GUP reports
        as ENOMEM only when it stops at the first page; after progress it
        returns the pages done and its callers (__mm_populate,
        madvise_populate) go on from the page that failed.  So the walk is
        retried from there, and OSError(ENOMEM) is raised only when no
        page of the retried range could be done."""
        a = start
        while True:
            try:
                return self._fault_range(vma, a, end, write)
            except OSError as e:
                if e.errno != ENOMEM:
                    raise
                stop = self._first_without_table(a, end)
                if stop is None or stop <= a:
                    raise
                a = stop

    def _first_without_table(self, start, end):
        """The first page of [start, end) with neither a PTE table nor a
        PMD leaf above it (where a populate walk stopped for want of a
        table), or None."""
        a = start
        while a < end:
            if self.entry(a, PMD) == 0:
                return a
            a = (a & ~(PMD_SIZE - 1)) + PMD_SIZE
        return None

    # --- mprotect ---------------------------------------------------------------------------
    def mprotect(self, addr, length, prot):
        """mprotect(2)."""
        self._check_alive()
        if addr & (PAGE_SIZE - 1):
            raise oserror(EINVAL)
        if prot & ~(C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC):
            raise oserror(EINVAL)
        length = page_align(length)
        end = addr + length
        if end < addr:
            raise oserror(ENOMEM)
        if length == 0:
            return 0
        with self.mmap_write_lock():
            vma = self.find_vma(addr)
            if vma is None or vma.vm_start > addr:
                raise oserror(ENOMEM)
            a = addr
            err = 0
            while a < end:
                vma = self.find_vma(a)
                if vma is None or vma.vm_start > a:
                    err = ENOMEM
                    break
                b = min(end, vma.vm_end)
                old = vma.vm_flags
                new = (old & ~VM_ACCESS) | (prot & VM_ACCESS)
                if new == old:
                    a = b
                    continue
                if new & VM_WRITE:
                    if not old & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
                        new |= VM_ACCOUNT
                elif old & VM_ACCOUNT and vma_is_anonymous(vma) and vma.anon_vma is None:
                    new &= ~VM_ACCOUNT
                if new != old:
                    (part,) = self._isolate(a, b)
                    part.vm_flags = new
                    op = self._setup(self._op(), part)
                    walk_page_range(self, a, b, self._ops(op, "mprotect"))
                    # the merge comes first (vma_modify_flags), then the
                    # populate of a locked VMA made writable, which attaches
                    # an anon_vma to the merged VMA
                    self._merge_around(a, b)
                    if (old & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED and new & VM_WRITE:
                        try:               # populate_vma_page_range: result ignored
                            self._fault_range(self.find_vma(a), a, b, True)
                        except OSError as e:
                            if e.errno != ENOMEM:
                                raise
                a = b
            if err:
                raise oserror(err)
        return 0

    # --- mlock / munlock -------------------------------------------------------------------
    def _set_flags(self, start, end, set_bits, clear_bits, check=None):
        """Apply a vm_flags change to [start, end) VMA by VMA (splitting and
        merging as the kernel's vma_modify_flags does).  Returns ENOMEM if a
        hole was met (after changing the VMAs before it), else 0; ``check``
        may veto a VMA with an errno (returned at once)."""
        a = start
        while a < end:
            vma = self.find_vma(a)
            if vma is None or vma.vm_start >= end:
                return ENOMEM
            if vma.vm_start > a:
                return ENOMEM
            b = min(end, vma.vm_end)
            if check is not None:
                e = check(vma)
                if e:
                    return e
            new = (vma.vm_flags & ~clear_bits) | set_bits
            if new != vma.vm_flags:
                (part,) = self._isolate(a, b)
                part.vm_flags = new
                self._merge_around(a, b)
            a = b
        return 0

    def mlock(self, addr, length, onfault=False):
        """mlock(2) (``onfault``: mlock2(MLOCK_ONFAULT))."""
        self._check_alive()
        end = page_align(addr + length)
        addr = page_down(addr)
        if end < addr:
            raise oserror(EINVAL)
        if end == addr:
            return 0
        with self.mmap_write_lock():
            if self.find_vma(addr) is None or self.find_vma(addr).vm_start > addr:
                raise oserror(ENOMEM)
            err = self._set_flags(addr, end, VM_LOCKED | (VM_LOCKONFAULT if onfault else 0),
                                  0 if onfault else VM_LOCKONFAULT)
            if err:
                raise oserror(err)
            if not onfault:
                err = self._populate(addr, end, "auto", ignore_errors=False)
                if err:
                    raise oserror({EFAULT: ENOMEM, ENOMEM: EAGAIN}.get(err, err))
        return 0

    def munlock(self, addr, length):
        """munlock(2)."""
        self._check_alive()
        end = page_align(addr + length)
        addr = page_down(addr)
        if end == addr:
            return 0
        with self.mmap_write_lock():
            if self.find_vma(addr) is None or self.find_vma(addr).vm_start > addr:
                raise oserror(ENOMEM)
            err = self._set_flags(addr, end, 0, VM_LOCKED | VM_LOCKONFAULT)
            if err:
                raise oserror(err)
        return 0
