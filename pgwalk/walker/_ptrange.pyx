# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The batched, caller-driven walker (``pt_range_walk``) in C: each step
descends from the top-level table to the next entry of a wanted type and
reports it, batching a large folio's PTEs, swap PTEs and PMD-mapped folios
(pgwalk skips the descents whose end it knows: docs/decisions.md 26).
``ptrange_reference.py`` is the same walker in Python (the specification).
The iterator over the steps (``PtRangeWalk``, the driver's rules of
``ptrange.py``) and the record type (``PtRangeRecord``) are here too, shared
with the reference walker.
"""

cimport cython
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.object cimport PyObject

cdef extern from "Python.h":
    # on a borrowed pointer: no temporary reference taken to read it
    Py_ssize_t refcnt "Py_REFCNT" (PyObject *o) noexcept
from libc.stdint cimport uint64_t, int64_t
from libc.string cimport memset

from pgwalk.walker._core cimport (
    SLAB_TABLES, LockCounts, PageTables, pgwalk_bad_link, pgwalk_pool_t, table_of,
)
from pgwalk.walker._constants cimport *
from pgwalk.walker._entries cimport (
    PGW_ACCESSED, PGW_DIRTY, PGW_MAX_SWAPFILES, PGW_PFN_MASK, PGW_RW, PGW_SAVED_DIRTY,
    PGW_KNL_ERRATUM, PGW_SOFT_DIRTY, PGW_SPECIAL, PGW_SWP_DEVICE_EXCLUSIVE, PGW_SWP_DEVICE_READ,
    PGW_SWP_DEVICE_WRITE, PGW_SWP_HWPOISON, PGW_SWP_MIGRATION_READ,
    PGW_SWP_MIGRATION_READ_EXCLUSIVE, PGW_SWP_MIGRATION_WRITE, PGW_SWP_PTE_MARKER,
    PGW_SWP_OFFSET_MASK, PGW_P, PGW_PSE, PGW_PUD_PAGE_MASK, entry_index, mk_swp_pte, p4d_bad,
    pgd_bad_l5, pgd_none_l5, pmd_bad, pmd_leaf, pmd_pfn, pmd_present, pte_none,
    pte_present, swp_pte_offset, swp_pte_type,
)

import warnings

from .. import constants as _C
from ._args import check_pt_range_args
from ._core import LockAssertionError

cdef extern from "_kernels.h":
    int pgw_pte_batch(const uint64_t *pte, int max_nr, uint64_t keep, uint64_t *acc) noexcept nogil
    int pgw_first_not_none(const uint64_t *pte, int n, uint64_t ignore) noexcept nogil

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

# compile-time constants (the compiler folds them into the step)
cdef extern from *:
    """
    #define PTR_PAGE           PGW_PAGE_SIZE
    #define PTR_PMD_SZ         PGW_PMD_SIZE
    #define PTR_PUD_SZ         PGW_PUD_SIZE
    #define PTR_P4D_SZ         PGW_P4D_SIZE
    #define PTR_DIRTY_BITS     (PGW_DIRTY | PGW_SAVED_DIRTY)
    #define PTR_BATCH_IGNORED  (PGW_DIRTY | PGW_SAVED_DIRTY | PGW_SOFT_DIRTY | PGW_RW | PGW_ACCESSED)
    """
    uint64_t PAGE "PTR_PAGE"
    uint64_t PMD_SZ "PTR_PMD_SZ"
    uint64_t PUD_SZ "PTR_PUD_SZ"
    uint64_t P4D_SZ "PTR_P4D_SZ"
    uint64_t DIRTY_BITS "PTR_DIRTY_BITS"
    uint64_t BATCH_IGNORED "PTR_BATCH_IGNORED"


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
    cdef uint64_t pfn = pte_pfn_(first), v, acc = first
    cdef uint64_t keep = ~BATCH_IGNORED
    cdef int nr = 1
    if <int64_t>(head + fnr - pfn) < max_nr:
        max_nr = <int>(head + fnr - pfn)
    if max_nr <= 1:
        nr = 1
    elif pfn + <uint64_t>max_nr > (PGW_PFN_MASK >> 12):
        # the PFN field would overflow: page by page, the PFN masked
        while nr < max_nr:
            v = ptep[nr]
            if (v & keep) != (((first & ~PGW_PFN_MASK) | (((pfn + <uint64_t>nr) << 12) & PGW_PFN_MASK)) & keep):
                break
            acc |= v
            nr += 1
    else:
        # The PFN field of consecutive pages grows by one page: compare each
        # PTE with first + i pages, vectorised (_kernels.h).
        nr = pgw_pte_batch(ptep, max_nr, keep, &acc)
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

cdef inline uint64_t *link(pgwalk_pool_t *pool, uint64_t *slot) noexcept nogil:
    """The core's ``table_of`` with its pool case inlined (a step follows
    three or four links): the table ``slot`` links to if it is a live table
    of this pool owned by exactly that slot, else NULL."""
    cdef uint64_t tid
    if pool.image_base != NULL:
        return table_of(pool, slot)
    tid = entry_index(slot[0])
    if tid >= <uint64_t>pool.ntables or pool.owner[tid] != slot:
        return NULL
    return pool.slabs[tid // SLAB_TABLES] + (tid % SLAB_TABLES) * NR


cdef enum:
    PTE_SKIP = -1                 # the PTE is not of a wanted type: keep walking
    DESCENT_SKIP = -1             # the descent found nothing wanted: keep walking
    DESCENT_PTE = -2              # the descent reached a PTE table


cdef inline uint64_t *cached_pte_table(pgwalk_pt_range_walk_t *ptw, uint64_t curr) noexcept nogil:
    """The PTE table a descent for ``curr`` would reach, from the cache, or
    NULL (a miss: descend).  A hit needs the same 2 MiB and, at every level
    of the cached path, the same value in the slot and the table it links to
    still owned by that slot: the descent is a function of these alone (the
    slabs never move), so it would reach the same table, through entries
    that are neither none nor bad, clearing nothing."""
    cdef pgwalk_pool_t *pool = ptw.pool
    cdef uint64_t *s
    cdef uint64_t tid
    cdef int i
    cdef bint ok = True
    if ptw.c_pte == NULL or (curr & ~(PMD_SZ - 1)) != ptw.c_key or pool.image_base != NULL:
        return NULL
    for i in range(ptw.c_n):
        s = ptw.c_slot[i]
        tid = entry_index(ptw.c_val[i])
        ok = ok & (s[0] == ptw.c_val[i]) & (tid < <uint64_t>pool.ntables)
        if ok:
            ok = pool.owner[tid] == s
    return ptw.c_pte if ok else NULL


cdef inline int pte_entry_type(pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *vma,
                               uint64_t *ptep, uint64_t pte, uint64_t curr, uint64_t end,
                               int flags, int *nr, bint *writable, bint *young, bint *dirty,
                               int64_t *page, int64_t *folio) noexcept nogil:
    """The PTE level of a step, from ``pte_offset_map_lock``'s success on:
    the type of the PTE at ``curr`` (PTE_SKIP: not wanted), its batch and
    bits.  ``ptw.present`` and ``ptw.softleaf_entry`` are set as the step
    sets them."""
    cdef uint64_t head, fnr, e, t
    cdef int ret = PTW_DONE, max_nr
    if pte_none(pte):
        if not flags & PT_TYPE_NONE:
            return PTE_SKIP
        return PTW_NONE
    if pte_present(pte):
        dirty[0] = (pte & DIRTY_BITS) != 0
        young[0] = (pte & PGW_ACCESSED) != 0
        writable[0] = (pte & PGW_RW) != 0
        if not (pte & PGW_SPECIAL):
            if not flags & PT_TYPE_FOLIO:
                return PTE_SKIP
            ret = PTW_FOLIO
            page[0] = <int64_t>pte_pfn_(pte)
            folio_of(ptw, <uint64_t>page[0], curr, &head, &fnr)
            folio[0] = <int64_t>head
            if fnr > 1:
                max_nr = <int>((addr_end(curr, end, PMD_SZ) - curr) >> 12)
                nr[0] = folio_pte_batch_flags(ptep, pte, head, fnr, max_nr, writable, young, dirty)
        elif is_zero(ptw, pte_pfn_(pte), curr) or vma.vm_flags & VM_PFNMAP_:
            if not flags & PT_TYPE_PFN:
                return PTE_SKIP
            ret = PTW_PFN
        # else: special and neither: the type stays PTW_DONE
        ptw.present = True
        return ret
    e = softleaf(pte)
    t = swp_pte_type(pte)
    ptw.softleaf_entry = e
    if t == PGW_SWP_PTE_MARKER:
        if not flags & PT_TYPE_MARKER:
            return PTE_SKIP
        return PTW_MARKER
    if t < PGW_MAX_SWAPFILES:
        if not flags & PT_TYPE_SWAP:
            return PTE_SKIP
        max_nr = <int>((addr_end(curr, end, PMD_SZ) - curr) >> 12)
        nr[0] = swap_pte_batch(ptep, max_nr, pte)
        return PTW_SWAP
    if is_migration(t):
        if not flags & PT_TYPE_MIGRATION:
            return PTE_SKIP
        ret = PTW_MIGRATION
    elif t == PGW_SWP_HWPOISON:
        if not flags & PT_TYPE_HWPOISON:
            return PTE_SKIP
        ret = PTW_HWPOISON
    else:
        if not flags & PT_TYPE_DEVICE:
            return PTE_SKIP
        ptw.present = True
        ret = PTW_DEVICE
    page[0] = <int64_t>swp_pte_offset(pte)
    folio[0] = folio_head(ptw, <uint64_t>page[0], curr)
    return ret


cdef inline int huge_softleaf_type(pgwalk_pt_range_walk_t *ptw, uint64_t v, int flags,
                                   bint device, int64_t *page) noexcept nogil:
    """A non-present PUD or PMD entry ``v``: its softleaf recorded in
    ``ptw``; its type (PTE_SKIP: not wanted; PTW_DONE: a swap-file entry, or
    a device entry where ``device`` is false (the PUD level), which ends
    the walk) and, for a PFN entry, the PFN it names in ``page``."""
    cdef uint64_t t = swp_pte_type(v)
    cdef int ret = PTW_DONE
    ptw.softleaf_entry = softleaf(v)
    if t == PGW_SWP_PTE_MARKER:
        return PTW_MARKER if flags & PT_TYPE_MARKER else PTE_SKIP
    if not has_pfn(t):
        return PTW_DONE
    if is_migration(t):
        if not flags & PT_TYPE_MIGRATION:
            return PTE_SKIP
        ret = PTW_MIGRATION
    elif t == PGW_SWP_HWPOISON:
        if not flags & PT_TYPE_HWPOISON:
            return PTE_SKIP
        ret = PTW_HWPOISON
    elif device:                                # device private / exclusive
        if not flags & PT_TYPE_DEVICE:
            return PTE_SKIP
        ptw.present = True
        ret = PTW_DEVICE
    page[0] = <int64_t>swp_pte_offset(v)
    return ret


cdef inline int skip(uint64_t *next_addr_out, uint64_t next_addr) noexcept nogil:
    next_addr_out[0] = next_addr
    return DESCENT_SKIP


cdef int descend(pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *vma, uint64_t curr,
                 uint64_t end, int flags, uint64_t *next_addr_out, uint64_t **pte_table) noexcept nogil:
    """``pt_range_walk``'s descent from the top-level table for ``curr``: a
    record at the PUD or PMD level (its type, ``found`` done), DESCENT_SKIP
    (keep walking from ``*next_addr_out``) or DESCENT_PTE (``*pte_table`` is
    the PTE table, ``pte_offset_map_lock`` succeeded; the path is cached)."""
    cdef pgwalk_pool_t *pool = ptw.pool
    cdef uint64_t next_addr, entry_size, v, pud, pmd
    cdef uint64_t *slot
    cdef uint64_t *tbl
    cdef uint64_t *pudp
    cdef uint64_t *pmdp
    cdef uint64_t *top = NULL
    cdef uint64_t head, fnr
    cdef int64_t page = -1, folio = -1
    cdef int ret = PTW_DONE, nr = 1
    cdef bint writable = False, young = False, dirty = False
    cdef uint64_t pgdir = (<uint64_t>1) << (39 if ptw.levels == 4 else 48)
    cdef int pgd_shift = 39 if ptw.levels == 4 else 48

    while True:                                 # again
        # pgd, p4d
        slot = ptw.pgd + ((curr >> pgd_shift) & 511)
        next_addr = addr_end(curr, end, pgdir)
        if ptw.levels == 5:
            v = slot[0]
            if pgd_none_l5(v):
                return skip(next_addr_out, next_addr)
            tbl = link(pool, slot)
            if pgd_bad_l5(v) or tbl == NULL:
                clear_bad(pool, slot, curr)
                return skip(next_addr_out, next_addr)
            slot = tbl + ((curr >> 39) & 511)
        next_addr = addr_end(curr, end, P4D_SZ)
        v = slot[0]
        if pte_none(v):
            return skip(next_addr_out, next_addr)
        top = slot
        tbl = link(pool, slot)
        if p4d_bad(v) or tbl == NULL:
            clear_bad(pool, slot, curr)
            return skip(next_addr_out, next_addr)
        # pud
        entry_size = PUD_SZ
        ptw.level = PTW_PUD_LEVEL
        next_addr = addr_end(curr, end, PUD_SZ)
        pudp = tbl + ((curr >> 30) & 511)
        pud = pudp[0]
        ptw.entry = pud
        if pte_none(pud):
            if not flags & PT_TYPE_NONE:
                return skip(next_addr_out, next_addr)
            ret = PTW_NONE
            return found(ptw, ret, curr, next_addr, entry_size, 1, False, False, False, -1, -1)
        if not (pud & PGW_P) or (pud & PGW_PSE):
            ptw.ptl = True
            ptw.ptep = pudp
            if pud & PGW_P:
                if (pud & PGW_SPECIAL) or not flags & PT_TYPE_FOLIO:
                    return skip(next_addr_out, next_addr)
                ret = PTW_FOLIO
                page = <int64_t>pud_pfn_(pud)
                folio = folio_head(ptw, <uint64_t>page, curr & ~(PUD_SZ - 1))
                ptw.present = True
                dirty = (pud & DIRTY_BITS) != 0
                young = (pud & PGW_ACCESSED) != 0
                writable = (pud & PGW_RW) != 0
            else:
                ret = huge_softleaf_type(ptw, pud, flags, False, &page)
                if ret == PTE_SKIP:
                    return skip(next_addr_out, next_addr)
                if page >= 0:
                    folio = folio_head(ptw, <uint64_t>page, curr & ~(PUD_SZ - 1))
            return found(ptw, ret, curr, next_addr, entry_size, 1, writable, young, dirty,
                         page, folio)
        tbl = link(pool, pudp)
        if tbl == NULL:                     # garbage is not followed
            pgwalk_bad_link(pool, curr)     # (an image's link out of it: reported)
            return skip(next_addr_out, next_addr)
        # pmd_table
        entry_size = PMD_SZ
        ptw.level = PTW_PMD_LEVEL
        next_addr = addr_end(curr, end, PMD_SZ)
        pmdp = tbl + ((curr >> 21) & 511)
        pmd = pmdp[0]
        ptw.entry = pmd
        if pte_none(pmd):
            if not flags & PT_TYPE_NONE:
                return skip(next_addr_out, next_addr)
            ret = PTW_NONE
            return found(ptw, ret, curr, next_addr, entry_size, 1, False, False, False, -1, -1)
        if not pmd_present(pmd) or pmd_leaf(pmd):
            ptw.ptl = True
            ptw.ptep = pmdp
            if pmd_present(pmd):
                if not (pmd & PGW_SPECIAL) and not is_zero(ptw, pmd_pfn(pmd), curr & ~(PMD_SZ - 1)):
                    if not flags & PT_TYPE_FOLIO:
                        return skip(next_addr_out, next_addr)
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
                        return skip(next_addr_out, next_addr)
                    ret = PTW_PFN
                else:
                    return skip(next_addr_out, next_addr)
                ptw.present = True
                next_addr += <uint64_t>nr * entry_size - entry_size
            else:
                ret = huge_softleaf_type(ptw, pmd, flags, True, &page)
                if ret == PTE_SKIP:
                    return skip(next_addr_out, next_addr)
                if page >= 0:
                    folio = folio_head(ptw, <uint64_t>page, curr & ~(PMD_SZ - 1))
            # hugetlb_pmd_shared: never (a pool table has one owner slot)
            return found(ptw, ret, curr, next_addr, entry_size, nr, writable, young, dirty,
                         page, folio)
        # pte_table: pte_offset_map_lock, clearing a bad PMD
        next_addr = curr + PAGE
        tbl = link(pool, pmdp)
        if pmd_bad(pmd) or tbl == NULL:
            ptw.level = PTW_PTE_LEVEL
            clear_bad(pool, pmdp, curr)
            if pool.read_only:
                # cannot clear: skip what it covers, as its clearing would
                # (met once, not once per page; no endless retry)
                return skip(next_addr_out, addr_end(curr, end, PMD_SZ))
            continue                            # goto again
        # the path, for the next descent (cached_pte_table)
        ptw.c_n = 0
        if ptw.levels == 5:
            cache_link(ptw, ptw.pgd + ((curr >> 48) & 511))
        cache_link(ptw, top)
        cache_link(ptw, pudp)
        cache_link(ptw, pmdp)
        ptw.c_pte = tbl
        ptw.c_key = curr & ~(PMD_SZ - 1)
        pte_table[0] = tbl
        return DESCENT_PTE


cdef inline void cache_link(pgwalk_pt_range_walk_t *ptw, uint64_t *slot) noexcept nogil:
    ptw.c_slot[ptw.c_n] = slot
    ptw.c_val[ptw.c_n] = slot[0]
    ptw.c_n += 1


cdef int ptw_step(pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *vma,
                  uint64_t addr, uint64_t end, int flags) noexcept nogil:
    cdef uint64_t next_addr = ptw.next_addr if ptw.next_addr else addr
    cdef uint64_t curr, pte
    cdef uint64_t *ptep
    cdef uint64_t *tbl
    cdef int64_t page, folio
    cdef int ret = PTW_DONE, nr, lim, k
    cdef bint writable, young, dirty

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
        # The RFC descends from the top-level table at each address; pgwalk
        # skips a descent whose end it knows (cached_pte_table): the same
        # records and steps at less cost (docs/decisions.md 26).
        tbl = cached_pte_table(ptw, curr)
        if tbl == NULL:
            ret = descend(ptw, vma, curr, end, flags, &next_addr, &tbl)
            if ret == DESCENT_SKIP:
                continue                        # keep_walking
            if ret != DESCENT_PTE:
                return ret                      # a PUD- or PMD-level record
        # pte_table
        ptw.level = PTW_PTE_LEVEL
        next_addr = curr + PAGE
        ptep = tbl + ((curr >> 12) & 511)
        while True:
            pte = ptep[0]
            if pte_none(pte) and not flags & PT_TYPE_NONE:
                # A run of none PTEs, each of which the loop below would skip
                # alike (nothing but the entry pointer and the entry copy
                # changes): skipped at once, to the first PTE that is not
                # none or the end of the table or range.
                lim = <int>((addr_end(curr, end, PMD_SZ) - curr) >> 12)
                k = pgw_first_not_none(ptep, lim, PGW_KNL_ERRATUM) if lim > 1 else 1
                ptw.entry = ptep[k - 1]
                ptw.ptep = NULL
                ptw.ptl = False
                if k >= lim:
                    next_addr = curr + <uint64_t>k * PAGE
                    break                       # the next table, or the end
                curr += <uint64_t>k * PAGE
                next_addr = curr + PAGE
                ptep += k
                pte = ptep[0]
            ptw.entry = pte
            ptw.ptep = ptep
            ptw.ptl = True
            ret = pte_entry_type(ptw, vma, ptep, pte, curr, end, flags, &nr,
                                 &writable, &young, &dirty, &page, &folio)
            if ret != PTE_SKIP:
                next_addr += <uint64_t>nr * PAGE - PAGE
                return found(ptw, ret, curr, next_addr, PAGE, nr, writable, young,
                             dirty, page, folio)
            # not wanted: pte_unmap_unlock and keep walking.  The RFC
            # descends again for the next address; within the same PTE table
            # that descent reaches this table again, through the same entries,
            # which nothing in the step has changed.  pgwalk goes on in the
            # table: the same records and steps at less cost (docs/decisions.md 26).
            ptw.ptep = NULL
            ptw.ptl = False
            if next_addr & (PMD_SZ - 1) == 0 or next_addr >= end:
                break                           # the next table, or the end
            ptw.present = False                 # keep_walking's resets
            writable = young = dirty = False
            curr = next_addr
            next_addr = curr + PAGE
            ptep += 1
        # keep_walking


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
    ptw.c_pte = NULL                            # the descent cache lives for one walk
    ptw.c_n = 0
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


@cython.final
@cython.auto_pickle(False)
cdef class _Stepper:
    """The compiled steps: owns the struct, the VMA bounds and the folio
    hook.  ``PtRangeWalk`` drives it in C; the methods are the stepper
    interface of the reference's ``_Stepper`` (and ``held`` for tests)."""
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

    cdef inline bint c_will_step(self, bint started) noexcept:
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

    cdef inline int64_t c_freed(self) noexcept:
        cdef int i
        cdef int64_t freed = 0
        for i in range(1, 5):                   # as PageTables.stats["freed"]
            freed += self.ptw.pool.stats.freed[i]
        return freed

    cdef inline int c_step(self, bint started) noexcept:
        if started:
            return pgwalk_pt_range_walk_next(&self.ptw, &self.vma, self.a_start, self.a_end,
                                             self.flags)
        return pgwalk_pt_range_walk_start(&self.ptw, &self.vma, self.a_start, self.a_end,
                                          self.flags)

    cdef PtRangeRecord c_record(self, int t, PtRangeRecord r=None):
        """The record of the step that returned ``t``, in ``r`` (a record no
        one else holds) or a new one."""
        cdef pgwalk_pt_range_walk_t *p = &self.ptw
        if r is None:
            r = PtRangeRecord.__new__(PtRangeRecord)
        r.type = t
        r.level = p.level
        r.curr_addr = p.curr_addr
        r.next_addr = p.next_addr
        r.nr_entries = p.nr_entries
        r.size = p.size
        r.writable = p.writable
        r.young = p.young
        r.dirty = p.dirty
        r.present = p.present
        r.pmd_shared = p.pmd_shared
        r.entry = p.entry
        r.softleaf_entry = p.softleaf_entry
        r.pfn = p.page
        r.folio = p.folio
        return r

    def will_step(self, bint started):
        return self.c_will_step(started)

    def start(self):
        return self.c_step(False)

    def next(self):
        return self.c_step(True)

    def warned(self):
        return bool(self.ptw.warned)

    def generation(self):
        """``mm_generation`` of the mm, read from C."""
        if self.ptw.pool == NULL:
            return None
        return (self.mm._lock.seq, self.c_freed())

    def addr(self):
        return self.ptw.warn_addr

    def done(self):
        pgwalk_pt_range_walk_done(&self.ptw)

    def held(self):
        """(ptl held, entry pointer set, vma locked): what ``done`` releases."""
        return (bool(self.ptw.ptl), self.ptw.ptep != NULL, bool(self.ptw.vma_locked))

    def record(self, int t):
        return self.c_record(t)


# --- the record and the iterator (shared with the reference walker) -----------------

RECORD_FIELDS = ("type", "level", "curr_addr", "next_addr", "nr_entries", "size",
                 "writable", "young", "dirty", "present", "pmd_shared", "entry",
                 "softleaf_entry", "pfn", "folio")


@cython.final
@cython.freelist(64)
@cython.auto_pickle(False)
cdef class PtRangeRecord:
    """What one step reported: the ``struct pt_range_walk`` fields after a
    step returned ``type``.  ``entry`` is the raw value of the (first) entry
    the record is about; ``pfn`` is the page at ``curr_addr`` (the kernel's
    ``ptw->page``) and ``folio`` its folio's head PFN, -1 where the kernel
    leaves them NULL.  ``softleaf_entry`` is the kernel's field as it is left:
    set by the last non-present entry met, never cleared."""
    cdef readonly int type
    cdef readonly int level
    cdef readonly uint64_t curr_addr
    cdef readonly uint64_t next_addr
    cdef readonly int nr_entries
    cdef readonly uint64_t size
    cdef readonly bint writable
    cdef readonly bint young
    cdef readonly bint dirty
    cdef readonly bint present
    cdef readonly bint pmd_shared
    cdef readonly uint64_t entry
    cdef readonly uint64_t softleaf_entry
    cdef readonly int64_t pfn
    cdef readonly int64_t folio

    def __init__(self, type, level, curr_addr, next_addr, nr_entries, size, writable, young,
                 dirty, present, pmd_shared, entry, softleaf_entry, pfn, folio):
        _check_fields((type, level, curr_addr, next_addr, nr_entries, size, entry,
                       softleaf_entry, pfn, folio))
        self.type, self.level, self.curr_addr, self.next_addr = type, level, curr_addr, next_addr
        self.nr_entries, self.size, self.writable, self.young = nr_entries, size, writable, young
        self.dirty, self.present, self.pmd_shared, self.entry = dirty, present, pmd_shared, entry
        self.softleaf_entry, self.pfn, self.folio = softleaf_entry, pfn, folio

    def astuple(self):
        """The record's fields as a tuple in ``RECORD_FIELDS`` order (what ``==``
        compares)."""
        return (self.type, self.level, self.curr_addr, self.next_addr, self.nr_entries,
                self.size, self.writable, self.young, self.dirty, self.present,
                self.pmd_shared, self.entry, self.softleaf_entry, self.pfn, self.folio)

    def __eq__(self, other):
        if not isinstance(other, PtRangeRecord):
            return False
        cdef PtRangeRecord o = <PtRangeRecord>other
        return (self.type == o.type and self.level == o.level
                and self.curr_addr == o.curr_addr and self.next_addr == o.next_addr
                and self.nr_entries == o.nr_entries and self.size == o.size
                and self.writable == o.writable and self.young == o.young
                and self.dirty == o.dirty and self.present == o.present
                and self.pmd_shared == o.pmd_shared and self.entry == o.entry
                and self.softleaf_entry == o.softleaf_entry and self.pfn == o.pfn
                and self.folio == o.folio)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = None

    def __reduce__(self):
        return (PtRangeRecord, self.astuple())

    def __repr__(self):
        names = {getattr(_C, n): n for n in dir(_C) if n.startswith("PTW_") and "LEVEL" not in n}
        levels = {_C.PTW_PUD_LEVEL: "pud", _C.PTW_PMD_LEVEL: "pmd", _C.PTW_PTE_LEVEL: "pte"}
        return (f"<{names.get(self.type, self.type)} {levels.get(self.level, self.level)} "
                f"[{self.curr_addr:#x}, {self.next_addr:#x}) nr={self.nr_entries} "
                f"entry={self.entry:#x} pfn={self.pfn} folio={self.folio}"
                f"{' W' if self.writable else ''}{' Y' if self.young else ''}"
                f"{' D' if self.dirty else ''}{' P' if self.present else ''}>")


# The int fields of a record and their ranges (the C types they are kept in).
cdef tuple _INT_FIELDS = (
    ("type", -(1 << 31), 1 << 31), ("level", -(1 << 31), 1 << 31),
    ("curr_addr", 0, 1 << 64), ("next_addr", 0, 1 << 64), ("nr_entries", -(1 << 31), 1 << 31),
    ("size", 0, 1 << 64), ("entry", 0, 1 << 64), ("softleaf_entry", 0, 1 << 64),
    ("pfn", -(1 << 63), 1 << 63), ("folio", -(1 << 63), 1 << 63),
)


cdef _check_fields(tuple values):
    """TypeError/ValueError naming the field that is not an int in its range."""
    for (name, lo, hi), v in zip(_INT_FIELDS, values):
        if not isinstance(v, int):
            raise TypeError(f"PtRangeRecord: {name} must be an int, not {type(v).__name__}")
        if not lo <= v < hi:
            raise ValueError(f"PtRangeRecord: {name} {v} is outside [{lo}, {hi})")


def mm_generation(mm):
    """What changes when the mm may have changed under a live iterator: the
    mmap lock's write count and the number of page tables freed."""
    freed = mm.stats["freed"]
    return (mm._lock.seq, sum(freed.values()))


@cython.final
@cython.auto_pickle(False)
cdef class PtRangeWalk:
    """The iterator over one walk: each ``next()`` is one
    ``pt_range_walk_start``/``_next`` step on ``stepper`` (the compiled or the
    reference walker), under the driver's rules (``ptrange.py``'s
    docstring).  The compiled stepper is driven in C: the mm-change and lock
    checks read the lock's ``LockCounts`` and the pool's counters, and call
    ``MMapLock.held`` only after the lock changed hands."""
    cdef readonly object mm, vma, start, end, flags
    cdef int c_last_type                # the last step's PTW_* type (-1: none yet)
    cdef readonly object _stepper
    cdef _Stepper cst                   # the compiled stepper (None: a Python one)
    cdef LockCounts counts              # the mm's lock counters (C path)
    cdef object lock
    cdef object generation_fn           # the Python path's mm_generation
    cdef object gen                     # ... and its last value
    cdef bint started, finished, has_mm
    cdef PtRangeRecord ring0, ring1     # the last two records handed out
    cdef int ring_k
    cdef int64_t gen_seq, gen_freed     # the C path's mm_generation
    cdef int64_t held_changes           # the lock's changes when held() last said yes
    cdef unsigned long held_tid         # ... to this thread

    def __init__(self, stepper, mm, vma, start, end, flags):
        self._stepper = stepper
        self.mm, self.vma, self.start, self.end, self.flags = mm, vma, start, end, flags
        self.started = self.finished = False
        self.c_last_type = -1
        self.has_mm = mm is not None
        self.held_changes = -1
        self.cst = None
        self.counts = None
        if self.has_mm:
            self.lock = mm._lock
            counts = getattr(self.lock, "counts", None)
            if (type(stepper) is _Stepper and isinstance(counts, LockCounts)
                    and (<_Stepper>stepper).ptw.pool != NULL):
                self.cst = <_Stepper>stepper
                self.counts = <LockCounts>counts
        # the stepper's own (cheaper) reading of mm_generation, if it has one
        gen = getattr(stepper, "generation", None)
        self.generation_fn = gen if gen is not None else (lambda: mm_generation(mm))

    @property
    def last_type(self):
        """The PTW_* type the last step returned (None before the first)."""
        return None if self.c_last_type < 0 else self.c_last_type

    def __iter__(self):
        return self

    def __next__(self):
        cdef _Stepper st = self.cst
        cdef int t
        cdef int64_t seq, freed
        cdef unsigned long tid
        if self.finished:
            raise StopIteration
        if st is None:
            return self._next_py()
        if self.has_mm:
            seq = self.counts.seq
            freed = st.c_freed()
            if self.started and (seq != self.gen_seq or freed != self.gen_freed):
                self.close()
                raise RuntimeError(_CHANGED)
            if st.c_will_step(self.started):
                tid = PyThread_get_thread_ident()
                if self.counts.changes != self.held_changes or tid != self.held_tid:
                    if not self.lock.held():
                        raise LockAssertionError(_UNLOCKED)
                    self.held_changes = self.counts.changes
                    self.held_tid = tid
            self.gen_seq, self.gen_freed = seq, freed
        t = st.c_step(self.started)
        self.started = True
        self.c_last_type = t
        if st.ptw.warned:
            _warn(st.ptw.warn_addr, self.vma)
        if t == PTW_DONE or t == PTW_ABORT:
            self.close()
            raise StopIteration
        # A record handed out two steps ago that only this ring still holds
        # is invisible to everyone else: it is filled again instead of
        # allocating (in a for loop the previous one is still bound).
        self.ring_k ^= 1
        if self.ring_k:
            if self.ring0 is not None and refcnt(<PyObject *>self.ring0) == 1:
                return st.c_record(t, self.ring0)
            self.ring0 = st.c_record(t)
            return self.ring0
        if self.ring1 is not None and refcnt(<PyObject *>self.ring1) == 1:
            return st.c_record(t, self.ring1)
        self.ring1 = st.c_record(t)
        return self.ring1

    cdef _next_py(self):
        """A step of a stepper written in Python, through its methods."""
        st = self._stepper
        mm = self.mm
        if mm is not None:
            gen = self.generation_fn()
            if self.started and gen != self.gen:
                self.close()
                raise RuntimeError(_CHANGED)
            if st.will_step(self.started) and not mm._lock.held():
                raise LockAssertionError(_UNLOCKED)
            self.gen = gen
        t = st.next() if self.started else st.start()
        self.started = True
        self.c_last_type = t
        if st.warned():
            _warn(st.addr(), self.vma)
        if t == PTW_DONE or t == PTW_ABORT:
            self.close()
            raise StopIteration
        return st.record(t)

    def close(self):
        """``pt_range_walk_done``: release what the walk holds; no further records."""
        if not self.finished:
            self.finished = True
            if self.cst is not None:
                pgwalk_pt_range_walk_done(&self.cst.ptw)
            else:
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


cdef str _CHANGED = ("pt_range_walk: the mm changed under the walk (a page table was freed "
                     "or the mmap write lock was taken since the previous step); start a new walk")
cdef str _UNLOCKED = "pt_range_walk needs the mmap lock: use `with mm.mmap_read_lock():`"


cdef _warn(uint64_t addr, vma):
    warnings.warn(f"pt_range_walk: the walk's address {addr:#x} is outside {vma!r} (the "
                  f"kernel warns once and returns PTW_DONE)", RuntimeWarning, stacklevel=1)


def pt_range_walk(vma, start, end, flags=PT_TYPE_ALL, *, mm=None):
    """Iterate over ``[start, end)`` of ``vma``, one ``PtRangeRecord`` per
    entry or batch of the types ``flags`` asks for (the RFC's
    ``pt_range_walk_start``/``_next``/``_done``).  Hold the mmap lock while
    iterating."""
    mm = check_pt_range_args(vma, start, end, flags, mm)
    return PtRangeWalk(_Stepper(mm, vma, start, end, flags), mm, vma, start, end, flags)
