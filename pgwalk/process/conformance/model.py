"""The model's side of the differential: the same steps (``steps.py``) on
a ``MM``, with the same observations as the live side records."""

import numpy as np

from ...constants import PAGE_SIZE, VM_SHARED
from ..mm import MM
from ..objects import BusError, SegmentationFault
from .steps import SMAPS_FIELDS, FLAG_MASK


def _model_maps(mm, base, npages):
    out = []
    end = base + npages * PAGE_SIZE
    for v in mm.vmas:
        if v.vm_end <= base or v.vm_start >= end:
            continue
        out.append(((max(v.vm_start, base) - base) // PAGE_SIZE,
                    (min(v.vm_end, end) - base) // PAGE_SIZE, v.vm_flags & 7,
                    "s" if v.vm_flags & VM_SHARED else "p"))
    return out


def _model_flags(mm, base, npages):
    return (mm.pagemap(base, base + npages * PAGE_SIZE) & np.uint64(FLAG_MASK)).tolist()


def model_step(mm, st, base):
    """One step (not fork/child) on ``mm``; its result as the live side reports it."""
    kind = st[0]
    a = lambda off: base + off * PAGE_SIZE  # noqa: E731
    try:
        if kind == "mmap":
            _, off, n, prot, fl = st
            return ("at", (mm.mmap(a(off), n * PAGE_SIZE, prot, fl) - base) // PAGE_SIZE)
        if kind == "munmap":
            return mm.munmap(a(st[1]), st[2] * PAGE_SIZE)
        if kind == "mprotect":
            return mm.mprotect(a(st[1]), st[2] * PAGE_SIZE, st[3])
        if kind == "madvise":
            return mm.madvise(a(st[1]), st[2] * PAGE_SIZE, st[3])
        if kind == "mlock":
            return mm.mlock(a(st[1]), st[2] * PAGE_SIZE)
        if kind == "munlock":
            return mm.munlock(a(st[1]), st[2] * PAGE_SIZE)
        if kind == "mremap":
            _, off, old_n, new_n, fl, new_off = st
            r = mm.mremap(a(off), old_n * PAGE_SIZE, new_n * PAGE_SIZE, fl, a(new_off))
            return ("at", (r - base) // PAGE_SIZE)
        if kind == "clear_refs":
            return mm.clear_refs(st[1])
        if kind == "touch":
            try:
                mm.touch(a(st[1]), write=bool(st[2]))
                return "ok"
            except SegmentationFault:
                return "SEGV"
            except BusError:
                return "BUS"
        raise ValueError(kind)
    except OSError as e:
        return ("err", e.errno) if kind in ("mmap", "mremap") else e.errno


def run_model(steps, npages, base=0x7F0000000000, levels=4):
    """``steps`` on a fresh ``MM`` (``validate()`` after each); returns (mm, observations)."""
    mm = MM(levels)
    child = None
    obs = []
    for st in steps:
        kind = st[0]
        if kind == "fork":
            if child is not None:
                child.exit()
            child = mm.fork()
            res = _model_flags(child, base, npages)
        elif kind == "child_exit":
            if child is not None:
                child.exit()
                child = None
            res = 0
        elif kind == "child":
            if child is None:
                res = "no child"
            else:
                r = model_step(child, st[1], base)
                child.validate()
                res = (0 if r is None else r, _model_flags(child, base, npages),
                       _model_maps(child, base, npages))
        else:
            res = model_step(mm, st, base)
            if res is None:
                res = 0
        mm.validate()
        obs.append((res, _model_flags(mm, base, npages), _model_maps(mm, base, npages)))
    if child is not None:
        child.exit()
    return mm, obs


def model_final(mm, npages, base=0x7F0000000000):
    """The smaps figures (SMAPS_FIELDS) and mincore bytes of each VMA of
    ``mm`` in the region, as the live side's ``_live_smaps_mincore``."""
    end = base + npages * PAGE_SIZE
    vmas, mc = [], []
    for v in mm.smaps():
        if v["start"] < end and v["end"] > base:
            d = {k: v[k] for k in SMAPS_FIELDS}
            d["start"] = (max(v["start"], base) - base) // PAGE_SIZE
            d["end"] = (min(v["end"], end) - base) // PAGE_SIZE
            vmas.append(d)
            try:
                mc.append(mm.mincore(base + d["start"] * PAGE_SIZE,
                                     (d["end"] - d["start"]) * PAGE_SIZE).tolist())
            except OSError as e:
                mc.append(e.errno)
    return vmas, mc


def run_model_final(steps, npages, base=0x7F0000000000):
    """``steps`` on a fresh ``MM``; then ``model_final`` of it."""
    mm, _ = run_model(steps, npages, base)
    return model_final(mm, npages, base)
