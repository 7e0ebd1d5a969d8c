"""The reference ``pt_range_walk``: the RFC's caller-driven walker
(``pt_range_walk_start``/``_next``/``_done`` of its ``mm/pagewalk.c``) in
plain Python, the executable specification of ``_ptrange``.

Each function is the kernel function of the same name.  The model's side of
the kernel's helpers:

* ``vm_normal_page`` at every level: no page where the entry is special
  (x86 marks PFN maps and the shared zero pages so); a PMD of the huge zero
  page is never normal (6.13's rule; the model's huge zero PMDs carry no
  special bit);
* ``page_folio``: ``mm.pt_folio(vma, addr, pfn)`` -- head PFN, number of
  pages, zero page -- the address space's folio knowledge (an
  ``AddressSpace`` knows none: order-0 folios; ``MM`` answers from its
  physical-memory model);
* the page-table locks are modelled by ``ptl`` (held or not); no lock ever
  fails to be taken (single-threaded model: the re-read equals the read);
* pgwalk's rules for garbage (docs/decisions.md 5): a bad or unfollowable
  PGD/P4D link is cleared, a PMD one is cleared by ``pte_offset_map``, an
  unfollowable PUD link is skipped;
* ``hugetlb_pmd_shared`` is always false: a table of the pool is linked from
  exactly one slot, so no PMD table is shared.
"""

from .. import entries as E
from ..constants import (
    P4D_SIZE,
    PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PT_TYPE_DEVICE, PT_TYPE_FOLIO, PT_TYPE_HWPOISON,
    PT_TYPE_ALL, PT_TYPE_MARKER, PT_TYPE_MIGRATION, PT_TYPE_NONE, PT_TYPE_PFN, PT_TYPE_SWAP,
    PTW_DEVICE, PTW_DONE, PTW_FOLIO, PTW_HWPOISON, PTW_MARKER, PTW_MIGRATION, PTW_NONE,
    PTW_PFN, PTW_PMD_LEVEL, PTW_PTE_LEVEL, PTW_PUD_LEVEL, PTW_SWAP, PUD_SIZE, VM_PFNMAP,
    _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_RW, _PAGE_SAVED_DIRTY, _PAGE_SOFT_DIRTY,
    _PAGE_SPECIAL, PTE_PFN_MASK,
)
from .ptrange import PtRangeRecord, PtRangeWalk, check_args
from .reference import addr_end
from .vma import VMA

__all__ = [
    "PtRangeWalkStruct", "folio_pte_batch_flags", "pt_range_walk", "pt_range_walk_done",
    "pt_range_walk_next", "pt_range_walk_start", "swap_pte_batch", "vm_normal_page",
]

DIRTY_BITS = _PAGE_DIRTY | _PAGE_SAVED_DIRTY
# What folio_pte_batch_flags ignores when it compares PTEs (no FPB_RESPECT_*):
# dirty, soft-dirty, write and accessed.
BATCH_IGNORED = DIRTY_BITS | _PAGE_SOFT_DIRTY | _PAGE_RW | _PAGE_ACCESSED


class PtRangeWalkStruct:
    """``struct pt_range_walk``.  ``slot`` is the entry pointer (the
    kernel's ptep/pmdp/pudp union) as (table id, index); ``entry`` the copy
    of the entry the record is about; ``page``/``folio`` PFNs or None."""

    def __init__(self, mm):
        self.mm = mm
        self.page = self.folio = None
        self.nr_entries = 0
        self.size = 0
        self.softleaf_entry = 0
        self.writable = self.young = self.dirty = self.present = False
        self.vma_locked = False
        self.pmd_shared = False
        self.curr_addr = self.next_addr = 0
        self.level = PTW_PUD_LEVEL
        self.slot = None
        self.entry = 0
        self.vma = None
        self.ptl = False
        self.warned = False


# --- the model's helpers --------------------------------------------------------

def _get(mm, slot):
    return int(mm._table(slot[0])[slot[1]])


def _child(mm, slot):
    tid = mm._child(slot[0], slot[1])
    return None if tid < 0 else tid


def _clear_bad(mm, slot):
    mm._table(slot[0])[slot[1]] = 0
    mm._stat_inc("clear_bad")


def _special(v):
    return bool(v & _PAGE_SPECIAL)


def vm_normal_page(mm, vma, addr, v, level):
    """The PFN of the normal page an entry maps, or None for a special one."""
    if _special(v):
        return None
    if level == PTW_PTE_LEVEL:
        return E.pte_pfn(v)
    if level == PTW_PMD_LEVEL:
        pfn = E.pmd_pfn(v)
        if mm.pt_folio(vma, addr & ~(PMD_SIZE - 1), pfn)[2]:
            return None                     # is_huge_zero_pmd
        return pfn
    return E.pud_pfn(v)


def _softleaf(v):
    """softleaf_from_pte/pmd/pud: the arch-independent swap entry."""
    return E.pte_to_swp_entry(v)


def _pte_dirty(v):
    return bool(v & DIRTY_BITS)


def _pte_young(v):
    return bool(v & _PAGE_ACCESSED)


def _pte_write(v):
    return bool(v & _PAGE_RW)


def folio_pte_batch_flags(mm, ptes, idx, first, folio_head, folio_nr, max_nr):
    """``folio_pte_batch_flags(..., FPB_MERGE_WRITE | FPB_MERGE_YOUNG_DIRTY)``
    on the PTE table ``ptes`` from slot ``idx`` holding ``first``: how many
    PTEs map the following pages of the folio with the same bits but dirty,
    soft-dirty, write and accessed; and (writable, young, dirty) merged over
    them.  Never past ``max_nr`` or the folio's last page."""
    pfn = E.pte_pfn(first)
    max_nr = min(max_nr, folio_head + folio_nr - pfn)
    writable, young, dirty = _pte_write(first), _pte_young(first), _pte_dirty(first)
    nr = 1
    expected = ((first & ~PTE_PFN_MASK) | (((pfn + 1) << PAGE_SHIFT) & PTE_PFN_MASK)) & ~BATCH_IGNORED
    while nr < max_nr:
        v = int(ptes[idx + nr])
        if v & ~BATCH_IGNORED != expected:
            break
        writable |= _pte_write(v)
        young |= _pte_young(v)
        dirty |= _pte_dirty(v)
        expected = (expected & ~PTE_PFN_MASK) | (((E.pte_pfn(expected) + 1) << PAGE_SHIFT) & PTE_PFN_MASK)
        nr += 1
    return min(nr, max_nr), writable, young, dirty


def folio_pmd_batch(mm, pmds, idx, first, folio_head, folio_nr, max_nr):
    """The PMD analogue: consecutive PMD leaves mapping the following 2 MiB
    of the folio, same bits but write/young/dirty (merged).  Bounded by the
    folio's remaining pages and (pgwalk: never leave a table) the PMD table."""
    step = PMD_SIZE // PAGE_SIZE
    pfn = E.pmd_pfn(first)
    max_nr = min(max_nr, (folio_head + folio_nr - pfn) // step, 512 - idx)
    writable, young, dirty = _pte_write(first), _pte_young(first), _pte_dirty(first)
    nr = 1
    mask = ~(BATCH_IGNORED | PTE_PFN_MASK)
    while nr < max_nr:
        v = int(pmds[idx + nr])
        if not (E.pmd_present(v) and E.pmd_leaf(v)) or v & mask != first & mask \
                or E.pmd_pfn(v) != pfn + nr * step:
            break
        writable |= _pte_write(v)
        young |= _pte_young(v)
        dirty |= _pte_dirty(v)
        nr += 1
    return max(1, min(nr, max_nr)), writable, young, dirty


def swap_pte_batch(ptes, idx, max_nr, first):
    """How many PTEs from ``idx`` hold the swap entries following ``first``'s
    (same type, offset + 1 each; the model's swap format has no other bits)."""
    e = _softleaf(first)
    t, off = E.swp_type(e), E.swp_offset(e)
    n = 1
    while n < max_nr:
        if off + n > E.SWP_OFFSET_MASK:
            break
        if int(ptes[idx + n]) != E.swp_entry_to_pte(E.swp_entry(t, off + n)):
            break
        n += 1
    return n


# --- the walk -----------------------------------------------------------------------

def _huge_softleaf_type(ptw, v, flags, device):
    """A non-present PUD or PMD entry ``v``: its softleaf recorded in
    ``ptw``; returns (type, page).  type None: not wanted (keep walking);
    PTW_DONE: a swap-file entry, or a device entry where ``device`` is
    false (the PUD level), which ends the walk.  page: the PFN a PFN entry
    names, else None."""
    e = _softleaf(v)
    ptw.softleaf_entry = e
    if E.swp_type(e) == E.SWP_PTE_MARKER:
        return (PTW_MARKER if flags & PT_TYPE_MARKER else None), None
    if not E.is_pfn_swap_entry(e):
        return PTW_DONE, None
    if E.is_migration_entry(e):
        if not flags & PT_TYPE_MIGRATION:
            return None, None
        ret = PTW_MIGRATION
    elif E.is_hwpoison_entry(e):
        if not flags & PT_TYPE_HWPOISON:
            return None, None
        ret = PTW_HWPOISON
    elif device:                                # device private / exclusive
        if not flags & PT_TYPE_DEVICE:
            return None, None
        ptw.present = True
        ret = PTW_DEVICE
    else:
        ret = PTW_DONE
    return ret, E.swp_offset(e)


def _pt_range_walk(ptw, vma, addr, end, flags):
    """``pt_range_walk``: one step.  Returns the PTW_* type and fills ``ptw``."""
    mm = ptw.mm
    next_addr = ptw.next_addr if ptw.next_addr else addr
    ret = PTW_DONE
    if next_addr < vma.vm_start or next_addr >= vma.vm_end:
        ptw.warned = True                       # WARN_ON_ONCE
        ptw.warn_addr = next_addr
        return ret
    ptw.ptl = False                             # the previous step's lock
    if ptw.level == PTW_PTE_LEVEL:
        ptw.slot = None                         # pte_unmap
    if not ptw.vma_locked:
        ptw.vma_locked = True
        ptw.vma = vma
    levels = mm.levels
    pgdir = 1 << (39 if levels == 4 else 48)

    while True:                                 # keep_walking
        ret = PTW_DONE
        page = folio = None
        writable = young = dirty = False
        nr = 1
        ptw.present = False
        ptw.pmd_shared = False
        ptw.folio = ptw.page = None
        curr = next_addr
        if curr >= end:
            ptw.next_addr = next_addr
            return ret
        while True:                             # again
            found = False
            entry = 0
            # pgd, p4d
            pgd = (mm.pgd_id, (curr >> (39 if levels == 4 else 48)) & 511)
            next_addr = addr_end(curr, end, pgdir)
            if levels == 5:
                v = _get(mm, pgd)
                if E.pgd_none(v, 5):
                    break
                if E.pgd_bad(v, 5) or _child(mm, pgd) is None:
                    _clear_bad(mm, pgd)
                    break
                p4d = (_child(mm, pgd), (curr >> 39) & 511)
            else:
                p4d = pgd
            next_addr = addr_end(curr, end, P4D_SIZE)
            v = _get(mm, p4d)
            if E.p4d_none(v):
                break
            if E.p4d_bad(v) or _child(mm, p4d) is None:
                _clear_bad(mm, p4d)
                break
            # pud
            entry_size = PUD_SIZE
            ptw.level = PTW_PUD_LEVEL
            next_addr = addr_end(curr, end, PUD_SIZE)
            pudp = (_child(mm, p4d), (curr >> 30) & 511)
            pud = _get(mm, pudp)
            entry = pud
            if E.pud_none(pud):
                if not flags & PT_TYPE_NONE:
                    break
                ret, found = PTW_NONE, True
            elif not E.pud_present(pud) or E.pud_leaf(pud):
                ptw.ptl = True
                ptw.slot = pudp
                if E.pud_present(pud):
                    page = vm_normal_page(mm, vma, curr, pud, PTW_PUD_LEVEL)
                    if page is None or not flags & PT_TYPE_FOLIO:
                        ptw.ptl = False
                        break
                    ret = PTW_FOLIO
                    folio = mm.pt_folio(vma, curr & ~(PUD_SIZE - 1), page)[0]
                    ptw.present = True
                    dirty, young, writable = _pte_dirty(pud), _pte_young(pud), _pte_write(pud)
                else:
                    ret, page = _huge_softleaf_type(ptw, pud, flags, device=False)
                    if ret is None:
                        ptw.ptl = False
                        break
                    if page is not None:
                        folio = mm.pt_folio(vma, curr & ~(PUD_SIZE - 1), page)[0]
                found = True
            else:
                pmdt = _child(mm, pudp)
                if pmdt is None:                # garbage is not followed
                    break
                # pmd_table
                entry_size = PMD_SIZE
                ptw.level = PTW_PMD_LEVEL
                next_addr = addr_end(curr, end, PMD_SIZE)
                pmdp = (pmdt, (curr >> 21) & 511)
                pmd = _get(mm, pmdp)
                entry = pmd
                if E.pmd_none(pmd):
                    if not flags & PT_TYPE_NONE:
                        break
                    ret, found = PTW_NONE, True
                elif not E.pmd_present(pmd) or E.pmd_leaf(pmd):
                    ptw.ptl = True
                    ptw.slot = pmdp
                    if E.pmd_present(pmd):
                        page = vm_normal_page(mm, vma, curr, pmd, PTW_PMD_LEVEL)
                        if page is not None:
                            if not flags & PT_TYPE_FOLIO:
                                ptw.ptl = False
                                break
                            ret = PTW_FOLIO
                            head, fnr, _ = mm.pt_folio(vma, curr & ~(PMD_SIZE - 1), page)
                            folio = head
                            if fnr * PAGE_SIZE > entry_size:
                                nr, writable, young, dirty = folio_pmd_batch(
                                    mm, mm._table(pmdt), pmdp[1], pmd, head, fnr,
                                    fnr * PAGE_SIZE // entry_size)
                            else:
                                dirty, young, writable = (_pte_dirty(pmd), _pte_young(pmd),
                                                          _pte_write(pmd))
                        elif (mm.pt_folio(vma, curr & ~(PMD_SIZE - 1), E.pmd_pfn(pmd))[2]
                              or vma.vm_flags & VM_PFNMAP):
                            if not flags & PT_TYPE_PFN:
                                ptw.ptl = False
                                break
                            ret = PTW_PFN
                        else:
                            ptw.ptl = False
                            break
                        ptw.present = True
                        next_addr += nr * entry_size - entry_size
                    else:
                        ret, page = _huge_softleaf_type(ptw, pmd, flags, device=True)
                        if ret is None:
                            ptw.ptl = False
                            break
                        if page is not None:
                            folio = mm.pt_folio(vma, curr & ~(PMD_SIZE - 1), page)[0]
                    # hugetlb_pmd_shared() never holds in the pool (module docstring)
                    found = True
                else:
                    # pte_table: pte_offset_map_lock, clearing a bad PMD
                    entry_size = PAGE_SIZE
                    ptw.level = PTW_PTE_LEVEL
                    next_addr = curr + PAGE_SIZE
                    ptet = _child(mm, pmdp)
                    if E.pmd_bad(pmd) or ptet is None:
                        _clear_bad(mm, pmdp)
                        continue                # goto again
                    ptes = mm._table(ptet)
                    idx = (curr >> 12) & 511
                    pte = int(ptes[idx])
                    entry = pte
                    ptw.slot = (ptet, idx)
                    ptw.ptl = True
                    if E.pte_none(pte):
                        if not flags & PT_TYPE_NONE:
                            ptw.ptl, ptw.slot = False, None
                            break
                        ret = PTW_NONE
                    elif E.pte_present(pte):
                        page = vm_normal_page(mm, vma, curr, pte, PTW_PTE_LEVEL)
                        dirty, young, writable = _pte_dirty(pte), _pte_young(pte), _pte_write(pte)
                        if page is not None:
                            if not flags & PT_TYPE_FOLIO:
                                ptw.ptl, ptw.slot = False, None
                                break
                            ret = PTW_FOLIO
                            head, fnr, _ = mm.pt_folio(vma, curr, page)
                            folio = head
                            if fnr > 1:
                                max_nr = (addr_end(curr, end, PMD_SIZE) - curr) >> PAGE_SHIFT
                                nr, writable, young, dirty = folio_pte_batch_flags(
                                    mm, ptes, idx, pte, head, fnr, max_nr)
                        elif mm.pt_folio(vma, curr, E.pte_pfn(pte))[2] or vma.vm_flags & VM_PFNMAP:
                            if not flags & PT_TYPE_PFN:
                                ptw.ptl, ptw.slot = False, None
                                break
                            ret = PTW_PFN
                        # else: a special PTE that is neither: the type stays PTW_DONE
                        ptw.present = True
                        next_addr += nr * entry_size - entry_size
                    else:
                        e = _softleaf(pte)
                        ptw.softleaf_entry = e
                        if E.swp_type(e) == E.SWP_PTE_MARKER:
                            if not flags & PT_TYPE_MARKER:
                                ptw.ptl, ptw.slot = False, None
                                break
                            ret = PTW_MARKER
                        elif E.is_swapfile_entry(e):
                            if not flags & PT_TYPE_SWAP:
                                ptw.ptl, ptw.slot = False, None
                                break
                            max_nr = (addr_end(curr, end, PMD_SIZE) - curr) >> PAGE_SHIFT
                            nr = swap_pte_batch(ptes, idx, max_nr, pte)
                            next_addr += nr * entry_size - entry_size
                            ret = PTW_SWAP
                        else:                    # a PFN swap entry
                            if E.is_migration_entry(e):
                                if not flags & PT_TYPE_MIGRATION:
                                    ptw.ptl, ptw.slot = False, None
                                    break
                                ret = PTW_MIGRATION
                            elif E.is_hwpoison_entry(e):
                                if not flags & PT_TYPE_HWPOISON:
                                    ptw.ptl, ptw.slot = False, None
                                    break
                                ret = PTW_HWPOISON
                            else:
                                if not flags & PT_TYPE_DEVICE:
                                    ptw.ptl, ptw.slot = False, None
                                    break
                                ptw.present = True
                                ret = PTW_DEVICE
                            page = E.swp_offset(e)
                            folio = mm.pt_folio(vma, curr, page)[0]
                    found = True
            break
        if not found:
            continue                            # keep_walking
        # found: fill in the rest
        ptw.curr_addr = curr
        ptw.next_addr = next_addr
        ptw.writable, ptw.young, ptw.dirty = writable, young, dirty
        ptw.nr_entries = nr
        ptw.size = nr * entry_size
        ptw.entry = entry
        if folio is not None:
            ptw.folio = folio
            ptw.page = page + ((curr & (entry_size - 1)) >> PAGE_SHIFT)
        return ret


def pt_range_walk_start(ptw, vma, addr, end, flags):
    """``pt_range_walk_start``: the first step of a walk of ``[addr, end)`` in ``vma``.
    Returns its PTW_* type (PTW_DONE at once for an empty range or no mm) and fills
    ``ptw``."""
    if ptw.mm is None or addr >= end:
        return PTW_DONE
    return _pt_range_walk(ptw, vma, addr, end, flags)


def pt_range_walk_next(ptw, vma, addr, end, flags):
    """``pt_range_walk_next``: the step after the last record, from ``ptw.next_addr``.
    Returns its PTW_* type, PTW_DONE once ``end`` is reached."""
    if ptw.next_addr >= end:
        return PTW_DONE
    return _pt_range_walk(ptw, vma, addr, end, flags)


def pt_range_walk_done(ptw):
    """``pt_range_walk_done``: end the walk, dropping what it holds (the page-table
    lock, the mapped PTE table and the VMA lock)."""
    ptw.ptl = False
    if ptw.level == PTW_PTE_LEVEL:
        ptw.slot = None
    ptw.vma_locked = False


class _Stepper:
    """The reference steps for the shared driver (``ptrange.PtRangeWalk``)."""

    def __init__(self, mm, vma, start, end, flags):
        self.ptw = PtRangeWalkStruct(mm)
        # the VMA as it was when the walk started (a change is caught between steps)
        bounds = VMA(vma.vm_start, vma.vm_end, vma.vm_flags, hugepage_size=vma.hugepage_size)
        bounds.vm_pgoff, bounds.vm_file = vma.vm_pgoff, vma.vm_file
        self.args = (bounds, start, end, flags)

    def will_step(self, started):
        """Whether the coming step (the first unless ``started``) will read the tables:
        False when it ends the walk at once, so the driver asks for the mmap lock only
        when needed."""
        ptw, (vma, start, end, _) = self.ptw, self.args
        if not started:
            a = start
            if ptw.mm is None or start >= end:
                return False
        else:
            if ptw.next_addr >= end:
                return False
            a = ptw.next_addr or start
        return vma.vm_start <= a < vma.vm_end

    def start(self):
        """Take the first step; returns its PTW_* type."""
        self.ptw.warned = False
        return pt_range_walk_start(self.ptw, *self.args)

    def next(self):
        """Take the following step; returns its PTW_* type."""
        self.ptw.warned = False
        return pt_range_walk_next(self.ptw, *self.args)

    def warned(self):
        """Whether the last step met the kernel's warning case (its address outside the
        VMA)."""
        return self.ptw.warned

    def addr(self):
        """The address the last warning was about."""
        return self.ptw.warn_addr

    def done(self):
        """End the walk (``pt_range_walk_done``)."""
        pt_range_walk_done(self.ptw)

    def record(self, t):
        """The ``PtRangeRecord`` of the step that returned the type ``t``."""
        p = self.ptw
        return PtRangeRecord(t, p.level, p.curr_addr, p.next_addr, p.nr_entries, p.size,
                             p.writable, p.young, p.dirty, p.present, p.pmd_shared, p.entry,
                             p.softleaf_entry, -1 if p.page is None else p.page,
                             -1 if p.folio is None else p.folio)


def pt_range_walk(vma, start, end, flags=PT_TYPE_ALL, *, mm=None):
    """Iterate over ``[start, end)`` of ``vma`` (reference walker): a
    ``PtRangeRecord`` per entry or batch of the types ``flags`` asks for."""
    mm = check_args(vma, start, end, flags, mm)
    return PtRangeWalk(_Stepper(mm, vma, start, end, flags), mm, vma, start, end, flags)
