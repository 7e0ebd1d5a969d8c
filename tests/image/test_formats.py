"""Dump formats (docs/images.md, "Dump formats"): synthetic dumps of every
format, written by tests/helpers/dump_writers.py from one physical memory,
give the raw image's mappings, translations and bytes, 4 and 5 levels, each
kdump compression; VMCOREINFO names the kernel root; the format comes from
the content; mm.read / read_many."""


import numpy as np
import pytest

import pgwalk
from pgwalk.image import AbsentError, ImageError

from helpers import dump_writers as W
from helpers.cli import run_pgwalk

COMPRESSIONS = [None, "zlib", "lzo", "snappy", "zstd"]


def need(compression):
    if compression and W.compressor(compression) is None:
        pytest.skip(f"{compression}: its library is not installed (pip install 'pgwalk[kdump]')")


def write(kind, path, mem, vmcoreinfo=None):
    """Write mem as ``kind``: raw, elf, lime, kdump-<compression> or flat-<compression>."""
    if kind.startswith(("kdump-", "flat-")):
        comp = kind.split("-", 1)[1]
        need(None if comp == "none" else comp)
    if kind == "avml":
        need("snappy")
    return W.write_dump(kind, path, mem, vmcoreinfo)


KINDS = ["elf", "lime", "avml"] + [f"kdump-{c or 'none'}" for c in COMPRESSIONS] + ["flat-zlib", "flat-none"]
FORMAT = {"elf": "elf", "lime": "lime", "avml": "avml", "kdump": "kdump", "flat": "kdump-flat"}


@pytest.fixture(scope="module", params=[4, 5])
def memory(request, tmp_path_factory):
    levels = request.param
    mem = W.phys_memory(11, levels)
    path = tmp_path_factory.mktemp(f"raw{levels}") / "mem.raw"
    W.write_raw(path, mem)
    mm = pgwalk.PhysImage.open(path).mm(mem.root << 12, levels)
    return mem, mm, mm.mappings(nonpresent=True)


@pytest.mark.parametrize("kind", KINDS)
def test_every_format_walks_as_the_raw_image(tmp_path, memory, kind):
    mem, raw, (want_maps, want_other) = memory
    path = write(kind, tmp_path / "dump.bin", mem)         # no telling suffix: the content decides
    img = pgwalk.PhysImage.open(path)
    assert img.format == FORMAT[kind.split("-")[0]]
    if img.store is not None:                              # the frames it holds: the memory's
        assert img.store.present() == mem.runs()
    mm = img.mm(mem.root << 12 | 0x5, mem.levels)
    maps, other = mm.mappings(nonpresent=True)
    assert maps.tobytes() == want_maps.tobytes() and other.tobytes() == want_other.tobytes()
    assert mm.ptdump() == raw.ptdump()
    vas = want_maps["va"][:: max(1, len(want_maps) // 500)]
    assert (mm.translate(vas) == raw.translate(vas)).all()
    # every data frame, read through the tables, as the raw image has it
    data = set(mem.data)
    leaves = want_maps[(want_maps["size"] == 4096) & np.isin(want_maps["pa"] >> 12, list(data))]
    assert len(leaves) > 3
    for m in leaves[:40]:
        va = int(m["va"])
        # runs into the next page: frames the dump lacks read as the raw file's zeros
        assert mm.read(va + 8, 4096, fill=0) == raw.read(va + 8, 4096, fill=0)
        assert mm.read(va, 4096) == mem.pages[int(m["pa"]) >> 12]
    rows = mm.read_many(leaves["va"][:10], 64)
    assert rows.shape == (min(10, len(leaves)), 64)
    for r, m in zip(rows, leaves[:10]):
        assert r.tobytes() == mem.pages[int(m["pa"]) >> 12][:64]


def test_reads_of_absent_memory(tmp_path, memory):
    mem, _, (maps, _) = memory
    path = write("kdump-zlib", tmp_path / "k", mem)
    mm = pgwalk.PhysImage.open(path).mm(mem.root << 12, mem.levels)
    held = set(mem.pages)
    absent = maps[(maps["size"] == 4096) & ~np.isin(maps["pa"] >> 12, list(held))]
    va = int(absent["va"][0])
    with pytest.raises(AbsentError, match=f"{va:#x}.*not in the dump") as e:
        mm.read(va, 16)
    assert e.value.address == va
    assert mm.read(va, 16, fill=0xAB) == b"\xab" * 16
    hole = 0x1000                                      # unmapped in every seed's low half? find one
    while mm.translate([hole])[0] >= 0:
        hole += 0x1000
    with pytest.raises(AbsentError, match=f"{hole:#x} is not mapped"):
        mm.read(hole, 1)
    assert mm.read_many([hole, hole], 3, fill=7).tolist() == [[7] * 3] * 2
    assert mm.read(hole, 0) == b""
    img = pgwalk.PhysImage.open(path)
    with pytest.raises(AbsentError):
        img.read_phys(int(absent["pa"][0]), 8)
    assert img.read_phys(mem.root << 12, 8) == mem.pages[mem.root][:8]


@pytest.mark.parametrize("kind", ["elf", "kdump-zlib", "flat-zlib"])
def test_vmcoreinfo_names_the_kernel_root(tmp_path, memory, kind):
    mem = memory[0]
    path = write(kind, tmp_path / "d", mem, W.vmcoreinfo_text(mem))
    img = pgwalk.PhysImage.open(path)
    assert img.vmcoreinfo["OSRELEASE"] == "6.18.0-test"
    assert img.vmcoreinfo["KERNELOFFSET"] == "1e000000"
    assert img.kernel_root() == (mem.root << 12, mem.levels)
    cr3, levels = img.kernel_root()
    assert len(img.mm(cr3, levels).mappings()) == len(memory[2][0])
    assert pgwalk.PhysImage.open(write(kind, tmp_path / "plain", mem)).kernel_root() is None


def test_old_kdump_header_versions(tmp_path, memory):
    """Version 1-5 headers: max_mapnr from the header, no 64-bit fields."""
    mem = memory[0]
    for version in (1, 2, 5, 6):
        (tmp_path / "k").write_bytes(W.kdump_bytes(mem, "zlib", version=version,
                                                   vmcoreinfo=W.vmcoreinfo_text(mem)))
        img = pgwalk.PhysImage.open(tmp_path / "k")
        assert img.store.max_mapnr == mem.size // 4096
        assert (img.vmcoreinfo is not None) == (version >= 3)
        assert img.mm(mem.root << 12, mem.levels).mappings().tobytes() == memory[2][0].tobytes()


def test_excluded_frames_are_absent_and_links_to_them_are_bad(tmp_path):
    mem = W.phys_memory(4, 4)
    W.write_raw(tmp_path / "r", mem)
    raw = pgwalk.PhysImage.open(tmp_path / "r").mm(mem.root << 12)
    want = raw.mappings()
    root = np.frombuffer(mem.pages[mem.root], dtype=np.uint64)
    child = [int(v) >> 12 & ((1 << 40) - 1) for v in root if v & 1 and not pgwalk.p4d_bad(int(v))
             and (int(v) >> 12 & ((1 << 40) - 1)) in mem.pages][0]
    del mem.pages[child]                               # a PUD table excluded (e.g. by dump level)
    (tmp_path / "k").write_bytes(W.kdump_bytes(mem, "zlib", excluded=[child]))
    mm = pgwalk.PhysImage.open(tmp_path / "k").mm(mem.root << 12)
    got = mm.mappings()
    assert len(got) < len(want) and set(got["va"].tolist()) <= set(want["va"].tolist())
    assert mm.bad_entries[0] >= 1
    assert pgwalk.PhysImage.open(tmp_path / "k").frame(child) is None


def test_lime_ranges_need_not_be_page_aligned(tmp_path):
    mem = W.phys_memory(5, 4)
    runs = mem.runs()
    ranges = [(a * 4096, (a + n) * 4096 - 1) for a, n in runs]
    a0, last0 = ranges[-1]
    ranges[-1] = (a0 - 0x234, last0 + 0x99)            # partial frames either side: absent
    W.write_lime(tmp_path / "l", mem, ranges)
    img = pgwalk.PhysImage.open(tmp_path / "l")
    assert img.frame((a0 >> 12) - 1) is None and img.frame((last0 >> 12) + 1) is None
    assert img.frame(a0 >> 12) == mem.pages[a0 >> 12]
    assert img.read_phys(a0 - 0x10, 0x20, fill=1) == bytes([1]) * 0x10 + mem.pages[a0 >> 12][:0x10]
    W.write_raw(tmp_path / "r", mem)
    want = pgwalk.PhysImage.open(tmp_path / "r").mm(mem.root << 12).mappings()
    assert img.mm(mem.root << 12).mappings().tobytes() == want.tobytes()


def test_format_comes_from_the_content_and_raw_needs_whole_frames(tmp_path, memory):
    mem = memory[0]
    dump = W.kdump_bytes(mem)
    (tmp_path / "dump.raw").write_bytes(dump)              # a misleading name
    assert pgwalk.PhysImage.open(tmp_path / "dump.raw").format == "kdump"
    assert pgwalk.PhysImage.open(tmp_path / "dump.raw", format="raw").format == "raw"
    with pytest.raises(ImageError, match="dump.raw.*not a lime dump"):
        pgwalk.PhysImage.open(tmp_path / "dump.raw", format="lime")
    with pytest.raises(ValueError, match="format must be"):
        pgwalk.PhysImage.open(tmp_path / "dump.raw", format="vmss")
    (tmp_path / "odd.lime").write_bytes(b"\0" * 5000)
    with pytest.raises(ImageError, match="odd.lime.*no known dump signature"):
        pgwalk.PhysImage.open(tmp_path / "odd.lime")
    assert pgwalk.PhysImage.open(tmp_path / "odd.lime", format="raw").format == "raw"
    (tmp_path / "old").write_bytes(b"DISKDUMP" + bytes(8184))
    with pytest.raises(ImageError, match="DISKDUMP"):
        pgwalk.PhysImage.open(tmp_path / "old")


def _cli(*args):
    return run_pgwalk("image", *args)


def test_a_text_file_is_not_a_silently_empty_image(tmp_path):
    """12 KiB of text opens as raw (whole frames, no signature), but its
    root's entries are all bad: counted, and the CLI warns and fails."""
    text = ("The quick brown fox jumps over the lazy dog.\n" * 300).encode()[:12288]
    (tmp_path / "notes.txt").write_bytes(text)
    img = pgwalk.PhysImage.open(tmp_path / "notes.txt")
    assert img.format == "raw"
    for levels in (4, 5):
        mm = img.mm(0, levels)
        assert len(mm.mappings()) == 0
        count, _ = mm.bad_entries
        nonzero, good = mm.root_report()
        assert nonzero == 512 and good == 0 and count > 0
        r = _cli(tmp_path / "notes.txt", "--cr3", "0", "--levels", levels)
        assert r.returncode == 1 and "root table" in r.stderr and "none a link" in r.stderr
    (tmp_path / "zero").write_bytes(bytes(8192))
    r = _cli(tmp_path / "zero", "--cr3", "0x1000")
    assert r.returncode == 1 and "is empty" in r.stderr
    r = _cli(tmp_path / "notes.txt", "--cr3", "0", "--format", "raw")
    assert r.returncode == 1


def test_cli_reads_every_format(tmp_path, memory):
    mem = memory[0]
    write("kdump-zlib", tmp_path / "k", mem)
    r = _cli(tmp_path / "k", "--cr3", hex(mem.root << 12), "--levels", mem.levels, "--csv", tmp_path / "m.csv")
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "m.csv").read_text().splitlines()) == 1 + len(memory[2][0])
