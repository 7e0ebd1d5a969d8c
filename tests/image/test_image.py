"""Walking page tables in physical-memory images.

Images come from a generator of random x86-64 tables (both halves, 4K/2M/1G
leaves, PROT_NONE and swap entries, bad top-level entries, links outside the
image and back to the root); ``reference_mappings`` below is an independent
walker of the raw frames, written from the x86-64 rules and pgwalk's
decisions (docs/decisions.md, 5 and 16), against which the compiled walk is
compared."""

import ctypes
import random
import struct

import numpy as np
import pytest

import pgwalk

from helpers.cli import run_pgwalk

P, RW, US, PSE, PROTNONE = 1, 2, 4, 0x80, 0x100
TABLE = 0x67
PFN_MASK = ((1 << 52) - 1) & ~0xFFF
PMD_MASK = ((1 << 52) - 1) & ~((1 << 21) - 1)
PUD_MASK = ((1 << 52) - 1) & ~((1 << 30) - 1)


def make_image(seed, levels=4, nframes=96):
    """A random image: (frames array, root pfn)."""
    rng = random.Random(seed)
    img = np.zeros(nframes * 512, dtype=np.uint64)
    free = list(range(2, nframes))
    rng.shuffle(free)
    root = 1

    def table(depth):                       # depth 0 = root's children...
        return free.pop() if free else None

    def fill(frame, level):                 # level: 0 pgd, 1 p4d, 2 pud, 3 pmd, 4 pte
        base = frame * 512
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(512)
            kind = rng.random()
            child = None
            if level == 4:
                v = rng.choice([(rng.randrange(1 << 30) << 12) | P | RW, PROTNONE | (7 << 12),
                                (3 << 52) | (9 << 12) | 2, 0x60])
            elif level in (2, 3) and kind < 0.3:
                mask = PUD_MASK if level == 2 else PMD_MASK
                v = ((rng.randrange(1 << 30) << 21) & mask) | P | RW | PSE
                if rng.random() < 0.2:
                    v &= ~P                 # a PROT_NONE-like huge entry
            elif kind < 0.08:
                v = rng.choice([0xE3, (5000 << 12) | TABLE, (root << 12) | TABLE, (1 << 51) | TABLE])
            else:
                child = table(level)
                if child is None:
                    continue
                v = (child << 12) | TABLE
            img[base + i] = v
            if child is not None:
                fill(child, level + 1 if not (levels == 4 and level == 0) else 2)

    fill(root, 0)
    return img, root


def reference_mappings(img, root, levels):
    """Independent walker: present leaves and other non-none entries, with
    bad top-level entries and links out of the image at any level skipped
    (and counted)."""
    nframes = img.size // 512
    maps, other, bad = [], [], []

    def frame(v):
        pfn = (v & PFN_MASK) >> 12
        return pfn if pfn < nframes else None

    def canon(va):
        top = 48 if levels == 4 else 57
        return va | (((1 << 64) - 1) & ~((1 << top) - 1)) if va >> (top - 1) & 1 else va

    def walk(f, level, base):
        shift = {0: 39 if levels == 4 else 48, 1: 39, 2: 30, 3: 21, 4: 12}[level]
        for i in range(512):
            v = int(img[f * 512 + i])
            va = canon(base + (i << shift))
            if level == 0 and levels == 5:
                if v == 0:
                    continue
                if pgwalk.pgd_bad(v, 5) or frame(v) is None:
                    bad.append(va)
                    continue
                walk(frame(v), 1, base + (i << shift))
                continue
            if pgwalk.pte_none(v):
                continue
            if level in (0, 1):
                if pgwalk.p4d_bad(v) or frame(v) is None:
                    bad.append(va)
                    continue
                walk(frame(v), 2, base + (i << shift))
            elif level in (2, 3):
                if v & PSE:
                    if v & P:
                        maps.append((va, v & (PUD_MASK if level == 2 else PMD_MASK), 1 << shift, level, v))
                    else:
                        other.append((va, level, v))
                elif not v & P:
                    other.append((va, level, v))
                elif frame(v) is None:
                    bad.append(va)              # a link out of the image: not followed, reported
                else:
                    walk(frame(v), level + 1, base + (i << shift))
            else:
                if v & P:
                    maps.append((va, v & PFN_MASK, 4096, 4, v))
                else:
                    other.append((va, 4, v))

    walk(root, 0, 0)
    return sorted(maps), sorted(other), sorted(bad)


def as_tuples(a):
    return sorted(tuple(int(x) for x in row) for row in a)


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("seed", range(12))
def test_mappings_match_the_reference_walker(tmp_path, levels, seed):
    img, root = make_image(seed, levels)
    path = tmp_path / "img.raw"
    img.tofile(path)
    mm = pgwalk.PhysImage.open(path).mm(root << 12 | 0x123, levels)   # PCID bits masked
    maps, other = mm.mappings(nonpresent=True)
    want_maps, want_other, want_bad = reference_mappings(img, root, levels)
    assert as_tuples(maps) == want_maps
    assert list(maps["va"]) == sorted(maps["va"])                        # address order
    assert as_tuples(other) == want_other
    count, addrs = mm.bad_entries
    assert count == len(want_bad) and sorted(int(a) for a in addrs) == want_bad
    # translate agrees with the mappings, and says -1 elsewhere
    probes = [int(m["va"]) + random.Random(seed).randrange(int(m["size"])) for m in maps[:50]]
    pas = mm.translate(np.array(probes + [0x1000 * 12345 + 7], dtype=np.uint64))
    for va, pa in zip(probes, pas):
        hit = [m for m in want_maps if m[0] <= va < m[0] + m[2]]
        assert pa == hit[0][1] + (va - hit[0][0])
    assert (img == np.fromfile(path, dtype=np.uint64)).all()             # nothing was written


def _raw(tmp_path, img):
    path = tmp_path / "holed.raw"
    img.tofile(path)
    return path


def write_elf(path, img, layout, data_off=4096):
    """An ELF core holding the frames of ``img`` in PT_LOAD segments
    ``layout`` = [(first frame, frames)], at shuffled file positions, the
    first at ``data_off`` (QEMU's dump-guest-memory: right after the headers)."""
    phnum = len(layout)
    ph = b""
    body = b""
    for first, n in layout:
        ph += struct.pack("<IIQQQQQQ", 1, 4, data_off + len(body), 0, first * 4096, n * 4096, n * 4096, 4096)
        body += img[first * 512:(first + n) * 512].tobytes()
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    path.write_bytes((ehdr + ph).ljust(data_off, b"\0") + body)


@pytest.mark.parametrize("levels", [4, 5])
def test_elf_core_gives_the_same_walk_with_holes_absent(tmp_path, levels):
    img, root = make_image(99, levels)
    n = img.size // 512
    layout = [(40, n - 40), (0, 30)]                  # frames 30..39 are a hole
    write_elf(tmp_path / "core", img, layout)
    holed = img.copy()
    holed[30 * 512:40 * 512] = 0
    mm = pgwalk.PhysImage.open(tmp_path / "core").mm(root << 12, levels)
    maps, other = mm.mappings(nonpresent=True)
    # links into the hole are not followed by pgwalk; the reference, reading
    # zeros in place of the hole, finds nothing under them either
    want_maps, want_other, _ = reference_mappings(holed, root, levels)
    assert as_tuples(maps) == want_maps
    assert as_tuples(other) == want_other
    count, addrs = mm.bad_entries      # top-level links into the hole are reported as bad
    raw_mm = pgwalk.PhysImage.open(_raw(tmp_path, holed)).mm(root << 12, levels)
    raw_mm.mappings()
    assert count >= raw_mm.bad_entries[0]


def test_elf_core_with_segments_packed_after_the_headers(tmp_path):
    """QEMU's dump-guest-memory writes the first PT_LOAD at offset 0x508 and
    the rest right after it: offsets alike modulo 4 KiB, not page aligned."""
    img, root = make_image(7, 4)
    n = img.size // 512
    write_elf(tmp_path / "qemu-like", img, [(0, 30), (40, n - 40)], data_off=0x508)
    holed = img.copy()
    holed[30 * 512:40 * 512] = 0
    mm = pgwalk.PhysImage.open(tmp_path / "qemu-like").mm(root << 12)
    want_maps, want_other, _ = reference_mappings(holed, root, 4)
    maps, other = mm.mappings(nonpresent=True)
    assert as_tuples(maps) == want_maps and as_tuples(other) == want_other
    write_elf(tmp_path / "odd", img, [(0, n)], data_off=0x50c)             # not 8-byte aligned
    with pytest.raises(pgwalk.ImageError, match="aligned"):
        pgwalk.PhysImage.open(tmp_path / "odd")
    data = bytearray((tmp_path / "qemu-like").read_bytes())             # second segment moved by 8
    import struct as st
    off = st.unpack_from("<Q", data, 64 + 56 + 8)[0]
    st.pack_into("<Q", data, 64 + 56 + 8, off + 8)
    (tmp_path / "skew").write_bytes(bytes(data) + bytes(8))
    with pytest.raises(pgwalk.ImageError, match="modulo 4 KiB"):
        pgwalk.PhysImage.open(tmp_path / "skew")


def test_every_tier_walks_an_image_and_writes_are_refused(tmp_path):
    img, root = make_image(5, 4)
    img.tofile(tmp_path / "i.raw")
    mm = pgwalk.PhysImage.open(tmp_path / "i.raw").mm(root << 12)
    n4k = int((mm.mappings()["size"] == 4096).sum())
    seen = []

    def pte(e, a, nx, w):
        if int(e) & P:
            seen.append(a)
        return 0

    def try_write(e, a, nx, w):
        with pytest.raises(PermissionError):
            e.set(0)
        return 1

    counts = []

    def batch(entries, a, nx, w):
        assert not entries.flags.writeable                  # read-only image
        counts.append(int(np.count_nonzero(entries & P)))
        return 0

    def skip_leaves(e, a, nx, w):             # as MappingsOp: leaves and non-present are not descended
        if int(e) & PSE or not int(e) & P:
            w.action = pgwalk.ACTION_CONTINUE
        return 0

    half = 1 << 47
    with mm.mmap_read_lock():
        for lo, hi in ((0, half), ((1 << 64) - half, (1 << 64) - 1)):
            pgwalk.walk_page_range_novma(mm, lo, hi, pgwalk.MMWalkOps(
                pte_entry=pte, pmd_entry=skip_leaves, pud_entry=skip_leaves))
            pgwalk.walk_page_range_novma(mm, lo, hi, pgwalk.MMWalkOps(
                pte_entry=pgwalk.batch(batch), pmd_entry=skip_leaves, pud_entry=skip_leaves))
        assert pgwalk.walk_page_range_novma(mm, 0, half, pgwalk.MMWalkOps(pte_entry=try_write)) in (0, 1)
    assert len(seen) == sum(counts) == n4k
    with pytest.raises(PermissionError):
        mm.set_entry(0, pgwalk.PTE, 1)
    # a C callback through ctypes
    fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64, ctypes.c_uint64,
                          ctypes.c_void_p, ctypes.c_void_p)(lambda e, a, nx, w, u: 0)
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range_novma(mm, 0, half, pgwalk.MMWalkOps(
            pte_entry=pgwalk.LowLevelCallable(fn))) == 0


def test_bad_images_get_clear_errors(tmp_path):
    (tmp_path / "tiny").write_bytes(b"x" * 100)
    with pytest.raises(pgwalk.ImageError, match="tiny"):
        pgwalk.PhysImage.open(tmp_path / "tiny")
    img, root = make_image(1)
    write_elf(tmp_path / "core", img, [(0, img.size // 512)])
    data = (tmp_path / "core").read_bytes()
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    with pytest.raises(pgwalk.ImageError, match="cut.*truncated"):
        pgwalk.PhysImage.open(tmp_path / "cut")
    (tmp_path / "hdr").write_bytes(data[:40])
    with pytest.raises(pgwalk.ImageError, match="hdr"):
        pgwalk.PhysImage.open(tmp_path / "hdr")
    img.tofile(tmp_path / "ok.raw")
    with pytest.raises(ValueError, match="cr3"):
        pgwalk.PhysImage.open(tmp_path / "ok.raw").mm(10 ** 6 << 12)


def test_ptdump_text_and_command_line(tmp_path, capsys):
    """The kernel's page_tables format: contiguous lines covering both halves,
    each leaf inside a line of its level with its flags; the command line
    prints it or writes the mappings."""
    img, root = make_image(3, 4)
    img.tofile(tmp_path / "i.raw")
    mm = pgwalk.PhysImage.open(tmp_path / "i.raw").mm(root << 12)
    text = mm.ptdump()
    lines = [ln for ln in text.splitlines() if ln.startswith("0x")]
    assert text.splitlines()[0] == "---[ User Space ]---" and "---[ Kernel Space ]---" in text
    spans = [(int(ln[:18], 16), int(ln[19:37], 16) or 1 << 64, ln) for ln in lines]
    for (a, b, _), (c, _, _) in zip(spans, spans[1:]):
        assert b == c or (b == 1 << 47 and c == (1 << 64) - (1 << 47))
    assert spans[0][0] == 0 and spans[-1][1] == 1 << 64
    for m in mm.mappings()[:40]:
        va, level = int(m["va"]), int(m["level"])
        ln = [s for a, b, s in spans if a <= va < b][0]
        assert ln.endswith(("pgd", "p4d", "pud", "pmd", "pte")[level])
        assert ("RW " in ln) == bool(int(m["entry"]) & RW)
    r = run_pgwalk("image", tmp_path / "i.raw", "--cr3", hex(root << 12))
    assert r.returncode == 0 and r.stdout == text
    r = run_pgwalk("image", tmp_path / "i.raw", "--cr3", hex(root << 12), "--csv", tmp_path / "m.csv")
    assert r.returncode == 0
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0] == "va,pa,size,level,entry" and len(rows) == 1 + len(mm.mappings())
    r = run_pgwalk("image", tmp_path / "nope", "--cr3", "0")
    assert r.returncode == 2 and "nope" in r.stderr


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("seed", range(6))
def test_kernel_shaped_mappings_op_equals_the_per_pte_op(tmp_path, levels, seed):
    """mm.mappings() uses MappingsOp.pte_range as its pmd_entry (each PTE
    table read in one loop); the per-PTE shape (pmd_entry + pte_entry) gives
    the same records, the same bad-entry report and the same order."""
    from pgwalk.image import _image
    img, root = make_image(seed, levels)
    path = tmp_path / "img.raw"
    img.tofile(path)
    results = []
    for shape in ("per-pte", "pte_range"):
        mm = pgwalk.PhysImage.open(path).mm(root << 12, levels)
        op = _image.MappingsOp()
        if shape == "per-pte":
            ops = pgwalk.MMWalkOps(pud_entry=op.pud_entry, pmd_entry=op.pmd_entry, pte_entry=op.pte_entry)
        else:
            ops = pgwalk.MMWalkOps(pud_entry=op.pud_entry, pmd_entry=op.pte_range)
        with mm.mmap_read_lock():
            for lo, hi in ((0, 1 << (47 if levels == 4 else 56)),
                           ((1 << 64) - (1 << (47 if levels == 4 else 56)), (1 << 64) - 4096)):
                assert pgwalk.walk_page_range_novma(mm, lo, hi, ops) == 0
        maps, other = op.result()
        count, addrs = mm.bad_entries
        results.append((maps.tobytes(), other.tobytes(), count, sorted(int(a) for a in addrs)))
    assert results[0] == results[1]
