"""The live-kernel differential: the same sequences of mmap / munmap /
mprotect / mremap / madvise / mlock / touch / fork run on this machine's
kernel (through ctypes, in a forked runner) and on ``pgwalk.MM``; every
result (errno, fault outcome, address), the per-page pagemap flags (present
63, swap 62, file 61, guard 58, exclusive 56) of the region, the child's
pagemap right after each fork, and the VMAs of the region must be identical.

Skipped, with the reason, where the kernel lacks guard regions (or pagemap's
guard bit)."""

import os
import sys

import pytest

import pgwalk

import live_kernel as L
import scenarios as S

if not sys.platform.startswith("linux"):
    pytest.skip("the live-kernel differential needs Linux", allow_module_level=True)
_ok, _why = L.guard_regions_supported()
if not _ok:
    pytest.skip(f"this kernel lacks guard regions: {_why}", allow_module_level=True)

# Seeds per run (more: PGWALK_LIVE_SEEDS=2000 pytest tests/test_live_kernel.py).
SEEDS = int(os.environ.get("PGWALK_LIVE_SEEDS", "60"))
THP_SEEDS = int(os.environ.get("PGWALK_LIVE_THP_SEEDS", "20"))
SHARED_SEEDS = int(os.environ.get("PGWALK_LIVE_SHARED_SEEDS", "20"))
FORK_SEEDS = int(os.environ.get("PGWALK_LIVE_FORK_SEEDS", "20"))
WIDE_SEEDS = int(os.environ.get("PGWALK_LIVE_WIDE_SEEDS", "60"))
LAZY_SEEDS = int(os.environ.get("PGWALK_LIVE_LAZY_SEEDS", "20"))
REMAP_SEEDS = int(os.environ.get("PGWALK_LIVE_REMAP_SEEDS", "20"))
SHMEM_HUGE_SEEDS = int(os.environ.get("PGWALK_LIVE_SHMEM_HUGE_SEEDS", "20"))
CHUNK = 20


def _thp_collapses():
    try:
        with open("/proc/vmstat") as f:
            return sum(int(line.split()[1]) for line in f
                       if line.startswith(("thp_collapse_alloc", "thp_file_alloc")))
    except OSError:
        return 0


def run_both(steps, npages):
    """(model observations, live observations); the live run is repeated if
    khugepaged collapsed something meanwhile (not part of the scenario)."""
    _, model = L.run_model(steps, npages)
    for _ in range(3):
        before = _thp_collapses()
        _, live = L.run_live(steps, npages)
        if _thp_collapses() == before:
            break
    return model, live


def describe(steps, model, live):
    for i, (st, m, lv) in enumerate(zip(steps, model, live)):
        if m != lv:
            out = [f"first difference at step {i}: {st}",
                   *(f"   {s}" for s in steps[:i + 1])]
            if m[0] != lv[0]:
                out.append(f"   result: model {m[0] if not isinstance(m[0], list) else 'child pagemap'}"
                           f" live {lv[0] if not isinstance(lv[0], list) else 'child pagemap'}")
                if isinstance(m[0], list):
                    out.append("   child pagemap: " + str([(j, hex(a), hex(b)) for j, (a, b)
                                                          in enumerate(zip(m[0], lv[0])) if a != b][:8]))
            if m[1] != lv[1]:
                out.append("   pagemap (page, model, live): " + str(
                    [(j, hex(a), hex(b)) for j, (a, b) in enumerate(zip(m[1], lv[1])) if a != b][:8]))
            if m[2] != lv[2]:
                out.append(f"   VMAs model {m[2]}\n   VMAs live  {lv[2]}")
            return "\n".join(out)
    return "identical"


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_random_sequences_match_the_live_kernel(first):
    """Random sequences over 1..1024 pages (private and shared anonymous,
    THP regions, forks, remaps, every advice of issue 4): every errno,
    fault outcome, pagemap flag and VMA boundary as the live kernel's."""
    for seed in range(first, min(first + CHUNK, SEEDS)):
        steps, npages = S.scenario(seed)
        model, live = run_both(steps, npages)
        assert model == live, f"seed {seed} ({npages} pages):\n" + describe(steps, model, live)


@pytest.mark.parametrize("first", range(0, THP_SEEDS, CHUNK))
def test_thp_sequences_match_the_live_kernel(first):
    """Sequences around 2 MiB boundaries of a MADV_HUGEPAGE region: THP and
    huge-zero-page faults, splits by partial operations (VMA splits,
    mprotect, munmap, guard install, mremap, MADV_FREE/COLD/PAGEOUT folio
    splits that remap never-written subpages to the zero page), copy-on-write
    of a THP after fork, MADV_COLLAPSE, aligned PMD moves."""
    for seed in range(first, min(first + CHUNK, THP_SEEDS)):
        steps, npages = S.thp_scenario(seed)
        model, live = run_both(steps, npages)
        assert model == live, f"thp seed {seed} ({npages} pages):\n" + describe(steps, model, live)


@pytest.mark.parametrize("first", range(0, SHARED_SEEDS, CHUNK))
def test_shared_sequences_match_the_live_kernel(first):
    """Shared anonymous (shmem) memory: fault-around of cached pages, pages
    kept in the object across DONTNEED, dropped by MADV_REMOVE (in every
    mapping) and, when clean, by PAGEOUT; SIGBUS past the object's end;
    guards; the forked child touching the same object."""
    for seed in range(first, min(first + CHUNK, SHARED_SEEDS)):
        steps, npages = S.shared_scenario(seed)
        model, live = run_both(steps, npages)
        assert model == live, f"shared seed {seed} ({npages} pages):\n" + describe(steps, model, live)


@pytest.mark.parametrize("first", range(0, FORK_SEEDS, CHUNK))
def test_fork_sequences_match_the_live_kernel(first):
    """Fork-heavy sequences with steps in the child: copy-on-write from
    either side (4K pages, zero pages, THPs), guards on either side,
    WIPEONFORK, mlock not inherited, VMA merging of a child's VMAs (whose
    anon_vma chains are not singular)."""
    for seed in range(first, min(first + CHUNK, FORK_SEEDS)):
        steps, npages = S.fork_scenario(seed)
        model, live = run_both(steps, npages)
        assert model == live, f"fork seed {seed} ({npages} pages):\n" + describe(steps, model, live)


@pytest.mark.parametrize("first", range(0, WIDE_SEEDS, CHUNK))
def test_wide_sequences_match_the_live_kernel(first):
    """Sequences from the wider generator: any size 1..1024 pages, plain
    VMAs (no NOHUGEPAGE padding), MADV_HUGEPAGE over a random part, points
    on and next to PMD boundaries, in-place and moving remaps, child steps."""
    for seed in range(first, min(first + CHUNK, WIDE_SEEDS)):
        steps, npages = S.wide_scenario(seed)
        model, live = run_both(steps, npages)
        assert model == live, f"wide seed {seed} ({npages} pages):\n" + describe(steps, model, live)


@pytest.mark.parametrize("first", range(0, LAZY_SEEDS, CHUNK))
def test_lazy_free_sequences_match_the_live_kernel(first):
    """THPs and their splits under MADV_FREE / COLD / PAGEOUT with writes
    between them: lazy free decided per folio, PMD split before the
    discard, dirtiness carried through folio splits."""
    for seed in range(first, min(first + CHUNK, LAZY_SEEDS)):
        steps, npages = S.lazy_scenario(seed)
        model, live = run_both(steps, npages)
        assert model == live, f"lazy seed {seed} ({npages} pages):\n" + describe(steps, model, live)


@pytest.mark.parametrize("first", range(0, REMAP_SEEDS, CHUNK))
def test_remap_sequences_match_the_live_kernel(first):
    """mremap-heavy sequences: whole and partial huge pages moved to aligned
    and unaligned places, DONTUNMAP, in-place growth and shrinking, moves
    over populated and guarded ranges."""
    for seed in range(first, min(first + CHUNK, REMAP_SEEDS)):
        steps, npages = S.remap_scenario(seed)
        model, live = run_both(steps, npages)
        assert model == live, f"remap seed {seed} ({npages} pages):\n" + describe(steps, model, live)


@pytest.mark.parametrize("first", range(0, SHMEM_HUGE_SEEDS, CHUNK))
def test_shmem_huge_sequences_match_the_live_kernel(first):
    """Shared memory with huge folios made by MADV_COLLAPSE: whole-folio
    faults (PMD or PTEs), non-uniform splits by hole punches, COLD/PAGEOUT
    over part or all of a folio, guards, forks (which do not copy a shmem
    huge PMD), moves."""
    for seed in range(first, min(first + CHUNK, SHMEM_HUGE_SEEDS)):
        steps, npages = S.shmem_huge_scenario(seed)
        model, live = run_both(steps, npages)
        assert model == live, f"shmem-huge seed {seed} ({npages} pages):\n" + describe(steps, model, live)


@pytest.mark.parametrize("case", range(len(S.REGRESSIONS)))
def test_regressions_match_the_live_kernel(case):
    """Minimised sequences that once differed (see their comments in
    tests/scenarios.py)."""
    npages, steps = S.REGRESSIONS[case]
    model, live = run_both(steps, npages)
    assert model == live, describe(steps, model, live)


def test_shmem_collapse_maps_the_huge_page_in_an_mm_without_tables():
    """MADV_COLLAPSE of shared anonymous memory whose pages were faulted in
    only by a forked child, the region alone in its 1 GiB (so this mm has no
    page table there at all): the live kernel still returns 0 and maps the
    new huge page by PMD in this mm at once (pagemap: present, file), and
    the model (which allocates the tables down to the PMD for it) agrees.
    This is the case the F11 note in docs/robustness.md asked about."""
    RW = pgwalk.PROT_READ | pgwalk.PROT_WRITE
    SH = pgwalk.MAP_SHARED | pgwalk.MAP_ANONYMOUS | pgwalk.MAP_FIXED
    steps = [("mmap", 0, 1024, RW, SH), ("fork",), ("child", ("touch", 3, True)),
             ("madvise", 0, 512, pgwalk.MADV_COLLAPSE), ("touch", 5, False)]
    _, model = L.run_model(steps, 1024)
    _, live = L.run_live(steps, 1024, align=1 << 30)
    assert model == live, describe(steps, model, live)
    assert model[3][0] == 0
    assert all(f >> 63 & 1 and f >> 61 & 1 for f in model[3][1][:512])
