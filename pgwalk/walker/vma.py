"""``VMA``: a virtual memory area as the walker and the models see it
(``struct vm_area_struct``)."""

import weakref

from ..constants import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PUD_SIZE, U64_MASK, VM_HUGETLB


class VMA:
    """A virtual memory area ``[vm_start, vm_end)`` with kernel ``VM_*`` flags.

    ``vm_ops`` is None for anonymous memory (the kernel's
    ``vma_is_anonymous``); ``hugepage_size`` applies to ``VM_HUGETLB`` VMAs.
    A VMA made on its own has ``vm_mm = None``.  The VMA refers to its mm
    weakly (an mm and its VMAs would otherwise form a reference cycle that
    only the cyclic garbage collector reclaims): once the mm is gone,
    ``vm_mm`` is None.
    """

    __slots__ = ("vm_start", "vm_end", "vm_flags", "_vm_mm", "vm_ops",
                 "hugepage_size", "_lock_seq", "vm_pgoff", "anon_vma", "vm_file",
                 "__weakref__")

    def __init__(self, start, end, vm_flags=0, vm_mm=None, vm_ops=None,
                 hugepage_size=PMD_SIZE):
        for name, v in (("start", start), ("end", end), ("vm_flags", vm_flags)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int, not {type(v).__name__}")
            if not 0 <= v <= U64_MASK:
                raise ValueError(f"{name} must fit in 64 bits: {v}")
        if start % PAGE_SIZE or end % PAGE_SIZE:
            raise ValueError(f"start and end must be page aligned: [{start:#x}, {end:#x})")
        if start >= end:
            raise ValueError(f"start must be below end: [{start:#x}, {end:#x})")
        if hugepage_size not in (PMD_SIZE, PUD_SIZE):
            raise ValueError("hugepage_size must be 2 MiB or 1 GiB")
        if vm_flags & VM_HUGETLB and (start % hugepage_size or end % hugepage_size):
            raise ValueError("a VM_HUGETLB VMA must be aligned to its huge page size")
        self.vm_start = start
        self.vm_end = end
        self.vm_flags = vm_flags
        self.vm_mm = vm_mm
        self.vm_ops = vm_ops
        self.hugepage_size = hugepage_size
        self._lock_seq = -1
        self.vm_pgoff = start >> PAGE_SHIFT     # anonymous memory: the address in pages
        self.anon_vma = None                    # set by the process model's faults
        self.vm_file = None                     # shmem object of MAP_SHARED|MAP_ANONYMOUS

    @property
    def vm_mm(self):
        """The mm this VMA belongs to, or None (made on its own, or the mm is gone)."""
        ref = self._vm_mm
        return None if ref is None else ref()

    @vm_mm.setter
    def vm_mm(self, mm):
        self._vm_mm = None if mm is None else weakref.ref(mm)

    def __repr__(self):
        return f"VMA({self.vm_start:#x}, {self.vm_end:#x}, flags={self.vm_flags:#x})"
