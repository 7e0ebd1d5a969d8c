# cython: language_level=3
# `cimport pgwalk._core` keeps working: the walker's C contract lives in
# pgwalk/walker/_core.pxd.
from pgwalk.walker._core cimport *
