"""The live-kernel helpers of the tests: the runner and the model's side of
a step live in the package (``pgwalk.process.conformance``: the step format
in ``steps.py``, the live side in ``live.py``, the model's in ``model.py``);
here are the names the tests use from there, and two checks of their own
(``run_checked``, ``call_errnos``)."""

import ctypes

import pgwalk
from pgwalk import PAGE_SIZE
from pgwalk.process.conformance.live import (
    MAP_FAILED, _libc, _run_steps, do_step, guard_regions_supported, in_runner, live_smaps,
    live_supported, reserve, run_live, run_live_final)
from pgwalk.process.conformance.model import (
    model_step, run_model, run_model_final)
from pgwalk.process.conformance.steps import SMAPS_FIELDS

__all__ = ["SMAPS_FIELDS", "call_errnos", "do_step", "guard_regions_supported", "in_runner",
           "live_smaps", "live_supported", "model_step", "reserve", "run_checked", "run_live",
           "run_live_final", "run_live_referenced", "run_model", "run_model_final",
           "run_model_referenced"]


def run_checked(steps, npages):
    """``run_model``, and where ``live_supported()`` the same steps live:
    every step's observations (result, pagemap flags, VMAs) must be
    identical.  Returns the model's (mm, observations)."""
    mm, model = run_model(steps, npages)
    if live_supported()[0]:
        _, live = run_live(steps, npages)
        for i, (m, lv) in enumerate(zip(model, live)):
            assert m == lv, f"step {i} {steps[i]}: model {m} live {lv}"
    return mm, model


def call_errnos(calls, npages=4):
    """Each of ``calls`` -- ``(name, offset_in_bytes, *args)`` for munmap,
    mprotect, mlock, munlock, madvise or mremap -- on a fresh private
    read-write mapping of ``npages`` pages: in this process through libc
    (for argument checks that change nothing, or little) when
    ``live_supported()``, else None; and on ``pgwalk.MM``.  Returns
    ([model errno or 0], [live errno or 0] or None)."""
    def model():
        out = []
        for name, off, *args in calls:
            mm = pgwalk.MM()
            a = mm.mmap(None, npages * PAGE_SIZE, 3, pgwalk.MAP_PRIVATE | pgwalk.MAP_ANONYMOUS)
            try:
                getattr(mm, name)(a + off, *args)
                out.append(0)
            except OSError as e:
                out.append(e.errno)
        return out

    def live():
        out = []
        for name, off, *args in calls:
            a = _libc.mmap(None, npages * PAGE_SIZE, 3, pgwalk.MAP_PRIVATE | pgwalk.MAP_ANONYMOUS, -1, 0)
            assert a != MAP_FAILED
            ctypes.set_errno(0)
            r = getattr(_libc, name)(a + off, *args)
            failed = r == MAP_FAILED if name == "mremap" else r != 0
            out.append(ctypes.get_errno() if failed else 0)
            _libc.munmap(r if name == "mremap" and not failed else a, npages * PAGE_SIZE)
        return out

    return model(), (live() if live_supported()[0] else None)


def run_live_referenced(steps, npages):
    """Run ``steps`` live in a fresh forked runner; then smaps' Referenced
    (kB) of each VMA in the region, as [(start, end, kB)]."""
    def go():
        base = reserve(npages + 8)
        _run_steps(base, npages, steps)
        return [(v["start"], v["end"], v.get("Referenced")) for v in live_smaps(base, npages)]
    return in_runner(go)


def run_model_referenced(steps, npages, base=0x7F0000000000, walker="callbacks"):
    """The same on ``pgwalk.MM`` (smaps on ``walker``)."""
    mm, _ = run_model(steps, npages, base)
    end = base + npages * PAGE_SIZE
    return [((max(v["start"], base) - base) // PAGE_SIZE, (min(v["end"], end) - base) // PAGE_SIZE,
             v["Referenced"]) for v in mm.smaps(walker=walker)
            if v["start"] < end and v["end"] > base]
