"""The reference walker: ``mm/pagewalk.c`` (6.13) in plain Python, with
today's loop changes behind ``kernel="today"`` (``Walk.newer``).

The executable specification of pgwalk.  It walks the same ``MM`` objects as
the compiled walker, through the Python primitives of the table pool, and is
written for reading, not speed: each function is the kernel function of the
same name.  The test suite runs both walkers on random tables and ops and
requires identical callbacks, results and final tables.

A slot is named by ``(tables, tid, idx)``: the ``PageTables`` that holds the
table, the table's pool index and the slot's index in it.
"""

from types import SimpleNamespace

from .. import entries as E
from ._args import check_kernel, check_mm, check_ops, check_ops_safe, check_pgd, check_range, check_vma
from .ops import CALLBACKS
from ..constants import (
    LEVEL_NAMES,
    ACTION_AGAIN, ACTION_CONTINUE, ACTION_SUBTREE, EINVAL,
    HUGE_ZERO_PFN, P4D, PAGE_SIZE, PGD, PMD, PTE, PUD, PUD_SIZE, U64_MASK,
    VM_HUGETLB, VM_PFNMAP, ZERO_PFN, _PAGE_DIRTY, _PAGE_PSE, _PAGE_RW,
    _PAGE_SPECIAL, PTE_FLAGS_MASK, PTE_PFN_MASK, task_size,
)

__all__ = [
    "LEVEL_NAMES", "ScratchPTE", "Slot", "Walk", "addr_end", "hugetlb_walk",
    "pte_offset_map", "split_huge_pmd", "split_huge_pud", "walk_hugetlb_range",
    "walk_p4d_range", "walk_page_range", "walk_page_range_mm", "walk_page_range_novma",
    "walk_page_range_vma", "walk_page_test", "walk_page_vma", "walk_pgd_range",
    "walk_pmd_range", "walk_pte_range", "walk_pte_range_inner", "walk_pud_range",
    "walk_kernel_page_table_range", "walk_kernel_page_table_range_lockless",
    "walk_page_range_debug", "walk_page_range_mm_unsafe", "walk_page_range_vma_unsafe",
]

NEWER_RESET_TOP = 1         # today: walk->action reset at the top of each PMD/PUD iteration
NEWER_PUD_RECHECK = 2       # today: walk_pmd_range re-checks the PUD; walk_pud_range honours AGAIN

INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1


class Slot:
    """A reference to a live slot, valid only during its callback."""

    __slots__ = ("tables", "tid", "idx", "level", "live")

    def __init__(self, tables, tid, idx, level):
        self.tables, self.tid, self.idx, self.level = tables, tid, idx, level
        self.live = True

    def _check(self):
        if not self.live:
            raise RuntimeError("entry reference used outside its callback")

    @property
    def val(self):
        """The slot's current value (RuntimeError once its callback has returned)."""
        self._check()
        return int(self.tables._table(self.tid)[self.idx])

    def __int__(self):
        return self.val

    __index__ = __int__

    def __eq__(self, other):
        return self.val == int(other)

    def __hash__(self):
        return hash(self.val)

    def set(self, value):
        """Write the slot; refuses to unlink a table above PTE level (8.3)."""
        if not isinstance(value, int):
            raise TypeError(f"value must be an int, not {type(value).__name__}")
        if not 0 <= value <= U64_MASK:
            raise ValueError(f"value must fit in 64 bits: {value:#x}")
        old = self.val
        if (self.level < PTE and value != old
                and self.tables._child(self.tid, self.idx) >= 0):
            raise ValueError("entry.set: this slot links a page table; "
                             "a callback may not unlink tables (pgwalk decision 8.3)")
        self.tables._table(self.tid)[self.idx] = value


class ScratchPTE:
    """The ``ptep`` of ``install_pte``: starts at 0 (none)."""

    __slots__ = ("value", "live")

    def __init__(self):
        self.value, self.live = 0, True

    @property
    def val(self):
        """The value set so far (RuntimeError outside ``install_pte``)."""
        if not self.live:
            raise RuntimeError("ptep used outside install_pte")
        return self.value

    def __int__(self):
        return self.val

    __index__ = __int__

    def set(self, value):
        """Set the PTE ``install_pte`` builds, a 64-bit int; the walker writes it to the
        empty slot once the callback returns 0."""
        if not self.live:
            raise RuntimeError("ptep used outside install_pte")
        if not isinstance(value, int):
            raise TypeError(f"value must be an int, not {type(value).__name__}")
        if not 0 <= value <= U64_MASK:
            raise ValueError(f"value must fit in 64 bits: {value:#x}")
        self.value = value


class Walk:
    """``struct mm_walk`` as the callbacks see it."""

    def __init__(self, mm, ops, private, no_vma=False, pgd=None, newer=0):
        self.mm, self.ops, self.private = mm, ops, private
        self.newer = newer
        # the callbacks as they were when the walk started (the kernel's ops
        # are const; the compiled walker fills its slot table once)
        self.cbs = SimpleNamespace(**{n: getattr(ops, n) for n in CALLBACKS})
        self.no_vma, self.pgd, self.vma = no_vma, pgd, None
        self._action = ACTION_SUBTREE
        # internal state of the walk
        self.tables = mm if pgd is None else pgd.tables
        self.refused = (None, 0)          # ((pmd slot, value), refusals in a row)
        self.refused_pud = (None, 0)      # the same for today's PUD re-check
        self.levels = mm.levels
        self.task_size = task_size(mm.levels)

    @property
    def action(self):
        """``walk->action``: what the walker does after a PUD or PMD callback
        (ACTION_SUBTREE, ACTION_CONTINUE or ACTION_AGAIN); setting any other value
        raises ValueError."""
        return self._action

    @action.setter
    def action(self, value):
        if (not isinstance(value, int) or isinstance(value, bool)
                or value not in (ACTION_SUBTREE, ACTION_CONTINUE, ACTION_AGAIN)):
            raise ValueError("walk.action must be ACTION_SUBTREE, ACTION_CONTINUE or ACTION_AGAIN")
        self._action = value

    # --- calling the callbacks (return values as the C int of the kernel) --
    def _ret(self, name, r):
        if type(r) is not int:
            if r is None or not hasattr(type(r), "__index__"):
                raise TypeError(f"{name} must return an int, not {type(r).__name__}")
            r = r.__index__()
        if r > INT_MAX or r < INT_MIN:
            raise OverflowError(f"{name} returned {r}, which does not fit in a C int")
        return int(r)

    def call_entry(self, name, level, slot, addr, next):
        """Call the callback ``name`` (``pgd_entry`` to ``pte_entry``) with a ``Slot``
        for ``slot`` that is valid only during the call; returns its result as a C int."""
        ref = Slot(self.tables, slot[0], slot[1], level)
        try:
            return self._ret(name, getattr(self.cbs, name)(ref, addr, next, self))
        finally:
            ref.live = False

    def call_hole(self, addr, next, depth):
        """Call ``pte_hole`` for ``[addr, next)`` at ``depth`` (the level of the missing
        entry, -1 where no level applies); returns its result as a C int."""
        return self._ret("pte_hole", self.cbs.pte_hole(addr, next, depth, self))


# --- reading and writing slots -----------------------------------------------

def _get(walk, slot):
    return int(walk.tables._table(slot[0])[slot[1]])


def _put(walk, slot, value):
    walk.tables._table(slot[0])[slot[1]] = value


def _child(walk, slot):
    """The table ``slot`` links to, or None when the link is not a live table
    linked from exactly this slot (pgwalk never follows garbage)."""
    tid = walk.tables._child(slot[0], slot[1])
    return None if tid < 0 else tid


def _alloc(walk, slot, level):
    """A counted page-table allocation (__pud_alloc & co.)."""
    return walk.tables._alloc(slot[0], slot[1], level)


def addr_end(addr, end, size):
    """The ``*_addr_end`` clipping: next boundary, or ``end`` if sooner
    (compared as boundary-1 < end-1, so an end of 0 means the top)."""
    boundary = ((addr + size) & ~(size - 1)) & U64_MASK
    return boundary if (boundary - 1) & U64_MASK < (end - 1) & U64_MASK else end


def _pgd_shift(walk):
    return 39 if walk.levels == 4 else 48


# --- the level walk ------------------------------------------------------------
#
# Every per-entry loop has the same frame as the compiled walker's
# (_walk.pxi): ``again`` starts True (the first pass walks the entry at
# ``addr``), ``continue`` moves on to the next entry, and ``again = True``
# then ``continue`` walks the current entry once more (the kernel's
# ``goto again``).

def walk_pte_range_inner(walk, tid, idx, addr, end):
    """``walk_pte_range_inner``: the PTEs of table ``tid`` from index ``idx`` for
    ``[addr, end)``; ``install_pte`` fills the none ones, ``pte_entry`` sees the others.
    Returns 0 or the first non-zero callback result."""
    ops = walk.cbs
    err = 0
    while True:
        slot = (tid, idx)
        if ops.install_pte is not None and E.pte_none(_get(walk, slot)):
            scratch = ScratchPTE()
            try:
                err = walk._ret("install_pte", ops.install_pte(addr, addr + PAGE_SIZE, scratch, walk))
            finally:
                scratch.live = False
            if err:
                break
            _put(walk, slot, scratch.value)
            walk.tables._stat_inc("set_pte_at")
            if not walk.no_vma:
                walk.tables._stat_inc("update_mmu_cache")
        else:
            if ops.pte_entry is None:
                raise TypeError(
                    f"install_pte is set without pte_entry and the walk met a non-none PTE at "
                    f"{addr:#x}: the kernel would call a NULL pte_entry here (pgwalk decision 8.1)")
            err = walk.call_entry("pte_entry", PTE, slot, addr, addr + PAGE_SIZE)
            if err:
                break
        if addr >= end - PAGE_SIZE:
            break
        addr += PAGE_SIZE
        idx += 1
    return err


def pte_offset_map(walk, pmd):
    """The PTE table under ``pmd``, or None (clearing a bad PMD)."""
    v = _get(walk, pmd)
    if (E.pmd_none(v) or E.is_pmd_migration_entry(v) or E.pmd_trans_huge(v)
            or E.pmd_devmap(v)):
        walk.tables._stat_inc("pte_map_null")
        return None
    tid = _child(walk, pmd)
    if E.pmd_bad(v) or tid is None:
        _put(walk, pmd, 0)
        walk.tables._stat_inc("clear_bad")
        walk.tables._stat_inc("pte_map_null")
        return None
    walk.tables._stat_inc("pte_map_ok")
    return tid


def walk_pte_range(walk, pmd, addr, end):
    """``walk_pte_range``: map the PTE table under ``pmd`` and walk it.  A PMD that
    cannot be mapped sets ACTION_AGAIN (retried by the caller; pgwalk gives up on the
    third refusal in a row).  Returns 0 or the first non-zero callback result."""
    if walk.no_vma and (walk.mm.is_init_mm or addr >= walk.task_size):
        tid = _child(walk, pmd)        # pte_offset_kernel(); garbage not followed
        if tid is None:
            return 0
    else:
        tid = pte_offset_map(walk, pmd)
    if tid is None:
        # pgwalk's guard against the kernel's endless retry of an unmappable,
        # unchanging PMD: the third refusal in a row moves on (decision 17).
        key = (pmd, _get(walk, pmd))
        count = walk.refused[1] + 1 if walk.refused[0] == key else 1
        walk.refused = (None, 0) if count >= 3 else (key, count)
        if count >= 3:
            return 0
        walk._action = ACTION_AGAIN
        return 0
    walk.refused = (None, 0)
    return walk_pte_range_inner(walk, tid, (addr >> 12) & 511, addr, end)


def split_huge_pmd(walk, pmd):
    """``split_huge_pmd`` in a walk with a VMA: a huge or migration PMD of anonymous
    memory becomes a PTE table of 512 entries; in other VMAs it is cleared.  Other PMDs
    are left alone."""
    v = _get(walk, pmd)
    if not (E.is_swap_pmd(v) or E.pmd_trans_huge(v) or E.pmd_devmap(v)):
        return
    if not (E.pmd_trans_huge(v) or E.pmd_devmap(v) or E.is_pmd_migration_entry(v)):
        return
    walk.tables._stat_inc("split_pmd")
    if walk.vma.vm_ops is not None:             # not anonymous: zap the PMD
        _put(walk, pmd, 0)
        walk.tables._clear_leaf_hook(v, PMD)    # its rmap goes (the process model's counts)
        return
    _put(walk, pmd, 0)
    tid = walk.tables._take_uncounted(pmd[0], pmd[1], PTE)
    table = walk.tables._table(tid)
    if E.is_pmd_migration_entry(v):
        e = E.pmd_to_swp_entry(v)
        for i in range(512):
            table[i] = E.swp_entry_to_pte(E.swp_entry(E.swp_type(e), E.swp_offset(e) + i))
    elif E.pmd_pfn(v) == HUGE_ZERO_PFN:
        flags = (v & PTE_FLAGS_MASK & ~(_PAGE_PSE | _PAGE_RW | _PAGE_DIRTY)) | _PAGE_SPECIAL
        for i in range(512):
            table[i] = (ZERO_PFN << 12) | flags
    else:
        flags = v & PTE_FLAGS_MASK & ~_PAGE_PSE
        pfn = E.pmd_pfn(v)
        for i in range(512):
            table[i] = (((pfn + i) << 12) & PTE_PFN_MASK) | flags


def split_huge_pud(walk, pud):
    """``split_huge_pud``: a huge PUD is cleared (the kernel makes no PMD table of it);
    other PUDs are left alone."""
    v = _get(walk, pud)
    if E.pud_trans_huge(v) or E.pud_devmap(v):
        _put(walk, pud, 0)
        walk.tables._stat_inc("split_pud")
        walk.tables._clear_leaf_hook(v, PUD)


def walk_pmd_range(walk, pud, addr, end):
    """``walk_pmd_range``: each PMD under ``pud`` in ``[addr, end)`` to ``pmd_entry``
    (holes to ``pte_hole``, or a new table for ``install_pte``); ``walk.action`` then
    decides on splitting it and walking its PTEs.  Returns 0 or the first error."""
    ops = walk.cbs
    has_handler = ops.pte_entry is not None
    has_install = ops.install_pte is not None
    if walk.newer & NEWER_PUD_RECHECK:
        v = _get(walk, pud)
        if not E.pud_present(v) or E.pud_leaf(v):
            # today: retried by walk_pud_range; pgwalk gives up on the third
            # refusal in a row of an unchanged slot (decision 24)
            key = (pud, v)
            count = walk.refused_pud[1] + 1 if walk.refused_pud[0] == key else 1
            walk.refused_pud = (None, 0) if count >= 3 else (key, count)
            if count < 3:
                walk._action = ACTION_AGAIN
            return 0
        walk.refused_pud = (None, 0)
    tid = _child(walk, pud)
    if tid is None:
        return 0
    idx = (addr >> 21) & 511
    next = addr
    again = True
    err = 0
    while again or next != end:
        if again:
            again = False
        else:
            idx, addr = idx + 1, next
        if walk.newer & NEWER_RESET_TOP:
            walk._action = ACTION_SUBTREE
        pmd = (tid, idx)
        next = addr_end(addr, end, 1 << 21)
        if E.pmd_none(_get(walk, pmd)):
            if has_install:
                err = _alloc(walk, pmd, PTE)
            elif ops.pte_hole is not None:
                err = walk.call_hole(addr, next, 3)
            if err:
                break
            if not has_install:
                continue
        walk._action = ACTION_SUBTREE
        if ops.pmd_entry is not None:
            err = walk.call_entry("pmd_entry", PMD, pmd, addr, next)
            if err:
                break
        if walk._action == ACTION_AGAIN:
            again = True
            continue
        if walk._action == ACTION_CONTINUE:
            continue
        if not has_handler:
            if not has_install:
                continue                              # nothing below to call
            v = _get(walk, pmd)
            if E.pmd_present(v) and (E.pmd_trans_huge(v) or E.pmd_devmap(v)):
                continue                              # installing only: keep the THP
        if walk.vma is not None:
            split_huge_pmd(walk, pmd)
        else:
            v = _get(walk, pmd)
            if E.pmd_leaf(v) or not E.pmd_present(v):
                continue
        err = walk_pte_range(walk, pmd, addr, next)
        if err:
            break
        if walk._action == ACTION_AGAIN:
            again = True                              # the PTE table went away
    return err


def walk_pud_range(walk, p4d, addr, end):
    """``walk_pud_range``: each PUD under ``p4d`` in ``[addr, end)`` to ``pud_entry``
    (holes to ``pte_hole``, or a new table for ``install_pte``); ``walk.action`` then
    decides on splitting it and walking its PMDs.  Returns 0 or the first error."""
    ops = walk.cbs
    has_handler = ops.pmd_entry is not None or ops.pte_entry is not None
    has_install = ops.install_pte is not None
    tid = _child(walk, p4d)
    if tid is None:
        return 0
    idx = (addr >> 30) & 511
    next = addr
    again = True
    err = 0
    while again or next != end:
        if again:
            again = False
        else:
            idx, addr = idx + 1, next
        if walk.newer & NEWER_RESET_TOP:
            walk._action = ACTION_SUBTREE
        pud = (tid, idx)
        next = addr_end(addr, end, 1 << 30)
        if E.pud_none(_get(walk, pud)):
            if has_install:
                err = _alloc(walk, pud, PMD)
            elif ops.pte_hole is not None:
                err = walk.call_hole(addr, next, 2)
            if err:
                break
            if not has_install:
                continue
        walk._action = ACTION_SUBTREE
        if ops.pud_entry is not None:
            err = walk.call_entry("pud_entry", PUD, pud, addr, next)
            if err:
                break
        if walk._action == ACTION_AGAIN:
            again = True
            continue
        if walk._action == ACTION_CONTINUE:
            continue
        if not has_handler:
            if not has_install:
                continue
            v = _get(walk, pud)
            if E.pud_present(v) and (E.pud_trans_huge(v) or E.pud_devmap(v)):
                continue
        if walk.vma is not None:
            split_huge_pud(walk, pud)
        else:
            v = _get(walk, pud)
            if E.pud_leaf(v) or not E.pud_present(v):
                continue
        if walk.newer & NEWER_PUD_RECHECK:
            err = walk_pmd_range(walk, pud, addr, next)   # it checks the PUD itself
            if err:
                break
            if walk._action == ACTION_AGAIN:
                again = True
            continue
        if E.pud_none(_get(walk, pud)):
            again = True                              # the split cleared it
            continue
        if _child(walk, pud) is None:                 # garbage is not followed
            continue
        err = walk_pmd_range(walk, pud, addr, next)
        if err:
            break
    return err


def _none_or_clear_bad(walk, slot, bad):
    v = _get(walk, slot)
    if E.p4d_none(v):
        return True
    if bad(v) or _child(walk, slot) is None:
        _put(walk, slot, 0)
        walk.tables._stat_inc("clear_bad")
        return True
    return False


def walk_p4d_range(walk, pgd, addr, end):
    """``walk_p4d_range``: the P4Ds under ``pgd`` for ``[addr, end)`` (with 4 levels the
    folded PGD slot itself): holes to ``pte_hole`` (or a new table for ``install_pte``),
    each P4D to ``p4d_entry``, then the PUDs below.  Returns 0 or the first error."""
    ops = walk.cbs
    has_handler = (ops.pud_entry is not None or ops.pmd_entry is not None
                   or ops.pte_entry is not None)
    has_install = ops.install_pte is not None
    folded = walk.levels == 4
    depth = 0 if folded else 1                    # real_depth(1)
    if folded:
        tid, idx = pgd                            # p4d_offset(): the pgd slot itself
    else:
        tid = _child(walk, pgd)
        if tid is None:
            return 0
        idx = (addr >> 39) & 511
    next = addr
    again = True                                  # (no retry at this level)
    err = 0
    while again or next != end:
        if again:
            again = False
        else:
            idx, addr = idx + 1, next
        p4d = (tid, idx)
        next = end if folded else addr_end(addr, end, 1 << 39)
        if _none_or_clear_bad(walk, p4d, E.p4d_bad):
            if has_install:
                err = _alloc(walk, p4d, PUD)
            elif ops.pte_hole is not None:
                err = walk.call_hole(addr, next, depth)
            if err:
                break
            if not has_install:
                continue
        if ops.p4d_entry is not None:
            err = walk.call_entry("p4d_entry", P4D, p4d, addr, next)
            if err:
                break
        if has_handler or has_install:
            err = walk_pud_range(walk, p4d, addr, next)
            if err:
                break
    return err


def walk_pgd_range(walk, addr, end):
    """``walk_pgd_range``: each top-level entry in ``[addr, end)`` to ``pgd_entry``,
    then the level below (with 4 levels, holes show at the folded P4D).  Returns 0 or
    the first error."""
    ops = walk.cbs
    has_handler = (ops.p4d_entry is not None or ops.pud_entry is not None
                   or ops.pmd_entry is not None or ops.pte_entry is not None)
    has_install = ops.install_pte is not None
    shift = _pgd_shift(walk)
    tid = walk.tables.pgd_id
    idx = (addr >> shift) & 511
    next = addr
    again = True                                  # (no retry at this level)
    err = 0
    while again or next != end:
        if again:
            again = False
        else:
            idx, addr = idx + 1, next
        pgd = (tid, idx)
        next = addr_end(addr, end, 1 << shift)
        if walk.levels == 5 and _pgd_none_or_clear_bad(walk, pgd):
            if has_install:
                err = _alloc(walk, pgd, P4D)
            elif ops.pte_hole is not None:
                err = walk.call_hole(addr, next, 0)
            if err:
                break
            if not has_install:
                continue
        if ops.pgd_entry is not None:
            err = walk.call_entry("pgd_entry", PGD, pgd, addr, next)
            if err:
                break
        if has_handler or has_install:
            err = walk_p4d_range(walk, pgd, addr, next)
            if err:
                break
    return err


def _pgd_none_or_clear_bad(walk, pgd):
    v = _get(walk, pgd)
    if E.pgd_none(v, 5):
        return True
    if E.pgd_bad(v, 5) or _child(walk, pgd) is None:
        _put(walk, pgd, 0)
        walk.tables._stat_inc("clear_bad")
        return True
    return False


# --- hugetlb ---------------------------------------------------------------------

def hugetlb_walk(walk, addr, sz):
    """Generic huge_pte_offset(): the PMD (PUD for 1 GiB) slot, or None."""
    pgd = (walk.tables.pgd_id, (addr >> _pgd_shift(walk)) & 511)
    if walk.levels == 5:
        if not E.pgd_present(_get(walk, pgd), 5):
            return None
        tid = _child(walk, pgd)
        if tid is None:
            return None
        p4d = (tid, (addr >> 39) & 511)
    else:
        p4d = pgd
    if not E.p4d_present(_get(walk, p4d)):
        return None
    tid = _child(walk, p4d)
    if tid is None:
        return None
    pud = (tid, (addr >> 30) & 511)
    if sz == PUD_SIZE:
        return pud
    if not E.pud_present(_get(walk, pud)):
        return None
    tid = _child(walk, pud)
    if tid is None:
        return None
    return (tid, (addr >> 21) & 511)


def walk_hugetlb_range(walk, addr, end):
    """``walk_hugetlb_range``: each huge page of the hugetlb VMA in ``[addr, end)`` goes
    to ``hugetlb_entry`` with its PMD or PUD slot, a missing table to ``pte_hole``.
    Returns 0 or the first error."""
    ops = walk.cbs
    sz = walk.vma.hugepage_size
    hmask = ~(sz - 1) & U64_MASK
    next = addr
    again = True                                  # (no retry at this level)
    err = 0
    while again or next != end:
        if again:
            again = False
        else:
            addr = next
        boundary = (addr & hmask) + sz            # hugetlb_entry_end()
        next = boundary if boundary < end else end
        slot = hugetlb_walk(walk, addr & hmask, sz)
        if slot is not None:
            ref = Slot(walk.tables, slot[0], slot[1], PUD if sz == PUD_SIZE else PMD)
            try:
                err = walk._ret("hugetlb_entry", ops.hugetlb_entry(ref, hmask, addr, next, walk))
            finally:
                ref.live = False
        elif ops.pte_hole is not None:
            err = walk.call_hole(addr, next, -1)
        if err:
            break
    return err


# --- VMA level ---------------------------------------------------------------------

def walk_page_test(walk, start, end):
    """``walk_page_test``: whether to walk the current VMA: ``test_walk``'s answer if
    set, else a PFN-map VMA is skipped (and reported to ``pte_hole``).  Returns 0 to
    walk, positive to skip, negative to fail."""
    ops = walk.cbs
    if ops.test_walk is not None:
        return walk._ret("test_walk", ops.test_walk(start, end, walk))
    if walk.vma.vm_flags & VM_PFNMAP:
        err = 1
        if ops.pte_hole is not None:
            err = walk.call_hole(start, end, -1)
        return err if err else 1
    return 0


def __walk_page_range(walk, start, end):
    ops = walk.cbs
    is_hugetlb = bool(walk.vma.vm_flags & VM_HUGETLB)
    if ops.install_pte is not None and is_hugetlb:
        return -EINVAL
    if ops.pre_vma is not None:
        err = walk._ret("pre_vma", ops.pre_vma(start, end, walk))
        if err:
            return err
    err = 0
    if is_hugetlb:
        if ops.hugetlb_entry is not None:
            err = walk_hugetlb_range(walk, start, end)
    else:
        err = walk_pgd_range(walk, start, end)
    if ops.post_vma is not None:
        ops.post_vma(walk)
    return err


_walk_vma_range = __walk_page_range


def walk_page_range_mm_unsafe(mm, start, end, ops, private=None, *, kernel=None):
    """The mm-internal entry point: ``install_pte`` allowed."""
    check_mm(mm)
    check_ops(ops)
    check_range(mm, start, end)
    return _walk_page_range_mm(mm, start, end, ops, private, check_kernel(kernel))


walk_page_range_mm = walk_page_range_mm_unsafe          # 6.13's name


def _walk_page_range_mm(mm, start, end, ops, private, newer=0):
    if start >= end:
        return -EINVAL
    if mm is None:
        return -EINVAL
    lock = ops.walk_lock
    mm._process_mm_walk_lock(lock)
    mm._walk_enter()              # raw edits may not free tables under a running walk
    try:
        return _walk_vmas(mm, start, end, ops, private, lock, newer)
    finally:
        mm._walk_exit()


def _walk_vmas(mm, start, end, ops, private, lock, newer):
    walk = Walk(mm, ops, private, newer=newer)
    ops = walk.cbs
    vma = mm.find_vma(start)
    err = 0
    while True:
        if vma is None:
            walk.vma = None
            next = end
            if ops.pte_hole is not None:
                err = walk.call_hole(start, next, -1)
        elif start < vma.vm_start:
            walk.vma = None
            next = min(end, vma.vm_start)
            if ops.pte_hole is not None:
                err = walk.call_hole(start, next, -1)
        else:
            mm._process_vma_walk_lock(vma, lock)
            walk.vma = vma
            next = min(end, vma.vm_end)
            vma = mm.find_vma(vma.vm_end)
            err = walk_page_test(walk, start, next)
            if err > 0:
                err = 0                           # skip this VMA
            elif err == 0:
                err = _walk_vma_range(walk, start, next)
        if err:
            break
        start = next
        if start >= end:
            break
    return err


def walk_page_range(mm, start, end, ops, private=None, *, kernel=None):
    """``walk_page_range``: walk ``[start, end)`` of ``mm`` VMA by VMA, gaps to
    ``pte_hole``.  Returns 0, the first non-zero callback result, or a negative errno;
    refuses ``install_pte``."""
    check_mm(mm)
    check_ops(ops)
    check_range(mm, start, end)
    newer = check_kernel(kernel)
    if not check_ops_safe(ops):
        return -EINVAL
    return _walk_page_range_mm(mm, start, end, ops, private, newer)


def _walk_one_vma(vma, start, end, ops, private, newer):
    mm = vma.vm_mm
    mm._process_mm_walk_lock(ops.walk_lock)
    mm._process_vma_walk_lock(vma, ops.walk_lock)
    walk = Walk(mm, ops, private, newer=newer)
    walk.vma = vma
    mm._walk_enter()
    try:
        return _walk_vma_range(walk, start, end)
    finally:
        mm._walk_exit()


def _walk_range_vma(vma, start, end, ops, private, kernel, safe_only):
    check_vma(vma)
    check_ops(ops)
    mm = vma.vm_mm
    check_range(mm, start, end)
    newer = check_kernel(kernel)
    if safe_only and not check_ops_safe(ops):
        return -EINVAL
    if start >= end or mm is None:
        return -EINVAL
    if start < vma.vm_start or end > vma.vm_end:
        return -EINVAL
    return _walk_one_vma(vma, start, end, ops, private, newer)


def walk_page_range_vma(vma, start, end, ops, private=None, *, kernel=None):
    """``walk_page_range_vma``: walk ``[start, end)``, which must lie inside ``vma``; no
    ``test_walk``, no PFN-map skip.  Returns 0, the first non-zero callback result, or a
    negative errno."""
    return _walk_range_vma(vma, start, end, ops, private, kernel, True)


def walk_page_range_vma_unsafe(vma, start, end, ops, private=None, *, kernel=None):
    """``walk_page_range_vma`` with ``install_pte`` allowed (mm-internal)."""
    return _walk_range_vma(vma, start, end, ops, private, kernel, False)


def walk_page_vma(vma, ops, private=None, *, kernel=None):
    """``walk_page_vma``: walk the whole of ``vma``; no ``test_walk``, no PFN-map skip.
    Returns 0, the first non-zero callback result, or a negative errno."""
    check_vma(vma)
    check_ops(ops)
    newer = check_kernel(kernel)
    mm = vma.vm_mm
    if mm is None or not check_ops_safe(ops):
        return -EINVAL
    return _walk_one_vma(vma, vma.vm_start, vma.vm_end, ops, private, newer)


def _novma_walk(mm, start, end, ops, pgd, private, newer):
    walk = Walk(mm, ops, private, no_vma=True, pgd=pgd, newer=newer)
    tree = mm if pgd is None else pgd.tables
    tree._walk_enter()
    try:
        return walk_pgd_range(walk, start, end)
    finally:
        tree._walk_exit()


def walk_page_range_novma(mm, start, end, ops, pgd=None, private=None, *, kernel=None):
    """``walk_page_range_novma`` (6.13): walk the tables of ``mm`` (or of ``pgd``'s
    tree) with no VMAs; huge leaves are never split.  Returns 0, the first non-zero
    callback result, or a negative errno."""
    check_mm(mm)
    check_ops(ops)
    check_pgd(mm, pgd)
    check_range(mm, start, end)
    newer = check_kernel(kernel)
    if start >= end or mm is None:
        return -EINVAL
    if not check_ops_safe(ops):
        return -EINVAL
    mm._assert_novma_lock()
    return _novma_walk(mm, start, end, ops, pgd, private, newer)


def walk_kernel_page_table_range(start, end, ops, pgd=None, private=None, *, mm=None, kernel=None):
    """``walk_kernel_page_table_range``: a no-VMA walk of the kernel mm's tables; needs
    its mmap lock held (LockAssertionError otherwise).  Returns 0, the first non-zero
    callback result, or a negative errno."""
    from .api import _kernel_mm
    from ._core import LockAssertionError
    check_ops(ops)
    mm = _kernel_mm(mm, pgd)
    if not mm._lock.held():
        raise LockAssertionError("walk_kernel_page_table_range needs the kernel mm's mmap lock: "
                                 "use `with init_mm.mmap_read_lock():` (or the _lockless variant)")
    return _kernel_walk(mm, start, end, ops, pgd, private, kernel)


def walk_kernel_page_table_range_lockless(start, end, ops, pgd=None, private=None, *, mm=None,
                                          kernel=None):
    """``walk_kernel_page_table_range_lockless``: the same walk without the lock check;
    the caller makes sure nothing else changes the range."""
    from .api import _kernel_mm
    check_ops(ops)
    return _kernel_walk(_kernel_mm(mm, pgd), start, end, ops, pgd, private, kernel)


def _kernel_walk(mm, start, end, ops, pgd, private, kernel):
    check_range(mm, start, end)
    newer = check_kernel(kernel)
    if start >= end:
        return -EINVAL
    if not check_ops_safe(ops):
        return -EINVAL
    return _novma_walk(mm, start, end, ops, pgd, private, newer)


def walk_page_range_debug(mm, start, end, ops, pgd=None, private=None, *, init_mm=None, kernel=None):
    """``walk_page_range_debug``: a no-VMA walk of ``mm``'s tables (or ``pgd``'s) for
    debugging; needs the mmap write lock of ``mm`` and of ``init_mm`` when given."""
    from ._core import LockAssertionError
    check_mm(mm)
    check_mm(init_mm, "init_mm")
    check_ops(ops)
    check_pgd(mm, pgd)
    check_range(mm, start, end)
    newer = check_kernel(kernel)
    if mm is None:
        return -EINVAL
    for who, m in (("mm", mm), ("init_mm", init_mm)):
        if m is not None and not m._lock.write_held():
            raise LockAssertionError(f"walk_page_range_debug needs the mmap write lock of {who}: "
                                     f"use `with {who}.mmap_write_lock():`")
    if start >= end:
        return -EINVAL
    if not check_ops_safe(ops):
        return -EINVAL
    return _novma_walk(mm, start, end, ops, pgd, private, newer)
