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
    int pgw_first_not_none(const uint64_t *pte, int n, uint64_t ignore) noexcept nogil

cdef extern from *:
    """
    static inline int64_t pgw_fetch_add_i64(int64_t *p) {
        return __atomic_fetch_add(p, 1, __ATOMIC_RELAXED);
    }
    """
    int64_t pgw_fetch_add_i64(int64_t *p) noexcept nogil

cdef extern from "_pyint.h":
    ctypedef struct pgw_boxes:
        pass
    int pgw_boxes_pair_p "pgw_boxes_pair" (pgw_boxes *b, uint64_t addr, uint64_t next,
                                           PyObject **pa, PyObject **pn)
    void pgw_boxes_clear(pgw_boxes *b)
    int pgw_int_rewrite_enabled()

import mmap
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


@cython.auto_pickle(False)
cdef class LockCounts:
    """The mmap lock's counters (``seq``: write unlocks; ``changes``: every
    acquire and release), kept by ``locks.MMapLock`` in C memory so that a C
    reader (the ``pt_range_walk`` iterator, between steps) need not call
    Python to learn that nothing changed."""


# The module is split along its seams; the files are textually included in
# this order (each uses what the ones before it define).
include "_pool.pxi"            # the table pool (PageTables, PageTable)
include "_state.pxi"           # C callbacks' objects and the walk state
include "_tiers.pxi"           # Python trampolines
include "_walk_support.pxi"    # what the level loops call
include "_mincore_inline.pxi"  # the benchmark's inline tier (a specialisation of the walk)
include "_walk.pxi"            # the level walk (mm/pagewalk.c)
include "_entrypoints.pxi"     # entry points (with the GIL)
