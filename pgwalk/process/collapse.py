"""MADV_COLLAPSE of the process model: each 2 MiB-aligned block of the range
inside an eligible anonymous VMA becomes a PMD-mapped THP (the contents of
its pages copied, empty and zero pages zero-filled).  A block without a PTE
table, or holding a guard marker or another non-present entry, fails with
EINVAL and ends the call, as on the live kernel; blocks already PMD-mapped
are left alone.  Shared anonymous memory collapses into a huge page of its
shmem object."""

from .. import constants as C
from ..constants import EINVAL, PAGE_SIZE, PMD, PMD_SIZE, PTE
from ..entries import pmd_leaf, pte_none, pte_pfn, pte_present
from .objects import PF_ANON, PF_DATA, PF_FDIRTY, PF_LARGE, PF_SHMEM, PF_SHMEM_DIRTY, pte_prot
from .shmem import unmap_object_range

def collapse(mm, vma, s, e):
    """MADV_COLLAPSE of ``[s, e)`` in ``vma``: each whole 2 MiB block becomes a
    PMD-mapped THP (shared anonymous memory: a huge folio of its shmem object).  Returns
    0, or the positive errno of the first block that cannot collapse."""
    hs, he = (s + PMD_SIZE - 1) & ~(PMD_SIZE - 1), e & ~(PMD_SIZE - 1)
    if hs > he:
        return EINVAL              # the kernel's block count goes negative: EINVAL
    top = (vma.vm_end - PMD_SIZE) & ~(PMD_SIZE - 1)
    if (vma.vm_end < PMD_SIZE or top < vma.vm_start
            or ((vma.vm_start >> 12) - vma.vm_pgoff) % 512
            or vma.vm_flags & (C.VM_NOHUGEPAGE | C.VM_SPECIAL | C.VM_HUGETLB)):
        return EINVAL              # no aligned huge page fits in the VMA
    if vma.vm_file is not None:
        return _collapse_shmem(mm, vma, hs, he)
    if vma.anon_vma is None:
        return EINVAL              # anonymous collapse needs an anon_vma (a fault happened)
    if (vma.vm_ops is not None or vma.vm_flags & (C.VM_SHARED | C.VM_NOHUGEPAGE | C.VM_SPECIAL
                                                   | C.VM_HUGETLB)):
        return EINVAL
    h = hs
    while h + PMD_SIZE <= e:
        if h < vma.vm_start or h + PMD_SIZE > vma.vm_end:
            h += PMD_SIZE
            continue
        err = _collapse_block(mm, vma, h)
        if err:
            return err             # the kernel stops at the first failing block here
        h += PMD_SIZE
    return 0


def _collapse_block(mm, vma, h):
    """One 2 MiB block: already PMD-mapped -> done; no PTE table -> EINVAL;
    a guard marker or another non-present entry -> EINVAL; otherwise the
    block (present, zero and empty PTEs alike) becomes a THP."""
    pmdv = mm.entry(h, PMD)
    if pmd_leaf(pmdv):
        return 0                   # already PMD-mapped (the huge zero page too)
    if pmdv == 0:
        return EINVAL
    data = []
    for i in range(512):
        v = mm.entry(h + i * PAGE_SIZE, PTE)
        if pte_none(v):
            continue
        if not pte_present(v):
            return EINVAL
        pfn = pte_pfn(v)
        if pfn != C.ZERO_PFN:
            data.append((i, pfn))
    return _replace(mm, vma, h, data)


def _replace(mm, vma, h, data):
    mm.anon_vma_prepare(vma)
    new = mm.phys.alloc(512, 512)
    mm.phys.add_map(new, 512)
    for i in range(512):
        mm.phys.set_flags(new + i, PF_ANON | PF_LARGE | PF_FDIRTY)
    for i, pfn in data:
        if mm.phys.flags(pfn) & PF_DATA:
            mm.phys.set_flags(new + i, PF_DATA)
    mm.zap(h, h + PMD_SIZE)
    map_huge_pmd(mm, vma, h, new)             # collapse_huge_page: a dirty PMD
    return 0


def _collapse_shmem(mm, vma, hs, he):
    """collapse_file for shmem: a block with at least one page in the object
    becomes a huge page of the object, PMD-mapped here; the old pages are
    unmapped everywhere.  Blocks with nothing cached fail with EINVAL; so
    do blocks with a guard marker here, after the object's folio was made
    (the marker only stops the PMD mapping)."""
    if vma.vm_flags & (C.VM_NOHUGEPAGE | C.VM_SPECIAL | C.VM_HUGETLB):
        return EINVAL
    obj = vma.vm_file
    result = 0
    h = hs
    while h < he:
        if h < vma.vm_start or h + PMD_SIZE > vma.vm_end:
            h += PMD_SIZE
            continue
        lo = vma.vm_pgoff + (h - vma.vm_start) // PAGE_SIZE
        pmdv = mm.entry(h, PMD)
        if pmd_leaf(pmdv):
            h += PMD_SIZE
            continue
        if lo % 512 == 0 and lo + 512 <= obj.npages and obj.order[lo] == 9:
            err = _map_huge_folio(mm, vma, h, pmdv, int(obj.pages[lo]))
            result = result or err
            h += PMD_SIZE
            continue
        guarded = pmdv != 0 and any(
            mm.entry(h + i * PAGE_SIZE, PTE) == _GUARD for i in range(512))
        pages = obj.pages[lo:lo + 512]
        if lo % 512 or len(pages) < 512 or not pages.any():
            result = result or EINVAL
            h += PMD_SIZE
            continue
        # the tables down to the PMD first: if one cannot be allocated
        # (OSError ENOMEM), nothing has been changed yet
        mm.locate(h, PMD, True)
        new = mm.phys.alloc(512, 512)
        for i in range(512):
            old = int(pages[i])
            # the new folio is dirty (collapse_file marks it so): reclaim keeps it
            mm.phys.set_flags(new + i, PF_SHMEM | PF_LARGE | PF_SHMEM_DIRTY
                               | (mm.phys.flags(old) & PF_DATA if old else 0))
        unmap_object_range(mm, obj, lo, lo + 512)
        for i in range(512):
            old = int(pages[i])
            if old:
                mm.phys.set_flags(old, 0, 0xFF)
        obj.pages[lo:lo + 512] = range(new, new + 512)
        obj.order[lo:lo + 512] = 9
        obj.huge = True
        if guarded:
            # collapse_file worked on the object (a guard marker is not in
            # it), but mapping the new folio here stops at the marker: the
            # block fails and keeps its table and markers
            result = result or EINVAL
            h += PMD_SIZE
            continue
        mm.phys.add_map(new, 512)
        map_huge_pmd(mm, vma, h, new)
        h += PMD_SIZE
    return result


_GUARD = (31 << 52) | (4 << 12) | 2


def _map_huge_folio(mm, vma, h, pmdv, head):
    """collapse_pte_mapped_thp: the block is one huge folio of the object
    already; map it by PMD in this mm only.  An empty PMD slot just gets
    the PMD; a PTE table may hold only empty entries and this folio's own
    pages at their places (a marker or anything else: EINVAL, nothing
    changed), and is then replaced by the PMD."""
    if pmdv != 0:
        for i in range(512):
            v = mm.entry(h + i * PAGE_SIZE, PTE)
            if pte_none(v):
                continue
            if not pte_present(v) or pte_pfn(v) != head + i:
                return EINVAL
        mm.zap(h, h + PMD_SIZE)
    mm.phys.add_map(head, 512)
    map_huge_pmd(mm, vma, h, head, dirty=False)
    return 0


def map_huge_pmd(mm, vma, haddr, head, dirty=True):
    """Map the PMD-sized folio ``head`` at ``haddr`` by a PMD leaf, freeing
    the PTE table there: writable only in a writable VMA, and dirty as a
    collapse leaves a new folio (``dirty``)."""
    tid, idx = mm.locate(haddr, PMD, True)
    if mm.child(tid, idx) >= 0:
        mm.free_below(tid, idx, PMD)
    mm.table(tid)[idx] = (((head << 12) & C.PHYSICAL_PMD_PAGE_MASK) | pte_prot(vma.vm_flags) | C._PAGE_PSE
                          | (C._PAGE_DIRTY if dirty else 0)
                          | (C._PAGE_RW if vma.vm_flags & C.VM_WRITE else 0))
