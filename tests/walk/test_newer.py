"""Today's kernel beside 6.13: each loop change pinned by a scenario whose
trace differs between ``kernel="6.13"`` and ``kernel="today"``
(tests/data/newer, golden format plus ``result_today``), replayed on both
walkers; then the new entry points, ``check_ops_safe`` and the VMA lock."""

import json
from pathlib import Path

import pytest

import pgwalk
from pgwalk import reference
from pgwalk.constants import (
    ACTION_AGAIN, ACTION_CONTINUE, ACTION_SUBTREE, EINVAL, PGWALK_RDLOCK, PGWALK_VMA_RDLOCK_VERIFY,
)
from pgwalk.internal import walk_page_range_debug, walk_page_range_mm_unsafe, walk_page_range_vma_unsafe
from helpers.support import IMPLS, expected, replay

NEWER = sorted((Path(__file__).resolve().parent.parent / "data" / "newer").glob("*.json"))
G, M = 1 << 30, 1 << 20


def _check(path, impl, kernel, key):
    scn = json.loads(Path(path).read_text())
    got, want = replay(scn, impl, kernel), expected(scn, key)
    assert got["trace"] == want["trace"], (kernel, scn["description"])
    assert got["ret"] == want["ret"]
    assert got["final_entries"] == want["final_entries"]
    assert got["counters"] == want["counters"]
    return scn


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
@pytest.mark.parametrize("path", NEWER, ids=lambda p: p.stem)
def test_newer_scenario(path, impl):
    """Both traces: 6.13's (the default) and today's differ.  These are the
    PUD re-check's scenarios, so 7.0 (which has it) gives today's trace."""
    scn = _check(path, impl, None, "result")
    _check(path, impl, "6.13", "result")
    _check(path, impl, "today", "result_today")
    _check(path, impl, "7.0", "result_today")
    assert scn["result"]["trace"] != scn["result_today"]["trace"]


def test_newer_scenarios_name_their_kernel_function():
    assert {json.loads(p.read_text())["kernel_function"] for p in NEWER} == {
        "walk_pud_range", "walk_pmd_range"}


def _action_seen(impl, kernel, level):
    """pte_hole records walk.action: after a CONTINUE from the entry before."""
    mm = pgwalk.MM(4)
    vma = mm.add_vma(G, 2 * G if level == "pmd" else 4 * G)
    if level == "pmd":
        mm.alloc_table(G, pgwalk.PMD)             # PMD 0 links an empty PTE table
        start, end = G, G + 4 * M
    else:
        mm.alloc_table(G, pgwalk.PUD)             # PUD 1 GiB links an empty PMD table
        start, end = G, 3 * G
    seen = []

    def entry(e, addr, next, walk):
        walk.action = ACTION_CONTINUE
        return 0

    def hole(addr, next, depth, walk):
        seen.append((addr, depth, walk.action))
        return 0

    ops = pgwalk.MMWalkOps(**{f"{level}_entry": entry}, pte_hole=hole, pte_entry=lambda *a: 0)
    with mm.mmap_read_lock():
        assert impl.walk_page_range(mm, start, end, ops, kernel=kernel) == 0
    assert vma is not None
    return seen


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
@pytest.mark.parametrize("level", ["pmd", "pud"])
def test_action_reset_at_top_of_iteration(impl, level):
    """walk_pmd_range / walk_pud_range: today resets walk->action at the top of
    every iteration, so a hole after a CONTINUE sees ACTION_SUBTREE; 6.13
    resets it only before pmd_entry/pud_entry, so the hole sees the stale
    CONTINUE."""
    old = _action_seen(impl, "6.13", level)
    new = _action_seen(impl, "today", level)
    assert _action_seen(impl, "7.0", level) == old     # the reset is 7.3's
    assert [a for *_, a in old] == [ACTION_CONTINUE] * len(old) and old
    assert [a for *_, a in new] == [ACTION_SUBTREE] * len(new)
    assert [x[:2] for x in old] == [x[:2] for x in new]


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
def test_stale_again_from_a_retried_pmd_escapes_to_walk_pud_range_in_7_0(impl):
    """walk_pmd_range / walk_pud_range, the case the action reset (7.3)
    repairs: pmd_entry clears the last PMD of the range and asks for
    ACTION_AGAIN; the retry finds a hole and leaves the loop with the action
    still AGAIN.  7.0's walk_pud_range honours it and walks the PUD again
    (pud_entry and the hole a second time); 6.13 ignores it, and today's loop
    has reset it before the hole."""
    def run(kernel):
        mm = pgwalk.MM(4)
        mm.add_vma(G, 2 * G)
        mm.map(G, pgwalk.PMD, pfn=512)
        seen = []

        def pud(e, addr, next, walk):
            seen.append(("pud", addr))
            return 0

        def pmd(e, addr, next, walk):
            seen.append(("pmd", addr))
            if seen.count(("pmd", addr)) == 1:
                e.set(0)
                walk.action = ACTION_AGAIN
            return 0

        def hole(addr, next, depth, walk):
            seen.append(("hole", addr, next, depth))
            return 0

        ops = pgwalk.MMWalkOps(pud_entry=pud, pmd_entry=pmd, pte_hole=hole)
        with mm.mmap_read_lock():
            assert impl.walk_page_range(mm, G, G + 2 * M, ops, kernel=kernel) == 0
        return seen

    once = [("pud", G), ("pmd", G), ("hole", G, G + 2 * M, 3)]
    assert run("6.13") == once
    assert run("today") == once
    assert run("7.0") == once + [("pud", G), ("hole", G, G + 2 * M, 3)]


def test_default_kernel_switch():
    assert pgwalk.get_default_kernel() == "6.13"
    path = [p for p in NEWER if "pud-again" in p.stem][0]
    old = pgwalk.set_default_kernel("today")
    try:
        _check(path, IMPLS[0], None, "result_today")
        _check(path, IMPLS[1], None, "result_today")
    finally:
        pgwalk.set_default_kernel(old)
    with pytest.raises(ValueError, match="kernel must be"):
        pgwalk.set_default_kernel("6.14")
    with pytest.raises(ValueError, match="kernel must be"):
        pgwalk.walk_page_range(pgwalk.MM(4), 0, 4096, pgwalk.MMWalkOps(), kernel="7")


# --- entry points ------------------------------------------------------------

def _install_ops(lock=PGWALK_RDLOCK):
    def install(addr, next, ptep, walk):
        ptep.set(pgwalk.pfn_pte(addr >> 12, 0x3))
        return 0
    return pgwalk.MMWalkOps(install_pte=install, pte_entry=lambda *a: 0, walk_lock=lock)


@pytest.mark.parametrize("mod", [pgwalk.walker, reference], ids=["cython", "reference"])
def test_check_ops_safe_rule(mod):
    """install_pte makes ops unsafe: every public entry point refuses them
    (-EINVAL); only the *_unsafe ones (and 6.13's walk_page_range_mm) take them."""
    assert pgwalk.check_ops_safe(pgwalk.MMWalkOps())
    assert not pgwalk.check_ops_safe(_install_ops())
    mm = pgwalk.MM(4)
    vma = mm.add_vma(G, G + 4 * M)
    kmm = pgwalk.init_mm(4)
    ops = _install_ops()
    with mm.mmap_write_lock(), kmm.mmap_write_lock():
        assert mod.walk_page_range(mm, G, G + M, ops) == -EINVAL
        assert mod.walk_page_vma(vma, ops) == -EINVAL
        assert mod.walk_page_range_vma(vma, G, G + M, ops) == -EINVAL
        assert mod.walk_page_range_debug(mm, G, G + M, ops, init_mm=kmm) == -EINVAL
        k = 0xFFFF888000000000
        assert mod.walk_kernel_page_table_range(k, k + M, ops, mm=kmm) == -EINVAL
        assert mod.walk_kernel_page_table_range_lockless(k, k + M, ops, mm=kmm) == -EINVAL
        assert mm.stats["set_pte_at"] == 0
        unsafe_vma = (walk_page_range_vma_unsafe if mod is pgwalk.walker
                      else reference.walk_page_range_vma_unsafe)
        unsafe_mm = walk_page_range_mm_unsafe if mod is pgwalk.walker else reference.walk_page_range_mm_unsafe
        assert unsafe_vma(vma, G, G + 2 * 4096, ops) == 0
        assert unsafe_mm(mm, G + M, G + M + 4096, ops) == 0
    assert mm.stats["set_pte_at"] == 3


@pytest.mark.parametrize("mod", [pgwalk.walker, reference], ids=["cython", "reference"])
def test_kernel_and_debug_walks(mod):
    """walk_kernel_page_table_range: the kernel mm's mmap lock (read is
    enough), the _lockless variant none; walk_page_range_debug: the write
    lock of mm and of init_mm.  Both walk like walk_page_range_novma."""
    kmm = pgwalk.init_mm(4)
    k = 0xFFFF888000000000
    kmm.map(k, pfn=0x1234)
    seen = []
    ops = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: seen.append(a) or 0)
    with pytest.raises(pgwalk.LockAssertionError, match="mmap_read_lock"):
        mod.walk_kernel_page_table_range(k, k + 4096, ops, mm=kmm)
    assert mod.walk_kernel_page_table_range_lockless(k, k + 4096, ops, mm=kmm) == 0
    with kmm.mmap_read_lock():
        assert mod.walk_kernel_page_table_range(k, k + 4096, ops, pgd=kmm.pgd) == 0
        assert mod.walk_kernel_page_table_range(k, k, ops, mm=kmm) == -EINVAL
        with pytest.raises(pgwalk.LockAssertionError, match="write lock of mm"):
            mod.walk_page_range_debug(kmm, k, k + 4096, ops)
    assert seen == [k, k]
    with pytest.raises(ValueError, match="kernel mm"):
        mod.walk_kernel_page_table_range_lockless(0, 4096, ops, mm=pgwalk.MM(4))
    with pytest.raises(TypeError, match="init_mm"):
        mod.walk_kernel_page_table_range_lockless(k, k + 4096, ops)
    mm = pgwalk.MM(4)
    mm.add_vma(G, G + M)
    mm.map(G, pfn=0x99)
    with mm.mmap_write_lock():
        with pytest.raises(pgwalk.LockAssertionError, match="write lock of init_mm"):
            mod.walk_page_range_debug(mm, G, G + 4096, ops, init_mm=kmm)
        with kmm.mmap_write_lock():
            assert mod.walk_page_range_debug(mm, G, G + 4096, ops, init_mm=kmm) == 0
            assert mod.walk_page_range_debug(mm, G, G, ops, init_mm=kmm) == -EINVAL
    assert seen == [k, k, G]
    assert mod.walk_page_range_debug(None, G, G + 4096, ops) == -EINVAL


# --- the VMA read lock -------------------------------------------------------

@pytest.mark.parametrize("mod", [pgwalk.walker, reference], ids=["cython", "reference"])
def test_vma_rdlock_verify(mod):
    """PGWALK_VMA_RDLOCK_VERIFY: no mmap lock asserted, each VMA must be
    read-locked (or write-locked)."""
    mm = pgwalk.MM(4)
    vma = mm.add_vma(G, G + M)
    mm.map(G, pfn=0x42)
    seen = []
    ops = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: seen.append(a) or 0,
                           walk_lock=PGWALK_VMA_RDLOCK_VERIFY)
    with pytest.raises(pgwalk.LockAssertionError, match="read-locked"):
        mod.walk_page_vma(vma, ops)
    with pgwalk.vma_read_locked(mm, G) as v:
        assert v is vma
        assert mod.walk_page_range_vma(vma, G, G + 4096, ops) == 0
        assert mod.walk_page_range(mm, G, G + 4096, ops) == 0
    with mm.mmap_write_lock():
        pgwalk.vma_start_write(vma)
        assert pgwalk.lock_vma_under_rcu(mm, G) is None     # write-locked: fall back
        assert mod.walk_page_vma(vma, ops) == 0
    assert seen == [G] * 2 + list(range(G, G + M, 4096))
    assert pgwalk.lock_vma_under_rcu(mm, G + M) is None     # no VMA there
    v = pgwalk.lock_vma_under_rcu(mm, G)
    with mm.mmap_write_lock():
        with pytest.raises(RuntimeError, match="read-locked"):
            pgwalk.vma_start_write(v)
    pgwalk.vma_end_read(v)
    with pytest.raises(RuntimeError, match="no read lock"):
        pgwalk.vma_end_read(v)


def test_vma_start_write_waits_for_readers():
    import threading
    mm = pgwalk.MM(4)
    vma = mm.add_vma(G, G + M)
    v = pgwalk.lock_vma_under_rcu(mm, G)
    done = threading.Event()

    def writer():
        with mm.mmap_write_lock():
            pgwalk.vma_start_write(vma)
            done.set()
    t = threading.Thread(target=writer)
    t.start()
    assert not done.wait(0.2)
    pgwalk.vma_end_read(v)
    t.join(5)
    assert done.is_set()


# --- guard regions under the VMA read lock -------------------------------------

def test_guard_regions_under_vma_lock():
    """From 6.19 (kernel="7.0" and "today"): MADV_GUARD_INSTALL/REMOVE take
    the VMA read lock when the range
    is in one VMA (and an anonymous VMA has its anon_vma), else fall back to
    the mmap read lock; the markers are the same as under 6.13."""
    from pgwalk.process import guard
    calls = []
    real = guard.walk_page_range_vma_unsafe

    def spy(vma, *a, **kw):
        calls.append(vma)
        pgwalk.vma_assert_locked(vma)
        return real(vma, *a, **kw)
    results = {}
    for kernel in pgwalk.KERNELS:
        mm = pgwalk.MM(4)
        a = mm.mmap(None, 8 * 4096, pgwalk.PROT_READ | pgwalk.PROT_WRITE,
                    pgwalk.MAP_PRIVATE | pgwalk.MAP_ANONYMOUS)
        guard.walk_page_range_vma_unsafe = spy
        try:
            # no anon_vma yet: the VMA lock does not suffice -> mmap lock
            mm.madvise(a, 2 * 4096, pgwalk.MADV_GUARD_INSTALL, kernel=kernel)
            n_first = len(calls)
            mm.madvise(a + 4 * 4096, 4096, pgwalk.MADV_GUARD_INSTALL, kernel=kernel)
            mm.madvise(a, 4096, pgwalk.MADV_GUARD_REMOVE, kernel=kernel)
        finally:
            guard.walk_page_range_vma_unsafe = real
        assert n_first == 0
        assert len(calls) == (0 if kernel == "6.13" else 1)
        calls.clear()
        results[kernel] = [pgwalk.is_guard_marker(int(mm.entry(a + i * 4096, pgwalk.PTE) or 0))
                           for i in range(8)]
        mm.validate()
    assert results["6.13"] == results["7.0"] == results["today"]
