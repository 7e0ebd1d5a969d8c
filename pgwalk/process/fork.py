"""fork(2) of the process model: copy a parent mm's VMAs and page tables
into a new child mm (the kernel's ``dup_mmap`` and ``copy_page_range``).

Anonymous pages are shared copy-on-write, guard markers are copied,
``VM_WIPEONFORK`` ranges start empty and ``VM_DONTCOPY`` VMAs are left out.
The table copy is the C fork op of ``_mmops`` run by the walker."""

from ..constants import (
    VM_DONTCOPY, VM_LOCKED, VM_LOCKONFAULT, VM_MAYBE_GUARD, VM_MIXEDMAP, VM_PFNMAP,
    VM_WIPEONFORK,
)
from ..walker import walk_page_vma
from .objects import AnonVma, oserror

def copy_mm(parent, child):
    """Fill the empty ``child`` (which already shares ``parent``'s physical
    memory) with ``parent``'s VMAs and tables; on failure tear the child
    down and raise the errno."""
    with parent.mmap_write_lock():
        for vma in parent.vma_tree:
            if vma.vm_flags & VM_DONTCOPY:
                continue
            flags = vma.vm_flags & ~(VM_LOCKED | VM_LOCKONFAULT)
            c = child.new_vma(vma.vm_start, vma.vm_end, flags, vma.vm_pgoff,
                               vma.vm_ops, vma.vm_file)
            child.vma_tree.insert(c)
            if vma.vm_file is not None and child not in vma.vm_file.mms:
                vma.vm_file.mms.append(child)
            if vma.vm_flags & VM_WIPEONFORK:
                continue
            if vma.anon_vma is not None:
                c.anon_vma = AnonVma(singular=False)
            if vma.anon_vma is None and not vma.vm_flags & (VM_MAYBE_GUARD | VM_PFNMAP | VM_MIXEDMAP):
                continue
            op = parent.setup_op(parent.new_op(), vma, dst=child)
            rc = walk_page_vma(vma, parent.walk_ops(op, "fork"))
            if rc < 0:
                # dup_mmap fails; the new mm is torn down (mmput), which
                # drops the map counts its copied entries took
                child.exit()
                raise oserror(-rc)
    return child
