# cython: language_level=3
# `cimport pgwalk`: the C contract of the walker for Cython users (the ops
# slot typedefs, pgwalk_walk_t, CFunc/make_cfunc to put a C function in an
# MMWalkOps slot) and the inline x86-64 entry predicates.
from pgwalk.walker._core cimport *
from pgwalk.walker._entries cimport *
# ... and the batched walker's struct and steps (pt_range_walk).
from pgwalk.walker._ptrange cimport *
