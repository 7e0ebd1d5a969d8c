# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""C consumers for page tables in physical-memory images.

``MappingsOp`` is a set of walk ops (pud/pmd/pte_entry) that records every
leaf the hardware would use, for a no-VMA walk; ``translate`` resolves
virtual addresses with the same rules as that walk (the upper levels
walked once per 2 MiB region within a call, PTE slots prefetched in
groups, no branch on what an address hit); ``translate1`` resolves one.
"""

from libc.stdint cimport uint64_t, int64_t, int32_t
from libc.stdlib cimport malloc, realloc, free
from cpython.buffer cimport PyBUF_FORMAT

import numpy as np
cimport numpy as cnp

from pgwalk.walker._core cimport (CFunc, PageTables, make_cfunc, pgwalk_pool_t, pgwalk_walk_t,
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

cdef enum:
    FIRST_MAPS = 2048               # records the first buffer holds (72 KiB: from the heap, not a new mapping)
    HANDOFF_BYTES = 1 << 20         # results from this size on are handed over, not copied


cdef struct MapState:
    Mapping *maps
    int64_t nmaps, cap_maps
    int64_t hint                   # records of the last result handed over: the next buffer's size
    Other *other
    int64_t nother, cap_other
    int failed                     # out of memory


cdef inline int _push_map(MapState *s, uint64_t va, uint64_t pa, uint64_t size, int level,
                          uint64_t entry) noexcept nogil:
    if s.nmaps == s.cap_maps and _grow_maps(s, 1) < 0:
        return -12
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
    """Room for ``room`` more records: the buffer doubles, or starts at the
    size of the last result handed over (``hint``), which is dropped when
    that much cannot be had (a huge image's size for the walk of a small
    one); out of memory otherwise."""
    cdef int64_t cap
    cdef Mapping *m
    while True:
        cap = max(s.cap_maps * 2 + FIRST_MAPS, s.hint)
        while cap - s.nmaps < room:
            cap *= 2
        m = <Mapping *>realloc(s.maps, cap * sizeof(Mapping))
        if m != NULL:
            break
        if s.hint == 0:
            s.failed = 1
            return -12
        s.hint = 0
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


cdef class _OwnedBuffer:
    """A malloc'd block exported as a writable buffer (for numpy), freed
    when the last view of it goes."""
    cdef char *ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    @staticmethod
    cdef _OwnedBuffer take(char *ptr, size_t size):
        cdef _OwnedBuffer b = _OwnedBuffer.__new__(_OwnedBuffer)
        b.ptr = ptr
        b.size = <Py_ssize_t>size
        return b

    def __getbuffer__(self, Py_buffer *view, int flags):
        self.shape[0] = self.size
        self.strides[0] = 1
        view.buf = self.ptr
        view.obj = self
        view.len = self.size
        view.readonly = 0
        view.itemsize = 1
        view.format = NULL
        if flags & PyBUF_FORMAT:
            view.format = b"B"
        view.ndim = 1
        view.shape = self.shape
        view.strides = self.strides
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __dealloc__(self):
        free(self.ptr)


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
        self.state.hint = 0
        self.state.nother = self.state.cap_other = 0
        self.state.failed = 0
        self.pud_entry = make_cfunc(<void *>_map_pud, &self.state, "entry", self)
        self.pmd_entry = make_cfunc(<void *>_map_pmd, &self.state, "entry", self)
        self.pte_range = make_cfunc(<void *>_map_pte_range, &self.state, "entry", self)
        self.pte_entry = make_cfunc(<void *>_map_pte, &self.state, "entry", self)

    def __dealloc__(self):
        free(self.state.maps)
        free(self.state.other)

    @property
    def buffer_bytes(self):
        """Bytes the record buffers hold (kept by reset)."""
        return self.state.cap_maps * sizeof(Mapping) + self.state.cap_other * sizeof(Other)

    def reset(self):
        """Forget the records, keep the buffers (already faulted in)."""
        self.state.nmaps = 0
        self.state.nother = 0
        self.state.failed = 0

    def result(self):
        """(mappings, others) as numpy structured arrays, in walk order.  A
        large mappings array is the record buffer itself, handed over (a
        copy of it cost as much as the walk that wrote it); the next walk
        starts a buffer of the same size.  Smaller ones are copied, and the
        buffer, already faulted in, kept."""
        if self.state.failed:
            raise MemoryError("out of memory while recording mappings")
        cdef char *dst
        cdef size_t nbytes = self.state.nmaps * sizeof(Mapping)
        cdef Mapping *kept
        if nbytes >= HANDOFF_BYTES:
            kept = <Mapping *>realloc(self.state.maps, nbytes)     # shrinking: in place
            if kept == NULL:
                kept = self.state.maps
            maps = np.frombuffer(_OwnedBuffer.take(<char *>kept, nbytes), dtype=MAPPING_DTYPE)
            self.state.hint = self.state.nmaps
            self.state.maps = NULL
            self.state.cap_maps = 0
        else:
            maps = np.empty(self.state.nmaps, dtype=MAPPING_DTYPE)
            if nbytes:
                memcpy(cnp.PyArray_DATA(maps), self.state.maps, nbytes)
        other = np.empty(self.state.nother, dtype=OTHER_DTYPE)
        if self.state.nother:
            dst = <char *>cnp.PyArray_DATA(other)
            memcpy(dst, self.state.other, self.state.nother * sizeof(Other))
        return maps, other


from libc.string cimport memcpy


cdef extern from *:
    void __builtin_prefetch(const void *addr, int rw, int locality) nogil


cdef inline uint64_t *_frame(pgwalk_pool_t *pool, uint64_t v, int64_t *hint) noexcept nogil:
    """The image frame an entry links to (its PFN field), or NULL outside the
    image: the pool's ``image_frame`` inlined, with the segment of the last
    lookup (``hint``) tried before the binary search."""
    cdef uint64_t pfn = (v & PGW_PFN_MASK) >> 12
    cdef int64_t lo = 0, hi, mid, h
    if pool.nseg == 0:
        if pfn >= pool.image_pages:
            return NULL
        return pool.image_base + pfn * 512
    h = hint[0]
    if not (pfn >= pool.seg_pfn[h] and pfn - pool.seg_pfn[h] < pool.seg_pages[h]):
        hi = pool.nseg - 1
        while lo <= hi:                       # the last segment starting at or before pfn
            mid = (lo + hi) // 2
            if pool.seg_pfn[mid] <= pfn:
                lo = mid + 1
            else:
                hi = mid - 1
        if hi < 0 or pfn - pool.seg_pfn[hi] >= pool.seg_pages[hi]:
            return NULL
        h = hint[0] = hi
    return pool.image_base + (pool.seg_file_page[h] + pfn - pool.seg_pfn[h]) * 512


cdef struct Region:
    # What the tables above the PTE level say for one 2 MiB-aligned region,
    # in a form that needs no branch to use: the PTE for ``va`` is
    # ``pte[(va >> 12) & 511] | leaf | (va & omask)``.  A region with a PTE
    # table: ``pte`` is it, leaf and omask 0.  Else ``pte`` is _NO_TABLE
    # (all zero), omask 0x1ff000 (va's 4K page in the 2 MiB) and ``leaf`` P
    # and the region's 2M-aligned physical address (of a 2M or 1G leaf), or
    # 0 when nothing is mapped: the PTE a 4K page of the leaf would have.
    uint64_t key                   # va >> 21 of the region; NO_REGION: an empty line
    const uint64_t *pte
    uint64_t leaf
    uint64_t omask


cdef enum:
    GROUP = 64                     # addresses in flight: their slots are prefetched, then read


cdef uint64_t _NO_TABLE[512]
cdef uint64_t NO_REGION = ~(<uint64_t>0)   # no region's number (va >> 21 < 2 ** 43)


cdef int _unfollowed(pgwalk_pool_t *pool, uint64_t va, int shift) noexcept nogil:
    """An entry a translation cannot follow (bad, or a link to a frame not
    in the image): reported as the walks report it (the start of the range
    it covers); nothing is mapped under it."""
    pgwalk_bad_link(pool, va & ~((<uint64_t>1 << shift) - 1))
    return 1


cdef int _upper(pgwalk_pool_t *pool, uint64_t *pgd, int levels, uint64_t va, Region *r,
                int64_t *hint) noexcept nogil:
    """The walk of ``va``'s region down to its PMD entry, by the rules of the
    no-VMA walk of MappingsOp (bad entries and links out of the image are not
    followed, and are counted in the pool's bad entries; P must be set): a
    PTE table, or the region's answer (a 1G or 2M leaf, or none).  Returns 1
    when it met an entry it could not follow (then the region is not cached:
    each address under it is counted, as each translate1 of it is).  Not
    inline: out of the batched loop, it leaves that loop its registers."""
    cdef uint64_t v
    cdef uint64_t *tbl
    r.pte = _NO_TABLE
    r.leaf = 0
    r.omask = ((1 << 21) - 1) ^ 4095
    v = pgd[(va >> (39 if levels == 4 else 48)) & 511]
    if levels == 5:
        if v == 0:
            return 0
        if pgd_bad_l5(v):
            return _unfollowed(pool, va, 48)
        tbl = _frame(pool, v, hint)                # P4D table
        if tbl == NULL:
            return _unfollowed(pool, va, 48)
        v = tbl[(va >> 39) & 511]
    if pte_none(v):
        return 0
    tbl = _frame(pool, v, hint)                    # PUD table
    if tbl == NULL or p4d_bad(v):
        return _unfollowed(pool, va, 39)
    v = tbl[(va >> 30) & 511]
    if not (v & PGW_P):
        return 0
    if v & PGW_PSE:                                # 1G leaf: the 2 MiB of it that holds va
        r.leaf = (v & PGW_PUD_PAGE_MASK) | (va & (((<uint64_t>1) << 30) - (1 << 21))) | PGW_P
        return 0
    tbl = _frame(pool, v, hint)                    # PMD table
    if tbl == NULL:
        return _unfollowed(pool, va, 30)
    v = tbl[(va >> 21) & 511]
    if not (v & PGW_P):
        return 0
    if v & PGW_PSE:
        r.leaf = (v & PGW_PMD_PAGE_MASK) | PGW_P
        return 0
    tbl = _frame(pool, v, hint)                    # PTE table
    if tbl == NULL:
        return _unfollowed(pool, va, 21)
    r.pte = tbl
    r.omask = 0
    return 0


cdef inline int64_t _answer(uint64_t x, uint64_t va) noexcept nogil:
    """The physical address for ``va`` (-1 without P) that a PTE ``x`` gives,
    without a branch: (x & P) - 1 is 0 with P (bit 0) and all ones without."""
    return <int64_t>((x & PGW_PFN_MASK) | (va & 4095) | ((x & PGW_P) - 1))


cdef inline uint64_t _under_leaf(Region *r, uint64_t va) noexcept nogil:
    """The PTE a 4K page of the region's leaf would have for ``va`` (0 when
    the region has a PTE table)."""
    return r.leaf | (va & r.omask)


cdef int64_t _translate_one(pgwalk_pool_t *pool, uint64_t *pgd, int levels, uint64_t va) noexcept nogil:
    """Physical address of ``va``, or -1, by the rules of the no-VMA walk of
    MappingsOp (see _upper)."""
    cdef Region r
    cdef int64_t hint = 0
    _upper(pool, pgd, levels, va, &r, &hint)
    return _answer(r.pte[(va >> 12) & 511] | _under_leaf(&r, va), va)


cdef void _translate_many(pgwalk_pool_t *pool, uint64_t *pgd, int levels, const uint64_t *vas,
                          int64_t *out, Py_ssize_t n, Region *cache, uint64_t mask) noexcept nogil:
    """``out[i]`` = the physical address of ``vas[i]`` (or -1) for every i.

    Three ideas, none visible in the answers:

    * the walk down to the PMD entry is done once per 2 MiB region met: the
      regions are cached in ``mask + 1`` lines, direct-mapped on the region
      number folded once (neighbouring regions get neighbouring lines, and
      regions whose numbers differ only above the line bits spread); a
      region whose line another took is walked again when met next;
    * the slots of GROUP addresses are prefetched before the first of them
      is read, so that their cache misses overlap instead of following each
      other; their PTEs are gathered, then the answers computed in a loop
      of their own, which the compiler vectorises;
    * no branch depends on what an address hit (a region's answer is read
      like a PTE: see Region), so a mix of 4K and huge pages costs no
      mispredictions."""
    cdef const uint64_t *slot[GROUP]
    cdef uint64_t leaf[GROUP]             # _under_leaf of each (the line may be taken meanwhile)
    cdef Py_ssize_t i0, j, m
    cdef uint64_t va, key
    cdef Region *r
    cdef int64_t hint = 0
    i0 = 0
    while i0 < n:
        m = min(<Py_ssize_t>GROUP, n - i0)
        for j in range(m):
            va = vas[i0 + j]
            key = va >> 21
            r = cache + ((key ^ (key >> 13)) & mask)
            if r.key != key:
                r.key = NO_REGION if _upper(pool, pgd, levels, va, r, &hint) else key
            slot[j] = r.pte + ((va >> 12) & 511)
            leaf[j] = _under_leaf(r, va)
            __builtin_prefetch(slot[j], 0, 3)
        for j in range(m):
            leaf[j] |= slot[j][0]                      # the PTE (a gather) ...
        for j in range(m):                             # ... and the answers (vectorised)
            out[i0 + j] = _answer(leaf[j], vas[i0 + j])
        i0 += m


cdef extern from "Python.h":
    object PyBytes_FromStringAndSize(const char *v, Py_ssize_t n)
    char *PyBytes_AS_STRING(object o)

from posix.mman cimport madvise, MADV_HUGEPAGE

cdef enum:
    HUGE_OUT = 4 << 20              # outputs from this size on are faulted in 2 MiB pages


cdef inline void _advise_huge(void *buf, size_t n) noexcept nogil:
    """Advise the 2 MiB-aligned part of a fresh output buffer of ``n`` bytes
    as huge pages (when ``n`` >= HUGE_OUT), before it is first written: its
    4K page faults would cost more than filling it (16,384 for 64 MiB)."""
    cdef size_t a = (<size_t>buf + (2 << 20) - 1) & ~(<size_t>(2 << 20) - 1)
    cdef size_t b = (<size_t>buf + n) & ~(<size_t>(2 << 20) - 1)
    if n >= HUGE_OUT and b > a:
        madvise(<void *>a, b - a, MADV_HUGEPAGE)        # advice only: its failure changes nothing


def translate(PageTables pt not None, vas):
    """Physical addresses of the virtual addresses ``vas`` (int64; -1 where
    nothing is mapped), one C pass."""
    cdef cnp.ndarray[cnp.uint64_t, ndim=1] v = np.ascontiguousarray(vas, dtype=np.uint64).ravel()
    cdef cnp.ndarray[cnp.int64_t, ndim=1] out = np.empty(v.shape[0], dtype=np.int64)
    cdef Py_ssize_t i, n = v.shape[0]
    cdef pgwalk_pool_t *pool = &pt.pool
    cdef uint64_t *pgd = pt.pgd_ptr
    cdef int levels = pt.levels
    cdef uint64_t lines = 64
    cdef Region *cache
    while lines < 8192 and lines * 16 < <uint64_t>n:    # a line per 16 addresses, 64 to 8192
        lines *= 2
    if n == 0:
        return out.reshape(np.shape(vas))
    cache = <Region *>malloc(lines * sizeof(Region))
    if cache == NULL:
        raise MemoryError()
    for i in range(<Py_ssize_t>lines):
        cache[i].key = NO_REGION
    with nogil:
        _translate_many(pool, pgd, levels, <const uint64_t *>&v[0], <int64_t *>&out[0], n, cache,
                        lines - 1)
    free(cache)
    return out.reshape(np.shape(vas))


def translate1(PageTables pt not None, uint64_t va):
    """Physical address of one virtual address (-1 where nothing is mapped):
    an int in, an int out, no numpy."""
    return _translate_one(&pt.pool, pt.pgd_ptr, pt.levels, va)


def copy_runs(cnp.ndarray frames not None, offsets, lengths):
    """``bytes`` of the runs ``[offsets[i], offsets[i] + lengths[i])`` of the
    bytes of ``frames`` (a memory-mapped image), one after the other.

    One copy from the mapping into the new object, nogil; a large output is
    advised huge first (_advise_huge)."""
    cdef cnp.ndarray[cnp.uint64_t, ndim=1] off = np.ascontiguousarray(offsets, dtype=np.uint64)
    cdef cnp.ndarray[cnp.uint64_t, ndim=1] ln = np.ascontiguousarray(lengths, dtype=np.uint64)
    cdef const char *base = <const char *>cnp.PyArray_DATA(frames)
    cdef uint64_t have = <uint64_t>cnp.PyArray_NBYTES(frames)
    cdef uint64_t total = 0
    cdef Py_ssize_t i, n = off.shape[0]
    cdef char *dst
    if ln.shape[0] != n:
        raise ValueError(f"offsets and lengths differ in length ({n} and {ln.shape[0]})")
    for i in range(n):
        if off[i] > have or ln[i] > have - off[i]:
            raise ValueError(f"run {i} ({ln[i]} bytes at {off[i]:#x}) is not inside the image's "
                             f"{have} mapped bytes")
        total += ln[i]
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>total)
    dst = PyBytes_AS_STRING(out)
    with nogil:
        _advise_huge(dst, total)
        for i in range(n):
            memcpy(dst, base + off[i], ln[i])
            dst += ln[i]
    return out
