"""The benchmark suite runs end to end on a tiny model (a smoke test: it
checks the harness and its bookkeeping, never a timing)."""

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_suite_runs_and_reports_every_tier(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    try:
        import run
        out = run.main(["--levels", "4", "--sizes", "0.015625", "--shapes", "dense", "thp",
                        "--samples", "1", "--min-time", "0.001", "--no-extra",
                        "--json", str(tmp_path / "r.json")])
    finally:
        sys.path.remove(str(BENCH))
    text = capsys.readouterr().out
    for tier in ("inline", "c-pmd", "c-slot", "batch", "python", "[memory]", "[py-call]"):
        assert tier in text
    res = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [(r["shape"], r["pages"]) for r in res] == [("dense", 4096), ("thp", 4096)]
    dense = res[0]
    # 4096 pages in 8 PTE tables: one pte_entry call per page, one pmd_entry per table
    assert dense["walk_stats"]["calls"] == {"pte_entry": 4096, "pmd_entry": 8}
    assert res[1]["walk_stats"]["calls"] == {"pmd_entry": 8}      # THPs seen whole, not split
    assert out["results"][0]["tiers"]["c-slot"]["median"] > 0


def test_plot_is_written(tmp_path):
    import importlib.util

    import pytest
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("--plot needs matplotlib, the optional 'plot' extra")
    sys.path.insert(0, str(BENCH))
    try:
        import run
        run.main(["--levels", "4", "--sizes", "0.015625", "--shapes", "sparse", "--samples", "1",
                  "--min-time", "0.001", "--no-extra", "--plot", str(tmp_path / "p.png")])
    finally:
        sys.path.remove(str(BENCH))
    png = (tmp_path / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000


def test_image_benchmark_runs_and_agrees_with_numpy(tmp_path):
    """benchmarks/images.py on a 1 GiB image: it checks pgwalk's mappings
    against its numpy walker and Volatility's mapping() itself (assertions
    inside the script).  Without the QEMU guest's dumps (``--qemu`` names an
    empty folder): tests/image/test_image_qemu.py checks those, and their
    find_roots rows alone took 9 of this test's 15 s."""
    sys.path.insert(0, str(BENCH))
    try:
        import images
        res = images.main(["--gib", "1", "--samples", "1", "--vol-mib", "2", "--fixture-seeds", "0",
                           "--roots-mib", "64", "--no-peers",       # the peers: test_image_peers.py
                           "--qemu", str(tmp_path)])
    finally:
        sys.path.remove(str(BENCH))
    assert set(res) >= {"mappings()", "numpy vectorised walker", "translate() (1M random VAs, per VA)",
                        "C op (MincoreOp)", "batch (numpy per PTE table)", "Python (per PTE)",
                        "fixture 0: mappings() per leaf"}
    try:
        import volatility3  # noqa: F401
    except ImportError:
        return
    # with Volatility installed its rows are there (its answer is checked inside the script)
    assert {"Volatility 3 Intel32e mapping()", "fixture 0: Volatility 3 mapping() per leaf"} <= set(res)


# --- the front door: the summary, the progress line, the --plot check ----------------------

def _run_module():
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
    return run


def _case(levels, shape, size_gib, tiers, floors):
    return {"levels": levels, "shape": shape, "size_gib": size_gib,
            "tiers": {k: {"median": v} for k, v in tiers.items()},
            "floors": {k: (v if isinstance(v, dict) else {"median": v}) for k, v in floors.items()}}


def _fake_results():
    floors = {"memory": 0.5, "py-call": 40.0, "kernel-mincore": {"median": 2.0, "measured_gib": 1.0}}
    return [
        _case(4, "dense", 1.0, {"inline": 0.6, "c-pmd": 0.5, "c-slot": 2.2, "lowlevel": 2.4,
                                "batch": 6.0, "python": 44.0},
              {**floors, "model-mincore": 0.4, "kernel-pagemap_scan": 10.0, "model-pagemap": 3.0}),
        _case(4, "dense", 16.0, {"inline": 1.5, "c-pmd": 0.4, "c-slot": 1.8, "lowlevel": 2.5,
                                 "batch": 4.0, "python": 52.0}, floors),
        _case(4, "thp", 16.0, {"inline": 0.03, "c-pmd": 0.04, "c-slot": 0.04, "batch": 0.06, "python": 0.1},
              {"memory": 0.001, "py-call": 40.0, "kernel-mincore": {"median": 0.3, "measured_gib": 8.0}}),
        _case(5, "dense", 16.0, {"inline": 0.5, "c-pmd": 0.5, "c-slot": 3.0, "batch": 4.0, "python": 40.0},
              floors),
    ]


def test_headline_reports_each_tier_against_its_target_floor():
    run = _run_module()
    results = _fake_results()
    assert run.headline_case(results) == (4, "dense", 16.0)      # 4-level, dense, the largest size
    rows = {r["label"]: r for r in run.headline_rows(results)}
    assert list(rows) == ["inline", "c-pmd", "c-slot", "lowlevel", "batch", "python",
                          "MM.mincore", "MM.pagemap"]
    inline = rows["inline"]      # the inline target is stated against the memory floor, dense rows
    assert (inline["size_gib"], inline["floor"], inline["ratio"], inline["target"], inline["met"]) == \
        (16.0, "memory", 3.0, 2.0, False)
    assert inline["all"][:2] == (2, 3)                 # 0.6/0.5 and 0.5/0.5 met, 1.5/0.5 not; thp not counted
    c_slot = rows["c-slot"]                             # every shape counts for the C tiers
    assert (c_slot["floor"], c_slot["ratio"], c_slot["met"], c_slot["all"][:2]) == \
        ("kernel-mincore", 0.9, True, (2, 4))
    assert rows["lowlevel"]["target"] is None and rows["lowlevel"]["met"] is None
    assert rows["python"]["floor"] == "py-call" and rows["python"]["ratio"] == 52.0 / 40.0
    assert rows["python"]["met"] is False and rows["python"]["walked_gib"] == 1.0
    # measured only at 1 GiB: reported there, flagged
    assert rows["MM.mincore"]["size_gib"] == 1.0 and rows["MM.mincore"]["met"] is True
    assert rows["MM.pagemap"]["floor"] == "kernel-pagemap_scan"

    text = run.format_headline(run.headline_rows(results), {
        "threads_4": {"levels": 4, "size_gib": 16.0, "speedup": 0.9, "memory_speedup": 0.8, "cpus": 2},
        "sparse_space_4": {"levels": 4, "pages": 1000, "ratio": 0.7}})
    assert "Summary: 4-level dense, 16 GiB" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("inline "))
    assert line.split() == ["inline", "1.500", "memory", "0.500", "3.00x", "<=", "2x", "no",
                            "2", "of", "3", "(dense)"]
    line = next(ln for ln in text.splitlines() if ln.startswith("c-slot "))
    assert "kernel-mincore (at 1 GiB)" in line and " yes " in line
    assert "python*" in text and "the first 1 GiB of the range" in text
    assert "MM.mincore*" in text and "at 1 GiB, the largest size where it is measured" in text
    # the cross-case figures say which way is better, and whether the target is met
    assert "speed-up 0.90x (higher is better; target >= 1.7x: missed)" in text
    assert "0.70x the cost (lower is better; target <= 2x: met)" in text
    # the columns are explained once
    assert text.count("\nColumns\n") == 1
    for col in ("tier", "ns/page", "min-max", "Mpages/s", "floor", "x floor", "target", "all cases"):
        assert f"\n  {col} " in text


def test_progress_line_and_time_left():
    run = _run_module()
    assert [run.format_duration(s) for s in (0.4, 42, 60, 185, 3720)] == \
        ["0 s", "42 s", "1 min 00 s", "3 min 05 s", "1 h 02 min"]
    assert run.eta_seconds(0.0, 0.0, 10.0) is None                 # nothing finished: no estimate
    assert run.eta_seconds(10.0, 2.0, 4.0) == 20.0                  # 5 s per unit of weight
    assert run.eta_seconds(10.0, 2.0, 4.0, weight_current=1.0, in_current=2.0) == 23.0
    assert run.eta_seconds(10.0, 2.0, 4.0, weight_current=1.0, in_current=9.0) == 20.0  # never below
    line = run.format_progress(5, 20, 75, 130, "4-level thp 4 GiB", width=20)
    assert line == "[#####---------------] 5/20  1 min 15 s elapsed, about 2 min 10 s left  (4-level thp 4 GiB)"
    assert "estimating time left" in run.format_progress(0, 20, 1, None)
    assert run.format_progress(20, 20, 9, 0).startswith("[" + "#" * 20 + "] 20/20")
    # larger cases weigh more; THP up to the kernel floor's 8 GiB cap
    assert run.step_weight("dense", 1024) > run.step_weight("dense", 1) > 1.0 == run.step_weight("empty", 1024)
    assert run.step_weight("thp", 1024) == run.step_weight("thp", 8)

    # the driver: one plain line per step when stderr is not a terminal
    import io
    clock = iter([0.0, 0.0, 0.0, 4.0, 4.0]).__next__          # init, start(0)+line, start(1)+line
    stream = io.StringIO()
    bar = run.Progress([("a", 1.0), ("b", 1.0), ("c", 3.0)], stream=stream, clock=clock)
    bar.start(0)
    bar.tick()                                   # not a terminal: ticks print nothing
    bar.start(1)
    out = stream.getvalue().splitlines()
    assert out == ["[--------------------] 0/3  0 s elapsed, estimating time left  (a)",
                   "[######--------------] 1/3  4 s elapsed, about 16 s left  (b)"]


def test_plot_without_matplotlib_fails_before_running(monkeypatch, capsys, tmp_path):
    run = _run_module()
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # import matplotlib -> ImportError

    def no_run(*a, **k):
        raise AssertionError("a case ran before the --plot check")
    monkeypatch.setattr(run, "in_worker", no_run)
    import pytest
    with pytest.raises(SystemExit) as e:
        run.main(["--quick", "--plot", str(tmp_path / "p.png")])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "pip install 'pgwalk[plot]'" in err
    assert not (tmp_path / "p.png").exists()


def test_plot_without_matplotlib_exits_nonzero_as_a_script(tmp_path):
    """The same from the command line: a fresh interpreter where matplotlib
    cannot be imported; it must exit at once, non-zero, naming the extra."""
    import subprocess
    import time
    code = ("import runpy, sys; sys.modules['matplotlib'] = None; "
            f"sys.argv = ['run.py', '--quick', '--plot', {str(tmp_path / 'p.png')!r}]; "
            f"runpy.run_path({str(BENCH / 'run.py')!r}, run_name='__main__')")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "pip install 'pgwalk[plot]'" in p.stderr
    assert "All cases" not in p.stdout and time.perf_counter() - t0 < 30
    assert not (tmp_path / "p.png").exists()
