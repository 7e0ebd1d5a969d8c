"""pgwalk.image.scan: a fleet of dumps on a local Dask cluster into one
Parquet dataset (skipped without the fleet extra: dask[distributed], pyarrow)."""


import pytest

pytest.importorskip("distributed", reason="the fleet scan needs dask[distributed] (pip install 'pgwalk[fleet]')")
pq = pytest.importorskip("pyarrow.parquet", reason="the fleet scan needs pyarrow (pip install 'pgwalk[fleet]')")

import pgwalk  # noqa: E402
from helpers.image_gen import make_linux_image  # noqa: E402
from helpers.cli import run_pgwalk
from pgwalk.image import scan  # noqa: E402
from pgwalk.image.fleet import summarize  # noqa: E402


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet")
    out = []
    for i, (lv, pti) in enumerate([(4, True), (5, True), (4, False)]):
        w, _ = make_linux_image(lv, pti=pti, nproc=2 + i, seed=i, nframes=8192)
        p = d / f"dump{i}.raw"
        w.tofile(p)
        out.append(p)
    bad = d / "short.raw"
    bad.write_bytes(b"x" * 100)                  # not even one frame: an error row
    return out + [bad]


def rows_of(table):
    return sorted(table.to_pylist(), key=lambda r: (r["dump"], r["pgd"] or 0))


def test_scan_on_a_local_cluster_matches_per_dump_results(dumps, tmp_path):
    seen = []
    t = scan(dumps, tmp_path / "ds", workers=1, progress=lambda d, n: seen.append((d, n)))
    assert seen[-1] == (len(dumps), len(dumps))
    back = pq.read_table(tmp_path / "ds")
    assert rows_of(back) == rows_of(t)
    want = sorted((r for p in dumps for r in summarize(str(p.resolve()))), key=lambda r: (r["dump"], r["pgd"] or 0))
    assert rows_of(back) == want
    # and the rows are find_roots' roots with their mappings' sizes
    for p in dumps[:3]:
        img = pgwalk.PhysImage.open(p)
        roots = img.find_roots()
        mine = [r for r in rows_of(back) if r["dump"] == str(p.resolve())]
        assert [(r["pgd"], r["kind"], r["user_pgd"]) for r in mine] == \
            sorted(((r.pgd, r.kind, r.user_pgd) for r in roots))
        for r, root in zip(mine, sorted(roots, key=lambda r: r.pgd)):
            maps = img.mm(root).mappings()
            assert r["leaves"] == maps.size and r["mapped_bytes"] == int(maps["size"].sum())
    err = [r for r in rows_of(back) if r["dump"].endswith("short.raw")]
    assert len(err) == 1 and err[0]["error"] and err[0]["pgd"] is None


def test_summarize_reads_every_format(dumps, tmp_path):
    """A LiME, an AVML and a kdump dump of the same memory as a raw one: the same rows
    (roots, kinds, leaves), their own format and held frames."""
    from helpers import dump_writers as W
    import numpy as np
    w = np.fromfile(dumps[0], dtype=np.uint64)
    n = w.size // 512
    mem = W.Memory({p: w[p * 512:(p + 1) * 512].tobytes() for p in range(n)}, 0, 4, n * 4096)
    want = summarize(str(dumps[0].resolve()))
    assert len(want) > 2 and not any(r["error"] for r in want)
    for kind, fmt in (("lime", "lime"), ("avml", "avml"), ("kdump-zlib", "kdump")):
        p = W.write_dump(kind, tmp_path / kind, mem)
        got = summarize(str(p.resolve()))
        assert [r["format"] for r in got] == [fmt] * len(want) and got[0]["frames"] == n
        drop = ("dump", "format")
        assert [{k: v for k, v in r.items() if k not in drop} for r in got] == \
            [{k: v for k, v in r.items() if k not in drop} for r in want]
        assert repr(pgwalk.PhysImage.open(p)).endswith(f"frames={n}>")


def test_cli_scan(dumps, tmp_path):
    r = run_pgwalk("image", "--scan", *dumps[:2], "--out", tmp_path / "cli", "--no-progress")
    assert r.returncode == 0, r.stderr
    t = pq.read_table(tmp_path / "cli")
    assert set(t.column("kind").to_pylist()) == {"kernel", "process", "stale", "boot"}
