"""The walker-facing address space: ``AddressSpace`` (tables, VMAs, the
mmap lock) and ``VMA``.

``AddressSpace`` extends the compiled ``PageTables`` (the slab pool and the
top-level table) with what the walker needs from an ``mm_struct``: the VMA
list with ``find_vma`` in O(log n), the mmap lock model, and page-table
editing calls for building models and tests.  The process model
(``pgwalk.process.MM``) and memory images (``pgwalk.image``) are built on it.
"""

from .. import entries as E
from ..constants import (
    _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER,
    FIRST_DATA_PFN, P4D, PAGE_SIZE, PGD, PGWALK_RDLOCK, PGWALK_WRLOCK,
    PGWALK_VMA_RDLOCK_VERIFY, PGWALK_WRLOCK_VERIFY, PMD, PMD_SIZE, PTE, PUD, PUD_SIZE, U64_MASK,
    task_size,
)
from ._core import LockAssertionError, PageTable, PageTables
from .api import walk_page_range
from .locks import MMapLock, vma_assert_locked, vma_start_write, vma_write_locked
from .ptrange import default_folio
from .vma import VMA, VMATree

DEFAULT_PROT = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY
LEVEL_SIZES = {PTE: PAGE_SIZE, PMD: PMD_SIZE, PUD: PUD_SIZE}


class InvariantError(AssertionError):
    """``validate()`` found a broken structural invariant."""


class AddressSpace(PageTables):
    """An address space as the walker sees it (``struct mm_struct``):
    x86-64 page tables with 4 (p4d folded) or 5 levels, VMAs and the mmap
    lock, with calls to edit the tables directly."""

    def __init__(self, levels=4, is_init_mm=False):
        self.vma_tree = VMATree()
        self._lock = MMapLock()
        self.task_size = task_size(levels)
        self._next_pfn = FIRST_DATA_PFN

    def _lowlevel_edit(self, what):
        """Called before each low-level edit (``map``, ``set_entry``,
        ``add_vma``); a model built on this class that keeps its own
        bookkeeping overrides it to learn that the edit bypassed it."""

    def __repr__(self):
        kind = "init_mm" if self.is_init_mm else type(self).__name__
        return f"<{kind} levels={self.levels} vmas={len(self.vma_tree)} tables={self.nr_tables}>"

    # --- locks ---------------------------------------------------------------
    def mmap_read_lock(self):
        """Context manager: hold the mmap lock for reading."""
        return self._lock.read()

    def mmap_write_lock(self):
        """Context manager: hold the mmap lock for writing."""
        return self._lock.write()

    def _process_mm_walk_lock(self, walk_lock):
        if walk_lock == PGWALK_VMA_RDLOCK_VERIFY:
            return                          # the VMA lock is checked per VMA
        if walk_lock == PGWALK_RDLOCK:
            if not self._lock.held():
                raise LockAssertionError("this walk (PGWALK_RDLOCK) needs the mmap lock: "
                                         "use `with mm.mmap_read_lock():`")
        elif not self._lock.write_held():
            name = "PGWALK_WRLOCK" if walk_lock == PGWALK_WRLOCK else "PGWALK_WRLOCK_VERIFY"
            raise LockAssertionError(f"this walk ({name}) needs the mmap write lock: "
                                     "use `with mm.mmap_write_lock():`")

    def _process_vma_walk_lock(self, vma, walk_lock):
        if walk_lock == PGWALK_WRLOCK:
            vma_start_write(vma)
        elif walk_lock == PGWALK_WRLOCK_VERIFY and not vma_write_locked(vma):
            raise LockAssertionError(f"PGWALK_WRLOCK_VERIFY needs {vma!r} write-locked: "
                                     "call pgwalk.vma_start_write(vma) under mm.mmap_write_lock()")
        elif walk_lock == PGWALK_VMA_RDLOCK_VERIFY:
            vma_assert_locked(vma)

    def _assert_novma_lock(self):
        if self.is_init_mm:
            if not self._lock.held():
                raise LockAssertionError("a no-VMA walk of the kernel mm needs its mmap lock: "
                                         "use `with mm.mmap_read_lock():`")
        elif not self._lock.write_held():
            raise LockAssertionError("a no-VMA walk of a user mm needs the mmap write lock: "
                                     "use `with mm.mmap_write_lock():`")

    def walk(self, start, end, ops, private=None):
        """``walk_page_range`` under the lock ``ops.walk_lock`` asks for."""
        if ops.walk_lock == PGWALK_RDLOCK:
            with self.mmap_read_lock():
                return walk_page_range(self, start, end, ops, private)
        with self.mmap_write_lock():
            if ops.walk_lock == PGWALK_WRLOCK_VERIFY:
                vma = self.find_vma(start)
                while vma is not None and vma.vm_start < end:
                    vma_start_write(vma)
                    vma = self.find_vma(vma.vm_end)
            return walk_page_range(self, start, end, ops, private)

    # --- folios, for the batched walker (pt_range_walk) ----------------------
    def pt_folio(self, vma, addr, pfn):
        """``page_folio`` for ``pt_range_walk``: (head PFN, number of pages,
        is a shared zero page) of the folio holding ``pfn``, met mapped at
        ``addr`` of ``vma``.  An address space without a physical-memory
        model knows no large folios: every PFN is its own order-0 folio."""
        return default_folio(pfn)

    def pt_folio_hook(self, vma):
        """The same answer for the compiled walker: an object whose
        ``fn_address`` and ``ctx_address`` are a ``pgwalk_folio_fn`` (see
        ``_ptrange.pxd``) bound to ``vma`` and its context, kept alive by the
        object; None: the default (order-0 folios).  A model built on this
        class that overrides ``pt_folio`` overrides this too."""
        return None

    # --- VMAs ----------------------------------------------------------------
    @property
    def vmas(self):
        """The VMAs, in address order (a copy of the list)."""
        return list(self.vma_tree)

    def find_vma(self, addr):
        """The first VMA whose end is above ``addr``, or None (O(log n))."""
        return self.vma_tree.find(addr)

    def add_vma(self, start, end, vm_flags=0, hugepage_size=PMD_SIZE):
        """Insert a VMA as it is: no merging, no page tables."""
        self._lowlevel_edit("add_vma")
        vma = VMA(start, end, vm_flags, vm_mm=self, hugepage_size=hugepage_size)
        self.vma_tree.insert(vma)
        return vma

    # --- table access for models built on the walker ----------------------------
    # The process model and images reach the table store through these, not
    # through the compiled core's private methods.
    def table(self, tid):
        """A writable numpy view of table ``tid``'s 512 entries."""
        return self._table(tid)

    def locate(self, addr, level, alloc=False):
        """(table id, index) of the slot for ``addr`` at ``level``, or None;
        ``alloc`` allocates the missing tables on the way."""
        return self._locate(addr, level, alloc)

    def child(self, tid, idx):
        """The table that slot (``tid``, ``idx``) links to, or -1."""
        return self._child(tid, idx)

    def free_below(self, tid, idx, level):
        """Free the tables below slot (``tid``, ``idx``) at ``level`` and clear it."""
        return self._free_below(tid, idx, level)

    def attach_image(self, frames, root_pfn, segments=()):
        """Serve the tables from a physical-memory image's frames (read only)."""
        return self._attach_image(frames, root_pfn, segments)

    # --- page-table editing ----------------------------------------------------
    @property
    def pgd(self):
        """The top-level table."""
        return PageTable(self, self.pgd_id, PGD)

    def _norm_level(self, level, allowed, name="level"):
        if not isinstance(level, int) or isinstance(level, bool) or level not in allowed:
            raise ValueError(f"{name} must be one of {sorted(allowed)}, not {level!r}")
        if self.levels == 4 and level == P4D:
            return PGD
        return level

    def _addr(self, addr):
        if not isinstance(addr, int) or isinstance(addr, bool):
            raise TypeError(f"addr must be an int, not {type(addr).__name__}")
        if not 0 <= addr <= U64_MASK:
            raise ValueError(f"addr must fit in 64 bits: {addr}")
        return addr

    def alloc_pfn(self, nr=1, align=1):
        """Hand out ``nr`` fresh data PFNs (aligned), from the mm's counter."""
        pfn = -(-self._next_pfn // align) * align
        self._next_pfn = pfn + nr
        return pfn

    def map(self, addr, level=PTE, pfn=None, prot=DEFAULT_PROT):
        """Install a present leaf at ``level`` (PTE, PMD or PUD) for the
        aligned ``addr``, allocating the tables above it; returns the entry."""
        level = self._norm_level(level, (PTE, PMD, PUD))
        size = LEVEL_SIZES[level]
        if self._addr(addr) % size:
            raise ValueError(f"addr {addr:#x} is not aligned to the level's {size:#x} bytes")
        if pfn is None:
            pfn = self.alloc_pfn(size // PAGE_SIZE, size // PAGE_SIZE)
        elif not isinstance(pfn, int) or isinstance(pfn, bool):
            raise TypeError(f"pfn must be an int, not {type(pfn).__name__}")
        elif not 0 <= pfn < 1 << 40:
            raise ValueError(f"pfn must fit in the 40-bit PFN field: {pfn:#x}")
        value = {PTE: E.pfn_pte, PMD: E.pfn_pmd, PUD: E.pfn_pud}[level](pfn, prot)
        self._lowlevel_edit("map")
        tid, idx = self._locate(addr, level, True)
        if self._child(tid, idx) >= 0:
            raise ValueError(f"addr {addr:#x}: the slot at level {level} links a page table")
        self._table(tid)[idx] = value
        return value

    def alloc_table(self, addr, level):
        """Make the entry at ``level`` covering ``addr`` link a (possibly
        empty) next-level table; returns that table."""
        level = self._norm_level(level, (PGD, P4D, PUD, PMD))
        tid, idx = self._locate(self._addr(addr), level, True)
        child = self._child(tid, idx)
        if child < 0:
            if int(self._table(tid)[idx]) != 0:
                raise ValueError(f"addr {addr:#x}: the slot at level {level} holds "
                                 f"{int(self._table(tid)[idx]):#x}, not a table")
            cl = PUD if (self.levels == 4 and level == PGD) else level + 1
            if self._alloc(tid, idx, cl) < 0:
                raise OSError(12, "page-table allocation failed")
            child = self._child(tid, idx)
        return PageTable(self, child, self._table_level(child))

    def entry(self, addr, level):
        """The raw value of the slot at ``level`` for ``addr`` (0 where the
        tables above it are missing)."""
        level = self._norm_level(level, (PGD, P4D, PUD, PMD, PTE))
        try:
            loc = self._locate(self._addr(addr), level, False)
        except ValueError:
            return 0
        if loc is None:
            return 0
        return int(self._table(loc[0])[loc[1]])

    def set_entry(self, addr, level, value):
        """Write a raw value (anything, garbage included) into the slot at
        ``level`` for ``addr``, allocating the tables above it.  Overwriting
        a table link frees the tables below it first -- refused with
        RuntimeError while a walk of this mm runs (from one of its callbacks
        or another thread), as the walk may be inside those tables."""
        level = self._norm_level(level, (PGD, P4D, PUD, PMD, PTE))
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"value must be an int, not {type(value).__name__}")
        if not 0 <= value <= U64_MASK:
            raise ValueError(f"value must fit in 64 bits: {value}")
        self._lowlevel_edit("set_entry")
        tid, idx = self._locate(self._addr(addr), level, True)
        if level < PTE and self._child(tid, idx) >= 0 and int(self._table(tid)[idx]) != value:
            if self.active_walks:
                # a walk (a callback of it, or another thread) may hold a
                # pointer into the tables below: freeing them would let it
                # write into a table handed out again later
                raise RuntimeError(f"set_entry: the slot at level {level} for {addr:#x} links "
                                   "page tables, which cannot be freed while a walk of this "
                                   "mm is running")
            self._free_below(tid, idx, level)
        self._table(tid)[idx] = value

    def validate(self):
        """Check every structural invariant; raise InvariantError on the first
        broken one: the tables and their pool (``_validate_tables``: each
        table linked once from its owner slot, the child level at every
        link, the free list and the per-level counters exact) and the VMAs
        (aligned, non-empty, sorted, disjoint, indexed, owned by this mm)."""
        msg = self._validate_tables()
        if msg is not None:
            raise InvariantError(msg)
        msg = self.vma_tree.check(self)
        if msg is not None:
            raise InvariantError(msg)
