"""Page faults and populate of the process model: ``touch`` (one user
access and its fault: anonymous pages, THPs and the huge zero page, shmem
folios, fault-around of read faults, SIGSEGV on guard markers and missing
permissions, SIGBUS beyond a shmem object) and ``populate`` (MAP_POPULATE,
mlock, MADV_POPULATE_*), the kernel's ``handle_mm_fault`` and
``__get_user_pages`` as the model does them."""

import threading

import numpy as np

from .. import constants as C
from ..constants import (
    EFAULT, EINVAL, ENOMEM, HUGE_ZERO_PFN, _PAGE_DIRTY, page_down, _PAGE_RW, PAGE_SIZE, PMD,
    PMD_SIZE, PTE, VM_HUGEPAGE, VM_HUGETLB, VM_IO, VM_LOCKONFAULT, VM_NOHUGEPAGE, VM_PFNMAP,
    VM_READ, VM_SHARED, VM_SPECIAL, VM_WRITE,
)
from ..entries import pmd_leaf
from ..walker import walk_page_range, walk_page_range_mm
from .objects import (
    BusError, oserror, PF_ANON, PF_DATA, PF_FDIRTY, PF_LARGE, PF_SHMEM_DIRTY, pte_prot,
    SegmentationFault, VM_ACCESS, vma_is_anonymous,
)
from .shmem import around_window, whole_folio_ranges

_FAULT_LOCK = threading.RLock()                      # see touch()


def thp_suitable(mm, vma, haddr):
    """Whether a fault may map an anonymous THP at the 2 MiB block ``haddr`` of ``vma``:
    a private anonymous MADV_HUGEPAGE VMA, not special, that covers the whole block
    with page offsets aligned to it."""
    return (vma_is_anonymous(vma) and not vma.vm_flags & VM_SHARED
            and vma.vm_flags & VM_HUGEPAGE and not vma.vm_flags & VM_NOHUGEPAGE
            and not vma.vm_flags & (VM_SPECIAL | VM_HUGETLB)
            and vma.vm_start <= haddr and haddr + PMD_SIZE <= vma.vm_end
            and ((vma.vm_start >> 12) - vma.vm_pgoff) % 512 == 0)


def thp_fault(mm, vma, addr, write, mark):
    """do_huge_pmd_anonymous_page: a PMD-mapped THP (write) or the huge
    zero page (read) where the PMD slot is empty.  True if done."""
    haddr = addr & ~(PMD_SIZE - 1)
    if not thp_suitable(mm, vma, haddr) or mm.entry(haddr, PMD) != 0:
        return False
    mm.anon_vma_prepare(vma)
    tid, idx = mm.locate(haddr, PMD, True)
    prot = pte_prot(vma.vm_flags) | C._PAGE_PSE
    if write:
        pfn = mm.phys.alloc(512, 512)
        mm.phys.add_map(pfn, 512)
        for i in range(512):
            mm.phys.set_flags(pfn + i, PF_ANON | PF_LARGE | PF_FDIRTY)
        if mark:
            mm.phys.set_flags(pfn + (addr - haddr) // PAGE_SIZE, PF_DATA)
        value = ((pfn << 12) & C.PHYSICAL_PMD_PAGE_MASK) | prot | _PAGE_RW | _PAGE_DIRTY
    else:
        value = ((HUGE_ZERO_PFN << 12) & C.PHYSICAL_PMD_PAGE_MASK) | prot
    mm.table(tid)[idx] = value
    return True


def shmem_pmd_fault(mm, vma, addr, write, mark):
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
    if not head or obj.order[lo] != 9 or mm.entry(haddr, PMD) != 0:
        return False
    tid, idx = mm.locate(haddr, PMD, True)
    mm.phys.add_map(head, 512)
    value = (((head << 12) & C.PHYSICAL_PMD_PAGE_MASK) | pte_prot(vma.vm_flags) | C._PAGE_PSE
             | (_PAGE_RW if vma.vm_flags & VM_WRITE else 0))
    if write:
        value |= _PAGE_DIRTY
        for i in range(512):
            mm.phys.set_flags(head + i, PF_SHMEM_DIRTY)
        if mark:
            mm.phys.set_flags(head + (addr - haddr) // PAGE_SIZE, PF_DATA)
    mm.table(tid)[idx] = value
    return True


def fault_range(mm, vma, start, end, write, mark=False):
    """Fault in [start, end) of one VMA (handle_mm_fault over a range, as
    GUP does): THPs where eligible, then a populate walk.  Returns
    (0, None) or (fault code, address) at the first page that faulted."""
    if vma.vm_file is not None and vma.vm_file.huge:
        # blocks of the shmem object that are one huge folio are mapped
        # by PMD (those the populate reaches before a guard); the rest
        # page by page
        stop = populate_stop(mm, start, end)
        rest = []
        a = start
        while a < end:
            b = min(end, (a & ~(PMD_SIZE - 1)) + PMD_SIZE)
            if a >= stop or not shmem_pmd_fault(mm, vma, a, write, mark):
                if rest and rest[-1][1] == a:
                    rest[-1] = (rest[-1][0], b)
                else:
                    rest.append((a, b))
            a = b
        for a, b in rest:
            code, at = fault_pages(mm, vma, a, b, write, mark)
            if code:
                return code, at
        return 0, None
    return fault_pages(mm, vma, start, end, write, mark)


def fault_pages(mm, vma, start, end, write, mark=False):
    """Fault in ``[start, end)`` of one VMA with the populate walk (a THP first per
    block where suitable, fault-around for read faults of shmem).  Returns (0, None) or
    (fault code, address) of the first page that faulted."""
    if write and not vma.vm_flags & VM_SHARED:
        mm.anon_vma_prepare(vma)
    if write and vma.vm_file is not None and vma.vm_file.huge:
        # a write fault maps a whole large folio of the object at once
        # where it can (finish_fault); the page written gets its data
        whole = mm.walk_ops(mm.setup_op(mm.new_op(), vma, write=True), "populate")
        for a0, a1 in whole_folio_ranges(mm, vma, start, populate_stop(mm, start, end)):
            rc = walk_page_range_mm(mm, a0, a1, whole)
            if rc < 0:
                raise oserror(-rc)
    shared = None
    if write and vma.vm_file is None and mm.live_mms() > 1:
        # a write to a page of a large folio reuses it only if no other
        # mm maps the folio (wp_can_reuse_anon_folio)
        shared = heads_mapped_elsewhere(mm, start, end)

    def prepared(op):
        mm.setup_op(op, vma, write=write, mark_data=mark)
        if shared is not None:
            op.set_shared_heads(shared)
        return op

    op = prepared(mm.new_op())
    ops = mm.walk_ops(op, "populate")
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
        fault_around_sim(mm, vma, start, end)
    for a, b in chunks:
        if thp and thp_fault(mm, vma, a, write, mark):
            prepared(op)
        rc = walk_page_range_mm(mm, a, b, ops)
        if rc == 1:
            return op.fault, op.fault_addr
        if rc < 0:
            raise oserror(-rc)
    return 0, None


def pagemap_locked(mm, start, end):
    """pagemap words of [start, end), the mmap lock already held."""
    out = np.zeros((end - start) // PAGE_SIZE, dtype=np.uint64)
    walk_page_range(mm, start, end, mm.walk_ops(mm.new_op().setup(out=out, out_start=start),
                                                "pagemap"))
    return out


def heads_mapped_elsewhere(mm, start, end, shmem_huge=False):
    """The first PFNs of the large folios mapped in [start, end) that
    some other mm maps too (folio_maybe_mapped_shared): their map
    counts in all exceed this mm's mappings of them, counted over all
    of this mm (parts of a folio may sit elsewhere after mremap).
    Large anonymous folios (512 pages), and with ``shmem_huge`` the
    large folios of the shmem object mapped there (their orders)."""
    pfn_mask = np.uint64((1 << 55) - 1)
    pm = pagemap_locked(mm, start, end)
    pfns = pm[(pm >> np.uint64(63)) == 1] & pfn_mask
    cands = []                                   # (first PFN, pages)
    for h in np.unique(pfns & ~np.uint64(511)).tolist():
        fl = mm.phys.flags(int(pfns[(pfns & ~np.uint64(511)) == h][0]))
        if fl & PF_LARGE and not fl & 4:
            cands.append((h, 512))
    if shmem_huge:
        vma = mm.find_vma(start)
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
    mine = np.concatenate([pagemap_locked(mm, v.vm_start, v.vm_end) for v in mm.vma_tree]
                          or [np.zeros(0, np.uint64)])
    mine = mine[(mine >> np.uint64(63)) == 1] & pfn_mask
    out = []
    for h, n in cands:
        here = int(np.count_nonzero((mine >= h) & (mine < h + n)))
        total = sum(mm.phys.mapcount(h + i) for i in range(n))
        if total > here:
            out.append(h)
    return out


def first_marker(pm):
    """Index of the first page whose pagemap word is a swap entry (a
    guard marker here): a populate stops there."""
    stop = np.flatnonzero(pm & np.uint64(1 << 62))
    return int(stop[0]) if stop.size else pm.shape[0]


def populate_stop(mm, start, end):
    """Where a populate of [start, end) stops: at the first marker."""
    return start + first_marker(pagemap_locked(mm, start, end)) * PAGE_SIZE


def fault_around_sim(mm, vma, start, end):
    """Read faults on shmem map the cached pages around them
    (fault-around).  A populate of [start, end) faults at each page
    still empty when it gets there, in order, up to the first guard
    marker (where it stops, faulting nothing around it) or the end of
    the object (SIGBUS, after the fault-around).  Faults are followed
    in that order; only a window reaching outside the range is mapped
    here (the populate walk maps every page inside it anyway)."""
    pm = pagemap_locked(mm, start, end)
    n = first_marker(pm)
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
        wlo, whi = fault_around_window(mm, vma, a)
        if wlo < start or whi > stop:
            if ops is None:
                ops = mm.walk_ops(mm.setup_op(mm.new_op(), vma, around=True), "populate")
            walk_page_range_mm(mm, wlo, whi, ops)
        lo_i, hi_i = max(0, (wlo - start) // PAGE_SIZE), min(n, (whi - start) // PAGE_SIZE)
        if lo_i < hi_i:
            empty[lo_i:hi_i] &= ~cached[lo_i:hi_i]
        empty[j] = False
        if idx0 + j >= obj.npages:
            break                          # SIGBUS: the populate stops here


def fault_around_window(mm, vma, addr):
    """The fault-around window of a read fault at ``addr``
    (do_fault_around: 16 pages aligned in the PTE table, clamped to the
    VMA and the table), widened to whole large folios."""
    pte_off = (addr >> 12) & 511
    vma_off = (addr - vma.vm_start) >> 12
    lo = max(pte_off & ~15, pte_off - min(pte_off, vma_off))
    hi = min(lo + 16, 512, pte_off + (vma.vm_end - vma.vm_start) // PAGE_SIZE - vma_off)
    base = addr - pte_off * PAGE_SIZE
    return around_window(mm, vma, base + lo * PAGE_SIZE, base + hi * PAGE_SIZE)


def touch(mm, addr, write=False):
    """One user access at ``addr`` and its page fault.  Raises
    ``SegmentationFault`` (unmapped, no permission, guard page) or
    ``BusError`` (beyond the end of a shmem object)."""
    mm.check_alive()
    if not isinstance(addr, int) or isinstance(addr, bool):
        raise TypeError("addr must be an int")
    page = page_down(addr)
    with mm.mmap_read_lock():
        vma = mm.find_vma(page)
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
            code, _ = fault_range(mm, vma, page, page + PAGE_SIZE, bool(write),
                                        mark=bool(write))
    if code == 1:
        raise SegmentationFault(addr, "guard region")
    if code == 2:
        raise BusError(addr, "beyond the end of the shmem object")
    mark_accessed(mm, page)


def mark_accessed(mm, addr):
    """The access itself: the MMU sets the accessed (young) bit of the
    leaf that maps ``addr`` (a populate through GUP does not)."""
    with mm.mmap_read_lock(), _FAULT_LOCK:
        for level in (PMD, PTE):
            loc = mm.locate(addr, level, False)
            if loc is None:
                return
            t = mm.table(loc[0])
            v = int(t[loc[1]])
            if level == PMD and not pmd_leaf(v):
                continue
            if v & C._PAGE_PRESENT:
                t[loc[1]] = v | C._PAGE_ACCESSED
            return


def populate(mm, start, end, mode, ignore_errors):
    """__mm_populate / madvise_populate.  mode "auto": write faults for
    private writable VMAs, else read faults (mlock, MAP_POPULATE);
    "read" / "write": MADV_POPULATE_READ / _WRITE.  Returns 0 or the
    errno of the populate (EFAULT for a guard page or SIGBUS, EINVAL for
    a VMA that refuses the access, ENOMEM for a hole)."""
    a = start
    while a < end:
        vma = mm.find_vma(a)
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
            code, where = gup_range(mm, vma, a, b, write)
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


def gup_range(mm, vma, start, end, write):
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
            return fault_range(mm, vma, a, end, write)
        except OSError as e:
            if e.errno != ENOMEM:
                raise
            stop = first_without_table(mm, a, end)
            if stop is None or stop <= a:
                raise
            a = stop


def first_without_table(mm, start, end):
    """The first page of [start, end) with neither a PTE table nor a
    PMD leaf above it (where a populate walk stopped for want of a
    table), or None."""
    a = start
    while a < end:
        if mm.entry(a, PMD) == 0:
            return a
        a = (a & ~(PMD_SIZE - 1)) + PMD_SIZE
    return None
