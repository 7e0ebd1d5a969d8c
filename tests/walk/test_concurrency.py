"""Threads sharing one MM: walks under the mmap read lock (C-tier ops that
run without the GIL, Python-callback walks, pagemap / mincore) against
mutations that take the write lock (mmap, munmap, madvise, mprotect) and
faults (touch, under the read lock, as page faults are).

What is checked: no torn state -- every region a writer changes only in
one step under the write lock reads all-or-nothing to every walk; the mm
validates and the physical map counts equal the mappings at the end; no
deadlock (joins are bounded, a watchdog ends the process with every
thread's traceback if something hangs).  And the lock itself: two
read-lock walks run inside the lock at once (both reach a barrier inside
their callbacks), a writer waits until both are out, and a walk waits for
a writer.

``PGWALK_STRESS_SECONDS`` sets the stress time (default 4 s).
"""

import faulthandler
import os
import random
import threading
import time
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest

import pgwalk as P
from pgwalk import PAGE_SIZE as PS
from pgwalk._builtin import CountOp, MincoreOp
from pgwalk.constants import FIRST_DATA_PFN, PMD_SIZE as M2

RW = P.PROT_READ | P.PROT_WRITE
PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS
SECONDS = float(os.environ.get("PGWALK_STRESS_SECONDS", "4"))
PRESENT, GUARD = np.uint64(1 << 63), np.uint64(1 << 58)
PFN_MASK = np.uint64((1 << 55) - 1)


@contextmanager
def watchdog(seconds):
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def check_map_counts(mm):
    want = Counter()
    for v in mm.vmas:
        pm = mm.pagemap(v.vm_start, v.vm_end)
        for w in pm[(pm & PRESENT) != 0]:
            if int(w & PFN_MASK) >= FIRST_DATA_PFN:
                want[int(w & PFN_MASK)] += 1
    phys = mm.phys
    got = {p: phys.mapcount(p) for p in range(FIRST_DATA_PFN, phys.next_pfn) if phys.mapcount(p)}
    assert got == dict(want)


class Stress:
    """The shared mm, its regions, and what every thread saw (THP splits
    by concurrent walks have their own test below)."""

    NR = 64                       # pages of R (DONTNEED / POPULATE_WRITE)
    NQ = 64                       # pages of Q (guard install / remove)
    NS = 1024                     # pages of S (munmap / mmap MAP_POPULATE), 2 MiB aligned
    NT = 2048                     # pages of T (touched at random)
    NU = 512                      # pages of U: a THP faulted in, split by the walks, unmapped

    def __init__(self):
        mm = self.mm = P.MM()
        self.R = mm.mmap(None, self.NR * PS, RW, PRIV | P.MAP_POPULATE)
        self.Q = mm.mmap(None, self.NQ * PS, RW, PRIV)
        self.S = mm.mmap(None, self.NS * PS, RW, PRIV | P.MAP_POPULATE)
        self.T = mm.mmap(None, self.NT * PS, RW, PRIV)
        mm.madvise(self.S, self.NS * PS, P.MADV_NOHUGEPAGE)
        mm.madvise(self.T, self.NT * PS, P.MADV_NOHUGEPAGE)
        self.U = mm.mmap(None, 2 * M2, RW, PRIV)   # 2 MiB aligned; U is its first half
        self.stop = threading.Event()
        self.errors = []
        self.iters = Counter()
        self.seen = {"R": set(), "S": set(), "Q": set(), "Rpy": set(), "Rmincore": set(),
                     "U": set()}

    def run(self, name, body):
        def loop():
            try:
                while not self.stop.is_set():
                    body()
                    self.iters[name] += 1
            except BaseException as e:          # reported by the main thread
                self.errors.append((name, e))
                self.stop.set()
        return threading.Thread(target=loop, name=name, daemon=True)

    # --- writers: each change is one call under the write lock ----------------
    def w_r(self):
        mm = self.mm
        mm.madvise(self.R, self.NR * PS, P.MADV_DONTNEED)
        mm.madvise(self.R, self.NR * PS, P.MADV_POPULATE_WRITE)

    def w_s(self):
        mm = self.mm
        mm.munmap(self.S, self.NS * PS)
        assert mm.mmap(self.S, self.NS * PS, RW, PRIV | P.MAP_FIXED | P.MAP_POPULATE) == self.S
        mm.madvise(self.S, self.NS * PS, P.MADV_NOHUGEPAGE)

    def w_q(self):
        mm = self.mm
        mm.madvise(self.Q, self.NQ * PS, P.MADV_GUARD_INSTALL)
        mm.madvise(self.Q, self.NQ * PS, P.MADV_GUARD_REMOVE)
        mm.mprotect(self.Q, self.NQ * PS, P.PROT_READ)
        mm.mprotect(self.Q, self.NQ * PS, RW)

    def w_u(self):
        """A THP appears in one fault (read lock) and goes with munmap; the
        CountOp walks split it meanwhile (under the read lock too)."""
        mm = self.mm
        mm.munmap(self.U, M2)
        assert mm.mmap(self.U, M2, RW, PRIV | P.MAP_FIXED) == self.U
        mm.madvise(self.U, M2, P.MADV_HUGEPAGE)
        mm.touch(self.U + 5 * PS, write=True)

    def toucher(self, seed):
        rng = random.Random(seed)

        def body():
            for _ in range(16):
                self.mm.touch(self.T + rng.randrange(self.NT) * PS, write=rng.random() < 0.7)
        return body

    # --- readers -----------------------------------------------------------------
    def r_count(self):
        mm = self.mm
        for name, base, n in (("R", self.R, self.NR), ("S", self.S, self.NS),
                              ("U", self.U, self.NU)):
            c = CountOp()
            ops = P.MMWalkOps(pte_entry=c.pte_entry, pmd_entry=c.pmd_entry, pte_hole=c.pte_hole)
            with mm.mmap_read_lock():
                assert P.walk_page_range(mm, base, base + n * PS, ops) == 0
            present = c.counts["pte_present"]
            assert present in (0, n), (name, present)
            self.seen[name].add(present)

    def r_mincore(self):
        mm = self.mm
        op = MincoreOp(self.R, self.NR)
        ops = P.MMWalkOps(pte_entry=op.pte_entry, pmd_entry=op.pmd_entry, pte_hole=op.pte_hole)
        with mm.mmap_read_lock():
            assert P.walk_page_range(mm, self.R, self.R + self.NR * PS, ops) == 0
        s = int(op.vec.sum())
        assert s in (0, self.NR), s
        self.seen["Rmincore"].add(s)
        t = mm.mincore(self.T, self.NT * PS)         # T only grows: nothing to compare
        assert t.shape == (self.NT,)

    def r_python(self):
        mm = self.mm
        got = []

        def pte(entry, addr, nxt, walk):
            got.append(int(entry) & 1)
            return 0

        with mm.mmap_read_lock():
            assert P.walk_page_range(mm, self.R, self.R + self.NR * PS,
                                     P.MMWalkOps(pte_entry=pte)) == 0
        s = sum(got)
        assert len(got) == self.NR and s in (0, self.NR), s
        self.seen["Rpy"].add(s)
        pm = mm.pagemap(self.Q, self.Q + self.NQ * PS)
        g = int(((pm & GUARD) != 0).sum())
        assert g in (0, self.NQ), g
        self.seen["Q"].add(g)


def test_stress_walks_and_mutations_on_one_mm():
    st = Stress()
    threads = [st.run("w_r", st.w_r), st.run("w_s", st.w_s), st.run("w_q", st.w_q),
               st.run("w_u", st.w_u),
               st.run("touch1", st.toucher(1)), st.run("touch2", st.toucher(2)),
               st.run("count", st.r_count), st.run("mincore", st.r_mincore),
               st.run("python", st.r_python)]
    with watchdog(SECONDS + 60):
        for t in threads:
            t.start()
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline and not st.stop.is_set():
            time.sleep(0.05)
        st.stop.set()
        for t in threads:
            t.join(30)
    assert not [t.name for t in threads if t.is_alive()], "a thread did not finish"
    assert not st.errors, st.errors
    # every thread got the lock often: a stream of readers does not starve
    # the writers (with the reader-preferring lock this test found, the
    # munmap/mmap writer got 1 turn in 4 s)
    assert all(st.iters[t.name] >= 5 for t in threads), st.iters
    st.mm.validate()
    check_map_counts(st.mm)
    print("\nstress iterations:", dict(st.iters), "seen:", {k: sorted(v) for k, v in st.seen.items()})


def test_two_read_lock_walks_run_together_and_a_writer_waits():
    """Both readers get inside the lock at once (a 2-party barrier inside
    their callbacks releases only then); a writer started meanwhile gets
    the lock only after both walks are over; a walk started while the
    writer holds the lock waits for it."""
    mm = P.MM()
    a = mm.mmap(None, 4 * PS, RW, PRIV | P.MAP_POPULATE)
    barrier = threading.Barrier(2, timeout=10)
    readers_done = threading.Event()
    release = threading.Event()
    log = []
    lock = threading.Lock()

    def note(what):
        with lock:
            log.append(what)

    def reader(i):
        def pte(entry, addr, nxt, walk):
            if addr == a:
                barrier.wait()                       # both readers are inside now
                note(f"inside{i}")
                release.wait(10)
            return 0
        with mm.mmap_read_lock():
            P.walk_page_range(mm, a, a + 4 * PS, P.MMWalkOps(pte_entry=pte))
            note(f"out{i}")

    def writer():
        with mm.mmap_write_lock():
            note("writer")

    errors = []

    def guarded(fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as e:
                errors.append(e)
        return threading.Thread(target=run, daemon=True)

    with watchdog(60):
        rs = [guarded(reader, i) for i in (0, 1)]
        for t in rs:
            t.start()
        for _ in range(200):
            if sum(x.startswith("inside") for x in log) == 2:
                break
            time.sleep(0.01)
        w = guarded(writer)
        w.start()
        time.sleep(0.2)
        assert "writer" not in log                   # excluded while the readers are in
        release.set()
        for t in rs + [w]:
            t.join(10)
    assert not errors, errors
    assert not any(t.is_alive() for t in rs + [w])
    assert sorted(log[:2]) == ["inside0", "inside1"]
    assert log.index("writer") > max(log.index("out0"), log.index("out1"))

    # a walk waits for a writer that holds the lock
    got_in = threading.Event()
    walked = []

    def late_reader():
        got_in.set()
        with mm.mmap_read_lock():
            walked.append(time.monotonic())

    with watchdog(60):
        with mm.mmap_write_lock():
            t = guarded(late_reader)
            t.start()
            assert got_in.wait(5)
            time.sleep(0.2)
            assert walked == []
            left = time.monotonic()
        t.join(10)
    assert not t.is_alive() and walked and walked[0] >= left


def test_c_tier_walks_in_parallel_threads_agree():
    """CountOp walks (no Python in the walk: the GIL is released) in four
    threads at once over one mm give the counts a single walk gives."""
    mm = P.MM()
    a = mm.mmap(None, 8 * M2, RW, PRIV)
    mm.madvise(a, 8 * M2, P.MADV_NOHUGEPAGE)
    for i in range(0, 8 * 512, 3):
        mm.touch(a + i * PS, write=True)

    def count():
        c = CountOp()
        ops = P.MMWalkOps(pte_entry=c.pte_entry, pmd_entry=c.pmd_entry, pte_hole=c.pte_hole)
        with mm.mmap_read_lock():
            assert P.walk_page_range(mm, a, a + 8 * M2, ops) == 0
        return c.counts

    want = count()
    results, errors = [], []

    def run():
        try:
            for _ in range(50):
                results.append(count())
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=run, daemon=True) for _ in range(4)]
    with watchdog(60):
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
    assert not errors and not any(t.is_alive() for t in ts)
    assert len(results) == 200 and all(r == want for r in results)
    assert want["pte_present"] == len(range(0, 8 * 512, 3))


def test_a_waiting_writer_holds_off_new_readers():
    """As the kernel's rwsem: once a writer waits, a reader arriving after
    it waits too, and gets in after the writer; the first reader, already
    in, may take the lock again (nested) without waiting."""
    mm = P.MM()
    first_in, writer_queued, done = threading.Event(), threading.Event(), threading.Event()
    order = []

    def first():
        with mm.mmap_read_lock():
            first_in.set()
            assert writer_queued.wait(10)
            time.sleep(0.2)
            with mm.mmap_read_lock():                # nested read: no wait
                order.append("first-nested")
            order.append("first-out")

    def writer():
        assert first_in.wait(10)
        writer_queued.set()
        with mm.mmap_write_lock():
            order.append("writer")

    def late():
        assert writer_queued.wait(10)
        time.sleep(0.05)                             # arrives after the writer queued
        with mm.mmap_read_lock():
            order.append("late-reader")

    ts = [threading.Thread(target=f, daemon=True) for f in (first, writer, late)]
    with watchdog(60):
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
    assert not any(t.is_alive() for t in ts)
    assert order == ["first-nested", "first-out", "writer", "late-reader"], order


def test_concurrent_faults_while_c_walks_read_the_tables():
    """Three threads fault (four rounds) in pages of distinct 2 MiB blocks at once (each
    fault needs a new PTE table; the pool grows twice meanwhile) while a
    fourth walks the range with CountOp (no GIL).  Found here: the faults
    raced in the table pool (heap corruption, 'realloc(): invalid next
    size', the process aborted); faults are now ordered by one lock, and
    the pool's and the physical pages' arrays grow into new memory while
    walks may still read the old.  Afterwards every touched page is there,
    the mm validates and the map counts match."""
    for _round in range(4):
        mm = P.MM()
        nb = 1500
        a = mm.mmap(None, nb * M2, RW, PRIV)
        mm.madvise(a, nb * M2, P.MADV_NOHUGEPAGE)
        stop = threading.Event()
        errors = []

        def toucher(k):
            try:
                for b in range(k, nb, 3):
                    mm.touch(a + b * M2 + k * PS, write=True)
            except BaseException as e:
                errors.append(e)

        def walker():
            try:
                while not stop.is_set():
                    c = CountOp()
                    ops = P.MMWalkOps(pte_entry=c.pte_entry, pmd_entry=c.pmd_entry,
                                      pte_hole=c.pte_hole)
                    with mm.mmap_read_lock():
                        assert P.walk_page_range(mm, a, a + nb * M2, ops) == 0
                    assert c.counts["pte_present"] <= nb
            except BaseException as e:
                errors.append(e)

        ts = [threading.Thread(target=toucher, args=(k,), daemon=True) for k in range(3)]
        w = threading.Thread(target=walker, daemon=True)
        with watchdog(120):
            w.start()
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
            stop.set()
            w.join(60)
        assert not errors, errors
        assert not any(t.is_alive() for t in ts + [w])
        assert mm.nr_tables > 1024                         # the pool grew past two slabs
        pm = np.concatenate([mm.pagemap(a + b * M2 + (b % 3) * PS, a + b * M2 + (b % 3 + 1) * PS)
                             for b in range(nb)])
        assert ((pm & PRESENT) != 0).all()
        mm.validate()
        check_map_counts(mm)


def test_concurrent_walks_splitting_the_same_thps():
    """Walks under the read lock split PMD-mapped THPs (a pte_entry and no
    ACTION_CONTINUE, as the kernel's walker does).  Two walks at once, one
    forwards over the whole range, one backwards block by block, meet on
    the same PMDs.  Found here: the split took its table from the pool
    without a lock, and the pool lost count ('-3 live table(s) unreachable
    from the top level' in 2 of 10 runs); the split now re-checks the PMD
    and takes the table under the pool lock (as the kernel's does under the
    PMD lock) and links the filled table in one store.  Afterwards every
    THP is split exactly once: 600 PTE tables more, same pages."""
    nb = 600
    for _round in range(3):
        mm = P.MM()
        a = mm.mmap(None, nb * M2, RW, PRIV)
        mm.madvise(a, nb * M2, P.MADV_HUGEPAGE)
        for b in range(nb):
            mm.touch(a + b * M2, write=True)
        assert all(P.pmd_leaf(mm.entry(a + b * M2, P.PMD)) for b in range(0, nb, 50))
        before_tables, before_pm = mm.nr_tables, mm.pagemap(a, a + nb * M2)
        errors = []

        def walk(backwards):
            try:
                c = CountOp()
                ops = P.MMWalkOps(pte_entry=c.pte_entry, pmd_entry=c.pmd_entry)
                with mm.mmap_read_lock():
                    if not backwards:
                        assert P.walk_page_range(mm, a, a + nb * M2, ops) == 0
                    else:
                        for b in reversed(range(nb)):
                            assert P.walk_page_range(mm, a + b * M2, a + (b + 1) * M2, ops) == 0
            except BaseException as e:
                errors.append(e)

        ts = [threading.Thread(target=walk, args=(r,), daemon=True) for r in (False, True)]
        with watchdog(120):
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
        assert not errors and not any(t.is_alive() for t in ts)
        mm.validate()
        assert mm.nr_tables == before_tables + nb
        assert mm.stats["split_pmd"] == nb
        assert (mm.pagemap(a, a + nb * M2) & ~np.uint64(1 << 56) == before_pm & ~np.uint64(1 << 56)).all()
        check_map_counts(mm)


def test_a_reader_interrupted_while_waiting_leaves_the_queue():
    """A reader that gets KeyboardInterrupt while it waits behind a writer
    takes its place in the queue with it: a writer arriving later is not
    held off for ever by the abandoned place (as a waiting writer's own
    interrupt already did)."""
    mm = P.MM()
    lock = mm._lock
    real_wait = lock._cond.wait
    calls = []

    def interrupted_wait(*args):
        calls.append(1)
        raise KeyboardInterrupt

    holder_in, release = threading.Event(), threading.Event()

    def holder():
        with mm.mmap_write_lock():
            holder_in.set()
            assert release.wait(10)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert holder_in.wait(10)
    lock._cond.wait = interrupted_wait
    try:
        with pytest.raises(KeyboardInterrupt):
            with mm.mmap_read_lock():
                pass
    finally:
        lock._cond.wait = real_wait
    release.set()
    t.join(10)
    assert calls and not lock._queue
    got = []

    def writer():
        with mm.mmap_write_lock():
            got.append("writer")

    w = threading.Thread(target=writer, daemon=True)
    with watchdog(30):
        w.start()
        w.join(10)
    assert got == ["writer"]
