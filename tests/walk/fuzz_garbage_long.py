"""Long garbage-table fuzz run (not collected by pytest): N random tables
(tests/helpers/garbage.py recipes: garbage at every level, aliases, freed links)
walked by the compiled walker with C built-in ops only (CountOp, MincoreOp,
FillOp as install_pte), in worker processes.

    python tests/walk/fuzz_garbage_long.py [-n 100000] [--seed 0] [--jobs 2] [--check-every 50]

Every table: build, ``mm.validate()``, 1-3 walks of any kind (user and kernel
addresses, init_mm, install walks, fault injection), ``mm.validate()`` after
each.  Every ``--check-every``-th table is also run through the reference
walker with the ops' Python mirrors and must give the same results, tables
and counters.  A worker that dies (a crash: a signal) is restarted after the
seed it died on, which is counted and printed; a worker that makes no
progress for ``--hang-after`` seconds is killed and the seed counted as a
hang; so are exceptions, validate() failures and mismatches.  Exit status 0 only if all are zero.
"""

import argparse
import os
import random
import subprocess
import sys
import threading
import time
import traceback

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
# The workers import the helpers (tests/helpers/) and pgwalk through PYTHONPATH:
# tests/ and the repository root first (its in-place build), as pytest sees them.
WORKER_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [ROOT, TESTS] + [p for p in [os.environ.get("PYTHONPATH")] if p]))

C_OPS = ["count", "mincore"]


def recipe_for(seed):
    from helpers import garbage as G
    rng = random.Random(seed)
    r = G.random_recipe(rng, livelock=True)
    for step in r["steps"]:
        if step["ops"] not in ("count", "mincore", "fill"):
            step["ops"] = rng.choice(C_OPS + (["fill"] if step["api"] == "walk_page_range_mm" else []))
            step["script"] = {}
    return r


def worker(first, last, check_every):
    from helpers import garbage as G
    from helpers.support import CYTHON, REFERENCE
    out = sys.stdout
    crash_at = int(os.environ.get("FUZZ_LONG_SELFTEST_CRASH_AT", -1))   # harness self-test
    for seed in range(first, last):
        if seed == crash_at:
            os.abort()
        status = "ok"
        try:
            r = recipe_for(seed)
            compare = bool(check_every) and seed % check_every == 0
            got = G.run(r, CYTHON, c_ops=True, dump=compare)
            if compare:
                if G.run(r, REFERENCE, c_ops=False) != got:
                    status = "mismatch"
        except AssertionError as e:                 # InvariantError is one
            status = "invalid " + repr(e)[:200]
        except Exception as e:
            status = "exception " + "".join(traceback.format_exception_only(e)).strip()[:200]
        out.write(f"{seed} {status}\n")
        out.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100_000, help="tables (default 100000)")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--check-every", type=int, default=50,
                    help="also compare with the reference walker every k-th table (0: never)")
    ap.add_argument("--hang-after", type=float, default=30.0,
                    help="seconds without progress after which a worker is killed (a hang)")
    ap.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], a.worker[1], a.check_every)
        return 0
    t0 = time.time()
    first, last = a.seed, a.seed + a.n
    bounds = [first + (last - first) * i // a.jobs for i in range(a.jobs + 1)]
    todo = [(bounds[i], bounds[i + 1]) for i in range(a.jobs) if bounds[i] < bounds[i + 1]]
    counts = {"ok": 0, "mismatch": 0, "invalid": 0, "exception": 0, "crash": 0, "hang": 0}
    last_seen = {}                 # worker -> time of its last line
    hung = set()

    def watchdog():
        while not finished.is_set():
            now = time.time()
            with lock:
                for p, t in list(last_seen.items()):
                    if now - t > a.hang_after and p.poll() is None:
                        hung.add(p)
                        p.kill()
            time.sleep(1)
    finished = threading.Event()
    compared = [0]
    problems = []
    lock = threading.Lock()

    def run_range(lo, hi):
        # one worker process at a time for [lo, hi); a crash (death by a
        # signal or any non-zero exit) is counted at the seed after the last
        # one reported, and a new worker resumes after it
        while lo < hi:
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", str(lo),
                                  str(hi), "--check-every", str(a.check_every)],
                                 stdout=subprocess.PIPE, text=True, env=WORKER_ENV)
            with lock:
                last_seen[p] = time.time()
            nxt = lo
            for line in p.stdout:
                seed, _, status = line.rstrip("\n").partition(" ")
                seed = int(seed)
                kind = status.split(" ")[0]
                nxt = seed + 1
                with lock:
                    last_seen[p] = time.time()
                    counts[kind] += 1
                    compared[0] += bool(a.check_every) and seed % a.check_every == 0
                    if kind != "ok":
                        problems.append((seed, status))
                    done = sum(counts.values())
                    if done % 10000 == 0:
                        print(f"{done} tables, {time.time() - t0:.0f} s, {counts}", flush=True)
            rc = p.wait()
            with lock:
                last_seen.pop(p, None)
            if rc == 0:
                return
            with lock:
                if p in hung:
                    counts["hang"] += 1
                    problems.append((nxt, f"hang: no progress for {a.hang_after} s, killed"))
                else:
                    counts["crash"] += 1
                    problems.append((nxt, f"crash: worker exit status {rc}"))
            lo = nxt + 1

    threads = [threading.Thread(target=run_range, args=r) for r in todo]
    dog = threading.Thread(target=watchdog, daemon=True)
    dog.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished.set()
    compared = compared[0]
    dt = time.time() - t0
    total = sum(counts.values())
    print(f"tables: {total} (seeds {first}..{last - 1}), time {dt:.1f} s "
          f"({total / dt:.0f} tables/s), jobs {a.jobs}")
    print(f"compared with the reference walker: {compared}")
    print(f"results: {counts}")
    for seed, status in problems[:50]:
        print(f"  seed {seed}: {status}")
    return 0 if total == a.n and all(counts[k] == 0 for k in counts if k != "ok") else 1


if __name__ == "__main__":
    sys.exit(main())
