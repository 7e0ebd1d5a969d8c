/* pgwalk: boxing of the addresses handed to plain Python callbacks.
 *
 * A Python pte_entry is called once per slot with (entry, addr, next, walk).
 * One slot's next is the following slot's addr, so each call needs one new
 * Python int.  Allocating and freeing it is about a third of the call's cost
 * (measured with perf on CPython 3.11), so the walk keeps two boxes and, when
 * nobody but the walk holds one (its reference count is 1), writes the new
 * value into it instead of allocating.  An int that a callback kept has a
 * higher count and is never touched: what a callback sees never changes.
 *
 * The rewrite needs the layout of CPython's int, so it is done only on the
 * versions whose layout is written below (3.11: ob_size; 3.12 and 3.13:
 * lv_tag), with 30-bit digits and the GIL; elsewhere every value is a fresh
 * int, which is always correct.  Boxes made here are created with room for
 * three digits (any 64-bit value) so a rewrite never needs more room.
 */
#ifndef PGWALK_PYINT_H
#define PGWALK_PYINT_H

#include <Python.h>
#include <stdint.h>

#if !defined(PYPY_VERSION) && !defined(Py_GIL_DISABLED) && \
    PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
#  if PyLong_SHIFT == 30
#    define PGW_INT_REWRITE 1
#  endif
#endif
#ifndef PGW_INT_REWRITE
#  define PGW_INT_REWRITE 0
#endif

/* Smallest value never taken from CPython's small-int cache (-5..256). */
#define PGW_FIRST_UNCACHED 257

static inline int pgw_int_rewrite_enabled(void) { return PGW_INT_REWRITE; }

/* Write v (>= PGW_FIRST_UNCACHED) into a box made by pgw_int_new; 1 if done. */
static inline int pgw_int_set(PyObject *o, uint64_t v)
{
#if PGW_INT_REWRITE
    PyLongObject *l = (PyLongObject *)o;
    Py_ssize_t n;
    digit *d;
    if (v < PGW_FIRST_UNCACHED || Py_REFCNT(o) != 1 || !PyLong_CheckExact(o))
        return 0;
    n = v < ((uint64_t)1 << 30) ? 1 : (v < ((uint64_t)1 << 60) ? 2 : 3);
#  if PY_VERSION_HEX < 0x030C0000
    d = l->ob_digit;
    d[0] = (digit)(v & PyLong_MASK);
    if (n > 1) d[1] = (digit)((v >> 30) & PyLong_MASK);
    if (n > 2) d[2] = (digit)(v >> 60);
    Py_SET_SIZE(o, n);
#  else
    d = l->long_value.ob_digit;
    d[0] = (digit)(v & PyLong_MASK);
    if (n > 1) d[1] = (digit)((v >> 30) & PyLong_MASK);
    if (n > 2) d[2] = (digit)(v >> 60);
    l->long_value.lv_tag = ((uintptr_t)n) << 3;      /* n digits, sign positive */
#  endif
    return 1;
#else
    (void)o; (void)v;
    return 0;
#endif
}

/* A new reference to an int of value v; a rewritable box where possible. */
static inline PyObject *pgw_int_new(uint64_t v)
{
#if PGW_INT_REWRITE
    PyObject *o;
    if (v < PGW_FIRST_UNCACHED)
        return PyLong_FromUnsignedLongLong(v);
    o = PyLong_FromUnsignedLongLong((uint64_t)1 << 62);     /* three digits of room */
    if (o != NULL && !pgw_int_set(o, v)) {
        Py_DECREF(o);
        return PyLong_FromUnsignedLongLong(v);
    }
    return o;
#else
    return PyLong_FromUnsignedLongLong(v);
#endif
}

/* The walk's two boxes: cur holds the value cur_val (the last next handed
 * out, i.e. the coming addr); spare is the one before, reused when free. */
typedef struct {
    PyObject *cur;
    PyObject *spare;
    uint64_t cur_val;
} pgw_boxes;

/* Box addr and next for one call: borrowed references in *pa and *pn, owned
 * by b until the following call or pgw_boxes_clear.  -1 with an exception set
 * if an int could not be made. */
static inline int pgw_boxes_pair(pgw_boxes *b, uint64_t addr, uint64_t next,
                                 PyObject **pa, PyObject **pn)
{
    PyObject *t;
    if (b->cur == NULL || b->cur_val != addr) {
        if (b->cur != NULL && pgw_int_set(b->cur, addr)) {
            /* rewritten in place */
        } else {
            t = pgw_int_new(addr);
            if (t == NULL)
                return -1;
            Py_XDECREF(b->cur);
            b->cur = t;
        }
        b->cur_val = addr;
    }
    if (b->spare == NULL || !pgw_int_set(b->spare, next)) {
        t = pgw_int_new(next);
        if (t == NULL)
            return -1;
        Py_XDECREF(b->spare);
        b->spare = t;
    }
    *pa = b->cur;
    *pn = b->spare;
    /* after this call, next's box is the coming addr's */
    t = b->cur;
    b->cur = b->spare;
    b->spare = t;
    b->cur_val = next;
    return 0;
}

static inline void pgw_boxes_clear(pgw_boxes *b)
{
    Py_CLEAR(b->cur);
    Py_CLEAR(b->spare);
    b->cur_val = 0;
}

#endif
