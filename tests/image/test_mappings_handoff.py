"""A large ``mappings()`` result is the walk's record buffer handed over (no
copy); a small one is a copy.  Either way each result is an array of its
own: writable, unchanged by later walks, equal to the records a plain
numpy walk of the tables gives, and freed with the array (RSS stays flat
over many large results)."""

import gc
import resource

import numpy as np

import pgwalk

TABLE, LEAF = 0x67, 0x63


def _image(tmp_path, n_pte_tables, first_data=1 << 16):
    """Frames: 1 pgd, 2 pud, 3 pmd, 4.. PTE tables, every PTE a 4K leaf."""
    nframes = 4 + n_pte_tables
    img = np.zeros(nframes * 512, dtype=np.uint64)
    img[512] = (2 << 12) | TABLE
    img[2 * 512] = (3 << 12) | TABLE
    img[3 * 512:3 * 512 + n_pte_tables] = ((4 + np.arange(n_pte_tables, dtype=np.uint64)) << 12) | TABLE
    img[4 * 512:] = ((first_data + np.arange(n_pte_tables * 512, dtype=np.uint64)) << 12) | LEAF
    path = tmp_path / f"img{n_pte_tables}.raw"
    img.tofile(path)
    return pgwalk.PhysImage.open(path).mm(1 << 12), first_data


def _check(maps, n, first_data):
    assert len(maps) == n
    assert np.array_equal(maps["va"], np.arange(n, dtype=np.uint64) << 12)
    assert np.array_equal(maps["pa"], (first_data + np.arange(n, dtype=np.uint64)) << 12)
    assert (maps["size"] == 4096).all() and (maps["level"] == 4).all()


def test_large_and_small_results_are_arrays_of_their_own(tmp_path):
    big, fd = _image(tmp_path, 80)               # 40,960 records: 1.4 MiB, handed over
    small, _ = _image(tmp_path, 2)               # 1,024 records: copied
    a = big.mappings()
    b = big.mappings()
    c = small.mappings()
    d = big.mappings()
    for m, n in ((a, 80 * 512), (b, 80 * 512), (c, 1024), (d, 80 * 512)):
        _check(m, n, fd)
        assert m.flags.writeable and m.flags.c_contiguous
    a["pa"][:] = 0                               # a result is the caller's to change
    _check(b, 80 * 512, fd)
    _check(d, 80 * 512, fd)
    assert len({m.ctypes.data for m in (a, b, c, d)}) == 4


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_handed_over_buffers_are_freed(tmp_path):
    big, _ = _image(tmp_path, 512)               # 262,144 records: 9 MiB a result
    for _ in range(5):
        big.mappings()
    gc.collect()
    before = _rss()
    for _ in range(40):                          # 360 MiB if none were freed
        big.mappings()
    gc.collect()
    assert _rss() - before < 40 << 20
