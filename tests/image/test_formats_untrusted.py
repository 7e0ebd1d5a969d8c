"""Untrusted dumps: truncated headers, descriptors past the file, pages that
inflate past 4 KiB, reversed or overlapping LiME ranges, bitmaps that
disagree with the descriptors, overlapping flattened records -- each an
ImageError naming the file and the offset; and a fuzz of every parser
(hypothesis: bytes overwritten and files cut) that may only ever raise
ImageError / AbsentError, never crash or allocate without bound."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
import hypothesis.strategies as st

import pgwalk
from pgwalk.image import AbsentError, ImageError

from helpers import dump_writers as W

MEM = W.phys_memory(2, 4, ndata=6, size=1 << 24)       # 16 MiB of physical memory: small dumps
PAGE = 4096


def opens(path):
    img = pgwalk.PhysImage.open(path)
    mm = img.mm(MEM.root << 12, 4)
    mm.mappings()
    return img, mm


def test_truncated_headers_are_errors_naming_the_file(tmp_path):
    for name, data in (("lime", W.lime_bytes(MEM)), ("kdump", W.kdump_bytes(MEM, "zlib")),
                       ("flat", W.flat_bytes(W.kdump_bytes(MEM)))):
        for cut in (12, 20, 31, 100, 463, 4200, 8200, len(data) - 1):
            p = tmp_path / f"{name}-{cut}"
            p.write_bytes(data[:cut])
            with pytest.raises(ImageError, match=f"{p.name}.*offset"):
                opens(p)


def test_kdump_descriptors_past_the_file(tmp_path):
    def far(parts):
        parts["descs"][3][0] = 1 << 40
    p = tmp_path / "far"
    p.write_bytes(W.kdump_bytes(MEM, "zlib", edit=far))
    with pytest.raises(ImageError, match=r"far: page descriptor #3 at offset 0x[0-9a-f]+ .*past the end"):
        opens(p)

    def negative(parts):
        parts["descs"][0][0] = -4096
    p.write_bytes(W.kdump_bytes(MEM, edit=negative))
    with pytest.raises(ImageError, match="#0"):
        opens(p)

    def raw_short(parts):
        parts["descs"][1][1] = 100                      # a raw page of 100 bytes
        parts["descs"][1][2] = 0
    p.write_bytes(W.kdump_bytes(MEM, edit=raw_short))
    with pytest.raises(ImageError, match="raw page that is not 4 KiB"):
        opens(p)

    def unknown(parts):
        parts["descs"][2][2] = 0x400
    p.write_bytes(W.kdump_bytes(MEM, edit=unknown))
    with pytest.raises(ImageError, match="unknown flags"):
        opens(p)


def test_kdump_page_inflating_past_4k(tmp_path):
    """Descriptor #0 (the lowest dumped frame) pointed at zlib data that
    inflates past 4 KiB (1 MiB of zeros), to 100 bytes, or not at all."""
    p = tmp_path / "bomb"
    dump = bytearray(W.kdump_bytes(MEM, "zlib"))
    desc_off = pgwalk.PhysImage.open(tmp_path.joinpath("x").write_bytes(dump) and tmp_path / "x").store.desc_off
    first = min(MEM.pages)
    for body, match in ((zlib.compress(bytes(1 << 20)), "bomb: page descriptor #0 .*inflates past 4 KiB"),
                        (zlib.compress(bytes(100)), "inflates to 100 bytes"),
                        (b"\x55" * 40, "zlib data does not decompress")):
        d = dump + body
        struct.pack_into("<qIIQ", d, desc_off, len(dump), len(body), 0x1, 0)
        p.write_bytes(bytes(d))
        with pytest.raises(ImageError, match=match):
            pgwalk.PhysImage.open(p).frame(first)


def test_kdump_bitmaps_that_disagree(tmp_path):
    def stray(parts):
        parts["b1"][3] &= 0                             # 2nd bitmap has frames 24-31, 1st not
        parts["b2"][3] |= 0x10
    p = tmp_path / "stray"
    p.write_bytes(W.kdump_bytes(MEM, edit=stray))
    with pytest.raises(ImageError, match=r"stray: 2nd bitmap \(offset 0x[0-9a-f]+\) marks frame 0x1c dumped"):
        opens(p)

    def more(parts):                                    # more dumped frames than descriptors
        parts["b1"][400:512] = parts["b2"][400:512] = b"\xff" * 112
        parts["data"] = b""
        parts["vmcoreinfo"] = b""
    p.write_bytes(W.kdump_bytes(MEM, edit=more))
    with pytest.raises(ImageError, match="descriptors .* run past the end"):
        opens(p)


def test_kdump_incomplete_dump(tmp_path):
    """A dump cut short (status INCOMPLETE): descriptors never written are
    zero, their frames absent; without the status they are errors."""
    def cut(parts):
        for d in parts["descs"][-3:]:
            d[:] = [0, 0, 0, 0]
    p = tmp_path / "inc"
    p.write_bytes(W.kdump_bytes(MEM, status=1, edit=cut))
    img, _ = opens(p)
    assert img.frame(max(MEM.pages)) is None
    p.write_bytes(W.kdump_bytes(MEM, edit=cut))
    with pytest.raises(ImageError, match="inc: page descriptor"):
        opens(p)


def test_lime_reversed_and_overlapping_ranges(tmp_path):
    p = tmp_path / "rev"
    p.write_bytes(struct.pack("<IIQQ8s", 0x4C694D45, 1, 0x2000, 0x1000, bytes(8)) + bytes(4096))
    with pytest.raises(ImageError, match="rev: LiME range at offset 0x0 is reversed"):
        opens(p)
    W.write_lime(p, MEM, [(0, 0x3FFF), (0x2000, 0x5FFF)])
    with pytest.raises(ImageError, match=r"LiME ranges overlap.*header at offset 0x4020"):
        opens(p)
    data = bytearray(W.lime_bytes(MEM))
    data[4:8] = struct.pack("<I", 2)
    p.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="version 2"):
        opens(p)
    p.write_bytes(W.lime_bytes(MEM) + b"garbage!" * 4)
    with pytest.raises(ImageError, match="bad magic"):
        opens(p)


def test_ranges_at_impossible_or_far_physical_addresses(tmp_path):
    """A LiME or AVML range past x86-64's 52-bit physical addresses is an
    error on open (AVML's index holds addresses as int64); one below that
    but so high that find_roots' bitmap of held frames (a bit per frame
    from 0) would pass roots.MAX_BITMAP is an error naming the file, not an
    unbounded allocation; a range at 1 TiB is scanned."""
    from pgwalk.image import roots
    page = bytes(range(256)) * 16

    def lime(start):
        return struct.pack("<IIQQ8s", 0x4C694D45, 1, start, start + PAGE - 1, bytes(8)) + page
    kinds = [("lime", lime)]
    if W.compressor("snappy") is not None:
        kinds.append(("avml", lambda start: W.avml_block(start, page)))
    for name, make in kinds:
        p = tmp_path / name
        for start in ((1 << 52) - PAGE // 2, (1 << 64) - PAGE):
            p.write_bytes(make(start))
            with pytest.raises(ImageError, match=f"{name}: .*past x86-64's 52-bit physical addresses"):
                pgwalk.PhysImage.open(p)
        p.write_bytes(make(roots.MAX_BITMAP * 8 * PAGE))
        img = pgwalk.PhysImage.open(p)
        assert img.frame(roots.MAX_BITMAP * 8) == page
        with pytest.raises(ImageError, match=f"{name}: it holds frames up to physical address"):
            img.find_roots()
        p.write_bytes(make(1 << 40))
        assert pgwalk.PhysImage.open(p).find_roots() == []


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(runs=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 40)), max_size=8))
def test_the_held_frame_bitmap_sets_exactly_the_runs(runs):
    """roots._present_bits of a store's runs (built a byte at a time where
    it can) against a plain per-frame reference."""
    from pgwalk.image import roots
    spans, at = [], 0
    for gap, n in runs:                              # sorted, disjoint runs
        spans.append((at + gap, n))
        at += gap + n
    max_pfn = max((a + n for a, n in spans), default=0)

    class Img:
        path = "mem"
        store = object()
    bits = roots._present_bits(Img, spans, max_pfn)
    want = np.zeros(((max_pfn + 7) // 8 + 1) * 8, dtype=bool)
    for a, n in spans:
        want[a:a + n] = True
    assert bits.tobytes() == np.packbits(want, bitorder="little").tobytes()


def test_flattened_records_that_overlap_or_never_end(tmp_path):
    dump = W.kdump_bytes(MEM)
    flat = bytearray(W.flat_bytes(dump, chunk=(5000, 5000)))
    off, n = struct.unpack_from(">qq", flat, PAGE)
    struct.pack_into(">q", flat, PAGE, off + 1)           # the first record shifted by one byte
    p = tmp_path / "ovl"
    p.write_bytes(bytes(flat))
    with pytest.raises(ImageError, match=r"ovl: flattened records overlap.*file offset 0x[0-9a-f]+"):
        opens(p)
    p.write_bytes(W.flat_bytes(dump)[:-16])
    with pytest.raises(ImageError, match="flattened record header at offset"):
        opens(p)
    bad = bytearray(W.flat_bytes(dump))
    struct.pack_into(">qq", bad, 16, 2, 1)
    p.write_bytes(bytes(bad))
    with pytest.raises(ImageError, match="type 2"):
        opens(p)
    lying = bytearray(W.flat_bytes(dump))
    struct.pack_into(">q", lying, PAGE + 8, 1 << 50)          # a record that says it is huge
    p.write_bytes(bytes(lying))
    with pytest.raises(ImageError, match="runs past the end"):
        opens(p)


def test_elf_vmcoreinfo_note_past_its_segment(tmp_path):
    p = tmp_path / "core"
    W.write_elf(p, MEM, W.vmcoreinfo_text(MEM))
    d = bytearray(p.read_bytes())
    note = 64 + 56 * (len(MEM.runs()) + 1)
    struct.pack_into("<I", d, note + 4, 1 << 20)            # descsz far past the segment
    p.write_bytes(bytes(d))
    with pytest.raises(ImageError, match=f"core: ELF note at offset {note:#x}"):
        opens(p)


SAMPLES = {
    "lime": W.lime_bytes(MEM),
    "kdump": W.kdump_bytes(MEM, "zlib", vmcoreinfo=W.vmcoreinfo_text(MEM)),
    "flat": W.flat_bytes(W.kdump_bytes(MEM, "zlib"), chunk=(200, 3000)),
}


def _elf_sample(tmp_path_factory=None):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        W.write_elf(Path(d) / "e", MEM, W.vmcoreinfo_text(MEM))
        return (Path(d) / "e").read_bytes()


SAMPLES["elf"] = _elf_sample()
if W.compressor("snappy") is not None:                   # cramjam: AVML's snappy streams
    SAMPLES["avml"] = W.avml_bytes(MEM, block=1 << 16)


def exercise(path):
    """Open, find roots, walk, read: only ImageError / AbsentError may come out."""
    try:
        img = pgwalk.PhysImage.open(path)
        img.kernel_root()
        img.find_roots()
        mm = img.mm(MEM.root << 12, 4)
        maps = mm.mappings()
        mm.root_report()
        if len(maps):
            mm.read_many(maps["va"][:8], 64, fill=0)
            mm.read(int(maps["va"][0]), 16, fill=0)
    except (ImageError, AbsentError):
        pass
    except ValueError as e:                             # the cr3 frame itself not in the image
        assert "cr3" in str(e)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_each_parser(tmp_path_factory, fmt, data):
    sample = bytearray(SAMPLES[fmt])
    # headers and index structures are where parsers go wrong: most edits land early
    hot = min(len(sample), 3 * PAGE + 2048 if fmt != "lime" else 64)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.one_of(st.integers(0, hot - 1), st.integers(0, len(sample) - 1)))
        width = data.draw(st.sampled_from([1, 4, 8]))
        value = data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, None]))
        chunk = (bytes([value]) * width if value is not None
                 else data.draw(st.binary(min_size=width, max_size=width)))
        sample[at:at + width] = chunk
    if data.draw(st.booleans()):
        sample = sample[:data.draw(st.integers(0, len(sample)))]
    path = tmp_path_factory.mktemp("fuzz") / "dump"
    path.write_bytes(bytes(sample))
    exercise(path)
