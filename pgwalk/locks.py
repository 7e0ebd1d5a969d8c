"""A model of the mmap lock and per-VMA write locks (CONFIG_PER_VMA_LOCK).

Enough of the kernel's rules for the walker's assertions: the mmap lock is a
reader/writer lock; under the write lock ``vma_start_write(vma)`` marks a
VMA write-locked until the mmap write lock is released (the kernel compares
the VMA's lock sequence with the mm's, which the write unlock bumps).
"""

import threading
from contextlib import contextmanager

from ._core import LockAssertionError


class MMapLock:
    """A reader/writer lock that knows which threads hold it."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = {}          # thread ident -> recursion count
        self._writer = None
        self.seq = 0                # bumped by every write unlock

    @contextmanager
    def read(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                raise RuntimeError("mmap_read_lock while holding the write lock (would deadlock)")
            while self._writer is not None:
                self._cond.wait()
            self._readers[me] = self._readers.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                n = self._readers[me] - 1
                if n:
                    self._readers[me] = n
                else:
                    del self._readers[me]
                self._cond.notify_all()

    @contextmanager
    def write(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer == me or me in self._readers:
                raise RuntimeError("mmap_write_lock while holding the mmap lock (would deadlock)")
            while self._writer is not None or self._readers:
                self._cond.wait()
            self._writer = me
        try:
            yield
        finally:
            with self._cond:
                self._writer = None
                self.seq += 1
                self._cond.notify_all()

    def held(self):
        me = threading.get_ident()
        return self._writer == me or me in self._readers

    def write_held(self):
        return self._writer == threading.get_ident()


def vma_start_write(vma):
    """Write-lock ``vma`` until its mm's mmap write lock is released."""
    mm = vma.vm_mm
    if mm is None:
        raise ValueError("vma_start_write: the VMA belongs to no mm")
    if not mm._lock.write_held():
        raise LockAssertionError("vma_start_write needs the mmap write lock: "
                                 "use `with mm.mmap_write_lock():`")
    vma._lock_seq = mm._lock.seq


def vma_write_locked(vma):
    mm = vma.vm_mm
    return (mm is not None and mm._lock.write_held()
            and vma._lock_seq == mm._lock.seq)
