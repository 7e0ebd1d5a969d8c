"""``python -m pgwalk conformance [--seeds N] [--start SEED] [--kinds KIND ...]
[--json] [--no-minimise] [--quiet]`` or ``--replay FILE``: run random
scenarios of each kind on this machine's kernel and on the model, compare
every observation (results and errnos, fault outcomes, pagemap flags, VMAs,
the child's view after fork, the final smaps and mincore), and print each
difference cut down to a smallest step list as one replayable line of JSON.
Exit status 0 when all are identical (or the kernel cannot run them: the
reason goes to stderr), 1 on any difference, 2 on bad arguments."""

import argparse
import json
import os
import sys
import time

from .scenarios import KINDS
from .steps import parse_scenario, scenario_line

NAME = "conformance"
HELP = "compare the process model with the running kernel, scenario by scenario"
DEFAULT_SEEDS = 10


def _count(s):
    n = int(s)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {s}")
    return n


def _seed(s):
    n = int(s)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {s}")
    return n


def add_arguments(p):
    """The ``conformance`` command's arguments, on its subparser ``p``."""
    p.add_argument("--seeds", type=_count, default=None, metavar="N",
                   help=f"scenarios per kind (default {DEFAULT_SEEDS})")
    p.add_argument("--start", type=_seed, default=None, metavar="SEED",
                   help="the first seed (default 0): seeds START .. START+N-1")
    p.add_argument("--kinds", nargs="+", choices=list(KINDS), default=None, metavar="KIND",
                   help="the scenario kinds to run (default all: %(choices)s)")
    p.add_argument("--replay", metavar="FILE",
                   help="re-run the scenarios printed by an earlier run (its JSON lines; "
                        "other lines are skipped; - reads stdin)")
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON document")
    p.add_argument("--no-minimise", dest="minimise", action="store_false",
                   help="print differing scenarios whole, not cut down")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def capability():
    """(True, "") when this machine can run the live side, else (False,
    the reason): Linux, guard regions (MADV_GUARD_INSTALL) and pagemap with
    its guard bit (58)."""
    if not sys.platform.startswith("linux"):
        return False, f"the live kernel side needs Linux (this is {sys.platform})"
    from . import live
    return live.guard_regions_supported()


class _Progress:
    """Progress on stderr: a line rewritten in place on a terminal, else at
    most one line every few seconds."""

    def __init__(self, quiet):
        self.on = not quiet
        self.tty = self.on and sys.stderr.isatty()
        self.last = 0.0

    def show(self, text):
        """Report ``text`` as the current progress (nothing when quiet)."""
        if not self.on:
            return
        now = time.monotonic()
        if self.tty:
            sys.stderr.write(f"\r{text}\x1b[K")
            sys.stderr.flush()
        elif now - self.last >= 5:
            print(text, file=sys.stderr, flush=True)
            self.last = now

    def done(self):
        """Erase the progress line from the terminal, leaving stderr clean."""
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _check(steps, npages):
    """The first difference of ``steps`` between the model and the kernel, or None."""
    from .compare import first_difference, run_both_all
    model, kernel = run_both_all(steps, npages)
    return first_difference(steps, model, kernel)


def _examine(kind, seed, steps, npages, minimise, progress):
    """A differing scenario: re-run (does it differ again?), cut down, and
    its first difference; a JSON-ready dict."""
    from .compare import minimise as ddmin
    first = _check(steps, npages)
    out = {"kind": kind, "seed": seed, "npages": npages, "steps_before": len(steps),
           "reproduced": first is not None}
    if first is None:
        return out
    if minimise:
        if isinstance(first["step"], int):
            steps = steps[:first["step"] + 1]     # later steps cannot change it

        def differs(s):
            progress.show(f"{kind} seed {seed}: minimising, {len(s)} steps")
            return _check(s, npages) is not None
        steps = ddmin(steps, differs)
        first = _check(steps, npages) or first
    out.update(steps=[list(s) for s in steps], first_difference=first)
    return out


def _line(d):
    return scenario_line(d["kind"], d["seed"], d["npages"], d["steps"], d["first_difference"])


def _where(first):
    step = first["step"]
    at = "at the end" if step == "final" else "model error" if step is None else f"at step {step}"
    return f"{at}: {first['what']}"


def _run_seeds(a, progress):
    from .compare import first_difference, run_both_all
    n = a.seeds or DEFAULT_SEEDS
    start = a.start or 0
    kinds = a.kinds or list(KINDS)
    results, diffs = {}, []
    for kind in kinds:
        gen = KINDS[kind]
        same, found = 0, []
        for i, seed in enumerate(range(start, start + n)):
            progress.show(f"{kind}: seed {seed} ({i + 1}/{n})")
            steps, npages = gen(seed)
            model, kernel = run_both_all(steps, npages)
            if first_difference(steps, model, kernel) is None:
                same += 1
            else:
                found.append(_examine(kind, seed, steps, npages, a.minimise, progress))
        progress.done()
        results[kind] = {"identical": same, "total": n, "seeds": [start, start + n]}
        diffs += found
        if not a.json:
            print(f"{kind}: {same}/{n} identical", flush=True)
            for d in found:
                if not d["reproduced"]:
                    print(f"  {kind} seed {d['seed']}: differed once, identical when re-run "
                          f"(not minimised)", flush=True)
                    continue
                print(f"  {kind} seed {d['seed']}: differs {_where(d['first_difference'])} "
                      f"({len(d['steps'])} of {d['steps_before']} steps)", flush=True)
                print(_line(d), flush=True)
    if a.json:
        print(json.dumps({"kernel": os.uname().release, "skipped": None, "kinds": results,
                          "differences": diffs}))
    return 1 if diffs else 0


def _read_scenarios(path):
    """The scenarios (kind, seed, npages, steps) in the JSON lines of
    ``path``; ``ValueError`` naming the line on a malformed one."""
    f = sys.stdin if path == "-" else open(path)
    try:
        lines = f.read().splitlines()
    finally:
        if f is not sys.stdin:
            f.close()
    out = []
    for no, line in enumerate(lines, 1):
        if not line.lstrip().startswith("{"):
            continue
        try:
            out.append(parse_scenario(line))
        except ValueError as e:
            raise ValueError(f"{path}, line {no}: {e}") from None
    if not out:
        raise ValueError(f"{path}: no scenario (a JSON line with \"npages\" and \"steps\")")
    return out


def _replay(a, progress):
    try:
        scenarios = _read_scenarios(a.replay)
    except (OSError, ValueError) as e:
        print(f"pgwalk conformance: {e}", file=sys.stderr)
        return 2
    results, differing = [], 0
    for i, (kind, seed, npages, steps) in enumerate(scenarios):
        progress.show(f"replay {i + 1}/{len(scenarios)}")
        first = _check(steps, npages)
        progress.done()
        differing += first is not None
        d = {"kind": kind, "seed": seed, "npages": npages, "steps": [list(s) for s in steps],
             "identical": first is None, "first_difference": first}
        results.append(d)
        if not a.json:
            name = f"{kind} seed {seed}" if kind is not None else f"scenario {i + 1}"
            if first is None:
                print(f"{name}: identical", flush=True)
            else:
                print(f"{name}: differs {_where(first)}", flush=True)
                print(_line(d), flush=True)
    if a.json:
        print(json.dumps({"kernel": os.uname().release, "skipped": None, "replayed": results}))
    return 1 if differing else 0


def run(a):
    """Run the ``conformance`` command on parsed arguments ``a``; the exit status."""
    if a.replay is not None and (a.seeds is not None or a.start is not None or a.kinds is not None):
        print("pgwalk conformance: --replay takes no --seeds, --start or --kinds", file=sys.stderr)
        return 2
    ok, why = capability()
    if not ok:
        print(f"pgwalk conformance: skipped: {why}", file=sys.stderr)
        if a.json:
            print(json.dumps({"kernel": os.uname().release, "skipped": why}))
        return 0
    progress = _Progress(a.quiet)
    if a.replay is not None:
        return _replay(a, progress)
    return _run_seeds(a, progress)
