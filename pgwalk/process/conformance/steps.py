"""The step format both sides of the live differential run, what each step
observes, and a scenario as one line of JSON.

A scenario is a list of steps over a region of ``npages`` pages starting at a
2 MiB-aligned base ``B`` (offsets are in pages from ``B``):

    ("mmap", off, n, prot, flags)           MAP_FIXED/MAP_FIXED_NOREPLACE at B+off
    ("munmap", off, n)
    ("mprotect", off, n, prot)
    ("madvise", off, n, advice)
    ("mlock", off, n) / ("munlock", off, n)
    ("mremap", off, old_n, new_n, flags, new_off)   new_off used with MREMAP_FIXED
    ("touch", off, write)                   one access: "ok", "SEGV" or "BUS"
    ("clear_refs", kind)                    a write of kind to /proc/self/clear_refs
    ("fork",)                               a child that stays alive; observes
                                            its own pagemap right after fork
    ("child", step)                         one of the steps above, in the child
                                            (observes its result, pagemap, VMAs)
    ("child_exit",)

Each step yields ``(result, flags, maps)``: the result (0 / an errno / the
touch outcome / ``("at", page offset)`` or ``("err", errno)`` for mmap and
mremap / the child's flags for fork), the per-page pagemap flags of the
region (``FLAG_MASK``: bits 63 present, 62 swap, 61 file, 58 guard, 56
exclusive) and the VMAs inside the region as ``(start_off, end_off, prot,
"p" or "s")``."""

import json

from ...constants import PM_FILE, PM_GUARD_REGION, PM_MMAP_EXCLUSIVE, PM_PRESENT, PM_SWAP

FLAG_MASK = PM_PRESENT | PM_SWAP | PM_FILE | PM_GUARD_REGION | PM_MMAP_EXCLUSIVE
STEP_KINDS = ("mmap", "munmap", "mprotect", "madvise", "mlock", "munlock", "mremap",
              "touch", "clear_refs", "fork", "child", "child_exit")

# smaps fields compared with the live kernel.  Left out: Referenced (the
# kernel also counts the folio flags PG_referenced / PG_young, which the
# model does not keep) and LazyFree (MADV_FREE clears PG_swapbacked through
# a per-CPU batch, so the figure read right after it depends on when that
# batch drains; MADV_PAGEOUT drains it first, so what reclaim does is not).
SMAPS_FIELDS = ("Size", "Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean",
                "Private_Dirty", "Anonymous", "AnonHugePages", "ShmemPmdMapped", "Swap",
                "Locked", "THPeligible")

_ARITY = {"mmap": 5, "munmap": 3, "mprotect": 4, "madvise": 4, "mlock": 3, "munlock": 3,
          "mremap": 6, "touch": 3, "clear_refs": 2, "fork": 1, "child_exit": 1}


def as_step(obj, in_child=False):
    """A step from its JSON form (lists become tuples), checked against the
    format above; ``ValueError`` if it is not a step."""
    if not isinstance(obj, (list, tuple)) or not obj or obj[0] not in STEP_KINDS:
        raise ValueError(f"not a step: {obj!r}")
    kind = obj[0]
    if kind == "child":
        if in_child or len(obj) != 2:
            raise ValueError(f"not a step: {obj!r}")
        inner = as_step(obj[1], in_child=True)
        if inner[0] in ("fork", "child_exit"):
            raise ValueError(f"not a step in the child: {obj!r}")
        return ("child", inner)
    if len(obj) != _ARITY[kind]:
        raise ValueError(f"{kind} takes {_ARITY[kind] - 1} arguments: {obj!r}")
    args = obj[1:]
    if kind == "touch":
        if not isinstance(args[0], int) or not isinstance(args[1], (bool, int)):
            raise ValueError(f"not a step: {obj!r}")
        return (kind, args[0], bool(args[1]))
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in args):
        raise ValueError(f"arguments must be non-negative ints: {obj!r}")
    return (kind, *args)


def scenario_line(kind, seed, npages, steps, first=None):
    """The scenario as one line of JSON (what ``--replay`` reads back), with
    its first differing observation if it differs."""
    d = {"kind": kind, "seed": seed, "npages": npages, "steps": steps}
    if first is not None:
        d["first_difference"] = first
    return json.dumps(d, separators=(", ", ": "))


def parse_scenario(line):
    """(kind, seed, npages, steps) of one JSON line; ``ValueError`` if it is
    not a scenario."""
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(d, dict) or "steps" not in d or "npages" not in d:
        raise ValueError("a scenario is a JSON object with \"npages\" and \"steps\"")
    npages = d["npages"]
    if not isinstance(npages, int) or isinstance(npages, bool) or not 1 <= npages <= 1 << 18:
        raise ValueError(f"npages must be an int in 1..{1 << 18}: {npages!r}")
    if not isinstance(d["steps"], list):
        raise ValueError("steps must be a list")
    steps = [as_step(s) for s in d["steps"]]
    return d.get("kind"), d.get("seed"), npages, steps
