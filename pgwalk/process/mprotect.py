"""mprotect(2), mlock(2) and munlock(2) of the process model (the kernel's
``mm/mprotect.c`` and ``mm/mlock.c``): VMA flag changes with their splits
and merges, the protection change walk, and mlock's populate."""

from .. import constants as C
from ..constants import (
    EAGAIN, EFAULT, EINVAL, ENOMEM, page_align, page_down, PAGE_SIZE, VM_ACCOUNT, VM_HUGETLB,
    VM_LOCKED, VM_LOCKONFAULT, VM_NORESERVE, VM_SHARED, VM_WRITE,
)
from ..walker import walk_page_range
from . import faults
from .objects import oserror, VM_ACCESS, vma_is_anonymous

def mprotect(mm, addr, length, prot):
    """mprotect(2)."""
    mm.check_alive()
    if addr & (PAGE_SIZE - 1):
        raise oserror(EINVAL)
    if prot & ~(C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC):
        raise oserror(EINVAL)
    length = page_align(length)
    end = addr + length
    if end < addr:
        raise oserror(ENOMEM)
    if length == 0:
        return 0
    with mm.mmap_write_lock():
        vma = mm.find_vma(addr)
        if vma is None or vma.vm_start > addr:
            raise oserror(ENOMEM)
        a = addr
        err = 0
        while a < end:
            vma = mm.find_vma(a)
            if vma is None or vma.vm_start > a:
                err = ENOMEM
                break
            b = min(end, vma.vm_end)
            old = vma.vm_flags
            new = (old & ~VM_ACCESS) | (prot & VM_ACCESS)
            if new == old:
                a = b
                continue
            if new & VM_WRITE:
                if not old & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
                    new |= VM_ACCOUNT
            elif old & VM_ACCOUNT and vma_is_anonymous(vma) and vma.anon_vma is None:
                new &= ~VM_ACCOUNT
            if new != old:
                (part,) = mm.isolate(a, b)
                part.vm_flags = new
                op = mm.setup_op(mm.new_op(), part)
                walk_page_range(mm, a, b, mm.walk_ops(op, "mprotect"))
                # the merge comes first (vma_modify_flags), then the
                # populate of a locked VMA made writable, which attaches
                # an anon_vma to the merged VMA
                mm.merge_around(a, b)
                if (old & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED and new & VM_WRITE:
                    try:               # populate_vma_page_range: result ignored
                        faults.fault_range(mm, mm.find_vma(a), a, b, True)
                    except OSError as e:
                        if e.errno != ENOMEM:
                            raise
            a = b
        if err:
            raise oserror(err)
    return 0


def set_flags(mm, start, end, set_bits, clear_bits, check=None):
    """Apply a vm_flags change to [start, end) VMA by VMA (splitting and
    merging as the kernel's vma_modify_flags does).  Returns ENOMEM if a
    hole was met (after changing the VMAs before it), else 0; ``check``
    may veto a VMA with an errno (returned at once)."""
    a = start
    while a < end:
        vma = mm.find_vma(a)
        if vma is None or vma.vm_start >= end:
            return ENOMEM
        if vma.vm_start > a:
            return ENOMEM
        b = min(end, vma.vm_end)
        if check is not None:
            e = check(vma)
            if e:
                return e
        new = (vma.vm_flags & ~clear_bits) | set_bits
        if new != vma.vm_flags:
            (part,) = mm.isolate(a, b)
            part.vm_flags = new
            mm.merge_around(a, b)
        a = b
    return 0


def mlock(mm, addr, length, onfault=False):
    """mlock(2) (``onfault``: mlock2(MLOCK_ONFAULT))."""
    mm.check_alive()
    end = page_align(addr + length)
    addr = page_down(addr)
    if end < addr:
        raise oserror(EINVAL)
    if end == addr:
        return 0
    with mm.mmap_write_lock():
        if mm.find_vma(addr) is None or mm.find_vma(addr).vm_start > addr:
            raise oserror(ENOMEM)
        err = set_flags(mm, addr, end, VM_LOCKED | (VM_LOCKONFAULT if onfault else 0),
                              0 if onfault else VM_LOCKONFAULT)
        if err:
            raise oserror(err)
        if not onfault:
            err = faults.populate(mm, addr, end, "auto", ignore_errors=False)
            if err:
                raise oserror({EFAULT: ENOMEM, ENOMEM: EAGAIN}.get(err, err))
    return 0


def munlock(mm, addr, length):
    """munlock(2)."""
    mm.check_alive()
    end = page_align(addr + length)
    addr = page_down(addr)
    if end == addr:
        return 0
    with mm.mmap_write_lock():
        if mm.find_vma(addr) is None or mm.find_vma(addr).vm_start > addr:
            raise oserror(ENOMEM)
        err = set_flags(mm, addr, end, 0, VM_LOCKED | VM_LOCKONFAULT)
        if err:
            raise oserror(err)
    return 0
