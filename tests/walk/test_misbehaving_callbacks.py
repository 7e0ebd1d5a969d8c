"""Callbacks that misbehave, beyond tests/walk/test_errors.py (which raises from
each kind of callback at one place, and pins kept EntryRef / ptep objects):

* a callback raising at its n-th call, for EVERY n, over a populated mm
  walked with all the entry, hole and VMA callbacks: the compiled walker
  and ``pgwalk.reference`` stop at the same call, the exception reaches the
  caller, the mm validates, and the tables hold exactly what they held
  plus the writes the callbacks made before the exception;
* callbacks writing where they were not given a slot: a ``pgwalk.batch``
  view kept beyond its call (finding, fixed: it stayed writable), the raw
  ``mm.set_entry`` over the table being walked (finding, fixed: the
  compiled walker went on in the freed table), ``set_entry`` / ``map``
  elsewhere in the tree;
* callbacks calling back into the same mm (syscalls, faults, nested walks)
  under each lock mode: what the kernel would deadlock on (taking the mmap
  lock for writing while holding it) raises RuntimeError at once, allowed
  nesting works; never a hang (a watchdog ends the process if one would
  hang), never a corrupted mm.
"""

import faulthandler
from contextlib import contextmanager

import numpy as np
import pytest

import pgwalk as P
from pgwalk import PAGE_SIZE as PS
from pgwalk.constants import PMD_SIZE as M2, PUD_SIZE as G1

from helpers import support
from helpers.support import IMPLS

by_impl = pytest.mark.parametrize("impl", IMPLS, ids=repr)
RWF = P.VM_READ | P.VM_WRITE
B = G1                            # VMA 1 straddles B + 2 MiB
D_BIT = 0x40


class Boom(Exception):
    def __init__(self, n):
        super().__init__(f"callback call {n}")
        self.n = n


@contextmanager
def watchdog(seconds=20):
    """End the process with every thread's traceback if the block hangs."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def build(levels):
    """Four VMAs over [B, 5 GiB): PTE tables on both sides of a 2 MiB
    boundary (present PTEs and a guard marker), a PMD leaf, a VMA crossing
    the 2 GiB PUD boundary with tables on one side only, a PUD leaf."""
    mm = P.MM(levels)
    mm.add_vma(B + M2 - 6 * PS, B + M2 + 6 * PS, RWF)
    for off in (-6, -3, -1, 0, 2, 5):
        mm.map(B + M2 + off * PS)
    mm.set_entry(B + M2 + PS, P.PTE, P.make_pte_marker(P.PTE_MARKER_GUARD))
    mm.add_vma(B + 4 * M2, B + 5 * M2, RWF)
    mm.map(B + 4 * M2, level=P.PMD)
    mm.add_vma(2 * G1 - 4 * PS, 2 * G1 + 4 * PS, RWF)
    mm.map(2 * G1 - 2 * PS)
    mm.add_vma(4 * G1, 5 * G1, RWF)
    mm.map(4 * G1, level=P.PUD)
    return mm


WALK = (B, 5 * G1)


def build_novma(levels):
    """For no-VMA walks, which descend into every table in range: around
    the 2 GiB boundary, a PTE table below it (present PTEs, a marker) and
    a PMD leaf above it, and an empty PMD slot after the leaf."""
    mm = P.MM(levels)
    for off in (-6, -4, -1):
        mm.map(2 * G1 + off * PS)
    mm.set_entry(2 * G1 - 3 * PS, P.PTE, P.make_pte_marker(P.PTE_MARKER_GUARD))
    mm.map(2 * G1, level=P.PMD)
    return mm


WALK_NOVMA = (2 * G1 - 6 * PS, 2 * G1 + M2 + 6 * PS)


def raw(mm):
    """{(level, addr): value} of every non-empty slot that is not a table
    link, and the set of (level, addr) of the table links."""
    leaves, links = {}, set()

    def visit(tid, level, base):
        size = support.level_size(mm.levels, level)
        t = mm._table(tid)
        for i in np.nonzero(t)[0]:
            i = int(i)
            addr = base + i * size
            child = mm._child(tid, i) if level < P.PTE else -1
            if child >= 0:
                links.add((level, addr))
                nl = P.PUD if (mm.levels == 4 and level == P.PGD) else level + 1
                visit(child, nl, addr)
            else:
                leaves[(level, addr)] = int(t[i])

    visit(mm.pgd_id, P.PGD, 0)
    return leaves, links


def scripted(trace, writes, raise_at, install=False):
    """Every callback records its call, raises Boom at call ``raise_at``
    (before writing anything), and otherwise writes: pte_entry flips D in
    a present PTE, pmd_entry flips D in a PMD leaf, install_pte installs a
    page."""
    def tick(rec):
        trace.append(rec)
        if len(trace) == raise_at:
            raise Boom(raise_at)

    def entry_cb(name, level):
        def cb(entry, addr, nxt, walk):
            v = int(entry)
            tick((name, addr, nxt, v))
            if level == P.PTE and v & 1:
                entry.set(v ^ D_BIT)
                writes.append((P.PTE, addr, v ^ D_BIT))
            leaf = (level == P.PMD and P.pmd_leaf(v)) or (level == P.PUD and P.pud_leaf(v))
            if leaf:
                entry.set(v ^ D_BIT)
                writes.append((level, addr, v ^ D_BIT))
                walk.action = P.ACTION_CONTINUE      # no split: the leaf stays as it is
            return 0
        return cb

    def hole(addr, nxt, depth, walk):
        tick(("pte_hole", addr, nxt, depth))
        return 0

    def test_walk(addr, nxt, walk):
        tick(("test_walk", addr, nxt))
        return 0

    def pre_vma(start, end, walk):
        tick(("pre_vma", start, end))
        return 0

    def post_vma(walk):
        tick(("post_vma", walk.vma.vm_start if walk.vma is not None else None))

    def install_pte(addr, nxt, ptep, walk):
        tick(("install_pte", addr, nxt))
        v = P.pfn_pte(0x7000 + ((addr >> 12) & 0xFFF), 0x67)
        ptep.set(v)
        writes.append((P.PTE, addr, v))
        return 0

    kw = {f"{n}_entry": entry_cb(f"{n}_entry", lv)
          for n, lv in (("pgd", P.PGD), ("p4d", P.P4D), ("pud", P.PUD), ("pmd", P.PMD),
                        ("pte", P.PTE))}
    kw.update(pte_hole=hole, test_walk=test_walk, pre_vma=pre_vma, post_vma=post_vma)
    if install:
        kw["install_pte"] = install_pte
    return P.MMWalkOps(**kw)


def run_walk(impl, api, levels, raise_at):
    mm = build_novma(levels) if api == "novma" else build(levels)
    before = raw(mm)
    trace, writes = [], []
    ops = scripted(trace, writes, raise_at, install=api == "mm-install")
    exc = None
    try:
        if api == "novma":
            with mm.mmap_write_lock():
                rc = impl.walk_page_range_novma(mm, *WALK_NOVMA, ops)
        else:
            fn = impl.walk_page_range_mm if api == "mm-install" else impl.walk_page_range
            with mm.mmap_read_lock():
                rc = fn(mm, *WALK, ops)
    except Boom as e:
        exc, rc = e, None
    return mm, before, trace, writes, rc, exc


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("api", ["range", "mm-install", "novma"])
def test_raise_at_every_call_stops_both_walkers_at_the_same_place(levels, api):
    """For every n: the walk stops at call n in both walkers, Boom(n)
    reaches the caller, the mm validates, and the tables are the original
    ones plus exactly the writes made before call n (PTE/PMD D-bit flips,
    installed PTEs; no table freed, tables allocated only by install)."""
    mm, before, full, writes, rc, exc = run_walk(support.CYTHON, api, levels, raise_at=0)
    assert rc == 0 and exc is None
    n_calls = len(full)
    names = {rec[0] for rec in full}
    assert {"pud_entry", "pmd_entry", "pte_entry", "pte_hole"} <= names, names
    if api != "novma":
        assert {"test_walk", "pre_vma", "post_vma"} <= names
    if api == "mm-install":
        assert "install_pte" in names
    for n in range(1, n_calls + 1):
        got = {}
        for impl in IMPLS:
            mm, before, trace, writes, rc, exc = run_walk(impl, api, levels, raise_at=n)
            assert exc is not None and exc.n == n, (impl, n, rc)
            assert trace == full[:n], (impl, n)
            mm.validate()
            leaves, links = raw(mm)
            want = dict(before[0])
            for level, addr, v in writes:
                want[(level, addr)] = v
            assert leaves == want, (impl, n)
            if api == "mm-install":
                assert links >= before[1]
            else:
                assert links == before[1], (impl, n)
            got[impl.name] = (leaves, links)
        assert got["cython"] == got["reference"], n


# --- writing where the callback was not given a slot ----------------------------------

def _populated(n=8):
    mm = P.MM()
    a = mm.mmap(None, n * PS, P.PROT_READ | P.PROT_WRITE, P.MAP_PRIVATE | P.MAP_ANONYMOUS)
    for i in range(n):
        mm.touch(a + i * PS, write=True)
    return mm, a


def test_kept_batch_view_is_read_only_after_its_call():
    """A pgwalk.batch view kept beyond its call refuses writes; and, since
    F10, it is a view of the walk's copy of the slots (written back when the
    call returns), so even made writable again it reaches no table.  Before
    F5 it stayed writable: after the table was freed by munmap and handed
    out again, a write through it showed up as a present PTE nobody mapped."""
    mm, a = _populated()
    kept = []

    def fn(entries, addr, nxt, walk):
        if kept:
            with pytest.raises(ValueError):
                kept[0][0] = 0                    # the previous call's view, in a later call
        entries[1] = entries[1] ^ D_BIT           # writes during the call still work
        kept.append(entries)
        return 0

    d1 = mm.entry(a + PS, P.PTE)
    with mm.mmap_read_lock():
        assert P.walk_page_range(mm, a, a + 8 * PS, P.MMWalkOps(pte_entry=P.batch(fn))) == 0
    assert mm.entry(a + PS, P.PTE) == d1 ^ D_BIT
    view = kept[0]
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0] = 0
    mm.munmap(a, 8 * PS)
    with pytest.raises(ValueError):
        view[3] = P.pfn_pte(0xDEAD, 0x67)         # into the freed table
    b = mm.mmap(None, 8 * PS, P.PROT_READ | P.PROT_WRITE, P.MAP_PRIVATE | P.MAP_ANONYMOUS)
    mm.touch(b, write=True)                       # reuses the freed table
    view.flags.writeable = True                   # numpy allows it: the copy is an ndarray's
    view[3] = P.pfn_pte(0xDEAD, 0x67)
    derived = kept[0][:]                          # and a view derived after the call
    derived.flags.writeable = True
    derived[5] = P.pfn_pte(0xBEEF, 0x67)
    assert [mm.entry(b + i * PS, P.PTE) != 0 for i in range(8)] == [True] + [False] * 7
    mm.validate()


def test_view_derived_during_the_call_writes_no_table_afterwards():
    """F10: a view derived from the batch view during the call (a slice)
    stays writable after it (numpy keeps its own flag), but it is a view of
    the walk's copy: after munmap and a new mapping reusing the table, a
    write through it changes nothing there."""
    mm, a = _populated()
    kept = []

    def fn(entries, addr, nxt, walk):
        kept.append(entries[:])                   # derived, writable
        return 0

    with mm.mmap_read_lock():
        assert P.walk_page_range(mm, a, a + 8 * PS, P.MMWalkOps(pte_entry=P.batch(fn))) == 0
    mm.munmap(a, 8 * PS)
    b = mm.mmap(None, 8 * PS, P.PROT_READ | P.PROT_WRITE, P.MAP_PRIVATE | P.MAP_ANONYMOUS)
    mm.touch(b, write=True)
    assert kept[0].flags.writeable
    kept[0][3] = P.pfn_pte(0xDEAD, 0x67)
    assert [mm.entry(b + i * PS, P.PTE) != 0 for i in range(8)] == [True] + [False] * 7
    mm.validate()


def test_batch_writes_reach_the_table_when_the_call_returns():
    """The copy's changed slots are stored when the call returns -- also when
    it raises -- and only those: a slot the callback left alone keeps what
    the table holds (docs/decisions.md 14)."""
    mm, a = _populated()
    before = [mm.entry(a + i * PS, P.PTE) for i in range(8)]

    def fn(entries, addr, nxt, walk):
        entries[2] = entries[2] ^ D_BIT
        raise KeyError("after a write")

    with mm.mmap_read_lock():
        with pytest.raises(KeyError):
            P.walk_page_range(mm, a, a + 8 * PS, P.MMWalkOps(pte_entry=P.batch(fn)))
    after = [mm.entry(a + i * PS, P.PTE) for i in range(8)]
    assert after == before[:2] + [before[2] ^ D_BIT] + before[3:]
    mm.validate()


@by_impl
@pytest.mark.parametrize("level", [P.PGD, P.PUD, P.PMD])
def test_set_entry_cannot_free_the_tables_being_walked(impl, level):
    """A callback that overwrites, with mm.set_entry, a slot linking the
    tables under the walk gets RuntimeError and nothing is freed.  Before
    the fix the compiled walker went on in the freed PTE table, the
    callback's writes landed in it, and a later mapping elsewhere found
    them (the reference walker stopped with ValueError: 'no live table')."""
    mm, a = _populated()
    seen = []
    tables = mm.nr_tables

    def pte(entry, addr, nxt, walk):
        seen.append(addr)
        if addr == a:
            mm.set_entry(a, level, 0)
        entry.set(int(entry))
        return 0

    before = raw(mm)
    with mm.mmap_read_lock():
        with pytest.raises(RuntimeError, match="walk of this mm is running"):
            impl.walk_page_range(mm, a, a + 8 * PS, P.MMWalkOps(pte_entry=pte))
    assert seen == [a]
    assert raw(mm) == before and mm.nr_tables == tables
    mm.validate()
    assert mm.active_walks == 0
    mm.set_entry(a, P.PMD, 0)                     # outside a walk: allowed, frees the PTE table
    assert mm.nr_tables == tables - 1
    mm.validate()


def test_a_running_walk_in_another_thread_also_blocks_set_entry():
    """set_entry that would free tables is refused while any thread walks
    the mm (the walk holds pointers into them), and allowed afterwards."""
    import threading
    mm, a = _populated()
    inside, release = threading.Event(), threading.Event()

    def pte(entry, addr, nxt, walk):
        inside.set()
        release.wait(10)
        return 1

    def walker():
        with mm.mmap_read_lock():
            P.walk_page_range(mm, a, a + PS, P.MMWalkOps(pte_entry=pte))

    t = threading.Thread(target=walker)
    with watchdog():
        t.start()
        assert inside.wait(10)
        try:
            with pytest.raises(RuntimeError):
                mm.set_entry(a, P.PMD, 0)
        finally:
            release.set()
            t.join(10)
    assert not t.is_alive()
    mm.set_entry(a, P.PMD, 0)
    mm.validate()


def test_writes_elsewhere_in_the_tree_are_seen_the_same_by_both_walkers():
    """Callbacks may write other slots through the raw API: set_entry on a
    PTE ahead of the walk (the walk then sees the new value), map() into a
    2 MiB range without a table yet (the walk descends into the new
    table), set_entry on a slot already passed.  Both walkers see the same
    thing; the mm validates."""
    got = {}
    for impl in IMPLS:
        mm = P.MM()
        mm.add_vma(B, B + 2 * M2, RWF)
        for i in (0, 3):
            mm.map(B + i * PS)
        trace = []

        def pte(entry, addr, nxt, walk):
            trace.append(("pte", addr, int(entry)))
            if addr == B:
                mm.set_entry(B + 5 * PS, P.PTE, P.pfn_pte(0x55, 0x67))    # ahead, same table
                mm.map(B + M2 + 7 * PS, pfn=0x77)                         # a table ahead
            if addr == B + 3 * PS:
                mm.set_entry(B, P.PTE, 0)                                 # behind
            return 0

        def pmd(entry, addr, nxt, walk):
            trace.append(("pmd", addr, int(entry) != 0))
            return 0

        ops = P.MMWalkOps(pte_entry=pte, pmd_entry=pmd)
        with mm.mmap_read_lock():
            assert impl.walk_page_range(mm, B, B + M2 + 8 * PS, ops) == 0
        assert ("pte", B + 5 * PS, P.pfn_pte(0x55, 0x67)) in trace
        assert ("pte", B + M2 + 7 * PS, mm.entry(B + M2 + 7 * PS, P.PTE)) in trace
        assert P.pte_pfn(mm.entry(B + M2 + 7 * PS, P.PTE)) == 0x77
        assert ("pmd", B + M2, True) in trace
        assert mm.entry(B, P.PTE) == 0
        mm.validate()
        got[impl.name] = trace
    assert got["cython"] == got["reference"]


# --- calling back into the same mm --------------------------------------------------------

LOCK_MODES = ["read", "write", "write-verify"]


def _walk_under(mm, a, n, mode, pte, impl=support.CYTHON):
    """Walk [a, a + n pages) with ``pte`` under the lock ``mode`` asks for."""
    lock = {"read": P.PGWALK_RDLOCK, "write": P.PGWALK_WRLOCK,
            "write-verify": P.PGWALK_WRLOCK_VERIFY}[mode]
    ops = P.MMWalkOps(pte_entry=pte, walk_lock=lock)
    if mode == "read":
        with mm.mmap_read_lock():
            return impl.walk_page_range(mm, a, a + n * PS, ops)
    with mm.mmap_write_lock():
        if mode == "write-verify":
            for v in mm.vmas:
                P.vma_start_write(v)
        return impl.walk_page_range(mm, a, a + n * PS, ops)


RW = P.PROT_READ | P.PROT_WRITE
PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS
SYSCALLS = {
    "munmap": lambda mm, a: mm.munmap(a + 2 * PS, PS),
    "mmap": lambda mm, a: mm.mmap(None, 4 * PS, RW, PRIV),
    "mmap-fixed-over": lambda mm, a: mm.mmap(a, 4 * PS, RW, PRIV | P.MAP_FIXED),
    "madvise-dontneed": lambda mm, a: mm.madvise(a, 8 * PS, P.MADV_DONTNEED),
    "madvise-guard": lambda mm, a: mm.madvise(a + 4 * PS, PS, P.MADV_GUARD_INSTALL),
    "mprotect": lambda mm, a: mm.mprotect(a, 2 * PS, P.PROT_READ),
    "mremap": lambda mm, a: mm.mremap(a, 8 * PS, 16 * PS, P.MREMAP_MAYMOVE),
    "mlock": lambda mm, a: mm.mlock(a, PS),
    "fork": lambda mm, a: mm.fork(),
    "exit": lambda mm, a: mm.exit(),
}


@by_impl
@pytest.mark.parametrize("mode", LOCK_MODES)
@pytest.mark.parametrize("call", sorted(SYSCALLS))
def test_syscall_from_a_callback_raises_instead_of_deadlocking(impl, mode, call):
    """Every syscall of the model takes the mmap lock for writing; from a
    callback of a walk holding that lock (for reading or writing) the
    kernel would deadlock on its own rwsem (lockdep: recursive locking).
    pgwalk raises RuntimeError at once, the exception ends the walk, and
    the mm is as it was."""
    mm, a = _populated()
    before = (raw(mm), [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.vmas])
    calls = []

    def pte(entry, addr, nxt, walk):
        calls.append(addr)
        SYSCALLS[call](mm, a)
        return 0

    with watchdog():
        with pytest.raises(RuntimeError, match="would deadlock"):
            _walk_under(mm, a, 8, mode, pte, impl)
    assert calls == [a]
    assert (raw(mm), [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.vmas]) == before
    mm.validate()
    mm.munmap(a, PS)                                 # the lock was released
    mm.validate()


@by_impl
@pytest.mark.parametrize("mode", LOCK_MODES)
def test_fault_from_a_callback(impl, mode):
    """mm.touch takes the mmap lock for reading (a page fault).  From a
    walk under the write lock it raises RuntimeError (the kernel would
    deadlock); under the read lock the model lets the fault run (its lock
    admits recursive readers, see robustness.md): the faulted pages,
    including ones in a table the walk has not reached yet, are there
    afterwards, the walk visits them, and the mm is valid."""
    mm = P.MM()
    a = mm.mmap(None, 2 * M2, RW, PRIV)
    mm.madvise(a, 2 * M2, P.MADV_NOHUGEPAGE)
    mm.touch(a, write=True)
    seen = []

    def pte(entry, addr, nxt, walk):
        seen.append((addr, int(entry) & 1))
        if addr == a:
            mm.touch(a + 3 * PS, write=True)         # same table, ahead
            mm.touch(a + M2 + 2 * PS, write=True)    # a table not there yet
        return 0

    with watchdog():
        if mode == "read":
            with mm.mmap_read_lock():
                assert impl.walk_page_range(mm, a, a + M2 + 4 * PS, P.MMWalkOps(pte_entry=pte)) == 0
            assert (a + 3 * PS, 1) in seen and (a + M2 + 2 * PS, 1) in seen
            assert mm.pagemap(a + M2 + 2 * PS, a + M2 + 3 * PS)[0] >> np.uint64(63) == 1
        else:
            with pytest.raises(RuntimeError, match="would deadlock"):
                _walk_under(mm, a, 4, mode, pte, impl)
            assert seen == [(a, 1)]
            assert mm.entry(a + 3 * PS, P.PTE) == 0
    mm.validate()


@by_impl
@pytest.mark.parametrize("mode", LOCK_MODES)
def test_nested_walks_from_a_callback(impl, mode):
    """A callback may walk the same mm again: directly (the lock is held,
    as in the kernel, where a nested walk_page_range needs no more
    locking) in every mode; through mm.walk, which takes the lock again,
    only under the read lock (under the write lock: RuntimeError).  An
    exception raised in the inner walk's callback goes through both walks
    to the caller."""
    mm, a = _populated()
    inner = []

    def inner_pte(entry, addr, nxt, walk):
        inner.append(addr)
        return 0

    def pte(entry, addr, nxt, walk):
        if addr == a:
            lock = walk.ops.walk_lock
            ops = P.MMWalkOps(pte_entry=inner_pte, walk_lock=lock)
            assert impl.walk_page_range(mm, a, a + 3 * PS, ops) == 0
        return 0

    with watchdog():
        assert _walk_under(mm, a, 8, mode, pte, impl) == 0
    assert inner == [a, a + PS, a + 2 * PS]

    def via_mm_walk(entry, addr, nxt, walk):
        return mm.walk(a, a + 2 * PS, P.MMWalkOps(pte_entry=inner_pte))

    inner.clear()
    with watchdog():
        if mode == "read":
            assert _walk_under(mm, a, 2, mode, via_mm_walk, impl) == 0
            assert inner == [a, a + PS] * 2
        else:
            with pytest.raises(RuntimeError, match="would deadlock"):
                _walk_under(mm, a, 2, mode, via_mm_walk, impl)

    def boom(entry, addr, nxt, walk):
        raise Boom(7)

    def outer(entry, addr, nxt, walk):
        impl.walk_page_range(mm, a, a + PS, P.MMWalkOps(pte_entry=boom,
                                                        walk_lock=walk.ops.walk_lock))
        return 0

    with watchdog():
        with pytest.raises(Boom):
            _walk_under(mm, a, 8, mode, outer, impl)
    assert mm.active_walks == 0
    mm.validate()
