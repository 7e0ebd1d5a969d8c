# cython: language_level=3
"""pt_range_walk from Cython: count a range's present pages batch by batch
(a large folio's PTEs come as one record), in nogil C over the struct.

Build against the installed pgwalk with ``python build.py OUTDIR ptrange_count``."""

from libc.stdint cimport uint64_t, int64_t

cimport pgwalk
from pgwalk.walker._constants cimport PTW_DONE, PT_TYPE_FOLIO, PT_TYPE_PFN


def count_present(mm, vma, uint64_t start, uint64_t end):
    """(present pages, records) of [start, end) of ``vma``; the caller holds
    ``mm``'s mmap lock and changes nothing meanwhile."""
    cdef pgwalk.pgwalk_pt_range_walk_t ptw
    cdef pgwalk.pgwalk_vma_t v
    cdef int t
    cdef int flags = PT_TYPE_FOLIO | PT_TYPE_PFN
    cdef int64_t pages = 0, records = 0
    hook = mm.pt_folio_hook(vma)            # keeps the folio hook's context alive
    pgwalk.pgwalk_pt_range_walk_init(&ptw, mm, hook)
    v.vm_start, v.vm_end, v.vm_flags = vma.vm_start, vma.vm_end, vma.vm_flags
    with nogil:
        t = pgwalk.pgwalk_pt_range_walk_start(&ptw, &v, start, end, flags)
        while t != PTW_DONE:
            if ptw.present:
                pages += <int64_t>((ptw.next_addr - ptw.curr_addr) >> 12)
            records += 1
            t = pgwalk.pgwalk_pt_range_walk_next(&ptw, &v, start, end, flags)
        pgwalk.pgwalk_pt_range_walk_done(&ptw)
    return pages, records
