"""A model of the mmap lock and per-VMA locks (CONFIG_PER_VMA_LOCK).

Enough of the kernel's rules for the walker's assertions: the mmap lock is a
reader/writer lock; under the write lock ``vma_start_write(vma)`` marks a
VMA write-locked until the mmap write lock is released (the kernel compares
the VMA's lock sequence with the mm's, which the write unlock bumps).
A VMA read lock (``lock_vma_under_rcu``/``vma_end_read``) is taken without
the mmap lock and fails on a write-locked VMA; ``vma_start_write`` waits for
a VMA's readers to leave.
"""

import threading
from collections import deque
from contextlib import contextmanager

from ._core import LockAssertionError, LockCounts

__all__ = [
    "MMapLock", "lock_vma_under_rcu", "vma_assert_locked", "vma_end_read",
    "vma_read_locked", "vma_start_write", "vma_write_locked",
]

_vma_cond = threading.Condition()      # guards every VMA's reader count


class MMapLock:
    """A reader/writer lock that knows which threads hold it, fair as the
    kernel's rwsem: waiters are served in arrival order, consecutive
    readers together."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = {}          # thread ident -> recursion count
        self._writer = None
        self._queue = deque()       # waiters in arrival order: (is_writer, ticket)
        # seq (bumped by every write unlock) and changes (by every acquire and
        # release), in C memory for the pt_range_walk iterator
        self.counts = LockCounts()

    @contextmanager
    def read(self):
        """``with lock.read():`` hold the lock shared (``mmap_read_lock``); a thread
        that already reads enters at once, one that holds the write lock gets
        RuntimeError."""
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                raise RuntimeError("mmap_read_lock while holding the write lock (would deadlock)")
            if me in self._readers:
                # a thread that already reads goes on at once (the kernel
                # would deadlock here if a writer were queued)
                self._readers[me] += 1
            elif self._writer is None and not self._queue:
                self._readers[me] = 1       # no writer holds it and nobody waits: no queueing
            else:
                ticket = object()
                self._queue.append((False, ticket))
                try:
                    while not self._may_read(ticket):
                        self._cond.wait()
                except BaseException:           # Ctrl-C while waiting: leave the queue
                    self._queue.remove((False, ticket))
                    self._cond.notify_all()
                    raise
                self._queue.remove((False, ticket))
                self._readers[me] = 1
                self._cond.notify_all()
            self.counts.changes += 1
        try:
            yield
        finally:
            with self._cond:
                n = self._readers[me] - 1
                if n:
                    self._readers[me] = n
                else:
                    del self._readers[me]
                self.counts.changes += 1
                if self._queue:             # the waiters (readers and writers) are all queued
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
        """``with lock.write():`` hold the lock exclusively (``mmap_write_lock``), in
        arrival order; the release bumps ``seq``, which ends the VMA write locks taken
        under it."""
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
            self.counts.changes += 1
        try:
            yield
        finally:
            with self._cond:
                self._writer = None
                self.counts.seq += 1
                self.counts.changes += 1
                self._cond.notify_all()

    @property
    def seq(self):
        """Write unlocks so far (a VMA write lock lasts until the next one)."""
        return self.counts.seq

    def held(self):
        """Whether the calling thread holds the lock, for reading or writing."""
        me = threading.get_ident()
        return self._writer == me or me in self._readers

    def write_held(self):
        """Whether the calling thread holds the write lock."""
        return self._writer == threading.get_ident()


def vma_start_write(vma):
    """Write-lock ``vma`` until its mm's mmap write lock is released."""
    mm = vma.vm_mm
    if mm is None:
        raise ValueError("vma_start_write: the VMA belongs to no mm")
    if not mm._lock.write_held():
        raise LockAssertionError("vma_start_write needs the mmap write lock: "
                                 "use `with mm.mmap_write_lock():`")
    me = threading.get_ident()
    with _vma_cond:
        if me in vma._readers:
            raise RuntimeError("vma_start_write on a VMA this thread has read-locked "
                               "(would deadlock): call vma_end_read(vma) first")
        while vma._readers:                 # readers leave before the writer enters
            _vma_cond.wait()
        vma._lock_seq = mm._lock.seq


def vma_write_locked(vma):
    """Whether ``vma`` is write-locked by the calling thread: it holds the mm's mmap
    write lock and called ``vma_start_write(vma)`` since taking it."""
    mm = vma.vm_mm
    return (mm is not None and mm._lock.write_held()
            and vma._lock_seq == mm._lock.seq)


def _write_locked_now(vma):
    """Write-locked by whoever holds its mm's mmap write lock."""
    mm = vma.vm_mm
    return (mm is not None and mm._lock._writer is not None
            and vma._lock_seq == mm._lock.seq)


def lock_vma_under_rcu(mm, addr):
    """Read-lock the VMA that contains ``addr`` without the mmap lock: the
    VMA, or None when there is none or it is write-locked (the caller then
    falls back to the mmap lock).  Release with ``vma_end_read``."""
    vma = mm.find_vma(addr)
    if vma is None or addr < vma.vm_start:
        return None
    me = threading.get_ident()
    with _vma_cond:
        if _write_locked_now(vma):
            return None
        vma._readers[me] = vma._readers.get(me, 0) + 1
    return vma


def vma_end_read(vma):
    """Drop a VMA read lock taken by this thread."""
    me = threading.get_ident()
    with _vma_cond:
        n = vma._readers.get(me, 0)
        if not n:
            raise RuntimeError(f"vma_end_read: this thread holds no read lock on {vma!r}")
        if n == 1:
            del vma._readers[me]
        else:
            vma._readers[me] = n - 1
        _vma_cond.notify_all()


@contextmanager
def vma_read_locked(mm, addr):
    """``with vma_read_locked(mm, addr) as vma:`` -- the read-locked VMA (or
    None, nothing locked) for the block."""
    vma = lock_vma_under_rcu(mm, addr)
    try:
        yield vma
    finally:
        if vma is not None:
            vma_end_read(vma)


def vma_assert_locked(vma):
    """``vma_assert_locked``: some thread read-locks ``vma``, or it is write-locked."""
    with _vma_cond:
        if vma._readers or _write_locked_now(vma):
            return
    raise LockAssertionError(
        f"PGWALK_VMA_RDLOCK_VERIFY needs {vma!r} read-locked (or write-locked): "
        "take it with `vma = pgwalk.lock_vma_under_rcu(mm, addr)` ... "
        "`pgwalk.vma_end_read(vma)`, or `with pgwalk.vma_read_locked(mm, addr) as vma:`")
