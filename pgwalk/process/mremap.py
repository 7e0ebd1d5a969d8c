"""mremap(2) of the process model: shrink, grow in place, move (MREMAP_MAYMOVE,
MREMAP_FIXED, MREMAP_DONTUNMAP).  Entries (pages, guard markers, whole PTE
tables and THPs where both ends are 2 MiB aligned) move with a walk of the
old range whose C slots write them at the new address (``move`` op)."""

from .. import constants as C
from ..constants import (
    EFAULT, EINVAL, ENOMEM, page_align, PAGE_SIZE, PMD_SIZE, VM_LOCKED, VM_LOCKONFAULT,
)
from ..walker import walk_page_range
from . import faults
from . import mmap
from .objects import oserror, vma_is_anonymous

_align = page_align


def mremap(mm, addr, old_len, new_len, flags=0, new_addr=None):
    """mremap(2): shrink, grow in place or move ``[addr, addr + old_len)`` to
    ``new_len`` bytes as the MREMAP_* ``flags`` allow.  Returns the mapping's new
    address; failures raise OSError."""
    if flags & ~(C.MREMAP_MAYMOVE | C.MREMAP_FIXED | C.MREMAP_DONTUNMAP):
        raise oserror(EINVAL)
    if flags & C.MREMAP_FIXED and not flags & C.MREMAP_MAYMOVE:
        raise oserror(EINVAL)
    if flags & C.MREMAP_DONTUNMAP and (not flags & C.MREMAP_MAYMOVE or old_len != new_len):
        raise oserror(EINVAL)
    if addr & (PAGE_SIZE - 1):
        raise oserror(EINVAL)
    old_len, new_len = _align(old_len), _align(new_len)
    if not new_len:
        raise oserror(EINVAL)
    top = mm.task_size + PAGE_SIZE
    new_addr = new_addr or 0
    fixed = bool(flags & C.MREMAP_FIXED)
    if fixed:
        if new_addr & (PAGE_SIZE - 1):
            raise oserror(EINVAL)
        if new_len > top or new_addr > top - new_len:
            raise oserror(EINVAL)
        if new_addr < addr + old_len and addr < new_addr + new_len:
            raise oserror(EINVAL)
    with mm.mmap_write_lock():
        vma = mm.find_vma(addr)
        if vma is None or vma.vm_start > addr:
            raise oserror(EFAULT)
        if old_len == 0:
            raise oserror(EINVAL)          # duplicating a private mapping
        if new_len > old_len and old_len > vma.vm_end - addr:
            raise oserror(EFAULT)          # growing: the old range stays inside one VMA
        if fixed and new_len < old_len and new_len > vma.vm_end - addr:
            raise oserror(EFAULT)          # shrinking move: what moves is inside one VMA
        if fixed:
            return _move_to(mm, addr, old_len, new_addr, new_len, flags)
        if flags & C.MREMAP_DONTUNMAP:
            dst = mmap.free_area(mm, new_len, 0, _align_for(vma, new_len))
            return _move_to(mm, addr, old_len, dst, new_len, flags)
        if old_len >= new_len:         # shrink in place (the tail may span VMAs)
            if old_len > new_len:
                mm.unmap(addr + new_len, addr + old_len)
            return addr
        if old_len > vma.vm_end - addr:
            raise oserror(EFAULT)
        delta = new_len - old_len
        if addr + old_len == vma.vm_end and vma.vm_end + delta <= top and \
                not mm.vmas_in(vma.vm_end, vma.vm_end + delta):
            old_end = vma.vm_end
            mm.vma_tree.resize(vma, vma.vm_end + delta)
            mm.merge_around(vma.vm_end, vma.vm_end)
            if vma.vm_flags & VM_LOCKED and not vma.vm_flags & VM_LOCKONFAULT:
                faults.populate(mm, old_end, old_end + delta, "auto", ignore_errors=True)
            return addr
        if not flags & C.MREMAP_MAYMOVE:
            raise oserror(ENOMEM)
        dst = mmap.free_area(mm, new_len, 0, _align_for(vma, new_len))
        return _move_vma(mm, vma, addr, old_len, dst, new_len, flags)


def _align_for(vma, length):
    if vma_is_anonymous(vma) and not vma.vm_flags & C.VM_SHARED and length % PMD_SIZE == 0:
        return PMD_SIZE
    return PAGE_SIZE


def _move_to(mm, addr, old_len, new_addr, new_len, flags):
    """mremap_to: clear the destination, cut the old range to the new
    length, then move (one VMA, or each VMA of a pure move)."""
    vma = mm.find_vma(addr)
    if old_len == new_len and old_len > vma.vm_end - addr:
        return _move_multi(mm, addr, old_len, new_addr, flags)
    if flags & C.MREMAP_FIXED:
        mm.unmap(new_addr, new_addr + new_len)
    if old_len > new_len:
        mm.unmap(addr + new_len, addr + old_len)
        old_len = new_len
    vma = mm.find_vma(addr)
    if vma is None or vma.vm_start > addr:
        raise oserror(EFAULT)
    return _move_vma(mm, vma, addr, old_len, new_addr, new_len, flags)


def _move_multi(mm, addr, length, new_addr, flags):
    """A move (no resize) of a range spanning several VMAs (6.18): each VMA
    part moves to the same offset from ``new_addr`` (its destination cleared
    first); gaps in the source are skipped and leave the destination alone."""
    parts = [(max(v.vm_start, addr), min(v.vm_end, addr + length))
             for v in mm.vmas_in(addr, addr + length)]
    for a, b in parts:
        dst = new_addr + (a - addr)
        if flags & C.MREMAP_FIXED:
            mm.unmap(dst, dst + (b - a))
        vma = mm.find_vma(a)
        _move_vma(mm, vma, a, b - a, dst, b - a, flags)
    return new_addr


def _move_vma(mm, vma, old_addr, old_len, new_addr, new_len, flags, merge=True):
    pgoff = vma.vm_pgoff + (old_addr - vma.vm_start) // PAGE_SIZE
    if vma_is_anonymous(vma) and vma.anon_vma is None:
        pgoff = new_addr >> 12
    new_flags = vma.vm_flags
    new = mm.new_vma(new_addr, new_addr + new_len, new_flags, pgoff, vma.vm_ops,
                      vma.vm_file, vma.anon_vma)
    mm.insert_vma(new)
    if merge:
        mm.merge_around(new_addr, new_addr + new_len)
    op = mm.new_op().setup(delta=(new_addr - old_addr) & 0xFFFFFFFFFFFFFFFF)
    rc = walk_page_range(mm, old_addr, old_addr + old_len, mm.walk_ops(op, "move"))
    if rc < 0:
        # copy_vma_and_data: a table for the destination could not be
        # allocated; what moved goes back (the source tables are still
        # there, so this allocates nothing), then the new range is unmapped
        # instead of the old one and mremap fails with the error
        back = mm.new_op().setup(delta=(old_addr - new_addr) & 0xFFFFFFFFFFFFFFFF)
        walk_page_range(mm, new_addr, new_addr + old_len, mm.walk_ops(back, "move"))
        mm.unmap(new_addr, new_addr + new_len)
        raise oserror(-rc)
    if flags & C.MREMAP_DONTUNMAP:
        # the old VMA is not split: it loses VM_LOCKED* whole, and its
        # anon_vma when all of it moved
        old = mm.find_vma(old_addr)
        old.vm_flags &= ~(VM_LOCKED | VM_LOCKONFAULT)
        if old is not new and old.vm_start == old_addr and old.vm_end == old_addr + old_len:
            old.anon_vma = None
    else:
        mm.unmap(old_addr, old_addr + old_len)
    if new_flags & VM_LOCKED and new_len > old_len:
        faults.populate(mm, new_addr + old_len, new_addr + new_len, "auto", ignore_errors=True)
    return new_addr
