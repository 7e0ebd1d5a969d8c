"""``mm.read`` against a page-by-page reference.

A contiguous read of a raw image or an ELF core is copied run by run
(pages contiguous in the file too) straight from the image's mapping into
the bytes object it returns, whose pages are advised huge from 4 MiB on.
Hypothesis draws small images whose PTEs map pages of the image in runs
(contiguous, backwards, repeated), pages outside it and unmapped pages, and
reads of any start and length; each must equal the bytes that
``translate1`` and ``img.frame`` give page by page (``fill`` included).
Large reads (2M leaves, across a break in the file) are checked the same
way, so the huge-page path is exercised."""

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
import hypothesis.strategies as st

import pgwalk
from pgwalk.image import AbsentError

TABLE = 0x67
NFRAMES = 48
DATA = 8                        # frames 8.. hold data; 1-4 the tables


def reference_read(mm, va, size, fill=None):
    out = bytearray()
    end = va + size
    while va < end:
        n = min(end - va, 4096 - va % 4096)
        pa = mm.translate1(va)
        data = mm.image.frame(pa >> 12) if pa >= 0 else None
        if data is None:
            if fill is None:
                return None
            out += bytes([fill]) * n
        else:
            out += data[pa % 4096:pa % 4096 + n]
        va += n
    return bytes(out)


def base_image():
    img = np.zeros(NFRAMES * 512, dtype=np.uint64)
    img[1 * 512 + 0] = (2 << 12) | TABLE        # pgd[0] -> pud
    img[2 * 512 + 0] = (3 << 12) | TABLE        # pud[0] -> pmd
    img[3 * 512 + 0] = (4 << 12) | TABLE        # pmd[0] -> the PTE table (va 0 .. 2 MiB)
    data = np.random.default_rng(5).integers(0, 1 << 63, (NFRAMES - DATA) * 512, dtype=np.uint64)
    img[DATA * 512:] = data                     # every data frame distinct
    return img


def write_elf(path, img, hole):
    """An ELF core of ``img`` without frame ``hole``, the segments in the
    file in the other order (the second first), right after the headers."""
    layout = [(hole + 1, NFRAMES - hole - 1), (0, hole)]
    off = 64 + 56 * len(layout)
    ph, body = b"", b""
    for first, k in layout:
        ph += struct.pack("<IIQQQQQQ", 1, 4, off + len(body), 0, first * 4096, k * 4096, k * 4096, 4096)
        body += img[first * 512:(first + k) * 512].tobytes()
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, len(layout), 0, 0, 0)
    path.write_bytes(ehdr + ph + body)


@st.composite
def cases(draw):
    ptes = []
    while len(ptes) < 32:                       # runs of PTEs: frames going up, down or alike
        start = draw(st.integers(DATA, NFRAMES + 4))
        step = draw(st.sampled_from([1, 1, -1, 0]))
        kind = draw(st.sampled_from(["present", "present", "present", "none"]))
        for k in range(draw(st.integers(1, 8))):
            ptes.append(0 if kind == "none" else ((start + step * k) << 12) | 0x63)
    hole = draw(st.none() | st.integers(DATA, NFRAMES - 2))
    va = draw(st.integers(0, 20 * 4096))
    size = draw(st.integers(1, 12 * 4096))
    fill = draw(st.none() | st.integers(0, 255))
    return ptes[:32], hole, va, size, fill


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases())
def test_read_equals_the_page_by_page_reference(tmp_path, case):
    ptes, hole, va, size, fill = case
    img = base_image()
    img[4 * 512:4 * 512 + len(ptes)] = ptes
    path = tmp_path / ("img.elf" if hole is not None else "img.raw")
    if hole is None:
        img.tofile(path)
    else:
        write_elf(path, img, hole)
    mm = pgwalk.PhysImage.open(path).mm(1 << 12)
    want = reference_read(mm, va, size, fill)
    if want is None:
        with pytest.raises(AbsentError):
            mm.read(va, size, fill)
    else:
        assert mm.read(va, size, fill) == want


@pytest.mark.parametrize("elf", [False, True])
def test_large_reads_across_runs(tmp_path, elf):
    """Reads of 4 MiB and more (their output advised huge) over 2M leaves
    whose frames are contiguous in the file, then jump back."""
    n2m = 6
    nframes = 8 + n2m * 512
    img = np.zeros(nframes * 512, dtype=np.uint64)
    img[1 * 512] = (2 << 12) | TABLE
    img[2 * 512] = (3 << 12) | TABLE
    # 2M leaves at va 0, 2M, ...: frames 1, 2, 0 (times 2 MiB) and then 3, 4, 5: two breaks
    for i, f in enumerate([1, 2, 0, 3, 4, 5]):
        img[3 * 512 + i] = (f << 21) | 0xE3
    img[512 * 512:] = np.arange(img.size - 512 * 512, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    path = tmp_path / ("big.elf" if elf else "big.raw")
    if elf:
        body = img.tobytes()
        ph = struct.pack("<IIQQQQQQ", 1, 4, 0x1000, 0, 0, len(body), len(body), 4096)
        ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
        ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
        path.write_bytes((ehdr + ph).ljust(0x1000, b"\0") + body)
    else:
        img.tofile(path)
    mm = pgwalk.PhysImage.open(path).mm(1 << 12)
    for va, size in [(0, 12 << 20), (5, (12 << 20) - 5), ((2 << 20) - 3, (8 << 20) + 7), (1 << 20, 4 << 20)]:
        got = mm.read(va, size)
        assert isinstance(got, bytes) and len(got) == size
        assert got == reference_read(mm, va, size)
