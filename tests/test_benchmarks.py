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


def test_image_benchmark_runs_and_agrees_with_numpy():
    """benchmarks/images.py on a 1 GiB image: it checks pgwalk's mappings
    against its numpy walker and Volatility's mapping() itself (assertions
    inside the script)."""
    sys.path.insert(0, str(BENCH))
    try:
        import images
        res = images.main(["--gib", "1", "--samples", "1", "--vol-mib", "2", "--fixture-seeds", "0"])
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
