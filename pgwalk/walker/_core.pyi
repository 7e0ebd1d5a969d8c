"""Type stubs for ``pgwalk._core``, the compiled core (``_core.pyx``).

Only what the extension module exposes to Python is described here; the
C-level contract (``pgwalk_walk_t``, ``pgwalk_ops_t``, the pool functions) is
in ``_core.pxd`` and is reachable from Cython only.
"""

from collections.abc import Iterable
from typing import Callable, Any, Final, Literal, SupportsIndex, TypedDict, overload

from typing_extensions import Self, disjoint_base

import numpy as np
from numpy.typing import DTypeLike, NDArray

from pgwalk.walker.addrspace import AddressSpace
from pgwalk.walker.vma import VMA
from pgwalk.walker.ops import MMWalkOps

# The C view of pgwalk.constants' levels, actions, errnos, table size and zero
# pages (walker/_constants.pxd), for the test that the two views agree.
C_CONSTANTS: dict[str, int]

# Callback names in dispatch-table order (the index is the slot number used
# in error messages).
SLOT_NAMES: Final[tuple[str, ...]]

class LockAssertionError(AssertionError):
    """A walk ran without the lock its ``walk_lock`` asks for (the kernel warns)."""

@disjoint_base
class LockCounts:
    """The mmap lock's counters (``seq``: write unlocks; ``changes``: every
    acquire and release), kept by ``locks.MMapLock`` in C memory so that a C
    reader (the ``pt_range_walk`` iterator, between steps) need not call
    Python to learn that nothing changed."""
    seq: int
    changes: int

# ---------------------------------------------------------------------------
# The table pool
# ---------------------------------------------------------------------------

class _LevelCounts(TypedDict):
    p4d: int
    pud: int
    pmd: int
    pte: int

class _Stats(TypedDict):
    alloc: _LevelCounts
    freed: _LevelCounts
    alloc_failed: int
    split_pmd: int
    split_pud: int
    clear_bad: int
    set_pte_at: int
    update_mmu_cache: int
    pte_map_ok: int
    pte_map_null: int
    tables: int

_StatName = Literal[
    "split_pmd", "split_pud", "clear_bad", "set_pte_at",
    "update_mmu_cache", "pte_map_ok", "pte_map_null",
]

@disjoint_base
class PageTables:
    """The page tables of one address space, in a pool of fixed slabs."""

    # The arguments are taken by ``__cinit__`` (tp_new), which also swallows
    # extra ones for subclasses such as ``pgwalk.MM``; ``levels`` must be 4
    # or 5 (ValueError).
    def __new__(cls, levels: int = 4, is_init_mm: bool = False) -> Self: ...
    @property
    def levels(self) -> int:
        """Paging levels: 4 (p4d folded) or 5."""
    @property
    def pgd_id(self) -> int:
        """Pool index of the top-level table."""
    @property
    def is_init_mm(self) -> bool: ...
    @property
    def stats(self) -> _Stats:
        """Counters (a fresh dict on every read)."""
    @property
    def nr_tables(self) -> int:
        """Live tables, the top-level one included."""
    @property
    def active_walks(self) -> int:
        """Walks of this tree running now (``set_entry`` frees no table then)."""
    def _attach_image(self, frames: NDArray[np.uint64], root_pfn: int,
                      segments: Iterable[tuple[int, int, int]] = (), bad_cap: int = 65536) -> None:
        """Make this a read-only image pool over ``frames``."""
    @property
    def bad_entries(self) -> tuple[int, NDArray[np.uint64]]:
        """Entries a walk of a read-only image could not follow (bad, or
        links out of the image, any level): (count, first addresses)."""
    def fail_table_alloc(self, at: Iterable[int] = ()) -> None:
        """Make the k-th counted table allocation from now on fail (1-based)."""

    # --- Python-level primitives (the process model and the reference walker).
    # ``tid`` is a pool index, ``idx`` a slot index in 0..511 and ``level`` a
    # table level 0 (pgd) .. 4 (pte).  Except for ``_table``, they do not
    # validate ``tid``/``idx``: out-of-range values access memory outside
    # the pool.
    def _table(self, tid: int) -> NDArray[np.uint64]:
        """A writable view of live table ``tid``'s 512 entries (ValueError if none)."""
    def _table_level(self, tid: int) -> int:
        """Level of the entries table ``tid`` holds (ValueError if not live)."""
    def _child(self, tid: int, idx: int) -> int:
        """Index of the table that slot (tid, idx) links to, or -1."""
    def _alloc(self, tid: int, idx: int, level: int) -> int:
        """Counted allocation linked at (tid, idx): 0, or -ENOMEM."""
    def _take_uncounted(self, tid: int, idx: int, level: int) -> int:
        """Uncounted allocation linked at (tid, idx); returns the new id."""
    def _free_below(self, tid: int, idx: int, level: int) -> None:
        """Free every table below slot (tid, idx) and clear the slot."""
    def _clear_leaf_hook(self, old: int, level: int) -> None:
        """What a split clearing a non-anonymous huge leaf tells the pool's owner."""
    def _stat_inc(self, name: _StatName) -> None:
        """Bump one counter (KeyError for an unknown name)."""
    def _walk_enter(self) -> None: ...
    def _walk_exit(self) -> None: ...
    def _next_alloc_fails(self) -> bool:
        """Count one allocation attempt; True if fault injection fails it."""
    @overload
    def _locate(self, addr: int, level: int, alloc: Literal[True]) -> tuple[int, int]: ...
    @overload
    def _locate(self, addr: int, level: int, alloc: bool) -> tuple[int, int] | None: ...
    def _validate_tables(self) -> str | None:
        """Structural check of the tree, the pool and the per-level
        counters; a message naming the first broken invariant, or None."""
    def _pool_poke(self, what: str, tid: int = 0, value: int = 0) -> None:
        """Test hook: corrupt the pool's bookkeeping on purpose (``what``:
        ``live``, ``ntables``, ``level``, ``owner_null``, ``owner_of``, ``free_word``,
        ``push_free``, ``stat_alloc``, ``stat_freed``)."""

@disjoint_base
class PageTable:
    """One table of an address space: ``t[i]`` reads entry i (an int);
    ``np.asarray(t)`` is a writable view of its 512 entries."""

    def __init__(self, tables: PageTables, index: int, level: int) -> None: ...
    @property
    def tables(self) -> PageTables: ...
    @property
    def index(self) -> int: ...
    @property
    def level(self) -> int: ...
    @property
    def entries(self) -> NDArray[np.uint64]:
        """A writable view of the 512 entries."""
    @overload
    def __array__(self, dtype: None = None, copy: bool | None = None) -> NDArray[np.uint64]: ...
    @overload
    def __array__(self, dtype: DTypeLike, copy: bool | None = None) -> NDArray[Any]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: SupportsIndex, /) -> int: ...

# ---------------------------------------------------------------------------
# What callbacks receive
# ---------------------------------------------------------------------------

@disjoint_base
class EntryRef:
    """A live table slot, valid only during the callback that received it
    (RuntimeError afterwards)."""

    @property
    def level(self) -> int:
        """Level of the slot: 0 (pgd) .. 4 (pte); 3 for a hugetlb entry."""
    @property
    def val(self) -> int: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def set(self, value: int) -> None:
        """Write the live slot (a 64-bit value); a table link above PTE level
        cannot be overwritten (ValueError)."""

@disjoint_base
class Scratch:
    """The ``ptep`` handed to ``install_pte``: what it holds when the callback
    returns 0 is stored in the PTE (starts 0)."""

    @property
    def val(self) -> int: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    def set(self, value: int) -> None: ...

@disjoint_base
class MMWalk:
    """The ``struct mm_walk`` a callback receives."""

    @property
    def mm(self) -> AddressSpace: ...
    @property
    def vma(self) -> VMA | None:
        """The VMA being walked; None in a hole or a no-VMA walk."""
    @property
    def pgd(self) -> PageTable | None:
        """The top-level table a no-VMA walk was given, else None."""
    @property
    def ops(self) -> MMWalkOps: ...
    private: Any
    @property
    def action(self) -> int:
        """ACTION_SUBTREE (0), ACTION_CONTINUE (1) or ACTION_AGAIN (2)."""
    @action.setter
    def action(self, value: int) -> None: ...
    @property
    def no_vma(self) -> bool: ...

# ---------------------------------------------------------------------------
# Entry points, after pgwalk.walker's argument checks.  They trust their
# arguments: ``mm`` (or ``vma.vm_mm``) must be a live ``MM`` and ``pgd`` a
# ``PageTable`` or None.  They return 0, the first non-zero callback result
# or a negative errno, and re-raise an exception a callback raised.
# ---------------------------------------------------------------------------

def _walk_range(
    mm: PageTables, start: int, end: int, ops: MMWalkOps, private: Any, stats: WalkStats | None = None,
    newer: int = 0,
) -> int: ...
def _walk_vma(
    vma: VMA, start: int, end: int, ops: MMWalkOps, private: Any, stats: WalkStats | None = None,
    newer: int = 0,
) -> int: ...
def _walk_novma(
    mm: PageTables, ranges: Iterable[tuple[int, int]], ops: MMWalkOps, pgd: PageTable | None,
    private: Any, stats: WalkStats | None = None, newer: int = 0,
) -> int: ...
def _walk_inline_mincore(
    mm: PageTables, start: int, end: int, ops: MMWalkOps, out: NDArray[np.uint8]
) -> int:
    """Benchmark baseline: MincoreOp's pte_entry inlined in the PTE loop."""

def _int_rewrite_enabled() -> bool:
    """Whether Python callbacks get addresses in reused int boxes here."""

def _c_predicates(v: int) -> dict[str, int | bool]:
    """The walker's inline C predicates on one raw value (for tests)."""

SIGNATURES: dict[str, str]
SLOT_KINDS: dict[str, str]

@disjoint_base
class CFunc:
    """A C function in an ops slot (made by C code or pgwalk.LowLevelCallable)."""
    def __init__(self, *args: object, **kwargs: object) -> None:
        """Always raises TypeError: CFuncs are made by C code."""
    @property
    def kind(self) -> str: ...
    @property
    def owner(self) -> object: ...
    @property
    def signature(self) -> str: ...
    @property
    def address(self) -> int: ...

def check_slot(name: str, value: object) -> None:
    """Raise unless ``value`` may sit in ops slot ``name``."""

class Batch:
    """A batched pte_entry: ``fn(entries, addr, next, walk)`` per run of slots."""
    fn: Callable[[NDArray[np.uint64], int, int, MMWalk], int]
    def __init__(self, fn: Callable[[NDArray[np.uint64], int, int, MMWalk], int]) -> None: ...

def batch(fn: Callable[[NDArray[np.uint64], int, int, MMWalk], int]) -> Batch:
    """Wrap ``fn`` as a batched pte_entry."""

class WalkStats:
    """What one walk did (pass as ``stats=`` to an entry point)."""
    calls: dict[str, int]
    tables: dict[str, int]
    entries: int
    indirect_calls: int
    mm: dict[str, Any]
    def __init__(self) -> None: ...
