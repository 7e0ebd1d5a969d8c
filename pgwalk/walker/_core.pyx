# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""pgwalk's compiled core: the table pool and the page walker.

The walker is the kernel's ``mm/pagewalk.c`` (6.13) in Cython: one function
per level, each the shape of the kernel's, running over raw table memory and
calling the slots of a ``pgwalk_ops_t``.  The loops are ``nogil``; Python
callbacks reach them through trampolines that hold the GIL only to call.

Where the kernel would dereference memory that pgwalk cannot trust (a table
link that does not lead to a live table of this pool linked from exactly this
slot), pgwalk does not follow the link; see docs/decisions.md for each place.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.ref cimport Py_REFCNT
from cpython.long cimport PyLong_AsLongAndOverflow
from cpython.object cimport PyObject
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK)

from libc.stdint cimport uint64_t, int64_t, int8_t, uint8_t
from libc.limits cimport INT_MAX, INT_MIN
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset, memcpy


cdef extern from "Python.h":
    # the same functions on raw pointers, for the trampolines' hot path
    PyObject *PyObject_Vectorcall_p "PyObject_Vectorcall" (PyObject *callable, PyObject **args,
                                                           size_t nargsf, PyObject *kwnames)
    long PyLong_AsLongAndOverflow_p "PyLong_AsLongAndOverflow" (PyObject *o, int *overflow)
    bint PyLong_CheckExact_p "PyLong_CheckExact" (PyObject *o)
    void Py_DECREF_p "Py_DECREF" (PyObject *o)
    void PyErr_Fetch(PyObject **t, PyObject **v, PyObject **tb)
    void PyErr_NormalizeException(PyObject **t, PyObject **v, PyObject **tb)
    int PyException_SetTraceback(PyObject *exc, PyObject *tb)
    void Py_XDECREF(PyObject *o)
    Py_ssize_t Py_REFCNT_p "Py_REFCNT" (PyObject *o)
    PyObject *PyList_GET_ITEM_p "PyList_GET_ITEM" (object lst, Py_ssize_t i)

cdef extern from "_kernels.h":
    void pgw_any_bits_u8(const uint64_t *pte, uint8_t *out, int n, uint64_t mask) noexcept nogil
    void pgw_store_changed(uint64_t *live, const uint64_t *work, const uint64_t *snap, int n) noexcept nogil

cdef extern from "_pyint.h":
    ctypedef struct pgw_boxes:
        pass
    int pgw_boxes_pair_p "pgw_boxes_pair" (pgw_boxes *b, uint64_t addr, uint64_t next,
                                           PyObject **pa, PyObject **pn)
    void pgw_boxes_clear(pgw_boxes *b)
    int pgw_int_rewrite_enabled()

import threading

import numpy as np
cimport numpy as cnp

from pgwalk.walker._entries cimport *
from pgwalk.walker._constants cimport *

cnp.import_array()


cdef enum:
    CHECK_EVERY = 1 << 16          # entries between two Ctrl-C checks

# The C view of pgwalk.constants' levels, actions and errnos (for the test
# that the two views agree).
C_CONSTANTS = {
    "PGD": L_PGD, "P4D": L_P4D, "PUD": L_PUD, "PMD": L_PMD, "PTE": L_PTE,
    "ACTION_SUBTREE": ACT_SUBTREE, "ACTION_CONTINUE": ACT_CONTINUE, "ACTION_AGAIN": ACT_AGAIN,
    "ENOMEM": E_NOMEM, "EINVAL": E_INVAL, "PTRS_PER_TABLE": NR,
    "ZERO_PFN": ZERO_PFN, "HUGE_ZERO_PFN": HUGE_ZERO_PFN,
}

cdef size_t SIZE_MAX_ = <size_t>-1
cdef uint64_t PMD_SIZE_ = (<uint64_t>1) << 21
cdef uint64_t PUD_SIZE_ = (<uint64_t>1) << 30
cdef uint64_t P4D_SIZE_ = (<uint64_t>1) << 39

SLOT_NAMES = ("pgd_entry", "p4d_entry", "pud_entry", "pmd_entry", "pte_entry",
              "pte_hole", "hugetlb_entry", "test_walk", "pre_vma", "post_vma",
              "install_pte")


class LockAssertionError(AssertionError):
    """A walk ran without the lock its ``walk_lock`` asks for (the kernel warns)."""


# ---------------------------------------------------------------------------
# The table pool
# ---------------------------------------------------------------------------

cdef inline uint64_t *table_base(pgwalk_pool_t *pool, uint64_t tid) noexcept nogil:
    return pool.slabs[tid // SLAB_TABLES] + (tid % SLAB_TABLES) * PTRS


cdef uint64_t *image_frame(pgwalk_pool_t *pool, uint64_t pfn) noexcept nogil:
    """Frame ``pfn`` of an image pool, or NULL outside the image or in a hole."""
    cdef int64_t lo = 0, hi = pool.nseg - 1, mid
    if pool.nseg == 0:
        if pfn >= pool.image_pages:
            return NULL
        return pool.image_base + pfn * PTRS
    while lo <= hi:                       # the last segment starting at or before pfn
        mid = (lo + hi) // 2
        if pool.seg_pfn[mid] <= pfn:
            lo = mid + 1
        else:
            hi = mid - 1
    if hi < 0 or pfn - pool.seg_pfn[hi] >= pool.seg_pages[hi]:
        return NULL
    return pool.image_base + (pool.seg_file_page[hi] + pfn - pool.seg_pfn[hi]) * PTRS


cdef uint64_t *table_of(pgwalk_pool_t *pool, uint64_t *slot) noexcept nogil:
    """The table a slot links to, or NULL when the link is not a live table
    of this pool owned by exactly this slot (garbage is never followed).  In
    an image pool, any frame of the image is a table, as to the hardware."""
    cdef uint64_t tid = entry_index(slot[0])
    if pool.image_base != NULL:
        return image_frame(pool, tid)
    if tid >= <uint64_t>pool.ntables or pool.owner[tid] != slot:
        return NULL
    return table_base(pool, tid)


cdef inline void bad_entry(pgwalk_pool_t *pool, uint64_t *slot, uint64_t addr) noexcept nogil:
    """A bad entry met by the walker: cleared, as the kernel's *_clear_bad
    does; in a read-only pool left alone and its address recorded."""
    pool.stats.clear_bad += 1
    if not pool.read_only:
        slot[0] = 0
        return
    if pool.nbad < pool.bad_cap:
        pool.bad_addrs[pool.nbad] = addr
    pool.nbad += 1


cdef inline int child_level(int levels, int level) noexcept nogil:
    if levels == 4 and level == L_PGD:
        return L_PUD
    return level + 1


cdef inline int index_at(int levels, int level, uint64_t addr) noexcept nogil:
    if level == L_PGD:
        return (addr >> (39 if levels == 4 else 48)) & 511
    return (addr >> (12 + 9 * (4 - level))) & 511


cdef class PageTables:
    """The page tables of one address space, in a pool of fixed slabs.

    A table is 512 uint64 entries; tables are named by their pool index,
    which is what a table entry stores in its PFN field.  Slabs are never
    moved or freed while the object lives, so a pointer into a table stays
    valid across anything a callback does.
    """

    def __cinit__(self, int levels=4, bint is_init_mm=False, *args, **kwargs):
        if levels != 4 and levels != 5:
            raise ValueError(f"levels must be 4 or 5, not {levels}")
        self.levels = levels
        self.is_init_mm = is_init_mm
        self._slabs = []
        memset(&self.pool, 0, sizeof(pgwalk_pool_t))
        self.pool.mutex = <void *>PyThread_allocate_lock()
        if self.pool.mutex == NULL:
            raise MemoryError()
        self._grow()
        self.pool.ntables = 1                  # id 0 is never handed out
        self.pool.self_obj = <void *>self
        self.pgd_id = pool_take(&self.pool, NULL, L_PGD)
        if self.pgd_id < 0:
            raise MemoryError("cannot allocate the top-level table")
        self.pgd_ptr = table_base(&self.pool, <uint64_t>self.pgd_id)

    def __dealloc__(self):
        free(self.pool.seg_pfn)
        free(self.pool.seg_pages)
        free(self.pool.seg_file_page)
        free(self.pool.bad_addrs)
        free(self.pool.slabs)
        free(self.pool.owner)
        free(self.pool.level)
        free(self.pool.free_ids)
        free(self.pool.fail_at)
        if self.pool.mutex != NULL:
            PyThread_free_lock(<PyThread_type_lock>self.pool.mutex)
        if self._retired is not None:
            for old in self._retired:
                free(<void *><size_t>old)

    cdef int _grow(self) except -1:
        """One more slab.  The per-id arrays grow by doubling into new
        memory; the outgrown ones are kept until the pool goes (a walk
        running without the GIL in another thread, under the read lock,
        may still be reading them while a fault grows the pool).  Runs
        under the pool lock from the check on (two threads may both have
        found the pool full); no Python code runs while it is held."""
        cdef int64_t ncap, i, old_ids
        cdef uint64_t **slabs = NULL
        cdef uint64_t **owner = NULL
        cdef int8_t *lvl = NULL
        cdef int64_t *fids = NULL
        cdef cnp.ndarray slab = np.zeros((SLAB_TABLES, PTRS), dtype=np.uint64)
        cdef size_t r0, r1, r2, r3
        if self._retired is None:
            self._retired = []
        pool_lock(&self.pool)
        if self.pool.nslabs + 1 > self._slab_cap:
            ncap = max(8, 2 * self._slab_cap)
            old_ids = self.pool.nslabs * SLAB_TABLES
            slabs = <uint64_t **>malloc(ncap * sizeof(uint64_t *))
            owner = <uint64_t **>malloc(ncap * SLAB_TABLES * sizeof(uint64_t *))
            lvl = <int8_t *>malloc(ncap * SLAB_TABLES * sizeof(int8_t))
            fids = <int64_t *>malloc(ncap * SLAB_TABLES * sizeof(int64_t))
            if slabs == NULL or owner == NULL or lvl == NULL or fids == NULL:
                pool_unlock(&self.pool)
                free(slabs)
                free(owner)
                free(lvl)
                free(fids)
                raise MemoryError()
            if self.pool.nslabs:
                memcpy(slabs, self.pool.slabs, self.pool.nslabs * sizeof(uint64_t *))
                memcpy(owner, self.pool.owner, old_ids * sizeof(uint64_t *))
                memcpy(lvl, self.pool.level, old_ids * sizeof(int8_t))
                memcpy(fids, self.pool.free_ids, self.pool.nfree * sizeof(int64_t))
            for i in range(old_ids, ncap * SLAB_TABLES):
                owner[i] = NULL
                lvl[i] = -1
            r0 = <size_t>self.pool.slabs
            r1 = <size_t>self.pool.owner
            r2 = <size_t>self.pool.level
            r3 = <size_t>self.pool.free_ids
            self.pool.slabs = slabs
            self.pool.owner = owner
            self.pool.level = lvl
            self.pool.free_ids = fids
            self._slab_cap = ncap
            if r0:                                   # ints: no garbage collection here
                self._retired.append(r0)
                self._retired.append(r1)
                self._retired.append(r2)
                self._retired.append(r3)
        self.pool.slabs[self.pool.nslabs] = <uint64_t *>cnp.PyArray_DATA(slab)
        self._slabs.append(slab)                     # same order as pool.slabs
        self.pool.nslabs += 1
        pool_unlock(&self.pool)
        return 0

    cdef uint64_t *_slot(self, uint64_t addr, int level, bint alloc, int *err) noexcept nogil:
        """The slot for ``addr`` at ``level`` in this mm's tree (pool_slot)."""
        return pool_slot(&self.pool, self.pgd_ptr, self.levels, addr, level, alloc, err)

    # --- Python-level primitives (the process model and the reference walker)
    cdef uint64_t *_live_slot(self, int64_t tid, int idx) except NULL:
        """The slot (tid, idx) of a live table; ValueError otherwise."""
        if tid <= 0 or tid >= self.pool.ntables or self.pool.level[tid] < 0:
            raise ValueError(f"no live table {tid}")
        if idx < 0 or idx >= PTRS:
            raise ValueError(f"slot index {idx} is not in 0..511")
        return table_base(&self.pool, <uint64_t>tid) + idx

    cdef int _new_table_slot(self, uint64_t *slot, int level) except -1:
        if level < L_P4D or level > L_PTE:
            raise ValueError(f"level {level} is not a level a table can be allocated at")
        if table_of(&self.pool, slot) != NULL:
            raise ValueError("the slot already links a table")
        return 0

    def _table(self, int64_t tid):
        """A writable numpy view of table ``tid``'s 512 entries."""
        self._live_slot(tid, 0)
        return self._slabs[tid // SLAB_TABLES][tid % SLAB_TABLES]

    def _table_level(self, int64_t tid):
        self._live_slot(tid, 0)
        return self.pool.level[tid]

    def _child(self, int64_t tid, int idx):
        """Index of the table that slot (tid, idx) links to, or -1."""
        cdef uint64_t *slot = self._live_slot(tid, idx)
        if table_of(&self.pool, slot) == NULL:
            return -1
        return <int64_t>entry_index(slot[0])

    def _alloc(self, int64_t tid, int idx, int level):
        """Counted allocation of a level-``level`` table linked at (tid, idx):
        0, or -ENOMEM when fault injection (or memory) fails it."""
        cdef uint64_t *slot = self._live_slot(tid, idx)
        self._new_table_slot(slot, level)
        return pool_alloc(&self.pool, slot, level)

    def _take_uncounted(self, int64_t tid, int idx, int level):
        """A table linked at (tid, idx) that is not a counted allocation."""
        cdef uint64_t *slot = self._live_slot(tid, idx)
        self._new_table_slot(slot, level)
        cdef int64_t r = pool_take(&self.pool, slot, level)
        if r < 0:
            raise MemoryError("table pool exhausted")
        return r

    def _free_below(self, int64_t tid, int idx, int level):
        """Free the tables below slot (tid, idx), a slot at ``level``, and clear it."""
        cdef uint64_t *slot = self._live_slot(tid, idx)
        if level < L_PGD or level >= L_PTE:
            raise ValueError(f"level {level} holds no table links")
        pool_free_subtree(&self.pool, self.levels, slot, level)

    def _clear_leaf_hook(self, uint64_t old, int level):
        """What the compiled walker's split does after clearing a
        non-anonymous huge leaf: tell the pool's owner (for pgwalk.reference)."""
        if self.pool.on_clear_leaf != NULL:
            self.pool.on_clear_leaf(self.pool.on_clear_ctx, old, level)

    def _stat_inc(self, str name):
        cdef pgwalk_mm_stats_t *s = &self.pool.stats
        if name == "split_pmd":
            s.split_pmd += 1
        elif name == "split_pud":
            s.split_pud += 1
        elif name == "clear_bad":
            s.clear_bad += 1
        elif name == "set_pte_at":
            s.set_pte_at += 1
        elif name == "update_mmu_cache":
            s.update_mmu_cache += 1
        elif name == "pte_map_ok":
            s.pte_map_ok += 1
        elif name == "pte_map_null":
            s.pte_map_null += 1
        else:
            raise KeyError(name)

    def _walk_enter(self):
        """A walk of this tree starts (for walkers written in Python)."""
        self.active_walks += 1

    def _walk_exit(self):
        self.active_walks -= 1

    def _next_alloc_fails(self):
        """Count one allocation attempt; True if fault injection fails it."""
        return alloc_attempt_fails(&self.pool)

    def _locate(self, uint64_t addr, int level, bint alloc):
        """(table id, index) of the slot for ``addr`` at ``level``, or None."""
        cdef int err = 0
        if self.pool.image_base != NULL:
            raise PermissionError("the tables of a physical-memory image are read only "
                                  "and not editable through the mm")
        cdef uint64_t *slot = self._slot(addr, level, alloc, &err)
        if err == -E_NOMEM:
            raise OSError(E_NOMEM, "page-table allocation failed")
        if err < 0:
            raise ValueError(f"address {addr:#x}: a non-table entry above level {level} blocks the way")
        if slot == NULL:
            return None
        return self._slot_location(slot)

    cdef tuple _slot_location(self, uint64_t *slot):
        cdef int64_t s
        cdef uint64_t off
        for s in range(self.pool.nslabs):
            if slot >= self.pool.slabs[s] and slot < self.pool.slabs[s] + SLAB_TABLES * PTRS:
                off = slot - self.pool.slabs[s]
                return (s * SLAB_TABLES + <int64_t>(off // PTRS), <int>(off % PTRS))
        raise AssertionError("slot outside the pool")

    @property
    def stats(self):
        """Counters: tables allocated/freed by level, failed allocations,
        splits, bad entries cleared, PTEs installed (dict of ints)."""
        cdef pgwalk_mm_stats_t *s = &self.pool.stats
        names = ("pgd", "p4d", "pud", "pmd", "pte")
        return {
            "alloc": {names[i]: s.alloc[i] for i in range(1, 5)},
            "freed": {names[i]: s.freed[i] for i in range(1, 5)},
            "alloc_failed": s.alloc_failed,
            "split_pmd": s.split_pmd, "split_pud": s.split_pud,
            "clear_bad": s.clear_bad, "set_pte_at": s.set_pte_at,
            "update_mmu_cache": s.update_mmu_cache,
            "pte_map_ok": s.pte_map_ok, "pte_map_null": s.pte_map_null,
            "tables": self.pool.live,
        }

    @property
    def nr_tables(self):
        """Live tables, the top-level one included."""
        return self.pool.live

    def _attach_image(self, cnp.ndarray frames not None, uint64_t root_pfn, segments=(),
                      int64_t bad_cap=65536):
        """Make this a read-only image pool over ``frames`` (a C-contiguous
        uint64 array, 512 entries per frame; the caller keeps it alive):
        frame ``pfn`` is ``frames[pfn]`` for a flat image, or found through
        ``segments`` = sorted (first pfn, frames, first row in ``frames``)."""
        cdef int64_t i, n = len(segments)
        if frames.dtype != np.uint64 or not frames.flags.c_contiguous:
            raise ValueError("frames must be a C-contiguous uint64 array")
        self.pool.image_base = <uint64_t *>cnp.PyArray_DATA(frames)
        self.pool.image_pages = frames.size // PTRS
        if n:
            self.pool.seg_pfn = <uint64_t *>malloc(n * sizeof(uint64_t))
            self.pool.seg_pages = <uint64_t *>malloc(n * sizeof(uint64_t))
            self.pool.seg_file_page = <uint64_t *>malloc(n * sizeof(uint64_t))
            if not (self.pool.seg_pfn and self.pool.seg_pages and self.pool.seg_file_page):
                raise MemoryError()
            for i, (pfn, pages, row) in enumerate(segments):
                if row + pages > self.pool.image_pages:
                    raise ValueError(f"segment {i} runs past the mapped frames")
                self.pool.seg_pfn[i] = pfn
                self.pool.seg_pages[i] = pages
                self.pool.seg_file_page[i] = row
            self.pool.nseg = n
        self.pool.read_only = 1
        self.pool.bad_cap = bad_cap
        self.pool.bad_addrs = <uint64_t *>malloc(bad_cap * sizeof(uint64_t))
        if self.pool.bad_addrs == NULL:
            raise MemoryError()
        root = image_frame(&self.pool, root_pfn)
        if root == NULL:
            raise ValueError(f"the root table (frame {root_pfn:#x}) is not in the image")
        self.pgd_ptr = root

    @property
    def bad_entries(self):
        """Bad entries the walks met in a read-only image: (count, the first
        addresses, as a uint64 array)."""
        cdef int64_t n = min(self.pool.nbad, self.pool.bad_cap)
        out = np.empty(n, dtype=np.uint64)
        cdef int64_t i
        for i in range(n):
            out[i] = self.pool.bad_addrs[i]
        return self.pool.nbad, out

    def fail_table_alloc(self, at=()):
        """Make the k-th page-table allocation from now on fail (1-based,
        every k in ``at``), as the kernel's fault injection would."""
        if isinstance(at, (str, bytes)) or not hasattr(at, "__iter__"):
            raise TypeError(f"at must be an iterable of allocation numbers, not {type(at).__name__}")
        for k in at:
            if not isinstance(k, int) or isinstance(k, bool):
                raise TypeError(f"at: allocation numbers must be ints, not {type(k).__name__}")
        ks = sorted({int(k) for k in at})
        if any(k < 1 or k >= 1 << 63 for k in ks):
            raise ValueError("at: allocation numbers are 1-based and below 2**63")
        free(self.pool.fail_at)
        self.pool.fail_at = NULL
        self.pool.nfail = 0
        self.pool.alloc_seq = 0
        if ks:
            self.pool.fail_at = <int64_t *>malloc(len(ks) * sizeof(int64_t))
            if self.pool.fail_at == NULL:
                raise MemoryError()
            for i, k in enumerate(ks):
                self.pool.fail_at[i] = k
            self.pool.nfail = len(ks)

    def _validate_tables(self):
        """Structural check of the tree and of the pool that holds it;
        returns a message naming the first broken invariant, or None.

        Checked: the top-level table is the pool's level-0 table with no
        owner slot; every link the walker follows leads to a table of the
        child level; every live table is reached.  A table is reached only
        from its owner slot (``table_of`` follows nothing else), so no table
        is reachable from two parents; a second slot linking it is garbage
        that the walkers do not follow (decision 5), which ``MM.validate``
        refuses in process-model mms.  The pool's accounting is exact (live + free ids
        cover [1, ntables), each free id once, owner-less, levelless and
        zeroed, so ``pool_take`` hands out clean tables); the live tables per
        level agree with the allocation counters (``alloc - freed``; PTE
        tables may also come uncounted from a THP split, at most one per
        ``split_pmd``).  Image tables are not ours to hold to invariants:
        their bad entries are reported by the walks."""
        cdef int64_t reached = 0
        cdef int64_t tid, n = self.pool.ntables
        cdef uint8_t *seen
        cdef uint64_t *owner
        if self.pool.image_base != NULL:
            return None
        msg = _check_pool(self)
        if msg is not None:
            return msg
        seen = <uint8_t *>malloc(n)
        if seen == NULL:
            raise MemoryError()
        try:
            memset(seen, 0, n)
            seen[self.pgd_id] = 1
            msg = _check_tree(self, self.pgd_ptr, L_PGD, &reached, seen)
            if msg is not None:
                return msg
            if reached != self.pool.live:
                for tid in range(1, n):
                    if self.pool.level[tid] >= 0 and not seen[tid]:
                        owner = self.pool.owner[tid]
                        if owner == NULL or owner[0] == 0 or entry_index(owner[0]) != <uint64_t>tid:
                            return (f"table {tid} (level {self.pool.level[tid]}) is not linked "
                                    "from its owner slot")
                        return (f"table {tid} (level {self.pool.level[tid]}) is linked from "
                                "a slot that is not in the tree")
                return f"{self.pool.live - reached} live table(s) unreachable from the top level"
        finally:
            free(seen)
        return _check_counters(self)

    cdef object _check_table(self, uint64_t *tbl, int level, int64_t *reached):
        return _check_tree(self, tbl, level, reached, NULL)

    def _pool_poke(self, str what, int64_t tid=0, int64_t value=0):
        """Corrupt the pool's bookkeeping on purpose, for the tests that
        prove each check of ``_validate_tables`` can fail.  Never call it
        otherwise: the pool is left broken."""
        if what.startswith("stat_"):
            names = {"stat_alloc": self.pool.stats.alloc, "stat_freed": self.pool.stats.freed}
            if what not in names or not 0 <= tid < 5:
                raise KeyError(what)
            if what == "stat_alloc":
                self.pool.stats.alloc[tid] += value
            else:
                self.pool.stats.freed[tid] += value
            return
        if what == "live":
            self.pool.live += value
            return
        if what == "ntables":
            self.pool.ntables += value
            return
        if what == "push_free":             # list ``tid`` (any number) among the free ids
            if self.pool.nfree >= self.pool.nslabs * SLAB_TABLES:
                raise ValueError("the free list is full")
            self.pool.free_ids[self.pool.nfree] = tid
            self.pool.nfree += 1
            return
        if tid <= 0 or tid >= self.pool.ntables:
            raise ValueError(f"no table {tid}")
        if what == "level":
            self.pool.level[tid] = <int8_t>value
        elif what == "owner_null":
            self.pool.owner[tid] = NULL
        elif what == "owner_of":             # make ``tid`` owned by the owner slot of ``value``
            self.pool.owner[tid] = self.pool.owner[value]
        elif what == "free_word":            # write into a table (free ones included)
            table_base(&self.pool, <uint64_t>tid)[0] = <uint64_t>value
        else:
            raise KeyError(what)


cdef object _check_tree(PageTables pt, uint64_t *tbl, int level, int64_t *reached, uint8_t *seen):
    """Depth-first over the links the walker would follow from ``tbl`` (a
    table at ``level``): the child level of each; ``seen`` marks the tables
    reached."""
    cdef int i, cl
    cdef uint64_t *child
    cdef uint64_t tid
    cdef pgwalk_pool_t *pool = &pt.pool
    reached[0] += 1
    if level >= L_PTE:
        return None
    cl = child_level(pt.levels, level)
    for i in range(PTRS):
        if tbl[i] == 0:
            continue
        child = table_of(pool, &tbl[i])
        if child == NULL:
            continue
        tid = entry_index(tbl[i])
        if pool.level[tid] != cl:
            return f"table {tid} linked at level {level} holds level {pool.level[tid]}, expected {cl}"
        if seen != NULL:
            seen[tid] = 1
        msg = _check_tree(pt, child, cl, reached, seen)
        if msg is not None:
            return msg
    return None


cdef object _check_pool(PageTables pt):
    """The pool's accounting: ids, free list, owners, levels."""
    cdef pgwalk_pool_t *pool = &pt.pool
    cdef int64_t tid, k, n = pool.ntables, top = 0
    cdef int j
    cdef int lvl
    cdef uint64_t *t
    cdef uint8_t *free_seen
    if n < 1 or n > pool.nslabs * SLAB_TABLES:
        return f"pool: {n} table ids for {pool.nslabs} slab(s)"
    if pool.nfree < 0 or pool.nfree > n - 1:
        return f"pool: {pool.nfree} free ids among {n - 1}"
    if pool.live + pool.nfree != n - 1:
        return (f"pool: {pool.live} live + {pool.nfree} free tables, but ids 1..{n - 1} "
                "were handed out")
    if pt.pgd_id <= 0 or pt.pgd_id >= n or pool.level[pt.pgd_id] != L_PGD or pool.owner[pt.pgd_id] != NULL:
        return f"the top-level table {pt.pgd_id} is not the pool's owner-less level-0 table"
    free_seen = <uint8_t *>malloc(n)
    if free_seen == NULL:
        raise MemoryError()
    try:
        memset(free_seen, 0, n)
        for k in range(pool.nfree):
            tid = pool.free_ids[k]
            if tid <= 0 or tid >= n:
                return f"pool: free id {tid} was never handed out"
            if free_seen[tid]:
                return f"pool: table {tid} is on the free list twice"
            free_seen[tid] = 1
            if pool.level[tid] != -1 or pool.owner[tid] != NULL:
                return f"pool: free table {tid} still has a level or an owner slot"
            t = table_base(pool, <uint64_t>tid)
            for j in range(PTRS):
                if t[j] != 0:
                    return f"pool: free table {tid} is not zeroed (entry {j} = {t[j]:#x})"
        for tid in range(1, n):
            if free_seen[tid]:
                continue
            lvl = pool.level[tid]
            if lvl < L_PGD or lvl > L_PTE or (lvl == L_P4D and pt.levels == 4):
                return f"pool: table {tid} is neither free nor of a level of this mm (level {lvl})"
            if lvl == L_PGD:
                top += 1
            elif pool.owner[tid] == NULL:
                return f"pool: live table {tid} (level {lvl}) has no owner slot"
        if top != 1:
            return f"pool: {top} top-level tables"
    finally:
        free(free_seen)
    return None


cdef object _check_counters(PageTables pt):
    """Live tables per level against the mm's allocation counters."""
    cdef pgwalk_pool_t *pool = &pt.pool
    cdef int64_t live[5]
    cdef int64_t tid, net
    cdef int lvl
    memset(live, 0, sizeof(live))
    for tid in range(1, pool.ntables):
        if pool.level[tid] >= 0:
            live[pool.level[tid]] += 1
    if pool.stats.alloc[L_PGD] != 0 or pool.stats.freed[L_PGD] != 0:
        return "counters: the top-level table was counted as allocated or freed"
    for lvl in range(L_P4D, L_PTE + 1):
        net = pool.stats.alloc[lvl] - pool.stats.freed[lvl]
        if lvl < L_PTE and live[lvl] != net:
            return (f"counters: {live[lvl]} live level-{lvl} tables, but allocated - freed "
                    f"= {net}")
        if lvl == L_PTE and not (net <= live[lvl] <= net + pool.stats.split_pmd):
            return (f"counters: {live[lvl]} live PTE tables, outside allocated - freed = {net} "
                    f"plus at most {pool.stats.split_pmd} deposited by THP splits")
    return None


cdef bint alloc_attempt_fails(pgwalk_pool_t *pool) noexcept nogil:
    cdef int64_t i
    pool.alloc_seq += 1
    for i in range(pool.nfail):
        if pool.fail_at[i] == pool.alloc_seq:
            pool.stats.alloc_failed += 1
            return True
    return False


cdef uint64_t *pool_slot(pgwalk_pool_t *pool, uint64_t *pgd, int levels, uint64_t addr,
                         int level, bint alloc, int *err) noexcept nogil:
    """The slot for ``addr`` at ``level`` in the tree under ``pgd``; with
    ``alloc`` the missing tables above it are allocated (counted, as
    __pud_alloc and friends).  NULL with *err 0: the chain is missing; NULL
    with *err < 0: allocation failed (-ENOMEM) or a non-table blocks (-EEXIST)."""
    cdef uint64_t *slot = pgd + index_at(levels, L_PGD, addr)
    cdef uint64_t *tbl
    cdef int lvl = L_PGD, cl
    err[0] = 0
    if levels == 4 and level == L_P4D:
        level = L_PGD
    while lvl < level:
        cl = child_level(levels, lvl)
        tbl = table_of(pool, slot)
        if tbl == NULL:
            if not alloc:
                return NULL
            if not pte_none(slot[0]):
                err[0] = -17              # EEXIST: something else is there
                return NULL
            if pool_alloc(pool, slot, cl) < 0:
                err[0] = -E_NOMEM
                return NULL
            tbl = table_of(pool, slot)
        slot = tbl + index_at(levels, cl, addr)
        lvl = cl
    return slot


cdef int _pool_grow(pgwalk_pool_t *pool) noexcept with gil:
    try:
        (<PageTables>pool.self_obj)._grow()
    except MemoryError:
        return -E_NOMEM
    return 0


cdef inline void pool_lock(pgwalk_pool_t *pool) noexcept nogil:
    """Taking, freeing and splitting tables may happen in several threads at
    once (walks under the read lock split THPs and run install_pte, without
    the GIL).  Rule: nothing waits for the GIL while holding this lock, so
    a thread holding the GIL may block on it."""
    if pool.mutex != NULL:
        PyThread_acquire_lock(<PyThread_type_lock>pool.mutex, WAIT_LOCK)


cdef inline void pool_unlock(pgwalk_pool_t *pool) noexcept nogil:
    if pool.mutex != NULL:
        PyThread_release_lock(<PyThread_type_lock>pool.mutex)


cdef int64_t _take_locked(pgwalk_pool_t *pool, uint64_t *owner_slot, int level) noexcept nogil:
    """pool_take with the pool lock held; -2 when the pool must grow first."""
    cdef int64_t tid
    if pool.nfree > 0:
        pool.nfree -= 1
        tid = pool.free_ids[pool.nfree]
    else:
        if pool.ntables >= pool.nslabs * SLAB_TABLES:
            return -2
        tid = pool.ntables
        pool.ntables += 1
    pool.owner[tid] = owner_slot
    pool.level[tid] = level
    pool.live += 1
    if owner_slot != NULL:
        owner_slot[0] = mk_table(<uint64_t>tid)
    return tid


cdef int64_t pool_take(pgwalk_pool_t *pool, uint64_t *owner_slot, int level) noexcept nogil:
    """Hand out a zeroed table linked from ``owner_slot`` (not counted as an
    allocation: the THP split uses this for the deposited table)."""
    cdef int64_t tid
    while True:
        pool_lock(pool)
        tid = _take_locked(pool, owner_slot, level)
        pool_unlock(pool)
        if tid != -2:
            return tid
        if _pool_grow(pool) < 0:                # the GIL, without the pool lock
            return -E_NOMEM


cdef void pool_free_table(pgwalk_pool_t *pool, int64_t tid) noexcept nogil:
    memset(table_base(pool, <uint64_t>tid), 0, PTRS * sizeof(uint64_t))
    pool_lock(pool)
    pool.stats.freed[pool.level[tid]] += 1
    pool.owner[tid] = NULL
    pool.level[tid] = -1
    pool.free_ids[pool.nfree] = tid
    pool.nfree += 1
    pool.live -= 1
    pool_unlock(pool)


cdef void pool_free_subtree(pgwalk_pool_t *pool, int levels, uint64_t *slot, int level) noexcept nogil:
    """Free every table below ``slot`` (a slot at ``level``) and clear it."""
    cdef uint64_t *tbl = table_of(pool, slot)
    cdef int i, cl
    if tbl != NULL:
        cl = child_level(levels, level)
        if cl < L_PTE:
            for i in range(PTRS):
                if tbl[i] != 0:
                    pool_free_subtree(pool, levels, &tbl[i], cl)
        pool_free_table(pool, <int64_t>entry_index(slot[0]))
    slot[0] = 0


cdef int pool_alloc(pgwalk_pool_t *pool, uint64_t *slot, int level) noexcept nogil:
    """A counted page-table allocation (__pud_alloc and friends): subject to
    fault injection; links the new table into ``slot``.  A table another
    thread linked there meanwhile is kept (as the kernel re-checks under
    the page table lock) and nothing is counted."""
    cdef int64_t tid
    pool_lock(pool)
    if table_of(pool, slot) != NULL:
        pool_unlock(pool)
        return 0
    if alloc_attempt_fails(pool):
        pool_unlock(pool)
        return -E_NOMEM
    while True:
        tid = _take_locked(pool, slot, level)
        if tid != -2:
            break
        pool_unlock(pool)
        if _pool_grow(pool) < 0:
            return -E_NOMEM
        pool_lock(pool)
        if table_of(pool, slot) != NULL:
            pool_unlock(pool)
            return 0
    pool.stats.alloc[level] += 1
    pool_unlock(pool)
    return 0


cdef class PageTable:
    """One table of an address space: ``int(t[i])`` reads entry i;
    ``np.asarray(t)`` is a writable view of its 512 entries."""
    cdef readonly PageTables tables
    cdef readonly int64_t index
    cdef readonly int level

    def __init__(self, PageTables tables not None, int64_t index, int level):
        if level < L_PGD or level > L_PTE:
            raise ValueError(f"level must be 0..4, not {level}")
        tables._live_slot(index, 0)
        self.tables = tables
        self.index = index
        self.level = level

    @property
    def entries(self):
        return self.tables._table(self.index)

    def __array__(self, dtype=None, copy=None):
        a = self.tables._table(self.index)
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError("a PageTable is uint64: it cannot be viewed as another dtype without a copy")
            return a.astype(dtype)
        return a.copy() if copy else a

    def __len__(self):
        return PTRS

    def __getitem__(self, i):
        return int(self.tables._table(self.index)[i])

    def __repr__(self):
        return f"<PageTable {('pgd', 'p4d', 'pud', 'pmd', 'pte')[self.level]} #{self.index}>"


# ---------------------------------------------------------------------------
# C callbacks (the tiers below plain Python)
# ---------------------------------------------------------------------------

SIGNATURES = {
    "entry": "int (uint64_t *, uint64_t, uint64_t, pgwalk_walk_t *, void *)",
    "hole": "int (uint64_t, uint64_t, int, pgwalk_walk_t *, void *)",
    "hugetlb": "int (uint64_t *, uint64_t, uint64_t, uint64_t, pgwalk_walk_t *, void *)",
    "range": "int (uint64_t, uint64_t, pgwalk_walk_t *, void *)",
    "post": "void (pgwalk_walk_t *, void *)",
    "install": "int (uint64_t, uint64_t, uint64_t *, pgwalk_walk_t *, void *)",
    "batch": "int (uint64_t *, int, uint64_t, uint64_t, pgwalk_walk_t *, void *)",
}
SLOT_KINDS = {
    "pgd_entry": "entry", "p4d_entry": "entry", "pud_entry": "entry",
    "pmd_entry": "entry", "pte_entry": "entry", "pte_hole": "hole",
    "hugetlb_entry": "hugetlb", "test_walk": "range", "pre_vma": "range",
    "post_vma": "post", "install_pte": "install",
}


cdef class CFunc:
    """A C function in an ops slot (built-in ops, Cython users' functions,
    low-level callables).  Made from C with ``make_cfunc``; from Python,
    through ``pgwalk.LowLevelCallable``."""

    def __init__(self):
        raise TypeError("CFunc objects are made by C code or pgwalk.LowLevelCallable")

    @property
    def signature(self):
        return SIGNATURES[self.kind]

    @property
    def address(self):
        return <size_t>self.fn

    def __repr__(self):
        return f"<CFunc {self.kind} {self.signature} at {<size_t>self.fn:#x}>"


cdef CFunc make_cfunc(void *fn, void *ctx, str kind, object owner):
    if kind not in SIGNATURES:
        raise ValueError(f"kind must be one of {sorted(SIGNATURES)}")
    if fn == NULL:
        raise ValueError("NULL function pointer")
    cdef CFunc f = CFunc.__new__(CFunc)
    f.fn = fn
    f.ctx = ctx
    f.kind = kind
    f.owner = owner
    return f


def _cfunc_from_address(size_t fn, size_t ctx, str kind, object owner):
    """A CFunc for a raw function address (what LowLevelCallable unpacks)."""
    return make_cfunc(<void *>fn, <void *>ctx, kind, owner)


def check_slot(str name, object value):
    """Raise unless ``value`` may sit in slot ``name`` (None, a Python
    callable, a CFunc of the slot's signature, or an object that carries one
    as ``__pgwalk_cfunc__``, such as a LowLevelCallable)."""
    value = getattr(value, "__pgwalk_cfunc__", value)
    if isinstance(value, Batch):
        inner = getattr(value.fn, "__pgwalk_cfunc__", value.fn)
        if name == "hugetlb_entry" and isinstance(inner, CFunc):
            raise ValueError("hugetlb_entry: a batch there is Python only "
                             "(fn(entries, hmask, addr, next, walk)); use a per-entry C function")
        if isinstance(inner, CFunc):
            want = "batch" if SLOT_KINDS[name] in ("entry", "install") else SLOT_KINDS[name]
            if (<CFunc>inner).kind != want:
                raise ValueError(f"{name}: batch() of a C function needs signature "
                                 f"{SIGNATURES[want]!r}, not {(<CFunc>inner).signature!r}")
        return
    if isinstance(value, CFunc):
        want = SLOT_KINDS[name]
        if want in ("entry", "install") and (<CFunc>value).kind == "batch":
            return
        if (<CFunc>value).kind != want:
            raise ValueError(f"{name} takes a C function of signature {SIGNATURES[want]!r}, "
                             f"not {(<CFunc>value).signature!r}")
        return
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")


class Batch:
    """``pgwalk.batch(fn)``: one call per run instead of one per entry.
    Entry slots: ``fn(entries, addr, next, walk)`` per contiguous run of
    slots of one table (``entries`` a numpy uint64 array of the slots; at
    PTE level a writable copy whose changed slots are stored on return).  install_pte: ``fn(ptes, addr, next, walk)`` per
    run of none PTE slots, ``ptes`` zeroed scratch stored on return 0.
    pte_hole: ``fn(addr, next, depth, walk)`` per run of holes of one table
    at one depth.  hugetlb_entry (Python only): ``fn(entries, hmask, addr,
    next, walk)`` per run of huge pages in one table, ``entries`` read only.
    Per-VMA slots (test_walk, pre_vma, post_vma): called as ``fn`` itself,
    once per VMA.  See docs/decisions.md 14 and 18."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        if not callable(fn) and not isinstance(getattr(fn, "__pgwalk_cfunc__", fn), CFunc):
            raise TypeError(f"batch() needs a callable or a C function, not {type(fn).__name__}")
        self.fn = fn

    def __repr__(self):
        return f"batch({self.fn!r})"


def batch(fn):
    """Wrap ``fn`` (a Python callable, or a C function of the slot's batch
    signature) as a batched callback; see ``Batch`` for each slot."""
    return Batch(fn)


class WalkStats:
    """What one walk did, filled when passed as ``stats=`` to an entry point:
    ``calls`` per slot, ``tables`` visited per level, ``entries`` visited,
    and the mm counters' change (``alloc``, ``split_pmd``, ``split_pud``...)."""

    def __init__(self):
        self.calls = {}
        self.tables = {}
        self.entries = 0
        self.indirect_calls = 0
        self.mm = {}

    def __repr__(self):
        return (f"WalkStats(indirect_calls={self.indirect_calls}, entries={self.entries}, "
                f"calls={self.calls}, tables={self.tables}, mm={self.mm})")


# ---------------------------------------------------------------------------
# The walk state
# ---------------------------------------------------------------------------

cdef struct WalkCtx:
    pgwalk_walk_t w               # first member: a WalkCtx* is a pgwalk_walk_t*
    pgwalk_ops_t ops
    pgwalk_pool_t *pool           # pool of the tree being walked
    void *pt                      # its PageTables (borrowed)
    uint64_t *pgd                 # top-level table walked
    uint64_t task_size
    int is_init_mm
    int vma_anon
    int64_t budget                # entries until the next Ctrl-C check
    int64_t calls[12]             # slot calls (SLOT_NAMES order; 11 = batches)
    int64_t tables[5]             # tables visited, by level
    int64_t entries               # slots visited
    uint8_t *inline_vec           # benchmark baseline: mincore inlined in the PTE loop
    uint64_t inline_start         # ...its first page's address
    uint64_t inline_n             # ...and its length in pages
    int main_thread               # the walk runs on Python's main thread
    uint64_t *refused_pmd         # the PMD pte_offset_map last refused...
    uint64_t refused_val          # ...its value then...
    int refusals                  # ...and how many times in a row
    int64_t pte_map_ok            # pte_offset_map successes of a C-only walk, added
                                  # to the pool's stats at every tick and at the end
                                  # (no shared cache line written per table by
                                  # concurrent walks); Python walks count directly
    int py_slots                  # some slot runs Python (it may read mm.stats)
    uint64_t *iscratch            # a batched install_pte's scratch (512 slots)
    uint64_t hmask                # the hugetlb range being walked: its page mask
    int ph_on                     # a batched pte_hole's pending run...
    int ph_depth
    uint64_t ph_start
    uint64_t ph_end


# where a PTE batch's snapshot sits in its scratch: not 4 KiB after the
# working copy, whose loads would alias it
cdef enum:
    SNAP_AT = 520


cdef class EntryRef:
    """A reference to a live table slot, valid only during the callback that
    received it (like a kernel ``pte_t *`` under its lock)."""
    cdef uint64_t *ptr
    cdef readonly int level
    cdef PageTables pt

    cdef inline uint64_t _get(self) except? 0:
        if self.ptr == NULL:
            raise RuntimeError("entry reference used outside its callback")
        return self.ptr[0]

    @property
    def val(self):
        return self._get()

    def __int__(self):
        return self._get()

    def __index__(self):
        return self._get()

    def __eq__(self, other):
        if isinstance(other, EntryRef):
            return self._get() == (<EntryRef>other)._get()
        if isinstance(other, int):
            return self._get() == other
        return NotImplemented

    def __hash__(self):
        return hash(self._get())

    def set(self, value):
        """Write the live slot.  Above PTE level a slot that links a table,
        or a value that would, is refused (spec 8.3: a callback may not
        restructure the tree through an entry reference)."""
        cdef uint64_t v = _u64(value, "value")
        cdef uint64_t old = self._get()
        if self.pt is not None and self.pt.pool.read_only:
            raise PermissionError("entry.set: the page tables of a read-only image cannot be written")
        if self.level < L_PTE and v != old and self.pt is not None:
            if table_of(&self.pt.pool, self.ptr) != NULL:
                raise ValueError("entry.set: this slot links a page table; "
                                 "a callback may not unlink tables (pgwalk decision 8.3)")
        self.ptr[0] = v

    def __repr__(self):
        if self.ptr == NULL:
            return "<EntryRef (expired)>"
        return f"<EntryRef {('pgd', 'p4d', 'pud', 'pmd', 'pte')[self.level]} {self.ptr[0]:#018x}>"


cdef class Scratch:
    """The ``ptep`` handed to ``install_pte``: a scratch value, not the live
    slot; what it holds when the callback returns 0 is stored (starts 0)."""
    cdef uint64_t *ptr

    @property
    def val(self):
        if self.ptr == NULL:
            raise RuntimeError("ptep used outside install_pte")
        return self.ptr[0]

    def __int__(self):
        return self.val

    def __index__(self):
        return self.val

    def set(self, value):
        if self.ptr == NULL:
            raise RuntimeError("ptep used outside install_pte")
        self.ptr[0] = _u64(value, "value")


cdef uint64_t _u64(object value, str name) except? 0:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"{name} must fit in 64 bits: {value:#x}")
    return <uint64_t>value


cdef class MMWalk:
    """The ``struct mm_walk`` a callback receives: ``mm, vma, pgd, private,
    ops, no_vma`` and the settable ``action``."""
    cdef WalkCtx c
    cdef readonly object mm
    cdef readonly object vma
    cdef readonly object pgd
    cdef readonly object ops
    cdef public object private
    cdef object _exc
    cdef list _refs
    cdef Scratch _scratch
    cdef tuple _keep
    cdef object _iscratch           # a batched install_pte's scratch (numpy, 512 slots)
    cdef object _bscratch           # a batched pte_entry's copy and snapshot (numpy)
    cdef bint _py_slots             # some slot calls Python: walk holding the GIL
    cdef pgw_boxes _boxes           # addr/next as Python ints, reused (_pyint.h)

    def __dealloc__(self):
        pgw_boxes_clear(&self._boxes)

    @property
    def action(self):
        return self.c.w.action

    @action.setter
    def action(self, value):
        if not isinstance(value, int) or isinstance(value, bool) or value not in (ACT_SUBTREE, ACT_CONTINUE, ACT_AGAIN):
            raise ValueError("walk.action must be ACTION_SUBTREE, ACTION_CONTINUE or ACTION_AGAIN")
        self.c.w.action = value

    @property
    def no_vma(self):
        return bool(self.c.w.no_vma)

    def __repr__(self):
        return f"<MMWalk vma={self.vma!r} action={self.c.w.action} no_vma={self.no_vma}>"

    cdef object _batch_scratch(self):
        """The copy a PTE batch's view shows, one per walk: a view kept
        beyond its call aliases it (a write through it lands in the run being
        handed over then, or, after the walk, nowhere); it never reaches a
        table directly."""
        if self._bscratch is None:
            self._bscratch = np.empty(SNAP_AT + 512, dtype=np.uint64)
        return self._bscratch

    cdef inline int _park(self, object exc):
        if self._exc is None:
            self._exc = exc
        return PGWALK_EXC

    cdef inline EntryRef _ref(self, int level):
        cdef EntryRef ref = <EntryRef>self._refs[level]
        if Py_REFCNT(ref) > 2:       # a callback kept the last one: hand out a fresh one
            ref = EntryRef.__new__(EntryRef)
            ref.level = level
            ref.pt = <PageTables>self.c.pt
            self._refs[level] = ref
        return ref

    cdef inline PyObject *_ref_borrowed(self, int level) noexcept:
        """_ref as a borrowed pointer (the list keeps it), for the hot path;
        NULL with an exception set if a fresh one could not be made."""
        cdef PyObject *p = PyList_GET_ITEM_p(self._refs, level)
        if Py_REFCNT_p(p) == 1:
            return p
        try:
            self._ref(level)
        except BaseException:
            return NULL
        return PyList_GET_ITEM_p(self._refs, level)


cdef inline int _ret(object r, int slot) except? -1:
    """A callback's return value as a C int (an int, or an integer such as a
    numpy integer: anything with ``__index__``)."""
    cdef long v
    cdef int overflow = 0
    if type(r) is int:
        # the common case, without Python-level comparisons
        v = PyLong_AsLongAndOverflow(r, &overflow)
        if overflow == 0 and INT_MIN <= v <= INT_MAX:
            return <int>v
    else:
        if r is None or not hasattr(type(r), "__index__"):
            raise TypeError(f"{SLOT_NAMES[slot]} must return an int, not {type(r).__name__}")
        r = r.__index__()
    if r > INT_MAX or r < INT_MIN:
        raise OverflowError(f"{SLOT_NAMES[slot]} returned {r}, which does not fit in a C int")
    return <int>r


# --- Python trampolines (tier: plain Python callables) ---------------------
#
# A walk with any Python slot runs holding the GIL (see _run_tables), so the
# trampolines call Python directly instead of re-acquiring the GIL on every
# callback; their addresses go into the nogil-typed slots through a cast.

cdef int _py_entry(uint64_t *entry, uint64_t addr, uint64_t next,
                   pgwalk_walk_t *w, void *ctx, int level) noexcept:
    # The hot path of the plain Python tier, kept free of Python-level
    # try/except (whose entry saves and restores the exception state on
    # every call): errors are fetched and parked by _park_pending.
    # Borrowed pointers throughout: the walk outlives the call and owns
    # the entry reference and the boxed ints.
    cdef PyObject *walk = <PyObject *>w.pywalk
    cdef PyObject *ref = (<MMWalk>walk)._ref_borrowed(level)
    cdef PyObject *args[4]
    cdef PyObject *r
    if ref == NULL:
        return _park_pending(<MMWalk>walk)
    # one slot's ``next`` is the following slot's ``addr``: boxed once, in
    # an int the walk rewrites when no one else holds it (_pyint.h)
    if pgw_boxes_pair_p(&(<MMWalk>walk)._boxes, addr, next, &args[1], &args[2]) < 0:
        return _park_pending(<MMWalk>walk)
    args[0] = ref
    args[3] = walk
    (<EntryRef>ref).ptr = entry
    r = PyObject_Vectorcall_p(<PyObject *>ctx, args, 4, NULL)
    (<EntryRef>ref).ptr = NULL
    if r == NULL:
        return _park_pending(<MMWalk>walk)
    return _ret_owned(r, level, <MMWalk>walk)


cdef int _park_pending(MMWalk walk) noexcept:
    """Park the exception being raised (a callback's) in the walk."""
    cdef PyObject *t
    cdef PyObject *v
    cdef PyObject *tb
    PyErr_Fetch(&t, &v, &tb)
    PyErr_NormalizeException(&t, &v, &tb)
    if v == NULL:
        exc = SystemError("a Python callback failed without an exception")
    else:
        if tb != NULL:
            PyException_SetTraceback(v, tb)
        exc = <object>v
    Py_XDECREF(t)
    Py_XDECREF(v)
    Py_XDECREF(tb)
    return walk._park(exc)


cdef inline int _ret_owned(PyObject *r, int slot, MMWalk walk) noexcept:
    """_ret for a new reference from a call, which it releases."""
    cdef long v
    cdef int overflow = 0
    if PyLong_CheckExact_p(r):
        v = PyLong_AsLongAndOverflow_p(r, &overflow)
        if overflow == 0 and INT_MIN <= v <= INT_MAX:
            Py_DECREF_p(r)
            return <int>v
    return _ret_slow(r, slot, walk)


cdef int _ret_slow(PyObject *r, int slot, MMWalk walk) noexcept:
    obj = <object>r
    Py_DECREF_p(r)
    try:
        return _ret(obj, slot)
    except BaseException as e:
        return walk._park(e)

cdef int _py_pgd(uint64_t *e, uint64_t a, uint64_t n, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_entry(e, a, n, w, ctx, L_PGD)

cdef int _py_p4d(uint64_t *e, uint64_t a, uint64_t n, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_entry(e, a, n, w, ctx, L_P4D)

cdef int _py_pud(uint64_t *e, uint64_t a, uint64_t n, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_entry(e, a, n, w, ctx, L_PUD)

cdef int _py_pmd(uint64_t *e, uint64_t a, uint64_t n, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_entry(e, a, n, w, ctx, L_PMD)

cdef int _py_pte(uint64_t *e, uint64_t a, uint64_t n, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_entry(e, a, n, w, ctx, L_PTE)

cdef int _py_hole(uint64_t addr, uint64_t next, int depth, pgwalk_walk_t *w, void *ctx) noexcept:
    cdef MMWalk walk = <MMWalk>w.pywalk
    try:
        return _ret((<object>ctx)(addr, next, depth, walk), 5)
    except BaseException as e:
        return walk._park(e)

cdef int _py_hugetlb(uint64_t *entry, uint64_t hmask, uint64_t addr, uint64_t next,
                     pgwalk_walk_t *w, void *ctx) noexcept:
    cdef MMWalk walk = <MMWalk>w.pywalk
    cdef EntryRef ref = walk._ref(5)
    ref.level = L_PUD if hmask == ~(PUD_SIZE_ - 1) else L_PMD
    ref.ptr = entry
    try:
        return _ret((<object>ctx)(ref, hmask, addr, next, walk), 6)
    except BaseException as e:
        return walk._park(e)
    finally:
        ref.ptr = NULL

cdef int _py_range(uint64_t start, uint64_t end, pgwalk_walk_t *w, void *ctx, int slot) noexcept:
    cdef MMWalk walk = <MMWalk>w.pywalk
    try:
        return _ret((<object>ctx)(start, end, walk), slot)
    except BaseException as e:
        return walk._park(e)

cdef int _py_test_walk(uint64_t s, uint64_t e, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_range(s, e, w, ctx, 7)

cdef int _py_pre_vma(uint64_t s, uint64_t e, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_range(s, e, w, ctx, 8)

cdef void _py_post_vma(pgwalk_walk_t *w, void *ctx) noexcept:
    cdef MMWalk walk = <MMWalk>w.pywalk
    try:
        (<object>ctx)(walk)
    except BaseException as e:
        walk._park(e)

cdef int _py_install(uint64_t addr, uint64_t next, uint64_t *ptep,
                     pgwalk_walk_t *w, void *ctx) noexcept:
    cdef MMWalk walk = <MMWalk>w.pywalk
    cdef Scratch s = walk._scratch
    s.ptr = ptep
    try:
        return _ret((<object>ctx)(addr, next, s, walk), 10)
    except BaseException as e:
        return walk._park(e)
    finally:
        s.ptr = NULL


cdef int _py_batch(uint64_t *entries, int n, uint64_t addr, uint64_t next,
                   pgwalk_walk_t *w, void *ctx, int level) noexcept:
    cdef MMWalk walk = <MMWalk>w.pywalk
    cdef cnp.npy_intp dims[1]
    cdef cnp.ndarray view = None
    cdef uint64_t *buf = NULL
    cdef int i
    cdef bint writable = level == L_PTE and not (<PageTables>walk.c.pt).pool.read_only
    dims[0] = n
    try:
        if writable:
            # A writable view is of the walk's copy of the slots, written back
            # (the slots the callback changed) when it returns: a view kept or
            # derived beyond the call can then never write into a table that
            # is freed and reused later (docs/robustness.md, F5 and F10).
            scratch = walk._batch_scratch()
            buf = <uint64_t *>cnp.PyArray_DATA(scratch)
            memcpy(buf, entries, n * sizeof(uint64_t))
            memcpy(buf + SNAP_AT, entries, n * sizeof(uint64_t))   # the snapshot
            view = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_UINT64, <void *>buf)
            cnp.set_array_base(view, scratch)
        else:
            # upper-level slots may link tables (decision 8.3); images are read only
            view = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_UINT64, <void *>entries)
            cnp.set_array_base(view, <object>walk.c.pt)        # the pool outlives the view
            cnp.PyArray_CLEARFLAGS(view, cnp.NPY_ARRAY_WRITEABLE)
        return _ret((<object>ctx)(view, addr, next, walk), level)
    except BaseException as e:
        return walk._park(e)
    finally:
        if buf != NULL:
            pgw_store_changed(entries, buf, buf + SNAP_AT, n)   # what the callback wrote
        if view is not None:
            cnp.PyArray_CLEARFLAGS(view, cnp.NPY_ARRAY_WRITEABLE)

cdef int _hugetlb_placeholder(uint64_t *entry, uint64_t hmask, uint64_t addr, uint64_t next,
                              pgwalk_walk_t *w, void *ctx) noexcept nogil:
    # hugetlb_entry's slot when it is batched: the walker calls hugetlb_batch
    return -22


cdef int _py_hugetlb_batch(uint64_t *entries, int n, uint64_t addr, uint64_t next,
                           pgwalk_walk_t *w, void *ctx) noexcept:
    """A batched hugetlb_entry: ``fn(entries, hmask, addr, next, walk)`` with
    ``entries`` a read-only view of the run's slots (leaves or none)."""
    cdef MMWalk walk = <MMWalk>w.pywalk
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    try:
        view = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_UINT64, <void *>entries)
        cnp.set_array_base(view, <object>walk.c.pt)
        cnp.PyArray_CLEARFLAGS(view, cnp.NPY_ARRAY_WRITEABLE)
        return _ret((<object>ctx)(view, (<WalkCtx *>w).hmask, addr, next, walk), 6)
    except BaseException as e:
        return walk._park(e)


cdef int _py_install_batch(uint64_t *scratch, int n, uint64_t addr, uint64_t next,
                           pgwalk_walk_t *w, void *ctx) noexcept:
    """A batched install_pte: ``fn(ptes, addr, next, walk)`` with ``ptes`` a
    writable view of the walk's scratch slots (zeros), stored on return 0."""
    cdef MMWalk walk = <MMWalk>w.pywalk
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    try:
        view = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_UINT64, <void *>scratch)
        cnp.set_array_base(view, walk._iscratch)        # the scratch outlives the view
        return _ret((<object>ctx)(view, addr, next, walk), 10)
    except BaseException as e:
        return walk._park(e)


cdef int _py_pte_batch(uint64_t *e, int n, uint64_t a, uint64_t nx, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_batch(e, n, a, nx, w, ctx, L_PTE)

cdef int _py_pmd_batch(uint64_t *e, int n, uint64_t a, uint64_t nx, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_batch(e, n, a, nx, w, ctx, L_PMD)

cdef int _py_pud_batch(uint64_t *e, int n, uint64_t a, uint64_t nx, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_batch(e, n, a, nx, w, ctx, L_PUD)

cdef int _py_p4d_batch(uint64_t *e, int n, uint64_t a, uint64_t nx, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_batch(e, n, a, nx, w, ctx, L_P4D)

cdef int _py_pgd_batch(uint64_t *e, int n, uint64_t a, uint64_t nx, pgwalk_walk_t *w, void *ctx) noexcept:
    return _py_batch(e, n, a, nx, w, ctx, L_PGD)


cdef int _check_signals(WalkCtx *c) noexcept with gil:
    try:
        PyErr_CheckSignals()
    except BaseException as e:
        return (<MMWalk>c.w.pywalk)._park(e)
    return 0


cdef inline int tick(WalkCtx *c, int64_t n) noexcept nogil:
    c.budget -= n
    if c.budget > 0:
        return 0
    c.budget = CHECK_EVERY
    c.pool.stats.pte_map_ok += c.pte_map_ok      # mm.stats current when a signal handler runs
    c.pte_map_ok = 0
    if not c.main_thread:
        return 0        # Python runs signal handlers on the main thread only
    return _check_signals(c)


cdef int _null_pte_entry(WalkCtx *c, uint64_t addr) noexcept with gil:
    return (<MMWalk>c.w.pywalk)._park(TypeError(
        f"install_pte is set without pte_entry and the walk met a non-none PTE at {addr:#x}: "
        "the kernel would call a NULL pte_entry here (pgwalk decision 8.1)"))


cdef int _no_memory(WalkCtx *c) noexcept with gil:
    return (<MMWalk>c.w.pywalk)._park(MemoryError("page-table pool exhausted during a THP split"))


# ---------------------------------------------------------------------------
# The level walk (mm/pagewalk.c, 6.13)
# ---------------------------------------------------------------------------

cdef inline uint64_t addr_end(uint64_t addr, uint64_t end, uint64_t size) noexcept nogil:
    cdef uint64_t boundary = (addr + size) & ~(size - 1)
    if boundary - 1 < end - 1:
        return boundary
    return end


cdef uint64_t *pte_offset_map(WalkCtx *c, uint64_t *pmd, uint64_t addr) noexcept nogil:
    """Map the PTE table under ``pmd``; NULL (after clearing a bad PMD) when
    the PMD is no longer a table."""
    cdef uint64_t v = pmd[0]
    cdef uint64_t *tbl
    if pte_none(v) or is_pmd_migration_entry(v) or pmd_trans_huge(v) or pmd_devmap(v):
        c.pool.stats.pte_map_null += 1
        return NULL
    tbl = table_of(c.pool, pmd)
    if pmd_bad(v) or tbl == NULL:
        bad_entry(c.pool, pmd, addr)
        c.pool.stats.pte_map_null += 1
        return NULL
    if c.py_slots:
        c.pool.stats.pte_map_ok += 1
    else:
        c.pte_map_ok += 1
    return tbl + ((addr >> 12) & 511)


cdef uint64_t *pgwalk_pte_offset_map(pgwalk_walk_t *walk, uint64_t *pmd, uint64_t addr) noexcept nogil:
    """For C ops: pte_offset_map() from a pmd_entry, as the kernel's own
    pmd_entry users (mincore, smaps, ...) read the PTE table themselves.  The
    slot for ``addr`` in the table under ``pmd`` (slots up to the table's
    end follow it), or NULL when ``pmd`` is not a PTE table (a bad one is
    cleared first, as the walker does; kernel addresses of a no-VMA walk
    take the walker's pte_offset_kernel() path, unvalidated but never
    leaving the tree).  Counted as a PTE table visited.  Only valid on the
    ``walk`` a slot function was given: it is the first member of the
    walk's context."""
    cdef WalkCtx *c = <WalkCtx *>walk
    cdef uint64_t *tbl
    if c.w.no_vma and (c.is_init_mm or addr >= c.task_size):
        tbl = table_of(c.pool, pmd)
        if tbl == NULL:
            return NULL
        tbl += (addr >> 12) & 511
    else:
        tbl = pte_offset_map(c, pmd, addr)
    if tbl != NULL:
        c.tables[L_PTE] += 1
    return tbl


cdef inline int pte_count(uint64_t addr, uint64_t end) noexcept nogil:
    """How many slots the kernel's PTE loop visits from ``addr``: it stops
    after the slot at or past ``end - PAGE_SIZE``.  Bounded by the table's
    end (where ``end < PAGE_SIZE`` the kernel's unsigned test would run off
    the table; pgwalk visits the one slot, as Python's ints give)."""
    cdef uint64_t last = end - 4096 if end >= 4096 else 0
    cdef uint64_t n = 1
    if addr < last:
        n = 1 + ((last - addr + 4095) >> 12)
    if n > <uint64_t>(512 - ((addr >> 12) & 511)):
        n = 512 - ((addr >> 12) & 511)
    return <int>n


cdef inline int _install_one(WalkCtx *c, uint64_t *pte, uint64_t addr) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef uint64_t new_pte = 0
    cdef int err
    c.calls[10] += 1
    err = ops.install_pte(addr, addr + 4096, &new_pte, &c.w, ops.install_pte_ctx)
    if err:
        return err
    pte[0] = new_pte
    c.pool.stats.set_pte_at += 1
    if not c.w.no_vma:
        c.pool.stats.update_mmu_cache += 1
    return 0


cdef int _install_placeholder(uint64_t addr, uint64_t next, uint64_t *ptep,
                              pgwalk_walk_t *w, void *ctx) noexcept nogil:
    # install_pte's slot when install_pte is batched: the walker calls
    # install_batch instead and never this (a slot must be non-NULL for the
    # walker's "has install_pte" tests)
    return -22


cdef inline int _none_run(uint64_t *pte, int i, int n) noexcept nogil:
    """The end of the run of none slots from ``i`` (exclusive, at most n)."""
    while i < n and pte_none(pte[i]):
        i += 1
    return i


cdef int install_run(WalkCtx *c, uint64_t *pte, uint64_t addr, int n) noexcept nogil:
    """install_pte for ``n`` consecutive none slots: one call each, or one
    call of a batched install_pte for all of them, whose scratch values are
    stored when it returns 0 (nothing of the run is stored otherwise)."""
    cdef pgwalk_ops_t *ops = &c.ops
    cdef int i, err
    if ops.install_batch == NULL:
        for i in range(n):
            err = _install_one(c, &pte[i], addr + (<uint64_t>i << 12))
            if err:
                return err
        return 0
    memset(c.iscratch, 0, n * sizeof(uint64_t))
    c.calls[10] += 1
    err = ops.install_batch(c.iscratch, n, addr, addr + (<uint64_t>n << 12), &c.w, ops.install_batch_ctx)
    if err:
        return err
    for i in range(n):
        pte[i] = c.iscratch[i]
    c.pool.stats.set_pte_at += n
    if not c.w.no_vma:
        c.pool.stats.update_mmu_cache += n
    return 0


cdef int walk_pte_batches(WalkCtx *c, uint64_t *pte, uint64_t addr, int n) noexcept nogil:
    """The PTE loop for a batched pte_entry: one call per run of slots (all
    of them; with install_pte, each run of non-none slots, none slots going
    to install_pte one by one, in address order)."""
    cdef pgwalk_ops_t *ops = &c.ops
    cdef int i = 0, j, err = 0
    if ops.install_pte == NULL:
        c.calls[4] += 1
        return ops.pte_batch(pte, n, addr, addr + (<uint64_t>n << 12), &c.w, ops.pte_batch_ctx)
    while i < n:
        if pte_none(pte[i]):
            j = _none_run(pte, i, n) if ops.install_batch != NULL else i + 1
            err = install_run(c, &pte[i], addr + (<uint64_t>i << 12), j - i)
            if err:
                return err
            i = j
            continue
        j = i
        while j < n and not pte_none(pte[j]):
            j += 1
        c.calls[4] += 1
        err = ops.pte_batch(&pte[i], j - i, addr + (<uint64_t>i << 12), addr + (<uint64_t>j << 12),
                            &c.w, ops.pte_batch_ctx)
        if err:
            return err
        i = j
    return 0


cdef int walk_pte_range_inner(WalkCtx *c, uint64_t *pte, uint64_t addr, uint64_t end) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef int err = 0
    cdef int i, j, n = pte_count(addr, end)
    cdef uint64_t first
    cdef uint8_t *out
    cdef pgwalk_entry_fn fn
    cdef void *ctx
    c.entries += n
    if ops.pte_batch != NULL:
        err = walk_pte_batches(c, pte, addr, n)
    elif c.inline_vec != NULL and ops.install_pte == NULL:
        # The benchmark baseline: MincoreOp's pte_entry, inlined.
        first = (addr - c.inline_start) >> 12
        if first + n <= c.inline_n:
            # pte_present() for each slot, as a vectorised loop
            pgw_any_bits_u8(pte, c.inline_vec + first, n, PGW_P | PGW_PROTNONE)
        else:
            for i in range(n):
                if first + i < c.inline_n:
                    c.inline_vec[first + i] = pte_present(pte[i])
    elif ops.install_pte == NULL:
        # the common case, kept tight: slot and context in registers, the
        # call count added once
        fn = ops.pte_entry
        ctx = ops.pte_entry_ctx
        i = 0
        while i < n:
            err = fn(&pte[i], addr, addr + 4096, &c.w, ctx)
            i += 1
            if err:
                break
            addr += 4096
        c.calls[4] += i
    else:
        i = 0
        while i < n:
            if pte_none(pte[i]):
                j = _none_run(pte, i, n) if ops.install_batch != NULL else i + 1
                err = install_run(c, &pte[i], addr, j - i)
                addr += <uint64_t>(j - i) << 12
                i = j
            else:
                if ops.pte_entry == NULL:
                    err = _null_pte_entry(c, addr)
                else:
                    c.calls[4] += 1
                    err = ops.pte_entry(&pte[i], addr, addr + 4096, &c.w, ops.pte_entry_ctx)
                addr += 4096
                i += 1
            if err:
                break
    if err == 0:
        err = tick(c, n)
    return err


cdef int walk_pte_range(WalkCtx *c, uint64_t *pmd, uint64_t addr, uint64_t end) noexcept nogil:
    cdef uint64_t *pte
    cdef uint64_t *tbl
    if c.w.no_vma and (c.is_init_mm or addr >= c.task_size):
        # pte_offset_kernel(): no validation in the kernel; pgwalk still
        # refuses to follow a link that leads to no table of this tree.
        tbl = table_of(c.pool, pmd)
        if tbl == NULL:
            return 0
        pte = tbl + ((addr >> 12) & 511)
    else:
        pte = pte_offset_map(c, pmd, addr)
    if pte == NULL:
        # The kernel retries for ever when the PMD stays unmappable and
        # unchanged (a devmap PMD without PS in a no-VMA walk); pgwalk moves
        # on after the third refusal in a row of the same slot and value, where
        # the golden corpus' driver stops too (docs/decisions.md, 17).
        if pmd == c.refused_pmd and pmd[0] == c.refused_val:
            c.refusals += 1
        else:
            c.refused_pmd = pmd
            c.refused_val = pmd[0]
            c.refusals = 1
        if c.refusals >= 3:
            c.refused_pmd = NULL
            return 0
        c.w.action = ACT_AGAIN
        return 0
    c.refused_pmd = NULL
    c.tables[L_PTE] += 1
    return walk_pte_range_inner(c, pte, addr, end)


cdef int split_huge_pmd(WalkCtx *c, uint64_t *pmd) noexcept nogil:
    """split_huge_pmd(): anon THP -> PTE table (the deposited table, not a
    counted allocation); PMD migration entry -> 512 PTE migration entries;
    huge zero page -> 512 zero-page PTEs; not anonymous -> cleared."""
    cdef uint64_t v = pmd[0]
    cdef uint64_t flags, pfn, typ
    cdef uint64_t *tbl
    cdef int i
    cdef int64_t tid
    if not (is_swap_pmd(v) or pmd_trans_huge(v) or pmd_devmap(v)):
        return 0
    if not (pmd_trans_huge(v) or pmd_devmap(v) or is_pmd_migration_entry(v)):
        return 0
    if not c.vma_anon:
        # the kernel zaps a file/shmem huge PMD and removes its rmap: the
        # pool's owner (the process model) is told, once, under the lock
        pool_lock(c.pool)
        if pmd[0] == v:
            c.pool.stats.split_pmd += 1
            pmd[0] = 0
            if c.pool.on_clear_leaf != NULL:
                c.pool.on_clear_leaf(c.pool.on_clear_ctx, v, L_PMD)
        pool_unlock(c.pool)
        return 0
    # under the pool lock, as the kernel splits under the PMD lock: another
    # walk (another thread, the read lock) may be splitting the same PMD;
    # the new table is filled before the PMD links it, so a walk reading the
    # PMD meanwhile sees the leaf or the whole table, never an empty slot
    while True:
        pool_lock(c.pool)
        if pmd[0] != v:
            pool_unlock(c.pool)                  # split (or changed) meanwhile
            return 0
        tid = _take_locked(c.pool, NULL, L_PTE)
        if tid != -2:
            break
        pool_unlock(c.pool)
        if _pool_grow(c.pool) < 0:
            return _no_memory(c)
    c.pool.stats.split_pmd += 1
    tbl = table_base(c.pool, <uint64_t>tid)
    if is_pmd_migration_entry(v):
        typ = swp_pte_type(v)
        pfn = swp_pte_offset(v)
        for i in range(PTRS):
            tbl[i] = mk_swp_pte(typ, pfn + i)
    elif pmd_pfn(v) == PGW_HUGE_ZERO_PFN:
        flags = ((v & PGW_FLAGS_MASK) & ~(PGW_PSE | PGW_RW | PGW_DIRTY)) | PGW_SPECIAL
        for i in range(PTRS):
            tbl[i] = (PGW_ZERO_PFN << 12) | flags
    else:
        flags = (v & PGW_FLAGS_MASK) & ~PGW_PSE
        pfn = pmd_pfn(v)
        for i in range(PTRS):
            tbl[i] = (((pfn + i) << 12) & PGW_PFN_MASK) | flags
    c.pool.owner[tid] = pmd
    pmd[0] = mk_table(<uint64_t>tid)
    pool_unlock(c.pool)
    return 0


cdef inline void split_huge_pud(WalkCtx *c, uint64_t *pud) noexcept nogil:
    """split_huge_pud() in 6.13: a huge PUD leaf is simply cleared."""
    cdef uint64_t v = pud[0]
    if pmd_trans_huge(v) or pmd_devmap(v):
        pool_lock(c.pool)
        if pud[0] == v:
            pud[0] = 0
            c.pool.stats.split_pud += 1
            if c.pool.on_clear_leaf != NULL:
                c.pool.on_clear_leaf(c.pool.on_clear_ctx, v, L_PUD)
        pool_unlock(c.pool)


cdef struct BatchRun:
    uint64_t *start              # the slots a batch call covered: [start, end)
    uint64_t *end
    int action                   # the action the batch left


cdef inline bint _skipped(WalkCtx *c, int level, uint64_t *slot) noexcept nogil:
    """A slot the level loop would not hand to its entry callback (none, or
    bad at the levels that clear bad entries): where a batched run ends."""
    cdef uint64_t v = slot[0]
    if level == L_PGD:
        if c.w.levels == 4:
            return False
        return v == 0 or pgd_bad_l5(v) or table_of(c.pool, slot) == NULL
    if pte_none(v):
        return True
    if level == L_P4D:
        return p4d_bad(v) or table_of(c.pool, slot) == NULL
    return False


cdef int call_entry(WalkCtx *c, int level, uint64_t *slot, uint64_t addr, uint64_t next,
                    uint64_t end, uint64_t size, BatchRun *run) noexcept nogil:
    """The entry callback of ``level`` for ``slot``: the per-entry function,
    or the level's batch, called once for the run of slots from ``slot``
    (consecutive, handed to the callback, in this table and range); a slot
    inside a run already handed over gets the run's action instead."""
    cdef pgwalk_ops_t *ops = &c.ops
    cdef pgwalk_entry_fn fn
    cdef pgwalk_batch_fn bfn
    cdef void *ctx
    cdef int j, room, err
    cdef uint64_t base, run_next
    if level == L_PGD:
        fn, bfn, ctx = ops.pgd_entry, ops.pgd_batch, ops.pgd_batch_ctx
    elif level == L_P4D:
        fn, bfn, ctx = ops.p4d_entry, ops.p4d_batch, ops.p4d_batch_ctx
    elif level == L_PUD:
        fn, bfn, ctx = ops.pud_entry, ops.pud_batch, ops.pud_batch_ctx
    else:
        fn, bfn, ctx = ops.pmd_entry, ops.pmd_batch, ops.pmd_batch_ctx
    if bfn == NULL:
        if fn == NULL:
            return 0
        c.calls[level] += 1
        if level == L_PGD:
            ctx = ops.pgd_entry_ctx
        elif level == L_P4D:
            ctx = ops.p4d_entry_ctx
        elif level == L_PUD:
            ctx = ops.pud_entry_ctx
        else:
            ctx = ops.pmd_entry_ctx
        return fn(slot, addr, next, &c.w, ctx)
    if slot >= run.start and slot < run.end:
        c.w.action = run.action
        return 0
    base = addr & ~(size - 1)
    room = 512 - <int>((addr / size) & 511)
    if level == L_P4D and c.w.levels == 4:
        room = 1                # a folded P4D "table" is the one PGD slot
    j = 1
    while j < room and (base + <uint64_t>j * size) - 1 < end - 1 and not _skipped(c, level, &slot[j]):
        j += 1
    run_next = addr_end(base + <uint64_t>(j - 1) * size, end, size)
    c.calls[level] += 1
    err = bfn(slot, j, addr, run_next, &c.w, ctx)
    run.start = slot
    run.end = slot + j
    run.action = c.w.action
    if run.action == ACT_AGAIN:
        run.end = NULL          # the slot is redone: the batch is called again
    return err


cdef int flush_holes(WalkCtx *c) noexcept nogil:
    """Hand a batched pte_hole its pending run of holes."""
    if not c.ph_on:
        return 0
    c.ph_on = 0
    c.calls[5] += 1
    return c.ops.pte_hole(c.ph_start, c.ph_end, c.ph_depth, &c.w, c.ops.pte_hole_ctx)


cdef inline int hole_at(WalkCtx *c, uint64_t addr, uint64_t next, int depth) noexcept nogil:
    """pte_hole for one none slot of a level loop: called at once, or (when
    batched) added to the pending run, which is handed over before the loop
    does anything else (the next non-none slot, the table's end)."""
    cdef int err
    if not c.ops.hole_batch:
        c.calls[5] += 1
        return c.ops.pte_hole(addr, next, depth, &c.w, c.ops.pte_hole_ctx)
    if c.ph_on and c.ph_depth == depth and c.ph_end == addr:
        c.ph_end = next
        return 0
    err = flush_holes(c)
    if err:
        return err
    c.ph_on = 1
    c.ph_depth = depth
    c.ph_start = addr
    c.ph_end = next
    return 0


cdef int walk_pmd_range(WalkCtx *c, uint64_t *pud, uint64_t addr, uint64_t end) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef bint has_handler = ops.pte_entry != NULL or ops.pte_batch != NULL
    cdef bint has_install = ops.install_pte != NULL
    cdef uint64_t next = 0
    cdef uint64_t *pmd = table_of(c.pool, pud)
    cdef int err = 0
    cdef BatchRun run
    run.start = run.end = NULL
    if pmd == NULL:
        return 0
    c.tables[L_PMD] += 1
    pmd += (addr >> 21) & 511
    while True:
        while True:                                   # "again:"
            err = tick(c, 1)
            if err:
                break
            next = addr_end(addr, end, PMD_SIZE_)
            if pte_none(pmd[0]):
                if has_install:
                    err = pool_alloc(c.pool, pmd, L_PTE)
                elif ops.pte_hole != NULL:
                    err = hole_at(c, addr, next, 3)
                if err or not has_install:
                    break
            if c.ph_on:
                err = flush_holes(c)
                if err:
                    break
            c.w.action = ACT_SUBTREE
            err = call_entry(c, L_PMD, pmd, addr, next, end, PMD_SIZE_, &run)
            if err:
                break
            if c.w.action == ACT_AGAIN:
                continue
            if c.w.action == ACT_CONTINUE:
                break
            if not has_handler:
                if not has_install:
                    break
                if pmd_present(pmd[0]) and (pmd_trans_huge(pmd[0]) or pmd_devmap(pmd[0])):
                    break
            if c.w.has_vma:
                err = split_huge_pmd(c, pmd)
                if err:
                    break
            elif pmd_leaf(pmd[0]) or not pmd_present(pmd[0]):
                break
            err = walk_pte_range(c, pmd, addr, next)
            if err:
                break
            if c.w.action == ACT_AGAIN:
                continue
            break
        if err:
            break
        pmd += 1
        addr = next
        if addr == end:
            break
    if err == 0 and c.ph_on:
        err = flush_holes(c)                          # a run ends with its table
    return err


cdef int walk_pud_range(WalkCtx *c, uint64_t *p4d, uint64_t addr, uint64_t end) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef bint has_handler = (ops.pmd_entry != NULL or ops.pmd_batch != NULL or
                             ops.pte_entry != NULL or ops.pte_batch != NULL)
    cdef bint has_install = ops.install_pte != NULL
    cdef uint64_t next = 0
    cdef uint64_t *pud = table_of(c.pool, p4d)
    cdef int err = 0
    cdef BatchRun run
    run.start = run.end = NULL
    if pud == NULL:
        return 0
    c.tables[L_PUD] += 1
    pud += (addr >> 30) & 511
    while True:
        while True:                                   # "again:"
            err = tick(c, 1)
            if err:
                break
            next = addr_end(addr, end, PUD_SIZE_)
            if pte_none(pud[0]):
                if has_install:
                    err = pool_alloc(c.pool, pud, L_PMD)
                elif ops.pte_hole != NULL:
                    err = hole_at(c, addr, next, 2)
                if err or not has_install:
                    break
            if c.ph_on:
                err = flush_holes(c)
                if err:
                    break
            c.w.action = ACT_SUBTREE
            err = call_entry(c, L_PUD, pud, addr, next, end, PUD_SIZE_, &run)
            if err:
                break
            if c.w.action == ACT_AGAIN:
                continue
            if c.w.action == ACT_CONTINUE:
                break
            if not has_handler:
                if not has_install:
                    break
                if pud_present(pud[0]) and (pmd_trans_huge(pud[0]) or pmd_devmap(pud[0])):
                    break
            if c.w.has_vma:
                split_huge_pud(c, pud)
            elif pmd_leaf(pud[0]) or not pud_present(pud[0]):
                break
            if pte_none(pud[0]):
                continue
            # The kernel has no bad check here; pgwalk does not follow a
            # link that leads to no PMD table of this tree.
            if table_of(c.pool, pud) == NULL:
                break
            err = walk_pmd_range(c, pud, addr, next)
            break
        if err:
            break
        pud += 1
        addr = next
        if addr == end:
            break
    if err == 0 and c.ph_on:
        err = flush_holes(c)
    return err


cdef inline bint p4d_none_or_clear_bad(WalkCtx *c, uint64_t *p4d, uint64_t addr) noexcept nogil:
    if pte_none(p4d[0]):
        return True
    if p4d_bad(p4d[0]) or table_of(c.pool, p4d) == NULL:
        bad_entry(c.pool, p4d, addr)
        return True
    return False


cdef inline bint pgd_none_or_clear_bad(WalkCtx *c, uint64_t *pgd, uint64_t addr) noexcept nogil:
    if c.w.levels == 4:
        return False                  # folded: never none, never bad
    if pgd_none_l5(pgd[0]):
        return True
    if pgd_bad_l5(pgd[0]) or table_of(c.pool, pgd) == NULL:
        bad_entry(c.pool, pgd, addr)
        return True
    return False


cdef int walk_p4d_range(WalkCtx *c, uint64_t *pgd, uint64_t addr, uint64_t end) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef bint has_handler = (ops.pud_entry != NULL or ops.pud_batch != NULL or
                             ops.pmd_entry != NULL or ops.pmd_batch != NULL or
                             ops.pte_entry != NULL or ops.pte_batch != NULL)
    cdef bint has_install = ops.install_pte != NULL
    cdef bint folded = c.w.levels == 4
    cdef int depth = 0 if folded else 1
    cdef uint64_t next
    cdef uint64_t *p4d
    cdef int err = 0
    cdef BatchRun run
    run.start = run.end = NULL
    if folded:
        p4d = pgd                     # p4d_offset() of a folded level is the pgd slot
    else:
        p4d = table_of(c.pool, pgd)
        if p4d == NULL:
            return 0
        c.tables[L_P4D] += 1
        p4d += (addr >> 39) & 511
    while True:
        next = end if folded else addr_end(addr, end, P4D_SIZE_)
        if p4d_none_or_clear_bad(c, p4d, addr):
            if has_install:
                err = pool_alloc(c.pool, p4d, L_PUD)
            elif ops.pte_hole != NULL:
                err = hole_at(c, addr, next, depth)
            if err:
                break
            if not has_install:
                p4d += 1
                addr = next
                if addr == end:
                    break
                continue
        if c.ph_on:
            err = flush_holes(c)
            if err:
                break
        err = call_entry(c, L_P4D, p4d, addr, next, end, P4D_SIZE_, &run)
        if err:
            break
        if has_handler or has_install:
            err = walk_pud_range(c, p4d, addr, next)
        if err:
            break
        p4d += 1
        addr = next
        if addr == end:
            break
    if err == 0 and c.ph_on and not folded:
        err = flush_holes(c)          # folded: the run goes on in the PGD table
    return err


cdef int walk_pgd_range(WalkCtx *c, uint64_t addr, uint64_t end) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef bint has_handler = (ops.p4d_entry != NULL or ops.p4d_batch != NULL or
                             ops.pud_entry != NULL or ops.pud_batch != NULL or
                             ops.pmd_entry != NULL or ops.pmd_batch != NULL or
                             ops.pte_entry != NULL or ops.pte_batch != NULL)
    cdef bint has_install = ops.install_pte != NULL
    cdef uint64_t size = (<uint64_t>1) << (39 if c.w.levels == 4 else 48)
    cdef uint64_t *pgd = c.pgd + ((addr >> (39 if c.w.levels == 4 else 48)) & 511)
    cdef uint64_t next
    cdef int err = 0
    cdef BatchRun run
    run.start = run.end = NULL
    c.tables[L_PGD] += 1
    while True:
        next = addr_end(addr, end, size)
        if pgd_none_or_clear_bad(c, pgd, addr):
            if has_install:
                err = pool_alloc(c.pool, pgd, L_P4D)
            elif ops.pte_hole != NULL:
                err = hole_at(c, addr, next, 0)
            if err:
                break
            if not has_install:
                pgd += 1
                addr = next
                if addr == end:
                    break
                continue
        if c.ph_on and (c.w.levels == 5 or ops.pgd_entry != NULL or ops.pgd_batch != NULL):
            err = flush_holes(c)      # (4-level: a run may go on in the next folded P4D)
            if err:
                break
        err = call_entry(c, L_PGD, pgd, addr, next, end, size, &run)
        if err:
            break
        if has_handler or has_install:
            err = walk_p4d_range(c, pgd, addr, next)
        if err:
            break
        pgd += 1
        addr = next
        if addr == end:
            break
    if err == 0 and c.ph_on:
        err = flush_holes(c)
    return err


cdef uint64_t *hugetlb_walk(WalkCtx *c, uint64_t addr, uint64_t sz) noexcept nogil:
    """The generic huge_pte_offset(): the PMD (or, for 1 GiB pages, PUD) slot
    for ``addr`` when the tables above it exist, else NULL."""
    cdef uint64_t *pgd = c.pgd + ((addr >> (39 if c.w.levels == 4 else 48)) & 511)
    cdef uint64_t *p4d
    cdef uint64_t *pud
    cdef uint64_t *tbl
    if c.w.levels == 5:
        if not pud_present(pgd[0]):
            return NULL
        tbl = table_of(c.pool, pgd)
        if tbl == NULL:
            return NULL
        p4d = tbl + ((addr >> 39) & 511)
    else:
        p4d = pgd
    if not pud_present(p4d[0]):
        return NULL
    tbl = table_of(c.pool, p4d)
    if tbl == NULL:
        return NULL
    pud = tbl + ((addr >> 30) & 511)
    if sz == PUD_SIZE_:
        return pud
    if not pud_present(pud[0]):
        return NULL
    tbl = table_of(c.pool, pud)
    if tbl == NULL:
        return NULL
    return tbl + ((addr >> 21) & 511)


cdef int walk_hugetlb_batches(WalkCtx *c, uint64_t addr, uint64_t end, uint64_t sz) noexcept nogil:
    """walk_hugetlb_range for a batched hugetlb_entry: one call per run of
    huge pages whose slots follow each other in one table; a page whose
    table is missing is a hole (-1), as without batching."""
    cdef pgwalk_ops_t *ops = &c.ops
    cdef uint64_t hmask = ~(sz - 1)
    cdef int shift = 30 if sz == PUD_SIZE_ else 21
    cdef uint64_t next, boundary, run_next, nb
    cdef uint64_t *pte
    cdef uint64_t *p2
    cdef int err = 0, n, room
    c.hmask = hmask
    while True:
        boundary = (addr & hmask) + sz
        next = boundary if boundary < end else end
        pte = hugetlb_walk(c, addr & hmask, sz)
        if pte == NULL:
            if ops.pte_hole != NULL:
                c.calls[5] += 1
                err = ops.pte_hole(addr, next, -1, &c.w, ops.pte_hole_ctx)
            n = 1
        else:
            room = 512 - <int>(((addr & hmask) >> shift) & 511)
            n = 1
            run_next = next
            while run_next != end and n < room:
                nb = run_next                          # the next huge page's start
                p2 = hugetlb_walk(c, nb, sz)
                if p2 != pte + n:
                    break
                n += 1
                run_next = nb + sz if nb + sz < end else end
            next = run_next
            c.calls[6] += 1
            err = ops.hugetlb_batch(pte, n, addr, next, &c.w, ops.hugetlb_batch_ctx)
        if err:
            break
        addr = next
        if addr == end:
            break
        err = tick(c, n)
        if err:
            break
    return err


cdef int walk_hugetlb_range(WalkCtx *c, uint64_t addr, uint64_t end, uint64_t sz) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef uint64_t hmask = ~(sz - 1)
    cdef uint64_t next, boundary
    cdef uint64_t *pte
    cdef int err = 0
    if ops.hugetlb_batch != NULL:
        return walk_hugetlb_batches(c, addr, end, sz)
    while True:
        boundary = (addr & hmask) + sz
        next = boundary if boundary < end else end
        pte = hugetlb_walk(c, addr & hmask, sz)
        if pte != NULL:
            c.calls[6] += 1
            err = ops.hugetlb_entry(pte, hmask, addr, next, &c.w, ops.hugetlb_entry_ctx)
        elif ops.pte_hole != NULL:
            c.calls[5] += 1
            err = ops.pte_hole(addr, next, -1, &c.w, ops.pte_hole_ctx)
        if err:
            break
        addr = next
        if addr == end:
            break
        err = tick(c, 1)
        if err:
            break
    return err


# ---------------------------------------------------------------------------
# Entry points (argument checks and the VMA loop, with the GIL)
# ---------------------------------------------------------------------------

cdef inline void *_slot(object f, void *py_tramp, void **ctx, list keep, list pykeep):
    """Slot function and context for one field: a CFunc's own, or the Python
    trampoline with the callable as context."""
    if f is None:
        ctx[0] = NULL
        return NULL
    keep.append(f)
    f = getattr(f, "__pgwalk_cfunc__", f)
    if isinstance(f, CFunc):
        ctx[0] = (<CFunc>f).ctx
        return (<CFunc>f).fn
    pykeep.append(f)
    ctx[0] = <void *>f
    return py_tramp


cdef inline void *_entry_slot(object f, void *py_tramp, void *py_batch, void **ctx,
                              void **batch, void **batch_ctx, list keep, list pykeep):
    """An entry slot: a per-entry function (returned, with ``ctx``) or a
    batch (stored in ``batch``/``batch_ctx``; NULL returned)."""
    f = getattr(f, "__pgwalk_cfunc__", f)
    if isinstance(f, Batch):
        keep.append(f)
        inner = getattr(f.fn, "__pgwalk_cfunc__", f.fn)
        if isinstance(inner, CFunc):
            f = inner                  # batch() of a C batch function: that function
        else:
            pykeep.append(f)
            batch[0] = py_batch
            batch_ctx[0] = <void *>f.fn
            ctx[0] = NULL
            return NULL
    if isinstance(f, CFunc) and (<CFunc>f).kind == "batch":
        keep.append(f)
        batch[0] = (<CFunc>f).fn
        batch_ctx[0] = (<CFunc>f).ctx
        ctx[0] = NULL
        return NULL
    return _slot(f, py_tramp, ctx, keep, pykeep)


cdef inline object _unbatched(object f):
    g = getattr(f, "__pgwalk_cfunc__", f)
    return g.fn if isinstance(g, Batch) else f


cdef int _fill_ops(pgwalk_ops_t *o, object ops, list keep) except -1:
    """Fill the dispatch table from an MMWalkOps; returns how many slots
    call Python."""
    cdef list pykeep = []
    cdef object f
    memset(o, 0, sizeof(pgwalk_ops_t))
    o.pgd_entry = <pgwalk_entry_fn>_entry_slot(ops.pgd_entry, <void *>_py_pgd, <void *>_py_pgd_batch,
                                               &o.pgd_entry_ctx, <void **>&o.pgd_batch, &o.pgd_batch_ctx,
                                               keep, pykeep)
    o.p4d_entry = <pgwalk_entry_fn>_entry_slot(ops.p4d_entry, <void *>_py_p4d, <void *>_py_p4d_batch,
                                               &o.p4d_entry_ctx, <void **>&o.p4d_batch, &o.p4d_batch_ctx,
                                               keep, pykeep)
    o.pud_entry = <pgwalk_entry_fn>_entry_slot(ops.pud_entry, <void *>_py_pud, <void *>_py_pud_batch,
                                               &o.pud_entry_ctx, <void **>&o.pud_batch, &o.pud_batch_ctx,
                                               keep, pykeep)
    o.pmd_entry = <pgwalk_entry_fn>_entry_slot(ops.pmd_entry, <void *>_py_pmd, <void *>_py_pmd_batch,
                                               &o.pmd_entry_ctx, <void **>&o.pmd_batch, &o.pmd_batch_ctx,
                                               keep, pykeep)
    o.pte_entry = <pgwalk_entry_fn>_entry_slot(ops.pte_entry, <void *>_py_pte, <void *>_py_pte_batch,
                                               &o.pte_entry_ctx, <void **>&o.pte_batch, &o.pte_batch_ctx,
                                               keep, pykeep)
    f = getattr(ops.pte_hole, "__pgwalk_cfunc__", ops.pte_hole)
    if isinstance(f, Batch):
        keep.append(f)
        o.hole_batch = 1
        f = f.fn
    o.pte_hole = <pgwalk_hole_fn>_slot(f, <void *>_py_hole, &o.pte_hole_ctx, keep, pykeep)
    f = getattr(ops.hugetlb_entry, "__pgwalk_cfunc__", ops.hugetlb_entry)
    if isinstance(f, Batch):
        keep.append(f)
        pykeep.append(f)
        o.hugetlb_batch = <pgwalk_batch_fn><void *>_py_hugetlb_batch
        o.hugetlb_batch_ctx = <void *>f.fn
        o.hugetlb_entry = _hugetlb_placeholder       # non-NULL: the VMA's range is walked
        o.hugetlb_entry_ctx = NULL
    else:
        o.hugetlb_entry = <pgwalk_hugetlb_fn>_slot(ops.hugetlb_entry, <void *>_py_hugetlb,
                                                   &o.hugetlb_entry_ctx, keep, pykeep)
    # per-VMA slots: one call per VMA, nothing to batch (a batch() is its fn)
    o.test_walk = <pgwalk_range_fn>_slot(_unbatched(ops.test_walk), <void *>_py_test_walk,
                                         &o.test_walk_ctx, keep, pykeep)
    o.pre_vma = <pgwalk_range_fn>_slot(_unbatched(ops.pre_vma), <void *>_py_pre_vma, &o.pre_vma_ctx, keep, pykeep)
    o.post_vma = <pgwalk_post_fn>_slot(_unbatched(ops.post_vma), <void *>_py_post_vma,
                                       &o.post_vma_ctx, keep, pykeep)
    f = getattr(ops.install_pte, "__pgwalk_cfunc__", ops.install_pte)
    if isinstance(f, Batch) and isinstance(getattr(f.fn, "__pgwalk_cfunc__", f.fn), CFunc):
        keep.append(f)
        f = getattr(f.fn, "__pgwalk_cfunc__", f.fn)
    if isinstance(f, Batch) or (isinstance(f, CFunc) and (<CFunc>f).kind == "batch"):
        keep.append(f)
        if isinstance(f, Batch):
            pykeep.append(f)
            o.install_batch = <pgwalk_batch_fn><void *>_py_install_batch
            o.install_batch_ctx = <void *>f.fn
        else:
            o.install_batch = <pgwalk_batch_fn>(<CFunc>f).fn
            o.install_batch_ctx = (<CFunc>f).ctx
        o.install_pte = _install_placeholder
        o.install_pte_ctx = NULL
    else:
        o.install_pte = <pgwalk_install_fn>_slot(ops.install_pte, <void *>_py_install,
                                                 &o.install_pte_ctx, keep, pykeep)
    o.walk_lock = ops.walk_lock
    return len(pykeep)


cdef size_t _private_pointer(object private) except? 0:
    """What C callbacks find in walk->private: NULL for None, the address for
    an int or a ctypes object, else the Python object itself (PyObject *)."""
    if private is None:
        return 0
    if isinstance(private, int) and not isinstance(private, bool):
        if private < 0 or private > <object>SIZE_MAX_:
            raise ValueError("private: an int private is an address and must fit a pointer")
        return <size_t>private
    import ctypes
    if isinstance(private, ctypes._SimpleCData) or isinstance(private, (ctypes.Structure, ctypes.Array)):
        return <size_t>ctypes.addressof(private)
    return <size_t><void *>private


cdef MMWalk _new_walk(object mm, object ops, object private, bint no_vma, object pgd):
    cdef MMWalk walk = MMWalk.__new__(MMWalk)
    cdef PageTables pt = <PageTables>mm
    cdef PageTables tree = pt if pgd is None else (<PageTable>pgd).tables
    cdef list keep = []
    cdef int i
    cdef EntryRef ref
    walk.mm = mm
    walk.vma = None
    walk.pgd = pgd
    walk.ops = ops
    walk.private = private
    walk._exc = None
    memset(&walk.c, 0, sizeof(WalkCtx))
    walk._py_slots = _fill_ops(&walk.c.ops, ops, keep) > 0
    if walk.c.ops.install_batch != NULL:
        walk._iscratch = np.zeros(512, dtype=np.uint64)
        walk.c.iscratch = <uint64_t *>cnp.PyArray_DATA(walk._iscratch)
    walk.c.py_slots = walk._py_slots
    walk._keep = tuple(keep)
    walk.c.w.pywalk = <void *>walk
    walk.c.w.private = <void *><size_t>_private_pointer(private)
    walk.c.w.no_vma = no_vma
    walk.c.w.levels = pt.levels
    walk.c.pool = &tree.pool
    walk.c.pt = <void *>tree
    walk.c.pgd = tree.pgd_ptr if pgd is None else table_base(&tree.pool, <uint64_t>(<PageTable>pgd).index)
    walk.c.task_size = ((<uint64_t>1) << (47 if pt.levels == 4 else 56)) - 4096
    walk.c.is_init_mm = pt.is_init_mm
    walk.c.budget = CHECK_EVERY
    walk.c.main_thread = threading.current_thread() is threading.main_thread()
    walk._refs = []
    for i in range(6):
        ref = EntryRef.__new__(EntryRef)
        ref.level = i if i < 5 else L_PMD
        ref.pt = tree
        walk._refs.append(ref)
    walk._scratch = Scratch.__new__(Scratch)
    return walk


cdef void _fill_stats(MMWalk walk, object stats, dict before):
    cdef int i
    if stats is None:
        return
    stats.calls = {SLOT_NAMES[i]: walk.c.calls[i] for i in range(11) if walk.c.calls[i]}
    stats.indirect_calls = sum(stats.calls.values())
    stats.tables = {("pgd", "p4d", "pud", "pmd", "pte")[i]: walk.c.tables[i]
                    for i in range(5) if walk.c.tables[i]}
    stats.entries = walk.c.entries
    after = (<PageTables>walk.c.pt).stats
    stats.mm = {k: (after[k] - before[k]) for k in after if not isinstance(after[k], dict)}
    stats.mm["alloc"] = {k: after["alloc"][k] - before["alloc"][k] for k in after["alloc"]}


cdef int _finish(MMWalk walk, int err, object stats=None, dict before=None) except? -1:
    walk.c.pool.stats.pte_map_ok += walk.c.pte_map_ok
    walk.c.pte_map_ok = 0
    _fill_stats(walk, stats, before)
    exc = walk._exc
    if exc is not None:
        walk._exc = None
        raise exc
    return err


cdef void _enter_vma(MMWalk walk, object vma):
    walk.vma = vma
    walk.c.w.has_vma = 1
    walk.c.w.vma_start = vma.vm_start
    walk.c.w.vma_end = vma.vm_end
    walk.c.w.vma_flags = vma.vm_flags
    walk.c.vma_anon = vma.vm_ops is None


cdef void _leave_vma(MMWalk walk):
    walk.vma = None
    walk.c.w.has_vma = 0


cdef int _call_hole(MMWalk walk, uint64_t start, uint64_t end):
    if walk.c.ops.pte_hole == NULL:
        return 0
    walk.c.calls[5] += 1
    return walk.c.ops.pte_hole(start, end, -1, &walk.c.w, walk.c.ops.pte_hole_ctx)


cdef int _walk_page_test(MMWalk walk, uint64_t start, uint64_t end):
    cdef int err
    if walk.c.ops.test_walk != NULL:
        walk.c.calls[7] += 1
        return walk.c.ops.test_walk(start, end, &walk.c.w, walk.c.ops.test_walk_ctx)
    if walk.c.w.vma_flags & 0x400:           # VM_PFNMAP
        err = 1
        if walk.c.ops.pte_hole != NULL:
            walk.c.calls[5] += 1
            err = walk.c.ops.pte_hole(start, end, -1, &walk.c.w, walk.c.ops.pte_hole_ctx)
        return err if err else 1
    return 0


cdef int _run_tables(MMWalk walk, uint64_t start, uint64_t end, bint hugetlb, uint64_t hsize):
    """The nogil part: the table walk of one range.  Runs without the GIL
    when no slot needs Python, else with it (trampolines re-enter cheaply)."""
    cdef WalkCtx *c = &walk.c
    cdef int err
    if walk._py_slots:
        # Python callbacks: keep the GIL; their trampolines re-enter it cheaply
        # (releasing it around every call costs ~70 ns per callback here).
        if hugetlb:
            return walk_hugetlb_range(c, start, end, hsize)
        return walk_pgd_range(c, start, end)
    with nogil:
        if hugetlb:
            err = walk_hugetlb_range(c, start, end, hsize)
        else:
            err = walk_pgd_range(c, start, end)
    return err


cdef int _walk_vma_range(MMWalk walk, object vma, uint64_t start, uint64_t end):
    """__walk_page_range(): install check, pre_vma, the tables, post_vma."""
    cdef pgwalk_ops_t *ops = &walk.c.ops
    cdef bint is_hugetlb = (vma.vm_flags & 0x00400000) != 0     # VM_HUGETLB
    cdef int err = 0
    if ops.install_pte != NULL and is_hugetlb:
        return -E_INVAL
    if ops.pre_vma != NULL:
        walk.c.calls[8] += 1
        err = ops.pre_vma(start, end, &walk.c.w, ops.pre_vma_ctx)
        if err:
            return err
    if is_hugetlb:
        if ops.hugetlb_entry != NULL:
            err = _run_tables(walk, start, end, True, vma.hugepage_size)
    else:
        err = _run_tables(walk, start, end, False, 0)
    if ops.post_vma != NULL and walk._exc is None:
        walk.c.calls[9] += 1
        ops.post_vma(&walk.c.w, ops.post_vma_ctx)
    if walk._exc is not None:
        return PGWALK_EXC           # an exception (post_vma's included) ends the walk
    return err


def _walk_range(PageTables mm not None, uint64_t start, uint64_t end, ops, private, stats=None):
    """walk_page_range_mm() after its argument checks: the VMA loop."""
    cdef MMWalk walk = _new_walk(mm, ops, private, False, None)
    cdef dict before = mm.stats if stats is not None else None
    mm.active_walks += 1
    try:
        return _walk_range_vmas(walk, mm, start, end, ops, stats, before)
    finally:
        mm.active_walks -= 1


cdef object _walk_range_vmas(MMWalk walk, PageTables mm, uint64_t start, uint64_t end, ops,
                             object stats, dict before):
    cdef int err = 0
    cdef uint64_t next
    lock = ops.walk_lock
    vma = mm.find_vma(start)
    while True:
        if vma is None:
            _leave_vma(walk)
            next = end
            err = _call_hole(walk, start, next)
        elif start < <uint64_t>vma.vm_start:
            _leave_vma(walk)
            next = min(end, <uint64_t>vma.vm_start)
            err = _call_hole(walk, start, next)
        else:
            mm._process_vma_walk_lock(vma, lock)
            _enter_vma(walk, vma)
            next = min(end, <uint64_t>vma.vm_end)
            cur = vma
            vma = mm.find_vma(cur.vm_end)
            err = _walk_page_test(walk, start, next)
            if err > 0 and walk._exc is None:
                err = 0
            elif err == 0:
                err = _walk_vma_range(walk, cur, start, next)
        if err:
            break
        start = next
        if start >= end:
            break
    return _finish(walk, err, stats, before)


def _walk_vma(vma, uint64_t start, uint64_t end, ops, private, stats=None):
    """walk_page_range_vma()/walk_page_vma() after their checks."""
    if not isinstance(vma.vm_mm, PageTables):
        raise TypeError("vma.vm_mm must be a pgwalk.MM")
    cdef MMWalk walk = _new_walk(vma.vm_mm, ops, private, False, None)
    cdef dict before = vma.vm_mm.stats if stats is not None else None
    cdef PageTables tree = <PageTables>walk.c.pt
    _enter_vma(walk, vma)
    tree.active_walks += 1
    try:
        return _finish(walk, _walk_vma_range(walk, vma, start, end), stats, before)
    finally:
        tree.active_walks -= 1


def _walk_novma(PageTables mm not None, uint64_t start, uint64_t end, ops, PageTable pgd, private,
                stats=None):
    """walk_page_range_novma() after its checks."""
    cdef MMWalk walk = _new_walk(mm, ops, private, True, pgd)
    cdef dict before = (<PageTables>walk.c.pt).stats if stats is not None else None
    cdef PageTables tree = <PageTables>walk.c.pt
    tree.active_walks += 1
    try:
        return _finish(walk, _run_tables(walk, start, end, False, 0), stats, before)
    finally:
        tree.active_walks -= 1


def _walk_inline_mincore(PageTables mm not None, uint64_t start, uint64_t end, ops,
                         cnp.ndarray[cnp.uint8_t, ndim=1] out not None):
    """Benchmark baseline: walk_page_range over [start, end) with ``ops``
    (a MincoreOp's), but with its pte_entry inlined in the PTE loop instead
    of called through the slot; fills ``out`` (one byte per page from
    ``start``) the same way.  The caller holds the mmap lock."""
    cdef MMWalk walk = _new_walk(mm, ops, None, False, None)
    cdef int err
    walk.c.inline_vec = <uint8_t *>cnp.PyArray_DATA(out)
    walk.c.inline_start = start & ~<uint64_t>4095
    walk.c.inline_n = out.shape[0]
    vma = mm.find_vma(start)
    while vma is not None and vma.vm_start < end:
        _enter_vma(walk, vma)
        err = _run_tables(walk, max(start, vma.vm_start), min(end, vma.vm_end), False, 0)
        if err:
            return _finish(walk, err)
        vma = mm.find_vma(vma.vm_end)
    return _finish(walk, 0)


def _c_predicates(uint64_t v):
    """The walker's inline C predicates on one raw value, for the tests that
    check them against the Python definitions in ``pgwalk.entries``."""
    return {
        "pte_none": pte_none(v), "pgd_none_l5": pgd_none_l5(v),
        "pte_present": pte_present(v), "pmd_present": pmd_present(v),
        "pud_present": pud_present(v), "pmd_leaf": pmd_leaf(v),
        "pmd_trans_huge": pmd_trans_huge(v), "pmd_devmap": pmd_devmap(v),
        "pgd_bad_l5": pgd_bad_l5(v), "p4d_bad": p4d_bad(v), "pmd_bad": pmd_bad(v),
        "is_swap_pmd": is_swap_pmd(v), "is_pmd_migration_entry": is_pmd_migration_entry(v),
        "pmd_flags": pmd_flags(v), "pud_flags": pud_flags(v), "pmd_pfn": pmd_pfn(v),
        "entry_index": entry_index(v), "swp_pte_type": swp_pte_type(v),
        "swp_pte_offset": swp_pte_offset(v), "mk_table": mk_table(v & 0xFFFFFFFFFF),
        "mk_swp_pte": mk_swp_pte(v >> 59, v & 0xFFFFFFFFFF),
    }


def _int_rewrite_enabled():
    """Whether plain Python callbacks get addresses in reused int boxes
    (pgwalk/_pyint.h) on this interpreter; otherwise each is a fresh int."""
    return bool(pgw_int_rewrite_enabled())
