"""The cases of the kernel selftest tools/testing/selftests/mm/guard-regions.c
(the 6.18-era file, plus the two cases added right after it: collapse and
smaps), one pgwalk test per case and backing, as live-vs-model differentials.

Each test builds a scenario of ``pgwalk/process/conformance/steps.py`` steps that follows
the selftest case (its own words and code, not the selftest's), runs it on
``pgwalk.MM`` and, when this kernel has guard regions, live: every step's
observations (result or errno, fault outcome, pagemap flags, VMAs) must be
identical.  A few asserts on the model's observations then state the outcome
the selftest expects.

Backings: "anon" is MAP_PRIVATE|MAP_ANONYMOUS, as in the selftest; "shmem" is
MAP_SHARED|MAP_ANONYMOUS (the selftest maps a memfd; shared anonymous memory
is pgwalk's shmem).  Where the selftest skips a case for a backing, the test
skips too, with the same reason.

Selftest cases skipped for every backing (``pytest.skip`` inside the test,
so that they are listed in the run):
  process_madvise   - process_madvise() with an iovec batch is not modelled
  uffd              - userfaultfd is not modelled
  map_private       - needs a MAP_PRIVATE mapping of the same memfd
  readonly_file     - a read-only regular file (file backing only)
  truncation        - ftruncate of the backing file
  memfd_write_seal  - memfd seals (F_SEAL_WRITE)
  pagemap_scan      - the PAGEMAP_SCAN ioctl (the pagemap case covers the bits)
The file-only variants of madvise_sequential, fault_around and hole_punch
are not expressible (regular files); their shmem variants are covered
(fault_around with the remap replaced by MADV_DONTNEED, since remapping a
shared anonymous range gives a new, empty object).
"""

import errno

import pytest

import pgwalk as P

from helpers import live_kernel as L

LIVE, WHY = L.guard_regions_supported()
R, RW = P.PROT_READ, P.PROT_READ | P.PROT_WRITE
RWX = RW | P.PROT_EXEC
GI, GR = P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE
PRESENT, SWAP, FILE, GUARD, EXCL = 1 << 63, 1 << 62, 1 << 61, 1 << 58, 1 << 56
MAP = {"anon": P.MAP_PRIVATE | P.MAP_ANONYMOUS | P.MAP_FIXED,
       "shmem": P.MAP_SHARED | P.MAP_ANONYMOUS | P.MAP_FIXED}
BACKINGS = pytest.mark.parametrize("backing", ["anon", "shmem"])


def _first_difference(steps, model, live):
    for i, (st, m, lv) in enumerate(zip(steps, model, live)):
        if m != lv:
            diff = [(j, hex(a), hex(b)) for j, (a, b) in enumerate(zip(m[1], lv[1])) if a != b]
            return (f"step {i} {st}: result model {m[0]!r} live {lv[0]!r}; "
                    f"pagemap (page, model, live) {diff[:8]}; VMAs model {m[2]} live {lv[2]}")
    return "identical"


def run(steps, npages):
    """The steps on the model and, when possible, live; the observations must
    be identical.  Returns the model's observations."""
    _, model = L.run_model(steps, npages)
    if LIVE:
        _, live = L.run_live(steps, npages)
        assert model == live, _first_difference(steps, model, live)
    return model


class Plan:
    """A scenario under construction; each method appends steps and returns
    what is needed to find their observations again."""

    def __init__(self, backing, npages):
        self.mapflags = MAP[backing]
        self.npages = npages
        self.steps = []

    def add(self, *st):
        self.steps.append(st)
        return len(self.steps) - 1

    def mmap(self, off, n, prot=RW):
        return self.add("mmap", off, n, prot, self.mapflags)

    def madvise(self, off, n, advice):
        return self.add("madvise", off, n, advice)

    def access(self, pages, write=True, child=False):
        """A read of each page, and a write after it when ``write`` (the
        selftest's read-then-write probe)."""
        probe = []
        for p in pages:
            kinds = (False, True) if write else (False,)
            idx = [self.add("child", ("touch", p, w)) if child else self.add("touch", p, w)
                   for w in kinds]
            probe.append((p, idx))
        return probe

    def run(self):
        self.obs = run(self.steps, self.npages)
        return self.obs

    # -- reading the observations back

    def result(self, i):
        r = self.obs[i][0]
        return r[0] if isinstance(r, tuple) and len(r) == 3 else r

    def flags(self, i, child=False):
        return self.obs[i][0][1] if child else self.obs[i][1]

    def ok(self, probe):
        """The pages of ``probe`` every access of which succeeded."""
        return [p for p, idx in probe if all(self.result(i) == "ok" for i in idx)]

    def segv(self, probe):
        """The pages of ``probe`` every access of which raised SIGSEGV."""
        return [p for p, idx in probe if all(self.result(i) == "SEGV" for i in idx)]


def guarded(flags):
    return [i for i, f in enumerate(flags) if f & GUARD]


def page_prots(maps):
    """The protection of each page, from the observed VMAs."""
    out = []
    for s, e, prot, _ in maps:
        out += [prot] * (e - s)
    return out


def anon_only(backing, why):
    if backing != "anon":
        pytest.skip(f"the selftest skips this case for shmem: {why}")


def shmem_only(backing, why):
    if backing != "shmem":
        pytest.skip(f"the selftest skips this case for anon: {why}")


@BACKINGS
def test_basic(backing):
    """selftest "basic": a guard page faults on read and write, its neighbours
    don't; guard pages at either end come and go independently; a range
    install over a faulted-in page works; removing where there are no
    markers leaves the populated pages alone."""
    p = Plan(backing, 10)
    p.mmap(0, 10)
    first = p.access([0])
    p.madvise(0, 1, GI)
    g0 = p.access([0])
    rest = p.access(range(1, 10))
    p.madvise(9, 1, GI)
    ends = p.access([0, 9])
    p.madvise(0, 1, GR)
    a0 = p.access([0])
    p.madvise(9, 1, GR)
    a9 = p.access([9])
    p.madvise(0, 3, GI)
    three = p.access(range(10))
    r1 = p.madvise(0, 10, GR)
    after = p.access(range(10))
    r2 = p.madvise(0, 10, GR)
    p.run()
    assert p.ok(first) == [0] and p.segv(g0) == [0] and p.ok(rest) == list(range(1, 10))
    assert p.segv(ends) == [0, 9] and p.ok(a0) == [0] and p.ok(a9) == [9]
    assert p.segv(three) == [0, 1, 2] and p.ok(three) == list(range(3, 10))
    assert p.result(r1) == p.result(r2) == 0 and p.ok(after) == list(range(10))
    assert all(f & PRESENT and not f & GUARD for f in p.flags(r2))   # nothing zapped


@BACKINGS
def test_multi_vma(backing):
    """selftest "multi_vma": over three VMAs with holes between them, install
    and removal act on every VMA yet fail with ENOMEM for the holes; with the
    holes filled by unmergeable (PROT_EXEC) VMAs both succeed over the whole
    range of five VMAs."""
    p = Plan(backing, 100)
    p.mmap(0, 100, P.PROT_NONE)
    p.mmap(0, 10)
    p.mmap(50, 5)
    p.mmap(80, 20)
    p.add("munmap", 10, 40)
    p.add("munmap", 55, 25)
    mapped = list(range(10)) + list(range(50, 55)) + list(range(80, 100))
    gi = p.madvise(0, 100, GI)
    g = p.access(mapped)
    gr = p.madvise(0, 100, GR)
    u = p.access(mapped)
    p.mmap(10, 40, RWX)
    x = p.mmap(55, 25, RWX)
    gi2 = p.madvise(0, 100, GI)
    g2 = p.access(range(100))
    gr2 = p.madvise(0, 100, GR)
    u2 = p.access(range(100))
    p.run()
    assert p.result(gi) == p.result(gr) == errno.ENOMEM
    assert p.segv(g) == mapped and p.ok(u) == mapped
    assert len(p.obs[x][2]) == 5
    assert p.result(gi2) == p.result(gr2) == 0
    assert p.segv(g2) == list(range(100)) and p.ok(u2) == list(range(100))


def test_process_madvise():
    """selftest "process_madvise": batched install/removal through
    process_madvise(PIDFD_SELF, iovec[6], ...)."""
    pytest.skip("process_madvise() is not modelled by pgwalk")


@BACKINGS
def test_munmap(backing):
    """selftest "munmap": unmapping guarded pages drops their markers, so a
    new mapping in their place is accessible."""
    p = Plan(backing, 10)
    p.mmap(0, 10)
    p.madvise(0, 1, GI)
    p.madvise(9, 1, GI)
    g = p.access([0, 9])
    p.add("munmap", 0, 1)
    p.add("munmap", 9, 1)
    p.mmap(0, 1)
    m = p.mmap(9, 1)
    u = p.access([0, 9])
    p.run()
    assert p.segv(g) == [0, 9] and p.ok(u) == [0, 9]
    assert not guarded(p.flags(m))


@BACKINGS
def test_mprotect(backing):
    """selftest "mprotect": changing the protection of guarded pages keeps
    the markers; installing again over them is fine; removal over the whole
    range makes everything readable."""
    p = Plan(backing, 10)
    p.mmap(0, 10)
    p.madvise(5, 2, GI)
    g = p.access([5, 6])
    mp = p.add("mprotect", 5, 2, R)
    g2 = p.access([5, 6], write=False)
    again = p.madvise(5, 2, GI)
    g3 = p.access([5, 6], write=False)
    gr = p.madvise(0, 10, GR)
    u = p.access(range(10), write=False)
    p.run()
    assert p.segv(g) == p.segv(g2) == p.segv(g3) == [5, 6]
    assert p.result(mp) == p.result(again) == p.result(gr) == 0
    assert guarded(p.flags(mp)) == [5, 6] and len(p.obs[mp][2]) == 3
    assert p.ok(u) == list(range(10))


@BACKINGS
def test_split_merge(backing):
    """selftest "split_merge": splitting a guarded VMA by munmap keeps the
    markers in each part; remapping the holes gives unguarded pages; splits
    and merges by mprotect keep the markers; removal across split VMAs
    clears them all."""
    p = Plan(backing, 10)
    p.mmap(0, 10)
    p.madvise(0, 10, GI)
    g = p.access(range(10))
    for hole in (2, 5, 8):
        p.add("munmap", hole, 1)
    kept = [0, 1, 3, 4, 6, 7, 9]
    g2 = p.access(kept)
    for hole in (2, 5, 8):
        p.mmap(hole, 1)
    mixed = p.access(range(10))
    p.madvise(0, 10, GI)
    g3 = p.access(range(10))
    p.add("mprotect", 0, 3, R)
    split = p.add("mprotect", 7, 3, R)
    g4 = p.access(range(10), write=False)
    p.add("mprotect", 0, 3, RW)
    merged = p.add("mprotect", 7, 3, RW)
    g5 = p.access(range(10))
    p.add("mprotect", 0, 3, R)
    p.add("mprotect", 7, 3, R)
    gr = p.madvise(0, 10, GR)
    u = p.access(range(10), write=False)
    p.add("mprotect", 0, 3, RW)
    p.add("mprotect", 7, 3, RW)
    u2 = p.access(range(10))
    p.run()
    assert p.segv(g) == list(range(10)) and p.segv(g2) == kept
    assert p.ok(mixed) == [2, 5, 8] and p.segv(mixed) == kept
    assert p.segv(g3) == p.segv(g4) == p.segv(g5) == list(range(10))
    assert page_prots(p.obs[split][2]) == [R] * 3 + [RW] * 4 + [R] * 3
    if backing == "anon":       # shared anonymous mappings are separate objects: no merge
        assert len(p.obs[merged][2]) == 1
    assert p.result(gr) == 0 and p.ok(u) == p.ok(u2) == list(range(10))


@BACKINGS
def test_dontneed(backing):
    """selftest "dontneed": MADV_DONTNEED over a range with guard pages on
    every other page keeps the markers; the other pages read back as the
    zero page (anon) or as the data still in the shmem object."""
    p = Plan(backing, 10)
    p.mmap(0, 10)
    for i in range(10):
        p.add("touch", i, True)
    for i in range(0, 10, 2):
        p.madvise(i, 1, GI)
    dn = p.madvise(0, 10, P.MADV_DONTNEED)
    reads = p.access(range(10), write=False)
    writes = p.access(range(10), write=True)
    p.run()
    assert p.result(dn) == 0
    assert guarded(p.flags(dn)) == [0, 2, 4, 6, 8]
    assert not any(f & PRESENT for f in p.flags(dn))
    assert p.segv(reads) == p.segv(writes) == [0, 2, 4, 6, 8]
    assert p.ok(reads) == p.ok(writes) == [1, 3, 5, 7, 9]
    after_reads = p.flags(reads[-1][1][-1])
    if backing == "anon":
        assert after_reads[1] == PRESENT                  # the zero page
    else:
        assert after_reads[1] & (PRESENT | FILE) == PRESENT | FILE   # the object's page


@BACKINGS
def test_mlock(backing):
    """selftest "mlock": installing over an mlocked range is EINVAL; after
    munlock it works; mlock of the unguarded part is fine; removal over a
    range that is partly mlocked is allowed."""
    p = Plan(backing, 10)
    p.mmap(0, 10)
    for i in range(10):
        p.add("touch", i, True)
    p.add("mlock", 0, 10)
    bad = p.madvise(0, 10, GI)
    p.add("munlock", 0, 10)
    half = p.madvise(0, 5, GI)
    a = p.access(range(10))
    lk = p.add("mlock", 5, 5)
    gr = p.madvise(0, 10, GR)
    u = p.access(range(10))
    p.run()
    assert p.result(bad) == errno.EINVAL and not guarded(p.flags(bad))
    assert p.result(half) == 0 and guarded(p.flags(half)) == [0, 1, 2, 3, 4]
    assert p.segv(a) == [0, 1, 2, 3, 4] and p.ok(a) == [5, 6, 7, 8, 9]
    assert p.result(lk) == p.result(gr) == 0 and p.ok(u) == list(range(10))


@BACKINGS
def test_mremap_move(backing):
    """selftest "mremap_move": moving a mapping (MAYMOVE|FIXED onto a
    reserved PROT_NONE range) carries its guard markers along."""
    p = Plan(backing, 15)
    p.mmap(0, 5)
    p.madvise(0, 1, GI)
    p.madvise(4, 1, GI)
    g = p.access([0, 4])
    p.mmap(10, 5, P.PROT_NONE)
    mv = p.add("mremap", 0, 5, 5, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, 10)
    g2 = p.access([10, 14])
    p.run()
    assert p.segv(g) == [0, 4] and p.result(mv) == ("at", 10)
    assert guarded(p.flags(mv)) == [10, 14] and p.segv(g2) == [10, 14]


@BACKINGS
def test_mremap_expand(backing):
    """selftest "mremap_expand": growing in place keeps the markers where
    they were; moving and growing into a reserved range keeps them at the
    same offsets from the start."""
    p = Plan(backing, 40)
    p.mmap(0, 10)
    p.add("munmap", 5, 5)
    p.madvise(0, 1, GI)
    p.madvise(4, 1, GI)
    g = p.access([0, 4])
    grow = p.add("mremap", 0, 5, 10, 0, 0)
    g2 = p.access([0, 4])
    p.mmap(20, 20, P.PROT_NONE)
    mv = p.add("mremap", 0, 10, 20, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, 20)
    g3 = p.access([20, 24])
    p.run()
    assert p.segv(g) == p.segv(g2) == [0, 4]
    assert p.result(grow) == ("at", 0) and p.result(mv) == ("at", 20)
    assert guarded(p.flags(mv)) == [20, 24] and p.segv(g3) == [20, 24]


@BACKINGS
def test_mremap_shrink(backing):
    """selftest "mremap_shrink": shrinking drops the markers that are cut off
    (the first one stays); growing back does not bring the last one back."""
    p = Plan(backing, 5)
    p.mmap(0, 5)
    p.madvise(0, 1, GI)
    p.madvise(4, 1, GI)
    g = p.access([0, 4])
    shrink = p.add("mremap", 0, 5, 3, P.MREMAP_MAYMOVE, 0)
    a = p.access(range(3))
    grow = p.add("mremap", 0, 3, 5, 0, 0)
    b = p.access(range(5))
    p.run()
    assert p.segv(g) == [0, 4] and p.result(shrink) == p.result(grow) == ("at", 0)
    assert p.segv(a) == [0] and p.ok(a) == [1, 2]
    assert p.segv(b) == [0] and p.ok(b) == [1, 2, 3, 4]
    assert guarded(p.flags(grow)) == [0]


@BACKINGS
def test_fork(backing):
    """selftest "fork": the child inherits the guard markers; its removal of
    them does not touch the parent's page tables."""
    p = Plan(backing, 10)
    p.mmap(0, 10)
    p.madvise(0, 5, GI)
    fk = p.add("fork",)
    c = p.access(range(10), child=True)
    cgr = p.add("child", ("madvise", 0, 10, GR))
    p.add("child_exit",)
    a = p.access(range(10))
    p.run()
    assert guarded(p.obs[fk][0]) == [0, 1, 2, 3, 4]
    assert p.segv(c) == [0, 1, 2, 3, 4] and p.ok(c) == [5, 6, 7, 8, 9]
    assert p.result(cgr) == 0 and not guarded(p.flags(cgr, child=True))
    assert guarded(p.flags(cgr)) == [0, 1, 2, 3, 4]
    assert p.segv(a) == [0, 1, 2, 3, 4] and p.ok(a) == [5, 6, 7, 8, 9]


@BACKINGS
def test_fork_cow(backing):
    """selftest "fork_cow": after fork, install + removal in the child zaps
    the child's view of the shared CoW pages (it then reads the zero page);
    the parent keeps its data."""
    anon_only(backing, "CoW only applies to anonymous private memory")
    p = Plan(backing, 10)
    p.mmap(0, 10)
    for i in range(10):
        p.add("touch", i, True)
    p.add("fork",)
    c = p.access(range(10), write=False, child=True)
    cgi = p.add("child", ("madvise", 0, 10, GI))
    p.add("child", ("madvise", 0, 10, GR))
    c2 = p.access(range(10), write=False, child=True)
    ex = p.add("child_exit",)
    a = p.access(range(10), write=False)
    p.run()
    assert p.ok(c) == p.ok(c2) == p.ok(a) == list(range(10))
    assert p.flags(cgi, child=True) == [SWAP | GUARD] * 10
    assert p.flags(c2[-1][1][-1], child=True) == [PRESENT] * 10     # zero pages
    assert p.flags(ex) == [PRESENT | EXCL] * 10                     # the parent's own pages


@BACKINGS
def test_fork_wipeonfork(backing):
    """selftest "fork_wipeonfork": in a WIPEONFORK range the child starts
    with no markers; the parent keeps its guard pages."""
    anon_only(backing, "MADV_WIPEONFORK only applies to anonymous private memory")
    p = Plan(backing, 10)
    p.mmap(0, 10)
    p.madvise(0, 10, P.MADV_WIPEONFORK)
    p.madvise(0, 5, GI)
    fk = p.add("fork",)
    c = p.access(range(10), child=True)
    p.add("child_exit",)
    a = p.access(range(10))
    p.run()
    assert p.obs[fk][0] == [0] * 10
    assert p.ok(c) == list(range(10))
    assert p.segv(a) == [0, 1, 2, 3, 4] and p.ok(a) == [5, 6, 7, 8, 9]


@BACKINGS
def test_lazyfree(backing):
    """selftest "lazyfree": MADV_FREE keeps guard markers."""
    anon_only(backing, "MADV_FREE only applies to anonymous private memory")
    p = Plan(backing, 10)
    p.mmap(0, 10)
    p.madvise(0, 10, GI)
    g = p.access(range(10))
    fr = p.madvise(0, 10, P.MADV_FREE)
    g2 = p.access(range(10))
    p.run()
    assert p.result(fr) == 0 and p.flags(fr) == [SWAP | GUARD] * 10
    assert p.segv(g) == p.segv(g2) == list(range(10))


@BACKINGS
def test_populate(backing):
    """selftest "populate": MADV_POPULATE_READ and _WRITE over guard pages
    fail with EFAULT."""
    p = Plan(backing, 10)
    p.mmap(0, 10)
    p.madvise(0, 10, GI)
    pr = p.madvise(0, 10, P.MADV_POPULATE_READ)
    pw = p.madvise(0, 10, P.MADV_POPULATE_WRITE)
    p.run()
    assert p.result(pr) == p.result(pw) == errno.EFAULT
    assert p.flags(pw) == [SWAP | GUARD] * 10


@BACKINGS
def test_cold_pageout(backing):
    """selftest "cold_pageout": MADV_COLD and MADV_PAGEOUT keep guard
    markers."""
    p = Plan(backing, 10)
    p.mmap(0, 10)
    p.madvise(0, 10, GI)
    g = p.access(range(10))
    cold = p.madvise(0, 10, P.MADV_COLD)
    g2 = p.access(range(10))
    po = p.madvise(0, 10, P.MADV_PAGEOUT)
    g3 = p.access(range(10))
    p.run()
    assert p.result(cold) == p.result(po) == 0
    assert p.flags(po) == [SWAP | GUARD] * 10
    assert p.segv(g) == p.segv(g2) == p.segv(g3) == list(range(10))


def test_uffd():
    """selftest "uffd": installing guard regions in a userfaultfd-registered
    range must not raise userfaults."""
    pytest.skip("userfaultfd is not modelled by pgwalk")


@BACKINGS
def test_madvise_sequential(backing):
    """selftest "madvise_sequential" (shmem variant): with MADV_SEQUENTIAL
    (aggressive read-ahead) and a page-out, guard pages on every other page
    still fault and the other pages still read; after removal every page
    reads."""
    shmem_only(backing, "MADV_SEQUENTIAL only matters for file-backed memory")
    p = Plan(backing, 10)
    p.mmap(0, 10)
    for i in range(10):
        p.add("touch", i, True)
    seq = p.madvise(0, 10, P.MADV_SEQUENTIAL)
    for i in range(0, 10, 2):
        p.madvise(i, 1, GI)
    po = p.madvise(0, 10, P.MADV_PAGEOUT)
    ev = p.access(range(0, 10, 2))
    od = p.access(range(1, 10, 2), write=False)
    gr = p.madvise(0, 10, GR)
    a = p.access(range(10), write=False)
    p.run()
    assert p.result(seq) == p.result(po) == p.result(gr) == 0
    assert guarded(p.flags(po)) == [0, 2, 4, 6, 8]
    assert p.segv(ev) == [0, 2, 4, 6, 8] and p.ok(od) == [1, 3, 5, 7, 9]
    assert p.ok(a) == list(range(10))
    assert all(f & (PRESENT | FILE) == PRESENT | FILE for f in p.flags(a[-1][1][-1]))


def test_map_private():
    """selftest "map_private": guard regions in a MAP_SHARED and a
    MAP_PRIVATE mapping of the same file are independent."""
    pytest.skip("needs a MAP_PRIVATE mapping of the same memfd/file, which pgwalk's "
                "shared anonymous memory cannot express")


def test_readonly_file():
    """selftest "readonly_file": guard regions in a PROT_READ mapping of a
    file opened read-only."""
    pytest.skip("regular files (file backing only) are not modelled by pgwalk")


@BACKINGS
def test_fault_around(backing):
    """selftest "fault_around" (shmem variant, adapted): a read fault on a
    page whose neighbours are in the page cache maps them around it
    (fault-around), but never over a guard marker.  The selftest pages out
    and remaps to force major faults; a remapped shared anonymous range is a
    new, empty object, so MADV_DONTNEED drops the PTEs here instead (the
    pages stay in the object)."""
    shmem_only(backing, "fault-around only happens for file-backed memory")
    p = Plan(backing, 10)
    p.mmap(0, 10)
    for i in range(10):
        p.add("touch", i, True)
    p.madvise(0, 10, P.MADV_PAGEOUT)
    dn = p.madvise(0, 10, P.MADV_DONTNEED)
    for i in range(0, 10, 2):
        p.madvise(i, 1, GI)
    od = p.access(range(1, 10, 2), write=False)
    a = p.access(range(10), write=False)
    p.run()
    assert not any(f & PRESENT for f in p.flags(dn))
    first = p.flags(od[0][1][0])
    assert guarded(first) == [0, 2, 4, 6, 8]
    assert [i for i, f in enumerate(first) if f & PRESENT] == [1, 3, 5, 7, 9]   # faulted around
    assert p.ok(od) == [1, 3, 5, 7, 9]
    assert p.segv(a) == [0, 2, 4, 6, 8] and p.ok(a) == [1, 3, 5, 7, 9]


def test_truncation():
    """selftest "truncation": guard markers survive ftruncate of the backing
    file down and up again."""
    pytest.skip("ftruncate of the backing file is not modelled by pgwalk")


@BACKINGS
def test_hole_punch(backing):
    """selftest "hole_punch" (shmem variant): MADV_REMOVE (punching a hole)
    over guard pages keeps the markers; after removal the punched pages read
    as fresh (zero) pages of the object, the others keep their data."""
    shmem_only(backing, "hole punching (MADV_REMOVE) needs file-backed memory")
    p = Plan(backing, 10)
    p.mmap(0, 10)
    for i in range(10):
        p.add("touch", i, True)
    p.madvise(3, 4, GI)
    g = p.access(range(10), write=False)
    rm = p.madvise(3, 4, P.MADV_REMOVE)
    g2 = p.access(range(10), write=False)
    gr = p.madvise(0, 10, GR)
    a = p.access(range(10), write=False)
    p.run()
    outside = [0, 1, 2, 7, 8, 9]
    assert p.ok(g) == p.ok(g2) == outside and p.segv(g) == p.segv(g2) == [3, 4, 5, 6]
    assert p.result(rm) == p.result(gr) == 0 and guarded(p.flags(rm)) == [3, 4, 5, 6]
    assert p.ok(a) == list(range(10))


def test_memfd_write_seal():
    """selftest "memfd_write_seal": guard regions in a read-only mapping of
    a write-sealed memfd."""
    pytest.skip("memfd seals (F_SEAL_WRITE) are not modelled by pgwalk")


@BACKINGS
def test_anon_zeropage(backing):
    """selftest "anon_zeropage": guard regions in a read-only mapping; after
    removal every page reads (zero page for anon, zero-filled object pages
    for shmem)."""
    p = Plan(backing, 10)
    p.mmap(0, 10, R)
    for i in range(0, 10, 2):
        p.madvise(i, 1, GI)
    g = p.access(range(10), write=False)
    gr = p.madvise(0, 10, GR)
    a = p.access(range(10), write=False)
    p.run()
    assert p.segv(g) == [0, 2, 4, 6, 8] and p.ok(g) == [1, 3, 5, 7, 9]
    assert p.result(gr) == 0 and p.ok(a) == list(range(10))
    final = p.flags(a[-1][1][-1])
    if backing == "anon":
        assert final == [PRESENT] * 10
    else:
        assert all(f & (PRESENT | FILE) == PRESENT | FILE for f in final)


@BACKINGS
def test_pagemap(backing):
    """selftest "pagemap": /proc/self/pagemap reports the guard bit (58) on
    exactly the guarded pages."""
    p = Plan(backing, 10)
    m = p.mmap(0, 10)
    installs = [p.madvise(i, 1, GI) for i in range(0, 10, 2)]
    p.run()
    assert not guarded(p.flags(m))
    assert guarded(p.flags(installs[-1])) == [0, 2, 4, 6, 8]
    assert all(p.flags(installs[-1])[i] == SWAP | GUARD for i in range(0, 10, 2))


def test_pagemap_scan():
    """selftest "pagemap_scan": the PAGEMAP_SCAN ioctl reports guard pages as
    PAGE_IS_GUARD regions."""
    pytest.skip("the PAGEMAP_SCAN ioctl is not modelled (test_pagemap covers the pagemap bit)")


@BACKINGS
def test_collapse(backing):
    """selftest "collapse" (added after 6.18): MADV_COLLAPSE of a range of
    two PMD blocks with guard pages on every other page fails, and the guard
    pages stay."""
    n = 1024
    p = Plan(backing, n)
    p.mmap(0, n, R)
    p.madvise(0, n, P.MADV_NOHUGEPAGE)
    pr = p.madvise(0, n, P.MADV_POPULATE_READ)
    g = []
    for i in range(0, n, 2):
        p.madvise(i, 1, GI)
        g += p.access([i], write=False)
    p.madvise(0, n, P.MADV_HUGEPAGE)
    col = p.madvise(0, n, P.MADV_COLLAPSE)
    g2 = p.access(range(0, n, 2), write=False)
    p.run()
    assert p.result(pr) == 0
    assert p.result(col) == errno.EINVAL   # the selftest only asks for a failure
    assert p.segv(g) == p.segv(g2) == list(range(0, n, 2))
    assert guarded(p.flags(col)) == list(range(0, n, 2))


def _gu_live(steps, npages):
    """Run ``steps`` live in a forked runner; after each, the region's VMAs
    as (start, end, has "gu") from /proc/self/smaps."""
    def go():
        base = L.reserve(npages + 8)
        out = []
        for st in steps:
            L.do_step(st, base)
            out.append([(v["start"], v["end"], "gu" in v["VmFlags"]) for v in L.live_smaps(base, npages)])
        return out
    return L.in_runner(go)


def _gu_model(steps, npages, base=0x7F0000000000):
    mm = P.MM()
    out = []
    for st in steps:
        L.model_step(mm, st, base)
        out.append([((max(v["start"], base) - base) // P.PAGE_SIZE,
                     (min(v["end"], base + npages * P.PAGE_SIZE) - base) // P.PAGE_SIZE,
                     "gu" in v["VmFlags"].split())
                    for v in mm.smaps()
                    if v["start"] < base + npages * P.PAGE_SIZE and v["end"] > base])
    return out


@BACKINGS
def test_smaps(backing):
    """selftest "smaps" (in the file right after 6.18; this 6.18.44 kernel
    already behaves so): VmFlags shows "gu" on a VMA once a guard was
    installed in it, keeps it after the guard is removed, on both parts of
    a split and on the VMA merged back; a VMA never guarded has none.  The
    model's smaps() VmFlags against /proc/self/smaps, step by step."""
    fl = MAP[backing]
    steps = [("mmap", 0, 10, RW, fl), ("madvise", 0, 1, GI), ("madvise", 0, 1, GR),
             ("madvise", 3, 2, GI), ("munmap", 4, 1), ("mmap", 4, 1, RW, fl),
             ("mprotect", 6, 2, R), ("mprotect", 6, 2, RW), ("mmap", 12, 3, RW, fl)]
    model = _gu_model(steps, 16)
    assert model[0] == [(0, 10, False)]
    assert model[2] == [(0, 10, True)]           # kept after removal
    assert all(gu for (a, b, gu) in model[4])    # both parts of the split
    assert model[-1][-1] == (12, 15, False)      # a VMA never guarded
    if LIVE:
        live = _gu_live(steps, 16)
        for i, (m, lv) in enumerate(zip(model, live)):
            assert m == lv, f"step {i} {steps[i]}: model {m} live {lv}"


@BACKINGS
def test_smaps_vma_layout(backing):
    """selftest "smaps", its VMA-layout part: unmapping a page of a guarded
    VMA splits it in two (both keep their markers); mapping a fresh page in
    the hole merges the three back into one VMA (anon; shared anonymous
    mappings are separate objects and never merge, so the shmem part of this
    check needs the memfd the selftest uses)."""
    if backing != "anon":
        pytest.skip("not expressible for shmem: the merge needs one shmem object mapped "
                    "at matching offsets (the selftest's memfd)")
    p = Plan(backing, 10)
    p.mmap(0, 10)
    p.madvise(0, 1, GI)
    p.madvise(0, 1, GR)
    for i in range(10):
        p.madvise(i, 1, GI)
    um = p.add("munmap", 4, 1)
    mm = p.mmap(4, 1)
    p.run()
    assert [v[:2] for v in p.obs[um][2]] == [(0, 4), (5, 10)]
    assert guarded(p.flags(um)) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert [v[:2] for v in p.obs[mm][2]] == [(0, 10)]
