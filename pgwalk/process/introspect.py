"""Introspection of the process model in the kernel's formats, each produced
by a walk: ``pagemap`` (/proc/PID/pagemap words), ``mincore`` (mincore(2)
vector), ``smaps`` (/proc/PID/smaps fields, kB), ``clear_refs``
(/proc/PID/clear_refs) and ``ptdump`` (a text dump of the tables, like the
kernel's page-table dump).

pagemap, mincore, smaps and clear_refs run on either walker:
``walker="callbacks"`` (the kernel's ``walk_page_*`` with C ops) or
``walker="pt_range"`` (the batched ``pt_range_walk``, driven from C by
``_mmops.pt_range_consume``); both give identical results."""

import numpy as np

from .. import constants as C
from ..constants import EINVAL, ENOMEM, page_align, page_down, PAGE_SIZE
from ..entries import is_guard_marker, is_pte_marker, pmd_leaf, pte_none, pte_present
from ..walker.ptdump import kernel_ptdump
from ..walker import (
    MMWalkOps, walk_page_range, walk_page_range_novma, walk_page_range_vma, walk_page_vma,
)
from . import faults
from ._mmops import pt_range_consume
from .objects import oserror

WALKERS = ("callbacks", "pt_range")


def check_walker(walker):
    """Check a ``walker=`` argument (ValueError if unknown); True for ``pt_range``,
    False for ``callbacks``."""
    if walker not in WALKERS:
        raise ValueError(f"walker must be one of {WALKERS}, not {walker!r}")
    return walker == "pt_range"


def pt_walkable(vma):
    """A VMA the pt_range consumers walk: the callback walks give nothing
    for hugetlb VMAs (the model's consumers have no hugetlb_entry)."""
    return not vma.vm_flags & C.VM_HUGETLB

VMFLAG_NAMES = [
    (C.VM_READ, "rd"), (C.VM_WRITE, "wr"), (C.VM_EXEC, "ex"), (C.VM_SHARED, "sh"),
    (C.VM_MAYREAD, "mr"), (C.VM_MAYWRITE, "mw"), (C.VM_MAYEXEC, "me"), (C.VM_MAYSHARE, "ms"),
    (C.VM_GROWSDOWN, "gd"), (C.VM_PFNMAP, "pf"), (C.VM_LOCKED, "lo"), (C.VM_IO, "io"),
    (C.VM_SEQ_READ, "sr"), (C.VM_RAND_READ, "rr"), (C.VM_DONTCOPY, "dc"),
    (C.VM_DONTEXPAND, "de"), (C.VM_LOCKONFAULT, "lf"), (C.VM_ACCOUNT, "ac"),
    (C.VM_NORESERVE, "nr"), (C.VM_HUGETLB, "ht"), (C.VM_WIPEONFORK, "wf"),
    (C.VM_DONTDUMP, "dd"), (C.VM_MIXEDMAP, "mm"), (C.VM_HUGEPAGE, "hg"),
    (C.VM_NOHUGEPAGE, "nh"), (C.VM_MERGEABLE, "mg"), (C.VM_MAYBE_GUARD, "gu"),
]



def pagemap(mm, start, end, walker="callbacks"):
    """/proc/PID/pagemap words for the pages of [start, end): numpy
    uint64; bits 0-54 PFN (present) or swap type/offset (swap entries and
    markers), 56 exclusively mapped, 58 guard region, 61 file/shared
    anon, 62 swap (guard markers too), 63 present."""
    pt = check_walker(walker)
    start = page_down(start)
    end = page_align(end)
    out = np.zeros(max(0, (end - start) // PAGE_SIZE), dtype=np.uint64)
    if end <= start:
        return out
    op = mm.new_op().setup(out=out, out_start=start)
    with mm.mmap_read_lock():
        if not pt:
            walk_page_range(mm, start, end, mm.walk_ops(op, "pagemap"))
            return out
        for vma in mm.vmas_in(start, end):
            # walk_page_range skips a VM_PFNMAP VMA (a hole: words 0)
            if pt_walkable(vma) and not vma.vm_flags & C.VM_PFNMAP:
                pt_range_consume(op, "pagemap", vma, max(start, vma.vm_start),
                                 min(end, vma.vm_end))
    return out


def mincore(mm, start, length, walker="callbacks"):
    """mincore(2): one byte per page, 1 if resident.  Anonymous memory:
    mapped pages (a guard page is not resident); shmem: the object's
    pages whether mapped or not.  EINVAL for an unaligned start, ENOMEM
    if the range is not wholly mapped."""
    pt = check_walker(walker)
    if start & (PAGE_SIZE - 1):
        raise oserror(EINVAL)
    length = page_align(length)
    end = start + length
    if end > mm.task_size + PAGE_SIZE:
        raise oserror(ENOMEM)
    out = np.zeros(length // PAGE_SIZE, dtype=np.uint8)
    if not length:
        return out
    with mm.mmap_read_lock():
        a = start
        while a < end:
            vma = mm.find_vma(a)
            if vma is None or vma.vm_start > a:
                raise oserror(ENOMEM)
            b = min(end, vma.vm_end)
            op = mm.setup_op(mm.new_op(), vma, out=out, out_start=start)
            if not pt:
                walk_page_range_vma(vma, a, b, mm.walk_ops(op, "mincore"))
            elif pt_walkable(vma):
                pt_range_consume(op, "mincore", vma, a, b)
            a = b
    return out


def thp_eligible(mm, vma):
    """smaps' THPeligible (thp_vma_allowable_orders for smaps): the VMA
    may get THPs (private anonymous, VM_HUGEPAGE: this kernel's THP mode
    is "madvise"; shmem's is "never") and the highest 2 MiB-aligned
    block that ends by its end starts inside it."""
    haddr = (vma.vm_end - C.PMD_SIZE) & ~(C.PMD_SIZE - 1)
    return bool(vma.vm_end >= C.PMD_SIZE and haddr >= vma.vm_start
                and faults.thp_suitable(mm, vma, haddr))


def smaps(mm, walker="callbacks"):
    """Per-VMA figures of /proc/PID/smaps (kB, the kernel's field names)."""
    pt = check_walker(walker)
    res = []
    with mm.mmap_read_lock():
        for vma in mm.vma_tree:
            op = mm.setup_op(mm.new_op(), vma)
            if not pt:
                walk_page_vma(vma, mm.walk_ops(op, "smaps"))
            elif pt_walkable(vma):
                pt_range_consume(op, "smaps", vma, vma.vm_start, vma.vm_end)
            n = op.counts
            kb = lambda x: x >> 10  # noqa: E731
            d = {
                "start": vma.vm_start, "end": vma.vm_end,
                "Size": kb(vma.vm_end - vma.vm_start),
                "Rss": kb(n[0]), "Pss": kb(n[1] >> 12),
                "Shared_Clean": kb(n[2]), "Shared_Dirty": kb(n[3]),
                "Private_Clean": kb(n[4]), "Private_Dirty": kb(n[5]),
                "Referenced": kb(n[6]), "Anonymous": kb(n[7]),
                "LazyFree": kb(n[10]), "AnonHugePages": kb(n[8]),
                "ShmemPmdMapped": kb(n[11]), "Swap": kb(n[9]),
                "Locked": kb(n[1] >> 12) if vma.vm_flags & C.VM_LOCKED else 0,
                "THPeligible": int(thp_eligible(mm, vma)),
                "VmFlags": " ".join(name for bit, name in VMFLAG_NAMES if vma.vm_flags & bit),
            }
            res.append(d)
    return res


CLEAR_REFS_ALL, CLEAR_REFS_ANON, CLEAR_REFS_MAPPED, CLEAR_REFS_SOFT_DIRTY, \
    CLEAR_REFS_MM_HIWATER_RSS = 1, 2, 3, 4, 5


def clear_refs(mm, kind, walker="callbacks"):
    """A write of ``kind`` to /proc/PID/clear_refs (fs/proc/task_mmu.c), under
    the mmap write lock.  1 (all VMAs), 2 (VMAs without a file: anonymous),
    3 (VMAs with one: shmem here): clear the accessed bit of every present
    normal page's PTE and of every present PMD leaf; VM_PFNMAP VMAs are
    skipped.  4 (soft-dirty) changes nothing: the modelled kernel is built
    without CONFIG_MEM_SOFT_DIRTY, as this machine's is (tested), where the
    kernel's VM_SOFTDIRTY is 0 and its soft-dirty helpers are empty.  5: reset the RSS high-water mark, which
    the model does not keep: nothing changes.  The model keeps no
    PG_referenced/PG_young folio flags.  Other kinds: EINVAL."""
    pt = check_walker(walker)
    if isinstance(kind, bool) or not isinstance(kind, int) or not 1 <= kind <= 5:
        raise oserror(EINVAL)
    mm.check_alive()
    with mm.mmap_write_lock():
        if kind == CLEAR_REFS_MM_HIWATER_RSS:
            return
        for vma in list(mm.vma_tree):
            if vma.vm_flags & C.VM_PFNMAP:
                continue                    # clear_refs_test_walk
            if kind == CLEAR_REFS_ANON and vma.vm_file is not None:
                continue
            if kind == CLEAR_REFS_MAPPED and vma.vm_file is None:
                continue
            op = mm.setup_op(mm.new_op(), vma, kind=kind)
            if not pt:
                walk_page_vma(vma, mm.walk_ops(op, "clear_refs", walk_lock=C.PGWALK_WRLOCK))
            elif pt_walkable(vma):
                pt_range_consume(op, "clear_refs", vma, vma.vm_start, vma.vm_end)


def ptdump(mm, start=0, end=None, kernel_format=False):
    """A text dump of the page tables of [start, end) (default: the user
    half), one line per run of like entries: address range, size, level
    and the entry's attributes, with guard markers, other markers, swap
    entries and zero pages named.  ``kernel_format=True``: exactly the
    kernel's page_tables text (``pgwalk.ptdump``), where non-present
    entries show no attributes."""
    if end is None:
        end = 1 << (47 if mm.levels == 4 else 56)
    if kernel_format:
        with mm.mmap_write_lock():
            return kernel_ptdump(mm, [(start, end)])
    runs = []

    def attrs(v, level):
        if pte_none(v):
            return None
        if level == "pte" and not pte_present(v):
            if is_guard_marker(v):
                return "guard"
            return "marker" if is_pte_marker(v) else "swap"
        if not v & (C._PAGE_PRESENT | C._PAGE_PROTNONE):
            return "swap"
        parts = ["RW" if v & C._PAGE_RW else "ro", "USR" if v & C._PAGE_USER else "   ",
                 "PSE" if level != "pte" else "   ", "NX" if v & C._PAGE_NX else "x "]
        if not v & C._PAGE_PRESENT:
            parts[0] = "none"
        pfn = (v & C.PTE_PFN_MASK) >> 12
        if pfn == C.ZERO_PFN and level == "pte" or level == "pmd" and pfn == C.HUGE_ZERO_PFN:
            parts.append("zero")
        return " ".join(parts)

    def add(addr, nxt, level, v):
        a = attrs(v, level)
        if a is None:
            return
        if runs and runs[-1][1] == addr and runs[-1][2] == level and runs[-1][3] == a:
            runs[-1][1] = nxt
        else:
            runs.append([addr, nxt, level, a])

    def pmd_entry(e, addr, nxt, walk):
        v = int(e)
        if pmd_leaf(v) or (not pte_none(v) and not v & 1):
            add(addr, nxt, "pmd", v)
        return 0

    def pud_entry(e, addr, nxt, walk):
        v = int(e)
        if pmd_leaf(v):
            add(addr, nxt, "pud", v)
        return 0

    def pte_entry(e, addr, nxt, walk):
        add(addr, nxt, "pte", int(e))
        return 0

    ops = MMWalkOps(pud_entry=pud_entry, pmd_entry=pmd_entry, pte_entry=pte_entry)
    with mm.mmap_write_lock():
        walk_page_range_novma(mm, start, end, ops)
    lines = []
    for a, b, level, at in runs:
        size = b - a
        unit = "K"
        n = size >> 10
        for u, shift in (("G", 30), ("M", 20)):
            if size % (1 << shift) == 0:
                unit, n = u, size >> shift
                break
        lines.append(f"0x{a:016x}-0x{b:016x} {n:>8}{unit} {level:<4} {at}")
    return "\n".join(lines) + ("\n" if lines else "")
