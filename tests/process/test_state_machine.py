"""A hypothesis state machine over the process model.

Rules are the process's syscalls and faults on a few live mms -- mmap
(private, shared, MAP_FIXED, MAP_FIXED_NOREPLACE, hints, MAP_POPULATE,
MAP_NORESERVE, MAP_LOCKED), munmap, mprotect, mremap (MAYMOVE, FIXED,
DONTUNMAP), madvise (every advice, the guard ones included, and invalid
ones), mlock/munlock, touch (read/write), fork, exit -- and walks:

* ``walk_copies``: any walk with random scripted callbacks (returns,
  actions, writes through the entry, ``install_pte`` through
  ``pgwalk.internal.walk_page_range_mm``, allocation failures) on two
  identical copies of a live mm's state (tables and VMAs), one through the
  compiled walker and one through ``pgwalk.reference``, compared as
  tests/walk/test_differential.py compares them (``support.run_walk``);
* ``walk_live``: a walk with read-only scripted callbacks on the live mm
  itself (compiled walker; it may split THPs) and on a copy (reference),
  compared by trace, return value, tables and counters.

After every rule ``mm.validate()`` runs on every mm (an invariant): for
these mms, driven by the process model only, that includes the process
model's invariants (map counts over parent and children, protections,
entries only inside VMAs; see ``MM.validate``).  A syscall may fail with an
``OSError`` carrying an errno; a touch may raise ``SegmentationFault`` or
``BusError``; any other exception is a failure.

Profiles (tests/conftest.py): the default one keeps this file well under a
minute; ``HYPOTHESIS_PROFILE=long`` runs thousands of sequences.  With
``PGWALK_SM_STATS=path`` the outcome counts are written to ``path`` (JSON).
"""

import atexit
import json
import os
import time
from collections import Counter

import numpy as np
import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pgwalk
from pgwalk import BusError, SegmentationFault
from pgwalk import constants as C
from pgwalk.constants import PAGE_SIZE, PGD, PMD, PTE, PUD
from helpers.support import (
    APIS, CALLBACKS, CYTHON, REFERENCE, assert_same_walk, callback_script, dump, locked_for,
    run_walk, scripted_ops, stats_delta,
)

MiB = 1 << 20
WINDOW = 0x7F0000000000              # MAP_FIXED / hint addresses: [WINDOW, WINDOW + 16 MiB)
MAX_MMS = 4
RW = C.PROT_READ | C.PROT_WRITE
PROTS = [RW, RW, C.PROT_READ, C.PROT_NONE, RW | C.PROT_EXEC, C.PROT_WRITE, C.PROT_READ | C.PROT_EXEC]
PAGES = [1, 1, 2, 3, 5, 8, 16, 64, 511, 512, 513, 1024]
ADVICES = [getattr(C, n) for n in dir(C) if n.startswith("MADV_")] + [7, 26, 104, 999]
# the advices that change page tables, drawn half of the time
PAGE_ADVICES = [C.MADV_GUARD_INSTALL, C.MADV_GUARD_REMOVE, C.MADV_DONTNEED, C.MADV_FREE,
                C.MADV_PAGEOUT, C.MADV_COLD, C.MADV_COLLAPSE, C.MADV_HUGEPAGE,
                C.MADV_POPULATE_WRITE, C.MADV_POPULATE_READ, C.MADV_REMOVE,
                C.MADV_WIPEONFORK, C.MADV_DONTFORK, C.MADV_DONTNEED_LOCKED, C.MADV_GUARD_INSTALL]
STATS = Counter()
T0 = time.monotonic()


def _dump_stats():
    path = os.environ.get("PGWALK_SM_STATS")
    if path and STATS:
        out = dict(STATS, seconds=round(time.monotonic() - T0, 1))
        with open(path + ".tmp", "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)


atexit.register(_dump_stats)


def clone(mm):
    """A low-level copy of ``mm``'s tables and VMAs (flags, vm_ops, pgoff):
    the same walk on two clones must do the same thing.  Two clones of one
    mm are built alike, so their tables get the same pool ids."""
    c = pgwalk.MM(mm.levels)
    levels = mm.levels
    stack = [(mm.pgd_id, PGD, 0)]       # depth first, in slot order, without a recursive
    while stack:                        # closure (a cycle that would keep ``c`` alive)
        tid, level, base = stack.pop()
        table = np.asarray(mm._table(tid))
        shift = (39 if levels == 4 else 48) if level == PGD else 12 + 9 * (4 - level)
        todo = []
        for i in np.flatnonzero(table).tolist():
            addr = base + (i << shift)
            child = mm._child(tid, i) if level < PTE else -1
            if child < 0:
                c.set_entry(addr, level, int(table[i]))
                continue
            new = c.alloc_table(addr, level)
            cl = PUD if (levels == 4 and level == PGD) else level + 1
            if cl == PTE:
                np.asarray(c._table(new.index))[:] = np.asarray(mm._table(child))
            else:
                todo.append((child, cl, addr))
        stack.extend(reversed(todo))
    for v in mm.vmas:
        n = c.add_vma(v.vm_start, v.vm_end, v.vm_flags)
        n.vm_ops, n.vm_pgoff = v.vm_ops, v.vm_pgoff
    return c


class ProcessMachine(RuleBasedStateMachine):

    @initialize(levels=st.sampled_from([4, 5]), thp=st.booleans(), touched=st.integers(0, 3),
                shared=st.sampled_from([64, 64, 1024]), collapse=st.booleans())
    def start(self, levels, thp, touched, shared, collapse):
        """One mm with a private 8 MiB mapping (THP-eligible or not, some
        pages touched) and a shared one (64 pages, or 4 MiB 2 MiB-aligned,
        which MADV_COLLAPSE can turn into shmem THPs), so that rules meet
        mappings early."""
        self.levels = levels
        mm = pgwalk.MM(levels)
        self.mms = [mm]
        mm.mmap(WINDOW, 8 * MiB, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
        mm.mmap(WINDOW + 10 * MiB, shared * PAGE_SIZE, RW, C.MAP_SHARED | C.MAP_ANONYMOUS | C.MAP_FIXED)
        if thp:
            mm.madvise(WINDOW, 8 * MiB, C.MADV_HUGEPAGE)
            mm.madvise(WINDOW + 10 * MiB, shared * PAGE_SIZE, C.MADV_HUGEPAGE)
        for k in range(touched):
            mm.touch(WINDOW + k * 3 * MiB + k * PAGE_SIZE, write=bool(k % 2 == 0))
            mm.touch(WINDOW + 10 * MiB + k * PAGE_SIZE, write=bool(k % 2))
        if collapse and touched and shared == 1024:
            mm.madvise(WINDOW + 10 * MiB, 2 * MiB, C.MADV_COLLAPSE)     # a shmem THP
            assert pgwalk.pmd_leaf(mm.entry(WINDOW + 10 * MiB, PMD))
            STATS["start:shmem_thp"] += 1
        STATS["sequences"] += 1

    # --- helpers -----------------------------------------------------------------------
    def pick(self, data):
        return self.mms[data.draw(st.integers(0, len(self.mms) - 1), label="mm")]

    def addr(self, data, mm):
        """A page address: near a VMA's edges or inside it, or in the window."""
        points = []
        for v in mm.vmas[:12]:
            points += [v.vm_start, v.vm_end, v.vm_start + PAGE_SIZE, v.vm_end - PAGE_SIZE,
                       v.vm_start + ((v.vm_end - v.vm_start) // 2 & ~(PAGE_SIZE - 1)),
                       (v.vm_start + 2 * MiB - 1) & ~(2 * MiB - 1)]
        window = st.integers(0, 4096).map(lambda k: WINDOW + k * PAGE_SIZE)
        aligned = st.integers(0, 7).map(lambda k: WINDOW + k * 2 * MiB)
        inside = []
        for v in mm.vmas[:12]:
            inside.append(st.integers(v.vm_start // PAGE_SIZE, v.vm_end // PAGE_SIZE - 1)
                          .map(lambda k: k * PAGE_SIZE))
        kind = data.draw(st.sampled_from(["point", "inside", "window", "point", "inside",
                                          "aligned"]), label="where")
        if kind == "point" and points:
            return data.draw(st.sampled_from(points), label="addr")
        if kind == "inside" and inside:
            return data.draw(st.one_of(inside), label="addr")
        return data.draw(aligned if kind == "aligned" else window, label="addr")

    def length(self, data):
        n = data.draw(st.sampled_from(PAGES), label="pages") * PAGE_SIZE
        odd = data.draw(st.sampled_from([0, 0, 0, 0, 0, 0, 1, 100, -n]), label="odd")
        return n + odd

    def call(self, name, fn, *args):
        """Run a syscall: OSError with an errno is a valid outcome."""
        try:
            r = fn(*args)
        except OSError as e:
            assert isinstance(e.errno, int) and e.errno > 0, repr(e)
            STATS[f"{name}:errno{e.errno}"] += 1
            return None
        STATS[f"{name}:ok"] += 1
        return r

    # --- syscalls ----------------------------------------------------------------------
    @rule(data=st.data())
    def mmap(self, data):
        self._mmap(data)

    @rule(data=st.data())
    def mmap_again(self, data):         # a second rule: mmap twice as often as the others
        self._mmap(data)

    def _mmap(self, data):
        mm = self.pick(data)
        how = data.draw(st.sampled_from(["any", "hint", "fixed", "fixed", "noreplace"]), label="how")
        addr = 0 if how == "any" else self.addr(data, mm)
        flags = C.MAP_ANONYMOUS | data.draw(st.sampled_from(
            [C.MAP_PRIVATE, C.MAP_PRIVATE, C.MAP_SHARED, C.MAP_SHARED_VALIDATE]), label="type")
        flags |= {"fixed": C.MAP_FIXED, "noreplace": C.MAP_FIXED_NOREPLACE}.get(how, 0)
        for bit in (C.MAP_POPULATE, C.MAP_NORESERVE, C.MAP_LOCKED):
            if data.draw(st.integers(0, 3), label="bit") == 0:
                flags |= bit
        self.call("mmap", mm.mmap, addr, self.length(data), data.draw(st.sampled_from(PROTS)), flags)

    @rule(data=st.data())
    def munmap(self, data):
        mm = self.pick(data)
        self.call("munmap", mm.munmap, self.addr(data, mm), self.length(data))

    @rule(data=st.data())
    def mprotect(self, data):
        mm = self.pick(data)
        prot = data.draw(st.sampled_from(PROTS + [8]), label="prot")
        self.call("mprotect", mm.mprotect, self.addr(data, mm), self.length(data), prot)

    @rule(data=st.data())
    def mremap(self, data):
        mm = self.pick(data)
        flags = data.draw(st.sampled_from([0, C.MREMAP_MAYMOVE, C.MREMAP_MAYMOVE,
                                           C.MREMAP_MAYMOVE | C.MREMAP_FIXED,
                                           C.MREMAP_MAYMOVE | C.MREMAP_DONTUNMAP,
                                           C.MREMAP_MAYMOVE | C.MREMAP_FIXED | C.MREMAP_DONTUNMAP,
                                           C.MREMAP_FIXED, C.MREMAP_DONTUNMAP]), label="flags")
        addr, old = self.addr(data, mm), self.length(data)
        new = old if data.draw(st.integers(0, 3), label="same") == 0 else self.length(data)
        args = [addr, old, new, flags]
        if flags & C.MREMAP_FIXED:
            args.append(self.addr(data, mm))
        self.call("mremap", mm.mremap, *args)

    @rule(data=st.data())
    def madvise(self, data):
        self._madvise(data)

    @rule(data=st.data())
    def madvise_again(self, data):      # madvise twice as often as the others
        self._madvise(data)

    @rule(data=st.data(), install=st.booleans())
    def guard(self, data, install):
        """MADV_GUARD_INSTALL / MADV_GUARD_REMOVE on a range of a mapping."""
        mm = self.pick(data)
        advice = C.MADV_GUARD_INSTALL if install else C.MADV_GUARD_REMOVE
        self.call(f"madvise{advice}", mm.madvise, self.addr(data, mm), self.length(data), advice)

    def _madvise(self, data):
        mm = self.pick(data)
        advice = data.draw(st.one_of(st.sampled_from(PAGE_ADVICES), st.sampled_from(ADVICES)),
                           label="advice")
        self.call(f"madvise{advice}", mm.madvise, self.addr(data, mm), self.length(data), advice)

    @rule(data=st.data())
    def mlock(self, data):
        mm = self.pick(data)
        addr, n = self.addr(data, mm), self.length(data)
        what = data.draw(st.sampled_from(["lock", "onfault", "unlock"]), label="lock")
        if what == "unlock":
            self.call("munlock", mm.munlock, addr, n)
        else:
            self.call("mlock", mm.mlock, addr, n, what == "onfault")

    @rule(data=st.data(), write=st.booleans())
    def touch(self, data, write):
        self._touch(data, write)

    @rule(data=st.data(), write=st.booleans())
    def touch_again(self, data, write):     # touch twice as often as the others
        self._touch(data, write)

    def _touch(self, data, write):
        mm = self.pick(data)
        addr = self.addr(data, mm) + data.draw(st.sampled_from([0, 0, 8, 4095]), label="off")
        try:
            mm.touch(addr, write=write)
        except SegmentationFault:
            STATS["touch:SIGSEGV"] += 1
        except BusError:
            STATS["touch:SIGBUS"] += 1
        else:
            STATS["touch:ok"] += 1

    @precondition(lambda self: len(self.mms) < MAX_MMS)
    @rule(data=st.data())
    def fork(self, data):
        child = self.call("fork", self.pick(data).fork)
        if child is not None:
            self.mms.append(child)

    @rule(data=st.data())
    def exit(self, data):
        if data.draw(st.integers(0, 3), label="really") and len(self.mms) == 1:
            return                          # the last mm exits one time in four
        mm = self.pick(data)
        mm.exit()
        STATS["exit"] += 1
        self.mms.remove(mm)
        mm.validate()                       # then dropped: an exited mm leaves its group exact
        if not self.mms:
            self.mms.append(pgwalk.MM(self.levels))

    # --- walks -------------------------------------------------------------------------
    def walk_range(self, data, mm, vmas, apis):
        api = data.draw(st.sampled_from(apis), label="api")
        vi = None
        if api in ("walk_page_vma", "walk_page_range_vma") and vmas:
            vi = data.draw(st.integers(0, len(vmas) - 1), label="vma")
            lo, hi = vmas[vi].vm_start, vmas[vi].vm_end
            start = data.draw(st.integers(lo // PAGE_SIZE, hi // PAGE_SIZE - 1), label="s") * PAGE_SIZE
            end = min(hi, start + data.draw(st.sampled_from(PAGES), label="n") * PAGE_SIZE)
            if data.draw(st.booleans(), label="whole"):
                start, end = lo, hi
        else:
            start = self.addr(data, mm)
            end = start + self.length(data)
            if data.draw(st.integers(0, 9), label="wide") == 0:
                start, end = WINDOW - 64 * MiB, WINDOW + 64 * MiB
        points = sorted({start, start + PAGE_SIZE, (start + 2 * MiB - 1) & ~(2 * MiB - 1)}
                        | {v.vm_start for v in vmas if start <= v.vm_start < end})
        return api, vi, start, end, points

    @rule(data=st.data())
    def walk_copies(self, data):
        """Any walk, writes and install_pte included, on two copies of a live
        mm: compiled and reference must agree."""
        self._walk_copies(data, ["walk_page_range_mm"] * 2 + APIS)

    @rule(data=st.data())
    def install_copies(self, data):
        """walk_page_range_mm with install_pte, inside one VMA, on two copies."""
        self._walk_copies(data, ["walk_page_range_mm"], inside=True)

    def _walk_copies(self, data, apis, inside=False):
        mm = self.pick(data)
        a, b = clone(mm), clone(mm)
        api, vi, start, end, points = self.walk_range(data, a, a.vmas, apis)
        if inside and a.vmas:
            v = data.draw(st.sampled_from(a.vmas), label="in")
            start = data.draw(st.integers(v.vm_start // PAGE_SIZE, v.vm_end // PAGE_SIZE - 1),
                              label="s") * PAGE_SIZE
            end = min(v.vm_end, start + data.draw(st.sampled_from(PAGES), label="n") * PAGE_SIZE)
            points = sorted({start, start + PAGE_SIZE, end - PAGE_SIZE})
        pool = ["pte_entry", "pmd_entry", "pte_hole"] if inside else [n for n in CALLBACKS if n != "install_pte"]
        names = [n for n in pool if data.draw(st.integers(0, 9), label=n) >= 5]
        if api == "walk_page_range_mm" and (inside or data.draw(st.integers(0, 3), label="install") > 0):
            names.append("install_pte")
        recipe = {"api": api, "vma": vi, "start": start, "end": end,
                  "ops": {n: data.draw(callback_script(n, points), label=n) for n in names},
                  "walk_lock": data.draw(st.sampled_from([0, 0, 1, 2]), label="lock"),
                  "fail_at": (data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=2), label="fail")
                              if data.draw(st.integers(0, 7), label="failing") == 0 else [])}
        want = run_walk(b, b.vmas, recipe, REFERENCE)
        got = run_walk(a, a.vmas, recipe, CYTHON)
        assert_same_walk(got, want)
        STATS[f"walk_copies:{api}"] += 1
        STATS["walk_copies:install"] += any(ev[0] == "install_pte" for ev in got["trace"])

    @rule(data=st.data())
    def walk_live(self, data):
        """A walk with callbacks that only record and steer (returns,
        ACTION_CONTINUE/AGAIN) on the live mm; the reference walker does the
        same on a copy.  The walk may split huge pages of the live mm, which
        must keep the process model's invariants."""
        mm = self.pick(data)
        copy = clone(mm)
        apis = [x for x in APIS if x != "walk_page_range_mm"] + ["walk_page_range_mm"]
        api, vi, start, end, points = self.walk_range(data, mm, mm.vmas, apis)
        callbacks = {}
        for n in CALLBACKS:
            if n == "install_pte" or data.draw(st.integers(0, 9), label=n) < 5:
                continue
            callbacks[n] = {
                "ret": data.draw(st.sampled_from([0, 0, 0, 0, 1, -5]), label="ret"),
                "ret_at": data.draw(st.lists(st.tuples(st.sampled_from(points), st.sampled_from([0, 3, -4])),
                                             max_size=1), label="ret_at"),
                "action_at": data.draw(st.lists(st.tuples(st.sampled_from(points), st.sampled_from(
                    ["ACTION_AGAIN", "ACTION_CONTINUE"])), max_size=2), label="action_at")}
        if "pte_entry" in callbacks and api != "walk_page_range_novma" and self.splits_shmem_thp(
                mm, *((mm.vmas[vi].vm_start, mm.vmas[vi].vm_end) if api == "walk_page_vma" and vi is not None
                      else (start, end)), vmas=[mm.vmas[vi]] if vi is not None else None):
            # finding 7 (fixed): a split of a PMD-mapped shmem THP; counted
            # so the run shows the state machine reaches it
            STATS["walk_live:splits_shmem_thp"] += 1
        spec = {"callbacks": callbacks, "walk_lock": data.draw(st.sampled_from(
            ["PGWALK_RDLOCK", "PGWALK_WRLOCK", "PGWALK_WRLOCK_VERIFY"]), label="lock")}
        out = {}
        for impl, target in ((CYTHON, mm), (REFERENCE, copy)):
            trace = []
            vmas = target.vmas
            index = {id(v): i for i, v in enumerate(vmas)}
            ops = scripted_ops(spec, trace, lambda vma: index.get(id(vma)), target)
            before = target.stats
            fn = getattr(impl, api)
            with locked_for(target, api, ops, vmas):
                if api in ("walk_page_vma", "walk_page_range_vma") and vi is None:
                    ret = impl.walk_page_range(target, start, end, ops)
                elif api == "walk_page_vma":
                    ret = fn(vmas[vi], ops)
                elif api == "walk_page_range_vma":
                    ret = fn(vmas[vi], start, end, ops)
                else:
                    ret = fn(target, start, end, ops)
            out[impl.name] = (ret, trace, dump(target), stats_delta(before, target.stats))
        assert out["cython"] == out["reference"]
        STATS[f"walk_live:{api}"] += 1

    @staticmethod
    def splits_shmem_thp(mm, start, end, vmas=None):
        """True if [start, end) meets a PMD leaf in a non-anonymous VMA
        (``vmas``: the one VMA a VMA walk is limited to)."""
        for v in vmas if vmas is not None else mm.vmas:
            if v.vm_ops is None or v.vm_end <= start or v.vm_start >= end:
                continue
            a = max(start, v.vm_start) & ~(2 * MiB - 1)
            while a < min(end, v.vm_end):
                if pgwalk.pmd_leaf(mm.entry(a, PMD)):
                    return True
                a += 2 * MiB
        return False

    # --- the invariant ------------------------------------------------------------------
    @invariant()
    def valid(self):
        for mm in self.mms:
            mm.validate()
            assert mm.phys_group.inexact is None, mm.phys_group.inexact
        STATS["steps"] += 1
        if STATS["steps"] % 2000 == 0:
            _dump_stats()                   # a long run killed by a timeout still leaves figures


TestProcessModel = ProcessMachine.TestCase
# counts and randomness from the profile (tests/conftest.py); a sequence's
# size and speed vary with what it maps, which the health checks would flag
TestProcessModel.settings = settings(suppress_health_check=list(HealthCheck))


def test_zz_outcomes_reached():
    """Not a tautology guard: the sequences above (run first, same module)
    reached the outcomes that matter -- successful and failing syscalls,
    faults of both kinds, forks, walks of both kinds with installs."""
    if not STATS["steps"]:
        import pytest
        pytest.skip("run together with TestProcessModel (it fills the counts)")
    for key in ("mmap:ok", "munmap:ok", "mprotect:ok", "mremap:ok", "fork:ok", "touch:ok",
                "touch:SIGSEGV", "exit", "walk_copies:install", "mlock:ok",
                f"madvise{C.MADV_GUARD_INSTALL}:ok", f"madvise{C.MADV_GUARD_REMOVE}:ok"):
        assert STATS[key] > 0, (key, dict(STATS))
    assert any(k.startswith("mmap:errno") for k in STATS), dict(STATS)
    assert sum(v for k, v in STATS.items() if k.startswith("walk_live:")) > 0
