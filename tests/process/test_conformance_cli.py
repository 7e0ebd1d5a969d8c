"""``python -m pgwalk conformance``: the live differential as a command.

On this machine's kernel a short run is clean (the conformance check of a
CI run); a difference planted in the model is cut down to its minimal step
list and printed as a JSON line that ``--replay`` reproduces; a kernel
without guard regions or pagemap's guard bit is a clean skip with the
reason; bad arguments exit 2."""

import ctypes
import errno
import json
import os
import sys

import pytest

import pgwalk as P

from helpers.cli import run_pgwalk
from pgwalk.cli import main
from pgwalk.process.conformance import KINDS
from pgwalk.process.conformance import cli as conformance_cli
from pgwalk.process.conformance.compare import minimise
from pgwalk.process.mm import MM

RW = P.PROT_READ | P.PROT_WRITE
PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the live side needs Linux")


def _live():
    from pgwalk.process.conformance import live
    return live


def _supported():
    if not sys.platform.startswith("linux"):
        return False, "not Linux"
    return _live().guard_regions_supported()


needs_live = pytest.mark.skipif(not _supported()[0], reason=f"the live kernel side cannot run here: "
                                                             f"{_supported()[1]}")


@needs_live
def test_a_short_run_is_clean_on_this_kernel(capsys):
    """One seed of every kind: exit 0 and a "kind: N/M identical" line per
    kind, in the order of KINDS (the conformance check of a CI run)."""
    rc = main(["conformance", "--seeds", "1", "--quiet"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out == [f"{kind}: 1/1 identical" for kind in KINDS]


@needs_live
def test_json_results(capsys):
    """``--json``: one document with the kernel, the counts per kind and the
    seeds run (``--start`` moves them)."""
    rc = main(["conformance", "--kinds", "thp", "random", "--seeds", "2", "--start", "5", "--json",
               "--quiet"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["kernel"] == os.uname().release and doc["skipped"] is None
    assert doc["kinds"] == {"thp": {"identical": 2, "total": 2, "seeds": [5, 7]},
                            "random": {"identical": 2, "total": 2, "seeds": [5, 7]}}
    assert doc["differences"] == []


# A model that leaves guard markers in place on MADV_GUARD_REMOVE; the
# scenario has noise around the one install / remove pair that shows it.
_NOISE = [("mmap", 0, 16, RW, PRIV | P.MAP_FIXED), ("touch", 1, True), ("touch", 9, False),
          ("mprotect", 12, 2, P.PROT_READ), ("madvise", 5, 1, P.MADV_GUARD_INSTALL),
          ("touch", 3, True), ("madvise", 2, 1, P.MADV_DONTNEED), ("mlock", 10, 2),
          ("fork",), ("child", ("touch", 1, True)), ("touch", 14, False),
          ("madvise", 4, 3, P.MADV_GUARD_REMOVE), ("touch", 5, True), ("touch", 12, False),
          ("munmap", 15, 1), ("child_exit",)]
_MINIMAL = [["mmap", 0, 16, RW, PRIV | P.MAP_FIXED], ["madvise", 5, 1, P.MADV_GUARD_INSTALL],
            ["madvise", 4, 3, P.MADV_GUARD_REMOVE]]


def _plant(monkeypatch):
    """MADV_GUARD_REMOVE with its checks and errnos, then the markers put back."""
    real = MM.madvise

    def madvise(self, addr, length, advice):
        if advice != P.MADV_GUARD_REMOVE:
            return real(self, addr, length, advice)
        before = self.pagemap(addr, addr + length)
        real(self, addr, length, advice)
        for i, w in enumerate(before.tolist()):
            if w >> 58 & 1:
                real(self, addr + i * P.PAGE_SIZE, P.PAGE_SIZE, P.MADV_GUARD_INSTALL)
    monkeypatch.setattr(MM, "madvise", madvise)


@needs_live
def test_a_planted_difference_is_minimised_and_replays(monkeypatch, capsys, tmp_path):
    """The model mis-handles MADV_GUARD_REMOVE: the run exits 1, and the
    difference comes out as the three steps that show it (mmap, install,
    remove) with the first differing observation (the pagemap's guard bit
    after the remove); ``--replay`` of that line differs the same way, and
    is identical once the model is right again."""
    _plant(monkeypatch)
    monkeypatch.setitem(conformance_cli.KINDS, "random", lambda seed: (list(_NOISE), 16))
    rc = main(["conformance", "--kinds", "random", "--seeds", "1", "--start", "3", "--quiet"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert out[0] == "random: 0/1 identical"
    assert out[1] == f"  random seed 3: differs at step 2: pagemap (3 of {len(_NOISE)} steps)"
    d = json.loads(out[2])
    assert (d["kind"], d["seed"], d["npages"], d["steps"]) == ("random", 3, 16, _MINIMAL)
    first = d["first_difference"]
    assert first["step"] == 2 and first["what"] == "pagemap" and first["pages"] == 1
    assert first["model"] == [[5, "swap,guard"]] and first["kernel"] == [[5, "none"]]

    f = tmp_path / "diff.txt"
    f.write_text("\n".join(out) + "\n")      # the whole output: the JSON line is picked out
    assert main(["conformance", "--replay", str(f), "--quiet"]) == 1
    rout = capsys.readouterr().out.splitlines()
    assert rout[0] == "random seed 3: differs at step 2: pagemap"
    assert json.loads(rout[1])["first_difference"] == first

    monkeypatch.undo()
    assert main(["conformance", "--replay", str(f), "--quiet", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["identical"] for r in doc["replayed"]] == [True]


def test_minimise_keeps_what_still_differs():
    """The minimiser alone: a difference that needs steps 3 and 7 of 20
    (in order) keeps exactly those, with fewer calls than subsets."""
    calls = []

    def differs(s):
        calls.append(s)
        return 3 in s and 7 in s
    assert minimise(list(range(20)), differs) == [3, 7]
    assert len(calls) < 100


def test_the_skip_path_without_guard_regions(monkeypatch, capsys):
    """A kernel without guard regions (the capability probe says so): exit 0,
    nothing compared, the reason on stderr (and in --json)."""
    why = "madvise(MADV_GUARD_INSTALL) fails with EINVAL on 6.1.0"
    monkeypatch.setattr(conformance_cli, "capability", lambda: (False, why))
    assert main(["conformance", "--seeds", "3"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == f"pgwalk conformance: skipped: {why}\n"
    assert main(["conformance", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == why


@linux_only
def test_the_probe_reports_what_the_kernel_lacks(monkeypatch, capsys):
    """The probe itself, on a simulated kernel: MADV_GUARD_INSTALL (102)
    failing with EINVAL, /proc/self/pagemap unreadable, pagemap without the
    guard bit 58; each skips the command with its reason."""
    live = _live()

    def no_guards(addr, length, advice):
        if advice == P.MADV_GUARD_INSTALL:
            ctypes.set_errno(errno.EINVAL)
            return -1
        return 0
    with monkeypatch.context() as m:
        m.setattr(live, "_libc", type("Libc", (), {"mmap": live._libc.mmap, "munmap": live._libc.munmap,
                                                    "madvise": staticmethod(no_guards)})())
        ok, why = live.guard_regions_supported()
        assert not ok and why.startswith("madvise(MADV_GUARD_INSTALL) fails with EINVAL on ")
        assert main(["conformance", "--seeds", "2"]) == 0
        assert capsys.readouterr().err == f"pgwalk conformance: skipped: {why}\n"
    if not _supported()[0]:
        return      # the simulations below need a kernel with guard regions

    real_open = os.open

    def no_pagemap(path, *a, **k):
        if path == "/proc/self/pagemap":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *a, **k)
    with monkeypatch.context() as m:
        m.setattr(live.os, "open", no_pagemap)
        ok, why = live.guard_regions_supported()
    assert not ok and why.startswith("/proc/self/pagemap unreadable: ")
    with monkeypatch.context() as m:
        m.setattr(live.os, "pread", lambda fd, n, off: bytes(n))
        ok, why = live.guard_regions_supported()
    assert (ok, why) == (False, "pagemap has no guard bit (58) on this kernel")


@pytest.mark.parametrize("args", [
    ["--seeds", "0"], ["--seeds", "x"], ["--start", "-1"], ["--kinds", "nope"], ["--kinds"],
    ["--frobnicate"],
])
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(["conformance", *args])
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    (None, "No such file"),
    ("random: 1/1 identical\n", "no scenario"),
    ('{"npages": 4, "steps": [["mmap", 0, 4]]}\n', "line 1: mmap takes 4 arguments"),
    ('{"npages": 4, "steps": [["child", ["fork"]]]}\n', "line 1: not a step in the child"),
    ('{"npages": 0, "steps": []}\n', "line 1: npages must be"),
    ("{not json\n", "line 1: not JSON"),
])
def test_bad_replay_files_exit_2(content, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(conformance_cli, "capability", lambda: (True, ""))
    f = tmp_path / "s.txt"
    if content is not None:
        f.write_text(content)
    assert main(["conformance", "--replay", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgwalk conformance: ") and message in err


def test_replay_takes_no_seeds(capsys):
    assert main(["conformance", "--replay", "x", "--seeds", "3"]) == 2
    assert "--replay takes no --seeds" in capsys.readouterr().err


@needs_live
def test_the_command_line_entry_point(tmp_path):
    """``python -m pgwalk conformance`` itself: the lines on stdout, exit 0;
    ``--help`` lists the kinds."""
    r = run_pgwalk("conformance", "--kinds", "fork", "--seeds", "1")
    assert r.returncode == 0 and r.stdout == "fork: 1/1 identical\n"
    r = run_pgwalk("conformance", "--help")
    assert r.returncode == 0 and "shmem-huge" in r.stdout
