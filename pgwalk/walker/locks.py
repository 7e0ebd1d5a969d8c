"""A model of the mmap lock and per-VMA write locks (CONFIG_PER_VMA_LOCK).

Enough of the kernel's rules for the walker's assertions: the mmap lock is a
reader/writer lock; under the write lock ``vma_start_write(vma)`` marks a
VMA write-locked until the mmap write lock is released (the kernel compares
the VMA's lock sequence with the mm's, which the write unlock bumps).
"""

import threading
from collections import deque
from contextlib import contextmanager

from ._core import LockAssertionError

__all__ = [
    "MMapLock", "vma_start_write", "vma_write_locked",
]


class MMapLock:
    """A reader/writer lock that knows which threads hold it, fair as the
    kernel's rwsem: waiters are served in arrival order, consecutive
    readers together."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = {}          # thread ident -> recursion count
        self._writer = None
        self._queue = deque()       # waiters in arrival order: (is_writer, ticket)
        self.seq = 0                # bumped by every write unlock

    @contextmanager
    def read(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                raise RuntimeError("mmap_read_lock while holding the write lock (would deadlock)")
            if me in self._readers:
                # a thread that already reads goes on at once (the kernel
                # would deadlock here if a writer were queued)
                self._readers[me] += 1
            else:
                ticket = object()
                self._queue.append((False, ticket))
                while not self._may_read(ticket):
                    self._cond.wait()
                self._queue.remove((False, ticket))
                self._readers[me] = 1
                self._cond.notify_all()
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

    def _may_read(self, ticket):
        """No writer holds the lock and only readers queued before us: like
        the kernel's rwsem, a waiting writer holds off readers that come
        after it (a stream of readers cannot starve writers), and readers
        queued together get the lock together."""
        if self._writer is not None:
            return False
        for is_writer, t in self._queue:
            if t is ticket:
                return True
            if is_writer:
                return False
        return False

    @contextmanager
    def write(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer == me or me in self._readers:
                raise RuntimeError("mmap_write_lock while holding the mmap lock (would deadlock)")
            ticket = object()
            self._queue.append((True, ticket))
            try:
                while (self._writer is not None or self._readers
                       or self._queue[0][1] is not ticket):
                    self._cond.wait()
            except BaseException:
                self._queue.remove((True, ticket))
                self._cond.notify_all()
                raise
            self._queue.popleft()
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
