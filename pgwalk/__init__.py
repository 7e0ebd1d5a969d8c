"""pgwalk: the Linux kernel's generic page-table walker (mm/pagewalk.c,
6.13, with install_pte) over numpy-backed x86-64 page tables.

Re-exports only; see README.md for examples.  Three rooms: the walker
(``pgwalk.walker``), the process model (``pgwalk.process``) and memory
images (``pgwalk.image``); ``docs/architecture.md`` shows how they fit.
"""

from . import constants, entries
# the names of modules that moved into the rooms, kept as attributes too
from . import locks, lowlevel, mm, ops  # noqa: F401
from .walker import (
    Batch, CFunc, EntryRef, LockAssertionError, LowLevelCallable, MMWalk, MMWalkOps,
    PageTable, PtRangeRecord, Scratch, WalkStats, WalkStruct, batch, pt_range_walk,
    vma_start_write,
    walk_page_range, walk_page_range_novma, walk_page_range_vma, walk_page_vma,
    # today's kernel beside 6.13 (docs/pagewalk-releases.md)
    KERNELS, check_ops_safe, get_default_kernel, set_default_kernel,
    lock_vma_under_rcu, vma_assert_locked, vma_end_read, vma_read_locked,
    walk_kernel_page_table_range, walk_kernel_page_table_range_lockless,
)
from .constants import *  # noqa: F401,F403  (geometry, enums, VM_/PROT_/MAP_/MADV_)
from .entries import (
    is_guard_marker, is_migration_entry, is_pmd_migration_entry, is_pte_marker,
    is_swap_pmd, is_swap_pte, make_pte_marker, mk_table, p4d_bad, p4d_none,
    p4d_present, pfn_pmd, pfn_pte, pfn_pud, pgd_bad, pgd_none, pgd_present,
    pmd_bad, pmd_devmap, pmd_leaf, pmd_none, pmd_pfn, pmd_present,
    pmd_to_swp_entry, pmd_trans_huge, pte_marker_get, pte_none, pte_pfn,
    pte_present, pte_to_swp_entry, pud_bad, pud_devmap, pud_leaf, pud_none,
    pud_pfn, pud_present, pud_trans_huge, swp_entry, swp_entry_to_pmd,
    swp_entry_to_pte, swp_offset, swp_type, table_index,
)
from .process import MM, VMA, BusError, InvariantError, SegmentationFault, init_mm
from .image import ImageError, PhysImage

__version__ = "0.1.0"
