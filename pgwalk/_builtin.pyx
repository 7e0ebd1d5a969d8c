# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Built-in walk ops: consumers written as C slot functions over the core's
contract (``pgwalk/_core.pxd``), run by the walker without the GIL.

Each op is a small object whose attributes are ``CFunc`` slots to put in an
``MMWalkOps`` and whose state (counters, output arrays) lives in C memory it
owns.
"""

from libc.stdint cimport uint64_t, int64_t
from libc.string cimport memset

import numpy as np

from pgwalk._core cimport CFunc, make_cfunc, pgwalk_walk_t
from pgwalk._entries cimport pte_none, pte_present, pmd_leaf, pmd_trans_huge

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
    """The smallest useful PTE op: count present PTEs.  The benchmark runs it
    through the pte_entry slot and, as the baseline, inlined in the walker's
    PTE loop (``pgwalk._core._walk_inline_count``), so the difference is the
    cost of the indirect call."""
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
