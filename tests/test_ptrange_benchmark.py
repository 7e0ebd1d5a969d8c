"""benchmarks/ptrange.py (callbacks against pt_range_walk, tier by tier)
runs end to end on tiny models: a smoke test of the harness, its checks
(both walkers' answers agree) and its bookkeeping, never of a timing."""

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _main(args):
    sys.path.insert(0, str(BENCH))
    try:
        import ptrange
        return ptrange, ptrange.main(args)
    finally:
        sys.path.remove(str(BENCH))


def test_ptrange_benchmark_runs_every_tier_and_shape(tmp_path, capsys):
    """2 MiB per shape, every tier (the Cython examples built as their tests
    build them): steps per page as the walkers take them."""
    mod, res = _main(["--mib", "2", "--rounds", "1", "--min-time", "0.0005",
                      "--json", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    for word in ("builtin C", "python", "MM.mincore", "[memory]", "pt/cb") + mod.SHAPES:
        assert word in text
    cases = {c["shape"]: c for c in json.loads((tmp_path / "r.json").read_text())["cases"]}
    assert set(cases) == set(mod.SHAPES) and all(c["pages"] == 512 for c in cases.values())
    for c in cases.values():
        for tier, t in c["tiers"].items():
            assert t["callbacks"]["ns_per_page"] > 0 and t["pt_range"]["ns_per_page"] > 0, tier
    dense, ptemapped, thp = cases["dense"]["tiers"], cases["ptemapped"]["tiers"], cases["thp"]["tiers"]
    # pt_range: one step per order-0 page (+ the final one), one per 512-PTE batch or PMD
    assert dense["builtin C"]["pt_range"]["calls_per_page"] == 513 / 512
    assert ptemapped["builtin C"]["pt_range"]["calls_per_page"] == 2 / 512
    assert thp["python"]["pt_range"]["calls_per_page"] == 2 / 512
    # mixed: the hole punch at page 3 leaves folios of 256..8 pages (6), pages
    # 0-1, 2 and 3 (faulted back), and the split at the page after the hole
    # pages 4, 5 and 6-7: 12 folios, one step each, and the final one
    assert cases["mixed"]["tiers"]["builtin C"]["pt_range"]["calls_per_page"] == 13 / 512
    # callbacks: one pmd_entry per table (kernel shape), one pte_entry per PTE (python)
    assert dense["builtin C"]["callbacks"]["calls_per_page"] == 1 / 512
    assert dense["python"]["callbacks"]["calls_per_page"] == 513 / 512
    assert dense["cimport C"]["pt_range"]["calls_per_page"] == 513 / 512    # the examples built
    assert [r["label"] for r in res["targets"]] == [t[0] for t in mod.TARGETS]


def test_ptrange_benchmark_plot(tmp_path):
    import importlib.util

    import pytest
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("--plot needs matplotlib, the optional 'plot' extra")
    _main(["--mib", "2", "--rounds", "1", "--min-time", "0.0005", "--shapes", "dense", "thp",
           "--no-cimport", "--plot", str(tmp_path / "p.png")])
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
