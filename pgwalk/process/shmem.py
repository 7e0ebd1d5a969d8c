"""Large folios of a shmem object (shared anonymous memory) in the process
model.  Only MADV_COLLAPSE makes them here (this kernel's shmem_enabled is
"never", so faults allocate single pages); a hole punch splits them the
non-uniform way (folio_split), MADV_COLD/PAGEOUT over part of one split it
to single pages, and a fault maps a whole folio at once where it can.

A folio is an aligned block of the object: ``obj.order[i]`` is the order of
the folio holding page ``i`` (0 for a single page or a hole).  Splitting a
shmem folio unmaps it from every mapping first (file folios are not
remapped after a split: they fault back in later), as the kernel does."""

from ..constants import PAGE_SIZE, PMD, PMD_SIZE, PTE
from ..entries import pmd_leaf
from .objects import PF_LARGE

def folio_span(obj, idx):
    """(first page, number of pages) of the folio holding object page ``idx``."""
    k = int(obj.order[idx])
    start = idx & ~((1 << k) - 1)
    return start, 1 << k


def nonuniform_pieces(start, order, at):
    """The folios [(start, order), ...] that splitting the folio of
    ``2**order`` pages at ``start`` down to single pages around page ``at``
    leaves (folio_split): at each level the half without ``at`` stays one
    folio of the order below."""
    out = []
    s, k = start, order
    while k > 0:
        k -= 1
        half = 1 << k
        if at < s + half:
            out.append((s + half, k))
        else:
            out.append((s, k))
            s += half
    out.append((s, 0))
    return sorted(out)


def split_folio(mm, obj, start, n, at=None):
    """Split the folio of ``n`` pages at object page ``start``: to single
    pages (``at`` None, split_folio) or around page ``at`` (the hole punch's
    try_folio_split).  Every mapping of it goes first."""
    if n <= 1:
        return
    unmap_object_range(mm, obj, start, start + n)
    for i in range(start, start + n):
        pfn = int(obj.pages[i])
        if pfn:
            mm.phys.set_flags(pfn, 0, PF_LARGE)
    if at is None:
        obj.order[start:start + n] = 0
        return
    for s, k in nonuniform_pieces(start, n.bit_length() - 1, at):
        obj.order[s:s + (1 << k)] = k


def unmap_object_range(self_mm, obj, lo, hi):
    """unmap_mapping_range: zap object pages [lo, hi) in every mapping of it."""
    for mm in list(obj.mms):
        for v in list(mm.vma_tree):
            if v.vm_file is not obj:
                continue
            vlo, vhi = v.vm_pgoff, v.vm_pgoff + (v.vm_end - v.vm_start) // PAGE_SIZE
            a, b = max(lo, vlo), min(hi, vhi)
            if a < b:
                s, e = v.vm_start + (a - vlo) * PAGE_SIZE, v.vm_start + (b - vlo) * PAGE_SIZE
                if mm is self_mm:
                    mm.zap(s, e)
                else:
                    with mm.mmap_read_lock():
                        mm.zap(s, e)


def punch_hole(self_mm, obj, lo, hi):
    """fallocate(PUNCH_HOLE) on a shmem object (shmem_undo_range): unmap
    [lo, hi) from every mapping of it (guard markers stay); a large folio
    the hole covers in part is split around the hole's first page, and
    again around the page after the hole (truncate_inode_partial_folio);
    then every page of the hole is dropped."""
    lo = max(lo, 0)
    hi = min(hi, obj.npages)
    if lo >= hi:
        return
    unmap_object_range(self_mm, obj, lo, hi)
    s, n = folio_span(obj, lo)
    same = hi <= s + n
    _split_partial(self_mm, obj, s, n, lo, hi, at=lo)
    if not same:
        s, n = folio_span(obj, hi - 1)
        _split_partial(self_mm, obj, s, n, lo, hi, at=s)
    for pfn in obj.pages[lo:hi]:
        if pfn:
            self_mm.phys.set_flags(int(pfn), 0, 0xFF)
    obj.pages[lo:hi] = 0
    obj.order[lo:hi] = 0


def _split_partial(mm, obj, s, n, lo, hi, at):
    if n <= 1 or (lo <= s and s + n <= hi):
        return                       # a single page, or wholly inside the hole
    split_folio(mm, obj, s, n, at=at)
    if hi < s + n:
        s2, n2 = folio_span(obj, hi)
        split_folio(mm, obj, s2, n2, at=hi)


# --- faults ----------------------------------------------------------------------

def folio_addr_span(vma, s, n):
    """The addresses [a0, a1) the folio of ``n`` pages at object page ``s``
    has in ``vma``, or None when it does not lie wholly inside the VMA and
    inside one page table (then a fault maps only single pages of it)."""
    a0 = vma.vm_start + (s - vma.vm_pgoff) * PAGE_SIZE
    a1 = a0 + n * PAGE_SIZE
    if a0 < vma.vm_start or a1 > vma.vm_end or (a0 & ~(PMD_SIZE - 1)) != ((a1 - 1) & ~(PMD_SIZE - 1)):
        return None
    return a0, a1


def around_window(mm, vma, lo_addr, hi_addr):
    """The fault-around window [lo_addr, hi_addr) widened to the whole of a
    large folio at either end that lies inside the VMA and one page table
    (filemap_map_pages maps such a folio entirely, 6.18)."""
    obj = vma.vm_file
    if obj is None or not obj.huge:
        return lo_addr, hi_addr
    for addr in (lo_addr, hi_addr - PAGE_SIZE):
        idx = vma.vm_pgoff + (addr - vma.vm_start) // PAGE_SIZE
        if not 0 <= idx < obj.npages or not obj.pages[idx]:
            continue
        s, n = folio_span(obj, idx)
        if n > 1:
            span = folio_addr_span(vma, s, n)
            if span is not None:
                lo_addr, hi_addr = min(lo_addr, span[0]), max(hi_addr, span[1])
    return lo_addr, hi_addr


def whole_folio_ranges(mm, vma, start, end):
    """The address ranges of the large folios that a write fault in
    [start, end) maps entirely (finish_fault for shmem: the folio lies
    inside the VMA and one page table, and none of its PTEs is set)."""
    obj = vma.vm_file
    out = []
    if obj is None or not obj.huge:
        return out
    a = start
    while a < end:
        idx = vma.vm_pgoff + (a - vma.vm_start) // PAGE_SIZE
        if not 0 <= idx < obj.npages:
            break
        s, n = folio_span(obj, idx)
        nxt = vma.vm_start + (s + n - vma.vm_pgoff) * PAGE_SIZE
        if n > 1 and obj.pages[idx]:
            span = folio_addr_span(vma, s, n)
            if span is not None and _ptes_none(mm, *span):
                out.append(span)
        a = max(nxt, a + PAGE_SIZE)
    return out


def _ptes_none(mm, a0, a1):
    pmdv = mm.entry(a0, PMD)
    if pmdv == 0:
        return True
    if pmd_leaf(pmdv):
        return False
    return all(mm.entry(p, PTE) == 0 for p in range(a0, a1, PAGE_SIZE))
