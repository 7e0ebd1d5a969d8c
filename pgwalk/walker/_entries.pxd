# cython: language_level=3
"""x86-64 entry predicates as inline C, for the walker's hot loops.

The same definitions as the pure-Python ``pgwalk.entries`` (checked against
each other in tests/test_entries.py).  Everything is ``noexcept nogil``.
"""

from libc.stdint cimport uint64_t

cdef enum:
    PAGE_SHIFT = 12
    PTRS = 512

cdef extern from *:
    """
    #define PGW_PAGE_SIZE        ((uint64_t)4096)
    #define PGW_PMD_SIZE         ((uint64_t)1 << 21)
    #define PGW_PUD_SIZE         ((uint64_t)1 << 30)
    #define PGW_P4D_SIZE         ((uint64_t)1 << 39)
    #define PGW_P                ((uint64_t)1 << 0)
    #define PGW_RW               ((uint64_t)1 << 1)
    #define PGW_USER             ((uint64_t)1 << 2)
    #define PGW_ACCESSED         ((uint64_t)1 << 5)
    #define PGW_DIRTY            ((uint64_t)1 << 6)
    #define PGW_PSE              ((uint64_t)1 << 7)
    #define PGW_PROTNONE         ((uint64_t)1 << 8)
    #define PGW_SPECIAL          ((uint64_t)1 << 9)
    #define PGW_DEVMAP           ((uint64_t)1 << 58)
    #define PGW_NX               ((uint64_t)1 << 63)
    #define PGW_KNL_ERRATUM      (PGW_ACCESSED | PGW_DIRTY)
    #define PGW_KERNPG_TABLE     (PGW_P | PGW_RW | PGW_ACCESSED | PGW_DIRTY)
    #define PGW_PAGE_TABLE       (PGW_KERNPG_TABLE | PGW_USER)
    #define PGW_PFN_MASK         ((((uint64_t)1 << 52) - 1) & ~(uint64_t)0xfff)
    #define PGW_FLAGS_MASK       (~PGW_PFN_MASK)
    #define PGW_PMD_PAGE_MASK    ((((uint64_t)1 << 52) - 1) & ~(((uint64_t)1 << 21) - 1))
    #define PGW_PUD_PAGE_MASK    ((((uint64_t)1 << 52) - 1) & ~(((uint64_t)1 << 30) - 1))
    #define PGW_SWP_TAG          ((uint64_t)1 << 1)
    #define PGW_SWP_TYPE_SHIFT   52
    #define PGW_SWP_OFFSET_MASK  ((((uint64_t)1) << 40) - 1)
    #define PGW_SWP_MIGRATION_READ            25
    #define PGW_SWP_MIGRATION_READ_EXCLUSIVE  26
    #define PGW_SWP_MIGRATION_WRITE           27
    #define PGW_SWP_PTE_MARKER                31
    #define PGW_MAX_SWAPFILES                 24
    #define PGW_SWP_HWPOISON                  24
    #define PGW_SWP_DEVICE_WRITE              28
    #define PGW_SWP_DEVICE_READ               29
    #define PGW_SWP_DEVICE_EXCLUSIVE          30
    #define PGW_SOFT_DIRTY       ((uint64_t)1 << 11)
    #define PGW_SAVED_DIRTY      ((uint64_t)1 << 57)
    #define PGW_ZERO_PFN         ((uint64_t)1)
    #define PGW_HUGE_ZERO_PFN    ((uint64_t)512)
    """
    uint64_t PGW_PAGE_SIZE, PGW_PMD_SIZE, PGW_PUD_SIZE, PGW_P4D_SIZE, PGW_P, PGW_RW, PGW_USER, PGW_ACCESSED, PGW_DIRTY
    uint64_t PGW_PSE, PGW_PROTNONE, PGW_SPECIAL, PGW_DEVMAP, PGW_NX
    uint64_t PGW_KNL_ERRATUM, PGW_KERNPG_TABLE, PGW_PAGE_TABLE
    uint64_t PGW_PFN_MASK, PGW_FLAGS_MASK, PGW_PMD_PAGE_MASK, PGW_PUD_PAGE_MASK
    uint64_t PGW_SWP_TAG, PGW_SWP_OFFSET_MASK
    int PGW_SWP_TYPE_SHIFT
    uint64_t PGW_SWP_MIGRATION_READ, PGW_SWP_MIGRATION_READ_EXCLUSIVE
    uint64_t PGW_SWP_MIGRATION_WRITE, PGW_SWP_PTE_MARKER
    uint64_t PGW_MAX_SWAPFILES, PGW_SWP_HWPOISON, PGW_SWP_DEVICE_WRITE
    uint64_t PGW_SWP_DEVICE_READ, PGW_SWP_DEVICE_EXCLUSIVE
    uint64_t PGW_SOFT_DIRTY, PGW_SAVED_DIRTY
    uint64_t PGW_ZERO_PFN, PGW_HUGE_ZERO_PFN


# --- none / present ---------------------------------------------------------
cdef inline bint pte_none(uint64_t v) noexcept nogil:
    return (v & ~PGW_KNL_ERRATUM) == 0

cdef inline bint pgd_none_l5(uint64_t v) noexcept nogil:
    return v == 0

cdef inline bint pte_present(uint64_t v) noexcept nogil:
    return (v & (PGW_P | PGW_PROTNONE)) != 0

cdef inline bint pmd_present(uint64_t v) noexcept nogil:
    return (v & (PGW_P | PGW_PROTNONE | PGW_PSE)) != 0

cdef inline bint pud_present(uint64_t v) noexcept nogil:
    return (v & PGW_P) != 0

# --- flags / pfn ------------------------------------------------------------
cdef inline uint64_t pmd_flags(uint64_t v) noexcept nogil:
    if v & PGW_PSE:
        return v & ~PGW_PMD_PAGE_MASK
    return v & PGW_FLAGS_MASK

cdef inline uint64_t pud_flags(uint64_t v) noexcept nogil:
    if v & PGW_PSE:
        return v & ~PGW_PUD_PAGE_MASK
    return v & PGW_FLAGS_MASK

cdef inline uint64_t pmd_pfn(uint64_t v) noexcept nogil:
    if v & PGW_PSE:
        return (v & PGW_PMD_PAGE_MASK) >> PAGE_SHIFT
    return (v & PGW_PFN_MASK) >> PAGE_SHIFT

# --- leaves / huge ----------------------------------------------------------
cdef inline bint pmd_leaf(uint64_t v) noexcept nogil:
    return (v & PGW_PSE) != 0

cdef inline bint pmd_trans_huge(uint64_t v) noexcept nogil:
    return (v & (PGW_PSE | PGW_DEVMAP)) == PGW_PSE

cdef inline bint pmd_devmap(uint64_t v) noexcept nogil:
    return (v & PGW_DEVMAP) != 0

# --- bad (PTI build: NX ignored at the top levels) ----------------------------
cdef inline bint pgd_bad_l5(uint64_t v) noexcept nogil:
    return ((v & PGW_FLAGS_MASK) & ~(PGW_USER | PGW_NX)) != PGW_KERNPG_TABLE

cdef inline bint p4d_bad(uint64_t v) noexcept nogil:
    return ((v & PGW_FLAGS_MASK) & ~(PGW_KERNPG_TABLE | PGW_USER | PGW_NX)) != 0

cdef inline bint pmd_bad(uint64_t v) noexcept nogil:
    return (pmd_flags(v) & ~(PGW_USER | PGW_ACCESSED)) != (PGW_KERNPG_TABLE & ~PGW_ACCESSED)

# --- swap-format entries ----------------------------------------------------
cdef inline uint64_t swp_pte_type(uint64_t v) noexcept nogil:
    return (v >> PGW_SWP_TYPE_SHIFT) & 31

cdef inline uint64_t swp_pte_offset(uint64_t v) noexcept nogil:
    return (v >> PAGE_SHIFT) & PGW_SWP_OFFSET_MASK

cdef inline uint64_t mk_swp_pte(uint64_t type, uint64_t offset) noexcept nogil:
    return (type << PGW_SWP_TYPE_SHIFT) | ((offset & PGW_SWP_OFFSET_MASK) << PAGE_SHIFT) | PGW_SWP_TAG

cdef inline bint is_swap_pmd(uint64_t v) noexcept nogil:
    return not pte_none(v) and not pmd_present(v)

cdef inline bint is_pmd_migration_entry(uint64_t v) noexcept nogil:
    cdef uint64_t t
    if not is_swap_pmd(v):
        return False
    t = swp_pte_type(v)
    return t == PGW_SWP_MIGRATION_READ or t == PGW_SWP_MIGRATION_READ_EXCLUSIVE or t == PGW_SWP_MIGRATION_WRITE

cdef inline uint64_t mk_table(uint64_t index) noexcept nogil:
    return ((index << PAGE_SHIFT) & PGW_PFN_MASK) | PGW_PAGE_TABLE

cdef inline uint64_t entry_index(uint64_t v) noexcept nogil:
    return (v & PGW_PFN_MASK) >> PAGE_SHIFT
