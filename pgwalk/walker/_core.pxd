# cython: language_level=3
"""The C-level contract of pgwalk's walker (cimport-able).

* ``pgwalk_walk_t`` is the C view of the kernel's ``struct mm_walk``.  Its
  first two members, ``private`` and ``action``, are stable: a C callback
  reads its private data and sets the action through them.
* ``pgwalk_ops_t`` is the dispatch table: one slot (function pointer plus a
  context pointer handed back as the last argument) per ``mm_walk_ops``
  callback.  A NULL function means "no such callback", exactly as a NULL
  member of ``struct mm_walk_ops`` does in the kernel.  Every tier (Python
  callables, C functions, batched callbacks) fills the same slots, so the
  walker loops never change when a tier is added.
* ``PGWALK_EXC`` is what a slot returns after it has parked a Python
  exception in the walk: it is negative so that every level stops.
"""

from libc.stdint cimport uint64_t, int64_t, int8_t

cdef enum:
    PGWALK_ABI_VERSION = 1
    SLAB_TABLES = 512            # tables per slab (2 MiB of entries)
    PGWALK_EXC = -2147483647 - 1 # INT_MIN: "a Python exception is pending"

ctypedef struct pgwalk_walk_t:
    void *private                # caller data for C callbacks
    int action                   # ACTION_SUBTREE / CONTINUE / AGAIN
    int no_vma                   # 1 in walk_page_range_novma
    int levels                   # 4 or 5
    int has_vma                  # walk->vma != NULL
    uint64_t vma_start           # current VMA (valid when has_vma)
    uint64_t vma_end
    uint64_t vma_flags
    void *pywalk                 # the Python MMWalk object (borrowed)

ctypedef int (*pgwalk_entry_fn)(uint64_t *entry, uint64_t addr, uint64_t next,
                                pgwalk_walk_t *walk, void *ctx) noexcept nogil
ctypedef int (*pgwalk_hole_fn)(uint64_t addr, uint64_t next, int depth,
                               pgwalk_walk_t *walk, void *ctx) noexcept nogil
ctypedef int (*pgwalk_hugetlb_fn)(uint64_t *entry, uint64_t hmask, uint64_t addr,
                                  uint64_t next, pgwalk_walk_t *walk, void *ctx) noexcept nogil
ctypedef int (*pgwalk_range_fn)(uint64_t start, uint64_t end,
                                pgwalk_walk_t *walk, void *ctx) noexcept nogil
ctypedef void (*pgwalk_post_fn)(pgwalk_walk_t *walk, void *ctx) noexcept nogil
# A batched pte_entry: once per contiguous run of ``n`` slots of one PTE table,
# covering [addr, next).
ctypedef int (*pgwalk_batch_fn)(uint64_t *entries, int n, uint64_t addr, uint64_t next,
                                pgwalk_walk_t *walk, void *ctx) noexcept nogil
ctypedef int (*pgwalk_install_fn)(uint64_t addr, uint64_t next, uint64_t *ptep,
                                  pgwalk_walk_t *walk, void *ctx) noexcept nogil

ctypedef struct pgwalk_ops_t:
    pgwalk_entry_fn pgd_entry
    void *pgd_entry_ctx
    pgwalk_entry_fn p4d_entry
    void *p4d_entry_ctx
    pgwalk_entry_fn pud_entry
    void *pud_entry_ctx
    pgwalk_entry_fn pmd_entry
    void *pmd_entry_ctx
    pgwalk_entry_fn pte_entry
    void *pte_entry_ctx
    pgwalk_hole_fn pte_hole
    void *pte_hole_ctx
    pgwalk_hugetlb_fn hugetlb_entry
    void *hugetlb_entry_ctx
    pgwalk_range_fn test_walk
    void *test_walk_ctx
    pgwalk_range_fn pre_vma
    void *pre_vma_ctx
    pgwalk_post_fn post_vma
    void *post_vma_ctx
    pgwalk_install_fn install_pte
    void *install_pte_ctx
    pgwalk_batch_fn pte_batch      # set instead of pte_entry for a batched pte_entry
    void *pte_batch_ctx
    pgwalk_batch_fn pgd_batch      # ... and for the upper levels' entry slots
    void *pgd_batch_ctx
    pgwalk_batch_fn p4d_batch
    void *p4d_batch_ctx
    pgwalk_batch_fn pud_batch
    void *pud_batch_ctx
    pgwalk_batch_fn pmd_batch
    void *pmd_batch_ctx
    int walk_lock
    pgwalk_batch_fn install_batch  # a batched install_pte (install_pte then holds a placeholder)
    void *install_batch_ctx
    int hole_batch                 # pte_hole is batched: each run of holes is one call
    pgwalk_batch_fn hugetlb_batch  # a batched hugetlb_entry (Python only; see decisions 18)
    void *hugetlb_batch_ctx

# Counters an mm keeps about its tables (the kernel keeps similar ones).
ctypedef struct pgwalk_mm_stats_t:
    int64_t alloc[5]             # tables allocated, by level of the new table
    int64_t freed[5]
    int64_t alloc_failed
    int64_t split_pmd
    int64_t split_pud
    int64_t clear_bad
    int64_t set_pte_at
    int64_t update_mmu_cache
    int64_t pte_map_ok
    int64_t pte_map_null

# The table pool: fixed-size slabs, so a table never moves once allocated.
ctypedef void (*pgwalk_clear_fn)(void *ctx, uint64_t old, int level) noexcept nogil

ctypedef struct pgwalk_pool_t:
    uint64_t **slabs             # slab base pointers (SLAB_TABLES * 512 entries each)
    int64_t nslabs
    int64_t ntables              # ids [0, ntables) exist (id 0 is never handed out)
    uint64_t **owner             # per id: the slot that links to it (NULL = free)
    int8_t *level                # per id: level of the entries it holds (-1 = free)
    int64_t *free_ids            # stack of freed ids
    int64_t nfree
    int64_t live                 # tables in use
    int64_t alloc_seq            # counted allocation attempts (fault injection)
    int64_t *fail_at             # sorted attempt numbers that fail
    int64_t nfail
    pgwalk_mm_stats_t stats
    void *self_obj               # the owning PageTables (borrowed), to grow
    # Image mode (a physical-memory image as the table store): a table link
    # is a frame number of the image, followed if the frame is in the image.
    uint64_t *image_base         # NULL: the pool's own slabs
    uint64_t image_pages         # frames of a flat image (used when nseg == 0)
    uint64_t *seg_pfn            # ELF cores: first frame of each segment, sorted
    uint64_t *seg_pages          # ...its length in frames
    uint64_t *seg_file_page      # ...and where its first frame is in the mapping
    int64_t nseg
    int read_only                # bad entries are reported, never cleared; no writes
    uint64_t *bad_addrs          # read-only pools: where entries a walk cannot follow were
    int64_t nbad                 # met (bad ones, links to frames not in the image): pgwalk_bad_link
    int64_t bad_cap
    void *mutex                  # PyThread lock: taking, freeing and splitting tables
    pgwalk_clear_fn on_clear_leaf  # called (under the pool lock) when a split clears a
    void *on_clear_ctx             # non-anonymous huge leaf: the process model's rmap


cdef class CFunc:
    """A C function for one ops slot: ``fn`` has the slot's C signature
    (``signature``, one of SIGNATURES) and gets ``ctx`` as its last argument.
    ``owner`` keeps whatever ``ctx`` points into alive."""
    cdef void *fn
    cdef void *ctx
    cdef readonly str kind       # "entry", "hole", "hugetlb", "range", "post", "install"
    cdef readonly object owner


cdef CFunc make_cfunc(void *fn, void *ctx, str kind, object owner)


cdef class PageTables:
    cdef pgwalk_pool_t pool
    cdef list _slabs             # numpy arrays that own the slab memory
    cdef readonly int levels
    cdef readonly int64_t pgd_id # the top-level table
    cdef readonly bint is_init_mm
    cdef readonly int active_walks  # walks of this tree running now (any thread)
    cdef int64_t _slab_cap       # slabs the per-id arrays have room for
    cdef list _retired           # addresses of outgrown arrays, freed with the pool
    cdef bint _lazy_slabs        # slabs from anonymous mmap (zero pages on demand): _LAZY_SLABS
    cdef uint64_t *pgd_ptr
    cdef int _grow(self) except -1
    cdef uint64_t *_slot(self, uint64_t addr, int level, bint alloc, int *err) noexcept nogil
    cdef tuple _slot_location(self, uint64_t *slot)
    cdef uint64_t *_live_slot(self, int64_t tid, int idx) except NULL
    cdef int _new_table_slot(self, uint64_t *slot, int level) except -1
    cdef object _check_table(self, uint64_t *tbl, int level, int64_t *reached)


# The mmap lock's counters where C can read them without calling Python
# (locks.MMapLock keeps one; the pt_range_walk iterator reads it per step).
cdef class LockCounts:
    cdef public int64_t seq      # write unlocks (what ends VMA write locks)
    cdef public int64_t changes  # every acquire and release, read or write

cdef uint64_t *table_of(pgwalk_pool_t *pool, uint64_t *slot) noexcept nogil
cdef uint64_t *pgwalk_pte_offset_map(pgwalk_walk_t *walk, uint64_t *pmd, uint64_t addr) noexcept nogil
cdef uint64_t *image_frame(pgwalk_pool_t *pool, uint64_t pfn) noexcept nogil
cdef void pgwalk_bad_link(pgwalk_pool_t *pool, uint64_t addr) noexcept nogil
cdef int64_t pool_take(pgwalk_pool_t *pool, uint64_t *owner_slot, int level) noexcept nogil
cdef int pool_alloc(pgwalk_pool_t *pool, uint64_t *slot, int level) noexcept nogil
cdef void pool_free_subtree(pgwalk_pool_t *pool, int levels, uint64_t *slot, int level) noexcept nogil
cdef uint64_t *pool_slot(pgwalk_pool_t *pool, uint64_t *pgd, int levels, uint64_t addr,
                         int level, bint alloc, int *err) noexcept nogil
