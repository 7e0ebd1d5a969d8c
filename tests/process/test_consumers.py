"""pagemap, mincore, smaps and clear_refs on both walkers: the callback
walker (``walk_page_*`` with the C ops of ``_mmops``) and the batched
``pt_range_walk`` (``walker="pt_range"``) give identical results on random
process-model states (the state recipes of tests/walk/test_pt_range_walk.py),
and clear_refs against the live kernel."""

import importlib.util
import pathlib

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import pgwalk
from pgwalk import constants as C, entries as E
from pgwalk.constants import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PMD_SIZE

from helpers import live_kernel as LK

_spec = importlib.util.spec_from_file_location(
    "_pt_states", pathlib.Path(__file__).parents[1] / "walk" / "test_pt_range_walk.py")
_states = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_states)
recipes, build = _states.recipes, _states.build

RW = C.PROT_READ | C.PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
WALKERS = ("callbacks", "pt_range")


def entries(mm):
    """Every PTE and PMD leaf of every VMA, raw (accessed and dirty bits included)."""
    out = []

    def pmd(e, a, n, w):
        if pgwalk.pmd_leaf(int(e)) or (int(e) and not int(e) & 1):
            out.append((a, "pmd", int(e)))
            w.action = pgwalk.ACTION_CONTINUE       # read it, do not split it
        return 0

    ops = pgwalk.MMWalkOps(pmd_entry=pmd, pte_entry=lambda e, a, n, w: out.append((a, int(e))) or 0)
    with mm.mmap_read_lock():
        for v in mm.vmas:
            pgwalk.walk_page_vma(v, ops)
    return out


def views(mm):
    """What the consumers report of ``mm`` on each walker; the consumers
    leave the tables as they were (a PMD migration entry is taken whole on
    both walkers, as the kernel's pmd_trans_huge_lock users take it)."""
    res = {}
    tables = entries(mm)
    for w in ("callbacks", "pt_range"):
        lo = min((v.vm_start for v in mm.vmas), default=0)
        hi = max((v.vm_end for v in mm.vmas), default=PAGE_SIZE)
        mc = []
        for v in mm.vmas:
            mc.append(mm.mincore(v.vm_start, v.vm_end - v.vm_start, walker=w).tolist())
        res[w] = (mm.pagemap(lo - PMD_SIZE, hi + PMD_SIZE, walker=w).tolist(), mc,
                  mm.smaps(walker=w))
        assert entries(mm) == tables, w
    return res


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(recipe=recipes(), kind=st.sampled_from([1, 1, 2, 3, 4, 5]), sub=st.booleans())
def test_both_walkers_give_identical_results(recipe, kind, sub):
    """Two builds of one recipe: pagemap, mincore and smaps agree between
    the walkers (and with a subrange for pagemap); then clear_refs(kind) on
    each build, one per walker, leaves identical tables and smaps."""
    check_both_walkers(recipe, kind, sub)


PMDMIG_SLOT = _states.BASE + 4 * _states.SLOT       # a slot recipes() never uses


@st.composite
def recipes_with_pmd_migration(draw):
    """A random recipe plus a THP region in a slot of its own, some of
    whose THPs become PMD migration entries (the random recipes alone
    rarely make one: the "pmdmig" step needs a THP under it)."""
    levels, ops, fork = draw(recipes())
    npages = draw(st.integers(1024, 1536))
    ops = list(ops) + [("region", "thp", PMDMIG_SLOT, npages), ("pmdmig", PMDMIG_SLOT, 0, 1, 0)]
    for _ in range(draw(st.integers(1, 3))):           # after the first PMD, which stays migrating
        step = draw(st.sampled_from(["pmdmig", "pmdmig", "touch", "guard", "clearad"]))
        off = draw(st.integers(512, npages - 1)) * PAGE_SIZE
        ops.append((step, PMDMIG_SLOT, off, draw(st.integers(1, 520)), draw(st.integers(0, 1 << 20))))
    return levels, ops, fork


def has_pmd_migration_entry(mm):
    """Some VMA of ``mm`` holds a PMD migration entry."""
    found = []

    def pmd(e, a, n, w):
        found.append(E.is_pmd_migration_entry(int(e)))
        w.action = pgwalk.ACTION_CONTINUE
        return 0
    with mm.mmap_read_lock():
        for v in mm.vmas:
            pgwalk.walk_page_vma(v, pgwalk.MMWalkOps(pmd_entry=pmd))
    return any(found)


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(recipe=recipes_with_pmd_migration(), kind=st.sampled_from([1, 2, 3, 4]), sub=st.booleans())
def test_both_walkers_give_identical_results_with_pmd_migration_entries(recipe, kind, sub):
    """The differential above on states that hold PMD migration entries
    (checked): both walkers take them whole and agree."""
    mm, parent = build(recipe)
    assert has_pmd_migration_entry(parent if parent is not None else mm)
    check_both_walkers(recipe, kind, sub)


def check_both_walkers(recipe, kind, sub):
    mm_a, parent_a = build(recipe)
    mm_b, parent_b = build(recipe)
    for a in (mm_a, parent_a, mm_b, parent_b):
        if a is None:
            continue
        v = views(a)
        assert v["callbacks"] == v["pt_range"]
    if sub and mm_a.vmas:
        vma = mm_a.vmas[len(mm_a.vmas) // 2]
        s, e = vma.vm_start + PAGE_SIZE * 3, vma.vm_end + PAGE_SIZE * 5
        assert (mm_a.pagemap(s, e).tolist() == mm_a.pagemap(s, e, walker="pt_range").tolist())
    for a, b in ((mm_a, mm_b), (parent_a, parent_b)):
        if a is None:
            continue
        assert entries(a) == entries(b)
        a.clear_refs(kind)
        b.clear_refs(kind, walker="pt_range")
        assert entries(a) == entries(b)
        assert a.smaps() == b.smaps(walker="pt_range")
        assert [v.vm_flags for v in a.vmas] == [v.vm_flags for v in b.vmas]


def test_clear_refs_kinds():
    """1 clears the accessed bits of anonymous and shmem pages, 2 of
    anonymous only, 3 of shmem only; 5 changes nothing; others are EINVAL."""
    for w in WALKERS:
        mm = pgwalk.MM()
        a = mm.mmap(None, 8 * PAGE_SIZE, RW, ANON)
        s = mm.mmap(None, 8 * PAGE_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS)
        for x in (a, s):
            for i in range(8):
                mm.touch(x + i * PAGE_SIZE, write=True)

        def referenced():
            return {d["start"]: d["Referenced"] for d in mm.smaps(walker=w)}

        assert referenced() == {a: 32, s: 32}
        mm.clear_refs(5, walker=w)
        assert referenced() == {a: 32, s: 32}
        mm.clear_refs(3, walker=w)
        assert referenced() == {a: 32, s: 0}
        mm.touch(s)
        mm.clear_refs(2, walker=w)
        assert referenced() == {a: 0, s: 4}
        mm.touch(a + PAGE_SIZE)
        assert referenced() == {a: 4, s: 4}
        mm.clear_refs(1, walker=w)
        assert referenced() == {a: 0, s: 0}
        for bad in (0, 6, -1, True, "1"):
            with pytest.raises(OSError):
                mm.clear_refs(bad, walker=w)
        mm.validate()
    with pytest.raises(ValueError):
        mm.pagemap(a, a + PAGE_SIZE, walker="nope")


def test_this_kernel_has_no_soft_dirty_tracking_as_the_model_assumes():
    """The model keeps no soft-dirty state (pagemap bit 55 never set,
    clear_refs(4) a no-op), which is right for a kernel built without
    CONFIG_MEM_SOFT_DIRTY: there no VMA carries the ``sd`` VmFlag and a page
    just written reads bit 55 clear.  Checked on the running kernel (skipped,
    with the reason, on one that tracks soft-dirty)."""
    import mmap as _mmap
    import ctypes
    buf = _mmap.mmap(-1, PAGE_SIZE)
    buf[0] = 1
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(addr // PAGE_SIZE * 8)
            word = int.from_bytes(f.read(8), "little")
        with open("/proc/self/smaps") as f:
            flags = [ln.split()[1:] for ln in f if ln.startswith("VmFlags:")]
    except OSError as e:
        pytest.skip(f"/proc/self/pagemap or smaps unreadable here: {e}")
    if any("sd" in fl for fl in flags):
        pytest.skip("this kernel tracks soft-dirty (CONFIG_MEM_SOFT_DIRTY); the model does not")
    assert word >> 63 & 1 and not word & C.PM_SOFT_DIRTY
    mm = pgwalk.MM()
    a = mm.mmap(None, PAGE_SIZE, RW, ANON)
    mm.touch(a, write=True)
    assert not int(mm.pagemap(a, a + PAGE_SIZE)[0]) & C.PM_SOFT_DIRTY


def test_clear_refs_soft_dirty_changes_nothing():
    """4: the modelled kernel has no CONFIG_MEM_SOFT_DIRTY (checked on this
    machine's kernel above), so no entry and no VMA changes (accessed and
    write bits kept)."""
    for w in WALKERS:
        mm = pgwalk.MM()
        a = mm.mmap(None, 4 * PMD_SIZE, RW, ANON)
        mm.madvise(a, 4 * PMD_SIZE, C.MADV_HUGEPAGE)
        mm.touch(a + PMD_SIZE, write=True)              # a THP (if aligned) or a page
        mm.touch(a, write=True)
        before, flags = entries(mm), [v.vm_flags for v in mm.vmas]
        mm.clear_refs(4, walker=w)
        assert entries(mm) == before and [v.vm_flags for v in mm.vmas] == flags
        mm.validate()


# --- against the live kernel --------------------------------------------------------

def _scenario_referenced(steps, npages):
    """The smaps Referenced figure of each VMA in the region, live and in the
    model (both walkers)."""
    live = None
    if LK.live_supported()[0]:
        live = LK.run_live_referenced(steps, npages)
    model = [LK.run_model_referenced(steps, npages, walker=w) for w in WALKERS]
    return live, model


CLEAR_REFS_SCENARIOS = [
    # private anonymous pages, cleared, then some touched again
    ([("mmap", 0, 16, RW, ANON | C.MAP_FIXED)] + [("touch", i, 1) for i in range(16)]
     + [("clear_refs", 1), ("touch", 3, 0), ("touch", 9, 1)], 16),
    # kind 3 (file-backed only) leaves anonymous pages referenced
    ([("mmap", 0, 8, RW, ANON | C.MAP_FIXED)] + [("touch", i, 1) for i in range(8)]
     + [("clear_refs", 3)], 8),
    # shmem: kind 2 leaves it, kind 3 clears it
    ([("mmap", 0, 8, RW, MAP_SHARED | MAP_ANONYMOUS | C.MAP_FIXED),
      ("mmap", 8, 8, RW, ANON | C.MAP_FIXED)] + [("touch", i, 1) for i in range(16)]
     + [("clear_refs", 2), ("touch", 2, 0)], 16),
    ([("mmap", 0, 8, RW, MAP_SHARED | MAP_ANONYMOUS | C.MAP_FIXED),
      ("mmap", 8, 8, RW, ANON | C.MAP_FIXED)] + [("touch", i, 1) for i in range(16)]
     + [("clear_refs", 3), ("touch", 10, 0)], 16),
    # a THP: its PMD's young bit
    ([("mmap", 0, 1024, RW, ANON | C.MAP_FIXED), ("madvise", 0, 1024, C.MADV_HUGEPAGE),
      ("touch", 0, 1), ("touch", 600, 1), ("clear_refs", 1), ("touch", 700, 0)], 1024),
    # 4 (no soft-dirty in this kernel) and 5 change no Referenced figure
    ([("mmap", 0, 8, RW, ANON | C.MAP_FIXED)] + [("touch", i, 1) for i in range(8)]
     + [("clear_refs", 4), ("clear_refs", 5)], 8),
]


@pytest.mark.parametrize("steps,npages", CLEAR_REFS_SCENARIOS)
def test_clear_refs_against_live_kernel(steps, npages):
    """smaps' Referenced after clear_refs and later accesses: the model on
    both walkers, and the live kernel where it can run the scenario."""
    live, model = _scenario_referenced(steps, npages)
    assert model[0] == model[1]
    if live is None:
        pytest.skip(LK.live_supported()[1])
    assert model[0] == live
