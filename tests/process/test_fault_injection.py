"""Fault injection over the process model: for each scenario the page-table
allocations it makes are counted first, then every one of them, k = 1..n,
is made to fail in turn (``mm.fail_table_alloc(at=[k])``).  Each time:

* the call fails, or succeeds, the way the kernel's code for that syscall
  does when that allocation fails (each scenario names the kernel path);
* ``mm.validate()`` passes on every live mm (no table leaked: every live
  table is reachable, every link is to a live table of the right level);
* the map counts of physical pages equal the mappings that the live mms
  hold (nothing left counted by a half-done operation);
* what was done before the failure stays done where the kernel keeps it
  (markers, populated pages), and is undone where the kernel undoes it
  (mremap moves entries back, fork tears the child down).

Kernel facts pinned here (Linux 6.18, checked in the sources):

* a table that a fault cannot allocate is VM_FAULT_OOM; for a user fault it
  unwinds to the page-fault handler, which returns to user space and the
  access is retried (``pagefault_out_of_memory`` only logs "Retrying PF"):
  no SIGSEGV, no SIGBUS.  ``MM.touch`` reports it as OSError(ENOMEM), and a
  second touch (the retry) succeeds;
* GUP (``__get_user_pages``) returns the number of pages done when it stops
  after progress and the error only when it stops at its first page;
  ``madvise_populate`` goes on from ``start + pages``; ``__mm_populate``
  goes on from ``nstart + ret`` and, with ``ignore_errors`` (MAP_POPULATE,
  mremap growth of a locked VMA), skips the rest of the VMA on an error;
  mlock maps its ENOMEM to EAGAIN (``__mlock_posix_error_return``);
* ``walk_page_range_mm`` with ``install_pte`` stops with -ENOMEM when
  ``__pte_alloc`` (or a higher level) fails; MADV_GUARD_INSTALL returns it,
  markers already written stay; the VMA walk of madvise stops at the first
  per-VMA error (VMAs after it are not touched);
* ``copy_vma_and_data`` (mremap): when ``move_page_tables`` moved less than
  asked, the entries are moved back and the new range is unmapped instead
  of the old one; mremap returns -ENOMEM;
* ``dup_mmap`` (fork): a failing ``copy_page_range`` ends the copy with
  -ENOMEM and the new mm is dropped (``mmput``), which unmaps what was
  copied; fork returns the error;
* mprotect ignores the result of ``populate_vma_page_range``; munmap,
  mprotect's THP split and MADV_COLLAPSE allocate no page table (a THP
  split takes the table deposited with the huge page, collapse deposits the
  PTE table it replaces).
"""

import errno
from collections import Counter

import numpy as np
import pytest

import pgwalk as P
from pgwalk import PAGE_SIZE as PS
from pgwalk.constants import FIRST_DATA_PFN

from helpers import support

RW = P.PROT_READ | P.PROT_WRITE
PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS
SHARED = P.MAP_SHARED | P.MAP_ANONYMOUS
M2 = 2 << 20
PRESENT, GUARD = np.uint64(1 << 63), np.uint64(1 << 58)
PFN_MASK = np.uint64((1 << 55) - 1)


# --- helpers -----------------------------------------------------------------

def attempts(mm):
    """Table allocations tried so far (counted ones and failed ones)."""
    s = mm.stats
    return sum(s["alloc"].values()) + s["alloc_failed"]


def run(fn):
    """('ok', value) or ('errno', errno) of a call."""
    try:
        return ("ok", fn())
    except OSError as e:
        return ("errno", e.errno)


def present(mm, a, n):
    return (mm.pagemap(a, a + n * PS) & PRESENT) != 0


def guarded(mm, a, n):
    return (mm.pagemap(a, a + n * PS) & GUARD) != 0


def has_table(mm, a, n):
    """Per page: a PTE table (or a PMD leaf) is above it."""
    return np.array([mm.entry(a + i * PS, P.PMD) != 0 for i in range(n)])


def check_mm(*mms):
    """validate() on every live mm; physical map counts equal the mappings
    the live mms hold."""
    want = Counter()
    for mm in mms:
        mm.validate()
        for v in mm.vmas:
            pm = mm.pagemap(v.vm_start, v.vm_end)
            for w in pm[(pm & PRESENT) != 0]:
                pfn = int(w & PFN_MASK)
                if pfn >= FIRST_DATA_PFN:
                    want[pfn] += 1
    phys = mms[0].phys
    got = {pfn: phys.mapcount(pfn) for pfn in range(FIRST_DATA_PFN, phys.next_pfn)
           if phys.mapcount(pfn)}
    assert got == dict(want), "map counts differ from the mappings"


def count(setup, act, clean_errno=None):
    """Allocations ``act`` makes on a fresh ``setup()``, with no failure
    (the call then succeeds, or fails with ``clean_errno``)."""
    ctx = setup()
    mm = ctx["mm"]
    mm.fail_table_alloc(at=[])
    before = attempts(mm)
    out = run(lambda: act(ctx))
    assert out[0] == "ok" if clean_errno is None else out == ("errno", clean_errno), out
    check_mm(*ctx.get("mms", [mm]))
    return attempts(mm) - before, ctx, out[1]


def each_failure(setup, act, at=lambda k: [k], clean_errno=None):
    """Yield (k, n, ctx, outcome) with the k-th allocation of ``act`` failed,
    for every k in 1..n (n counted on a clean run first)."""
    n, _, _ = count(setup, act, clean_errno)
    assert n >= 1, "the scenario makes no table allocation: nothing to inject"
    for k in range(1, n + 1):
        ctx = setup()
        ctx["mm"].fail_table_alloc(at=at(k))
        out = run(lambda: act(ctx))
        assert attempts(ctx["mm"]) >= 1
        yield k, n, ctx, out


def first_page_allocs(setup, addr_of, write=True):
    """Allocations a fault of the first page alone needs."""
    ctx = setup()
    mm = ctx["mm"]
    before = attempts(mm)
    mm.touch(addr_of(ctx), write=write)
    return attempts(mm) - before


# --- faults ------------------------------------------------------------------

def _fresh(npages=4, flags=PRIV):
    mm = P.MM()
    a = mm.mmap(None, npages * PS, RW, flags)
    return {"mm": mm, "a": a}


@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
def test_touch_fault_oom_raises_enomem_and_the_retry_succeeds(write):
    """A fault that cannot allocate a table (VM_FAULT_OOM): the kernel
    returns to user space and the access faults again -- no signal.  touch
    raises OSError(ENOMEM) (not SegmentationFault / BusError); the tables
    allocated before the failure stay linked; the retried touch succeeds."""
    for k, n, ctx, out in each_failure(_fresh, lambda c: c["mm"].touch(c["a"], write=write)):
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("errno", errno.ENOMEM), (k, out)
        assert not present(mm, a, 1)[0]
        check_mm(mm)
        mm.touch(a, write=write)                         # the retried access
        assert present(mm, a, 1)[0]
        check_mm(mm)
    assert n == 3                                        # PUD, PMD, PTE (4-level, p4d folded)


def test_thp_touch_fault_oom_then_retry_maps_the_huge_page():
    """A THP fault needs PUD and PMD tables (the PTE table deposited with
    the huge page is not a counted allocation): each failure is ENOMEM,
    the retry maps a PMD leaf."""
    def setup():
        mm = P.MM()
        a = mm.mmap(None, 2 * M2, RW, PRIV)
        mm.madvise(a, 2 * M2, P.MADV_HUGEPAGE)
        return {"mm": mm, "a": a}

    for k, n, ctx, out in each_failure(setup, lambda c: c["mm"].touch(c["a"], write=True)):
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("errno", errno.ENOMEM)
        assert not P.pmd_leaf(mm.entry(a, P.PMD))
        check_mm(mm)
        mm.touch(a, write=True)
        assert P.pmd_leaf(mm.entry(a, P.PMD))
        check_mm(mm)
    assert n == 2


# --- populate ----------------------------------------------------------------

NPOP = 3 * 512 + 16          # pages over four PTE tables (the start is not 2 MiB aligned)


def _populate_setup():
    mm = P.MM()
    a = mm.mmap(None, NPOP * PS, RW, PRIV)
    return {"mm": mm, "a": a}


def test_map_populate_ignores_table_allocation_failures():
    """mmap(MAP_POPULATE): populate errors are ignored (__mm_populate with
    ignore_errors), mmap returns the address.  A failure after progress is
    retried from the page that failed (GUP returned the pages done), so with
    one failed allocation everything gets populated; a failure while
    faulting the first page makes populate skip the rest of the VMA."""
    def setup():
        return {"mm": P.MM()}

    def act(c):
        c["a"] = c["mm"].mmap(None, NPOP * PS, RW, PRIV | P.MAP_POPULATE)
        return c["a"]

    first = first_page_allocs(_populate_setup, lambda c: c["a"])
    for k, n, ctx, out in each_failure(setup, act):
        mm = ctx["mm"]
        assert out[0] == "ok", (k, out)
        a = out[1]
        assert [(v.vm_start, v.vm_end) for v in mm.vmas] == [(a, a + NPOP * PS)]
        pres = present(mm, a, NPOP)
        if k <= first:
            assert not pres.any(), k
        else:
            assert pres.all(), k
        check_mm(mm)
    assert n > first


@pytest.mark.parametrize("advice", [P.MADV_POPULATE_READ, P.MADV_POPULATE_WRITE],
                         ids=["READ", "WRITE"])
def test_madvise_populate_one_failure(advice):
    """MADV_POPULATE_*: a failure at the first page is ENOMEM with nothing
    populated; after progress madvise_populate retries from the failing
    page, which succeeds (the failure was one allocation): 0, all present."""
    act = lambda c: c["mm"].madvise(c["a"], NPOP * PS, advice)  # noqa: E731
    first = first_page_allocs(_populate_setup, lambda c: c["a"],
                              write=advice == P.MADV_POPULATE_WRITE)
    for k, n, ctx, out in each_failure(_populate_setup, act):
        mm, a = ctx["mm"], ctx["a"]
        pres = present(mm, a, NPOP)
        if k <= first:
            assert out == ("errno", errno.ENOMEM), k
            assert not pres.any()
        else:
            assert out == ("ok", 0), (k, out)
            assert pres.all()
        check_mm(mm)


def test_madvise_populate_persistent_failure_keeps_the_pages_done():
    """Every allocation from the k-th on fails: madvise_populate's retry
    fails at its first page -> ENOMEM; the pages populated before stay
    (exactly the pages whose PTE table exists)."""
    act = lambda c: c["mm"].madvise(c["a"], NPOP * PS, P.MADV_POPULATE_WRITE)  # noqa: E731
    done = []
    for k, n, ctx, out in each_failure(_populate_setup, act, at=lambda k: range(k, k + 64)):
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("errno", errno.ENOMEM), k
        pres = present(mm, a, NPOP)
        assert (pres == has_table(mm, a, NPOP)).all()
        done.append(int(pres.sum()))
        check_mm(mm)
    assert done == sorted(done) and done[0] == 0 and done[-1] > 0


def test_mlock_populate_failure_is_eagain():
    """mlock: __mm_populate without ignore_errors; an ENOMEM at the first
    page of a retry becomes EAGAIN (__mlock_posix_error_return); the VMA is
    locked already."""
    act = lambda c: c["mm"].mlock(c["a"], NPOP * PS)  # noqa: E731
    first = first_page_allocs(_populate_setup, lambda c: c["a"])
    for k, n, ctx, out in each_failure(_populate_setup, act, at=lambda k: range(k, k + 64)):
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("errno", errno.EAGAIN), (k, out)
        assert all(v.vm_flags & P.VM_LOCKED for v in mm.vmas)
        assert present(mm, a, NPOP).any() == (k > first)
        check_mm(mm)


# --- guard regions ---------------------------------------------------------------

NG = 3 * 512


def _guard_setup(populated=0):
    def setup():
        mm = P.MM()
        a = mm.mmap(None, NG * PS, RW, PRIV)
        mm.madvise(a, NG * PS, P.MADV_NOHUGEPAGE)
        for i in range(populated):
            mm.touch(a + i * PS, write=True)
        return {"mm": mm, "a": a}
    return setup


@pytest.mark.parametrize("populated", [0, 600], ids=["holes", "present-pages"])
def test_guard_install_failure_is_enomem_and_keeps_the_markers(populated):
    """MADV_GUARD_INSTALL over empty ranges (no tables) or over present
    pages followed by empty ranges: the install walk stops with -ENOMEM,
    madvise returns it; every page under a PTE table holds a marker (the
    present pages were zapped and replaced before the walk met the
    failure), none elsewhere."""
    act = lambda c: c["mm"].madvise(c["a"], NG * PS, P.MADV_GUARD_INSTALL)  # noqa: E731
    for k, n, ctx, out in each_failure(_guard_setup(populated), act):
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("errno", errno.ENOMEM), (k, out)
        g = guarded(mm, a, NG)
        assert (g == has_table(mm, a, NG)).all(), k
        assert g[:max(populated, 1)].all() or (populated == 0 and not g.any())
        assert not present(mm, a, NG).any()
        check_mm(mm)


def test_guard_install_over_populated_pages_in_one_table_allocates_nothing():
    """Pages present in one PTE table: the zap-and-retry reuses the table."""
    setup = _guard_setup(populated=512)
    ctx = setup()
    mm, a = ctx["mm"], ctx["a"]
    before = attempts(mm)
    mm.madvise(a + 0, 512 * PS, P.MADV_GUARD_INSTALL)
    assert attempts(mm) == before
    assert guarded(mm, a, 512).all()
    check_mm(mm)


def test_guard_install_across_a_gap_stops_at_the_failing_vma():
    """Two VMAs with a gap: no failure -> both guarded, ENOMEM for the
    gap.  A failure in the first VMA ends the call there (the VMA walk
    returns the first per-VMA error): the second VMA gets no marker."""
    def setup():
        mm = P.MM()
        a = mm.mmap(None, 4 * M2, RW, PRIV)
        mm.munmap(a + M2, M2)                # VMAs [a, a+2M) and [a+4M, a+8M)
        return {"mm": mm, "a": a}

    def act(c):
        return c["mm"].madvise(c["a"], 4 * M2, P.MADV_GUARD_INSTALL)

    ctx = setup()
    mm, a = ctx["mm"], ctx["a"]
    assert [(v.vm_start - a, v.vm_end - a) for v in mm.vmas] == [(0, M2), (2 * M2, 4 * M2)]
    assert run(lambda: act(ctx)) == ("errno", errno.ENOMEM)
    assert guarded(mm, a, 512).all() and guarded(mm, a + 2 * M2, 1024).all()
    n_first = None
    for k, n, ctx, out in each_failure(setup, act, clean_errno=errno.ENOMEM):
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("errno", errno.ENOMEM)
        g1, g2 = guarded(mm, a, 512), guarded(mm, a + 2 * M2, 1024)
        assert (g1 == has_table(mm, a, 512)).all()
        assert (g2 == has_table(mm, a + 2 * M2, 1024)).all()
        if not g1.all():
            assert not g2.any(), "a VMA after the failing one was processed"
            n_first = k
        check_mm(mm)
    assert n_first is not None                       # some failure hit the first VMA


def test_mprotect_ignores_the_populate_of_a_locked_vma():
    """mprotect making a locked read-only VMA writable write-faults it
    (populate_vma_page_range, result ignored): a table allocation failing
    there does not fail mprotect.  The VMA was left half-populated by an
    mlock whose populate failed (EAGAIN), so the write faults need tables."""
    def setup():
        mm = P.MM()
        a = mm.mmap(None, NPOP * PS, P.PROT_READ, PRIV)
        mm.fail_table_alloc(at=range(4, 100))
        assert run(lambda: mm.mlock(a, NPOP * PS)) == ("errno", errno.EAGAIN)
        assert 0 < present(mm, a, NPOP).sum() < NPOP
        return {"mm": mm, "a": a}

    act = lambda c: c["mm"].mprotect(c["a"], NPOP * PS, RW)  # noqa: E731
    for k, n, ctx, out in each_failure(setup, act):
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("ok", 0), (k, out)
        assert [v.vm_flags & RW for v in mm.vmas] == [RW]
        assert (present(mm, a, NPOP) == has_table(mm, a, NPOP)).all()
        check_mm(mm)


# --- operations that allocate no table ---------------------------------------------

def _thp_region():
    mm = P.MM()
    a = mm.mmap(None, 2 * M2, RW, PRIV)
    mm.madvise(a, 2 * M2, P.MADV_HUGEPAGE)
    mm.touch(a, write=True)                          # a PMD-mapped THP
    assert P.pmd_leaf(mm.entry(a, P.PMD))
    return mm, a


@pytest.mark.parametrize("op", ["munmap-inside-thp", "mprotect-inside-thp", "munmap-all",
                                "mprotect-locked-rw", "collapse"])
def test_operations_that_allocate_no_table(op):
    """munmap and mprotect splitting a THP take the deposited table (no
    allocation), unmapping frees and never allocates, an mprotect that
    write-faults a populated locked VMA finds its tables, MADV_COLLAPSE
    deposits the PTE table it replaces.  With every allocation failing the
    call still succeeds and the mm stays valid."""
    mm, a = _thp_region()
    if op == "munmap-inside-thp":
        call = lambda: mm.munmap(a + 5 * PS, 3 * PS)  # noqa: E731
    elif op == "mprotect-inside-thp":
        call = lambda: mm.mprotect(a + 5 * PS, 3 * PS, P.PROT_READ)  # noqa: E731
    elif op == "munmap-all":
        call = lambda: mm.munmap(a, 2 * M2)  # noqa: E731
    elif op == "mprotect-locked-rw":
        b = mm.mmap(None, 64 * PS, P.PROT_READ, PRIV)
        mm.mlock(b, 64 * PS)                         # read faults: tables and zero pages
        call = lambda: mm.mprotect(b, 64 * PS, RW)  # noqa: E731
    else:
        b = a + M2
        for i in range(0, 512, 7):
            mm.touch(b + i * PS, write=True)         # PTE-mapped (MADV_HUGEPAGE off meanwhile)
        call = lambda: mm.madvise(b, M2, P.MADV_COLLAPSE)  # noqa: E731
    if op == "collapse":
        mm.madvise(a + M2, M2, P.MADV_NOHUGEPAGE)
        mm.madvise(a + M2, M2, P.MADV_HUGEPAGE)
    mm.fail_table_alloc(at=range(1, 1000))
    before = attempts(mm)
    assert run(call) == ("ok", 0)
    assert attempts(mm) == before
    if op == "collapse":
        assert P.pmd_leaf(mm.entry(a + M2, P.PMD))
    check_mm(mm)


# --- mremap --------------------------------------------------------------------------

NM = 2 * 512 + 40


def _small_pages(step, guard, nguard):
    """An mm with NM pages of 4 KiB (no THP), every step-th one written, and
    nguard guard pages from page ``guard``."""
    mm = P.MM()
    a = mm.mmap(None, NM * PS, RW, PRIV)
    mm.madvise(a, NM * PS, P.MADV_NOHUGEPAGE)
    for i in range(0, NM, step):
        mm.touch(a + i * PS, write=True)
    mm.madvise(a + guard * PS, nguard * PS, P.MADV_GUARD_INSTALL)
    return mm, a


def _mremap_setup():
    mm, a = _small_pages(3, 10, 5)
    return {"mm": mm, "a": a, "before": mm.pagemap(a, a + NM * PS),
            "vmas": [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.vmas]}


DST = 0x7e0000000000


@pytest.mark.parametrize("how", ["fixed-aligned", "fixed-unaligned", "grow-move", "dontunmap"])
def test_mremap_move_failure_moves_back_and_unmaps_the_new_range(how):
    """mremap moving pages (and guard markers): a destination table that
    cannot be allocated makes copy_vma_and_data move the entries back and
    unmap the new range; mremap fails with ENOMEM.  Afterwards the source
    reads exactly as before (same PFNs, same markers, same VMAs) and
    nothing is mapped at the destination."""
    def act(c):
        mm, a = c["mm"], c["a"]
        if how == "fixed-aligned":
            return mm.mremap(a, NM * PS, NM * PS, P.MREMAP_MAYMOVE | P.MREMAP_FIXED,
                             DST + (a & (M2 - 1)))
        if how == "fixed-unaligned":
            return mm.mremap(a, NM * PS, NM * PS, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, DST + 7 * PS)
        if how == "grow-move":
            mm.mmap(a + NM * PS, PS, RW, PRIV | P.MAP_FIXED)      # no room to grow in place
            c["vmas"] = [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.vmas]
            return mm.mremap(a, NM * PS, (NM + 600) * PS, P.MREMAP_MAYMOVE)
        return mm.mremap(a, NM * PS, NM * PS, P.MREMAP_MAYMOVE | P.MREMAP_DONTUNMAP)

    n_seen = 0
    for k, n, ctx, out in each_failure(_mremap_setup, act):
        n_seen = n
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("errno", errno.ENOMEM), (k, out)
        assert [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.vmas] == ctx["vmas"], k
        assert (mm.pagemap(a, a + NM * PS) == ctx["before"]).all(), k
        check_mm(mm)
    assert n_seen >= 2


def test_mremap_grow_in_place_of_a_locked_vma_ignores_populate_failures():
    """Growing a locked VMA in place populates the new tail with
    mm_populate (errors ignored): mremap returns the address whatever
    allocation fails; pages present exactly where a table exists."""
    def setup():
        mm = P.MM()
        a = mm.mmap(None, 16 * PS, RW, PRIV)
        mm.mlock(a, 16 * PS)
        return {"mm": mm, "a": a}

    act = lambda c: c["mm"].mremap(c["a"], 16 * PS, (16 + 1100) * PS)  # noqa: E731
    for k, n, ctx, out in each_failure(setup, act):
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("ok", a), (k, out)
        assert mm.vmas[0].vm_end == a + (16 + 1100) * PS
        pres = present(mm, a, 16 + 1100)
        assert pres[:16].all()
        check_mm(mm)


# --- fork ------------------------------------------------------------------------------

def _fork_parent():
    mm, a = _small_pages(2, 4, 2)
    b = mm.mmap(None, 2 * M2, RW, PRIV)
    mm.madvise(b, 2 * M2, P.MADV_HUGEPAGE)
    mm.touch(b, write=True)                             # a THP: fork copies the PMD
    s = mm.mmap(None, 32 * PS, RW, SHARED)
    mm.touch(s, write=True)
    return mm


def test_fork_failure_is_enomem_and_leaves_the_parent_unchanged(monkeypatch):
    """The child's k-th table allocation fails (the copy allocates in the
    child's tree): fork raises OSError(ENOMEM), the half-built child is torn
    down (its tables freed, the map counts it took dropped), and the
    parent reads exactly as before: same VMAs, same pagemap words, the
    exclusive bit included (the pages are mapped once again)."""
    made = []
    arm = {"at": None}
    real_init = P.MM.__init__

    def init(self, *a, **kw):                        # every MM made while armed: the child
        real_init(self, *a, **kw)
        if arm["at"] is not None:
            self.fail_table_alloc(at=arm["at"])
            made.append(self)

    monkeypatch.setattr(P.MM, "__init__", init)

    parent = _fork_parent()
    words = lambda mm: np.concatenate([mm.pagemap(v.vm_start, v.vm_end) for v in mm.vmas])  # noqa: E731
    arm["at"] = []
    clean = parent.fork()
    arm["at"] = None
    n = attempts(clean)
    assert n >= 3
    check_mm(parent, clean)
    clean.exit()
    del made[:]
    for k in range(1, n + 1):
        parent = _fork_parent()
        before = ([(v.vm_start, v.vm_end, v.vm_flags) for v in parent.vmas], words(parent))
        arm["at"] = [k]
        with pytest.raises(OSError) as e:
            parent.fork()
        arm["at"] = None
        assert e.value.errno == errno.ENOMEM
        (child,) = made
        del made[:]
        assert child.nr_tables == 1 and child.vmas == [], k
        child.validate()
        after = ([(v.vm_start, v.vm_end, v.vm_flags) for v in parent.vmas], words(parent))
        assert after[0] == before[0]
        assert (after[1] == before[1]).all(), k
        check_mm(parent)
        parent.fork().exit()                         # a later fork works
        check_mm(parent)


# --- the walker's install_pte ------------------------------------------------------------

@pytest.mark.parametrize("impl", support.IMPLS, ids=repr)
def test_walk_page_range_mm_install_pte_failure(impl):
    """walk_page_range_mm with install_pte over a VMA without tables: the
    k-th allocation failing stops the walk with -ENOMEM (both walkers the
    same); the PTEs installed before stay, tables allocated before stay
    linked, nothing else is written."""
    N = 2 * 512 + 8

    def setup():
        mm = P.MM()
        mm.add_vma(0x40000000 - 4 * PS, 0x40000000 - 4 * PS + N * PS, P.VM_READ | P.VM_WRITE)
        return {"mm": mm, "a": 0x40000000 - 4 * PS}

    def act(c):
        mm, a = c["mm"], c["a"]
        installed = c.setdefault("installed", [])

        def install(addr, nxt, ptep, walk):
            ptep.set(P.pfn_pte(0x1000 + (addr - a) // PS, 0x67))
            installed.append(addr)
            return 0

        ops = P.MMWalkOps(install_pte=install, pte_entry=lambda e, ad, nx, w: 0)
        with mm.mmap_write_lock():
            rc = impl.walk_page_range_mm(mm, a, a + N * PS, ops)
        if rc:
            raise OSError(-rc, "walk")
        return rc

    for k, n, ctx, out in each_failure(setup, act):
        mm, a = ctx["mm"], ctx["a"]
        assert out == ("errno", errno.ENOMEM), (k, out)
        inst = ctx.get("installed", [])
        assert inst == [a + i * PS for i in range(len(inst))]
        for i in range(N):
            v = mm.entry(a + i * PS, P.PTE)
            assert v == (P.pfn_pte(0x1000 + i, 0x67) if i < len(inst) else 0), (k, i)
        assert (has_table(mm, a, N)[:len(inst)]).all()
        mm.validate()
    assert n == 7      # a PUD table, two PMD tables (the range crosses 1 GiB), four PTE tables


def test_shmem_collapse_table_failure_changes_nothing():
    """MADV_COLLAPSE of shared anonymous memory in an mm that has no page
    tables there yet (the pages are in the shmem object, mapped by a forked
    child): the model allocates the tables down to the PMD to map the new
    huge page.  Found here: when that allocation failed the object's pages
    had already been replaced and unmapped everywhere, and the huge page was
    counted as mapped 512 times while mapped nowhere.  Now the tables come
    first: a failure changes nothing (the child still maps the old pages,
    the map counts match) and the call fails with OSError(ENOMEM).  The
    kernel itself installs the PMD only where the page tables exist
    (collapse_pte_mapped_thp looks the PMD up without allocating), so it
    has no allocation to fail here: the errno is the model's (F11)."""
    def setup():
        mm = P.MM()
        s = mm.mmap(None, 2 * M2, RW, SHARED)
        h = (s + M2 - 1) & ~(M2 - 1)
        child = mm.fork()
        for i in range(0, 512, 5):
            child.touch(h + i * PS, write=True)
        return {"mm": mm, "mms": [mm, child], "h": h, "child": child,
                "child_pm": child.pagemap(h, h + M2)}

    act = lambda c: c["mm"].madvise(c["h"], M2, P.MADV_COLLAPSE)  # noqa: E731
    n_seen = 0
    for k, n, ctx, out in each_failure(setup, act):
        n_seen = n
        mm, child, h = ctx["mm"], ctx["child"], ctx["h"]
        assert out == ("errno", errno.ENOMEM), (k, out)
        assert not P.pmd_leaf(mm.entry(h, P.PMD))
        assert (child.pagemap(h, h + M2) == ctx["child_pm"]).all()
        check_mm(mm, child)
    assert n_seen == 2                                 # PUD and PMD tables
