# Part of pgwalk.walker._core (included by _core.pyx):
# the Python trampolines, the plain-Python tier behind the C slots.

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


