"""AVML's compressed dumps (docs/images.md, "Dump formats"): ranges as AVML
writes them (16 MiB blocks, all-zero blocks left out, the Rust snap crate's
framed snappy streams, made here through cramjam) and as the snappy framing
format allows them (chunks of any size, stored, padding, skippable,
repeated identifiers) read as the raw image of the same memory; Volatility
3's AVML layer reads the same bytes; malformed files are errors naming the
file and the offset."""

import struct
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
import hypothesis.strategies as st

import pgwalk
from pgwalk.image import AbsentError, ImageError

from helpers import dump_writers as W

pytest.importorskip("cramjam", reason="AVML's snappy streams need cramjam (the 'avml' extra)")

PAGE = 4096
MEM = W.phys_memory(2, 4, ndata=6, size=1 << 24)


def raw_mm(tmp_path, mem):
    W.write_raw(tmp_path / "mem.raw", mem)
    return pgwalk.PhysImage.open(tmp_path / "mem.raw").mm(mem.root << 12, mem.levels)


def opens(path, mem=MEM):
    img = pgwalk.PhysImage.open(path)
    mm = img.mm(mem.root << 12, mem.levels)
    mm.mappings()
    return img, mm


@pytest.mark.parametrize("levels", [4, 5])
def test_avml_as_avml_writes_it(tmp_path, levels):
    """16 MiB blocks, all-zero ones left out: every other frame as the
    memory has it, the zero frame absent, the walk the raw image's."""
    mem = W.phys_memory(11, levels)
    path = tmp_path / "dump"
    path.write_bytes(W.avml_bytes(mem))
    img = pgwalk.PhysImage.open(path)
    assert img.format == "avml"
    zero = [p for p, b in mem.pages.items() if not any(b)]
    assert zero, "the memory has an all-zero frame (a block AVML leaves out)"
    held = {p for a, n in img.store.present() for p in range(a, a + n)}
    assert held == set(mem.pages) - set(zero)
    for p in sorted(mem.pages):
        assert img.frame(p) == (None if p in zero else mem.pages[p])
    with pytest.raises(AbsentError):
        img.read_phys(zero[0] << 12, 8)
    assert img.read_phys(zero[0] << 12, 8, fill=0) == bytes(8)
    raw = raw_mm(tmp_path, mem)
    mm = img.mm(mem.root << 12, levels)
    want, got = raw.mappings(nonpresent=True), mm.mappings(nonpresent=True)
    if not any(int(m["pa"]) >> 12 in zero for m in want[0]):
        assert got[0].tobytes() == want[0].tobytes()
    # the same memory with the zero frame kept reads as the raw image throughout
    path.write_bytes(W.avml_bytes(mem, skip_zero=False))
    mm = pgwalk.PhysImage.open(path).mm(mem.root << 12, levels)
    got = mm.mappings(nonpresent=True)
    assert got[0].tobytes() == want[0].tobytes() and got[1].tobytes() == want[1].tobytes()
    assert mm.ptdump() == raw.ptdump()


def test_chunks_of_any_size_and_kind(tmp_path):
    """The framing format allows more than AVML writes: chunks smaller than
    64 KiB (frames across chunk boundaries), stored chunks, padding and
    skippable chunks, the identifier again mid-stream; ranges that are not
    page aligned (partial frames absent)."""
    runs = MEM.runs()
    out = bytearray()
    for i, (a, n) in enumerate(runs):
        lo, hi = a * PAGE, (a + n) * PAGE
        if i == len(runs) - 1:
            lo, hi = lo - 0x234, hi + 0x99              # partial frames either side
        data = b"".join(MEM.pages.get(p, bytes(PAGE)) for p in range(lo // PAGE, (hi + PAGE - 1) // PAGE))
        data = data[lo % PAGE:lo % PAGE + hi - lo]
        piece = [5000, 1 << 16, 777][i % 3]
        stream = W.SNAPPY_ID + W.snappy_chunks(data[:len(data) // 2], piece, stored=i % 2 == 0)
        stream += b"\xfe\x03\x00\x00pad" + b"\x80\x02\x00\x00ok" + W.SNAPPY_ID
        stream += W.snappy_chunks(data[len(data) // 2:], piece, stored=i % 2 == 1)
        out += W.avml_block(lo, data, stream)
    path = tmp_path / "odd"
    path.write_bytes(bytes(out))
    img = pgwalk.PhysImage.open(path)
    a0 = runs[-1][0]
    assert img.frame(a0 - 1) is None and img.frame(a0 + runs[-1][1]) is None
    for p, b in MEM.pages.items():
        assert img.frame(p) == b, p
    for a, n in img.store.present():                     # a range at once, as find_roots reads it
        assert bytes(img.store.read_frames(a, n)) == b"".join(MEM.pages[p] for p in range(a, a + n))
    assert img.read_phys((a0 << 12) - 0x10, 0x20, fill=1) == bytes([1]) * 0x10 + MEM.pages[a0][:0x10]
    want = raw_mm(tmp_path, MEM).mappings()
    assert img.mm(MEM.root << 12).mappings().tobytes() == want.tobytes()


def test_volatility_3_reads_the_same_frames(tmp_path):
    """Volatility 3's AVML layer, an independent reader of the layout, gives
    the bytes pgwalk gives for every frame held."""
    pytest.importorskip("volatility3", reason="Volatility 3 is the optional 'image' extra")
    from volatility3.framework import contexts
    from volatility3.framework.layers import avml, physical
    if not avml.HAS_SNAPPY:
        pytest.skip("Volatility 3's AVML layer needs the system's libsnappy (libsnappy1v5)")
    path = tmp_path / "v"
    path.write_bytes(W.avml_bytes(MEM, block=1 << 16))
    ctx = contexts.Context()
    ctx.config["t.phys.location"] = path.resolve().as_uri()
    ctx.layers.add_layer(physical.FileLayer(ctx, "t.phys", "phys"))
    ctx.config["t.avml.base_layer"] = "phys"
    layer = avml.AVMLLayer(ctx, "t.avml", "avml")
    img = pgwalk.PhysImage.open(path)
    frames = [p for a, n in img.store.present() for p in range(a, a + n)]
    assert len(frames) > 10
    for p in frames:
        assert layer.read(p << 12, PAGE) == img.frame(p), p


def _edit(data, at, value):
    data = bytearray(data)
    data[at:at + len(value)] = value
    return bytes(data)


def test_malformed_files_are_errors_naming_the_file_and_offset(tmp_path):
    good = W.avml_bytes(MEM)
    first = W.avml_block(0x1000, MEM.pages[1])
    n1 = len(first)
    p = tmp_path / "bad"
    cases = [
        (good + b"garbage!" * 4, fr"bad: AVML header at offset {len(good):#x}: bad magic"),
        (_edit(good, 4, struct.pack("<I", 1)), "AVML header at offset 0x0: version 1"),
        (_edit(good, 24, b"\x01"), r"offset 0x0: reserved field 0x1"),
        (struct.pack("<IIQQQ", 0x4C4D5641, 2, 0x2000, 0x1000, 0) + bytes(8), "reversed range"),
        (first + W.avml_block(0x1800, bytes(range(256)) * 16), r"AVML ranges overlap.*header at "
         fr"offset {n1:#x}"),
        (first[:n1 - 20], "runs past the end of the file"),
        (first[:32] + first[42:], r"chunk at offset 0x20 .*does not start with the snappy stream identifier"),
        (_edit(first, 42, b"\x02"), r"chunk at offset 0x2a \(type 0x02.*reserved chunk type"),
        (_edit(first, 42 + 8, b"\xff\xff\x05"), r"chunk at offset 0x2a.*holds \d+ bytes \(at most 65536\)"),
        (W.avml_block(0x1000, MEM.pages[1], W.SNAPPY_ID + W.snappy_chunks(MEM.pages[1] * 2)),
         "holds more than the range's 0x1000 bytes"),
        (_edit(first, n1 - 8, struct.pack("<Q", 5)), fr"stream length at offset {n1 - 8:#x} says 5 bytes"),
        (first[:-8], "AVML stream length at offset .* runs past the end"),
    ]
    for data, match in cases:
        p.write_bytes(data)
        with pytest.raises(ImageError, match=match):
            opens(p)
    # a checksum that does not match: found when the chunk is read
    p.write_bytes(_edit(first, 42 + 4, b"\x00\x00\x00\x00"))
    img = pgwalk.PhysImage.open(p)
    with pytest.raises(ImageError, match=r"bad: snappy chunk at offset 0x2a does not decompress.*checksum"):
        img.frame(1)
    with pytest.raises(ImageError, match=r"snappy chunk at offset 0x2a does not decompress"):
        img.find_roots()


def test_without_cramjam_the_error_names_the_extra(tmp_path, monkeypatch):
    p = tmp_path / "d"
    p.write_bytes(W.avml_bytes(MEM))
    img = pgwalk.PhysImage.open(p)                        # the index needs no decompressor
    monkeypatch.setitem(sys.modules, "cramjam", None)
    with pytest.raises(ImageError, match=r"d: AVML's snappy streams need cramjam .*pgwalk\[avml\]"):
        img.frame(1)


def test_frames_are_read_through_a_bounded_cache(tmp_path):
    """A frame read decompresses only its chunks; the cache keeps a bounded
    number of them."""
    p = tmp_path / "d"
    p.write_bytes(W.avml_bytes(MEM))
    img = pgwalk.PhysImage.open(p)
    store = img.store
    for a, n in store.present():
        for q in range(a, a + n):
            store.frame(q)
    assert 0 < len(store._cache) <= store._cache_chunks
    assert np.all(store.chunk_bytes <= 1 << 16)


def _python_walk(m, pos, size, start, done, want, cap=0):
    """formats._framing.walk taking no chunk: the Python reader does all."""
    empty = np.zeros(0, dtype=np.int64)
    return pos, done, empty, empty, empty, empty


def _index(path):
    try:
        s = pgwalk.PhysImage.open(path).store
    except ImageError as e:
        return str(e)
    return [a.tolist() for a in (s.chunk_pa, s.chunk_bytes, s.chunk_at, s.chunk_stop)], s.ranges


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_c_chunk_walk_is_the_python_one(tmp_path_factory, monkeypatch, data):
    """The index (and the error) of streams of every chunk kind, size and
    damage: the same with the C walk of ordinary chunks as with the Python
    reader alone."""
    body = bytes(range(256)) * 64 + bytes(8192)
    out = bytearray()
    start = 0x10000
    extra = {"pad": b"\xfe\x02\x00\x00..", "skip": b"\x99\x00\x00\x00", "id": W.SNAPPY_ID,
             "empty": b"\x01\x04\x00\x00" + bytes(4),         # a stored chunk of no data
             # and chunks the Python reader must judge
             "reserved": b"\x02\x00\x00\x00", "reserved7f": b"\x7f\x01\x00\x00x",
             "not-id": b"\xff\x06\x00\x00sNaPpZ", "short": b"\x01\x02\x00\x00ab",
             "varint": b"\x00\x0a\x00\x00" + bytes(4) + b"\xff" * 6}
    common = ["compressed", "stored"] * 4 + sorted(extra)
    for _ in range(data.draw(st.integers(1, 3))):
        n = data.draw(st.integers(1, 3 * PAGE))
        parts = [body[p % 8192:p % 8192 + min(PAGE, n - p)] for p in range(0, n, PAGE)]
        stream = W.SNAPPY_ID
        for part in parts:
            kind = data.draw(st.sampled_from(common))
            stream += extra.get(kind, b"") + W.snappy_chunks(part, stored=kind == "stored")
        # a range shorter than its stream now and then: the chunk that overflows it
        short = data.draw(st.sampled_from([0] * 4 + [1, 100]))
        out += W.avml_block(start, b"".join(parts)[:max(1, n - short)], stream)
        start += n + data.draw(st.sampled_from([0, PAGE, 123]))
    for _ in range(data.draw(st.integers(0, 3))):          # damage
        at = data.draw(st.integers(0, len(out) - 1))
        out[at:at + 1] = bytes([data.draw(st.sampled_from([0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF]))])
    if data.draw(st.booleans()):
        out = out[:data.draw(st.integers(1, len(out)))]
    path = tmp_path_factory.mktemp("walk") / "d"
    path.write_bytes(bytes(out))
    fast = _index(path)
    from pgwalk.image.formats import avml
    with monkeypatch.context() as mp:
        mp.setattr(avml._framing, "walk", _python_walk)
        assert _index(path) == fast
