# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The process model's page-table consumers, as C walk ops.

Every per-page operation of ``pgwalk.MM``'s process model (populate and
fault-in, zap, table reclaim, protection change, fork copy, mremap move,
guard install/remove, MADV_FREE / COLD / PAGEOUT, pagemap, mincore, smaps)
is an ops table of C slot functions handed to the one walker; the Python
side (the family modules of ``pgwalk/process/``) only orchestrates per VMA.

``Phys`` is the model's physical memory: per-PFN map counts and page flags,
shared by an mm and the processes forked from it.  ``MMOp`` owns one
``OpState`` (C memory) and exposes the slot functions as ``CFunc`` objects;
the Python side sets the state's per-call fields (``setup``) and builds an
``MMWalkOps`` from the slots it needs.
"""

from libc.stdint cimport uint64_t, int64_t, int32_t, uint8_t, int8_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset, memcpy, memchr

import numpy as np
cimport numpy as cnp

from pgwalk.walker._core cimport (CFunc, make_cfunc, pgwalk_walk_t, pgwalk_pool_t,
                           PageTables, table_of, pool_alloc, pool_free_subtree, pool_slot,
                           SLAB_TABLES, pgwalk_pte_offset_map)
from pgwalk.walker._constants cimport *
from pgwalk.walker._entries cimport (pte_none, pte_present, pmd_present, pmd_trans_huge, pmd_leaf,
                              pmd_pfn, swp_pte_type, swp_pte_offset, entry_index,
                              PGW_P, PGW_RW, PGW_DIRTY, PGW_ACCESSED, PGW_PSE,
                              PGW_PFN_MASK, PGW_PMD_PAGE_MASK, PGW_SWP_PTE_MARKER, PGW_PROTNONE,
                              PGW_MAX_SWAPFILES, PGW_SWP_DEVICE_WRITE, PGW_SWP_DEVICE_READ,
                              PGW_SWP_TYPE_SHIFT, is_swap_pmd)

cdef extern from "_kernels.h":
    void pgw_any_bits_u8(const uint64_t *pte, uint8_t *out, int n, uint64_t mask) noexcept nogil

cdef extern from *:
    """
    /* out[i] |= 1 where the swap type of pte[i], (pte[i] >> shift) & tmask,
     * lies in [lo, lo + nr) (mincore's second pass for anonymous memory: a
     * non-present entry naming a page is resident; a present entry's byte is
     * 1 already, a none entry's type is 0).  In C for restrict, so that it
     * vectorises; the numbers are the caller's. */
    PGW_CLONES static void pgw_or_swp_type_in_u8(const uint64_t *__restrict pte,
            uint8_t *__restrict out, int n, int shift, uint64_t tmask, uint64_t lo, uint64_t nr)
    {
        int i;
        for (i = 0; i < n; i++)
            out[i] |= (uint8_t)((((pte[i] >> shift) & tmask) - lo) < nr);
    }
    """
    void pgw_or_swp_type_in_u8(const uint64_t *pte, uint8_t *out, int n, int shift, uint64_t tmask,
                               uint64_t lo, uint64_t nr) noexcept nogil

cnp.import_array()

# page flags (per PFN): PageFlag in _mmops.pxd

# fault codes left in OpState.fault
cdef enum:
    F_NONE = 0
    F_SEGV = 1           # guard marker (or another marker) met
    F_BUS = 2            # beyond the end of the shmem object
    F_NOMEM = 3

cdef uint64_t PMD_SIZE_ = (<uint64_t>1) << 21
cdef uint64_t PMD_MASK_ = ~(PMD_SIZE_ - 1)
cdef uint64_t GUARD_PTE = ((<uint64_t>31) << 52) | ((<uint64_t>4) << 12) | 2
cdef uint64_t PM_PRESENT = (<uint64_t>1) << 63
cdef uint64_t PM_SWAP = (<uint64_t>1) << 62
cdef uint64_t PM_FILE = (<uint64_t>1) << 61
cdef uint64_t PM_GUARD = (<uint64_t>1) << 58
cdef uint64_t PM_EXCL = (<uint64_t>1) << 56
cdef uint64_t PM_PFN_MASK = ((<uint64_t>1) << 55) - 1

# The C view of pgwalk.constants' pagemap bits (a test checks they agree).
C_PAGEMAP_BITS = {"PM_PRESENT": PM_PRESENT, "PM_SWAP": PM_SWAP, "PM_FILE": PM_FILE,
                  "PM_GUARD_REGION": PM_GUARD, "PM_MMAP_EXCLUSIVE": PM_EXCL, "PM_PFN_MASK": PM_PFN_MASK}


# ---------------------------------------------------------------------------
# Physical memory
# ---------------------------------------------------------------------------

cdef struct PhysState:
    int32_t *mapcount        # per PFN: page table entries mapping it (PMD maps count per subpage)
    uint8_t *pflags          # per PFN: PF_* bits
    int64_t cap
    int64_t next_pfn
    void **retired           # outgrown arrays, freed with the Phys (see phys_reserve)
    int64_t nretired
    uint8_t sink_flags       # what pf_at/mc_at hand out for a PFN beyond cap
    int32_t sink_count


cdef inline uint8_t *pf_at(PhysState *ps, uint64_t pfn) noexcept nogil:
    """The flags of ``pfn``.  A PFN beyond the model's physical memory (a
    low-level edit or a callback can put any PFN in a table) is a page the
    model keeps no books for: it reads 0 and a write to it is dropped."""
    if pfn < <uint64_t>ps.cap:
        return &ps.pflags[pfn]
    ps.sink_flags = 0
    return &ps.sink_flags


cdef inline int32_t *mc_at(PhysState *ps, uint64_t pfn) noexcept nogil:
    """The map count of ``pfn`` (0, and writes dropped, beyond the model's
    physical memory: see ``pf_at``)."""
    if pfn < <uint64_t>ps.cap:
        return &ps.mapcount[pfn]
    ps.sink_count = 0
    return &ps.sink_count


cdef int phys_reserve(PhysState *ps, int64_t need) noexcept nogil:
    """Make PFNs [0, need) addressable (zeroed)."""
    cdef int64_t cap = ps.cap
    cdef int32_t *mc
    cdef uint8_t *pf
    if need <= cap:
        return 0
    if cap < 1 << 21:
        cap = 1 << 21
    while cap < need:
        cap *= 2
    # new arrays, the old ones kept until the Phys goes: a walk running
    # without the GIL in another thread (pagemap under the read lock) may
    # still read them while a fault makes room for more PFNs
    cdef void **ret = <void **>realloc(ps.retired, (ps.nretired + 2) * sizeof(void *))
    if ret == NULL:
        return -E_NOMEM
    ps.retired = ret
    mc = <int32_t *>malloc(cap * sizeof(int32_t))
    pf = <uint8_t *>malloc(cap * sizeof(uint8_t))
    if mc == NULL or pf == NULL:
        free(mc)
        free(pf)
        return -E_NOMEM
    if ps.cap:
        memcpy(mc, ps.mapcount, ps.cap * sizeof(int32_t))
        memcpy(pf, ps.pflags, ps.cap * sizeof(uint8_t))
    memset(mc + ps.cap, 0, (cap - ps.cap) * sizeof(int32_t))
    memset(pf + ps.cap, 0, (cap - ps.cap) * sizeof(uint8_t))
    if ps.mapcount != NULL:
        ps.retired[ps.nretired] = <void *>ps.mapcount
        ps.nretired += 1
    if ps.pflags != NULL:
        ps.retired[ps.nretired] = <void *>ps.pflags
        ps.nretired += 1
    ps.mapcount = mc
    ps.pflags = pf
    ps.cap = cap
    return 0


cdef int64_t phys_alloc(PhysState *ps, int64_t nr, int64_t align) noexcept nogil:
    cdef int64_t pfn = ((ps.next_pfn + align - 1) // align) * align
    if phys_reserve(ps, pfn + nr) < 0:
        return -1
    ps.next_pfn = pfn + nr
    return pfn


cdef inline void page_put(PhysState *ps, uint64_t pfn) noexcept nogil:
    """One mapping of ``pfn`` goes away; an anonymous page that nobody maps
    any more is freed (its flags cleared)."""
    if pfn == ZERO_PFN or pfn == HUGE_ZERO_PFN or <int64_t>pfn >= ps.cap:
        return
    mc_at(ps, pfn)[0] -= 1
    if mc_at(ps, pfn)[0] <= 0:
        mc_at(ps, pfn)[0] = 0
        if not (pf_at(ps, pfn)[0] & PF_SHMEM):
            pf_at(ps, pfn)[0] = 0


cdef void phys_clear_leaf(void *ctx, uint64_t old, int level) noexcept nogil:
    """The walker's split cleared a non-anonymous huge leaf (a shmem THP's
    PMD): its 512 pages lose that mapping, as the kernel's split of a file
    PMD removes the PMD's rmap."""
    cdef PhysState *ps = <PhysState *>ctx
    cdef uint64_t pfn
    cdef int i
    if level != L_PMD or not pmd_trans_huge(old):
        return
    pfn = pmd_pfn(old)
    if pfn == HUGE_ZERO_PFN:
        return
    for i in range(NR):
        page_put(ps, pfn + i)


cdef class Phys:
    """The model's physical memory: PFNs handed out from a counter, with a
    map count and flags per PFN.  Shared by an mm and its forked children."""
    cdef PhysState s

    def __cinit__(self, int64_t first_pfn=1 << 20):
        memset(&self.s, 0, sizeof(PhysState))
        self.s.next_pfn = first_pfn
        if phys_reserve(&self.s, first_pfn + 1) < 0:
            raise MemoryError()

    def attach(self, PageTables tables not None):
        """Keep this memory's map counts right when a walk of ``tables``
        splits (clears) a non-anonymous huge leaf (phys_clear_leaf)."""
        tables.pool.on_clear_leaf = phys_clear_leaf
        tables.pool.on_clear_ctx = &self.s

    def __dealloc__(self):
        cdef int64_t i
        free(self.s.mapcount)
        free(self.s.pflags)
        for i in range(self.s.nretired):
            free(self.s.retired[i])
        free(self.s.retired)

    def alloc(self, int64_t nr=1, int64_t align=1):
        """``nr`` fresh PFNs, the first aligned to ``align``."""
        cdef int64_t pfn = phys_alloc(&self.s, nr, align)
        if pfn < 0:
            raise MemoryError()
        return pfn

    def reserve(self, int64_t n):
        """Make room for ``n`` more PFNs (so that bulk work never reallocates)."""
        if phys_reserve(&self.s, self.s.next_pfn + n + NR) < 0:
            raise MemoryError()

    @property
    def next_pfn(self):
        return self.s.next_pfn

    def mapcount(self, uint64_t pfn):
        return self.s.mapcount[pfn] if <int64_t>pfn < self.s.cap else 0

    def flags(self, uint64_t pfn):
        return self.s.pflags[pfn] if <int64_t>pfn < self.s.cap else 0

    def get(self, uint64_t pfn):
        """(mapcount, flags) of one PFN."""
        if <int64_t>pfn >= self.s.cap:
            return (0, 0)
        return (self.s.mapcount[pfn], self.s.pflags[pfn])

    def set_flags(self, uint64_t pfn, int set_bits=0, int clear_bits=0):
        if phys_reserve(&self.s, pfn + 1) < 0:
            raise MemoryError()
        self.s.pflags[pfn] = (self.s.pflags[pfn] & ~clear_bits) | set_bits

    def add_map(self, uint64_t pfn, int n=1, int delta=1):
        """Add ``delta`` to the map count of PFNs [pfn, pfn + n)."""
        cdef int i
        if phys_reserve(&self.s, pfn + n) < 0:
            raise MemoryError()
        for i in range(n):
            if pfn + i != ZERO_PFN and pfn + i != HUGE_ZERO_PFN:
                if delta < 0:
                    page_put(&self.s, pfn + i)
                else:
                    self.s.mapcount[pfn + i] += delta


# ---------------------------------------------------------------------------
# Table lookup with allocation in another (or the same) tree: the fork copy
# and the mremap move write entries at addresses the walk is not visiting.
# ---------------------------------------------------------------------------

# (the lookup itself is the core's pool_slot, with alloc set)


# ---------------------------------------------------------------------------
# The state every op works on
# ---------------------------------------------------------------------------

cdef struct OpState:
    PhysState *ps
    pgwalk_pool_t *pool          # tree being walked
    uint64_t *pgd
    int levels
    # the VMA being worked on (set per call by the Python side)
    uint64_t prot                # flags of a new leaf (no RW, no D)
    uint64_t zprot               # flags of a zero-page PTE
    uint64_t rw                  # RW|D when the VMA is writable (mprotect)
    int shared                   # VM_SHARED mapping (no COW)
    int write                    # write access (populate / fault)
    int mark_data                # a touch writes data into the page
    int is_shmem
    int64_t *shm                 # shmem object: PFN per page (0 = hole)
    int8_t *shm_order            # and the order of the folio holding it (shmem.py)
    int64_t shm_size
    int64_t pgoff0               # object page at vma_start
    uint64_t vstart
    uint64_t lo                  # walk range / free-table gap
    uint64_t hi
    int zap_markers
    int pageout
    int around                   # fault-around: map object pages already cached, nothing else
    uint64_t skip_to             # lru walk: PTEs below this belong to a folio already reclaimed whole
    int nmms                     # live mms sharing the physical pages (an mm and its forks)
    uint64_t *shared_heads       # sorted heads of the large folios another mm maps too
    uint64_t *ssplit             # shmem folios this walk split: first object page << 4 | order
    int64_t nssplit
    int64_t cap_ssplit
    int64_t nshared              # (-1: not computed; see MMOp.set_shared_heads)
    uint64_t *heads              # folios split by this walk (head PFNs), for the rmap
    int64_t nheads               # pass; sorted before it (zremap_pte searches them)
    int64_t cap_heads
    uint64_t nz_lo[8]            # ranges whose subpages a folio split must not
    uint64_t nz_hi[8]            # remap to the zero page (VM_LOCKED VMAs)
    int nnz
    # results
    int fault
    uint64_t fault_addr
    int64_t n
    int64_t cnt[16]
    # outputs
    uint64_t *out64
    uint8_t *out8
    uint64_t out_start
    # destination tree (fork, mremap)
    pgwalk_pool_t *dpool
    uint64_t *dpgd
    uint64_t delta
    uint64_t *dtbl
    uint64_t dblock


cdef inline void mark_data(OpState *s, uint64_t pfn) noexcept nogil:
    if s.mark_data and pfn != ZERO_PFN and pfn != HUGE_ZERO_PFN:
        pf_at(s.ps, pfn)[0] = (pf_at(s.ps, pfn)[0] | PF_DATA) & ~PF_LAZYFREE


cdef inline uint64_t pte_of(uint64_t pfn, uint64_t flags) noexcept nogil:
    return ((pfn << 12) & PGW_PFN_MASK) | flags


cdef inline bint is_guard(uint64_t v) noexcept nogil:
    return v == GUARD_PTE or (not pte_none(v) and not pte_present(v)
                              and swp_pte_type(v) == PGW_SWP_PTE_MARKER
                              and (swp_pte_offset(v) & 4) != 0)


cdef inline bint thp_shared(PhysState *ps, uint64_t pfn) noexcept nogil:
    cdef int i
    for i in range(NR):
        if mc_at(ps, pfn + i)[0] > 1:
            return True
    return False


cdef inline int64_t folio_mapcount(PhysState *ps, uint64_t head) noexcept nogil:
    cdef int64_t n = 0
    cdef int i
    for i in range(NR):
        n += mc_at(ps, head + i)[0]
    return n


cdef bint sorted_has(const uint64_t *a, int64_t n, uint64_t x) noexcept nogil:
    """Binary search of ``x`` in the sorted array ``a[0:n]``."""
    cdef int64_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < n and a[lo] == x


cdef bint folio_mapped_elsewhere(OpState *s, uint64_t head) noexcept nogil:
    """folio_maybe_mapped_shared for the large anonymous folio ``head``:
    only with fork relatives alive, and then as the caller counted it over
    whole mms (MMOp.set_shared_heads; a child that keeps a part the parent
    has since replaced shares the folio although no page of it is mapped
    twice).  Not counted: some page of it is mapped twice."""
    if s.nmms <= 1:
        return False
    if s.nshared >= 0:
        return sorted_has(s.shared_heads, s.nshared, head)
    return thp_shared(s.ps, head)


cdef inline bint pmd_is_table(OpState *s, uint64_t *pmd) noexcept nogil:
    return table_of(s.pool, pmd) != NULL


cdef inline int file_pmd_drop(OpState *s, uint64_t *e, pgwalk_walk_t *w) noexcept nogil:
    """A PMD mapping of a shmem huge page that would be split: the kernel's
    split of a file PMD just unmaps it (the pages stay in the object and are
    faulted back as PTEs).  Returns 1 when done (the caller continues)."""
    cdef uint64_t pfn
    cdef int i
    if not (w.vma_flags & 0x8):          # VM_SHARED: shmem in this model
        return 0
    pfn = pmd_pfn(e[0])
    for i in range(NR):
        page_put(s.ps, pfn + i)
    e[0] = 0
    w.action = ACT_CONTINUE
    return 1


# --- split_huge_pmd at a VMA boundary (vma_adjust_trans_huge) ----------------

cdef int split_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    if pmd_trans_huge(e[0]):
        file_pmd_drop(s, e, w)       # shmem: unmapped; anonymous: SUBTREE, the walker splits
    else:
        w.action = ACT_CONTINUE
    return 0


cdef int noop_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    return 0


# --- zap (munmap, MADV_DONTNEED, guard-install zap, MADV_REMOVE) ------------

cdef int zap_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn
    cdef int i
    if pmd_trans_huge(v):
        if (addr & ~PMD_MASK_) == 0 and next - addr == PMD_SIZE_:
            pfn = pmd_pfn(v)
            if pfn != HUGE_ZERO_PFN:
                for i in range(NR):
                    page_put(s.ps, pfn + i)
                s.cnt[1] += 1
            e[0] = 0
            w.action = ACT_CONTINUE
        else:
            file_pmd_drop(s, e, w)
    return 0


cdef int zap_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0]
    if pte_none(v):
        return 0
    if pte_present(v):
        page_put(s.ps, (v & PGW_PFN_MASK) >> 12)
        s.cnt[0] += 1
        e[0] = 0
    elif is_guard(v):
        if s.zap_markers:
            e[0] = 0
    else:
        e[0] = 0
    return 0


# --- table reclaim after MADV_DONTNEED (empty PTE tables of whole 2 MiB ranges)

cdef int reclaim_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t *tbl
    cdef int i
    w.action = ACT_CONTINUE
    if next - addr != PMD_SIZE_:
        return 0
    tbl = table_of(s.pool, e)
    if tbl == NULL:
        return 0
    for i in range(NR):
        if not pte_none(tbl[i]):
            return 0
    pool_free_subtree(s.pool, s.levels, e, L_PMD)
    s.cnt[2] += 1
    return 0


# --- free_pgtables (munmap): tables whose whole span lies in the gap [lo, hi)

cdef inline bint in_gap(OpState *s, uint64_t addr, uint64_t size) noexcept nogil:
    cdef uint64_t lo = addr & ~(size - 1)
    return lo >= s.lo and lo + size <= s.hi and lo + size > lo


cdef int free_pgd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    if s.levels == 5 and in_gap(s, addr, (<uint64_t>1) << 48) and table_of(s.pool, e) != NULL:
        pool_free_subtree(s.pool, 5, e, L_PGD)
    return 0


cdef int free_p4d(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    if in_gap(s, addr, (<uint64_t>1) << 39) and table_of(s.pool, e) != NULL:
        pool_free_subtree(s.pool, s.levels, e, L_PGD if s.levels == 4 else L_P4D)
    return 0


cdef int free_pud(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    if in_gap(s, addr, (<uint64_t>1) << 30) and table_of(s.pool, e) != NULL:
        pool_free_subtree(s.pool, s.levels, e, L_PUD)
        w.action = ACT_CONTINUE
    return 0


cdef int free_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    if in_gap(s, addr, PMD_SIZE_) and table_of(s.pool, e) != NULL:
        pool_free_subtree(s.pool, s.levels, e, L_PMD)
    w.action = ACT_CONTINUE
    return 0


# --- populate / fault-in -----------------------------------------------------

cdef int64_t new_page(OpState *s, uint8_t flags) noexcept nogil:
    cdef int64_t pfn = phys_alloc(s.ps, 1, 1)
    if pfn < 0:
        return -1
    mc_at(s.ps, pfn)[0] = 1
    pf_at(s.ps, pfn)[0] = flags | (PF_DATA if s.mark_data else 0)
    s.cnt[0] += 1
    return pfn


cdef int pop_install(uint64_t addr, uint64_t next, uint64_t *ptep, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef int64_t idx, pfn
    if s.is_shmem:
        idx = s.pgoff0 + <int64_t>((addr - s.vstart) >> 12)
        if idx >= s.shm_size:
            s.fault = F_BUS
            s.fault_addr = addr
            return 1
        pfn = s.shm[idx]
        if pfn == 0 and s.around:
            ptep[0] = 0
            return 0
        if pfn == 0:
            pfn = phys_alloc(s.ps, 1, 1)
            if pfn < 0:
                s.fault = F_NOMEM
                return -E_NOMEM
            pf_at(s.ps, pfn)[0] = PF_SHMEM
            s.shm[idx] = pfn
            s.cnt[0] += 1
        mc_at(s.ps, pfn)[0] += 1
        mark_data(s, pfn)
        if s.write:
            pf_at(s.ps, pfn)[0] |= PF_SHMEM_DIRTY
        # a shared writable mapping's vm_page_prot is writable: a read fault
        # maps the page writable and clean, a write fault writable and dirty
        ptep[0] = pte_of(pfn, s.prot | (s.rw if s.write else (s.rw & PGW_RW)))
        return 0
    if s.write:
        pfn = new_page(s, PF_ANON)
        if pfn < 0:
            s.fault = F_NOMEM
            return -E_NOMEM
        ptep[0] = pte_of(pfn, s.prot | PGW_RW | PGW_DIRTY)
    else:
        ptep[0] = pte_of(ZERO_PFN, s.zprot)
    return 0


cdef bint can_reuse(OpState *s, uint64_t pfn) noexcept nogil:
    """wp_can_reuse_anon_folio: a write fault on a read-only anonymous page
    reuses it when this mm alone maps it: a small page mapped once; a page
    of a large folio when no other mm maps the folio and more than one of
    its pages is mapped (else the copy lets the folio go)."""
    cdef uint64_t head
    if not (pf_at(s.ps, pfn)[0] & PF_LARGE):
        return mc_at(s.ps, pfn)[0] == 1
    head = pfn & ~(<uint64_t>511)
    return folio_mapcount(s.ps, head) > 1 and not folio_mapped_elsewhere(s, head)


cdef int pop_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn
    cdef int64_t np
    cdef uint8_t keep
    if pte_present(v):
        if not s.write:
            return 0
        pfn = (v & PGW_PFN_MASK) >> 12
        if s.shared:
            e[0] = v | s.rw
            pf_at(s.ps, pfn)[0] |= PF_SHMEM_DIRTY
            mark_data(s, pfn)
            return 0
        if pfn == ZERO_PFN:
            np = new_page(s, PF_ANON)
            if np < 0:
                return -E_NOMEM
            e[0] = pte_of(<uint64_t>np, s.prot | PGW_RW | PGW_DIRTY)
            return 0
        if (v & PGW_RW) or can_reuse(s, pfn):
            e[0] = v | PGW_RW | PGW_DIRTY
            if pf_at(s.ps, pfn)[0] & PF_LAZYFREE:
                pf_at(s.ps, pfn)[0] &= ~PF_LAZYFREE
            mark_data(s, pfn)
            return 0
        # copy on write
        keep = pf_at(s.ps, pfn)[0] & PF_DATA
        page_put(s.ps, pfn)
        np = new_page(s, PF_ANON | keep)
        if np < 0:
            return -E_NOMEM
        e[0] = pte_of(<uint64_t>np, s.prot | PGW_RW | PGW_DIRTY)
        s.cnt[3] += 1
        return 0
    if pte_none(v) or s.around:
        return 0
    s.fault = F_SEGV
    s.fault_addr = addr
    return 1


cdef int pop_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn, a
    cdef int64_t np
    cdef int i
    if not pmd_trans_huge(v):
        return 0
    if not s.write:
        w.action = ACT_CONTINUE
        return 0
    pfn = pmd_pfn(v)
    if pfn == HUGE_ZERO_PFN:
        np = phys_alloc(s.ps, NR, NR)
        if np < 0:
            return -E_NOMEM
        for i in range(NR):
            mc_at(s.ps, np + i)[0] = 1
            pf_at(s.ps, np + i)[0] = PF_ANON | PF_LARGE | PF_FDIRTY
        e[0] = ((<uint64_t>np << 12) & PGW_PMD_PAGE_MASK) | s.prot | PGW_RW | PGW_DIRTY | PGW_PSE
        pfn = <uint64_t>np
        s.cnt[0] += NR
    elif not (v & PGW_RW) and not (w.vma_flags & 0x8):
        if thp_shared(s.ps, pfn):
            return 0                 # SUBTREE: split, then copy the 4K pages written
        e[0] = v | PGW_RW | PGW_DIRTY
    else:
        e[0] = v | PGW_DIRTY         # the write dirties the PMD (and so the whole folio)
    # a lazily freed THP stays lazily free (its PMD is dirty now: reclaim
    # will keep it whole); mark_data clears the written subpage's mark
    if not (w.vma_flags & 0x8):
        for i in range(NR):
            pf_at(s.ps, pfn + i)[0] |= PF_FDIRTY
    a = addr
    while a < next:
        mark_data(s, pfn + ((a >> 12) & 511))
        a += 4096
    w.action = ACT_CONTINUE
    return 0


# --- change_protection (mprotect) ------------------------------------------

cdef inline uint64_t newprot_pte(OpState *s, uint64_t v) noexcept nogil:
    cdef uint64_t pfn = (v & PGW_PFN_MASK) >> 12
    cdef uint64_t keep = v & (PGW_PFN_MASK | PGW_ACCESSED | PGW_DIRTY | (<uint64_t>1 << 9))
    cdef uint64_t nv = keep | s.prot
    if s.rw and pfn != ZERO_PFN and (s.shared or (mc_at(s.ps, pfn)[0] == 1 and (v & PGW_DIRTY))):
        nv |= PGW_RW
    return nv


cdef int prot_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn
    if pmd_trans_huge(v):
        if (addr & ~PMD_MASK_) == 0 and next - addr == PMD_SIZE_:
            pfn = pmd_pfn(v)
            v = (v & (PGW_PMD_PAGE_MASK | PGW_ACCESSED | PGW_DIRTY)) | s.prot | PGW_PSE
            if s.rw and pfn != HUGE_ZERO_PFN and not thp_shared(s.ps, pfn) and (v & PGW_DIRTY):
                v |= PGW_RW
            e[0] = v
            w.action = ACT_CONTINUE
        else:
            file_pmd_drop(s, e, w)
    return 0


cdef int prot_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0]
    if pte_present(v):
        e[0] = newprot_pte(s, v)
    return 0


# --- fork: copy the parent's entries into the child's tree ------------------

cdef int fork_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn
    cdef uint64_t *d
    cdef int err = 0, i
    if pmd_trans_huge(v):
        d = pool_slot(s.dpool, s.dpgd, s.levels, addr, L_PMD, True, &err)
        if d == NULL:
            return err
        if w.vma_flags & 0x8:
            # copy_huge_pmd skips a shmem huge PMD: the child faults it in
            w.action = ACT_CONTINUE
            return 0
        pfn = pmd_pfn(v)
        if pfn != HUGE_ZERO_PFN:
            for i in range(NR):
                mc_at(s.ps, pfn + i)[0] += 1
            if not s.shared:
                v &= ~PGW_RW
                e[0] = v
        d[0] = v
        w.action = ACT_CONTINUE
        return 0
    if table_of(s.pool, e) == NULL:
        w.action = ACT_CONTINUE
        return 0
    d = pool_slot(s.dpool, s.dpgd, s.levels, addr, L_PTE, True, &err)
    if d == NULL:
        return err
    s.dtbl = d - ((addr >> 12) & 511)
    return 0


cdef int fork_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn
    if pte_none(v):
        return 0
    if pte_present(v):
        pfn = (v & PGW_PFN_MASK) >> 12
        if pfn != ZERO_PFN:
            mc_at(s.ps, pfn)[0] += 1
            if not s.shared:
                v &= ~PGW_RW
                e[0] = v
        s.cnt[0] += 1
    s.dtbl[(addr >> 12) & 511] = v
    return 0


# --- mremap: move entries by delta within the same tree ----------------------

cdef uint64_t *dst_pte(OpState *s, uint64_t addr, int *err) noexcept nogil:
    cdef uint64_t dst = addr + s.delta
    cdef uint64_t *d
    if s.dtbl == NULL or (dst & PMD_MASK_) != s.dblock:
        d = pool_slot(s.pool, s.pgd, s.levels, dst, L_PTE, True, err)
        if d == NULL:
            return NULL
        s.dtbl = d - ((dst >> 12) & 511)
        s.dblock = dst & PMD_MASK_
    return s.dtbl + ((dst >> 12) & 511)


cdef int move_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0]
    cdef uint64_t *d
    cdef uint64_t tid
    cdef int err = 0
    if not ((addr & ~PMD_MASK_) == 0 and next - addr == PMD_SIZE_ and ((addr + s.delta) & ~PMD_MASK_) == 0):
        if pmd_trans_huge(v):
            file_pmd_drop(s, e, w)
        return 0
    if not (pmd_trans_huge(v) or table_of(s.pool, e) != NULL):
        return 0
    d = pool_slot(s.pool, s.pgd, s.levels, addr + s.delta, L_PMD, True, &err)
    if d == NULL:
        return err
    if not pte_none(d[0]):
        if pmd_trans_huge(v):
            file_pmd_drop(s, e, w)
        return 0                    # something at the destination: move PTE by PTE
    if pmd_trans_huge(v):
        d[0] = v
        e[0] = 0
    else:
        tid = entry_index(v)
        d[0] = v
        e[0] = 0
        s.pool.owner[tid] = d
    s.dtbl = NULL
    s.cnt[1] += 1
    w.action = ACT_CONTINUE
    return 0


cdef int move_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0]
    cdef uint64_t *d
    cdef int err = 0
    # move_page_tables allocates the destination's PTE table for every
    # extent whose source PMD holds a table, whether or not any PTE in the
    # extent is set (an empty table left there stops a later THP fault)
    d = dst_pte(s, addr, &err)
    if d == NULL:
        return err
    if pte_none(v):
        return 0
    d[0] = v
    e[0] = 0
    s.cnt[0] += 1
    return 0


# --- guard regions (mm/madvise.c, 6.13-6.18) ---------------------------------

cdef int guard_leaf_stop(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    return 1 if (pmd_trans_huge(e[0]) and pmd_present(e[0])) else 0


cdef int guard_install_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    if is_guard(e[0]):
        s.n += 1
        return 0
    return 1


cdef int guard_install(uint64_t addr, uint64_t next, uint64_t *ptep, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    ptep[0] = GUARD_PTE
    s.n += 1
    return 0


cdef int guard_remove_leaf(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    if pmd_trans_huge(e[0]) and pmd_present(e[0]):
        w.action = ACT_CONTINUE
    return 0


cdef int guard_remove_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    if is_guard(e[0]):
        e[0] = 0
        s.n += 1
    return 0


# --- MADV_FREE / MADV_COLD / MADV_PAGEOUT -------------------------------------

cdef bint push_u64(uint64_t **arr, int64_t *n, int64_t *cap, uint64_t x) noexcept nogil:
    """Append ``x`` to a growable malloc'd array; False if memory ran out."""
    cdef uint64_t *h
    cdef int64_t c
    if n[0] == cap[0]:
        c = cap[0] * 2 + 16
        h = <uint64_t *>realloc(arr[0], c * sizeof(uint64_t))
        if h == NULL:
            return False
        arr[0] = h
        cap[0] = c
    arr[0][n[0]] = x
    n[0] += 1
    return True


cdef void push_head(OpState *s, uint64_t head) noexcept nogil:
    """Record a split folio's head for the rmap pass (no limit; if memory
    runs out the folio's other mappings keep their subpages, which the
    kernel would also allow: the remap is an optimisation of its)."""
    push_u64(&s.heads, &s.nheads, &s.cap_heads, head)


cdef inline bint has_head(OpState *s, uint64_t head) noexcept nogil:
    return sorted_has(s.heads, s.nheads, head)


cdef enum:
    NOT_LAZY = 0
    LAZY_CLEAN = 1
    LAZY_DIRTY = 2


cdef int folio_lazy_state(OpState *s, uint64_t *base, uint64_t head) noexcept nogil:
    """The lazy-free state of the large folio ``head`` from its PTEs in the
    table ``base``: MADV_FREE marks the whole folio (the model: PF_LAZYFREE
    on each subpage); it is redirtied when a PTE mapping it is dirty or a
    subpage was written since (the model clears that subpage's
    PF_LAZYFREE)."""
    cdef int i
    cdef uint64_t v, p
    cdef bint lazy = False, dirty = False
    for i in range(NR):
        v = base[i]
        if not pte_present(v):
            continue
        p = (v & PGW_PFN_MASK) >> 12
        if p < head or p >= head + NR:
            continue
        if pf_at(s.ps, p)[0] & PF_LAZYFREE:
            lazy = True
        else:
            dirty = True
        if v & PGW_DIRTY:
            dirty = True
    if not lazy:
        return NOT_LAZY
    return LAZY_DIRTY if dirty else LAZY_CLEAN


cdef void split_folio(OpState *s, uint64_t *e, uint64_t addr) noexcept nogil:
    """Split the PMD-sized folio mapped at ``e`` (its 512 PTEs, after the
    PMD split, are in this table): subpages never written are remapped to
    the shared zero page, as the kernel does when it splits an anonymous THP."""
    cdef uint64_t pfn = (e[0] & PGW_PFN_MASK) >> 12
    cdef uint64_t head = pfn & ~(<uint64_t>511)
    cdef uint64_t *base = e - ((addr >> 12) & 511)
    cdef uint64_t v, p, a0 = addr - ((addr >> 12) & 511) * 4096, a
    cdef int i, k
    cdef bint skip
    for i in range(NR):
        v = base[i]
        if pte_present(v) and (v & PGW_DIRTY) and head <= ((v & PGW_PFN_MASK) >> 12) < head + NR:
            for k in range(NR):
                if mc_at(s.ps, head + k)[0] > 0:
                    pf_at(s.ps, head + k)[0] |= PF_FDIRTY
            break
    if folio_lazy_state(s, base, head) == LAZY_DIRTY:
        # unmapping the folio for the split moves each PTE's dirty bit into
        # the folio's flag, which every subpage inherits: a lazily freed
        # folio written since MADV_FREE splits into pages none of which
        # reclaim may discard
        for i in range(NR):
            pf_at(s.ps, head + i)[0] &= ~PF_LAZYFREE
    for i in range(NR):
        pf_at(s.ps, head + i)[0] &= ~PF_LARGE
    push_head(s, head)
    for i in range(NR):
        v = base[i]
        if not pte_present(v):
            continue
        a = a0 + <uint64_t>i * 4096
        skip = False
        for k in range(s.nnz):
            if s.nz_lo[k] <= a < s.nz_hi[k]:
                skip = True
        if skip:
            continue
        p = (v & PGW_PFN_MASK) >> 12
        if p < head or p >= head + NR:
            continue
        if not (pf_at(s.ps, p)[0] & PF_DATA) and mc_at(s.ps, p)[0] == 1:
            page_put(s.ps, p)
            base[i] = pte_of(ZERO_PFN, s.zprot)


cdef bint folio_partial(OpState *s, uint64_t *e, uint64_t pfn, uint64_t addr) noexcept nogil:
    """The kernel batches the PTEs mapping one folio: the folio is wholly
    covered only if all its pages are mapped, in order, by PTEs of this
    table inside the range [lo, hi)."""
    cdef uint64_t k = pfn & 511
    cdef uint64_t first = addr - (k << 12)
    cdef int64_t idx = <int64_t>((addr >> 12) & 511) - <int64_t>k
    cdef uint64_t *base
    cdef uint64_t v
    cdef int i
    if first < s.lo or first + PMD_SIZE_ > s.hi or idx != 0:
        return True
    base = e - ((addr >> 12) & 511)
    for i in range(NR):
        v = base[i]
        if not pte_present(v) or ((v & PGW_PFN_MASK) >> 12) != (pfn - k) + <uint64_t>i:
            return True
    return False


cdef inline uint64_t _log2(int64_t n) noexcept nogil:
    cdef uint64_t k = 0
    while (<int64_t>1 << k) < n:
        k += 1
    return k


cdef void shm_folio_to_pages(OpState *s, int64_t first, int64_t n) noexcept nogil:
    """split_folio of a shmem folio (object pages [first, first + n)) to
    single pages: orders 0, no longer part of a PMD-sized folio.  The split
    unmaps it from every mapping: here, the PTEs the caller clears; the
    rest after the walk (MMOp.shmem_splits, madvise.py)."""
    cdef int64_t i
    push_u64(&s.ssplit, &s.nssplit, &s.cap_ssplit,
             (<uint64_t>first << 4) | _log2(n))
    for i in range(first, first + n):
        s.shm_order[i] = 0
        if s.shm[i]:
            pf_at(s.ps, s.shm[i])[0] &= ~PF_LARGE


cdef int shmem_lru_pmd(OpState *s, uint64_t *e, uint64_t v, uint64_t pfn, uint64_t addr,
                       uint64_t next, pgwalk_walk_t *w) noexcept nogil:
    """MADV_COLD / PAGEOUT of a PMD-mapped shmem huge folio: a range that
    covers it in part splits it (every mapping of a file folio goes for the
    split; here this PMD, which the walker's split clears); a whole one is
    unmapped by PAGEOUT and stays in the object (it is dirty: no swap)."""
    cdef int64_t idx
    cdef int i
    if s.write:
        w.action = ACT_CONTINUE
        return 0
    if next - addr != PMD_SIZE_:
        idx = s.pgoff0 + <int64_t>(((addr & PMD_MASK_) - s.vstart) >> 12)
        if s.shm_order != NULL and 0 <= idx and idx + NR <= s.shm_size:
            shm_folio_to_pages(s, idx, NR)
        return 0                     # the walker's split clears the PMD
    w.action = ACT_CONTINUE
    if s.pageout:
        for i in range(NR):
            page_put(s.ps, pfn + i)
        e[0] = 0
    else:
        e[0] = v & ~PGW_ACCESSED     # COLD makes it old
    return 0


cdef int shmem_lru_large(OpState *s, uint64_t *e, uint64_t pfn, uint64_t addr, int64_t idx) noexcept nogil:
    """MADV_COLD / PAGEOUT of a PTE of a large shmem folio (order > 0): the
    folio is taken whole when its PTEs, from this one on, map all its pages
    in order inside the range (PAGEOUT unmaps them, the folio stays in the
    object); otherwise it is split to single pages, which unmaps all of it
    here (a file folio's split does not remap it)."""
    cdef int64_t k = s.shm_order[idx], n = (<int64_t>1) << k
    cdef int64_t first = idx & ~(n - 1)
    cdef int64_t pos = <int64_t>((addr >> 12) & 511) - (idx - first)
    cdef uint64_t *base = e - ((addr >> 12) & 511)
    cdef uint64_t a0 = addr - <uint64_t>(idx - first) * 4096, v, p
    cdef int64_t i
    cdef bint whole = (idx == first and a0 >= s.lo and a0 + <uint64_t>n * 4096 <= s.hi
                       and pos >= 0 and pos + n <= NR)
    if s.nmms > 1 and s.nshared >= 0 and sorted_has(s.shared_heads, s.nshared, <uint64_t>s.shm[first]):
        return 0                     # folio_maybe_mapped_shared: the folio is left alone
    if whole:
        for i in range(n):
            v = base[pos + i]
            if not pte_present(v) or ((v & PGW_PFN_MASK) >> 12) != <uint64_t>s.shm[first + i]:
                whole = False
                break
    if whole:
        for i in range(n):
            if s.pageout:
                page_put(s.ps, <uint64_t>s.shm[first + i])
                base[pos + i] = 0
            else:
                base[pos + i] &= ~PGW_ACCESSED      # COLD makes its PTEs old
        s.skip_to = a0 + <uint64_t>n * 4096
        return 0
    shm_folio_to_pages(s, first, n)
    for i in range(NR):
        v = base[i]
        if pte_present(v):
            p = (v & PGW_PFN_MASK) >> 12
            if s.shm[first] <= <int64_t>p < s.shm[first] + n:
                page_put(s.ps, p)
                base[i] = 0
    return 0


cdef int lru_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    """pmd_entry of MADV_FREE (s.write = 1), MADV_COLD and MADV_PAGEOUT."""
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn
    cdef int i
    if not pmd_trans_huge(v):
        return 0
    pfn = pmd_pfn(v)
    if pfn == HUGE_ZERO_PFN or thp_shared(s.ps, pfn):
        w.action = ACT_CONTINUE
        return 0
    if w.vma_flags & 0x8:
        return shmem_lru_pmd(s, e, v, pfn, addr, next, w)
    if next - addr != PMD_SIZE_:
        return 0                     # SUBTREE: the walker splits the PMD, pte_entry the folio
    w.action = ACT_CONTINUE
    if s.write:                      # MADV_FREE of the whole THP: clean and old
        for i in range(NR):
            pf_at(s.ps, pfn + i)[0] = (pf_at(s.ps, pfn + i)[0] | PF_LAZYFREE) & ~PF_FDIRTY
        e[0] = v & ~(PGW_DIRTY | PGW_ACCESSED)
        return 0
    e[0] = v & ~PGW_ACCESSED         # COLD and PAGEOUT make the PMD old
    if s.pageout:
        # reclaim splits the PMD of a THP it takes (this kernel does so for
        # a lazily freed one too: thp_split_pmd, then the PTE-level
        # unmap), so the walker splits the PMD and lru_pte decides for the
        # folio: discarded whole when lazily free and clean (the empty PTE
        # table stays, and stops a later THP fault there), kept whole when
        # written since MADV_FREE, split otherwise (no swap)
        w.action = ACT_SUBTREE
    return 0


cdef int lru_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn, head
    cdef uint64_t *base
    cdef int64_t idx
    cdef int i, st
    if addr < s.skip_to:
        return 0                     # part of a folio reclaimed (or kept) whole just now
    if not pte_present(v):
        if s.write and not pte_none(v) and not is_guard(v):
            e[0] = 0                 # MADV_FREE drops swap entries
        return 0
    pfn = (v & PGW_PFN_MASK) >> 12
    if pfn == ZERO_PFN:
        return 0
    if s.write and not (pf_at(s.ps, pfn)[0] & PF_SHMEM):
        return free_pte(s, e, v, pfn, addr)
    if mc_at(s.ps, pfn)[0] > 1:
        return 0                     # COLD/PAGEOUT leave pages mapped elsewhere alone
    if pf_at(s.ps, pfn)[0] & PF_SHMEM:
        idx = s.pgoff0 + <int64_t>((addr - s.vstart) >> 12)
        if (s.shm_order != NULL and 0 <= idx < s.shm_size and s.shm_order[idx] > 0
                and s.shm[idx] == <int64_t>pfn):
            return shmem_lru_large(s, e, pfn, addr, idx)
        if s.pageout:
            # reclaim unmaps it; with no swap a dirty page stays in the
            # object, a clean one is dropped from it
            page_put(s.ps, pfn)
            e[0] = 0
            if not (pf_at(s.ps, pfn)[0] & PF_SHMEM_DIRTY) and mc_at(s.ps, pfn)[0] == 0 and s.is_shmem:
                idx = s.pgoff0 + <int64_t>((addr - s.vstart) >> 12)
                if 0 <= idx < s.shm_size and s.shm[idx] == <int64_t>pfn:
                    s.shm[idx] = 0
                    pf_at(s.ps, pfn)[0] = 0
        else:
            e[0] = v & ~PGW_ACCESSED     # COLD makes the PTE old
        return 0
    if pf_at(s.ps, pfn)[0] & PF_LARGE:
        if folio_mapped_elsewhere(s, pfn & ~(<uint64_t>511)):
            return 0                 # folio_maybe_mapped_shared: the folio is left alone
        if s.pageout and not folio_partial(s, e, pfn, addr):
            # reclaim takes the whole folio: a lazily freed clean one is
            # discarded at once, a redirtied one kept whole (and no longer
            # lazily free); anything else cannot be swapped out (no swap)
            # and is split below
            head = pfn & ~(<uint64_t>511)
            base = e - ((addr >> 12) & 511)
            st = folio_lazy_state(s, base, head)
            if st != NOT_LAZY:
                for i in range(NR):
                    if st == LAZY_CLEAN:
                        page_put(s.ps, head + i)
                        base[i] = 0
                    else:
                        pf_at(s.ps, head + i)[0] &= ~PF_LAZYFREE
                s.skip_to = (addr & PMD_MASK_) + PMD_SIZE_
                return 0
        if folio_partial(s, e, pfn, addr) or s.pageout:
            split_folio(s, e, addr)
            v = e[0]
            pfn = (v & PGW_PFN_MASK) >> 12
            if pfn == ZERO_PFN:
                return 0
    if s.pageout and (pf_at(s.ps, pfn)[0] & PF_LAZYFREE) and not (v & PGW_DIRTY):
        page_put(s.ps, pfn)
        e[0] = 0
    elif not s.pageout:
        e[0] = v & ~PGW_ACCESSED     # COLD makes the PTE old
    return 0


cdef int free_pte(OpState *s, uint64_t *e, uint64_t v, uint64_t pfn, uint64_t addr) noexcept nogil:
    """MADV_FREE of one present anonymous PTE (madvise_free_pte_range): a
    large folio the range covers only in part is split (unless mapped
    elsewhere too); a folio that is PG_dirty (PF_FDIRTY) and mapped
    elsewhere is left alone; otherwise its dirty flag is cleared and it is
    marked lazily free, the PTE made clean and old."""
    cdef uint64_t head
    cdef int i
    if pf_at(s.ps, pfn)[0] & PF_LARGE:
        head = pfn & ~(<uint64_t>511)
        if folio_partial(s, e, pfn, addr):
            if folio_mapped_elsewhere(s, head):
                return 0             # folio_maybe_mapped_shared: not split
            split_folio(s, e, addr)
            v = e[0]
            pfn = (v & PGW_PFN_MASK) >> 12
            if pfn == ZERO_PFN:
                return 0
        else:
            if (pf_at(s.ps, head)[0] & PF_FDIRTY) and folio_mapcount(s.ps, head) != NR:
                return 0
            for i in range(NR):
                pf_at(s.ps, head + i)[0] &= ~PF_FDIRTY
    if not (pf_at(s.ps, pfn)[0] & PF_LARGE):
        if (pf_at(s.ps, pfn)[0] & PF_FDIRTY) and mc_at(s.ps, pfn)[0] != 1:
            return 0
        pf_at(s.ps, pfn)[0] &= ~PF_FDIRTY
    pf_at(s.ps, pfn)[0] |= PF_LAZYFREE
    e[0] = v & ~(PGW_DIRTY | PGW_ACCESSED)
    return 0


# An anonymous folio's PG_dirty (PF_FDIRTY) matters to MADV_FREE: a folio
# that is dirty and mapped elsewhere too is left alone.  Anonymous pages get
# it when a dirty mapping of them is taken apart: a dirty PMD split into PTEs
# (the model sets it when the THP's PMD becomes dirty: its fault, a write to
# it, a collapse; MADV_FREE cleans both) and a folio split that finds a
# dirty PTE (it unmaps the folio first).  A small page written by a fault
# is not PG_dirty.

# --- after a folio split: remap never-written subpages to the zero page ----------
# (remap_page with RMP_USE_SHARED_ZEROPAGE walks every mapping of the folio;
# here: a walk of the mm's VMAs looking for the split folios' subpages)

cdef inline uint64_t zero_pte_for(uint64_t vm_flags) noexcept nogil:
    if not (vm_flags & 7):
        return (<uint64_t>1 << 8) | PGW_ACCESSED | (<uint64_t>1 << 9) | (ZERO_PFN << 12)
    return PGW_P | (<uint64_t>1 << 2) | PGW_ACCESSED | (<uint64_t>1 << 9) | (ZERO_PFN << 12) | \
        (0 if vm_flags & 4 else (<uint64_t>1 << 63))


cdef int zremap_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn, head
    if not pte_present(v) or (w.vma_flags & 0x2000):       # VM_LOCKED: never remapped
        return 0
    pfn = (v & PGW_PFN_MASK) >> 12
    head = pfn & ~(<uint64_t>511)
    if has_head(s, head):
        if not (pf_at(s.ps, pfn)[0] & (PF_DATA | PF_LARGE)) and mc_at(s.ps, pfn)[0] == 1:
            page_put(s.ps, pfn)
            e[0] = zero_pte_for(w.vma_flags)
    return 0


# --- pagemap -------------------------------------------------------------------
# The consumers' ops have the kernel's shape: a pmd_entry that takes a huge
# PMD whole (a THP, or any non-present PMD: pmd_trans_huge_lock returns the
# lock for a swap PMD too) or reads the PTE table itself, and no pte_entry,
# so the walker never splits a PMD for them (mm/pagewalk.c descends only for
# a pte_entry).

# which consumer a shared helper works for (pmd_swap_pages, the pt_range consumers)
cdef enum:
    PT_PAGEMAP = 0
    PT_MINCORE = 1
    PT_SMAPS = 2
    PT_CLEAR_REFS = 3


cdef inline uint64_t pm_page(OpState *s, uint64_t pfn) noexcept nogil:
    cdef uint64_t w = PM_PRESENT | (pfn & PM_PFN_MASK)
    if pfn == ZERO_PFN:
        return w
    if pfn == HUGE_ZERO_PFN:
        return w | PM_FILE
    if <int64_t>pfn < s.ps.cap:                 # checked here: the arrays directly
        if s.ps.pflags[pfn] & PF_SHMEM:
            w |= PM_FILE
        if s.ps.mapcount[pfn] == 1:
            w |= PM_EXCL
    return w


cdef inline bint swp_has_pfn(uint64_t t) noexcept nogil:
    """softleaf_has_pfn / is_pfn_swap_entry by type: hwpoison, migration and
    device entries (types 24..30; docs/encodings.md)."""
    return PGW_MAX_SWAPFILES <= t < PGW_SWP_PTE_MARKER


cdef inline bint page_not_anon(OpState *s, uint64_t pfn) noexcept nogil:
    """!folio_test_anon for the page a swap entry names: a shmem page or a
    zero page (the model's pages are anonymous otherwise)."""
    if pfn == ZERO_PFN or pfn == HUGE_ZERO_PFN:
        return True
    return <int64_t>pfn < s.ps.cap and (s.ps.pflags[pfn] & PF_SHMEM) != 0


cdef int pm_hole(uint64_t addr, uint64_t next, int depth, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    # a hole's words are 0, and ``out`` starts zeroed (MM.pagemap makes it
    # with np.zeros): leaving it untouched keeps its pages unfaulted
    return 0


cdef int pm_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0], pfn, flags, i, j, n
    cdef uint64_t *out
    if not pmd_trans_huge(v):
        return 0
    pfn = pmd_pfn(v)
    # pagemap_pmd_range judges exclusivity (and file) by the PMD's first
    # page for every page it maps (fs/proc/task_mmu.c, 6.15+)
    flags = pm_page(s, pfn) & ~PM_PFN_MASK
    if pfn == HUGE_ZERO_PFN:
        flags = PM_PRESENT | PM_FILE
    out = s.out64 + ((addr - s.out_start) >> 12)
    j = (addr >> 12) & 511
    n = (next - addr + 4095) >> 12
    for i in range(n):                  # a plain indexed loop: vectorised
        out[i] = flags | ((pfn + j + i) & PM_PFN_MASK)
    w.action = ACT_CONTINUE
    return 0


cdef void pmd_swap_pages(OpState *s, uint64_t v, uint64_t a, uint64_t b, int mode) noexcept nogil:
    """A non-present PMD (a PMD migration entry, or any swap-format PMD)
    over [a, b), taken whole as the kernel's pmd_entry consumers take it
    under pmd_trans_huge_lock; for both walkers' consumers.

    pagemap (pagemap_pmd_range_thp): every word PM_SWAP, the type in bits
    0-4 and the offset from bit 5 advancing by one per page (the entry's
    offset plus the page's index in the PMD); PM_FILE when the page the
    offset names is not anonymous; never PM_MMAP_EXCLUSIVE (only present
    entries get it).  mincore (mincore_pte_range): 1 for every page.
    smaps (smaps_pmd_entry): see sm_pmd_swap.  clear_refs: nothing."""
    cdef uint64_t t = swp_pte_type(v), off = swp_pte_offset(v) + ((a >> 12) & 511), i
    cdef uint64_t n = (b - a) >> 12, flags
    cdef uint64_t *out
    if mode == PT_PAGEMAP:
        flags = PM_SWAP
        if page_not_anon(s, swp_pte_offset(v)):
            flags |= PM_FILE
        out = s.out64 + ((a - s.out_start) >> 12)
        for i in range(n):
            out[i] = flags | ((t | ((off + i) << 5)) & PM_PFN_MASK)
    elif mode == PT_MINCORE:
        memset(s.out8 + ((a - s.out_start) >> 12), 1, n)
    elif mode == PT_SMAPS:
        sm_pmd_swap(s, v)


cdef int pm_pte_range(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    # The kernel's shape (fs/proc/task_mmu.c, pagemap_pmd_range): the
    # pmd_entry answers for a THP or a non-present PMD and reads a PTE
    # table itself.
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0]
    cdef uint64_t *pte
    cdef uint64_t *out
    cdef uint64_t i, n
    if pmd_trans_huge(v):
        return pm_pmd(e, addr, next, w, ctx)
    if is_swap_pmd(v):
        pmd_swap_pages(s, v, addr, next, PT_PAGEMAP)
        w.action = ACT_CONTINUE
        return 0
    pte = pgwalk_pte_offset_map(w, e, addr)
    if pte == NULL:
        return pte_map_failed(e, v, w)
    n = (next - addr + 4095) >> 12
    out = s.out64 + ((addr - s.out_start) >> 12)
    for i in range(n):
        if pte[i] != 0:             # out starts zeroed (see pm_hole)
            out[i] = pm_word(s, pte[i])
    w.action = ACT_CONTINUE
    return 0


cdef inline int pte_map_failed(uint64_t *e, uint64_t v, pgwalk_walk_t *w) noexcept nogil:
    """pte_offset_map_lock gave no table: the kernel's consumers retry
    (ACTION_AGAIN), and find the PMD none (a bad one was cleared: the
    walker's pte_hole then answers for it).  The model retries when the
    PMD changed and moves on from one that stays unmappable (where the
    kernel would retry for ever)."""
    w.action = ACT_AGAIN if e[0] != v else ACT_CONTINUE
    return 0


cdef inline uint64_t pm_word(OpState *s, uint64_t v) noexcept nogil:
    """The pagemap word of one PTE value (pte_to_pagemap_entry): a
    non-present one is PM_SWAP with its type and offset, PM_GUARD_REGION
    for a guard marker, PM_FILE when it names a page (migration, device,
    hwpoison) that is not anonymous; never exclusive."""
    cdef uint64_t r
    if pte_none(v):
        return 0
    if pte_present(v):
        return pm_page(s, (v & PGW_PFN_MASK) >> 12)
    r = PM_SWAP | ((swp_pte_type(v) | (swp_pte_offset(v) << 5)) & PM_PFN_MASK)
    if is_guard(v):
        r |= PM_GUARD
    elif swp_has_pfn(swp_pte_type(v)) and page_not_anon(s, swp_pte_offset(v)):
        r |= PM_FILE
    return r


# --- mincore ---------------------------------------------------------------------

cdef inline uint8_t mc_unmapped(OpState *s, uint64_t addr) noexcept nogil:
    cdef int64_t idx
    if not s.is_shmem:
        return 0
    idx = s.pgoff0 + <int64_t>((addr - s.vstart) >> 12)
    return 1 if (idx < s.shm_size and s.shm[idx] != 0) else 0


cdef int mc_hole(uint64_t addr, uint64_t next, int depth, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t a = addr
    if not s.is_shmem:
        return 0                    # anonymous: 0, and ``out`` starts zeroed (MM.mincore)
    while a < next:
        s.out8[(a - s.out_start) >> 12] = mc_unmapped(s, a)
        a += 4096
    return 0


cdef int mc_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    # The kernel's shape (mm/mincore.c, mincore_pte_range): the pmd_entry
    # answers for a THP and a non-present PMD (1 for every page: it holds
    # pmd_trans_huge_lock) and reads a PTE table itself, one call per table.
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0]
    cdef uint64_t *pte
    cdef uint8_t *o8
    cdef uint64_t i, n
    if pmd_trans_huge(v) or is_swap_pmd(v):
        memset(s.out8 + ((addr - s.out_start) >> 12), 1, (next - addr + 4095) >> 12)
        w.action = ACT_CONTINUE
        return 0
    pte = pgwalk_pte_offset_map(w, e, addr)
    if pte == NULL:
        return pte_map_failed(e, v, w)
    n = (next - addr + 4095) >> 12
    if not s.is_shmem:
        # anonymous memory: resident = present (none, markers and swap are
        # 0), or an entry naming a page (migration, device, hwpoison: 1)
        o8 = s.out8 + ((addr - s.out_start) >> 12)
        pgw_any_bits_u8(pte, o8, <int>n, PGW_P | PGW_PROTNONE)
        if memchr(o8, 0, n) != NULL:        # (a table of present pages needs no second pass)
            pgw_or_swp_type_in_u8(pte, o8, <int>n, PGW_SWP_TYPE_SHIFT, 31, PGW_MAX_SWAPFILES,
                                  PGW_SWP_PTE_MARKER - PGW_MAX_SWAPFILES)
    else:
        for i in range(n):
            mc_pte(s, pte[i], addr + (i << 12))
    w.action = ACT_CONTINUE
    return 0


cdef inline void mc_pte(OpState *s, uint64_t v, uint64_t addr) noexcept nogil:
    """mincore_pte_range's answer for one PTE: present 1; none or a marker:
    the unmapped range's answer (the object's page for shmem); a swap
    entry: mincore_swap, 1 for one naming a page (migration, device,
    hwpoison: "always uptodate"), 0 for a swap file's (no swap cache)."""
    cdef uint64_t t
    if pte_present(v):
        s.out8[(addr - s.out_start) >> 12] = 1
        return
    t = swp_pte_type(v)
    if pte_none(v) or t == PGW_SWP_PTE_MARKER or is_guard(v):
        s.out8[(addr - s.out_start) >> 12] = mc_unmapped(s, addr)
    else:
        s.out8[(addr - s.out_start) >> 12] = 1 if swp_has_pfn(t) else 0


# --- smaps ---------------------------------------------------------------------------
# cnt: 0 rss, 1 pss (bytes << 12), 2 shared_clean, 3 shared_dirty, 4 private_clean,
# 5 private_dirty, 6 referenced, 7 anonymous, 8 anon_huge, 9 swap, 10 lazyfree,
# 11 shmem PMD-mapped

cdef inline void sm_page(OpState *s, uint64_t pfn, bint dirty, bint young, bint huge) noexcept nogil:
    cdef int32_t mc = mc_at(s.ps, pfn)[0] if <int64_t>pfn < s.ps.cap else 1
    cdef uint8_t fl = pf_at(s.ps, pfn)[0] if <int64_t>pfn < s.ps.cap else 0
    if mc < 1:
        mc = 1
    # smaps_page_accumulate: dirty when the mapping is or the folio is
    if fl & (PF_SHMEM_DIRTY | PF_FDIRTY):
        dirty = True
    s.cnt[0] += 4096
    s.cnt[1] += (4096 << 12) // mc
    if mc >= 2:
        s.cnt[3 if dirty else 2] += 4096
    else:
        s.cnt[5 if dirty else 4] += 4096
    if young:
        s.cnt[6] += 4096
    if fl & PF_SHMEM:
        if huge:
            s.cnt[11] += 4096        # ShmemPmdMapped
    else:
        s.cnt[7] += 4096
        if huge:
            s.cnt[8] += 4096
        if fl & PF_LAZYFREE and not dirty:
            s.cnt[10] += 4096


cdef void sm_nonpresent(OpState *s, uint64_t pfn, uint64_t size, bint young, bint dirty) noexcept nogil:
    """smaps_account of the page ``pfn`` that a non-present entry names
    (present false), ``size`` bytes: Rss, Anonymous (and LazyFree when
    clean) and, as "maybe shared", Pss in full and Shared_Clean or
    Shared_Dirty whatever the map counts; dirty when the entry or the folio
    is, Referenced when the entry is young."""
    cdef uint8_t fl = pf_at(s.ps, pfn)[0] if <int64_t>pfn < s.ps.cap else 0
    if fl & (PF_SHMEM_DIRTY | PF_FDIRTY):
        dirty = True
    if not page_not_anon(s, pfn):
        s.cnt[7] += <int64_t>size
        if fl & PF_LAZYFREE and not dirty:
            s.cnt[10] += <int64_t>size
    s.cnt[0] += <int64_t>size
    if young:
        s.cnt[6] += <int64_t>size
    s.cnt[1] += <int64_t>(size << 12)
    s.cnt[3 if dirty else 2] += <int64_t>size


cdef void sm_pmd_swap(OpState *s, uint64_t v) noexcept nogil:
    """smaps_pmd_entry for a non-present PMD: only an entry that names a
    page (migration, device, hwpoison; a swap-file entry adds nothing, not
    even to Swap) is accounted.  AnonHugePages (or ShmemPmdMapped) gets the
    PMD's 2 MiB; then smaps_account of the page with compound set, for its
    folio's size (512 pages for the head of a PMD-sized folio, else 1) and
    with present false (sm_nonpresent); young and dirty are the PMD's A and
    D bits, which a swap-format entry does not have."""
    cdef uint64_t pfn = swp_pte_offset(v), size = 4096
    cdef uint8_t fl = 0
    if not swp_has_pfn(swp_pte_type(v)):
        return
    if <int64_t>pfn < s.ps.cap:
        fl = pf_at(s.ps, pfn)[0]
    if fl & PF_LARGE and (pfn & 511) == 0:
        size = PMD_SIZE_                        # compound_nr of a THP's head
    if not page_not_anon(s, pfn):
        s.cnt[8] += <int64_t>PMD_SIZE_          # AnonHugePages
    elif fl & PF_SHMEM:
        s.cnt[11] += <int64_t>PMD_SIZE_         # ShmemPmdMapped (a zero page: FilePmdMapped)
    sm_nonpresent(s, pfn, size, (v & PGW_ACCESSED) != 0, (v & PGW_DIRTY) != 0)


cdef void sm_huge(OpState *s, uint64_t v, uint64_t addr, uint64_t next) noexcept nogil:
    """smaps_pmd_entry for a THP (present PMD leaf) over [addr, next)."""
    cdef uint64_t pfn = pmd_pfn(v), a
    if pfn == HUGE_ZERO_PFN:
        return
    a = addr
    while a < next:
        sm_page(s, pfn + ((a >> 12) & 511), (v & PGW_DIRTY) != 0, (v & PGW_ACCESSED) != 0, True)
        a += 4096


cdef inline void sm_pte(OpState *s, uint64_t v) noexcept nogil:
    """smaps_pte_entry: a present normal page; a swap file's entry: Swap;
    an entry naming a page (migration, device, hwpoison): that page, as a
    present one for a device-private entry, else as non-present, neither
    young nor dirty (sm_nonpresent); a marker: nothing."""
    cdef uint64_t pfn, t
    if pte_present(v):
        pfn = (v & PGW_PFN_MASK) >> 12
        if pfn != ZERO_PFN:
            sm_page(s, pfn, (v & PGW_DIRTY) != 0, (v & PGW_ACCESSED) != 0, False)
        return
    if pte_none(v) or is_guard(v):
        return
    t = swp_pte_type(v)
    if t < PGW_MAX_SWAPFILES:
        s.cnt[9] += 4096
    elif t == PGW_SWP_DEVICE_WRITE or t == PGW_SWP_DEVICE_READ:
        sm_page(s, swp_pte_offset(v), False, False, False)
    elif swp_has_pfn(t):
        sm_nonpresent(s, swp_pte_offset(v), 4096, False, False)


cdef int sm_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    # The kernel's shape (fs/proc/task_mmu.c, smaps_pte_range): the
    # pmd_entry answers for a THP or a non-present PMD (smaps_pmd_entry)
    # and reads a PTE table itself.
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0]
    cdef uint64_t *pte
    cdef uint64_t i, n
    if pmd_trans_huge(v) or is_swap_pmd(v):
        if pmd_trans_huge(v):
            sm_huge(s, v, addr, next)
        else:
            sm_pmd_swap(s, v)
        w.action = ACT_CONTINUE
        return 0
    pte = pgwalk_pte_offset_map(w, e, addr)
    if pte == NULL:
        return pte_map_failed(e, v, w)
    n = (next - addr + 4095) >> 12
    for i in range(n):
        sm_pte(s, pte[i])
    w.action = ACT_CONTINUE
    return 0


# ---------------------------------------------------------------------------
# The Python-facing op object
# ---------------------------------------------------------------------------




cdef class MMOp:
    """One walk's worth of C state plus the slot functions of every process
    op.  ``slots(name)`` returns the ``MMWalkOps`` keyword arguments of op
    ``name`` (C functions bound to this object's state)."""
    cdef OpState s
    cdef readonly Phys phys
    cdef readonly object tables
    cdef object _keep               # arrays whose memory the state points into
    cdef object _shared             # the array behind s.shared_heads

    def __cinit__(self, Phys phys not None, PageTables tables not None):
        memset(&self.s, 0, sizeof(OpState))
        self.phys = phys
        self.tables = tables
        self.s.ps = &phys.s
        self.s.pool = &tables.pool
        self.s.pgd = tables.pgd_ptr
        self.s.levels = tables.levels

    def setup(self, uint64_t prot=0, uint64_t zprot=0, uint64_t rw=0, bint shared=False,
              bint write=False, bint mark_data=False, object shm=None, int64_t pgoff0=0,
              uint64_t vstart=0, uint64_t lo=0, uint64_t hi=0, bint zap_markers=False,
              bint pageout=False, bint around=False, object out=None, uint64_t out_start=0,
              PageTables dst=None, uint64_t delta=0, int nmms=1, object shm_order=None,
              int64_t kind=0):
        """Set the per-call fields and clear the results.  ``out`` (pagemap:
        uint64, mincore: uint8) must start zeroed: holes are not written."""
        cdef cnp.ndarray arr
        self.s.prot = prot
        self.s.zprot = zprot
        self.s.rw = rw
        self.s.shared = shared
        self.s.write = write
        self.s.mark_data = mark_data
        self.s.vstart = vstart
        self.s.pgoff0 = pgoff0
        self.s.lo = lo
        self.s.hi = hi
        self.s.zap_markers = zap_markers
        self.s.pageout = pageout
        self.s.around = around
        self.s.fault = F_NONE
        self.s.fault_addr = 0
        self.s.n = kind
        memset(self.s.cnt, 0, sizeof(self.s.cnt))
        self.s.dtbl = NULL
        self.s.dblock = 0
        self.s.delta = delta
        self.s.nnz = 0
        self.s.nheads = 0
        self.s.nssplit = 0
        self.s.skip_to = 0
        self.s.nmms = nmms
        self.s.shared_heads = NULL
        self.s.nshared = -1
        self._shared = None
        self._keep = (shm, out, shm_order)
        if shm is not None:
            arr = shm
            if arr.dtype != np.int64 or not arr.flags.c_contiguous:
                raise TypeError("shm must be a contiguous int64 array")
            self.s.is_shmem = 1
            self.s.shm = <int64_t *>cnp.PyArray_DATA(arr)
            self.s.shm_size = arr.shape[0]
            self.s.shm_order = NULL
            if shm_order is not None:
                arr = shm_order
                if (arr.dtype != np.int8 or not arr.flags.c_contiguous
                        or arr.shape[0] != self.s.shm_size):
                    raise TypeError("shm_order must be a contiguous int8 array as long as shm")
                self.s.shm_order = <int8_t *>cnp.PyArray_DATA(arr)
        else:
            self.s.is_shmem = 0
            self.s.shm = NULL
            self.s.shm_order = NULL
            self.s.shm_size = 0
        self.s.out64 = NULL
        self.s.out8 = NULL
        self.s.out_start = out_start
        if out is not None:
            arr = out
            if not arr.flags.c_contiguous:
                raise TypeError("out must be contiguous")
            if arr.dtype == np.uint64:
                self.s.out64 = <uint64_t *>cnp.PyArray_DATA(arr)
            elif arr.dtype == np.uint8:
                self.s.out8 = <uint8_t *>cnp.PyArray_DATA(arr)
            else:
                raise TypeError("out must be uint64 (pagemap) or uint8 (mincore)")
        if dst is not None:
            self.s.dpool = &dst.pool
            self.s.dpgd = dst.pgd_ptr
        else:
            self.s.dpool = NULL
            self.s.dpgd = NULL
        return self

    def no_zero_remap(self, ranges):
        """Address ranges (locked VMAs) whose pages a folio split keeps."""
        ranges = list(ranges)[:8]
        self.s.nnz = len(ranges)
        for i, (lo, hi) in enumerate(ranges):
            self.s.nz_lo[i] = lo
            self.s.nz_hi[i] = hi
        return self

    @property
    def fault(self):
        """0 none, 1 SIGSEGV (a marker), 2 SIGBUS (beyond the object), 3 no memory."""
        return self.s.fault

    @property
    def fault_addr(self):
        return self.s.fault_addr

    @property
    def n(self):
        return self.s.n

    @property
    def split_heads(self):
        """Head PFNs of the folios this walk split."""
        return [self.s.heads[i] for i in range(self.s.nheads)]

    def set_shared_heads(self, heads):
        """The heads of the large folios that some other mm maps too
        (folio_maybe_mapped_shared), as computed by the caller for the
        walk's range; without it a PTE-mapped folio is judged from its map
        counts and the one table at hand."""
        arr = np.ascontiguousarray(np.unique(np.asarray(heads, dtype=np.uint64)))
        self._shared = arr
        self.s.nshared = arr.shape[0]
        self.s.shared_heads = <uint64_t *>cnp.PyArray_DATA(arr) if arr.shape[0] else NULL
        return self

    def set_split_heads(self, heads):
        """The heads the rmap pass (zero_remap) looks for."""
        heads = sorted(set(heads))
        self.s.nheads = 0
        for h in heads:
            push_head(&self.s, h)
        if self.s.nheads != len(heads):
            raise MemoryError("no memory for the split folios' heads")
        return self

    @property
    def shmem_splits(self):
        """(first object page, pages) of the shmem folios this walk split."""
        return [(self.s.ssplit[i] >> 4, 1 << (self.s.ssplit[i] & 15)) for i in range(self.s.nssplit)]

    def __dealloc__(self):
        free(self.s.heads)
        free(self.s.ssplit)

    @property
    def counts(self):
        return [self.s.cnt[i] for i in range(16)]

    def slots(self, str name):
        """The ``MMWalkOps`` fields (CFuncs on this state) of op ``name``."""
        spec = _SPECS[name]
        out = {}
        for field, (fn, kind) in spec.items():
            out[field] = make_cfunc(<void *><size_t>fn, &self.s, kind, self)
        return out


cdef dict _SPECS = {
    "split": {"pmd_entry": (<size_t><void *>split_pmd, "entry"), "pte_entry": (<size_t><void *>noop_pte, "entry")},
    "zap": {"pmd_entry": (<size_t><void *>zap_pmd, "entry"), "pte_entry": (<size_t><void *>zap_pte, "entry")},
    "reclaim": {"pmd_entry": (<size_t><void *>reclaim_pmd, "entry")},
    "free_tables": {"pgd_entry": (<size_t><void *>free_pgd, "entry"), "p4d_entry": (<size_t><void *>free_p4d, "entry"),
                    "pud_entry": (<size_t><void *>free_pud, "entry"), "pmd_entry": (<size_t><void *>free_pmd, "entry")},
    "populate": {"pmd_entry": (<size_t><void *>pop_pmd, "entry"), "pte_entry": (<size_t><void *>pop_pte, "entry"),
                 "install_pte": (<size_t><void *>pop_install, "install")},
    "mprotect": {"pmd_entry": (<size_t><void *>prot_pmd, "entry"), "pte_entry": (<size_t><void *>prot_pte, "entry")},
    "fork": {"pmd_entry": (<size_t><void *>fork_pmd, "entry"), "pte_entry": (<size_t><void *>fork_pte, "entry")},
    "move": {"pmd_entry": (<size_t><void *>move_pmd, "entry"), "pte_entry": (<size_t><void *>move_pte, "entry")},
    "guard_install": {"pud_entry": (<size_t><void *>guard_leaf_stop, "entry"),
                      "pmd_entry": (<size_t><void *>guard_leaf_stop, "entry"),
                      "pte_entry": (<size_t><void *>guard_install_pte, "entry"),
                      "install_pte": (<size_t><void *>guard_install, "install")},
    "guard_remove": {"pud_entry": (<size_t><void *>guard_remove_leaf, "entry"),
                     "pmd_entry": (<size_t><void *>guard_remove_leaf, "entry"),
                     "pte_entry": (<size_t><void *>guard_remove_pte, "entry")},
    "zero_remap": {"pmd_entry": (<size_t><void *>guard_remove_leaf, "entry"),
                   "pte_entry": (<size_t><void *>zremap_pte, "entry")},
    "lru": {"pmd_entry": (<size_t><void *>lru_pmd, "entry"), "pte_entry": (<size_t><void *>lru_pte, "entry")},
    # the introspection consumers: as the kernel's ops, a pmd_entry and no
    # pte_entry (pagemap_ops, mincore_walk_ops, smaps_walk_ops)
    "pagemap": {"pmd_entry": (<size_t><void *>pm_pte_range, "entry"), "pte_hole": (<size_t><void *>pm_hole, "hole")},
    "mincore": {"pmd_entry": (<size_t><void *>mc_pmd, "entry"), "pte_hole": (<size_t><void *>mc_hole, "hole")},
    "smaps": {"pmd_entry": (<size_t><void *>sm_pmd, "entry")},
}


# ---------------------------------------------------------------------------
# Folios for the batched walker (pt_range_walk): MM.pt_folio in C
# ---------------------------------------------------------------------------

cdef struct FolioCtx:
    PhysState *ps
    int64_t *shm                 # the VMA's shmem object: PFN per page (NULL: none)
    int8_t *shm_order            # and the order of the folio holding it
    int64_t shm_size
    int64_t pgoff0               # object page at vstart
    uint64_t vstart


cdef int folio_of_pfn(void *ctx, uint64_t pfn, uint64_t addr,
                      uint64_t *head, uint64_t *nr) noexcept nogil:
    """The folio of ``pfn`` met at ``addr`` (MM.pt_folio): shmem order, THP
    (PF_LARGE: 512 pages, head aligned) or order 0; 1 for a zero page."""
    cdef FolioCtx *c = <FolioCtx *>ctx
    cdef uint8_t fl = 0
    cdef int64_t idx, n
    if pfn < <uint64_t>c.ps.cap:
        fl = pf_at(c.ps, pfn)[0]
    if c.shm != NULL and fl & PF_SHMEM:
        idx = c.pgoff0 + ((<int64_t>(addr - c.vstart)) >> 12)
        if 0 <= idx < c.shm_size and c.shm[idx] == <int64_t>pfn:
            n = (<int64_t>1) << c.shm_order[idx]
            head[0] = <uint64_t>c.shm[idx & ~(n - 1)]
            nr[0] = <uint64_t>n
            return 0
    if fl & PF_LARGE:
        head[0] = pfn & ~(<uint64_t>511)
        nr[0] = 512
        return 0
    head[0] = pfn
    nr[0] = 1
    return 1 if (pfn == ZERO_PFN or pfn == HUGE_ZERO_PFN) else 0


cdef class FolioHook:
    """``MM.pt_folio`` for one VMA in C, for ``pt_range_walk``: the
    function's and its context's addresses (``fn_address``,
    ``ctx_address``; see ``pgwalk_folio_fn`` in walker/_ptrange.pxd).  Keeps
    the physical memory and the shmem object's arrays alive."""
    cdef FolioCtx c
    cdef object phys, pages, order

    def __cinit__(self, Phys phys not None, vma):
        cdef cnp.ndarray pages, order
        memset(&self.c, 0, sizeof(FolioCtx))
        self.phys = phys
        self.c.ps = &phys.s
        obj = vma.vm_file
        if obj is not None:
            pages, order = obj.pages, obj.order
            if (pages.dtype != np.int64 or order.dtype != np.int8 or not pages.flags.c_contiguous
                    or not order.flags.c_contiguous or len(order) != len(pages)):
                raise TypeError("the shmem object's pages/order arrays are not int64/int8 vectors")
            self.pages, self.order = pages, order
            self.c.shm = <int64_t *>pages.data
            self.c.shm_order = <int8_t *>order.data
            self.c.shm_size = len(pages)
            self.c.pgoff0 = vma.vm_pgoff
            self.c.vstart = vma.vm_start

    @property
    def fn_address(self):
        return <size_t>folio_of_pfn

    @property
    def ctx_address(self):
        return <size_t>&self.c


# ---------------------------------------------------------------------------
# clear_refs (fs/proc/task_mmu.c, clear_refs_pte_range) on the callback walker
# ---------------------------------------------------------------------------
# s.n is the kind: 1-3 clear the accessed bit of present normal pages (and
# of present PMD leaves).  4 changes nothing: the modelled kernel is built
# without CONFIG_MEM_SOFT_DIRTY, where clear_soft_dirty and
# clear_soft_dirty_pmd are empty.  The model keeps no PG_referenced /
# PG_young folio flags.

cdef uint64_t SPECIAL_BIT = (<uint64_t>1) << 9


cdef inline void cr_pte(OpState *s, uint64_t *e) noexcept nogil:
    cdef uint64_t v = e[0]
    if s.n == 4 or not pte_present(v):
        return
    if not (v & SPECIAL_BIT) and ((v & PGW_PFN_MASK) >> 12) != ZERO_PFN:
        e[0] = v & ~PGW_ACCESSED            # vm_normal_folio: not special, not the zero page


cdef inline void cr_leaf_pmd(OpState *s, uint64_t *e) noexcept nogil:
    cdef uint64_t v = e[0]
    if s.n == 4 or not pmd_present(v):
        return                              # soft-dirty: no-op; a PMD migration entry: kept
    e[0] = v & ~PGW_ACCESSED


cdef int cr_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *w, void *ctx) noexcept nogil:
    cdef OpState *s = <OpState *>ctx
    cdef uint64_t v = e[0]
    cdef uint64_t *pte
    cdef uint64_t i, n
    if pmd_trans_huge(v) or (not pte_none(v) and not pmd_present(v)):
        cr_leaf_pmd(s, e)                   # pmd_trans_huge_lock held
        w.action = ACT_CONTINUE
        return 0
    pte = pgwalk_pte_offset_map(w, e, addr)
    if pte == NULL:
        return 0
    n = (next - addr + 4095) >> 12
    for i in range(n):
        cr_pte(s, &pte[i])
    w.action = ACT_CONTINUE
    return 0


_SPECS["clear_refs"] = {"pmd_entry": (<size_t><void *>cr_pmd, "entry")}


# ---------------------------------------------------------------------------
# The same consumers on the batched walker (pt_range_walk), in nogil C
# ---------------------------------------------------------------------------
# Each runs pt_range_walk over one VMA's [start, end) and turns each record
# into the callback consumer's output, so that both walkers give identical
# results.  A step that returns PTW_DONE with a record (the RFC's quirk: a
# special PTE outside VM_PFNMAP, a swap-file entry at PMD level, ...) is
# handled as an entry and the walk goes on past it.

from pgwalk.walker._ptrange cimport (
    pgwalk_pt_range_walk_t, pgwalk_vma_t, pgwalk_pt_range_walk_init,
    pgwalk_pt_range_walk_start, pgwalk_pt_range_walk_next, pgwalk_pt_range_walk_done,
)

cdef inline uint64_t clip(uint64_t a, uint64_t b) noexcept nogil:
    return a if a < b else b


cdef void ptr_pmd_record(OpState *s, pgwalk_pt_range_walk_t *ptw, uint64_t end, int mode) noexcept nogil:
    """A PMD-level record: each of its nr_entries leaves as the callback's
    pmd_entry sees it, clipped to [curr_addr, end)."""
    cdef uint64_t *pmdp = ptw.ptep
    cdef uint64_t base = ptw.curr_addr & PMD_MASK_, a, b, v, pfn
    cdef int k
    cdef pgwalk_walk_t dummy
    for k in range(ptw.nr_entries):
        a = base + <uint64_t>k * PMD_SIZE_
        if a < ptw.curr_addr:
            a = ptw.curr_addr
        b = clip(base + <uint64_t>(k + 1) * PMD_SIZE_, end)
        if a >= b:
            break
        v = pmdp[k]
        if mode == PT_CLEAR_REFS:
            if pmd_trans_huge(v) or (not pte_none(v) and not pmd_present(v)):
                cr_leaf_pmd(s, &pmdp[k])
        elif not pte_none(v) and not pmd_present(v):
            pmd_swap_pages(s, v, a, b, mode)
        elif pmd_trans_huge(v):
            if mode == PT_PAGEMAP:
                pm_pmd(&pmdp[k], a, b, &dummy, s)
            elif mode == PT_MINCORE:
                memset(s.out8 + ((a - s.out_start) >> 12), 1, (b - a) >> 12)
            else:
                sm_huge(s, v, a, b)


cdef void ptr_pte_record(OpState *s, pgwalk_pt_range_walk_t *ptw, uint64_t end, int mode) noexcept nogil:
    """A PTE-level record: its nr_entries PTEs from ptw.ptep."""
    cdef uint64_t *pte = ptw.ptep
    cdef uint64_t a = ptw.curr_addr, v
    cdef int64_t n = ptw.nr_entries, i
    cdef uint8_t *o8
    cdef uint64_t *o64
    if <uint64_t>n > (end - a) >> 12:
        n = <int64_t>((end - a) >> 12)
    if mode == PT_MINCORE:
        o8 = s.out8 + ((a - s.out_start) >> 12)
        if ptw.present and ptw.nr_entries > 1:
            memset(o8, 1, n)                # a batch of one folio's present PTEs
            return
        for i in range(n):
            mc_pte(s, pte[i], a + (<uint64_t>i << 12))
        return
    if mode == PT_PAGEMAP:
        o64 = s.out64 + ((a - s.out_start) >> 12)
        for i in range(n):
            o64[i] = pm_word(s, pte[i])
        return
    if mode == PT_SMAPS:
        for i in range(n):
            sm_pte(s, pte[i])
        return
    for i in range(n):
        cr_pte(s, &pte[i])


cdef void ptr_run(OpState *s, pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *v,
                  uint64_t start, uint64_t end, int flags, int mode) noexcept nogil:
    cdef int t = pgwalk_pt_range_walk_start(ptw, v, start, end, flags)
    cdef uint64_t prev = 0
    while True:
        if t == PTW_ABORT:
            break
        if t == PTW_DONE:
            # the end, or the quirk: a record whose type stayed PTW_DONE
            if ptw.warned or ptw.curr_addr == prev or ptw.curr_addr >= end \
                    or ptw.next_addr <= ptw.curr_addr or ptw.ptep == NULL:
                break
        prev = ptw.curr_addr
        if ptw.level == PTW_PTE_LEVEL:
            ptr_pte_record(s, ptw, end, mode)
        elif ptw.level == PTW_PMD_LEVEL:
            ptr_pmd_record(s, ptw, end, mode)
        # PUD leaves are hugetlb's: the consumers skip hugetlb VMAs
        t = pgwalk_pt_range_walk_next(ptw, v, start, end, flags)
    pgwalk_pt_range_walk_done(ptw)


cdef int _PT_FLAGS[4]
_PT_FLAGS[PT_PAGEMAP] = PT_TYPE_ALL & ~PT_TYPE_NONE
# mincore and smaps take every non-present PMD that their pmd_entry takes
# whole (pmd_swap_pages), and their PTE records of swap, migration, device,
# hwpoison (and, for mincore, marker) entries get the callback consumers'
# per-PTE answers (mc_pte, sm_pte)
_PT_FLAGS[PT_MINCORE] = PT_TYPE_ALL & ~PT_TYPE_NONE
_PT_FLAGS[PT_SMAPS] = (PT_TYPE_FOLIO | PT_TYPE_PFN | PT_TYPE_SWAP | PT_TYPE_MIGRATION
                       | PT_TYPE_DEVICE | PT_TYPE_HWPOISON)
_PT_FLAGS[PT_CLEAR_REFS] = PT_TYPE_FOLIO | PT_TYPE_PFN | PT_TYPE_MIGRATION


cdef dict _PT_MODES = {"pagemap": PT_PAGEMAP, "mincore": PT_MINCORE, "smaps": PT_SMAPS,
                       "clear_refs": PT_CLEAR_REFS}


def pt_range_consume(MMOp op not None, str name, vma, uint64_t start, uint64_t end):
    """Run consumer ``name`` (pagemap, mincore, smaps, clear_refs) on
    pt_range_walk over ``[start, end)`` of ``vma``, into ``op``'s state (set
    up as for the callback walk of the same name).  The caller holds the
    mmap lock."""
    cdef int mode = _PT_MODES[name]
    cdef pgwalk_pt_range_walk_t ptw
    cdef pgwalk_vma_t v
    cdef int flags = _PT_FLAGS[mode]
    cdef OpState *s = &op.s
    cdef uint64_t a
    if start >= end:
        return
    hook = FolioHook(op.phys, vma)
    pgwalk_pt_range_walk_init(&ptw, op.tables, hook)
    v.vm_start, v.vm_end, v.vm_flags = vma.vm_start, vma.vm_end, vma.vm_flags
    with nogil:
        if mode == PT_MINCORE and s.is_shmem:
            a = start
            while a < end:                  # none and guard PTEs, and holes: the object's pages
                s.out8[(a - s.out_start) >> 12] = mc_unmapped(s, a)
                a += 4096
        ptr_run(s, &ptw, &v, start, end, flags, mode)
