# cython: language_level=3
"""Declarations of the process model's C ops shared with Python.

The page flags are defined here, once: the C ops use them as C constants and
Python reads them as attributes of the compiled ``_mmops`` module
(``pgwalk.process.objects`` re-exports them)."""

# Flags the model keeps per physical page (per PFN, in ``Phys``).
cpdef enum PageFlag:
    PF_DATA = 1          # content is not all zero (written by a touch)
    PF_LAZYFREE = 2      # MADV_FREE'd, clean: reclaim may discard it
    PF_SHMEM = 4         # a shmem (page cache) page: not anonymous
    PF_LARGE = 8         # part of a PMD-sized folio (THP)
    PF_ANON = 16         # an anonymous page
    PF_SHMEM_DIRTY = 32  # a shmem page written through a mapping (reclaim must keep it)
    PF_FDIRTY = 64       # an anonymous folio's PG_dirty (anon_folio_dirty in _mmops.pyx)
