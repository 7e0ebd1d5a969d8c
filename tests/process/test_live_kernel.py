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

from helpers import live_kernel as L
from helpers import scenarios as S

if not sys.platform.startswith("linux"):
    pytest.skip("the live-kernel differential needs Linux", allow_module_level=True)
_ok, _why = L.guard_regions_supported()
if not _ok:
    pytest.skip(f"this kernel lacks guard regions: {_why}", allow_module_level=True)

# Scenario kinds (generators of tests/helpers/scenarios.py, whose docstrings say
# what each covers) and their seeds per run; more with the environment
# variable, e.g. PGWALK_LIVE_SEEDS=2000 pytest tests/process/test_live_kernel.py.
KINDS = {
    # name: (generator, environment variable, default seeds)
    "random": (S.scenario, "PGWALK_LIVE_SEEDS", 40),
    "thp": (S.thp_scenario, "PGWALK_LIVE_THP_SEEDS", 20),
    "shared": (S.shared_scenario, "PGWALK_LIVE_SHARED_SEEDS", 20),
    "fork": (S.fork_scenario, "PGWALK_LIVE_FORK_SEEDS", 20),
    "wide": (S.wide_scenario, "PGWALK_LIVE_WIDE_SEEDS", 40),
    "lazy": (S.lazy_scenario, "PGWALK_LIVE_LAZY_SEEDS", 20),
    "remap": (S.remap_scenario, "PGWALK_LIVE_REMAP_SEEDS", 20),
    "shmem-huge": (S.shmem_huge_scenario, "PGWALK_LIVE_SHMEM_HUGE_SEEDS", 20),
}
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


def _chunks():
    for kind, (_, env, default) in KINDS.items():
        n = int(os.environ.get(env, str(default)))
        for first in range(0, n, CHUNK):
            yield pytest.param(kind, first, min(first + CHUNK, n), id=f"{kind}-{first}")


@pytest.mark.parametrize("kind,first,stop", _chunks())
def test_sequences_match_the_live_kernel(kind, first, stop):
    """Random sequences of each kind (1..2048 pages: private and shared
    anonymous memory, THP regions, forks and steps in the child, remaps,
    every advice the model has): every errno, fault outcome, pagemap flag and
    VMA boundary as the live kernel's."""
    gen = KINDS[kind][0]
    for seed in range(first, stop):
        steps, npages = gen(seed)
        model, live = run_both(steps, npages)
        assert model == live, f"{kind} seed {seed} ({npages} pages):\n" + describe(steps, model, live)


@pytest.mark.parametrize("kind", list(KINDS))
def test_final_smaps_and_mincore_match_the_live_kernel(kind):
    """At the end of scenarios of each kind: every VMA's smaps figures
    (live_kernel.SMAPS_FIELDS: Rss, Pss, clean/dirty, Anonymous,
    AnonHugePages, ShmemPmdMapped, Locked, THPeligible, ...) and its
    mincore bytes as the live kernel's."""
    gen = KINDS[kind][0]
    n = int(os.environ.get("PGWALK_LIVE_SMAPS_SEEDS", "8"))
    for seed in range(n):
        steps, npages = gen(seed)
        live = L.run_live_final(steps, npages)
        model = L.run_model_final(steps, npages)
        assert model == live, f"{kind} seed {seed}: smaps/mincore differ\nmodel {model}\nlive  {live}"


@pytest.mark.parametrize("case", range(len(S.REGRESSIONS)))
def test_regressions_match_the_live_kernel(case):
    """Minimised sequences that once differed (see their comments in
    tests/helpers/scenarios.py)."""
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
