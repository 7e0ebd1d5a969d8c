"""What every syscall family of the process model shares: the signals a
touch raises, ``anon_vma`` and shmem objects, the protection bits a VMA's
flags give its entries, the page flags (defined once, as ``PageFlag`` in
``_mmops.pxd``; plain ints here) and the errno exception."""

import os
import weakref

import numpy as np

from ..constants import (
    VM_EXEC, VM_READ, VM_WRITE, _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_NX, _PAGE_PRESENT,
    _PAGE_PROTNONE, _PAGE_RW, _PAGE_SPECIAL, _PAGE_USER,
)
from ._mmops import PageFlag

# The page flags' Python view, as plain ints.
PF_DATA = int(PageFlag.PF_DATA)
PF_LAZYFREE = int(PageFlag.PF_LAZYFREE)
PF_SHMEM = int(PageFlag.PF_SHMEM)
PF_LARGE = int(PageFlag.PF_LARGE)
PF_ANON = int(PageFlag.PF_ANON)
PF_SHMEM_DIRTY = int(PageFlag.PF_SHMEM_DIRTY)
PF_FDIRTY = int(PageFlag.PF_FDIRTY)

VM_ACCESS = VM_READ | VM_WRITE | VM_EXEC
SHMEM = "shmem"                                      # vm_ops of MAP_SHARED|MAP_ANONYMOUS


class SegmentationFault(Exception):
    """A touch the kernel answers with SIGSEGV (``addr``: the faulting address)."""

    def __init__(self, addr, reason=""):
        super().__init__(f"SIGSEGV at {addr:#x}" + (f": {reason}" if reason else ""))
        self.addr = addr
        self.reason = reason


class BusError(Exception):
    """A touch the kernel answers with SIGBUS (``addr``: the faulting address)."""

    def __init__(self, addr, reason=""):
        super().__init__(f"SIGBUS at {addr:#x}" + (f": {reason}" if reason else ""))
        self.addr = addr
        self.reason = reason


def oserror(errno):
    """The OSError a syscall raises for a positive ``errno``."""
    return OSError(errno, os.strerror(errno))


class AnonVma:
    """An ``anon_vma``: identity decides VMA merging; ``singular`` is False
    for the chained anon_vma of a forked child's VMA."""

    __slots__ = ("singular",)

    def __init__(self, singular=True):
        self.singular = singular


class WeakList:
    """A list of weak references (``append``, ``remove``, ``in``, iteration
    over the live ones in order): the shmem object's mms, which refer to
    the object through their VMAs, so that a strong list would keep every
    mm that maps it in a reference cycle."""

    __slots__ = ("_refs",)

    def __init__(self):
        self._refs = []

    def __iter__(self):
        return iter([x for x in (r() for r in self._refs) if x is not None])

    def __len__(self):
        return len(list(iter(self)))

    def __contains__(self, obj):
        return any(r() is obj for r in self._refs)

    def append(self, obj):
        """Add a weak reference to ``obj``, dropping those whose object is gone."""
        self._refs = [r for r in self._refs if r() is not None]
        self._refs.append(weakref.ref(obj))

    def remove(self, obj):
        """Drop the reference to ``obj`` (ValueError if there is none)."""
        for i, r in enumerate(self._refs):
            if r() is obj:
                del self._refs[i]
                return
        raise ValueError("not in the list")


class ShmemObject:
    """The shmem file behind a MAP_SHARED|MAP_ANONYMOUS mapping: one PFN per
    page (0: a hole), fixed size (mremap cannot grow it: SIGBUS beyond)."""

    def __init__(self, npages):
        self.pages = np.zeros(npages, dtype=np.int64)
        self.mms = WeakList()    # the mms mapping it, for hole punching
        self.huge = False        # MADV_COLLAPSE made a huge folio of it once
        self.order = np.zeros(npages, dtype=np.int8)   # folio order per page (shmem.py)

    @property
    def npages(self):
        """The object's size in pages (fixed when it is made)."""
        return self.pages.shape[0]


def pte_prot(vm_flags):
    """Flags of a present PTE for a VMA (without RW and D)."""
    if not vm_flags & VM_ACCESS:
        return _PAGE_PROTNONE | _PAGE_ACCESSED
    p = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED
    if not vm_flags & VM_EXEC:
        p |= _PAGE_NX
    return p


def zero_prot(vm_flags):
    """Flags of a PTE that maps the shared zero page for a VMA: ``pte_prot`` plus the
    special bit (never RW or D)."""
    return pte_prot(vm_flags) | _PAGE_SPECIAL


def rw_bits(vm_flags):
    """The RW and dirty bits a writable VMA gives its written pages (RW|D); 0 without
    VM_WRITE."""
    return (_PAGE_RW | _PAGE_DIRTY) if vm_flags & VM_WRITE else 0


def vma_is_anonymous(vma):
    """``vma_is_anonymous``: a VMA without ``vm_ops`` (private anonymous memory; shared
    anonymous memory has shmem ops)."""
    return vma.vm_ops is None
