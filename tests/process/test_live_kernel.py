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

from pgwalk.process.conformance import KINDS as GENERATORS
from pgwalk.process.conformance import live as L
from pgwalk.process.conformance import model as M
from pgwalk.process.conformance.compare import describe, run_both

from helpers.regressions import REGRESSIONS

if not sys.platform.startswith("linux"):
    pytest.skip("the live-kernel differential needs Linux", allow_module_level=True)
_ok, _why = L.guard_regions_supported()
if not _ok:
    pytest.skip(f"this kernel lacks guard regions: {_why}", allow_module_level=True)

# Scenario kinds (the generators of pgwalk/process/conformance/scenarios.py,
# whose docstrings say what each covers) and their seeds per run; more with
# the environment variable, e.g.
# PGWALK_LIVE_SEEDS=2000 pytest tests/process/test_live_kernel.py
# (or ``python -m pgwalk conformance --seeds 2000``).
SEEDS = {
    # name: (environment variable, default seeds)
    "random": ("PGWALK_LIVE_SEEDS", 40),
    "thp": ("PGWALK_LIVE_THP_SEEDS", 20),
    "shared": ("PGWALK_LIVE_SHARED_SEEDS", 20),
    "fork": ("PGWALK_LIVE_FORK_SEEDS", 20),
    "wide": ("PGWALK_LIVE_WIDE_SEEDS", 40),
    "lazy": ("PGWALK_LIVE_LAZY_SEEDS", 20),
    "remap": ("PGWALK_LIVE_REMAP_SEEDS", 20),
    "shmem-huge": ("PGWALK_LIVE_SHMEM_HUGE_SEEDS", 12),     # the slowest kind: 0.6 s a seed
}
KINDS = {kind: (GENERATORS[kind], env, n) for kind, (env, n) in SEEDS.items()}
CHUNK = 20


def _chunks():
    for kind, (_, env, default) in KINDS.items():
        n = int(os.environ.get(env, str(default)))
        for first in range(0, n, CHUNK):
            yield pytest.param(kind, first, min(first + CHUNK, n), id=f"{kind}-{first}")


@pytest.mark.parametrize("kind,first,stop", list(_chunks()))
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
    (conformance.SMAPS_FIELDS: Rss, Pss, clean/dirty, Anonymous,
    AnonHugePages, ShmemPmdMapped, Locked, THPeligible, ...) and its
    mincore bytes as the live kernel's."""
    gen = KINDS[kind][0]
    n = int(os.environ.get("PGWALK_LIVE_SMAPS_SEEDS", "8"))
    for seed in range(n):
        steps, npages = gen(seed)
        live = L.run_live_final(steps, npages)
        model = M.run_model_final(steps, npages)
        assert model == live, f"{kind} seed {seed}: smaps/mincore differ\nmodel {model}\nlive  {live}"


@pytest.mark.parametrize("case", range(len(REGRESSIONS)))
def test_regressions_match_the_live_kernel(case):
    """Minimised sequences that once differed (see their comments in
    tests/helpers/regressions.py)."""
    npages, steps = REGRESSIONS[case]
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
    _, model = M.run_model(steps, 1024)
    _, live = L.run_live(steps, 1024, align=1 << 30)
    assert model == live, describe(steps, model, live)
    assert model[3][0] == 0
    assert all(f >> 63 & 1 and f >> 61 & 1 for f in model[3][1][:512])
