"""``python -m pgwalk trace``: every golden scenario replays and checks from
the shell (one subprocess over the corpus) and in process (per file), on
both walkers; a planted mismatch names its first differing event; bad input
is a message naming the file and scenario, exit 2, never a traceback."""

import copy
import json
from pathlib import Path

import pytest

from pgwalk import cli
from pgwalk.walker import trace as T

from helpers.support import load_golden
from helpers.cli import run_pgwalk

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = load_golden()
PUDLEAF = next(p for p in SCENARIOS if p.stem == "h-4l-pudleaf-again")
INSTALL = [p for p in SCENARIOS if p.stem.startswith("h-4l-install-allocfail")]


def pgwalk_trace(*args, stdin=None):
    """Run ``python -m pgwalk trace ARGS`` (the pgwalk in use); the completed process."""
    return run_pgwalk("trace", *args, stdin=stdin)


def main(args, capsys):
    """``pgwalk.cli.main(["trace", ...])`` in process: (status, stdout, stderr)."""
    status = cli.main(["trace", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def scenario(path):
    return json.loads(Path(path).read_text())


def test_install_and_fault_injection_scenarios_are_in_the_corpus():
    assert len(INSTALL) >= 2
    assert all("alloc_fail_at" in scenario(p) for p in INSTALL)
    apis = {scenario(p)["call"]["api"] for p in SCENARIOS}
    assert apis == set(T.APIS)


@pytest.mark.parametrize("flags", [[], ["--reference"]], ids=["compiled", "reference"])
def test_whole_corpus_checks_in_one_subprocess(flags):
    r = pgwalk_trace("--check", *flags, *SCENARIOS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == ""
    assert f"{len(SCENARIOS)} scenarios, 0 mismatches" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("walker", ["compiled", "reference"])
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_each_scenario_checks_in_process(path, walker):
    scn = scenario(path)
    assert T.check_scenario(scn, walker) is None
    got = T.run_scenario(scn, walker)
    # the package's result is in the corpus' shape, runs compressed the same way
    assert got["final_entries"] == scn["result"]["final_entries"]
    assert got["trace"] == scn["result"]["trace"]
    assert set(got["counters"]) <= set(scn["result"]["counters"])


def test_output_is_the_scenario_with_pgwalks_result(capsys):
    status, out, err = main([PUDLEAF], capsys)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 1
    got = json.loads(lines[0])
    want = scenario(PUDLEAF)
    assert got["id"] == want["id"]
    assert list(got) == list(want)                      # fields in place, result included
    assert {k: v for k, v in got.items() if k != "result"} == \
        {k: v for k, v in want.items() if k != "result"}
    assert got["result"]["trace"] == want["result"]["trace"]
    assert got["result"]["outcome"] == "ok"
    assert got["result"]["counters"]["split_pud"] == 1


def test_a_scenario_without_result_gets_one(capsys, tmp_path):
    scn = scenario(PUDLEAF)
    del scn["result"]
    f = tmp_path / "bare.json"
    f.write_text(json.dumps(scn, indent=2))
    status, out, _ = main([f], capsys)
    assert status == 0
    assert json.loads(out)["result"]["ret"] == 0
    # --check needs a result to check against
    status, out, err = main(["--check", f], capsys)
    assert status == 2 and str(f) in err and "result" in err


def test_planted_mismatch_names_the_first_differing_event(tmp_path, capsys):
    scn = scenario(PUDLEAF)
    good = copy.deepcopy(scn)
    scn["result"]["trace"][1][3] = "table"              # the kernel "saw" a table the 2nd time
    scn["result"]["ret"] = -12                          # a later difference, not reported
    f = tmp_path / "planted.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps(scn) + "\n")
    status, out, err = main(["--check", f], capsys)
    assert status == 1
    lines = out.splitlines()
    assert len(lines) == 1, out                          # only the planted one differs
    assert f"{f}:2" in lines[0] and "h-4l-pudleaf-again" in lines[0]
    assert "trace[1]" in lines[0]
    assert 'expected ["pud_entry", 2147483648, 2151677952, "table"]' in lines[0]
    assert 'got ["pud_entry", 2147483648, 2151677952, "leaf"]' in lines[0]
    assert "2 scenarios, 1 mismatch" in err
    # the same through the subprocess, with the reference walker
    r = pgwalk_trace("--check", "--reference", f)
    assert r.returncode == 1 and "trace[1]" in r.stdout


@pytest.mark.parametrize("plant, field", [
    (lambda r: r["trace"].pop(), "trace[2]"),
    (lambda r: r.__setitem__("ret", 5), "ret"),
    (lambda r: r["final_entries"][-1].__setitem__("pfn", 1), "final_entries[3]"),
    (lambda r: r["counters"].__setitem__("split_pud", 0), "counters.split_pud"),
    (lambda r: r["counters"]["alloc"].__setitem__("pte", 2), "counters.alloc.pte"),
])
def test_first_difference_by_field(plant, field):
    scn = scenario(PUDLEAF)
    plant(scn["result"])
    d = T.check_scenario(scn)
    assert d is not None and str(d).startswith(field + ":"), str(d)


def test_json_lines_and_stdin(capsys, tmp_path):
    lines = [json.dumps(scenario(p)) for p in SCENARIOS[:5]]
    f = tmp_path / "five.jsonl"
    f.write_text("\n".join(lines) + "\n")
    status, out, _ = main([f], capsys)
    assert status == 0
    assert [json.loads(x)["id"] for x in out.splitlines()] == [p.stem for p in SCENARIOS[:5]]
    r = pgwalk_trace("--check", "-", stdin="\n".join(lines))
    assert r.returncode == 0, r.stderr
    assert "5 scenarios, 0 mismatches" in r.stderr
    r = pgwalk_trace("-", stdin=PUDLEAF.read_text())
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == "h-4l-pudleaf-again"


def _bad(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return f


def _mutated(change):
    scn = scenario(PUDLEAF)
    change(scn)
    return json.dumps(scn)


def _null_pte_entry(scn):
    # install_pte without pte_entry over a populated PTE: the kernel calls a NULL pte_entry
    scn["call"] = {"api": "walk_page_range_mm", "start": 2145419264, "end": 2145423360}
    scn["ops"]["callbacks"] = {"install_pte": {"ret": 0}}


BAD = {
    "not-json": ("{ this is not json", "not JSON"),
    "wrong-format": (_mutated(lambda s: s.__setitem__("format", "kpw-trace/2")), "format"),
    "unknown-api": (_mutated(lambda s: s["call"].__setitem__("api", "walk_page_mapping")),
                    "call.api"),
    "unknown-callback": (_mutated(lambda s: s["ops"]["callbacks"].__setitem__("pte_entri", {})),
                         "pte_entri"),
    "bad-level": (_mutated(lambda s: s["entries"][0].__setitem__("level", "p4d")), "level"),
    "bad-kind": (_mutated(lambda s: s["entries"][4].__setitem__("kind", "leaf")), "kind"),
    "vma-index": (_mutated(lambda s: s.__setitem__("call", {"api": "walk_page_vma", "vma": 3})),
                  "call.vma"),
    "overlapping-vmas": (_mutated(lambda s: s["vmas"].append(dict(s["vmas"][0]))), "vmas[1]"),
    "non-canonical": (_mutated(lambda s: s["call"].__setitem__("end", 1 << 60)), "refused"),
    "null-pte-entry": (_mutated(_null_pte_entry), "BUG"),
    "not-an-object": ("[1, 2]", "scenario must be an object"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_naming_file_and_scenario(case, tmp_path, capsys):
    text, what = BAD[case]
    f = _bad(tmp_path, f"{case}.json", text)
    for args in ([f], ["--check", f]):
        status, out, err = main(args, capsys)
        assert status == 2, (case, out, err)
        assert str(f) in err and what in err, err
        if case not in ("not-json", "not-an-object"):
            assert "h-4l-pudleaf-again" in err
        assert "Traceback" not in err


def test_bad_input_in_a_subprocess_is_a_message(tmp_path):
    f = _bad(tmp_path, "mixed.jsonl", PUDLEAF.read_text().replace("\n", " ") + "\n"
             + _mutated(_null_pte_entry) + "\n")
    r = pgwalk_trace(f)
    assert r.returncode == 2
    assert len(r.stdout.splitlines()) == 1               # the good scenario still ran
    assert f"{f}:2 (h-4l-pudleaf-again)" in r.stderr and "BUG" in r.stderr
    assert "Traceback" not in r.stderr
    r = pgwalk_trace(tmp_path / "missing.json")
    assert r.returncode == 2 and "missing.json" in r.stderr and "Traceback" not in r.stderr


def test_bad_input_beats_a_mismatch(tmp_path, capsys):
    scn = scenario(PUDLEAF)
    scn["result"]["ret"] = 1
    f = _bad(tmp_path, "both.jsonl", json.dumps(scn) + "\n" + "nonsense\n")
    status, out, err = main(["--check", f], capsys)
    assert status == 2
    assert "ret:" in out and "not JSON" in err and f"{f}:2" in err


def test_a_runaway_walk_is_stopped():
    scn = scenario(PUDLEAF)
    with pytest.raises(T.ScenarioError, match="without ending"):
        T.run_scenario(scn, max_events=2)


def test_the_hand_written_example_of_the_docs_runs_as_shown():
    import re
    doc = (ROOT / "docs" / "trace-format.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, re.S)
    scn = json.loads(blocks[0])
    got = T.run_scenario(scn)
    shown = blocks[1].replace('["... as entries ..."]', "[]")
    want = json.loads(shown)
    assert got["trace"] == want["trace"]
    assert got["counters"] == want["counters"] and got["ret"] == want["ret"]
    assert got["final_entries"] == scn["entries"]
    for walker in ("compiled", "reference"):
        assert T.first_difference(4, got, T.run_scenario(scn, walker)) is None
