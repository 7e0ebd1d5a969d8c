"""``python -m pgwalk trace [--check] [--reference] FILE...``: replay
kpw-trace/1 scenarios (docs/trace-format.md) and print what the walker did,
one JSON object per scenario and line: the scenario with its "result" as
pgwalk produced it.  With --check, compare with the result stored in each
scenario instead and print the first differing event of each that differs.
Exit status: 0 all ran (and matched), 1 a mismatch, 2 bad input."""

import json
import os
import sys

from .trace import ScenarioError, check_scenario, read_scenarios, run_scenario

NAME = "trace"
HELP = "replay kpw-trace/1 walker scenarios (JSON), or --check them against their stored result"


def add_arguments(p):
    """The ``trace`` command's arguments, on its subparser ``p``."""
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="scenario file: one JSON object, or JSON lines of scenarios; - for stdin")
    p.add_argument("--check", action="store_true",
                   help="compare with each scenario's stored result; print the first difference "
                        "of each mismatch (exit 1 if any)")
    p.add_argument("--reference", action="store_true",
                   help="run the pure-Python reference walker instead of the compiled one")


def _read(path):
    """The text of ``path`` ("-": stdin) and the name to report it by."""
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    with open(path, encoding="utf-8") as f:
        return f.read(), path


def _label(where, scn):
    """``where`` plus the scenario's id when it has one."""
    sid = scn.get("id") if isinstance(scn, dict) else None
    return f"{where} ({sid})" if isinstance(sid, str) else where


def run(a):
    """Run the ``trace`` command on parsed arguments ``a``; the exit status."""
    walker = "reference" if a.reference else "compiled"
    out, err = sys.stdout, sys.stderr
    status = 0
    total = mismatched = 0
    for path in a.files:
        try:
            text, name = _read(path)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"pgwalk trace: {path}: cannot read: {exc}", file=err)
            status = 2
            continue
        for where, scn in read_scenarios(text, name):
            if isinstance(scn, ScenarioError):
                print(f"pgwalk trace: {scn}", file=err)
                status = 2
                continue
            label = _label(where, scn)
            total += 1
            try:
                if a.check:
                    diff = check_scenario(scn, walker)
                else:
                    result = run_scenario(scn, walker)
            except ScenarioError as exc:
                print(f"pgwalk trace: {label}: {exc.message}", file=err)
                status = 2
                continue
            except Exception as exc:        # noqa: BLE001 -- a report, never a traceback
                print(f"pgwalk trace: {label}: pgwalk failed on this scenario: "
                      f"{type(exc).__name__}: {exc}", file=err)
                status = 2
                continue
            if a.check:
                if diff is not None:
                    mismatched += 1
                    print(f"{label}: {diff}", file=out)
                    status = max(status, 1)
            else:
                scn = dict(scn)
                scn["result"] = result
                try:
                    out.write(json.dumps(scn, separators=(",", ":")) + "\n")
                except BrokenPipeError:         # the reader stopped (| head): so do we
                    _quiet_stdout()
                    return status
    if a.check:
        print(f"pgwalk trace: {total} scenario{'s' if total != 1 else ''}, "
              f"{mismatched} mismatch{'es' if mismatched != 1 else ''}"
              f"{', bad input' if status == 2 else ''}", file=err)
    try:
        out.flush()
    except BrokenPipeError:
        _quiet_stdout()
    return status


def _quiet_stdout():
    """Point stdout at /dev/null, so that exiting does not report the closed pipe again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
