"""mmap(2), munmap(2) and exit of the process model (the kernel's
``mm/mmap.c`` and ``mm/vma.c``): placing and merging VMAs, MAP_FIXED
replacement, shared anonymous memory as a shmem object, and the unmap and
table reclaim they do."""

from .. import constants as C
from ..constants import (
    EBADF, EEXIST, EINVAL, ENOMEM, EOPNOTSUPP, page_align, PAGE_SIZE, PMD_SIZE, VM_ACCOUNT,
    VM_LOCKED, VM_MAYEXEC, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_NORESERVE, VM_SHARED,
)
from ..walker import walk_page_range_novma
from . import faults
from .objects import oserror, SHMEM, ShmemObject, VM_ACCESS

def mmap_top(mm):
    """Where top-down placement of new mappings starts: the end of the user address
    space less the gap kept free for the stack."""
    return mm.task_size + PAGE_SIZE - C.MMAP_BASE_GAP


def free_area(mm, length, hint=0, align=PAGE_SIZE):
    """get_unmapped_area: the hint if free, else top-down from the base."""
    if hint:
        hint = page_align(hint)
        if (C.MMAP_MIN_ADDR <= hint and hint + length <= mm.task_size + PAGE_SIZE
                and not mm.vmas_in(hint, hint + length)):
            return hint
    top = mmap_top(mm)
    gaps = []
    prev_end = C.MMAP_MIN_ADDR
    for v in mm.vma_tree:
        gaps.append((prev_end, v.vm_start))
        prev_end = max(prev_end, v.vm_end)
    gaps.append((prev_end, top))
    for lo, hi in reversed(gaps):
        hi = min(hi, top)
        cand = (hi - length) & ~(align - 1)
        if cand >= lo and cand + length <= hi:
            return cand
    raise oserror(ENOMEM)


def mmap(mm, addr, length, prot, flags, fd=-1, offset=0):
    """mmap(2) of anonymous memory, private or shared (shmem); returns the address."""
    mm.check_alive()
    addr = addr or 0
    if flags & C.MAP_ANONYMOUS == 0:
        raise oserror(EBADF)
    if length <= 0:
        raise oserror(EINVAL)
    length = page_align(length)
    if length > mm.task_size:
        raise oserror(ENOMEM)
    mtype = flags & C.MAP_TYPE
    if mtype == C.MAP_SHARED_VALIDATE:
        known = (C.MAP_SHARED_VALIDATE | C.MAP_FIXED | C.MAP_ANONYMOUS | C.MAP_FIXED_NOREPLACE
                 | C.MAP_POPULATE | C.MAP_NORESERVE | C.MAP_LOCKED | C.MAP_NONBLOCK
                 | C.MAP_STACK | C.MAP_GROWSDOWN | C.MAP_DENYWRITE | C.MAP_EXECUTABLE
                 | C.MAP_SYNC | C.MAP_HUGETLB | 0xFC000000)
        if flags & ~known:
            raise oserror(EOPNOTSUPP)
        shared = True
    elif mtype in (C.MAP_SHARED, C.MAP_PRIVATE):
        shared = mtype == C.MAP_SHARED
    else:
        raise oserror(EINVAL)
    if flags & C.MAP_HUGETLB:
        raise oserror(EINVAL)
    fixed = bool(flags & (C.MAP_FIXED | C.MAP_FIXED_NOREPLACE))
    if fixed:
        if addr & (PAGE_SIZE - 1):
            raise oserror(EINVAL)
        if addr + length > mm.task_size + PAGE_SIZE or addr + length < addr:
            raise oserror(ENOMEM)
    with mm.mmap_write_lock():
        if fixed:
            start = addr
            if flags & C.MAP_FIXED_NOREPLACE and mm.vmas_in(start, start + length):
                raise oserror(EEXIST)
        else:
            align = PMD_SIZE if (not shared and length % PMD_SIZE == 0 and not addr) else PAGE_SIZE
            start = free_area(mm, length, addr, align)
        end = start + length
        vm_flags = (prot & VM_ACCESS) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        if shared:
            vm_flags |= VM_SHARED | VM_MAYSHARE
        if flags & C.MAP_NORESERVE:
            vm_flags |= VM_NORESERVE
        elif not shared and prot & C.PROT_WRITE:
            vm_flags |= VM_ACCOUNT
        if flags & C.MAP_LOCKED:
            vm_flags |= VM_LOCKED
        mm.unmap(start, end)                        # MAP_FIXED replaces
        if shared:
            obj = ShmemObject(length // PAGE_SIZE)
            obj.mms.append(mm)
            vma = mm.new_vma(start, end, vm_flags, 0, SHMEM, obj)
            mm.insert_vma(vma)
        else:
            vma = mm.new_vma(start, end, vm_flags, start >> 12)
            mm.insert_vma(vma)
            mm.merge_around(start, end)
        if flags & C.MAP_LOCKED or (flags & C.MAP_POPULATE and not flags & C.MAP_NONBLOCK):
            faults.populate(mm, start, end, mode="auto", ignore_errors=True)
    return start


def munmap(mm, addr, length):
    """munmap(2)."""
    mm.check_alive()
    if addr & (PAGE_SIZE - 1) or length <= 0:
        raise oserror(EINVAL)
    length = page_align(length)
    if addr + length > mm.task_size + PAGE_SIZE:
        raise oserror(EINVAL)
    with mm.mmap_write_lock():
        mm.unmap(addr, addr + length)
    return 0


def exit_mm(mm):
    """Tear the process down: every VMA unmapped, every table freed."""
    if mm.exited:
        return
    with mm.mmap_write_lock():
        if mm.vma_tree:
            mm.unmap(mm.vma_tree[0].vm_start, mm.vma_tree[-1].vm_end)
        top = 1 << (47 if mm.levels == 4 else 56)
        op = mm.new_op().setup(lo=0, hi=top)
        walk_page_range_novma(mm, 0, top - PAGE_SIZE, mm.walk_ops(op, "free_tables"))
    mm.exited = True
    mm.phys_group.exited.add(mm.group_key)
