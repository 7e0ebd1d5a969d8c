# cython: language_level=3
"""The C contract of the batched walker (``pt_range_walk``), cimport-able.

``pgwalk_pt_range_walk_t`` is the C view of the kernel's ``struct
pt_range_walk``: zero it, fill the mm part with ``pgwalk_pt_range_walk_init``
(with the GIL), then call ``pgwalk_pt_range_walk_start`` once and
``pgwalk_pt_range_walk_next`` until it returns ``PTW_DONE``, then
``pgwalk_pt_range_walk_done``.  The three are ``noexcept nogil`` and touch
no Python object; the caller holds the mmap lock and keeps the mm, the VMA
and the folio hook's owner alive meanwhile (the Python iterator checks the
lock and the mm's changes between steps; C callers do so themselves).
"""

from libc.stdint cimport uint64_t, int64_t
from pgwalk.walker._core cimport pgwalk_pool_t

# The VMA a walk is confined to (the fields the walker reads).
ctypedef struct pgwalk_vma_t:
    uint64_t vm_start
    uint64_t vm_end
    uint64_t vm_flags

# page_folio() for the walker: the folio holding ``pfn`` (met mapped at
# ``addr``): its head PFN and number of pages; returns 1 for a shared zero
# page, else 0.  AddressSpace.pt_folio_hook gives one (fn_address, ctx_address).
ctypedef int (*pgwalk_folio_fn)(void *ctx, uint64_t pfn, uint64_t addr,
                                uint64_t *head, uint64_t *nr) noexcept nogil

ctypedef struct pgwalk_pt_range_walk_t:
    int64_t page                 # PFN of the page at curr_addr (-1: none)
    int64_t folio                # head PFN of its folio (-1: none)
    int nr_entries
    uint64_t size
    uint64_t softleaf_entry      # arch-independent swap entry (swp_entry_t)
    bint writable
    bint young
    bint dirty
    bint present
    bint vma_locked
    bint pmd_shared
    uint64_t curr_addr
    uint64_t next_addr
    int level                    # PTW_PUD_LEVEL / PTW_PMD_LEVEL / PTW_PTE_LEVEL
    uint64_t *ptep               # the entry's slot (ptep/pmdp/pudp)
    uint64_t entry               # copy of the entry the record is about
    # the mm
    pgwalk_pool_t *pool
    uint64_t *pgd
    int levels
    const pgwalk_vma_t *vma
    bint ptl                     # a page-table lock is held (model)
    pgwalk_folio_fn folio_fn     # NULL: every PFN its own order-0 folio
    void *folio_ctx
    bint warned                  # the last step met the kernel's WARN_ON_ONCE
    uint64_t warn_addr
    # pgwalk's descent cache (a cost the RFC does not save; docs/decisions.md 26):
    # the links from the top-level slot down to the last PTE table reached
    # (slot, value), that table and its 2 MiB-aligned address; zero: none.
    # Emptied by pgwalk_pt_range_walk_start: it lives for one walk.
    int c_n
    uint64_t *c_slot[4]
    uint64_t c_val[4]
    uint64_t *c_pte
    uint64_t c_key

cdef int pgwalk_pt_range_walk_init(pgwalk_pt_range_walk_t *ptw, object mm,
                                   object folio_hook) except -1
cdef int pgwalk_pt_range_walk_start(pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *vma,
                                    uint64_t addr, uint64_t end, int flags) noexcept nogil
cdef int pgwalk_pt_range_walk_next(pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *vma,
                                   uint64_t addr, uint64_t end, int flags) noexcept nogil
cdef void pgwalk_pt_range_walk_done(pgwalk_pt_range_walk_t *ptw) noexcept nogil
