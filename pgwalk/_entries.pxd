# cython: language_level=3
# `cimport pgwalk._entries` keeps working: the inline entry predicates live
# in pgwalk/walker/_entries.pxd.
from pgwalk.walker._entries cimport *
