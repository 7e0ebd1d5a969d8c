"""``VMA``: a virtual memory area as the walker and the models see it
(``struct vm_area_struct``), and ``VMATree``: an mm's VMAs in order."""

import weakref
from bisect import bisect_left, bisect_right

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
                 "_readers", "__weakref__")

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
        self._readers = {}                      # VMA read locks: thread ident -> count
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


class VMATree:
    """An mm's VMAs in address order (the kernel keeps them in a maple
    tree): a list sorted by ``vm_start`` and the matching ``vm_end`` list,
    searched by bisection, so ``find``, ``prev``, ``next`` and the position
    of an insert are O(log n).

    The VMAs never overlap.  A VMA's bounds change only through
    ``split``, ``merge`` and ``resize``, which keep the index in step."""

    __slots__ = ("_vmas", "_ends")

    def __init__(self):
        self._vmas = []      # sorted by vm_start
        self._ends = []      # their vm_end, for bisect

    def __len__(self):
        return len(self._vmas)

    def __iter__(self):
        return iter(list(self._vmas))

    def __getitem__(self, i):
        return self._vmas[i]

    def __bool__(self):
        return bool(self._vmas)

    def find(self, addr):
        """The first VMA whose end is above ``addr`` (``find_vma``), or None."""
        i = bisect_right(self._ends, addr)
        return self._vmas[i] if i < len(self._vmas) else None

    def range(self, start, end):
        """The VMAs overlapping ``[start, end)``, in order."""
        i = bisect_right(self._ends, start)
        out = []
        while i < len(self._vmas) and self._vmas[i].vm_start < end:
            out.append(self._vmas[i])
            i += 1
        return out

    def _index(self, vma):
        i = bisect_left(self._ends, vma.vm_end)
        if i < len(self._vmas) and self._vmas[i] is vma:
            return i
        raise ValueError(f"{vma!r} is not in this tree")

    def insert(self, vma):
        """Add ``vma``; ValueError if it overlaps one already there."""
        i = bisect_right(self._ends, vma.vm_start)
        if i < len(self._vmas) and self._vmas[i].vm_start < vma.vm_end:
            raise ValueError(f"[{vma.vm_start:#x}, {vma.vm_end:#x}) overlaps {self._vmas[i]!r}")
        self._vmas.insert(i, vma)
        self._ends.insert(i, vma.vm_end)

    def remove(self, vma):
        """Take ``vma`` out of the tree (ValueError if it is not there)."""
        i = self._index(vma)
        del self._vmas[i]
        del self._ends[i]

    def prev(self, vma):
        """The VMA before ``vma``, or None."""
        i = self._index(vma)
        return self._vmas[i - 1] if i > 0 else None

    def next(self, vma):
        """The VMA after ``vma``, or None."""
        i = self._index(vma)
        return self._vmas[i + 1] if i + 1 < len(self._vmas) else None

    def split(self, vma, hi):
        """``vma`` keeps ``[vm_start, hi.vm_start)``; ``hi`` (made by the
        caller for ``[addr, vma.vm_end)``) goes in after it."""
        i = self._index(vma)
        if not (vma.vm_start < hi.vm_start < vma.vm_end and hi.vm_end == vma.vm_end):
            raise ValueError(f"{hi!r} is not the upper part of {vma!r}")
        vma.vm_end = hi.vm_start
        self._ends[i] = hi.vm_start
        self._vmas.insert(i + 1, hi)
        self._ends.insert(i + 1, hi.vm_end)

    def merge(self, a, b):
        """``a`` grows over its neighbour ``b``, which leaves the tree."""
        i = self._index(a)
        if i + 1 >= len(self._vmas) or self._vmas[i + 1] is not b or a.vm_end != b.vm_start:
            raise ValueError(f"{a!r} and {b!r} are not adjacent neighbours")
        a.vm_end = b.vm_end
        self._ends[i] = b.vm_end
        del self._vmas[i + 1]
        del self._ends[i + 1]

    def resize(self, vma, end):
        """Move ``vma``'s end to ``end`` (growing only into free space)."""
        i = self._index(vma)
        if end <= vma.vm_start or (i + 1 < len(self._vmas) and self._vmas[i + 1].vm_start < end):
            raise ValueError(f"{vma!r} cannot end at {end:#x}")
        vma.vm_end = end
        self._ends[i] = end

    def check(self, owner):
        """Structural checks for ``validate()``: every VMA page aligned and
        not empty, sorted, disjoint, the index in step, owned by ``owner``;
        returns the first problem as text, or None."""
        if len(self._ends) != len(self._vmas):
            return "the VMA index is out of date"
        prev_end = 0
        for i, vma in enumerate(self._vmas):
            if vma.vm_start % PAGE_SIZE or vma.vm_end % PAGE_SIZE or vma.vm_start >= vma.vm_end:
                return f"{vma!r} is empty or not page aligned"
            if vma.vm_start < prev_end:
                return f"{vma!r} overlaps the VMA before it"
            if self._ends[i] != vma.vm_end or vma.vm_mm is not owner:
                return f"{vma!r}: index out of date"
            prev_end = vma.vm_end
        return None
