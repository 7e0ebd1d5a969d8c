# cython: language_level=3
"""A pte_entry slot written in Cython, compiled into the user's own module:
counts present PTEs, ``noexcept nogil``, run by the walker without the GIL.

Build against the installed pgwalk with ``python build.py`` (this folder)."""

from libc.stdint cimport uint64_t, int64_t

cimport pgwalk


cdef int count_present(uint64_t *entry, uint64_t addr, uint64_t next,
                       pgwalk.pgwalk_walk_t *walk, void *ctx) noexcept nogil:
    if pgwalk.pte_present(entry[0]):
        (<int64_t *>ctx)[0] += 1
    return 0


cdef class CountPresent:
    cdef int64_t n
    cdef readonly pgwalk.CFunc pte_entry

    def __cinit__(self):
        self.n = 0
        self.pte_entry = pgwalk.make_cfunc(<void *>count_present, &self.n, "entry", self)

    @property
    def value(self):
        return self.n
