"""Replay the kernel's own 6.13 walker traces (tests/data/golden, produced by
compiling mm/pagewalk.c unchanged; see FORMAT.md there) through the public
API, with both walkers, through the package's scenario runner
(``pgwalk.walker.trace``, which ``python -m pgwalk trace`` uses too): every
trace, return value, final table and counter must match."""

import pytest

from helpers.support import IMPLS, expected, load, load_golden, replay

SCENARIOS = load_golden()


def test_corpus_is_complete():
    assert len(SCENARIOS) == 221


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_golden(path, impl):
    scn = load(path)
    assert scn["result"]["outcome"] == "ok"
    got = replay(scn, impl)
    want = expected(scn)
    assert got["trace"] == want["trace"], scn["description"]
    assert got["ret"] == want["ret"], scn["description"]
    assert got["final_entries"] == want["final_entries"], scn["description"]
    if "final_alt_entries" in want:
        assert got["final_alt_entries"] == want["final_alt_entries"]
    assert got["counters"] == want["counters"], scn["description"]
