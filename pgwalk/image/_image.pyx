# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""C consumers for page tables in physical-memory images.

``MappingsOp`` is a set of walk ops (pud/pmd/pte_entry) that records every
leaf the hardware would use, for a no-VMA walk; ``translate`` resolves
virtual addresses one by one with the same rules as that walk.
"""

from libc.stdint cimport uint64_t, int64_t, int32_t
from libc.stdlib cimport malloc, realloc, free

import numpy as np
cimport numpy as cnp

from pgwalk.walker._core cimport (CFunc, PageTables, make_cfunc, pgwalk_pool_t, pgwalk_walk_t, table_of,
                           pgwalk_pte_offset_map, pgwalk_bad_link)
from pgwalk.walker._entries cimport (
    PGW_P, PGW_PSE, PGW_PFN_MASK, PGW_PMD_PAGE_MASK, PGW_PUD_PAGE_MASK,
    pte_none, p4d_bad, pgd_bad_l5,
)

cnp.import_array()

MAPPING_DTYPE = np.dtype([("va", "<u8"), ("pa", "<u8"), ("size", "<u8"), ("level", "<i4"),
                          ("entry", "<u8")])
OTHER_DTYPE = np.dtype([("va", "<u8"), ("level", "<i4"), ("entry", "<u8")])

cdef packed struct Mapping:
    uint64_t va
    uint64_t pa
    uint64_t size
    int32_t level
    uint64_t entry

cdef packed struct Other:
    uint64_t va
    int32_t level
    uint64_t entry

cdef struct MapState:
    Mapping *maps
    int64_t nmaps, cap_maps
    Other *other
    int64_t nother, cap_other
    int failed                     # out of memory


cdef inline int _push_map(MapState *s, uint64_t va, uint64_t pa, uint64_t size, int level,
                          uint64_t entry) noexcept nogil:
    cdef Mapping *m
    if s.nmaps == s.cap_maps:
        m = <Mapping *>realloc(s.maps, (s.cap_maps * 2 + 65536) * sizeof(Mapping))
        if m == NULL:
            s.failed = 1
            return -12
        s.maps = m
        s.cap_maps = s.cap_maps * 2 + 65536
    s.maps[s.nmaps].va = va
    s.maps[s.nmaps].pa = pa
    s.maps[s.nmaps].size = size
    s.maps[s.nmaps].level = level
    s.maps[s.nmaps].entry = entry
    s.nmaps += 1
    return 0


cdef inline int _push_other(MapState *s, uint64_t va, int level, uint64_t entry) noexcept nogil:
    cdef Other *o
    if s.nother == s.cap_other:
        o = <Other *>realloc(s.other, (s.cap_other * 2 + 256) * sizeof(Other))
        if o == NULL:
            s.failed = 1
            return -12
        s.other = o
        s.cap_other = s.cap_other * 2 + 256
    s.other[s.nother].va = va
    s.other[s.nother].level = level
    s.other[s.nother].entry = entry
    s.nother += 1
    return 0


cdef inline int _leaf(MapState *s, uint64_t v, uint64_t addr, uint64_t size, uint64_t mask,
                      int level, pgwalk_walk_t *walk) noexcept nogil:
    """A PUD/PMD slot: a present leaf is recorded and not descended into; a
    non-present one is recorded among the others."""
    cdef uint64_t va = addr & ~(size - 1)
    if v & PGW_PSE:
        walk.action = 1                            # ACTION_CONTINUE
        if v & PGW_P:
            return _push_map(s, va, v & mask, size, level, v)
        return _push_other(s, va, level, v)
    if not (v & PGW_P):
        walk.action = 1
        return _push_other(s, va, level, v)
    return 0


cdef int _map_pud(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    return _leaf(<MapState *>ctx, e[0], addr, 1 << 30, PGW_PUD_PAGE_MASK, 2, walk)


cdef int _map_pmd(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    return _leaf(<MapState *>ctx, e[0], addr, 1 << 21, PGW_PMD_PAGE_MASK, 3, walk)


cdef int _map_pte_range(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *walk,
                        void *ctx) noexcept nogil:
    """pmd_entry in the kernel's shape: a leaf or non-present PMD as
    _map_pmd; a PTE table read here, in one loop (no call per PTE)."""
    cdef MapState *s = <MapState *>ctx
    cdef uint64_t v = e[0]
    cdef uint64_t *pte
    cdef uint64_t a, x
    cdef int64_t i, n
    cdef Mapping *m
    if (v & PGW_PSE) or not (v & PGW_P):
        return _leaf(s, v, addr, 1 << 21, PGW_PMD_PAGE_MASK, 3, walk)
    pte = pgwalk_pte_offset_map(walk, e, addr)
    if pte == NULL:
        return 0                        # not followed: the walker goes on as without this op
    n = <int64_t>((next - addr + 4095) >> 12)
    if s.cap_maps - s.nmaps < n and _grow_maps(s, n) < 0:
        return -12
    m = s.maps + s.nmaps
    a = addr & ~<uint64_t>4095
    for i in range(n):
        x = pte[i]
        if x & PGW_P:
            m.va = a
            m.pa = x & PGW_PFN_MASK
            m.size = 4096
            m.level = 4
            m.entry = x
            m += 1
        elif not pte_none(x):
            s.nmaps = m - s.maps
            if _push_other(s, a, 4, x) < 0:
                return -12
        a += 4096
    s.nmaps = m - s.maps
    walk.action = 1                     # ACTION_CONTINUE: the table is done
    return 0


cdef int _grow_maps(MapState *s, int64_t room) noexcept nogil:
    cdef int64_t cap = s.cap_maps * 2 + 65536
    cdef Mapping *m
    while cap - s.nmaps < room:
        cap *= 2
    m = <Mapping *>realloc(s.maps, cap * sizeof(Mapping))
    if m == NULL:
        s.failed = 1
        return -12
    s.maps = m
    s.cap_maps = cap
    return 0


cdef int _map_pte(uint64_t *e, uint64_t addr, uint64_t next, pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    cdef uint64_t v = e[0]
    if v & PGW_P:
        return _push_map(<MapState *>ctx, addr & ~<uint64_t>4095, v & PGW_PFN_MASK, 4096, 4, v)
    if not pte_none(v):
        return _push_other(<MapState *>ctx, addr & ~<uint64_t>4095, 4, v)
    return 0


cdef class MappingsOp:
    """Walk ops recording every present leaf (``mappings``) and every
    non-present, non-none entry (``others``) of a no-VMA walk: pud_entry,
    pmd_entry and pte_entry; or, in the kernel's shape, ``pte_range`` as the
    pmd_entry (it reads each PTE table itself; no pte_entry needed)."""
    cdef MapState state
    cdef readonly CFunc pud_entry
    cdef readonly CFunc pmd_entry
    cdef readonly CFunc pte_entry
    cdef readonly CFunc pte_range

    def __cinit__(self):
        self.state.maps = NULL
        self.state.other = NULL
        self.state.nmaps = self.state.cap_maps = 0
        self.state.nother = self.state.cap_other = 0
        self.state.failed = 0
        self.pud_entry = make_cfunc(<void *>_map_pud, &self.state, "entry", self)
        self.pmd_entry = make_cfunc(<void *>_map_pmd, &self.state, "entry", self)
        self.pte_range = make_cfunc(<void *>_map_pte_range, &self.state, "entry", self)
        self.pte_entry = make_cfunc(<void *>_map_pte, &self.state, "entry", self)

    def __dealloc__(self):
        free(self.state.maps)
        free(self.state.other)

    def reset(self):
        """Forget the records, keep the buffers (already faulted in)."""
        self.state.nmaps = 0
        self.state.nother = 0
        self.state.failed = 0

    def result(self):
        """(mappings, others) as numpy structured arrays, in walk order."""
        if self.state.failed:
            raise MemoryError("out of memory while recording mappings")
        maps = np.empty(self.state.nmaps, dtype=MAPPING_DTYPE)
        other = np.empty(self.state.nother, dtype=OTHER_DTYPE)
        cdef char *dst
        if self.state.nmaps:
            dst = <char *>cnp.PyArray_DATA(maps)
            memcpy(dst, self.state.maps, self.state.nmaps * sizeof(Mapping))
        if self.state.nother:
            dst = <char *>cnp.PyArray_DATA(other)
            memcpy(dst, self.state.other, self.state.nother * sizeof(Other))
        return maps, other


from libc.string cimport memcpy


cdef int64_t _unfollowed(pgwalk_pool_t *pool, uint64_t va, int shift) noexcept nogil:
    """An entry a translation cannot follow (bad, or a link to a frame not
    in the image): reported as the walks report it (the start of the range
    it covers), and nothing is mapped."""
    pgwalk_bad_link(pool, va & ~((<uint64_t>1 << shift) - 1))
    return -1


cdef int64_t _translate_one(pgwalk_pool_t *pool, uint64_t *pgd, int levels, uint64_t va) noexcept nogil:
    """Physical address of ``va``, or -1, by the rules of the no-VMA walk of
    MappingsOp (bad entries and links out of the image are not followed,
    and are counted in the pool's bad entries; P must be set)."""
    cdef uint64_t *slot
    cdef uint64_t v
    cdef uint64_t *tbl
    slot = pgd + ((va >> (39 if levels == 4 else 48)) & 511)
    v = slot[0]
    if levels == 5:
        if v == 0:
            return -1
        if pgd_bad_l5(v):
            return _unfollowed(pool, va, 48)
        tbl = table_of(pool, slot)
        if tbl == NULL:
            return _unfollowed(pool, va, 48)
        slot = tbl + ((va >> 39) & 511)
        v = slot[0]
    if pte_none(v):
        return -1
    tbl = table_of(pool, slot)                 # PUD table
    if tbl == NULL or p4d_bad(v):
        return _unfollowed(pool, va, 39)
    slot = tbl + ((va >> 30) & 511)
    v = slot[0]
    if not (v & PGW_P):
        return -1
    if v & PGW_PSE:
        return <int64_t>((v & PGW_PUD_PAGE_MASK) | (va & ((1 << 30) - 1)))
    tbl = table_of(pool, slot)                 # PMD table
    if tbl == NULL:
        return _unfollowed(pool, va, 30)
    slot = tbl + ((va >> 21) & 511)
    v = slot[0]
    if not (v & PGW_P):
        return -1
    if v & PGW_PSE:
        return <int64_t>((v & PGW_PMD_PAGE_MASK) | (va & ((1 << 21) - 1)))
    tbl = table_of(pool, slot)                 # PTE table
    if tbl == NULL:
        return _unfollowed(pool, va, 21)
    v = tbl[(va >> 12) & 511]
    if not (v & PGW_P):
        return -1
    return <int64_t>((v & PGW_PFN_MASK) | (va & 4095))


def translate(PageTables pt not None, vas):
    """Physical addresses of the virtual addresses ``vas`` (int64; -1 where
    nothing is mapped), one C pass."""
    cdef cnp.ndarray[cnp.uint64_t, ndim=1] v = np.ascontiguousarray(vas, dtype=np.uint64).ravel()
    cdef cnp.ndarray[cnp.int64_t, ndim=1] out = np.empty(v.shape[0], dtype=np.int64)
    cdef Py_ssize_t i, n = v.shape[0]
    cdef pgwalk_pool_t *pool = &pt.pool
    cdef uint64_t *pgd = pt.pgd_ptr
    cdef int levels = pt.levels
    with nogil:
        for i in range(n):
            out[i] = _translate_one(pool, pgd, levels, v[i])
    return out.reshape(np.shape(vas))


def translate1(PageTables pt not None, uint64_t va):
    """Physical address of one virtual address (-1 where nothing is mapped):
    an int in, an int out, no numpy."""
    return _translate_one(&pt.pool, pt.pgd_ptr, pt.levels, va)
