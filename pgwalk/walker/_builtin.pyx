# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Built-in walk ops: consumers written as C slot functions over the core's
contract (``pgwalk/walker/_core.pxd``), run by the walker without the GIL.

Each op is a small object whose attributes are ``CFunc`` slots to put in an
``MMWalkOps`` and whose state (counters, output arrays) lives in C memory it
owns.
"""

from libc.stdint cimport uint64_t, int64_t
from libc.string cimport memset

import numpy as np

from pgwalk.walker._core cimport CFunc, make_cfunc, pgwalk_walk_t, pgwalk_pte_offset_map
from pgwalk.walker._entries cimport pte_none, pte_present, pmd_leaf, pmd_trans_huge, PGW_P, PGW_PROTNONE

cdef enum:
    C_PTE_PRESENT = 0
    C_PTE_NONE = 1
    C_PTE_SWAP = 2
    C_PMD_TABLE = 3
    C_PMD_LEAF = 4
    C_PMD_OTHER = 5
    C_HOLES = 6
    C_CALLS = 7
    C_N = 8

cdef struct CountState:
    int64_t n[C_N]


cdef int _count_pte(uint64_t *entry, uint64_t addr, uint64_t next,
                    pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    cdef CountState *s = <CountState *>ctx
    cdef uint64_t v = entry[0]
    s.n[C_CALLS] += 1
    if pte_none(v):
        s.n[C_PTE_NONE] += 1
    elif pte_present(v):
        s.n[C_PTE_PRESENT] += 1
    else:
        s.n[C_PTE_SWAP] += 1
    return 0


cdef int _count_pmd(uint64_t *entry, uint64_t addr, uint64_t next,
                    pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    cdef CountState *s = <CountState *>ctx
    cdef uint64_t v = entry[0]
    s.n[C_CALLS] += 1
    if pmd_trans_huge(v):
        s.n[C_PMD_LEAF] += 1
    elif pmd_leaf(v) or not (v & 1):
        s.n[C_PMD_OTHER] += 1
    else:
        s.n[C_PMD_TABLE] += 1
    return 0


cdef int _count_hole(uint64_t addr, uint64_t next, int depth,
                     pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    cdef CountState *s = <CountState *>ctx
    s.n[C_CALLS] += 1
    s.n[C_HOLES] += 1
    return 0


cdef class CountOp:
    """Counts what a walk meets, in C: use ``.pte_entry``, ``.pmd_entry`` and
    ``.pte_hole`` as MMWalkOps fields, then read ``.counts``."""
    cdef CountState state
    cdef readonly CFunc pte_entry
    cdef readonly CFunc pmd_entry
    cdef readonly CFunc pte_hole

    def __cinit__(self):
        memset(&self.state, 0, sizeof(CountState))
        self.pte_entry = make_cfunc(<void *>_count_pte, &self.state, "entry", self)
        self.pmd_entry = make_cfunc(<void *>_count_pmd, &self.state, "entry", self)
        self.pte_hole = make_cfunc(<void *>_count_hole, &self.state, "hole", self)

    def reset(self):
        memset(&self.state, 0, sizeof(CountState))

    @property
    def counts(self):
        n = self.state.n
        return {"pte_present": n[C_PTE_PRESENT], "pte_none": n[C_PTE_NONE],
                "pte_swap": n[C_PTE_SWAP], "pmd_table": n[C_PMD_TABLE],
                "pmd_thp": n[C_PMD_LEAF], "pmd_other": n[C_PMD_OTHER],
                "holes": n[C_HOLES], "calls": n[C_CALLS]}


cdef int _count_present(uint64_t *entry, uint64_t addr, uint64_t next,
                        pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    (<int64_t *>ctx)[0] += pte_present(entry[0])
    return 0


cdef class CountPresentOp:
    """The smallest useful PTE op: count present PTEs through the pte_entry
    slot.  (Its counter, updated through memory on every call, is a chain of
    dependent stores: the benchmark uses MincoreOp, which has none.)"""
    cdef int64_t count
    cdef readonly CFunc pte_entry

    def __cinit__(self):
        self.count = 0
        self.pte_entry = make_cfunc(<void *>_count_present, &self.count, "entry", self)

    @property
    def value(self):
        return self.count

    def reset(self):
        self.count = 0


# --- mincore(2) as a walk op -----------------------------------------------------

from libc.stdint cimport uint8_t
from pgwalk.walker._entries cimport pte_none

cdef struct MincoreState:
    uint8_t *vec
    uint64_t start          # page-aligned address of vec[0]
    uint64_t n              # pages in vec


cdef inline void _mincore_fill(MincoreState *s, uint64_t addr, uint64_t next, uint8_t v) noexcept nogil:
    cdef uint64_t lo, hi
    if next <= s.start:
        return
    lo = (addr - s.start) >> 12 if addr > s.start else 0
    hi = (next - s.start + 4095) >> 12
    if hi > s.n:
        hi = s.n
    if lo < hi:
        memset(s.vec + lo, v, hi - lo)


cdef int _mincore_pte(uint64_t *entry, uint64_t addr, uint64_t next,
                      pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    cdef MincoreState *s = <MincoreState *>ctx
    cdef uint64_t i = (addr - s.start) >> 12
    if i < s.n:
        s.vec[i] = pte_present(entry[0])
    return 0


cdef int _mincore_pmd(uint64_t *entry, uint64_t addr, uint64_t next,
                      pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    if pmd_trans_huge(entry[0]):
        _mincore_fill(<MincoreState *>ctx, addr, next, 1)
        walk.action = 1                     # ACTION_CONTINUE: the kernel's mincore does not split
    return 0


cdef extern from "_kernels.h":
    void pgw_any_bits_u8(const uint64_t *pte, uint8_t *out, int n, uint64_t mask) noexcept nogil

cdef int _mincore_pte_range(uint64_t *entry, uint64_t addr, uint64_t next,
                            pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    # The kernel's shape (mm/mincore.c, mincore_pte_range): a pmd_entry that
    # reads the PTE table itself, so one indirect call covers 512 pages.
    cdef MincoreState *s = <MincoreState *>ctx
    cdef uint64_t *pte
    cdef uint64_t lo, i, n, a
    if pmd_trans_huge(entry[0]):
        _mincore_fill(s, addr, next, 1)
        walk.action = 1                     # ACTION_CONTINUE: never split
        return 0
    pte = pgwalk_pte_offset_map(walk, entry, addr)
    if pte == NULL:
        if pte_none(entry[0]):
            walk.action = 2                 # ACTION_AGAIN, as the kernel: the PMD is now a hole
        else:
            _mincore_fill(s, addr, next, 0) # not a table (a migration entry): nothing present
        return 0
    n = (next - addr + 4095) >> 12
    lo = (addr - s.start) >> 12
    if addr >= s.start and lo + n <= s.n:
        pgw_any_bits_u8(pte, s.vec + lo, <int>n, PGW_P | PGW_PROTNONE)
    else:
        for i in range(n):
            a = addr + (i << 12)
            if a >= s.start and ((a - s.start) >> 12) < s.n:
                s.vec[(a - s.start) >> 12] = pte_present(pte[i])
    walk.action = 1                         # ACTION_CONTINUE: the table is done
    return 0


cdef int _mincore_hole(uint64_t addr, uint64_t next, int depth,
                       pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    _mincore_fill(<MincoreState *>ctx, addr, next, 0)
    return 0


cdef class MincoreOp:
    """mincore(2)'s walk as C slots (pmd_entry, pte_entry, pte_hole): one
    byte per page of ``[start, start + 4096 * npages)`` into ``.vec``, 1 for
    a present page (a THP counts as 512 present pages; none, swap and
    markers are 0).  Like the kernel's mincore it never splits a THP.

    Two shapes: ``pmd_entry`` + ``pte_entry`` (one call per PTE, the cost
    the benchmark's c-slot tier measures), or ``pte_range`` as the
    pmd_entry with no pte_entry -- the kernel's own shape, one call per PTE
    table, which reads the table itself (``pgwalk_pte_offset_map``)."""
    cdef MincoreState state
    cdef readonly object vec
    cdef readonly CFunc pte_entry
    cdef readonly CFunc pmd_entry
    cdef readonly CFunc pte_hole
    cdef readonly CFunc pte_range

    def __cinit__(self, uint64_t start, uint64_t npages):
        self.vec = np.zeros(npages, dtype=np.uint8)
        self.state.vec = <uint8_t *><size_t>self.vec.ctypes.data
        self.state.start = start & ~<uint64_t>4095
        self.state.n = npages
        self.pte_entry = make_cfunc(<void *>_mincore_pte, &self.state, "entry", self)
        self.pmd_entry = make_cfunc(<void *>_mincore_pmd, &self.state, "entry", self)
        self.pte_hole = make_cfunc(<void *>_mincore_hole, &self.state, "hole", self)
        self.pte_range = make_cfunc(<void *>_mincore_pte_range, &self.state, "entry", self)


# --- mincore on the batched walker (pt_range_walk) ---------------------------

from pgwalk.walker._ptrange cimport (
    pgwalk_pt_range_walk_t, pgwalk_vma_t, pgwalk_pt_range_walk_init,
    pgwalk_pt_range_walk_start, pgwalk_pt_range_walk_next, pgwalk_pt_range_walk_done,
)
from pgwalk.walker._constants cimport PTW_DONE, PTW_ABORT, PTW_FOLIO, PTW_PFN, PT_TYPE_FOLIO, PT_TYPE_PFN
from .locks import LockAssertionError


cdef int64_t _pt_mincore(pgwalk_pt_range_walk_t *ptw, const pgwalk_vma_t *v, uint64_t lo,
                         uint64_t hi, uint8_t *vec, uint64_t vstart, uint64_t n) noexcept nogil:
    """Mark each present record's pages (clipped to the vector); returns the steps."""
    cdef int flags = PT_TYPE_FOLIO | PT_TYPE_PFN
    cdef int64_t steps = 1
    cdef uint64_t a, b, vend = vstart + (n << 12)
    cdef int t = pgwalk_pt_range_walk_start(ptw, v, lo, hi, flags)
    while t != PTW_DONE and t != PTW_ABORT:
        if t == PTW_FOLIO or t == PTW_PFN:
            a = ptw.curr_addr if ptw.curr_addr > vstart else vstart
            b = ptw.next_addr if ptw.next_addr < hi else hi
            if b > vend:
                b = vend
            if b - a == 4096:
                vec[(a - vstart) >> 12] = 1     # an order-0 page: no memset call
            elif a < b:
                memset(vec + ((a - vstart) >> 12), 1, (b - a) >> 12)
        t = pgwalk_pt_range_walk_next(ptw, v, lo, hi, flags)
        steps += 1
    pgwalk_pt_range_walk_done(ptw)
    return steps


cdef class PtRangeMincoreOp:
    """mincore(2) on the batched walker: ``walk(mm, vma, lo, hi)`` drives
    ``pt_range_walk`` in nogil C over ``[lo, hi)`` of ``vma`` and sets one
    byte per present page of ``[start, start + 4096 * npages)`` in ``.vec``
    (a batch of a large folio's PTEs, or a PMD leaf, in one step); returns
    the number of steps.  Hold the mmap lock."""
    cdef readonly object vec
    cdef uint8_t *buf
    cdef uint64_t start, n

    def __cinit__(self, uint64_t start, uint64_t npages):
        self.vec = np.zeros(npages, dtype=np.uint8)
        self.buf = <uint8_t *><size_t>self.vec.ctypes.data
        self.start = start & ~<uint64_t>4095
        self.n = npages

    def walk(self, mm, vma, uint64_t lo, uint64_t hi):
        cdef pgwalk_pt_range_walk_t ptw
        cdef pgwalk_vma_t v
        cdef int64_t steps
        if vma.vm_mm is not mm:
            raise ValueError("mm: the VMA does not belong to this mm")
        if lo % 4096 or hi % 4096:
            raise ValueError("lo and hi must be page aligned")
        if not mm._lock.held():
            raise LockAssertionError("pt_range_walk needs the mmap lock: use `with mm.mmap_read_lock():`")
        if lo < vma.vm_start:
            lo = vma.vm_start
        if hi > vma.vm_end:
            hi = vma.vm_end
        hook = mm.pt_folio_hook(vma)
        pgwalk_pt_range_walk_init(&ptw, mm, hook)
        v.vm_start, v.vm_end, v.vm_flags = vma.vm_start, vma.vm_end, vma.vm_flags
        if lo >= hi:
            return 0
        with nogil:
            steps = _pt_mincore(&ptw, &v, lo, hi, self.buf, self.start, self.n)
        return steps


# --- bulk builders for large models (benchmarks, demos) ---------------------
#
# Dense and sparse 4K layouts are built the kernel's way: an install_pte op
# handed to walk_page_range_mm, so the walker allocates every table.  THP
# layouts set PMD leaves through the pool directly (no walker installs them).

from pgwalk.walker._core cimport PageTables
from pgwalk.walker._entries cimport PGW_PSE, PGW_PFN_MASK

cdef struct FillState:
    uint64_t pfn_base
    uint64_t prot
    uint64_t stride_mask           # install where (addr & stride_mask) == 0


cdef int _fill_install(uint64_t addr, uint64_t next, uint64_t *ptep,
                       pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    cdef FillState *s = <FillState *>ctx
    if (addr & s.stride_mask) == 0:
        ptep[0] = (((s.pfn_base + (addr >> 12)) << 12) & PGW_PFN_MASK) | s.prot
    return 0


cdef class FillOp:
    """install_pte op that maps one page every ``stride`` bytes (4096:
    dense), PFN = base + page number; use with walk_page_range_mm."""
    cdef FillState state
    cdef readonly CFunc install_pte

    def __cinit__(self, uint64_t stride=4096, uint64_t pfn_base=1 << 24, uint64_t prot=0x67):
        if stride < 4096 or stride & (stride - 1):
            raise ValueError("stride must be a power of two >= 4096")
        self.state.pfn_base = pfn_base
        self.state.prot = prot
        self.state.stride_mask = stride - 1
        self.install_pte = make_cfunc(<void *>_fill_install, &self.state, "install", self)


def map_thp_range(PageTables mm not None, uint64_t start, uint64_t end, uint64_t pfn_base=1 << 24,
                  uint64_t prot=0x67):
    """Map [start, end) (2 MiB aligned) with PMD leaves, allocating the
    tables above them; returns how many were mapped."""
    cdef uint64_t addr
    cdef uint64_t *slot
    cdef int err = 0
    cdef int64_t n = 0
    if start % (2 << 20) or end % (2 << 20) or start >= end:
        raise ValueError("start and end must be 2 MiB aligned, start < end")
    with nogil:
        addr = start
        while addr < end:
            slot = mm._slot(addr, 3, True, &err)
            if slot == NULL:
                break
            slot[0] = ((((pfn_base + (addr >> 12)) & ~<uint64_t>511) << 12) & PGW_PFN_MASK) | prot | PGW_PSE
            n += 1
            addr += 2 << 20
    if err:
        raise OSError(-err, "could not map a THP (allocation failed or a table is in the way)")
    return n


# --- the floor of a Python callback: calling it from C, nothing else --------

from cpython.object cimport PyObject
cdef extern from "Python.h":
    object PyObject_Vectorcall(object callable, PyObject **args, size_t nargsf, object kwnames)


def call_python_4(fn, Py_ssize_t n):
    """Call ``fn(a, b, c, d)`` ``n`` times from C with the same four ints;
    the bare cost of a Python callback with the walker's arity."""
    cdef object a = 1, b = 2, c = 3, d = 4
    cdef PyObject *args[4]
    cdef Py_ssize_t i
    args[0] = <PyObject *>a
    args[1] = <PyObject *>b
    args[2] = <PyObject *>c
    args[3] = <PyObject *>d
    for i in range(n):
        PyObject_Vectorcall(fn, args, 4, None)
    return n
