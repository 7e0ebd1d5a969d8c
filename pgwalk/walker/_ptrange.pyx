# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The batched, caller-driven walker (``pt_range_walk``) in C: each step
descends from the top-level table to the next entry of a wanted type and
reports it, batching a large folio's PTEs, swap PTEs and PMD-mapped folios.
``ptrange_reference.py`` is the same walker in Python (the specification);
``ptrange.py`` the iterator both share.
"""

from libc.stdint cimport uint64_t, int64_t
from libc.string cimport memset

from pgwalk.walker._core cimport PageTables, pgwalk_pool_t, table_of, pgwalk_bad_link
from pgwalk.walker._constants cimport *
from pgwalk.walker._entries cimport (
    PGW_ACCESSED, PGW_DIRTY, PGW_MAX_SWAPFILES, PGW_PFN_MASK, PGW_RW, PGW_SAVED_DIRTY,
    PGW_SOFT_DIRTY, PGW_SPECIAL, PGW_SWP_DEVICE_EXCLUSIVE, PGW_SWP_DEVICE_READ,
    PGW_SWP_DEVICE_WRITE, PGW_SWP_HWPOISON, PGW_SWP_MIGRATION_READ,
    PGW_SWP_MIGRATION_READ_EXCLUSIVE, PGW_SWP_MIGRATION_WRITE, PGW_SWP_PTE_MARKER,
    PGW_SWP_OFFSET_MASK, PGW_P, PGW_PSE, PGW_PUD_PAGE_MASK, mk_swp_pte, p4d_bad,
    pgd_bad_l5, pgd_none_l5, pmd_bad, pmd_leaf, pmd_pfn, pmd_present, pte_none,
    pte_present, swp_pte_offset, swp_pte_type,
)

from .ptrange import PtRangeRecord, PtRangeWalk, check_args

C_CONSTANTS = {
    "PT_TYPE_NONE": PT_TYPE_NONE, "PT_TYPE_FOLIO": PT_TYPE_FOLIO,
    "PT_TYPE_MARKER": PT_TYPE_MARKER, "PT_TYPE_PFN": PT_TYPE_PFN,
    "PT_TYPE_SWAP": PT_TYPE_SWAP, "PT_TYPE_MIGRATION": PT_TYPE_MIGRATION,
    "PT_TYPE_DEVICE": PT_TYPE_DEVICE, "PT_TYPE_HWPOISON": PT_TYPE_HWPOISON,
    "PT_TYPE_ALL": PT_TYPE_ALL,
    "PTW_ABORT": PTW_ABORT, "PTW_DONE": PTW_DONE, "PTW_NONE": PTW_NONE,
    "PTW_FOLIO": PTW_FOLIO, "PTW_MARKER": PTW_MARKER, "PTW_PFN": PTW_PFN,
    "PTW_SWAP": PTW_SWAP, "PTW_MIGRATION": PTW_MIGRATION, "PTW_DEVICE": PTW_DEVICE,
    "PTW_HWPOISON": PTW_HWPOISON,
    "PTW_PUD_LEVEL": PTW_PUD_LEVEL, "PTW_PMD_LEVEL": PTW_PMD_LEVEL,
    "PTW_PTE_LEVEL": PTW_PTE_LEVEL,
}

cdef enum:
    VM_PFNMAP_ = 0x400
    SWP_ENTRY_TYPE_SHIFT = 58

cdef uint64_t PAGE = 4096
cdef uint64_t PMD_SZ = (<uint64_t>1) << 21
cdef uint64_t PUD_SZ = (<uint64_t>1) << 30
cdef uint64_t P4D_SZ = (<uint64_t>1) << 39
cdef uint64_t DIRTY_BITS = PGW_DIRTY | PGW_SAVED_DIRTY
cdef uint64_t BATCH_IGNORED = PGW_DIRTY | PGW_SAVED_DIRTY | PGW_SOFT_DIRTY | PGW_RW | PGW_ACCESSED


# --- the model's helpers (see ptrange_reference.py) --------------------------------

cdef inline uint64_t addr_end(uint64_t addr, uint64_t end, uint64_t size) noexcept nogil:
    cdef uint64_t boundary = (addr + size) & ~(size - 1)
    if boundary - 1 < end - 1:
        return boundary
    return end


cdef inline uint64_t pte_pfn_(uint64_t v) noexcept nogil:
    return (v & PGW_PFN_MASK) >> 12


cdef inline uint64_t pud_pfn_(uint64_t v) noexcept nogil:
    if v & PGW_PSE:
        return (v & PGW_PUD_PAGE_MASK) >> 12
    return (v & PGW_PFN_MASK) >> 12


cdef inline uint64_t softleaf(uint64_t v) noexcept nogil:
    """softleaf_from_pte/pmd/pud: the arch-independent swap entry."""
    return (swp_pte_type(v) << SWP_ENTRY_TYPE_SHIFT) | swp_pte_offset(v)


cdef inline bint is_migration(uint64_t t) noexcept nogil:
    return (t == PGW_SWP_MIGRATION_READ or t == PGW_SWP_MIGRATION_READ_EXCLUSIVE
            or t == PGW_SWP_MIGRATION_WRITE)


cdef inline bint is_device(uint64_t t) noexcept nogil:
    return t == PGW_SWP_DEVICE_WRITE or t == PGW_SWP_DEVICE_READ or t == PGW_SWP_DEVICE_EXCLUSIVE


cdef inline bint has_pfn(uint64_t t) noexcept nogil:
    return is_migration(t) or is_device(t) or t == PGW_SWP_HWPOISON


cdef inline int folio_of(pgwalk_pt_range_walk_t *ptw, uint64_t pfn, uint64_t addr,
                         uint64_t *head, uint64_t *nr) noexcept nogil:
    """page_folio through the mm's hook; returns 1 for a shared zero page."""
    if ptw.folio_fn != NULL:
        return ptw.folio_fn(ptw.folio_ctx, pfn, addr, head, nr)
    head[0] = pfn
    nr[0] = 1
    return pfn == ZERO_PFN or pfn == HUGE_ZERO_PFN


cdef inline int64_t folio_head(pgwalk_pt_range_walk_t *ptw, uint64_t pfn, uint64_t addr) noexcept nogil:
    cdef uint64_t head, nr
    folio_of(ptw, pfn, addr, &head, &nr)
    return <int64_t>head


cdef inline bint is_zero(pgwalk_pt_range_walk_t *ptw, uint64_t pfn, uint64_t addr) noexcept nogil:
    cdef uint64_t head, nr
    return folio_of(ptw, pfn, addr, &head, &nr) != 0


cdef inline void clear_bad(pgwalk_pool_t *pool, uint64_t *slot, uint64_t addr) noexcept nogil:
    pool.stats.clear_bad += 1
    if not pool.read_only:
        slot[0] = 0
    else:
        pgwalk_bad_link(pool, addr)             # an image's: left alone, reported


cdef int folio_pte_batch_flags(uint64_t *ptep, uint64_t first, uint64_t head, uint64_t fnr,
                               int max_nr, bint *w, bint *y, bint *d) noexcept nogil:
    """PTEs from ``ptep`` mapping the following pages of the folio with the
    same bits but dirty, soft-dirty, write and accessed (merged into w/y/d)."""
    cdef uint64_t pfn = pte_pfn_(first), v, acc = first, bad, chunk
    cdef uint64_t keep = ~BATCH_IGNORED
    cdef uint64_t expected
    cdef int nr = 1, i, k
    if <int64_t>(head + fnr - pfn) < max_nr:
        max_nr = <int>(head + fnr - pfn)
    # The PFN field of consecutive pages grows by one page: compare each PTE
    # with first + i pages; 8 at a time while whole chunks match (no early
    # exit inside a chunk, so the compiler can keep it in registers).
    expected = first & keep
    if pfn + <uint64_t>max_nr > (PGW_PFN_MASK >> 12):
        # the PFN field would overflow: page by page, the PFN masked
        while nr < max_nr:
            v = ptep[nr]
            if (v & keep) != (((first & ~PGW_PFN_MASK) | (((pfn + <uint64_t>nr) << 12) & PGW_PFN_MASK)) & keep):
                break
            acc |= v
            nr += 1
        max_nr = nr
    while nr + 8 <= max_nr:
        bad = 0
        chunk = 0
        for k in range(8):
            v = ptep[nr + k]
            bad |= (v & keep) ^ (expected + (<uint64_t>(nr + k) << 12))
            chunk |= v
        if bad:
            break                               # the page-by-page loop finds where
        acc |= chunk
        nr += 8
    while nr < max_nr:
        v = ptep[nr]
        if (v & keep) != expected + (<uint64_t>nr << 12):
            break
        acc |= v
        nr += 1
    w[0] = (acc & PGW_RW) != 0
    y[0] = (acc & PGW_ACCESSED) != 0
    d[0] = (acc & DIRTY_BITS) != 0
    return nr if nr < max_nr else max_nr


cdef int folio_pmd_batch(uint64_t *pmdp, int idx, uint64_t first, uint64_t head, uint64_t fnr,
                         int max_nr, bint *w, bint *y, bint *d) noexcept nogil:
    """The PMD analogue, bounded by the folio's remaining pages and the table."""
    cdef uint64_t pfn = pmd_pfn(first), v
    cdef uint64_t mask = ~(BATCH_IGNORED | PGW_PFN_MASK)
    cdef int64_t left = <int64_t>(head + fnr - pfn) // 512
    cdef int nr = 1
    if left < max_nr:
        max_nr = <int>left
    if 512 - idx < max_nr:
        max_nr = 512 - idx
    w[0] = (first & PGW_RW) != 0
    y[0] = (first & PGW_ACCESSED) != 0
    d[0] = (first & DIRTY_BITS) != 0
    while nr < max_nr:
        v = pmdp[nr]
        if (not (pmd_present(v) and pmd_leaf(v)) or (v & mask) != (first & mask)
                or pmd_pfn(v) != pfn + <uint64_t>nr * 512):
            break
        w[0] = w[0] or (v & PGW_RW) != 0
        y[0] = y[0] or (v & PGW_ACCESSED) != 0
        d[0] = d[0] or (v & DIRTY_BITS) != 0
        nr += 1
    if nr > max_nr:
        nr = max_nr
    return nr if nr >= 1 else 1


cdef int swap_pte_batch(uint64_t *ptep, int max_nr, uint64_t first) noexcept nogil:
    cdef uint64_t t = swp_pte_type(first), off = swp_pte_offset(first)
    cdef int n = 1
    while n < max_nr:
        if off + <uint64_t>n > PGW_SWP_OFFSET_MASK:
            break
        if ptep[n] != mk_swp_pte(t, off + <uint64_t>n):
            break
        n += 1
    return n


# --- the walk ----------------------------------------------------------------------

cdef int ptw_step(pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *vma,
                       uint64_t addr, uint64_t end, int flags) noexcept nogil:
    cdef pgwalk_pool_t *pool = ptw.pool
    cdef uint64_t next_addr = ptw.next_addr if ptw.next_addr else addr
    cdef uint64_t curr, entry_size = PAGE, v, pud, pmd, pte, e, t
    cdef uint64_t *slot
    cdef uint64_t *tbl
    cdef uint64_t *pudp
    cdef uint64_t *pmdp
    cdef uint64_t *ptep
    cdef uint64_t head, fnr
    cdef int64_t page, folio
    cdef int ret = PTW_DONE, nr, max_nr
    cdef bint writable, young, dirty
    cdef uint64_t pgdir = (<uint64_t>1) << (39 if ptw.levels == 4 else 48)
    cdef int pgd_shift = 39 if ptw.levels == 4 else 48

    if next_addr < vma.vm_start or next_addr >= vma.vm_end:
        ptw.warned = True                       # WARN_ON_ONCE
        ptw.warn_addr = next_addr
        return ret
    ptw.ptl = False
    if ptw.level == PTW_PTE_LEVEL:
        ptw.ptep = NULL                         # pte_unmap
    if not ptw.vma_locked:
        ptw.vma_locked = True
        ptw.vma = vma

    while True:                                 # keep_walking
        ret = PTW_DONE
        page = -1
        folio = -1
        writable = young = dirty = False
        nr = 1
        ptw.present = False
        ptw.pmd_shared = False
        ptw.folio = -1
        ptw.page = -1
        ptw.ptl = False
        curr = next_addr
        if curr >= end:
            ptw.next_addr = next_addr
            return ret
        while True:                             # again
            # pgd, p4d
            slot = ptw.pgd + ((curr >> pgd_shift) & 511)
            next_addr = addr_end(curr, end, pgdir)
            if ptw.levels == 5:
                v = slot[0]
                if pgd_none_l5(v):
                    break
                tbl = table_of(pool, slot)
                if pgd_bad_l5(v) or tbl == NULL:
                    clear_bad(pool, slot, curr)
                    break
                slot = tbl + ((curr >> 39) & 511)
            next_addr = addr_end(curr, end, P4D_SZ)
            v = slot[0]
            if pte_none(v):
                break
            tbl = table_of(pool, slot)
            if p4d_bad(v) or tbl == NULL:
                clear_bad(pool, slot, curr)
                break
            # pud
            entry_size = PUD_SZ
            ptw.level = PTW_PUD_LEVEL
            next_addr = addr_end(curr, end, PUD_SZ)
            pudp = tbl + ((curr >> 30) & 511)
            pud = pudp[0]
            ptw.entry = pud
            if pte_none(pud):
                if not flags & PT_TYPE_NONE:
                    break
                ret = PTW_NONE
                return found(ptw, ret, curr, next_addr, entry_size, 1, False, False, False, -1, -1)
            if not (pud & PGW_P) or (pud & PGW_PSE):
                ptw.ptl = True
                ptw.ptep = pudp
                if pud & PGW_P:
                    if (pud & PGW_SPECIAL) or not flags & PT_TYPE_FOLIO:
                        break
                    ret = PTW_FOLIO
                    page = <int64_t>pud_pfn_(pud)
                    folio = folio_head(ptw, <uint64_t>page, curr & ~(PUD_SZ - 1))
                    ptw.present = True
                    dirty = (pud & DIRTY_BITS) != 0
                    young = (pud & PGW_ACCESSED) != 0
                    writable = (pud & PGW_RW) != 0
                else:
                    e = softleaf(pud)
                    t = swp_pte_type(pud)
                    ptw.softleaf_entry = e
                    if t == PGW_SWP_PTE_MARKER:
                        if not flags & PT_TYPE_MARKER:
                            break
                        ret = PTW_MARKER
                    elif has_pfn(t):
                        if is_migration(t):
                            if not flags & PT_TYPE_MIGRATION:
                                break
                            ret = PTW_MIGRATION
                        elif t == PGW_SWP_HWPOISON:
                            if not flags & PT_TYPE_HWPOISON:
                                break
                            ret = PTW_HWPOISON
                        page = <int64_t>swp_pte_offset(pud)
                        folio = folio_head(ptw, <uint64_t>page, curr & ~(PUD_SZ - 1))
                return found(ptw, ret, curr, next_addr, entry_size, 1, writable, young, dirty,
                             page, folio)
            tbl = table_of(pool, pudp)
            if tbl == NULL:                     # garbage is not followed
                pgwalk_bad_link(pool, curr)     # (an image's link out of it: reported)
                break
            # pmd_table
            entry_size = PMD_SZ
            ptw.level = PTW_PMD_LEVEL
            next_addr = addr_end(curr, end, PMD_SZ)
            pmdp = tbl + ((curr >> 21) & 511)
            pmd = pmdp[0]
            ptw.entry = pmd
            if pte_none(pmd):
                if not flags & PT_TYPE_NONE:
                    break
                ret = PTW_NONE
                return found(ptw, ret, curr, next_addr, entry_size, 1, False, False, False, -1, -1)
            if not pmd_present(pmd) or pmd_leaf(pmd):
                ptw.ptl = True
                ptw.ptep = pmdp
                if pmd_present(pmd):
                    if not (pmd & PGW_SPECIAL) and not is_zero(ptw, pmd_pfn(pmd), curr & ~(PMD_SZ - 1)):
                        if not flags & PT_TYPE_FOLIO:
                            break
                        ret = PTW_FOLIO
                        page = <int64_t>pmd_pfn(pmd)
                        folio_of(ptw, <uint64_t>page, curr & ~(PMD_SZ - 1), &head, &fnr)
                        folio = <int64_t>head
                        if fnr * PAGE > entry_size:
                            nr = folio_pmd_batch(pmdp, <int>((curr >> 21) & 511), pmd, head, fnr,
                                                 <int>(fnr * PAGE // entry_size),
                                                 &writable, &young, &dirty)
                        else:
                            dirty = (pmd & DIRTY_BITS) != 0
                            young = (pmd & PGW_ACCESSED) != 0
                            writable = (pmd & PGW_RW) != 0
                    elif is_zero(ptw, pmd_pfn(pmd), curr & ~(PMD_SZ - 1)) or vma.vm_flags & VM_PFNMAP_:
                        if not flags & PT_TYPE_PFN:
                            break
                        ret = PTW_PFN
                    else:
                        break
                    ptw.present = True
                    next_addr += <uint64_t>nr * entry_size - entry_size
                else:
                    e = softleaf(pmd)
                    t = swp_pte_type(pmd)
                    ptw.softleaf_entry = e
                    if t == PGW_SWP_PTE_MARKER:
                        if not flags & PT_TYPE_MARKER:
                            break
                        ret = PTW_MARKER
                    elif has_pfn(t):
                        if is_migration(t):
                            if not flags & PT_TYPE_MIGRATION:
                                break
                            ret = PTW_MIGRATION
                        elif t == PGW_SWP_HWPOISON:
                            if not flags & PT_TYPE_HWPOISON:
                                break
                            ret = PTW_HWPOISON
                        else:
                            if not flags & PT_TYPE_DEVICE:
                                break
                            ptw.present = True
                            ret = PTW_DEVICE
                        page = <int64_t>swp_pte_offset(pmd)
                        folio = folio_head(ptw, <uint64_t>page, curr & ~(PMD_SZ - 1))
                # hugetlb_pmd_shared: never (a pool table has one owner slot)
                return found(ptw, ret, curr, next_addr, entry_size, nr, writable, young, dirty,
                             page, folio)
            # pte_table: pte_offset_map_lock, clearing a bad PMD
            entry_size = PAGE
            ptw.level = PTW_PTE_LEVEL
            next_addr = curr + PAGE
            tbl = table_of(pool, pmdp)
            if pmd_bad(pmd) or tbl == NULL:
                clear_bad(pool, pmdp, curr)
                if pool.read_only:
                    # cannot clear: skip what it covers, as its clearing would
                    # (met once, not once per page; no endless retry)
                    next_addr = addr_end(curr, end, PMD_SZ)
                    break
                continue                        # goto again
            ptep = tbl + ((curr >> 12) & 511)
            pte = ptep[0]
            ptw.entry = pte
            ptw.ptep = ptep
            ptw.ptl = True
            if pte_none(pte):
                if not flags & PT_TYPE_NONE:
                    ptw.ptep = NULL
                    break
                ret = PTW_NONE
            elif pte_present(pte):
                dirty = (pte & DIRTY_BITS) != 0
                young = (pte & PGW_ACCESSED) != 0
                writable = (pte & PGW_RW) != 0
                if not (pte & PGW_SPECIAL):
                    if not flags & PT_TYPE_FOLIO:
                        ptw.ptep = NULL
                        break
                    ret = PTW_FOLIO
                    page = <int64_t>pte_pfn_(pte)
                    folio_of(ptw, <uint64_t>page, curr, &head, &fnr)
                    folio = <int64_t>head
                    if fnr > 1:
                        max_nr = <int>((addr_end(curr, end, PMD_SZ) - curr) >> 12)
                        nr = folio_pte_batch_flags(ptep, pte, head, fnr, max_nr,
                                                   &writable, &young, &dirty)
                elif is_zero(ptw, pte_pfn_(pte), curr) or vma.vm_flags & VM_PFNMAP_:
                    if not flags & PT_TYPE_PFN:
                        ptw.ptep = NULL
                        break
                    ret = PTW_PFN
                # else: special and neither: the type stays PTW_DONE
                ptw.present = True
                next_addr += <uint64_t>nr * entry_size - entry_size
            else:
                e = softleaf(pte)
                t = swp_pte_type(pte)
                ptw.softleaf_entry = e
                if t == PGW_SWP_PTE_MARKER:
                    if not flags & PT_TYPE_MARKER:
                        ptw.ptep = NULL
                        break
                    ret = PTW_MARKER
                elif t < PGW_MAX_SWAPFILES:
                    if not flags & PT_TYPE_SWAP:
                        ptw.ptep = NULL
                        break
                    max_nr = <int>((addr_end(curr, end, PMD_SZ) - curr) >> 12)
                    nr = swap_pte_batch(ptep, max_nr, pte)
                    next_addr += <uint64_t>nr * entry_size - entry_size
                    ret = PTW_SWAP
                else:
                    if is_migration(t):
                        if not flags & PT_TYPE_MIGRATION:
                            ptw.ptep = NULL
                            break
                        ret = PTW_MIGRATION
                    elif t == PGW_SWP_HWPOISON:
                        if not flags & PT_TYPE_HWPOISON:
                            ptw.ptep = NULL
                            break
                        ret = PTW_HWPOISON
                    else:
                        if not flags & PT_TYPE_DEVICE:
                            ptw.ptep = NULL
                            break
                        ptw.present = True
                        ret = PTW_DEVICE
                    page = <int64_t>swp_pte_offset(pte)
                    folio = folio_head(ptw, <uint64_t>page, curr)
            return found(ptw, ret, curr, next_addr, entry_size, nr, writable, young, dirty,
                         page, folio)
        # keep_walking: the next entry from the top


cdef inline int found(pgwalk_pt_range_walk_t *ptw, int ret, uint64_t curr, uint64_t next_addr,
                      uint64_t entry_size, int nr, bint writable, bint young, bint dirty,
                      int64_t page, int64_t folio) noexcept nogil:
    ptw.curr_addr = curr
    ptw.next_addr = next_addr
    ptw.writable = writable
    ptw.young = young
    ptw.dirty = dirty
    ptw.nr_entries = nr
    ptw.size = <uint64_t>nr * entry_size
    if folio >= 0:
        ptw.folio = folio
        ptw.page = page + <int64_t>((curr & (entry_size - 1)) >> 12)
    return ret


cdef int pgwalk_pt_range_walk_start(pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *vma,
                                    uint64_t addr, uint64_t end, int flags) noexcept nogil:
    ptw.warned = False
    if ptw.pool == NULL or addr >= end:
        return PTW_DONE
    return ptw_step(ptw, vma, addr, end, flags)


cdef int pgwalk_pt_range_walk_next(pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *vma,
                                   uint64_t addr, uint64_t end, int flags) noexcept nogil:
    ptw.warned = False
    if ptw.next_addr >= end:
        return PTW_DONE
    return ptw_step(ptw, vma, addr, end, flags)


cdef void pgwalk_pt_range_walk_done(pgwalk_pt_range_walk_t *ptw) noexcept nogil:
    ptw.ptl = False
    if ptw.level == PTW_PTE_LEVEL:
        ptw.ptep = NULL
    ptw.vma_locked = False


cdef int pgwalk_pt_range_walk_init(pgwalk_pt_range_walk_t *ptw, object mm,
                                   object folio_hook) except -1:
    """Zero ``ptw`` and point it at ``mm``'s tables (None: no mm, every walk
    is empty) and at ``folio_hook`` (``AddressSpace.pt_folio_hook``'s
    answer, or None)."""
    cdef PageTables pt
    memset(ptw, 0, sizeof(pgwalk_pt_range_walk_t))
    ptw.page = -1
    ptw.folio = -1
    if mm is not None:
        pt = <PageTables?>mm
        ptw.pool = &pt.pool
        ptw.pgd = pt.pgd_ptr
        ptw.levels = pt.levels
    if folio_hook is not None:
        fn, ctx = folio_hook.fn_address, folio_hook.ctx_address
        if not isinstance(fn, int) or not isinstance(ctx, int) or fn == 0:
            raise TypeError("the folio hook must give int fn_address (non-zero) and ctx_address")
        ptw.folio_fn = <pgwalk_folio_fn><size_t>fn
        ptw.folio_ctx = <void *><size_t>ctx
    return 0


cdef class _Stepper:
    """The compiled steps for the shared driver (``ptrange.PtRangeWalk``):
    owns the struct, the VMA bounds and the folio hook."""
    cdef pgwalk_pt_range_walk_t ptw
    cdef pgwalk_vma_t vma
    cdef uint64_t a_start, a_end
    cdef int flags
    cdef object mm, hook

    def __cinit__(self, mm, vma, uint64_t start, uint64_t end, int flags):
        self.hook = mm.pt_folio_hook(vma) if mm is not None else None
        self.mm = mm
        pgwalk_pt_range_walk_init(&self.ptw, mm, self.hook)
        self.vma.vm_start = vma.vm_start
        self.vma.vm_end = vma.vm_end
        self.vma.vm_flags = vma.vm_flags
        self.a_start, self.a_end, self.flags = start, end, flags

    def will_step(self, bint started):
        cdef uint64_t a
        if not started:
            if self.ptw.pool == NULL or self.a_start >= self.a_end:
                return False
            a = self.a_start
        else:
            if self.ptw.next_addr >= self.a_end:
                return False
            a = self.ptw.next_addr if self.ptw.next_addr else self.a_start
        return self.vma.vm_start <= a < self.vma.vm_end

    def start(self):
        cdef int t
        with nogil:
            t = pgwalk_pt_range_walk_start(&self.ptw, &self.vma, self.a_start, self.a_end, self.flags)
        return t

    def next(self):
        cdef int t
        with nogil:
            t = pgwalk_pt_range_walk_next(&self.ptw, &self.vma, self.a_start, self.a_end, self.flags)
        return t

    def warned(self):
        return bool(self.ptw.warned)

    def generation(self):
        """``ptrange.mm_generation`` of the mm, read from C."""
        cdef int i
        cdef int64_t freed = 0
        if self.ptw.pool == NULL:
            return None
        for i in range(1, 5):                   # as PageTables.stats["freed"]
            freed += self.ptw.pool.stats.freed[i]
        return (self.mm._lock.seq, freed)

    def addr(self):
        return self.ptw.warn_addr

    def done(self):
        pgwalk_pt_range_walk_done(&self.ptw)

    def held(self):
        """(ptl held, entry pointer set, vma locked): what ``done`` releases."""
        return (bool(self.ptw.ptl), self.ptw.ptep != NULL, bool(self.ptw.vma_locked))

    def record(self, int t):
        cdef pgwalk_pt_range_walk_t *p = &self.ptw
        return PtRangeRecord(t, p.level, p.curr_addr, p.next_addr, p.nr_entries, p.size,
                             bool(p.writable), bool(p.young), bool(p.dirty), bool(p.present),
                             bool(p.pmd_shared), p.entry, p.softleaf_entry, p.page, p.folio)


def pt_range_walk(vma, start, end, flags=PT_TYPE_ALL, *, mm=None):
    """Iterate over ``[start, end)`` of ``vma``, one ``PtRangeRecord`` per
    entry or batch of the types ``flags`` asks for (the RFC's
    ``pt_range_walk_start``/``_next``/``_done``).  Hold the mmap lock while
    iterating."""
    mm = check_args(vma, start, end, flags, mm)
    return PtRangeWalk(_Stepper(mm, vma, start, end, flags), mm, vma, start, end, flags)
