# Part of pgwalk.walker._core (included by _core.pyx):
# the benchmark's ``inline`` tier, a specialisation of the level walk whose
# PTE loop is MincoreOp's pte_entry written in place instead of called
# through the slot.  The level functions of _walk.pxi are compiled a second
# time for it (the PteLoop fused type); the generic walk never sees it.

cdef struct InlineMincore:
    uint8_t *vec                      # one byte per page from ``start``
    uint64_t start                    # the first page's address
    uint64_t n                        # pages in vec


cdef int mincore_pte_range(WalkCtx *c, InlineMincore *m, uint64_t *pte, uint64_t addr,
                           uint64_t end) noexcept nogil:
    """walk_pte_range_inner with MincoreOp's pte_entry inlined (a batched
    pte_entry or an install_pte takes the generic loop, as it always did)."""
    cdef int i, n
    cdef uint64_t first
    if c.ops.pte_batch != NULL or c.ops.install_pte != NULL:
        return walk_pte_range_inner(c, pte, addr, end)
    n = pte_count(addr, end)
    c.entries += n
    first = (addr - m.start) >> 12
    if first + n <= m.n:
        # pte_present() for each slot, as a vectorised loop
        pgw_any_bits_u8(pte, m.vec + first, n, PGW_P | PGW_PROTNONE)
    else:
        for i in range(n):
            if first + i < m.n:
                m.vec[first + i] = pte_present(pte[i])
    return tick(c, n)


def _walk_inline_mincore(PageTables mm not None, uint64_t start, uint64_t end, ops,
                         cnp.ndarray[cnp.uint8_t, ndim=1] out not None):
    """Benchmark baseline: walk_page_range over [start, end) with ``ops``
    (a MincoreOp's), but with its pte_entry inlined in the PTE loop instead
    of called through the slot; fills ``out`` (one byte per page from
    ``start``) the same way.  The caller holds the mmap lock."""
    cdef MMWalk walk = _new_walk(mm, ops, None, False, None)
    cdef InlineMincore m
    cdef uint64_t lo, hi
    cdef int err
    m.vec = <uint8_t *>cnp.PyArray_DATA(out)
    m.start = start & ~<uint64_t>4095
    m.n = out.shape[0]
    vma = mm.find_vma(start)
    while vma is not None and vma.vm_start < end:
        _enter_vma(walk, vma)
        lo = max(start, vma.vm_start)
        hi = min(end, vma.vm_end)
        if walk._py_slots:
            err = walk_pgd_range(&walk.c, &m, lo, hi)
        else:
            with nogil:
                err = walk_pgd_range(&walk.c, &m, lo, hi)
        if err:
            return _finish(walk, err)
        vma = mm.find_vma(vma.vm_end)
    return _finish(walk, 0)
