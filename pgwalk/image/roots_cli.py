"""The root-finding parts of ``python -m pgwalk image``: ``--roots``, the
kernel root when no ``--cr3`` is given, ``--all --out DIR`` and ``--scan``."""

import sys
from pathlib import Path

import numpy as np

from .fleet import Bar
from .physimage import ImageError, PhysImage
from .roots import kernel_root


def _err(msg):
    print(f"pgwalk: {msg}", file=sys.stderr)


def _write(path, maps, fmt):
    if fmt == "npz":
        np.savez(path.with_suffix(".npz"), mappings=maps)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({k: maps[k] for k in maps.dtype.names}), path.with_suffix(".parquet"))


def run(a):
    """(exit status, mm or None): an mm when the caller should go on to print
    or write the kernel root's tables."""
    bar = None if a.no_progress else Bar
    if a.scan:
        if not a.out:
            _err("--scan needs --out DIR")
            return 2, None
        try:
            from .fleet import scan
            t = scan(a.scan, a.out, scheduler=a.scheduler, workers=a.workers,
                     progress=bar and bar(f"scanning {len(a.scan)} dumps"))
        except ImportError as e:
            _err(f"--scan needs the fleet extra (pip install 'pgwalk[fleet]'): {e}")
            return 2, None
        print(f"{t.num_rows} rows from {len(a.scan)} dumps in {a.out}")
        return 0, None
    if not a.image:
        _err("an IMAGE is needed (or --scan DUMP...)")
        return 2, None
    try:
        img = PhysImage.open(a.image, format=a.format)
        roots = img.find_roots(progress=bar and bar(f"scanning {Path(a.image).name}"))
    except (OSError, ImageError, ValueError) as e:
        _err(e)
        return 2, None
    if a.roots:
        print(f"{'pgd':>14} L {'kind':<7} {'user_pgd':>14} evidence")
        for r in roots:
            print(r.summary())
        return 0, None
    if a.all:
        if not a.out:
            _err("--all needs --out DIR")
            return 2, None
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        try:
            for r in roots:
                _write(out / f"{r.kind}-{r.pgd:#x}", img.mm(r).mappings(), a.out_format)
                if r.user_pgd is not None:
                    _write(out / f"{r.kind}-{r.pgd:#x}-user", img.mm(r.user_pgd, r.levels).mappings(), a.out_format)
        except ImportError as e:
            _err(f"Parquet needs pyarrow (pip install 'pgwalk[fleet]', or --out-format npz): {e}")
            return 2, None
        print(f"{len(roots)} roots written to {out}")
        return 0, None
    k = kernel_root(roots)
    if k is None:
        _err(f"{a.image}: no kernel page-table root found; give --cr3")
        return 2, None
    if a.levels is not None and a.levels != k.levels:
        _err(f"the kernel root found is {k.levels}-level, not {a.levels}")
        return 2, None
    print(f"pgwalk: kernel root {k.pgd:#x} ({k.levels} levels)", file=sys.stderr)
    return 0, img.mm(k)
