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
