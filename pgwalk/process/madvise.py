"""madvise(2) of the process model: the front-end checks, the VMA loop with
the kernel's hole rule (mapped parts are advised, the call still fails with
ENOMEM), and one handler per advice.  Page-table work is done by walks
(``ProcessCore.zap``, the ``lru`` op, the guard ops of ``guard.py``)."""

from .. import constants as C
from ..constants import EACCES, EINVAL, ENOMEM, page_align, PAGE_SIZE
from ..walker import KERNELS, get_default_kernel, walk_page_range
from . import faults
from .collapse import collapse
from .guard import guard_install, guard_remove, madvise_guard_vma_locked
from .objects import oserror, vma_is_anonymous
from .shmem import punch_hole, unmap_object_range

# advice -> (flags to set, flags to clear) for the advices that only change vm_flags
FLAG_ADVICE = {
    C.MADV_NORMAL: (0, C.VM_RAND_READ | C.VM_SEQ_READ),
    C.MADV_RANDOM: (C.VM_RAND_READ, C.VM_SEQ_READ),
    C.MADV_SEQUENTIAL: (C.VM_SEQ_READ, C.VM_RAND_READ),
    C.MADV_DONTFORK: (C.VM_DONTCOPY, 0),
    C.MADV_DOFORK: (0, C.VM_DONTCOPY),
    C.MADV_DONTDUMP: (C.VM_DONTDUMP, 0),
    C.MADV_DODUMP: (0, C.VM_DONTDUMP),
    C.MADV_HUGEPAGE: (C.VM_HUGEPAGE, C.VM_NOHUGEPAGE),
    C.MADV_NOHUGEPAGE: (C.VM_NOHUGEPAGE, C.VM_HUGEPAGE),
    C.MADV_WIPEONFORK: (C.VM_WIPEONFORK, 0),
    C.MADV_KEEPONFORK: (0, C.VM_WIPEONFORK),
}
PAGE_ADVICE = {C.MADV_DONTNEED, C.MADV_DONTNEED_LOCKED, C.MADV_FREE, C.MADV_REMOVE,
               C.MADV_WILLNEED, C.MADV_COLD, C.MADV_PAGEOUT, C.MADV_COLLAPSE,
               C.MADV_GUARD_INSTALL, C.MADV_GUARD_REMOVE}
POPULATE = {C.MADV_POPULATE_READ: "read", C.MADV_POPULATE_WRITE: "write"}


def madvise(mm, start, length, advice, kernel=None):
    """madvise(2).  ``kernel="7.0"`` or ``"today"`` (or that default): guard
    advice runs under the VMA read lock where the kernel allows it (from
    6.19), else under the mmap read lock; 6.13 takes the mmap write lock (as
    for all advice here)."""
    if advice not in FLAG_ADVICE and advice not in PAGE_ADVICE and advice not in POPULATE:
        raise oserror(EINVAL)
    if start & (PAGE_SIZE - 1):
        raise oserror(EINVAL)
    rounded = page_align(length)
    if length and not rounded or length < 0:
        raise oserror(EINVAL)
    end = start + rounded
    if end < start or end > (1 << 64):
        raise oserror(EINVAL)
    if end == start:
        return 0
    k = get_default_kernel() if kernel is None else kernel
    if k not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS} or None, not {k!r}")
    vma_lock = k != "6.13"
    guard = advice in (C.MADV_GUARD_INSTALL, C.MADV_GUARD_REMOVE)
    if vma_lock and guard:
        err = madvise_guard_vma_locked(mm, start, end, advice == C.MADV_GUARD_INSTALL, k)
        if err:
            raise oserror(err)
        if err == 0:
            return 0
    lock = mm.mmap_read_lock() if vma_lock and guard else mm.mmap_write_lock()
    with lock:
        if advice in POPULATE:
            err = faults.populate(mm, start, end, POPULATE[advice], ignore_errors=False)
            if err:
                raise oserror(err)
            return 0
        unmapped = 0
        a = start
        while True:
            vma = mm.find_vma(a)
            if vma is None:
                raise oserror(ENOMEM)
            if a < vma.vm_start:
                unmapped = ENOMEM
                a = vma.vm_start
                if a >= end:
                    break
            b = min(end, vma.vm_end)
            err = _visit(mm, vma, a, b, advice, kernel)
            if err:
                raise oserror(err)
            a = b
            if a >= end:
                break
        if unmapped:
            raise oserror(unmapped)
    return 0


def _visit(mm, vma, s, e, advice, kernel=None):
    fl = vma.vm_flags
    if advice in FLAG_ADVICE:
        set_, clear = FLAG_ADVICE[advice]
        if advice == C.MADV_WIPEONFORK and (vma.vm_file is not None or fl & C.VM_SHARED):
            return EINVAL
        if advice in (C.MADV_DONTFORK, C.MADV_DOFORK) and fl & C.VM_IO:
            return EINVAL
        if advice == C.MADV_DODUMP and fl & C.VM_SPECIAL and not fl & C.VM_DONTDUMP:
            return EINVAL
        new = (fl & ~clear) | set_
        if new != fl:
            (part,) = mm.isolate(s, e)
            part.vm_flags = new
            mm.merge_around(s, e)
        return 0
    if advice in (C.MADV_DONTNEED, C.MADV_DONTNEED_LOCKED, C.MADV_FREE):
        forbidden = C.VM_PFNMAP | (0 if advice == C.MADV_DONTNEED_LOCKED else C.VM_LOCKED)
        if fl & forbidden:
            return EINVAL
        if advice == C.MADV_FREE:
            if not vma_is_anonymous(vma):
                return EINVAL
            op = _outside_vma_kept(mm.setup_op(mm.new_op(), vma, write=True, lo=s, hi=e), vma)
            _shared_heads(mm, op, s, e)
            walk_page_range(mm, s, e, mm.walk_ops(op, "lru"))
            _remap_split(mm, op)
            return 0
        mm.zap(s, e, reclaim=True)
        return 0
    if advice == C.MADV_REMOVE:
        if fl & C.VM_LOCKED or vma.vm_file is None:
            return EINVAL
        if not (fl & C.VM_SHARED and fl & C.VM_MAYWRITE):
            return EACCES
        punch_hole(mm, vma.vm_file, vma.vm_pgoff + (s - vma.vm_start) // PAGE_SIZE,
                    vma.vm_pgoff + (e - vma.vm_start) // PAGE_SIZE)
        return 0
    if advice == C.MADV_WILLNEED:
        return 0                     # no swap, shmem has no readahead: nothing to do
    if advice in (C.MADV_COLD, C.MADV_PAGEOUT):
        if fl & (C.VM_LOCKED | C.VM_PFNMAP | C.VM_HUGETLB):
            return EINVAL
        op = _outside_vma_kept(mm.setup_op(mm.new_op(), vma, lo=s, hi=e, pageout=advice == C.MADV_PAGEOUT),
                               vma)
        _shared_heads(mm, op, s, e)
        walk_page_range(mm, s, e, mm.walk_ops(op, "lru"))
        _remap_split(mm, op)
        for first, n in op.shmem_splits:
            unmap_object_range(mm, vma.vm_file, first, first + n)
        return 0
    if advice == C.MADV_GUARD_INSTALL:
        return guard_install(mm, vma, s, e, kernel=kernel)
    if advice == C.MADV_GUARD_REMOVE:
        return guard_remove(mm, vma, s, e, kernel=kernel)
    if advice == C.MADV_COLLAPSE:
        return collapse(mm, vma, s, e)
    return EINVAL


def _shared_heads(mm, op, s, e):
    """With fork relatives alive, tell the walk which large folios in
    [s, e) another mm maps too (they are left alone, not split)."""
    if mm.live_mms() > 1:
        vma = mm.find_vma(s)
        huge = vma is not None and vma.vm_file is not None and vma.vm_file.huge
        op.set_shared_heads(faults.heads_mapped_elsewhere(mm, s, e, shmem_huge=huge))


def _outside_vma_kept(op, vma):
    """A folio split inside the walk remaps never-written subpages to the
    zero page only inside ``vma`` (with its protection); the subpages mapped
    in the neighbouring VMAs are remapped by ``_remap_split`` with theirs,
    as the kernel builds each zero-page PTE from the protection of the VMA
    that maps it (``vma`` is never VM_LOCKED here, so the locked VMAs,
    whose pages stay, are outside too)."""
    return op.no_zero_remap([(0, vma.vm_start), (vma.vm_end, (1 << 64) - 1)])


def _remap_split(mm, op):
    """After folio splits: every mapping (in this mm) of a never-written
    subpage of a split folio becomes the zero page, as the kernel's remap
    after a split does (locked VMAs excepted)."""
    heads = op.split_heads
    if not heads or not mm.vma_tree:
        return
    z = mm.new_op().setup().set_split_heads(heads)
    walk_page_range(mm, mm.vma_tree[0].vm_start, mm.vma_tree[-1].vm_end, mm.walk_ops(z, "zero_remap"))
