# cython: language_level=3
"""The walker's constants as C constants, defined once for every Cython
module (the walker's, the process model's and images' C ops).

The Python view of the same values is ``pgwalk.constants``; the compiled
core exposes these as ``_core.C_CONSTANTS`` so a test checks that the two
views agree."""

cdef enum:
    # levels (pgwalk.constants.PGD ... PTE)
    L_PGD = 0
    L_P4D = 1
    L_PUD = 2
    L_PMD = 3
    L_PTE = 4
    # walk.action (ACTION_SUBTREE, ACTION_CONTINUE, ACTION_AGAIN)
    ACT_SUBTREE = 0
    ACT_CONTINUE = 1
    ACT_AGAIN = 2
    # errnos the C code returns (negated)
    E_NOMEM = 12
    E_INVAL = 22
    # entries per table (PTRS_PER_PTE and the others)
    NR = 512
    # the model's shared zero pages (ZERO_PFN, HUGE_ZERO_PFN)
    ZERO_PFN = 1
    HUGE_ZERO_PFN = 512
    # pt_range_walk (the batched walker): PT_TYPE_* flags, PTW_* step types
    # and levels, as pgwalk.constants has them
    PT_TYPE_NONE = 1
    PT_TYPE_FOLIO = 2
    PT_TYPE_MARKER = 4
    PT_TYPE_PFN = 8
    PT_TYPE_SWAP = 16
    PT_TYPE_MIGRATION = 32
    PT_TYPE_DEVICE = 64
    PT_TYPE_HWPOISON = 128
    PT_TYPE_ALL = 255
    PTW_ABORT = 0
    PTW_DONE = 1
    PTW_NONE = 2
    PTW_FOLIO = 3
    PTW_MARKER = 4
    PTW_PFN = 5
    PTW_SWAP = 6
    PTW_MIGRATION = 7
    PTW_DEVICE = 8
    PTW_HWPOISON = 9
    PTW_PUD_LEVEL = 0
    PTW_PMD_LEVEL = 1
    PTW_PTE_LEVEL = 2
