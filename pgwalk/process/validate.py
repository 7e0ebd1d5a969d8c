"""``MM.validate()``'s process-model invariants.

For a user mm whose group (the mm and the processes forked from it,
sharing one physical-memory map) only the process model has touched (see
``PhysGroup``): what the kernel guarantees there -- no entry outside a VMA
and no leaf above the PMD level; only present pages, huge pages wholly
inside one VMA and guard markers; present bits and write bits as the VMA's
protection allows; a writable private page mapped once; a shmem page being
the object's page at that offset; a page mapped in an anonymous VMA being an
anonymous page and one in a shmem VMA a shmem page; and every PFN's map
count equal to the mappings of it in the group's live mms (a PMD counting
once per subpage), a page nobody maps being free (no flags) unless it is a
shmem page.
"""

import numpy as np

from .. import entries as E
from ..constants import (
    FIRST_DATA_PFN, HUGE_ZERO_PFN, _PAGE_PRESENT, _PAGE_PROTNONE, _PAGE_PSE, _PAGE_RW,
    PAGE_SIZE, PGD, PHYSICAL_PMD_PAGE_MASK, PMD, PMD_SIZE, PTE, PTE_MARKER_GUARD, PTE_PFN_MASK,
    PUD, VM_EXEC, VM_READ, VM_SHARED, VM_WRITE, ZERO_PFN,
)
from ..walker import InvariantError
from .objects import PF_ANON, PF_SHMEM

GUARD_MARKER = E.make_pte_marker(PTE_MARKER_GUARD)
C_PTE_PFN_MASK = PTE_PFN_MASK
C_PMD_PFN_MASK = PHYSICAL_PMD_PAGE_MASK


def leaves(mm):
    """The non-empty slots that are not table links: a list of
    (level, address, value) above the PTE level, and the PTEs as two
    uint64 arrays (addresses, values)."""
    upper, pte_addr, pte_val = [], [], []
    levels = mm.levels
    stack = [(mm.pgd_id, PGD, 0)]         # no recursive closure: it would be a
    while stack:                            # reference cycle holding the mm
        tid, level, base = stack.pop()
        table = np.asarray(mm.table(tid))
        nz = np.flatnonzero(table)
        if level == PTE:
            pte_addr.append(base + (nz.astype(np.uint64) << np.uint64(12)))
            pte_val.append(table[nz])
            continue
        shift = (39 if levels == 4 else 48) if level == PGD else 12 + 9 * (4 - level)
        for i in nz.tolist():
            addr = base + (i << shift)
            child = mm.child(tid, i)
            if child >= 0:
                stack.append((child, PUD if (levels == 4 and level == PGD) else level + 1, addr))
            else:
                upper.append((level, addr, int(table[i])))
    empty = np.zeros(0, dtype=np.uint64)
    return (upper, np.concatenate(pte_addr) if pte_addr else empty,
            np.concatenate(pte_val) if pte_val else empty)


def validate_process(mm):
    """Raise InvariantError on the first broken process-model invariant of
    ``mm``'s group (see the module docstring)."""
    group = mm.phys_group
    phys = mm.phys
    lo, hi = FIRST_DATA_PFN, phys.next_pfn
    got = np.zeros(max(0, hi - lo), dtype=np.int64)
    exclusive = []
    for member in group.live():
        _validate_mappings(member, got, lo, exclusive)
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
    objs = {id(v.vm_file): v.vm_file for member in group.live() for v in member.vma_tree
            if v.vm_file is not None}
    for obj in objs.values():
        _validate_shmem_folios(obj)


def _validate_mappings(mm, got, lo, exclusive):
    """Check this mm's entries against its VMAs; add its mappings per
    PFN (from ``lo``) to ``got``; list its writable private pages in
    ``exclusive``."""
    where = f"mm {mm.group_key} of its group"
    upper, addrs, vals = leaves(mm)
    vmas = mm.vma_tree
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
            pflags = mm.phys.flags
            for m, p in enumerate(vp.tolist()):
                for k in range(npages):
                    fl = pflags(p + k)
                    if not fl & kind or fl & other:
                        fail(va[m], vv[m], f"maps PFN {p + k:#x} with page flags {fl:#x}: not "
                             f"{'a shmem' if kind == PF_SHMEM else 'an anonymous'} page")

    pmd = []
    for level, addr, v in upper:
        if addr >= mm.task_size + PAGE_SIZE:
            fail(addr, v, "above TASK_SIZE")
        if level < PMD:
            fail(addr, v, f"a leaf or bad entry at level {level} (the process model maps "
                 "nothing above the PMD level)")
        pmd.append((addr, v))
    check(PMD, np.array([x[0] for x in pmd], dtype=np.uint64),
          np.array([x[1] for x in pmd], dtype=np.uint64), PMD_SIZE)
    check(PTE, addrs, vals, PAGE_SIZE)




def _validate_shmem_folios(obj):
    """A shmem object's folios (shmem.py): every page of a folio of
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
