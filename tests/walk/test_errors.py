"""Bad input, exceptions and interruption, for both walkers.

What is pinned here:

* the kernel's own argument checks return ``-EINVAL`` (and come before the
  lock assertion, in the kernel's order);
* Python argument errors raise ``TypeError``/``ValueError`` naming the
  argument;
* a bad callback return value raises ``TypeError``/``OverflowError``; a
  callback exception stops the walk at once and reaches the caller unchanged,
  with no later callback run and the tables consistent;
* the lock rules raise ``pgwalk.LockAssertionError``;
* Ctrl-C (``KeyboardInterrupt``) stops a long walk promptly, also one that
  loops for ever on ``ACTION_AGAIN``;
* entry references are valid only during their callback and may not unlink
  tables (decision 8.3).
"""

import functools
import os
import signal

import pytest

import pgwalk
from pgwalk import locks
from pgwalk.constants import (
    ACTION_AGAIN, ACTION_CONTINUE, P4D, PAGE_SIZE, PGD, PMD,
    PMD_SIZE, PGWALK_RDLOCK, PGWALK_WRLOCK, PGWALK_WRLOCK_VERIFY, PTE, PUD,
    VM_HUGETLB, VM_PFNMAP, _PAGE_DIRTY,
)

from helpers.support import IMPLS, PRESENT

EINVAL = pgwalk.EINVAL
ENOMEM = pgwalk.ENOMEM
INT_MAX = (1 << 31) - 1
INT_MIN = -(1 << 31)
P = PAGE_SIZE

A0 = 0x4000_0000            # VMA A: 1 GiB (PUD slot 1)
H0 = 0x8000_0000            # hugetlb VMA H: 2 GiB (PUD slot 2)

by_impl = pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)


def assert_einval(rc):
    assert rc == -EINVAL == -22


# --- building address spaces ------------------------------------------------------

def small_mm(levels=4, npages=8):
    """One anonymous VMA [A0, A0 + npages pages) with present PTEs at pages 0,
    1 and 5 (a PTE table under A0); nothing else."""
    mm = pgwalk.MM(levels)
    vma = mm.add_vma(A0, A0 + npages * P)
    for i in (0, 1, 5):
        mm.map(A0 + i * P, PTE)
    return mm, vma


def world(levels=4):
    """The scenario most callback tests walk, over [A0 - 2 MiB, H0 + 2 MiB):

    * a gap [A0 - 2M, A0) (pte_hole depth -1);
    * VMA A [A0, A0 + 8M): a PTE table under A0 with present PTEs at pages
      0, 1, 5; PMD slots 1..3 none (pte_hole depth 3);
    * a gap [A0 + 8M, H0);
    * hugetlb VMA H [H0, H0 + 2M) whose PMD table exists (hugetlb_entry runs).
    """
    mm = pgwalk.MM(levels)
    a = mm.add_vma(A0, A0 + 4 * PMD_SIZE)
    for i in (0, 1, 5):
        mm.map(A0 + i * P, PTE)
    h = mm.add_vma(H0, H0 + PMD_SIZE, VM_HUGETLB)
    mm.alloc_table(H0, PUD)
    return mm, a, h


WORLD_START = A0 - PMD_SIZE
WORLD_END = H0 + PMD_SIZE
INSTALL_END = A0 + 4 * PMD_SIZE           # install-mode walks stop before H

WORLD_EVENTS = (["pte_hole", "test_walk", "pre_vma", "pgd_entry", "p4d_entry",
                 "pud_entry", "pmd_entry"] + ["pte_entry"] * 512 + ["pte_hole"] * 3
                + ["post_vma", "pte_hole", "test_walk", "pre_vma", "hugetlb_entry",
                   "post_vma"])


def recording_ops(events, bad=None, at=1, action=None, install=False, walk_lock=PGWALK_RDLOCK):
    """MMWalkOps with every callback defined (``install_pte`` only when
    ``install``); each appends its name to ``events``.  The ``at``-th call of
    callback ``bad`` returns ``action()`` instead of 0 (``action`` may raise).
    ``pte_entry`` toggles the dirty bit of the present PTEs it is shown, and
    ``install_pte`` installs a present PTE, so that earlier work is visible."""
    counts = {}

    def hit(name):
        events.append(name)
        counts[name] = counts.get(name, 0) + 1
        if name == bad and counts[name] == at:
            return action()
        return 0

    def entry_cb(name):
        def f(entry, addr, next, walk):
            return hit(name)
        return f

    def pte_entry(entry, addr, next, walk):
        v = int(entry)
        if pgwalk.pte_present(v):
            entry.set(v ^ _PAGE_DIRTY)
        return hit("pte_entry")

    def install_pte(addr, next, ptep, walk):
        r = hit("install_pte")
        ptep.set(pgwalk.pfn_pte(0x5000 + (addr - A0) // P, PRESENT))
        return r

    def post_vma(walk):
        hit("post_vma")

    kw = dict(
        pgd_entry=entry_cb("pgd_entry"), p4d_entry=entry_cb("p4d_entry"),
        pud_entry=entry_cb("pud_entry"), pmd_entry=entry_cb("pmd_entry"),
        pte_entry=pte_entry,
        pte_hole=lambda addr, next, depth, walk: hit("pte_hole"),
        hugetlb_entry=lambda entry, hmask, addr, next, walk: hit("hugetlb_entry"),
        test_walk=lambda start, end, walk: hit("test_walk"),
        pre_vma=lambda start, end, walk: hit("pre_vma"),
        post_vma=post_vma, walk_lock=walk_lock)
    if install:
        kw["install_pte"] = install_pte
    return pgwalk.MMWalkOps(**kw)


def run_world(impl, mm, ops, install=False):
    with mm.mmap_read_lock():
        if install:
            return impl.walk_page_range_mm(mm, WORLD_START, INSTALL_END, ops)
        return impl.walk_page_range(mm, WORLD_START, WORLD_END, ops)


def counting_ops(calls, **extra):
    """Ops whose callbacks only record (name, args) into ``calls``."""
    def rec(name):
        return lambda *args: calls.append((name,) + args[:-1]) or 0
    kw = {n: rec(n) for n in ("pgd_entry", "p4d_entry", "pud_entry", "pmd_entry",
                              "pte_entry", "pte_hole", "hugetlb_entry", "test_walk",
                              "pre_vma")}
    kw["post_vma"] = lambda walk: calls.append(("post_vma",))
    kw.update(extra)
    return pgwalk.MMWalkOps(**kw)


def call_range(impl, api, mm, vma, start, end, ops):
    """Call one of the ranged entry points."""
    if api == "walk_page_range":
        return impl.walk_page_range(mm, start, end, ops)
    if api == "walk_page_range_mm":
        return impl.walk_page_range_mm(mm, start, end, ops)
    if api == "walk_page_range_novma":
        return impl.walk_page_range_novma(mm, start, end, ops)
    if api == "walk_page_range_vma":
        return impl.walk_page_range_vma(vma, start, end, ops)
    raise ValueError(api)


RANGED = ["walk_page_range", "walk_page_range_mm", "walk_page_range_novma",
          "walk_page_range_vma"]


# --- sanity of the scenario itself ---------------------------------------------------

@by_impl
def test_world_baseline(impl):
    """The scenario the callback tests use visits every callback, in the
    kernel's order, and returns 0: so "no later callback ran" below is a real
    claim (there are later callbacks to run)."""
    mm, a, h = world()
    events = []
    assert run_world(impl, mm, recording_ops(events)) == 0
    assert events == WORLD_EVENTS
    mm.validate()


# =====================================================================================
# 1. Kernel argument checks: -EINVAL
# =====================================================================================

@by_impl
@pytest.mark.parametrize("api", RANGED)
@pytest.mark.parametrize("delta", [0, P, 2 * P], ids=["empty", "inverted-1", "inverted-2"])
def test_start_not_below_end_is_einval(impl, api, delta):
    """``start >= end`` (an empty range
    included) is -EINVAL on every ranged entry point, with no callback run."""
    mm, vma = small_mm()
    calls = []
    ops = counting_ops(calls)
    start = A0 + 2 * P
    with mm.mmap_write_lock():
        rc = call_range(impl, api, mm, vma, start, start - delta, ops)
    assert_einval(rc)
    assert calls == []


@by_impl
@pytest.mark.parametrize("api", RANGED)
def test_einval_checks_come_before_the_lock_assertion(impl, api):
    """The -EINVAL argument checks are
    made before the mmap lock is asserted, so a bad range returns -EINVAL even
    with no lock held (no LockAssertionError)."""
    mm, vma = small_mm()
    calls = []
    assert_einval(call_range(impl, api, mm, vma, A0 + P, A0 + P, counting_ops(calls)))
    assert calls == []


@by_impl
@pytest.mark.parametrize("api", ["walk_page_range", "walk_page_range_mm", "walk_page_range_novma"])
def test_missing_mm_is_einval(impl, api):
    """A missing mm (None) is -EINVAL."""
    calls = []
    assert_einval(call_range(impl, api, None, None, A0, A0 + 8 * P, counting_ops(calls)))
    assert calls == []


@by_impl
def test_vma_without_mm_is_einval(impl):
    """A VMA made on its own (vm_mm None) is
    -EINVAL for walk_page_vma and walk_page_range_vma."""
    vma = pgwalk.VMA(A0, A0 + PMD_SIZE, 0)
    assert vma.vm_mm is None
    calls = []
    ops = counting_ops(calls)
    assert_einval(impl.walk_page_vma(vma, ops))
    assert_einval(impl.walk_page_range_vma(vma, A0, A0 + P, ops))
    assert_einval(impl.walk_page_range_vma(vma, A0, A0 + PMD_SIZE, ops))
    assert calls == []


@by_impl
@pytest.mark.parametrize("start,end", [
    (A0 - P, A0 + P), (A0 - P, A0 + 8 * P), (A0, A0 + 9 * P), (A0 + 7 * P, A0 + 9 * P),
    (A0 + 8 * P, A0 + 9 * P), (A0 - 2 * P, A0 - P),
], ids=["start-below", "start-below-whole", "end-above", "end-above-tail",
        "after", "before"])
def test_walk_page_range_vma_outside_the_vma_is_einval(impl, start, end):
    """walk_page_range_vma returns -EINVAL if start <
    vma.vm_start or end > vma.vm_end; the exact VMA bounds are accepted."""
    mm, vma = small_mm()
    calls = []
    ops = counting_ops(calls)
    with mm.mmap_read_lock():
        assert_einval(impl.walk_page_range_vma(vma, start, end, ops))
        assert calls == []
        assert impl.walk_page_range_vma(vma, vma.vm_start, vma.vm_end, ops) == 0
    assert ("pre_vma", A0, A0 + 8 * P) in calls


@by_impl
@pytest.mark.parametrize("api", ["walk_page_range", "walk_page_vma", "walk_page_range_vma",
                                 "walk_page_range_novma"])
def test_install_pte_refused_by_public_entry_points(impl, api):
    """Every public entry point
    refuses ops that define install_pte with -EINVAL, before walking anything
    (no callback, no table allocated) and before the lock assertion."""
    mm = pgwalk.MM(4)
    vma = mm.add_vma(A0, A0 + 8 * P)
    calls = []
    ops = counting_ops(calls, install_pte=lambda a, n, ptep, w: calls.append("install") or 0)
    tables = mm.nr_tables
    for locked in (False, True):
        if locked:
            with mm.mmap_write_lock():
                rc = (impl.walk_page_vma(vma, ops) if api == "walk_page_vma"
                      else call_range(impl, api, mm, vma, A0, A0 + 8 * P, ops))
        else:
            rc = (impl.walk_page_vma(vma, ops) if api == "walk_page_vma"
                  else call_range(impl, api, mm, vma, A0, A0 + 8 * P, ops))
        assert_einval(rc)
    assert calls == []
    assert mm.nr_tables == tables
    assert mm.entry(A0, PTE) == 0


@by_impl
def test_install_pte_accepted_by_walk_page_range_mm(impl):
    """walk_page_range_mm accepts install_pte and
    installs into every none PTE slot of the range (allocating the tables)."""
    mm = pgwalk.MM(4)
    mm.add_vma(A0, A0 + 8 * P)
    seen = []

    def install(addr, next, ptep, walk):
        seen.append(addr)
        ptep.set(pgwalk.pfn_pte(0x700 + (addr - A0) // P, PRESENT))
        return 0

    with mm.mmap_read_lock():
        assert impl.walk_page_range_mm(mm, A0, A0 + 4 * P, pgwalk.MMWalkOps(install_pte=install)) == 0
    assert seen == [A0 + i * P for i in range(4)]
    for i in range(4):
        assert pgwalk.pte_pfn(mm.entry(A0 + i * P, PTE)) == 0x700 + i
    assert mm.entry(A0 + 4 * P, PTE) == 0
    mm.validate()


@by_impl
def test_install_pte_on_hugetlb_vma_is_einval_before_pre_vma(impl):
    """The golden trace h-4l-hugetlb-install-einval:
    install_pte on a VM_HUGETLB VMA returns -EINVAL when that VMA is reached
    (after its test_walk, before its pre_vma); the VMAs walked before it stay
    walked (their PTEs installed, their post_vma called)."""
    mm = pgwalk.MM(4)
    mm.add_vma(A0, A0 + 4 * P)
    mm.add_vma(H0, H0 + PMD_SIZE, VM_HUGETLB)
    mm.add_vma(H0 + PMD_SIZE, H0 + PMD_SIZE + 4 * P)
    events = []

    def install(addr, next, ptep, walk):
        events.append(("install_pte", addr))
        ptep.set(pgwalk.pfn_pte(0x900, PRESENT))
        return 0

    ops = pgwalk.MMWalkOps(
        install_pte=install,
        test_walk=lambda s, e, w: events.append(("test_walk", s)) or 0,
        pre_vma=lambda s, e, w: events.append(("pre_vma", s)) or 0,
        post_vma=lambda w: events.append(("post_vma", w.vma.vm_start)),
        hugetlb_entry=lambda *a: events.append(("hugetlb_entry",)) or 0)
    with mm.mmap_read_lock():
        rc = impl.walk_page_range_mm(mm, A0, H0 + PMD_SIZE + 4 * P, ops)
    assert_einval(rc)
    assert events == ([("test_walk", A0), ("pre_vma", A0)]
                      + [("install_pte", A0 + i * P) for i in range(4)]
                      + [("post_vma", A0), ("test_walk", H0)])
    for i in range(4):
        assert pgwalk.pte_present(mm.entry(A0 + i * P, PTE))
    assert mm.entry(H0 + PMD_SIZE, PTE) == 0
    mm.validate()


@by_impl
def test_install_pte_table_allocation_failure_is_enomem(impl):
    """When install_pte needs a table that cannot be
    allocated the walk returns -ENOMEM; the tables allocated before stay,
    nothing is installed, the tree is consistent."""
    mm = pgwalk.MM(4)
    mm.add_vma(A0, A0 + 8 * P)
    installed = []
    ops = pgwalk.MMWalkOps(install_pte=lambda a, n, ptep, w: installed.append(a) or 0)
    mm.fail_table_alloc(at=[3])          # PUD table, PMD table, then the PTE table fails
    with mm.mmap_read_lock():
        assert impl.walk_page_range_mm(mm, A0, A0 + 8 * P, ops) == -ENOMEM
    assert installed == []
    assert mm.stats["alloc_failed"] == 1
    assert mm.entry(A0, PUD) != 0            # the PMD table stays linked
    assert mm.entry(A0, PMD) == 0            # no PTE table
    mm.validate()


@by_impl
def test_install_pte_without_pte_entry_meeting_a_pte_raises(impl):
    """Decision 8.1: install_pte set, pte_entry missing, and the walk meets a
    non-none PTE: TypeError naming the address; the PTEs installed before it
    stay, nothing after it is touched, the tables are consistent."""
    mm = pgwalk.MM(4)
    mm.add_vma(A0, A0 + 8 * P)
    mm.map(A0 + 3 * P, PTE)
    present = mm.entry(A0 + 3 * P, PTE)
    installed = []

    def install(addr, next, ptep, walk):
        installed.append(addr)
        ptep.set(pgwalk.pfn_pte(0x800, PRESENT))
        return 0

    with mm.mmap_read_lock():
        with pytest.raises(TypeError) as ei:
            impl.walk_page_range_mm(mm, A0, A0 + 8 * P, pgwalk.MMWalkOps(install_pte=install))
    assert f"{A0 + 3 * P:#x}" in str(ei.value)
    assert installed == [A0, A0 + P, A0 + 2 * P]
    for i in range(3):
        assert mm.entry(A0 + i * P, PTE) == pgwalk.pfn_pte(0x800, PRESENT)
    assert mm.entry(A0 + 3 * P, PTE) == present
    assert mm.entry(A0 + 4 * P, PTE) == 0
    mm.validate()


# =====================================================================================
# 2. Python argument errors
# =====================================================================================

@by_impl
@pytest.mark.parametrize("api", RANGED)
@pytest.mark.parametrize("which", ["start", "end"])
@pytest.mark.parametrize("bad", ["4096", 4096.0, None, True], ids=["str", "float", "None", "bool"])
def test_address_of_wrong_type_is_typeerror(impl, api, which, bad):
    """pgwalk.walker._args: an address that is not an int raises TypeError
    naming the argument ("start" or "end"), not -EINVAL."""
    mm, vma = small_mm()
    start, end = (bad, A0 + 8 * P) if which == "start" else (A0, bad)
    calls = []
    with mm.mmap_write_lock():
        with pytest.raises(TypeError, match=which):
            call_range(impl, api, mm, vma, start, end, counting_ops(calls))
    assert calls == []


@by_impl
@pytest.mark.parametrize("api", RANGED)
@pytest.mark.parametrize("which", ["start", "end"])
@pytest.mark.parametrize("bad", [-1, -P, 1 << 64, (1 << 64) + P, 1 << 70],
                         ids=["-1", "-page", "2^64", "2^64+page", "2^70"])
def test_address_out_of_range_is_valueerror(impl, api, which, bad):
    """An address that is negative or does not fit 64 bits raises ValueError
    naming the argument."""
    mm, vma = small_mm()
    start, end = (bad, A0 + 8 * P) if which == "start" else (A0, bad)
    calls = []
    with mm.mmap_write_lock():
        with pytest.raises(ValueError, match=which):
            call_range(impl, api, mm, vma, start, end, counting_ops(calls))
    assert calls == []


@by_impl
@pytest.mark.parametrize("api", RANGED)
@pytest.mark.parametrize("levels", [4, 5])
def test_non_canonical_address_is_valueerror(impl, api, levels):
    """Addresses in the hole between the canonical halves (2**47 +
    4096 with 4 levels, 2**56 + 4096 with 5) raise ValueError naming the
    argument; so does a range that spans the hole."""
    mm, vma = small_mm(levels)
    half = 1 << (47 if levels == 4 else 56)
    calls = []
    ops = counting_ops(calls)
    with mm.mmap_write_lock():
        with pytest.raises(ValueError, match="start"):
            call_range(impl, api, mm, vma, half + P, half + 2 * P, ops)
        with pytest.raises(ValueError, match="end"):
            call_range(impl, api, mm, vma, A0, half + P, ops)
        with pytest.raises(ValueError, match="end"):
            call_range(impl, api, mm, vma, A0, (1 << 64) - half - P, ops)
        with pytest.raises(ValueError):
            call_range(impl, api, mm, vma, A0, (1 << 64) - P, ops)
    assert calls == []


@by_impl
def test_canonical_addresses_are_accepted(impl):
    """The counterpart of the non-canonical checks: the top of the lower half
    as an ``end`` (2**47 with 4 levels), 2**47 + 4096 with 5 levels and
    upper-half kernel addresses in a no-VMA walk are valid addresses."""
    holes = []
    ops = pgwalk.MMWalkOps(pte_hole=lambda a, n, d, w: holes.append((a, n, d)) or 0)
    mm4 = pgwalk.MM(4)
    with mm4.mmap_read_lock():
        assert impl.walk_page_range(mm4, (1 << 47) - P, 1 << 47, ops) == 0
    assert holes == [((1 << 47) - P, 1 << 47, -1)]
    mm5 = pgwalk.MM(5)
    with mm5.mmap_read_lock():
        assert impl.walk_page_range(mm5, (1 << 47) + P, (1 << 47) + 2 * P, ops) == 0
    kmm = pgwalk.init_mm(4)
    top = (1 << 64) - (1 << 39)          # the last PGD slot of the upper half
    descend = pgwalk.MMWalkOps(pte_hole=ops.pte_hole, pte_entry=lambda *a: 0)
    with kmm.mmap_read_lock():
        assert impl.walk_page_range_novma(kmm, top, top + P, descend) == 0
    assert holes[-1] == (top, top + P, 0)      # the empty top-level slot (4-level: depth 0)


@by_impl
@pytest.mark.parametrize("api", RANGED + ["walk_page_vma"])
@pytest.mark.parametrize("bad", [None, {}, "ops", "namespace"])
def test_ops_of_wrong_type_is_typeerror(impl, api, bad):
    """ops must be a pgwalk.MMWalkOps; anything else (even an object
    with the right attribute names) raises TypeError naming ops."""
    import types
    if bad == "namespace":
        bad = types.SimpleNamespace(**{n: None for n in pgwalk.MMWalkOps.__slots__})
        bad.walk_lock = PGWALK_RDLOCK
    mm, vma = small_mm()
    with mm.mmap_write_lock():
        with pytest.raises(TypeError, match="ops"):
            if api == "walk_page_vma":
                impl.walk_page_vma(vma, bad)
            else:
                call_range(impl, api, mm, vma, A0, A0 + 8 * P, bad)


def test_mmwalkops_rejects_bad_fields():
    """pgwalk.ops: a callback field must be callable or None
    (TypeError naming the field); walk_lock must be one of the PGWALK_*
    values (ValueError), checked on construction and on assignment."""
    with pytest.raises(TypeError, match="pte_entry"):
        pgwalk.MMWalkOps(pte_entry=3)
    with pytest.raises(TypeError, match="pmd_entry"):
        pgwalk.MMWalkOps(pmd_entry="not callable")
    with pytest.raises(ValueError, match="walk_lock"):
        pgwalk.MMWalkOps(walk_lock=7)
    with pytest.raises(ValueError, match="walk_lock"):
        pgwalk.MMWalkOps(walk_lock=-1)
    with pytest.raises(ValueError, match="walk_lock"):
        pgwalk.MMWalkOps(walk_lock=True)
    with pytest.raises(TypeError):
        pgwalk.MMWalkOps(no_such_callback=lambda *a: 0)
    ops = pgwalk.MMWalkOps()
    ops.walk_lock = 3                  # PGWALK_VMA_RDLOCK_VERIFY (today's kernel)
    ops.walk_lock = PGWALK_RDLOCK
    with pytest.raises(ValueError, match="walk_lock"):
        ops.walk_lock = 4
    with pytest.raises(TypeError, match="install_pte"):
        ops.install_pte = 1.5
    with pytest.raises(AttributeError):
        ops.no_such_callback = None
    assert ops.walk_lock == PGWALK_RDLOCK and ops.install_pte is None
    for lock in (PGWALK_RDLOCK, PGWALK_WRLOCK, PGWALK_WRLOCK_VERIFY):
        assert pgwalk.MMWalkOps(walk_lock=lock).walk_lock == lock


@by_impl
@pytest.mark.parametrize("api", ["walk_page_range", "walk_page_range_mm", "walk_page_range_novma"])
@pytest.mark.parametrize("bad", ["mm", 4, "vma", "tables"])
def test_mm_of_wrong_type_is_typeerror(impl, api, bad):
    """mm must be a pgwalk.MM (or None, which is -EINVAL): anything
    else raises TypeError naming mm."""
    mm, vma = small_mm()
    bad = {"vma": vma, "tables": mm.pgd}.get(bad, bad)
    with pytest.raises(TypeError, match="mm"):
        call_range(impl, api, bad, None, A0, A0 + 8 * P, pgwalk.MMWalkOps())


@by_impl
@pytest.mark.parametrize("api", ["walk_page_vma", "walk_page_range_vma"])
@pytest.mark.parametrize("bad", [None, "vma", "mm"])
def test_vma_of_wrong_type_is_typeerror(impl, api, bad):
    """The vma argument must be a pgwalk.VMA (TypeError naming vma)."""
    mm, vma = small_mm()
    bad = mm if bad == "mm" else bad
    with mm.mmap_read_lock():
        with pytest.raises(TypeError, match="vma"):
            if api == "walk_page_vma":
                impl.walk_page_vma(bad, pgwalk.MMWalkOps())
            else:
                impl.walk_page_range_vma(bad, A0, A0 + P, pgwalk.MMWalkOps())


@by_impl
def test_novma_pgd_must_be_a_matching_top_level_table(impl):
    """walk_page_range_novma's pgd is another mm's top-level table
    (``other.pgd``): another type is TypeError, a lower-level table or one
    with other paging levels is ValueError."""
    mm = pgwalk.MM(4)
    other4 = pgwalk.MM(4)
    other5 = pgwalk.MM(5)
    lower = other4.alloc_table(A0, PUD)          # a PMD table
    ops = pgwalk.MMWalkOps(pte_hole=lambda *a: 0)
    with mm.mmap_write_lock():
        with pytest.raises(TypeError, match="pgd"):
            impl.walk_page_range_novma(mm, A0, A0 + P, ops, pgd="pgd")
        with pytest.raises(TypeError, match="pgd"):
            impl.walk_page_range_novma(mm, A0, A0 + P, ops, pgd=other4)
        with pytest.raises(ValueError, match="pgd"):
            impl.walk_page_range_novma(mm, A0, A0 + P, ops, pgd=lower)
        with pytest.raises(ValueError, match="pgd"):
            impl.walk_page_range_novma(mm, A0, A0 + P, ops, pgd=other5.pgd)
        assert impl.walk_page_range_novma(mm, A0, A0 + P, ops, pgd=other4.pgd) == 0


# =====================================================================================
# 3. Bad callback return values
# =====================================================================================

CALLBACK_CASES = [
    ("pte_hole", 1, False), ("pte_hole", 2, False), ("test_walk", 1, False),
    ("test_walk", 2, False), ("pre_vma", 1, False), ("pgd_entry", 1, False),
    ("p4d_entry", 1, False), ("pud_entry", 1, False), ("pmd_entry", 1, False),
    ("pte_entry", 3, False), ("hugetlb_entry", 1, False), ("install_pte", 3, True),
]
CASE_IDS = [f"{n}#{k}" for n, k, _ in CALLBACK_CASES]


@by_impl
@pytest.mark.parametrize("name,at,install", CALLBACK_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("bad", [None, "x", 1.5, [0]], ids=["None", "str", "float", "list"])
def test_non_int_return_is_typeerror(impl, name, at, install, bad):
    """Return values are the kernel's C ints: a callback returning
    a non-int raises TypeError naming the callback; no callback runs after it
    (post_vma included) and the tables stay consistent."""
    mm, a, h = world()
    events = []
    ops = recording_ops(events, bad=name, at=at, action=lambda: bad, install=install)
    with pytest.raises(TypeError, match=name):
        run_world(impl, mm, ops, install)
    assert events[-1] == name and events.count(name) == at
    mm.validate()


@by_impl
@pytest.mark.parametrize("name,at,install", CALLBACK_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("bad", [INT_MAX + 1, INT_MIN - 1, 1 << 64, -(1 << 100)],
                         ids=["INT_MAX+1", "INT_MIN-1", "2^64", "-2^100"])
def test_return_beyond_c_int_is_overflowerror(impl, name, at, install, bad):
    """A callback returning an int that does not fit a C int raises
    OverflowError; no callback runs after it and the tables stay consistent."""
    mm, a, h = world()
    events = []
    ops = recording_ops(events, bad=name, at=at, action=lambda: bad, install=install)
    with pytest.raises(OverflowError):
        run_world(impl, mm, ops, install)
    assert events[-1] == name and events.count(name) == at
    mm.validate()


def nth_index(seq, item, n):
    """Index of the n-th (1-based) occurrence of item in seq."""
    i = -1
    for _ in range(n):
        i = seq.index(item, i + 1)
    return i


@by_impl
@pytest.mark.parametrize("name,at,install", CALLBACK_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("value", [INT_MAX, INT_MIN, -1], ids=["INT_MAX", "INT_MIN", "-1"])
def test_c_int_bounds_are_plain_results(impl, name, at, install, value):
    """INT_MAX and INT_MIN fit a C int and are ordinary
    results: a non-zero one stops the walk and is returned unchanged (INT_MIN
    is not mistaken for an internal "exception pending" marker); post_vma
    still runs after a table walk that returned non-zero; a positive
    test_walk result skips the VMA instead."""
    mm, a, h = world()
    events = []
    ops = recording_ops(events, bad=name, at=at, action=lambda: value, install=install)
    rc = run_world(impl, mm, ops, install)
    if name == "test_walk" and value > 0:
        assert rc == 0
        if at == 1:       # VMA A skipped, the walk goes on with the gap and VMA H
            assert events == (["pte_hole", "test_walk"]
                              + WORLD_EVENTS[WORLD_EVENTS.index("post_vma") + 1:])
        else:             # VMA H skipped
            assert events == WORLD_EVENTS[:-3]
    else:
        assert rc == value
        tail = events[nth_index(events, name, at) + 1:]
        if (name, at) in (("pte_hole", 1), ("test_walk", 1), ("test_walk", 2), ("pre_vma", 1)):
            assert tail == []
        else:
            assert tail == ["post_vma"]
    mm.validate()


# =====================================================================================
# 4. Exceptions raised by callbacks
# =====================================================================================

@by_impl
@pytest.mark.parametrize("name,at,install", CALLBACK_CASES, ids=CASE_IDS)
def test_callback_exception_stops_the_walk(impl, name, at, install):
    """An exception raised in a callback stops the
    walk at once and the same exception object reaches the caller; no later
    callback runs (post_vma is not called after an exception: pgwalk
    decision); the tables pass validate(); what was done before stays; the mm
    can be walked again normally."""
    mm, a, h = world()
    events = []
    exc = ValueError(f"boom from {name}")

    def action():
        raise exc

    ops = recording_ops(events, bad=name, at=at, action=action, install=install)
    with pytest.raises(ValueError) as ei:
        run_world(impl, mm, ops, install)
    assert ei.value is exc
    assert events[-1] == name and events.count(name) == at
    mm.validate()
    if name == "pte_entry":
        # pages 0 and 1 were handled (dirty bit toggled) before the raise at
        # page 2; page 5 was never reached
        assert not mm.entry(A0, PTE) & _PAGE_DIRTY
        assert not mm.entry(A0 + P, PTE) & _PAGE_DIRTY
        assert mm.entry(A0 + 2 * P, PTE) == 0
        assert mm.entry(A0 + 5 * P, PTE) & _PAGE_DIRTY
    if name == "install_pte":
        # slots 2 and 3 were installed before the raise at slot 4
        assert mm.entry(A0 + 2 * P, PTE) == pgwalk.pfn_pte(0x5002, PRESENT)
        assert mm.entry(A0 + 3 * P, PTE) == pgwalk.pfn_pte(0x5003, PRESENT)
        assert mm.entry(A0 + 4 * P, PTE) == 0
    # the mm is usable afterwards
    again = []
    assert run_world(impl, mm, recording_ops(again)) == 0
    assert again == WORLD_EVENTS


@by_impl
def test_exception_in_post_vma_stops_the_walk(impl):
    """An exception raised in post_vma stops the walk too: it reaches
    the caller unchanged and no callback of a later VMA runs (test_walk,
    pre_vma, hugetlb_entry of VMA H must not be called)."""
    mm, a, h = world()
    events = []
    exc = LookupError("boom from post_vma")

    def action():
        raise exc

    ops = recording_ops(events, bad="post_vma", at=1, action=action)
    with pytest.raises(LookupError) as ei:
        run_world(impl, mm, ops)
    assert ei.value is exc
    assert events == WORLD_EVENTS[:WORLD_EVENTS.index("post_vma") + 1]
    mm.validate()


@by_impl
@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exception_from_callback_propagates(impl, kind):
    """Any exception, BaseException subclasses included, raised in a
    callback reaches the caller as the same object and stops the walk."""
    mm, a, h = world()
    events = []
    exc = kind("stop")

    def action():
        raise exc

    ops = recording_ops(events, bad="pte_entry", at=3, action=action)
    with pytest.raises(kind) as ei:
        run_world(impl, mm, ops)
    assert ei.value is exc
    assert events[-1] == "pte_entry" and events.count("pte_entry") == 3
    mm.validate()


@by_impl
def test_exception_in_pfnmap_pte_hole_propagates(impl):
    """In the VM_PFNMAP path (no test_walk) pte_hole is called
    for the VMA; an exception there propagates (it is not swallowed like a
    positive result) and stops the walk."""
    mm = pgwalk.MM(4)
    mm.add_vma(A0, A0 + 8 * P, VM_PFNMAP)
    mm.add_vma(A0 + 16 * P, A0 + 24 * P)
    events = []
    exc = ValueError("pfnmap hole")

    def hole(addr, next, depth, walk):
        events.append((addr, next, depth))
        raise exc

    ops = pgwalk.MMWalkOps(pte_hole=hole, pre_vma=lambda *a: events.append("pre_vma") or 0)
    with mm.mmap_read_lock():
        with pytest.raises(ValueError) as ei:
            impl.walk_page_range(mm, A0, A0 + 24 * P, ops)
    assert ei.value is exc
    assert events == [(A0, A0 + 8 * P, -1)]
    mm.validate()


@by_impl
def test_exception_in_novma_walk_propagates(impl):
    """The no-VMA walk propagates callback exceptions the same way
    (same object, no later callback, tables consistent)."""
    mm, vma = small_mm()
    seen = []
    exc = ValueError("novma")

    def pte(entry, addr, next, walk):
        seen.append(addr)
        if addr == A0 + P:
            raise exc
        return 0

    with mm.mmap_write_lock():
        with pytest.raises(ValueError) as ei:
            impl.walk_page_range_novma(mm, A0, A0 + 8 * P, pgwalk.MMWalkOps(pte_entry=pte))
    assert ei.value is exc
    assert seen == [A0, A0 + P]
    mm.validate()


# =====================================================================================
# 5. Lock rules
# =====================================================================================

def _call_any(impl, api, mm, vma, ops):
    if api == "walk_page_vma":
        return impl.walk_page_vma(vma, ops)
    return call_range(impl, api, mm, vma, A0, A0 + 8 * P, ops)


ALL_APIS = RANGED + ["walk_page_vma"]


@by_impl
@pytest.mark.parametrize("api", ALL_APIS)
@pytest.mark.parametrize("lock", [PGWALK_RDLOCK, PGWALK_WRLOCK, PGWALK_WRLOCK_VERIFY])
def test_walk_without_mmap_lock_raises(impl, api, lock):
    """A walk without the mmap lock raises
    pgwalk.LockAssertionError (an AssertionError) saying which lock it needs,
    before any callback runs."""
    mm, vma = small_mm()
    calls = []
    with pytest.raises(pgwalk.LockAssertionError) as ei:
        _call_any(impl, api, mm, vma, counting_ops(calls, walk_lock=lock))
    assert isinstance(ei.value, AssertionError)
    msg = str(ei.value)
    assert "mmap" in msg and "lock" in msg
    if api == "walk_page_range_novma" or lock != PGWALK_RDLOCK:
        assert "write" in msg
    assert calls == []


@by_impl
@pytest.mark.parametrize("api", ["walk_page_range", "walk_page_range_mm", "walk_page_vma",
                                 "walk_page_range_vma"])
def test_wrlock_needs_the_mmap_write_lock(impl, api):
    """PGWALK_WRLOCK under only the mmap read lock raises
    LockAssertionError naming the write lock; under the write lock the walk
    runs and write-locks the VMA it enters."""
    mm, vma = small_mm()
    calls = []
    ops = counting_ops(calls, walk_lock=PGWALK_WRLOCK)
    with mm.mmap_read_lock():
        with pytest.raises(pgwalk.LockAssertionError, match="write"):
            _call_any(impl, api, mm, vma, ops)
    assert calls == []
    with mm.mmap_write_lock():
        assert not locks.vma_write_locked(vma)
        assert _call_any(impl, api, mm, vma, ops) == 0
        assert locks.vma_write_locked(vma)
    assert calls


@by_impl
@pytest.mark.parametrize("api", ["walk_page_range", "walk_page_range_mm", "walk_page_vma",
                                 "walk_page_range_vma"])
def test_wrlock_verify_needs_the_vma_write_locked(impl, api):
    """PGWALK_WRLOCK_VERIFY with the mmap write lock
    but the VMA not write-locked raises LockAssertionError; after
    pgwalk.vma_start_write(vma) it passes; the VMA write lock ends with the
    mmap write lock."""
    mm, vma = small_mm()
    calls = []
    ops = counting_ops(calls, walk_lock=PGWALK_WRLOCK_VERIFY)
    with mm.mmap_read_lock():
        with pytest.raises(pgwalk.LockAssertionError, match="write"):
            _call_any(impl, api, mm, vma, ops)
    with mm.mmap_write_lock():
        with pytest.raises(pgwalk.LockAssertionError, match="write"):
            _call_any(impl, api, mm, vma, ops)
        assert calls == []
        pgwalk.vma_start_write(vma)
        assert _call_any(impl, api, mm, vma, ops) == 0
    assert calls
    del calls[:]
    with mm.mmap_write_lock():
        with pytest.raises(pgwalk.LockAssertionError):
            _call_any(impl, api, mm, vma, ops)
    assert calls == []


@by_impl
def test_wrlock_verify_is_checked_per_vma_as_reached(impl):
    """In walk_page_range the per-VMA rule is applied as each
    VMA is reached (also for a VMA that test_walk then skips; never for gaps):
    with only the first VMA write-locked the first is walked, then the
    assertion fires on reaching the second, before its test_walk."""
    mm = pgwalk.MM(4)
    v1 = mm.add_vma(A0, A0 + 4 * P)
    mm.add_vma(A0 + 8 * P, A0 + 12 * P)
    events = []
    ops = pgwalk.MMWalkOps(
        walk_lock=PGWALK_WRLOCK_VERIFY,
        test_walk=lambda s, e, w: events.append(("test_walk", s)) or 1,   # skip every VMA
        pte_hole=lambda a, n, d, w: events.append(("pte_hole", a, n, d)) or 0)
    with mm.mmap_write_lock():
        pgwalk.vma_start_write(v1)
        with pytest.raises(pgwalk.LockAssertionError):
            impl.walk_page_range(mm, A0 - 4 * P, A0 + 12 * P, ops)
    assert events == [("pte_hole", A0 - 4 * P, A0, -1), ("test_walk", A0),
                      ("pte_hole", A0 + 4 * P, A0 + 8 * P, -1)]


@by_impl
def test_novma_walk_lock_rules(impl):
    """walk_page_range_novma on a user mm needs the mmap write
    lock (the read lock is not enough); on the kernel mm (pgwalk.init_mm) the
    read lock suffices; ops.walk_lock is ignored."""
    mm, vma = small_mm()
    seen = []
    for lock in (PGWALK_RDLOCK, PGWALK_WRLOCK, PGWALK_WRLOCK_VERIFY):
        ops = pgwalk.MMWalkOps(walk_lock=lock, pte_entry=lambda e, a, n, w: seen.append(a) or 0,
                               pte_hole=lambda a, n, d, w: seen.append(a) or 0)
        with mm.mmap_read_lock():
            with pytest.raises(pgwalk.LockAssertionError, match="write"):
                impl.walk_page_range_novma(mm, A0, A0 + 8 * P, ops)
        assert seen == []
        with mm.mmap_write_lock():            # no VMA write-locked: walk_lock ignored
            assert impl.walk_page_range_novma(mm, A0, A0 + 8 * P, ops) == 0
        assert seen == [A0 + i * P for i in range(8)]
        del seen[:]
        for levels in (4, 5):
            kmm = pgwalk.init_mm(levels)
            with pytest.raises(pgwalk.LockAssertionError):
                impl.walk_page_range_novma(kmm, A0, A0 + P, ops)
            with kmm.mmap_read_lock():
                assert impl.walk_page_range_novma(kmm, A0, A0 + P, ops) == 0
            with kmm.mmap_write_lock():
                assert impl.walk_page_range_novma(kmm, A0, A0 + P, ops) == 0
            assert len(seen) == 2
            del seen[:]


def _lock_probe(mm, lock):
    """True if the current thread holds what a ``lock`` walk needs on mm (a
    public probe: a tiny walk with empty ops)."""
    try:
        pgwalk.walk_page_range(mm, 0, P, pgwalk.MMWalkOps(walk_lock=lock))
        return True
    except pgwalk.LockAssertionError:
        return False


@pytest.mark.parametrize("lock", [PGWALK_RDLOCK, PGWALK_WRLOCK, PGWALK_WRLOCK_VERIFY])
def test_mm_walk_takes_the_lock_itself(lock):
    """mm.walk(start, end, ops) takes the lock ops.walk_lock asks
    for (the mmap read lock, the write lock, or the write lock with every VMA
    write-locked), holds it during the callbacks and releases it afterwards,
    also when a callback raises."""
    mm = pgwalk.MM(4)
    v1 = mm.add_vma(A0, A0 + 4 * P)
    v2 = mm.add_vma(A0 + 8 * P, A0 + 12 * P)
    state = []

    def pre_vma(start, end, walk):
        state.append((start, _lock_probe(mm, PGWALK_RDLOCK), _lock_probe(mm, PGWALK_WRLOCK),
                      locks.vma_write_locked(walk.vma)))
        return 0

    ops = pgwalk.MMWalkOps(pre_vma=pre_vma, walk_lock=lock)
    assert mm.walk(A0, A0 + 12 * P, ops) == 0
    write = lock != PGWALK_RDLOCK
    assert state == [(A0, True, write, write), (A0 + 8 * P, True, write, write)]
    # released: a walk without a lock asserts again, the write lock is free
    with pytest.raises(pgwalk.LockAssertionError):
        pgwalk.walk_page_range(mm, A0, A0 + P, ops)
    with mm.mmap_write_lock():
        assert not locks.vma_write_locked(v1) and not locks.vma_write_locked(v2)

    exc = ValueError("in mm.walk")

    def boom(start, end, walk):
        raise exc

    with pytest.raises(ValueError) as ei:
        mm.walk(A0, A0 + 12 * P, pgwalk.MMWalkOps(pre_vma=boom, walk_lock=lock))
    assert ei.value is exc
    assert not _lock_probe(mm, PGWALK_RDLOCK)
    with mm.mmap_write_lock():
        pass


# =====================================================================================
# 6. Ctrl-C
# =====================================================================================

DENSE_PMDS = 4096                         # 4096 PTE tables: 2M PTE slots
DENSE_BASE = 1 << 33


def dense_mm():
    """A 4-level mm whose one VMA of 8 GiB has a PTE table in every 2 MiB slot."""
    mm = pgwalk.MM(4)
    for i in range(DENSE_PMDS):
        mm.alloc_table(DENSE_BASE + i * PMD_SIZE, PMD)
    vma = mm.add_vma(DENSE_BASE, DENSE_BASE + DENSE_PMDS * PMD_SIZE)
    return mm, vma


@by_impl
@pytest.mark.parametrize("how", ["os.kill", "raise_signal"])
def test_sigint_stops_a_long_walk(impl, how):
    """Ctrl-C (SIGINT) during a long walk stops it promptly with
    KeyboardInterrupt: at most one more callback runs after the signal, the
    tables pass validate(), the lock is released by its with-block."""
    mm, vma = dense_mm()
    n_signal = 1000
    calls = 0

    def pte_entry(entry, addr, next, walk):
        nonlocal calls
        calls += 1
        if calls == n_signal:
            if how == "os.kill":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                signal.raise_signal(signal.SIGINT)
        return 0

    ops = pgwalk.MMWalkOps(pte_entry=pte_entry)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with mm.mmap_read_lock():
                impl.walk_page_range(mm, DENSE_BASE, DENSE_BASE + DENSE_PMDS * PMD_SIZE, ops)
    finally:
        signal.signal(signal.SIGINT, old)
    assert n_signal <= calls <= n_signal + 1
    mm.validate()
    assert not _lock_probe(mm, PGWALK_RDLOCK)


def _with_alarm(seconds, handler, fn):
    """Run fn() with a one-shot SIGALRM after ``seconds`` handled by
    ``handler``; the timer and the old handler are restored afterwards."""
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@by_impl
def test_interrupt_reaches_a_walk_running_no_python_code(impl):
    """(Ctrl-C stops a long walk): with callbacks that are C
    builtins (no Python bytecode runs, so only the walker itself can notice a
    signal) a signal whose handler raises KeyboardInterrupt stops the walk
    before it ends, with no PTE table mapped after the handler ran."""
    mm, vma = dense_mm()
    # min(0, entry, addr, next, walk, key=bool) == 0, computed entirely in C
    cheap = functools.partial(min, 0, key=bool)
    ops = pgwalk.MMWalkOps(pte_entry=cheap)
    with mm.mmap_read_lock():            # the callable really is a valid pte_entry
        assert impl.walk_page_range(mm, DENSE_BASE, DENSE_BASE + 4 * PMD_SIZE, ops) == 0
    base = mm.stats["pte_map_ok"]
    at_signal = []

    def on_alarm(signum, frame):
        at_signal.append(mm.stats["pte_map_ok"] - base)
        raise KeyboardInterrupt

    def walk():
        with mm.mmap_read_lock():
            return impl.walk_page_range(mm, DENSE_BASE, DENSE_BASE + DENSE_PMDS * PMD_SIZE, ops)

    with pytest.raises(KeyboardInterrupt):
        _with_alarm(0.02, on_alarm, walk)
    assert len(at_signal) == 1
    assert at_signal[0] < DENSE_PMDS                      # handled mid-walk
    assert mm.stats["pte_map_ok"] - base == at_signal[0]  # nothing after it
    mm.validate()


@by_impl
def test_action_again_forever_is_interruptible(impl):
    """A pmd_entry that always asks for ACTION_AGAIN loops for
    ever (as in the kernel); a timer signal raising KeyboardInterrupt must
    still stop it (guarded: the test stops the loop itself by a non-zero
    return if the interrupt is not honoured, and then fails)."""
    mm, vma = small_mm()
    fired = []
    after = 0

    def on_alarm(signum, frame):
        fired.append(True)
        raise KeyboardInterrupt

    def pmd_entry(entry, addr, next, walk):
        nonlocal after
        walk.action = ACTION_AGAIN
        if fired:
            after += 1
            if after > 1000:
                return 99          # guard against a hang
        return 0

    ops = pgwalk.MMWalkOps(pmd_entry=pmd_entry, pte_entry=lambda *a: 0)

    def walk():
        with mm.mmap_read_lock():
            return impl.walk_page_range(mm, A0, A0 + 8 * P, ops)

    with pytest.raises(KeyboardInterrupt):
        _with_alarm(0.2, on_alarm, walk)
    assert fired == [True]
    assert after <= 1
    mm.validate()


# =====================================================================================
# 7. Entry references and walk.action
# =====================================================================================

@by_impl
def test_entry_reads_during_callback(impl):
    """int(entry) and entry.val read the live slot during the
    callback, at every level."""
    mm, vma = small_mm()
    got = []

    def rec(level):
        def f(entry, addr, next, walk):
            got.append((level, addr, int(entry), entry.val, entry == int(entry)))
            return 0
        return f

    ops = pgwalk.MMWalkOps(pgd_entry=rec(PGD), p4d_entry=rec(P4D), pud_entry=rec(PUD),
                           pmd_entry=rec(PMD), pte_entry=rec(PTE))
    with mm.mmap_read_lock():
        assert impl.walk_page_range(mm, A0, A0 + 8 * P, ops) == 0
    assert len(got) == 4 + 8
    for level, addr, v, val, eq in got:
        assert v == val == mm.entry(addr, level) and eq
    assert [g[2] for g in got if g[0] == PTE] == [mm.entry(A0 + i * P, PTE) for i in range(8)]


@by_impl
def test_kept_entry_reference_expires(impl):
    """An entry reference is valid only during its callback: a kept
    one raises RuntimeError on int(), .val and .set() - in a later callback
    and after the walk - and writes nothing; the same holds for ptep."""
    mm, vma = small_mm()
    kept = []
    later = []

    def pte(entry, addr, next, walk):
        if kept:
            for use in (lambda r: int(r), lambda r: r.val, lambda r: r.set(0)):
                try:
                    use(kept[0])
                    later.append("no error")
                except RuntimeError:
                    later.append("RuntimeError")
        kept.append(entry)
        return 0

    pmd_kept = []
    ops = pgwalk.MMWalkOps(pte_entry=pte, pmd_entry=lambda e, a, n, w: pmd_kept.append(e) or 0)
    before = [mm.entry(A0 + i * P, PTE) for i in range(8)]
    with mm.mmap_read_lock():
        assert impl.walk_page_range(mm, A0, A0 + 8 * P, ops) == 0
    assert len(kept) == 8
    assert set(later) == {"RuntimeError"} and len(later) == 21
    for ref in kept + pmd_kept:
        with pytest.raises(RuntimeError):
            int(ref)
        with pytest.raises(RuntimeError):
            ref.val
        with pytest.raises(RuntimeError):
            ref.set(0)
    assert [mm.entry(A0 + i * P, PTE) for i in range(8)] == before

    mm2 = pgwalk.MM(4)
    mm2.add_vma(A0, A0 + 2 * P)
    kept_ptep = []

    def install(addr, next, ptep, walk):
        ptep.set(pgwalk.pfn_pte(0x42, PRESENT))
        kept_ptep.append(ptep)
        return 0

    with mm2.mmap_read_lock():
        assert impl.walk_page_range_mm(mm2, A0, A0 + 2 * P, pgwalk.MMWalkOps(install_pte=install)) == 0
    for ptep in kept_ptep:
        with pytest.raises(RuntimeError):
            ptep.set(0)
        with pytest.raises(RuntimeError):
            int(ptep)
    assert mm2.entry(A0, PTE) == mm2.entry(A0 + P, PTE) == pgwalk.pfn_pte(0x42, PRESENT)


@by_impl
@pytest.mark.parametrize("level", [PGD, P4D, PUD, PMD])
def test_entry_set_may_not_unlink_a_table(impl, level):
    """Decision 8.3: entry.set() on an upper-level slot that links a table
    raises ValueError and leaves the table intact (the walk goes on below it
    when the callback handles the error); writing the same value is allowed."""
    mm, vma = small_mm()
    before_pte = [mm.entry(A0 + i * P, PTE) for i in range(8)]
    old = mm.entry(A0, level)
    tables = mm.nr_tables
    results = []
    ptes = []
    name = {PGD: "pgd_entry", P4D: "p4d_entry", PUD: "pud_entry", PMD: "pmd_entry"}[level]

    def upper(entry, addr, next, walk):
        v = int(entry)
        for new in (0, v ^ 0x1000, 0xE3):
            try:
                entry.set(new)
                results.append("accepted")
            except ValueError as e:
                results.append("ValueError" if "table" in str(e) else str(e))
        entry.set(v)                      # same value: fine
        results.append(int(entry) == v)
        return 0

    ops = pgwalk.MMWalkOps(**{name: upper}, pte_entry=lambda e, a, n, w: ptes.append(a) or 0)
    with mm.mmap_read_lock():
        assert impl.walk_page_range(mm, A0, A0 + 8 * P, ops) == 0
    assert results == ["ValueError"] * 3 + [True]
    assert mm.entry(A0, level) == old
    assert mm.nr_tables == tables
    assert [mm.entry(A0 + i * P, PTE) for i in range(8)] == before_pte
    assert ptes == [A0 + i * P for i in range(8)]
    mm.validate()

    # uncaught, the ValueError stops the walk like any callback exception
    def unlink(entry, addr, next, walk):
        entry.set(0)
        return 0

    ptes.clear()
    with mm.mmap_read_lock():
        with pytest.raises(ValueError):
            impl.walk_page_range(mm, A0, A0 + 8 * P, pgwalk.MMWalkOps(
                **{name: unlink}, pte_entry=lambda e, a, n, w: ptes.append(a) or 0))
    assert ptes == []
    assert mm.entry(A0, level) == old and mm.nr_tables == tables
    mm.validate()


@by_impl
def test_entry_set_on_pte_writes_the_live_slot(impl):
    """entry.set(value) on a PTE writes the live slot, visible at
    once through the reference and afterwards in mm.entry(addr, PTE); bad
    values are refused (TypeError / ValueError) without writing."""
    mm, vma = small_mm()
    new = pgwalk.pfn_pte(0x1234, PRESENT)
    errors = []

    def pte(entry, addr, next, walk):
        if addr == A0 + 2 * P:                       # a none slot
            for bad, kind in (("x", TypeError), (1.0, TypeError), (-1, ValueError),
                              (1 << 64, ValueError)):
                try:
                    entry.set(bad)
                    errors.append("accepted")
                except kind:
                    errors.append(kind.__name__)
            assert int(entry) == 0
            entry.set(new)
            errors.append(int(entry) == new)
        elif addr == A0:                             # a present slot
            entry.set(0)
        return 0

    with mm.mmap_read_lock():
        assert impl.walk_page_range(mm, A0, A0 + 8 * P, pgwalk.MMWalkOps(pte_entry=pte)) == 0
    assert errors == ["TypeError", "TypeError", "ValueError", "ValueError", True]
    assert mm.entry(A0 + 2 * P, PTE) == new
    assert mm.entry(A0, PTE) == 0
    mm.validate()


@by_impl
@pytest.mark.parametrize("bad", [9, 3, -1, "x", None, 1.5])
def test_walk_action_rejects_unknown_values(impl, bad):
    """walk.action accepts only ACTION_SUBTREE,
    ACTION_CONTINUE and ACTION_AGAIN; anything else (e.g. 9) raises
    ValueError and leaves the action unchanged."""
    mm, vma = small_mm()
    results = []

    def pmd(entry, addr, next, walk):
        walk.action = ACTION_CONTINUE
        try:
            walk.action = bad
            results.append("accepted")
        except ValueError:
            results.append("ValueError")
        results.append(walk.action)
        return 0

    ptes = []
    ops = pgwalk.MMWalkOps(pmd_entry=pmd, pte_entry=lambda e, a, n, w: ptes.append(a) or 0)
    with mm.mmap_read_lock():
        assert impl.walk_page_range(mm, A0, A0 + 8 * P, ops) == 0
    assert results == ["ValueError", ACTION_CONTINUE]
    assert ptes == []                # the CONTINUE set before still took effect
