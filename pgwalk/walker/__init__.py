"""The walker: the kernel's generic page-table walker and what it walks.

Holds the table store (``_core``: slab pool, ``PageTables``), the callback
walk (``_core``'s level loops, ``api``'s entry points, ``internal``'s
``walk_page_range_mm``), the callback tiers (``ops``, ``lowlevel``,
``_core``'s trampolines), built-in C ops (``_builtin``), the walker-facing
address space (``addrspace``: VMAs, mmap lock, table editing), ``ptdump``
and the pure-Python reference walker (``reference``); the batched,
caller-driven walker ``pt_range_walk`` (``_ptrange``, its reference
``ptrange_reference``, the iterator in ``ptrange``).

May use: ``pgwalk.constants`` and ``pgwalk.entries`` only.  It knows nothing
of the process model or of memory images; they use it through the names
exported here and through the C contract in ``_core.pxd``/``_entries.pxd``.
"""

from ._args import (
    KERNELS, check_ops_safe, check_range, get_default_kernel, set_default_kernel,
)
from ._core import (
    Batch, CFunc, EntryRef, LockAssertionError, MMWalk, PageTable, PageTables, Scratch,
    WalkStats, batch,
)
from .addrspace import DEFAULT_PROT, AddressSpace, InvariantError
from .api import (
    walk_kernel_page_table_range, walk_kernel_page_table_range_lockless, walk_page_range,
    walk_page_range_novma, walk_page_range_vma, walk_page_vma,
)
from .internal import (
    walk_page_range_debug, walk_page_range_mm, walk_page_range_mm_unsafe,
    walk_page_range_vma_unsafe,
)
from .locks import (
    MMapLock, lock_vma_under_rcu, vma_assert_locked, vma_end_read, vma_read_locked,
    vma_start_write, vma_write_locked,
)
from .lowlevel import LowLevelCallable, WalkStruct
from .ops import CALLBACKS, MMWalkOps
from ._ptrange import pt_range_walk
from .ptrange import PtRangeRecord, PtRangeWalk
from .vma import VMA

__all__ = [
    "AddressSpace", "Batch", "CALLBACKS", "CFunc", "DEFAULT_PROT", "EntryRef",
    "InvariantError", "KERNELS", "LockAssertionError", "LowLevelCallable", "MMWalk", "MMWalkOps",
    "MMapLock", "PageTable", "PageTables", "PtRangeRecord", "PtRangeWalk", "Scratch", "VMA", "WalkStats", "WalkStruct",
    "batch", "check_ops_safe", "check_range", "get_default_kernel", "lock_vma_under_rcu",
    "pt_range_walk", "set_default_kernel", "vma_assert_locked", "vma_end_read", "vma_read_locked",
    "vma_start_write", "vma_write_locked", "walk_kernel_page_table_range",
    "walk_kernel_page_table_range_lockless", "walk_page_range", "walk_page_range_debug",
    "walk_page_range_mm", "walk_page_range_mm_unsafe", "walk_page_range_novma",
    "walk_page_range_vma", "walk_page_range_vma_unsafe", "walk_page_vma",
]
