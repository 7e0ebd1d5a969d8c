"""The process model's mm: ``MM``, a ``ProcessCore`` (an ``AddressSpace``
with a process's physical-page bookkeeping and the interface the syscall
families share, ``core.py``) whose methods are the syscalls, faults and
introspection, each handed to its family's module.

This is the one module that puts the families together: none of them
imports it, so the process model has no import cycle."""

from . import faults as _faults
from . import introspect as _introspect
from . import madvise as _madvise
from . import mmap as _mmap
from . import mprotect as _mprotect
from . import mremap as _mremap
from . import snapshot as _snapshot
from .core import ProcessCore
from .fork import copy_mm
from .validate import validate_process


class MM(ProcessCore):
    """A model process address space (``struct mm_struct``): the tables,
    VMAs and mmap lock of ``AddressSpace``, the physical memory it shares
    with forked children, and the process's syscalls (``mmap``,
    ``mprotect``, ``madvise``, ``mremap``, ``fork``, ...), faults
    (``touch``) and introspection (``pagemap``, ``mincore``, ``smaps``,
    ``ptdump``)."""

    # --- snapshots (snapshot.py) -------------------------------------------------

    @classmethod
    def from_process(cls, pid):
        """A model of live process ``pid`` now: VMAs from /proc/PID/smaps,
        present/swap/guard pages from /proc/PID/pagemap, real PFNs where
        readable (else synthetic), PMD leaves for PMD-mapped THPs.
        ProcessLookupError if the pid is gone, PermissionError naming the
        file that cannot be read."""
        return _snapshot.from_process(cls, pid)

    @classmethod
    def from_image(cls, img, root, levels=None):
        """A model of the user half of memory image ``img``'s tables under
        ``root`` (a CR3, or an object with ``.pgd``): one VMA per maximal
        run of mapped pages, leaves copied (huge ones kept huge)."""
        return _snapshot.from_image(cls, img, root, levels)

    @classmethod
    def load(cls, file):
        """A model mm from a snapshot file written by ``save``."""
        return _snapshot.load(cls, file)

    def save(self, file):
        """Write the VMAs and every leaf entry as a compact NPZ (``load`` reads it)."""
        return _snapshot.save(self, file)

    # --- syscalls -----------------------------------------------------------

    def mmap(self, addr, length, prot, flags, fd=-1, offset=0):
        """mmap(2) of anonymous memory, private or shared (shmem); returns the address."""
        return _mmap.mmap(self, addr, length, prot, flags, fd, offset)

    def munmap(self, addr, length):
        """munmap(2)."""
        return _mmap.munmap(self, addr, length)

    def mprotect(self, addr, length, prot):
        """mprotect(2)."""
        return _mprotect.mprotect(self, addr, length, prot)

    def mlock(self, addr, length, onfault=False):
        """mlock(2) (``onfault``: mlock2(MLOCK_ONFAULT))."""
        return _mprotect.mlock(self, addr, length, onfault)

    def munlock(self, addr, length):
        """munlock(2)."""
        return _mprotect.munlock(self, addr, length)

    def madvise(self, addr, length, advice, kernel=None):
        """madvise(2), including MADV_GUARD_INSTALL / MADV_GUARD_REMOVE
        (``kernel="today"``: under the VMA read lock where allowed)."""
        self.check_alive()
        return _madvise.madvise(self, addr, length, advice, kernel)

    def mremap(self, addr, old_len, new_len, flags=0, new_addr=None):
        """mremap(2); returns the (new) address."""
        self.check_alive()
        return _mremap.mremap(self, addr, old_len, new_len, flags, new_addr)

    def fork(self):
        """fork(2): a child mm sharing anonymous pages copy-on-write, guard
        markers copied, WIPEONFORK ranges empty, DONTFORK VMAs absent."""
        self.check_alive()
        child = MM(self.levels)
        child.phys = self.phys
        child.phys.attach(child)
        child.join_group(self.phys_group)
        return copy_mm(self, child)

    def exit(self):
        """Tear the process down: every VMA unmapped, every table freed."""
        return _mmap.exit_mm(self)


    # --- faults ---------------------------------------------------------------

    def touch(self, addr, write=False):
        """One user access at ``addr`` and its page fault.  Raises
        ``SegmentationFault`` (unmapped, no permission, guard page) or
        ``BusError`` (beyond the end of a shmem object)."""
        return _faults.touch(self, addr, write)


    # --- introspection (each a walk) -------------------------------------------

    def pagemap(self, start, end, walker="callbacks"):
        """/proc/PID/pagemap words for the pages of [start, end): numpy
        uint64; bits 0-54 PFN (present) or swap type/offset (swap entries and
        markers), 56 exclusively mapped, 58 guard region, 61 file/shared
        anon, 62 swap (guard markers too), 63 present."""
        return _introspect.pagemap(self, start, end, walker)

    def mincore(self, start, length, walker="callbacks"):
        """mincore(2): one byte per page, 1 if resident.  Anonymous memory:
        mapped pages (a guard page is not resident); shmem: the object's
        pages whether mapped or not.  EINVAL for an unaligned start, ENOMEM
        if the range is not wholly mapped."""
        return _introspect.mincore(self, start, length, walker)

    def smaps(self, walker="callbacks"):
        """Per-VMA figures of /proc/PID/smaps (kB, the kernel's field names)."""
        return _introspect.smaps(self, walker)

    def clear_refs(self, kind, walker="callbacks"):
        """A write of ``kind`` (1 all, 2 anonymous, 3 file-backed, 4
        soft-dirty, 5 RSS high-water mark) to /proc/PID/clear_refs; EINVAL
        for another kind.  The introspection calls take ``walker=
        "callbacks"`` (default) or ``"pt_range"``: identical results."""
        return _introspect.clear_refs(self, kind, walker)

    def ptdump(self, start=0, end=None, kernel_format=False):
        """A text dump of the page tables of [start, end) (default: the user
        half), one line per run of like entries: address range, size, level
        and the entry's attributes, with guard markers, other markers, swap
        entries and zero pages named.  ``kernel_format=True``: exactly the
        kernel's page_tables text (``pgwalk.ptdump``), where non-present
        entries show no attributes."""
        return _introspect.ptdump(self, start, end, kernel_format)

    def validate(self):
        """Check every structural invariant (``AddressSpace.validate``) and,
        for a user mm whose group only the process model has touched, what
        the kernel guarantees of a process's tables (``validate.py``); raise
        InvariantError on the first broken one."""
        super().validate()
        if not self.is_init_mm and self.phys_group.inexact is None:
            validate_process(self)


def init_mm(levels=4):
    """A new, empty kernel mm (no VMAs), for no-VMA walks of kernel addresses."""
    return MM(levels, is_init_mm=True)
