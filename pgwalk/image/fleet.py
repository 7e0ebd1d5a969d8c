"""Fleets of dumps: ``scan(paths, out)`` runs one Dask task per dump (its
format, roots and a summary of each root's mappings) on an embedded
``LocalCluster`` or a given scheduler, and writes the rows as one Parquet
dataset (one file per dump).  Needs the ``fleet`` extra (dask[distributed],
pyarrow)."""

import sys
import time
from pathlib import Path

COLUMNS = ("dump", "format", "frames", "pgd", "levels", "kind", "user_pgd", "evidence",
           "leaves", "leaves_4k", "leaves_2m", "leaves_1g", "mapped_bytes", "user_leaves", "error")


def summarize(path):
    """The rows of one dump: one per root (no roots: one row with pgd None)."""
    import numpy as np
    from .physimage import PhysImage
    base = {"dump": str(path), "format": None, "frames": None, "pgd": None, "levels": None, "kind": None,
            "user_pgd": None, "evidence": None, "leaves": None, "leaves_4k": None, "leaves_2m": None,
            "leaves_1g": None, "mapped_bytes": None, "user_leaves": None, "error": None}
    try:
        img = PhysImage.open(path)
        held = img.frames.size // 512 if img.store is None else sum(n for _, n in img.store.present())
        base.update(format=img.kind, frames=int(held))
        roots = img.find_roots()
    except (OSError, ValueError) as e:
        return [dict(base, error=f"{type(e).__name__}: {e}")]
    if not roots:
        return [dict(base, error="no page-table root found")]
    rows = []
    for r in roots:
        row = dict(base, pgd=r.pgd, levels=r.levels, kind=r.kind, user_pgd=r.user_pgd,
                   evidence="; ".join(f"{k}={v}" for k, v in r.evidence.items()))
        try:
            maps = img.mm(r).mappings()
            sizes = maps["size"]
            row.update(leaves=int(maps.size), leaves_4k=int(np.count_nonzero(sizes == 4096)),
                       leaves_2m=int(np.count_nonzero(sizes == 1 << 21)),
                       leaves_1g=int(np.count_nonzero(sizes == 1 << 30)), mapped_bytes=int(sizes.sum()))
            if r.user_pgd is not None:
                row["user_leaves"] = int(img.mm(r.user_pgd, r.levels).mappings().size)
        except (OSError, ValueError) as e:
            row["error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
    return rows


def _schema():
    import pyarrow as pa
    return pa.schema([("dump", pa.string()), ("format", pa.string()), ("frames", pa.int64()),
                      ("pgd", pa.uint64()), ("levels", pa.int8()), ("kind", pa.string()),
                      ("user_pgd", pa.uint64()), ("evidence", pa.string()), ("leaves", pa.int64()),
                      ("leaves_4k", pa.int64()), ("leaves_2m", pa.int64()), ("leaves_1g", pa.int64()),
                      ("mapped_bytes", pa.uint64()), ("user_leaves", pa.int64()), ("error", pa.string())])


def scan(paths, out=None, scheduler=None, workers=None, processes=False, progress=None):
    """Summarise every dump of ``paths`` on Dask, one task each; with ``out``,
    write the rows as a Parquet dataset there (``part-NNNNN.parquet``, one
    per dump).  ``scheduler``: an address (default: a local cluster of
    ``workers``, threads when ``processes`` is false).  ``progress(done,
    total)`` after each dump.  Returns the rows as a ``pyarrow.Table``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from dask.distributed import Client, LocalCluster, as_completed

    paths = [str(Path(p).resolve()) for p in paths]
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=2, processes=processes,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    schema = _schema()
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    tables = [None] * len(paths)
    try:
        futures = {client.submit(summarize, p, pure=False): i for i, p in enumerate(paths)}
        for n, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            t = pa.Table.from_pylist(fut.result(), schema=schema)
            tables[i] = t
            if out is not None:
                pq.write_table(t, Path(out) / f"part-{i:05d}.parquet")
            if progress:
                progress(n, len(paths))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return pa.concat_tables(tables) if tables else schema.empty_table()


class Bar:
    """A progress bar on stderr, shown once a task has run for ``after`` s."""

    def __init__(self, label, after=0.5, stream=None):
        self.label, self.after, self.stream = label, after, stream or sys.stderr
        self.t0, self.shown = time.monotonic(), False

    def __call__(self, done, total):
        if not self.shown and time.monotonic() - self.t0 < self.after and done < total:
            return
        if not self.shown and done >= total and time.monotonic() - self.t0 < self.after:
            return
        self.shown = True
        w = 30
        k = w * done // max(total, 1)
        self.stream.write(f"\r{self.label} [{'#' * k}{'.' * (w - k)}] {done}/{total}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
