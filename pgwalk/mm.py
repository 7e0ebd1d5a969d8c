"""The model address space: ``MM`` (tables, VMAs, the mmap lock) and ``VMA``.

``MM`` extends the compiled ``PageTables`` (the slab pool and the top-level
table) with what the walker needs from an ``mm_struct``: the VMA list with
``find_vma`` in O(log n), the mmap lock model, and page-table editing calls
for building models and tests.
"""

import weakref
from bisect import bisect_right

import numpy as np

from . import entries as E
from ._core import LockAssertionError, PageTable, PageTables
from .constants import (
    _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER,
    FIRST_DATA_PFN, HUGE_ZERO_PFN, VM_EXEC, VM_READ, VM_SHARED, VM_WRITE, ZERO_PFN,
    _PAGE_PROTNONE, _PAGE_PSE, PHYSICAL_PMD_PAGE_MASK, PTE_MARKER_GUARD, PTE_PFN_MASK, P4D, PAGE_SHIFT, PAGE_SIZE, PGD, PGWALK_RDLOCK, PGWALK_WRLOCK,
    PGWALK_WRLOCK_VERIFY, PMD, PMD_SIZE, PTE, PUD, PUD_SIZE, U64_MASK,
    VM_HUGETLB, task_size,
)
from ._mmops import Phys
from .introspect import IntrospectMixin
from .locks import MMapLock, vma_start_write, vma_write_locked
from .process import ProcessMixin

DEFAULT_PROT = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY
GUARD_MARKER = E.make_pte_marker(PTE_MARKER_GUARD)
C_PTE_PFN_MASK = PTE_PFN_MASK
C_PMD_PFN_MASK = PHYSICAL_PMD_PAGE_MASK
PF_SHMEM = 4                   # Phys flags (pgwalk/_mmops.pyx): a shmem (page cache) page,
PF_ANON = 16                   # an anonymous page
LEVEL_SIZES = {PTE: PAGE_SIZE, PMD: PMD_SIZE, PUD: PUD_SIZE}


class InvariantError(AssertionError):
    """``MM.validate()`` found a broken structural invariant."""


class VMA:
    """A virtual memory area ``[vm_start, vm_end)`` with kernel ``VM_*`` flags.

    ``vm_ops`` is None for anonymous memory (the kernel's
    ``vma_is_anonymous``); ``hugepage_size`` applies to ``VM_HUGETLB`` VMAs.
    A VMA made on its own has ``vm_mm = None``.  The VMA refers to its mm
    weakly (an mm and its VMAs would otherwise form a reference cycle that
    only the cyclic garbage collector reclaims): once the mm is gone,
    ``vm_mm`` is None.
    """

    __slots__ = ("vm_start", "vm_end", "vm_flags", "_vm_mm", "vm_ops",
                 "hugepage_size", "_lock_seq", "vm_pgoff", "anon_vma", "vm_file",
                 "__weakref__")

    def __init__(self, start, end, vm_flags=0, vm_mm=None, vm_ops=None,
                 hugepage_size=PMD_SIZE):
        for name, v in (("start", start), ("end", end), ("vm_flags", vm_flags)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int, not {type(v).__name__}")
            if not 0 <= v <= U64_MASK:
                raise ValueError(f"{name} must fit in 64 bits: {v}")
        if start % PAGE_SIZE or end % PAGE_SIZE:
            raise ValueError(f"start and end must be page aligned: [{start:#x}, {end:#x})")
        if start >= end:
            raise ValueError(f"start must be below end: [{start:#x}, {end:#x})")
        if hugepage_size not in (PMD_SIZE, PUD_SIZE):
            raise ValueError("hugepage_size must be 2 MiB or 1 GiB")
        if vm_flags & VM_HUGETLB and (start % hugepage_size or end % hugepage_size):
            raise ValueError("a VM_HUGETLB VMA must be aligned to its huge page size")
        self.vm_start = start
        self.vm_end = end
        self.vm_flags = vm_flags
        self.vm_mm = vm_mm
        self.vm_ops = vm_ops
        self.hugepage_size = hugepage_size
        self._lock_seq = -1
        self.vm_pgoff = start >> PAGE_SHIFT     # anonymous memory: the address in pages
        self.anon_vma = None                    # set by the process model's faults
        self.vm_file = None                     # shmem object of MAP_SHARED|MAP_ANONYMOUS

    @property
    def vm_mm(self):
        """The mm this VMA belongs to, or None (made on its own, or the mm is gone)."""
        ref = self._vm_mm
        return None if ref is None else ref()

    @vm_mm.setter
    def vm_mm(self, mm):
        self._vm_mm = None if mm is None else weakref.ref(mm)

    def __repr__(self):
        return f"VMA({self.vm_start:#x}, {self.vm_end:#x}, flags={self.vm_flags:#x})"


class PhysGroup:
    """The mms that share one physical-memory map (``Phys``): an mm and the
    processes forked from it.  ``validate()`` sums their mappings to check
    the per-PFN map counts, which only holds while the group is *exact*:
    no member edited its tables or VMAs with the low-level calls (``map``,
    ``set_entry``, ``add_vma``), which bypass the physical-page bookkeeping,
    and no member was dropped without ``exit()`` (its mappings vanished
    with it while the map counts stayed)."""

    __slots__ = ("members", "exited", "inexact", "_seq", "__weakref__")

    def __init__(self):
        self.members = {}        # key -> weakref to the mm
        self.exited = set()      # keys of members that ran exit()
        self.inexact = None      # why the map counts can no longer be checked
        self._seq = 0

    def add(self, mm):
        key = self._seq
        self._seq += 1
        gref = weakref.ref(self)

        def gone(_ref, key=key):
            group = gref()
            if group is None:
                return
            group.members.pop(key, None)
            if key not in group.exited and group.inexact is None:
                group.inexact = "an mm of the group was dropped without exit()"
        self.members[key] = weakref.ref(mm, gone)
        return key

    def live(self):
        return [m for m in (r() for r in list(self.members.values())) if m is not None]


class MM(ProcessMixin, IntrospectMixin, PageTables):
    """A model address space (``struct mm_struct``): x86-64 page tables with
    4 (p4d folded) or 5 levels, VMAs and the mmap lock; the process model
    (``mmap``, ``touch``, ``madvise``, ``fork``, ... in ``pgwalk/process.py``)
    and its introspection (``pagemap``, ``mincore``, ``smaps``, ``ptdump`` in
    ``pgwalk/introspect.py``)."""

    def __init__(self, levels=4, is_init_mm=False):
        self._vmas = []             # sorted by vm_start
        self._ends = []             # their vm_end, for bisect
        self._lock = MMapLock()
        self.task_size = task_size(levels)
        self._phys = Phys(FIRST_DATA_PFN)   # shared with forked children
        self._phys.attach(self)             # splits that clear shmem PMDs update its counts
        self._join_group(PhysGroup())
        self._exited = False

    def _join_group(self, group):
        self._phys_group = group
        self._group_key = group.add(self)

    def _lowlevel_edit(self, what):
        """A low-level edit bypasses the process model's bookkeeping: the
        process-model invariants are no longer checked for this mm's group."""
        group = self._phys_group
        if group.inexact is None:
            group.inexact = f"low-level edit ({what})"

    def __repr__(self):
        kind = "init_mm" if self.is_init_mm else "MM"
        return f"<{kind} levels={self.levels} vmas={len(self._vmas)} tables={self.nr_tables}>"

    # --- locks ---------------------------------------------------------------
    def mmap_read_lock(self):
        """Context manager: hold the mmap lock for reading."""
        return self._lock.read()

    def mmap_write_lock(self):
        """Context manager: hold the mmap lock for writing."""
        return self._lock.write()

    def _process_mm_walk_lock(self, walk_lock):
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
        from .walker import walk_page_range
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

    # --- VMAs ----------------------------------------------------------------
    @property
    def vmas(self):
        """The VMAs, in address order (a copy of the list)."""
        return list(self._vmas)

    def find_vma(self, addr):
        """The first VMA whose end is above ``addr``, or None (O(log n))."""
        i = bisect_right(self._ends, addr)
        return self._vmas[i] if i < len(self._vmas) else None

    def add_vma(self, start, end, vm_flags=0, hugepage_size=PMD_SIZE):
        """Insert a VMA as it is: no merging, no page tables."""
        self._lowlevel_edit("add_vma")
        vma = VMA(start, end, vm_flags, vm_mm=self, hugepage_size=hugepage_size)
        i = bisect_right(self._ends, start)
        if i < len(self._vmas) and self._vmas[i].vm_start < end:
            raise ValueError(f"[{start:#x}, {end:#x}) overlaps {self._vmas[i]!r}")
        self._vmas.insert(i, vma)
        self._ends.insert(i, end)
        return vma

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
        return self._phys.alloc(nr, align)

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
        broken one.

        Always: the tables and their pool (``_validate_tables``: each table
        linked once from its owner slot, the child level at every link, the
        free list and the per-level counters exact) and the VMAs (aligned,
        non-empty, sorted, disjoint, indexed, owned by this mm).

        For a user mm whose group (the mm and the processes forked from it,
        sharing one physical-memory map) only the process model has touched
        (see ``PhysGroup``): what the kernel guarantees there -- no entry
        outside a VMA and no leaf above the PMD level; only present pages,
        huge pages wholly inside one VMA and guard markers; present bits and
        write bits as the VMA's protection allows; a writable private page
        mapped once; a shmem page being the object's page at that offset;
        a page mapped in an anonymous VMA being an anonymous page and one in
        a shmem VMA a shmem page; and every PFN's map count equal to the
        mappings of it in the group's live mms (a PMD counting once per
        subpage), a page nobody maps being free (no flags) unless it is a
        shmem page."""
        msg = self._validate_tables()
        if msg is not None:
            raise InvariantError(msg)
        prev_end = 0
        if len(self._ends) != len(self._vmas):
            raise InvariantError("the VMA index is out of date")
        for i, vma in enumerate(self._vmas):
            if vma.vm_start % PAGE_SIZE or vma.vm_end % PAGE_SIZE or vma.vm_start >= vma.vm_end:
                raise InvariantError(f"{vma!r} is empty or not page aligned")
            if vma.vm_start < prev_end:
                raise InvariantError(f"{vma!r} overlaps the VMA before it")
            if self._ends[i] != vma.vm_end or vma.vm_mm is not self:
                raise InvariantError(f"{vma!r}: index out of date")
            prev_end = vma.vm_end
        if not self.is_init_mm and self._phys_group.inexact is None:
            self._validate_process()

    # --- the process model's invariants ------------------------------------------
    def _leaves(self):
        """The non-empty slots that are not table links: a list of
        (level, address, value) above the PTE level, and the PTEs as two
        uint64 arrays (addresses, values)."""
        upper, pte_addr, pte_val = [], [], []
        levels = self.levels
        stack = [(self.pgd_id, PGD, 0)]         # no recursive closure: it would be a
        while stack:                            # reference cycle holding the mm
            tid, level, base = stack.pop()
            table = np.asarray(self._table(tid))
            nz = np.flatnonzero(table)
            if level == PTE:
                pte_addr.append(base + (nz.astype(np.uint64) << np.uint64(12)))
                pte_val.append(table[nz])
                continue
            shift = (39 if levels == 4 else 48) if level == PGD else 12 + 9 * (4 - level)
            for i in nz.tolist():
                addr = base + (i << shift)
                child = self._child(tid, i)
                if child >= 0:
                    stack.append((child, PUD if (levels == 4 and level == PGD) else level + 1, addr))
                else:
                    upper.append((level, addr, int(table[i])))
        empty = np.zeros(0, dtype=np.uint64)
        return (upper, np.concatenate(pte_addr) if pte_addr else empty,
                np.concatenate(pte_val) if pte_val else empty)

    def _validate_process(self):
        group = self._phys_group
        phys = self._phys
        lo, hi = FIRST_DATA_PFN, phys.next_pfn
        got = np.zeros(max(0, hi - lo), dtype=np.int64)
        exclusive = []
        for mm in group.live():
            mm._validate_mappings(got, lo, exclusive)
        mc = phys.mapcount
        want = np.fromiter((mc(p) for p in range(lo, hi)), dtype=np.int64, count=hi - lo)
        bad = np.flatnonzero(got != want)
        if bad.size:
            pfn = lo + int(bad[0])
            raise InvariantError(f"PFN {pfn:#x}: map count {int(want[bad[0]])}, but the group's "
                                 f"tables map it {int(got[bad[0]])} time(s)")
        for where, addr, pfns in exclusive:
            shared = pfns[got[pfns - lo] != 1]
            if shared.size:
                raise InvariantError(f"{where}: a writable private page at {addr:#x} maps PFN "
                                     f"{int(shared[0]):#x}, whose map count is "
                                     f"{int(got[shared[0] - lo])}")
        for i in np.flatnonzero(want == 0).tolist():
            flags = phys.flags(lo + i)
            if flags and not flags & PF_SHMEM:
                raise InvariantError(f"PFN {lo + i:#x} is mapped nowhere but not free "
                                     f"(flags {flags:#x})")
        objs = {id(v.vm_file): v.vm_file for mm in group.live() for v in mm._vmas
                if v.vm_file is not None}
        for obj in objs.values():
            _validate_shmem_folios(obj)

    def _validate_mappings(self, got, lo, exclusive):
        """Check this mm's entries against its VMAs; add its mappings per
        PFN (from ``lo``) to ``got``; list its writable private pages in
        ``exclusive``."""
        where = f"mm {self._group_key} of its group"
        upper, addrs, vals = self._leaves()
        vmas = self._vmas
        starts = np.array([v.vm_start for v in vmas] + [0], dtype=np.uint64)
        ends = np.array([v.vm_end for v in vmas] + [0], dtype=np.uint64)
        access = np.array([bool(v.vm_flags & (VM_READ | VM_WRITE | VM_EXEC)) for v in vmas] + [0],
                          dtype=bool)
        writable = np.array([bool(v.vm_flags & VM_WRITE) for v in vmas] + [0], dtype=bool)
        hi = lo + got.shape[0]

        def fail(addr, v, why):
            raise InvariantError(f"{where}: entry {int(v):#x} for {int(addr):#x}: {why}")

        def count(pfns, addr0):
            pfns = pfns.astype(np.int64)
            out = (pfns < lo) | (pfns >= hi)
            if out.any():
                fail(addr0, 0, f"maps PFN {int(pfns[out][0]):#x}, never handed out")
            np.add.at(got, pfns - lo, 1)

        def check(level, addr, val, size):
            """Vectorized over entries of one level: VMA, present, protection."""
            if not addr.size:
                return
            i = np.searchsorted(ends[:-1], addr, side="right")     # the sentinel is not sorted
            inside = (i < len(vmas)) & (starts[i] <= addr) & (addr + np.uint64(size) <= ends[i])
            if not inside.all():
                k = np.flatnonzero(~inside)[0]
                fail(addr[k], val[k], "outside any VMA (or across its end)")
            guard = val == np.uint64(GUARD_MARKER) if level == PTE else np.zeros(val.shape, bool)
            present = (val & np.uint64(_PAGE_PRESENT | _PAGE_PROTNONE)) != 0
            if level == PMD:
                present &= (val & np.uint64(_PAGE_PSE)) != 0
            ok = guard | present
            if not ok.all():
                k = np.flatnonzero(~ok)[0]
                fail(addr[k], val[k], "neither a present page nor a guard marker "
                     "(the model has no swap and no other non-present entries)")
            a, v, i = addr[present], val[present], i[present]
            p_bit = (v & np.uint64(_PAGE_PRESENT)) != 0
            if (p_bit != access[i]).any():
                k = np.flatnonzero(p_bit != access[i])[0]
                fail(a[k], v[k], f"present bit does not match the protection of {vmas[i[k]]!r}")
            rw = (v & np.uint64(_PAGE_RW)) != 0
            if (rw & ~writable[i]).any():
                k = np.flatnonzero(rw & ~writable[i])[0]
                fail(a[k], v[k], f"writable in {vmas[i[k]]!r}, which is not")
            mask = C_PTE_PFN_MASK if level == PTE else C_PMD_PFN_MASK
            pfn = (v & np.uint64(mask)) >> np.uint64(12)
            zero = (pfn == ZERO_PFN) | (pfn == HUGE_ZERO_PFN)
            if (zero & rw).any():
                k = np.flatnonzero(zero & rw)[0]
                fail(a[k], v[k], "the zero page mapped writable")
            npages = size // PAGE_SIZE
            for j in np.unique(i[~zero]).tolist():
                vma = vmas[j]
                sel = (i == j) & ~zero
                va, vv, vp = a[sel], v[sel], pfn[sel].astype(np.int64)
                if vma.vm_file is not None:
                    pages = vma.vm_file.pages
                    idx = (vma.vm_pgoff + ((va - np.uint64(vma.vm_start)) >> np.uint64(12))).astype(np.int64)
                    for k in range(npages):
                        good = (idx + k < len(pages))
                        good[good] = pages[idx[good] + k] == vp[good] + k
                        if not good.all():
                            m = np.flatnonzero(~good)[0]
                            fail(va[m] + np.uint64(k * PAGE_SIZE), vv[m],
                                 "not the shmem object's page at that offset")
                elif not vma.vm_flags & VM_SHARED:
                    w = (vv & np.uint64(_PAGE_RW)) != 0
                    if w.any():
                        exclusive.append((where, int(va[w][0]),
                                          (vp[w][:, None] + np.arange(npages)).ravel()))
                for k in range(npages):
                    count(vp + k, va[0])
                kind, other = ((PF_SHMEM, PF_ANON) if vma.vm_file is not None else (PF_ANON, PF_SHMEM))
                pflags = self._phys.flags
                for m, p in enumerate(vp.tolist()):
                    for k in range(npages):
                        fl = pflags(p + k)
                        if not fl & kind or fl & other:
                            fail(va[m], vv[m], f"maps PFN {p + k:#x} with page flags {fl:#x}: not "
                                 f"{'a shmem' if kind == PF_SHMEM else 'an anonymous'} page")

        pmd = []
        for level, addr, v in upper:
            if addr >= self.task_size + PAGE_SIZE:
                fail(addr, v, "above TASK_SIZE")
            if level < PMD:
                fail(addr, v, f"a leaf or bad entry at level {level} (the process model maps "
                     "nothing above the PMD level)")
            pmd.append((addr, v))
        check(PMD, np.array([x[0] for x in pmd], dtype=np.uint64),
              np.array([x[1] for x in pmd], dtype=np.uint64), PMD_SIZE)
        check(PTE, addrs, vals, PAGE_SIZE)


def init_mm(levels=4):
    """A new, empty kernel mm (no VMAs), for no-VMA walks of kernel addresses."""
    return MM(levels, is_init_mm=True)


def _validate_shmem_folios(obj):
    """A shmem object's folios (pgwalk/shmem.py): every page of a folio of
    order k (0..9) has that order, the folio starts at a multiple of 2**k,
    and its pages are 2**k consecutive PFNs (no hole), the first a
    multiple of 2**k."""
    order = obj.order
    if order.size and (order.min() < 0 or order.max() > 9):
        raise InvariantError(f"shmem object: folio order {int(order.max())} out of 0..9")
    i = 0
    n = obj.npages
    while i < n:
        k = int(order[i])
        if k == 0:
            i += 1
            continue
        size = 1 << k
        pages = obj.pages[i:i + size]
        if (i % size or i + size > n or (order[i:i + size] != k).any()
                or pages[0] == 0 or pages[0] % size
                or (pages != pages[0] + np.arange(size)).any()):
            raise InvariantError(f"shmem object: page {i} starts a folio of order {k} that "
                                 "is not aligned, whole and contiguous")
        i += size
