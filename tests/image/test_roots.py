"""find_roots: page-table roots found by scanning an image, no CR3.

The images are Linux-shaped (tests/helpers/image_gen.py, make_linux_image):
init_top_pgt in the kernel image, process PGDs whose kernel half is a copy of
it (one with an LDT mapping), PTI pairs, freed PGDs (user half cleared, or
its tables reused), the trampoline PGD and early_top_pgt, and noise frames
(random data, a full user PTE table, a lone link at entry 511); 4 and 5
levels, with and without PTI; raw and ELF, and the same memory as LiME,
kdump (each compression) and flattened kdump."""

import struct

import numpy as np
import pytest

import pgwalk
from helpers.image_gen import make_linux_image
from helpers.cli import run_pgwalk
from pgwalk.image.roots import Root, find_roots, kernel_root


def raw(tmp_path, w, name="img.raw"):
    p = tmp_path / name
    w.tofile(p)
    return p


def kinds(roots):
    out = {}
    for r in roots:
        out.setdefault(r.kind, set()).add(r.pgd >> 12)
    return out


def check(roots, truth, levels, pti):
    assert kinds(roots) == {"kernel": {truth["kernel"]}, "process": set(truth["process"]),
                            "stale": set(truth["stale"]), "boot": set(truth["boot"])}
    by = {r.pgd >> 12: r for r in roots}
    for p in [truth["kernel"], *truth["process"], *truth["stale"]]:
        r = by[p]
        assert r.levels == levels
        want = truth["user_of"].get(p)
        assert r.user_pgd == (None if want is None else want << 12)
        assert r.evidence
    assert roots[0].kind == "kernel"
    assert not pti or all(r.user_pgd is not None for r in roots if r.kind == "process")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("pti", [True, False])
@pytest.mark.parametrize("levels", [4, 5])
def test_find_roots_finds_exactly_the_roots_with_their_kinds(tmp_path, levels, pti, seed):
    w, truth = make_linux_image(levels, pti=pti, nproc=3 + seed * 3, seed=seed)
    img = pgwalk.PhysImage.open(raw(tmp_path, w))
    roots = img.find_roots()
    check(roots, truth, levels, pti)
    assert truth["ldt"] in kinds(roots)["process"]          # the LDT slot is not part of the copy


def test_roots_in_an_elf_core_with_a_hole(tmp_path):
    w, truth = make_linux_image(4, seed=3)
    n = w.size // 512
    layout = [(4096, n - 4096), (0, 1600)]                  # frames 1600..4095 absent: data frames
    used = {truth["kernel"], *truth["process"], *truth["stale"], *truth["boot"]}
    assert not any(1600 <= p < 4096 for p in used)
    ph, body, off = b"", b"", 4096
    for first, cnt in layout:
        ph += struct.pack("<IIQQQQQQ", 1, 4, off + len(body), 0, first * 4096, cnt * 4096, cnt * 4096, 4096)
        body += w[first * 512:(first + cnt) * 512].tobytes()
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, len(layout), 0, 0, 0)
    (tmp_path / "core").write_bytes((ehdr + ph).ljust(off, b"\0") + body)
    roots = pgwalk.PhysImage.open(tmp_path / "core").find_roots()
    # the freed PGD whose user half links to a reused (random) frame may link
    # into the hole: then it is no candidate; everything else is found
    got = kinds(roots)
    stale = set(truth["stale"])
    assert got.pop("stale", set()) in (stale, stale - {truth["stale"][1]})
    assert got == {"kernel": {truth["kernel"]}, "process": set(truth["process"]), "boot": set(truth["boot"])}
    assert kernel_root(roots).user_pgd >> 12 == truth["user_of"][truth["kernel"]]


def test_mm_accepts_a_root(tmp_path):
    w, truth = make_linux_image(5)
    img = pgwalk.PhysImage.open(raw(tmp_path, w))
    k = kernel_root(img.find_roots())
    got = img.mm(k).mappings()
    want = img.mm(k.pgd, 5).mappings()
    assert got.size and np.array_equal(got, want)
    assert img.mm(k).levels == 5


def test_nothing_in_noise_and_progress_is_reported(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.integers(0, 1 << 63, 4096 * 512, dtype=np.uint64)
    w[::7] = 0
    calls = []
    roots = pgwalk.PhysImage.open(raw(tmp_path, w)).find_roots(progress=lambda d, t: calls.append((d, t)))
    assert roots == []
    assert calls and calls[-1] == (4096, 4096)


def test_vmcoreinfo_gives_the_kernel_root_when_the_scan_cannot(tmp_path):
    """An ELF core whose VMCOREINFO note names init_top_pgt (SYMBOL, phys_base,
    pgtable_l5_enabled, as arch_crash_save_vmcoreinfo writes them): the scan's
    kernel root is confirmed; with the kernel image tables gone, the note's
    root is used."""
    w, truth = make_linux_image(4, seed=5)
    kpa = truth["kernel"] << 12
    phys_base = 0x200000
    note_text = (f"OSRELEASE=6.18.0\nSYMBOL(init_top_pgt)={kpa - phys_base + 0xFFFFFFFF80000000:x}\n"
                 f"NUMBER(phys_base)={phys_base}\nNUMBER(pgtable_l5_enabled)=0\n").encode()

    def core(words, name):
        name_b = b"VMCOREINFO\0"
        note = struct.pack("<III", len(name_b), len(note_text), 0) + name_b.ljust(12, b"\0") \
            + note_text.ljust((len(note_text) + 3) // 4 * 4, b"\0")
        n = words.size // 512
        ph = struct.pack("<IIQQQQQQ", 4, 0, 4096 - len(note), 0, 0, len(note), 0, 4)
        ph += struct.pack("<IIQQQQQQ", 1, 4, 4096, 0, 0, n * 4096, n * 4096, 4096)
        ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
        ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, 2, 0, 0, 0)
        head = (ehdr + ph).ljust(4096 - len(note), b"\0") + note
        p = tmp_path / name
        p.write_bytes(head + words.tobytes())
        return p

    k = kernel_root(pgwalk.PhysImage.open(core(w, "a")).find_roots())
    assert k.pgd == kpa and k.evidence["vmcoreinfo"] == "init_top_pgt"
    w2 = w.copy()
    w2[truth["kernel"] * 512 + 511] = 0                  # init_top_pgt no longer a candidate
    k2 = kernel_root(pgwalk.PhysImage.open(core(w2, "b")).find_roots())
    assert k2.pgd == kpa and k2.levels == 4 and "not found by the scan" in k2.evidence["vmcoreinfo"]


def test_root_summary_and_equality():
    r = Root(0x1000, 4, "process", 0x2000, {"a": 1})
    assert r == Root(0x1000, 4, "process", 0x2000, {"b": 2})
    assert "0x2000" in r.summary() and "process" in r.summary()


def cli(*args):
    return run_pgwalk("image", *args)


def test_cli_roots_and_kernel_root_walk(tmp_path):
    w, truth = make_linux_image(4, seed=2)
    p = raw(tmp_path, w)
    r = cli(p, "--roots", "--no-progress")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()[1:]
    assert len(lines) == 1 + len(truth["process"]) + len(truth["stale"]) + len(truth["boot"])
    assert lines[0].split()[:4] == [f"{truth['kernel'] << 12:#014x}", "4", "kernel",
                                    f"{truth['user_of'][truth['kernel']] << 12:#x}"]
    walk = cli(p, "--no-progress")
    assert walk.returncode == 0, walk.stderr
    assert walk.stdout == cli(p, "--cr3", hex(truth["kernel"] << 12)).stdout
    assert "kernel root" in walk.stderr


def test_cli_all_writes_every_root(tmp_path):
    w, truth = make_linux_image(5, seed=1)
    p = raw(tmp_path, w)
    r = cli(p, "--all", "--out", tmp_path / "out", "--out-format", "npz", "--no-progress")
    assert r.returncode == 0, r.stderr
    files = sorted(f.name for f in (tmp_path / "out").iterdir())
    img = pgwalk.PhysImage.open(p)
    roots = img.find_roots()
    assert len(files) == len(roots) + sum(r.user_pgd is not None for r in roots)
    k = kernel_root(roots)
    got = np.load(tmp_path / "out" / f"kernel-{k.pgd:#x}.npz")["mappings"]
    assert np.array_equal(got, img.mm(k).mappings())
    pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow (the fleet extra)")
    import pyarrow.parquet as pq
    r = cli(p, "--all", "--out", tmp_path / "pq", "--no-progress")
    assert r.returncode == 0, r.stderr
    t = pq.read_table(tmp_path / "pq" / f"kernel-{k.pgd:#x}.parquet")
    assert t.column("va").to_numpy().tolist() == img.mm(k).mappings()["va"].tolist()


def test_cli_without_a_kernel_root_asks_for_cr3(tmp_path):
    r = cli(raw(tmp_path, np.zeros(512 * 8, dtype=np.uint64)), "--no-progress")
    assert r.returncode == 2 and "--cr3" in r.stderr


KINDS = ["raw", "elf", "lime", "avml", "kdump-none", "kdump-zlib", "kdump-lzo", "kdump-snappy", "kdump-zstd",
         "flat-zlib", "flat-none"]


def memory_of(w, truth, levels, drop=()):
    """The words of make_linux_image as dump_writers' Memory, every frame held
    but ``drop``."""
    from helpers.dump_writers import Memory
    n = w.size // 512
    pages = {p: w[p * 512:(p + 1) * 512].tobytes() for p in range(n) if p not in drop}
    return Memory(pages, truth["kernel"], levels, n * 4096)


def write_kind(tmp_path, kind, mem, excluded=()):
    from helpers import dump_writers as W
    comp = "snappy" if kind == "avml" else kind.split("-", 1)[1] if "-" in kind else None
    if comp not in (None, "none") and W.compressor(comp) is None:
        pytest.skip(f"{comp}: its library is not installed (pip install 'pgwalk[kdump]')")
    return W.write_dump(kind, tmp_path / kind, mem, excluded=excluded)


def as_rows(roots):
    return [(r.pgd, r.levels, r.kind, r.user_pgd, r.evidence) for r in roots]


@pytest.mark.parametrize("pti", [True, False])
@pytest.mark.parametrize("levels", [4, 5])
def test_find_roots_is_the_same_on_every_format(tmp_path, levels, pti):
    """The same memory written raw, ELF, LiME, AVML, kdump (each compression) and
    flattened kdump: the same roots, kinds, pairs and evidence (the LiME
    and kdump dumps read in chunks of held frames, not in place)."""
    w, truth = make_linux_image(levels, pti=pti, nproc=4, seed=2)
    mem = memory_of(w, truth, levels)
    want = pgwalk.PhysImage.open(write_kind(tmp_path, "raw", mem)).find_roots()
    check(want, truth, levels, pti)
    for kind in KINDS[1:]:
        img = pgwalk.PhysImage.open(write_kind(tmp_path, kind, mem))
        assert as_rows(img.find_roots()) == as_rows(want), kind


def test_find_roots_with_frames_the_dump_does_not_hold(tmp_path):
    """Frames a dump lacks (an ELF hole, no LiME range, excluded from a
    kdump dump or never dumped) are absent alike: links to them do not make
    candidates, in every format the same."""
    w, truth = make_linux_image(4, seed=3)
    hole = range(1600, 4096)                          # data frames (the freed PGD's reused table among them)
    mem = memory_of(w, truth, 4, drop=set(hole))
    got = {}
    for kind, excluded in (("elf", ()), ("lime", ()), ("kdump-zlib", ()), ("kdump-zlib", hole),
                           ("flat-zlib", hole)):
        img = pgwalk.PhysImage.open(write_kind(tmp_path, kind, mem, excluded))
        got[kind, bool(excluded)] = as_rows(img.find_roots())
    first = next(iter(got.values()))
    assert all(v == first for v in got.values())
    roots = [Root(*r) for r in first]
    k = kinds(roots)
    assert k["kernel"] == {truth["kernel"]} and k["process"] == set(truth["process"])
    assert kernel_root(roots).user_pgd >> 12 == truth["user_of"][truth["kernel"]]


def test_a_kdump_dump_is_read_in_bounded_chunks(tmp_path, monkeypatch):
    """The kdump frames are read (and decompressed) a chunk at a time, never
    the whole dump at once, and the frames gathered for the classification
    are few; progress counts held frames."""
    from pgwalk.image import roots as R
    from pgwalk.image.formats.kdump import KdumpStore
    w, truth = make_linux_image(5, seed=4)
    mem = memory_of(w, truth, 5)
    path = write_kind(tmp_path, "kdump-zlib", mem)
    sizes = []
    real = KdumpStore.read_frames
    monkeypatch.setattr(KdumpStore, "read_frames", lambda self, pfn, n: sizes.append(n) or real(self, pfn, n))
    monkeypatch.setattr(R, "STORE_CHUNK", 1000)
    calls = []
    img = pgwalk.PhysImage.open(path)
    sc, c = R.scan(img, progress=lambda d, t: calls.append((d, t)))
    assert max(sizes) == 1000 and sum(sizes) == len(mem.pages)
    assert calls[-1] == (len(mem.pages), len(mem.pages)) and len(calls) == len(sizes)
    assert set(truth["process"]) <= {int(p) for p in c["pfn"]}
    want = pgwalk.PhysImage.open(write_kind(tmp_path, "raw", mem)).find_roots()
    assert as_rows(img.find_roots()) == as_rows(want)


def test_kdump_frames_a_cut_short_dump_never_wrote_are_absent(tmp_path):
    """status INCOMPLETE: a zero descriptor is a frame never written; the
    runs read it as zeros and the bitmap of held frames leaves it out."""
    from helpers import dump_writers as W
    from pgwalk.image.formats.kdump import KdumpStore
    mem = W.phys_memory(2, 4)
    held = sorted(mem.pages)
    victim = held[3]

    def cut(parts):
        parts["descs"][3] = [0, 0, 0, 0]
    (tmp_path / "k").write_bytes(W.kdump_bytes(mem, "zlib", status=1, edit=cut))
    img = pgwalk.PhysImage.open(tmp_path / "k")
    store = img.store
    assert isinstance(store, KdumpStore) and img.frame(victim) is None
    bits = store.present_bits()
    assert not (bits[victim >> 3] >> (victim & 7)) & 1
    assert all((bits[p >> 3] >> (p & 7)) & 1 for p in held if p != victim)
    a, n = next((a, n) for a, n in store.present() if a <= victim < a + n)
    data = store.read_frames(a, n)
    assert data[(victim - a) * 4096:(victim - a + 1) * 4096] == bytes(4096)
    for p in range(a, a + n):
        if p != victim:
            assert data[(p - a) * 4096:(p - a + 1) * 4096] == mem.pages[p]
    with pytest.raises(ValueError, match="not a run"):
        store.read_frames(a, n + 1)


def test_cli_roots_and_kernel_walk_on_every_format(tmp_path):
    """python -m pgwalk image DUMP (--roots): the same list and the same
    kernel-root dump from the LiME and kdump dumps as from the raw image."""
    w, truth = make_linux_image(4, seed=1)
    mem = memory_of(w, truth, 4)
    out = {}
    for kind in ("raw", "lime", "kdump-zlib"):
        p = write_kind(tmp_path, kind, mem)
        listed, walked = cli(p, "--roots", "--no-progress"), cli(p, "--no-progress")
        assert listed.returncode == 0 and walked.returncode == 0, listed.stderr + walked.stderr
        out[kind] = (listed.stdout, walked.stdout)
    assert f"{truth['kernel'] << 12:#014x}" in out["raw"][0] and "---[ Kernel Space ]---" in out["raw"][1]
    assert out["lime"] == out["raw"] and out["kdump-zlib"] == out["raw"]


def test_a_dump_of_candidates_only_is_scanned_in_bounded_memory(tmp_path, monkeypatch):
    """Every frame a candidate (full PTE-like tables, guard hole empty) as
    LiME and kdump: the paging modes are found batch by batch, so no more
    than a batch's few frames are ever gathered; nothing is a root, as in
    the raw image."""
    from helpers.dump_writers import Memory
    from pgwalk.image import roots as R
    n = 1024
    rng = np.random.default_rng(5)
    w = (rng.integers(0, n, (n, 512), dtype=np.uint64) << np.uint64(12)) | np.uint64(0x63)
    w[:, 256:272] = 0
    mem = Memory({p: w[p].tobytes() for p in range(n)}, 0, 4, n * 4096)
    assert pgwalk.PhysImage.open(write_kind(tmp_path, "raw", mem)).find_roots() == []
    monkeypatch.setattr(R, "MODE_BATCH", 32)
    monkeypatch.setattr(R, "MAX_GATHER", 32 * 6)        # a batch: its frames and the five tables below each
    for kind in ("lime", "kdump-zlib"):
        img = pgwalk.PhysImage.open(write_kind(tmp_path, kind, mem))
        sc, c = R.scan(img)
        assert c["pfn"].size == 0
        assert img.find_roots() == []
    monkeypatch.setattr(R, "MODE_BATCH", 1024)
    with pytest.raises(pgwalk.ImageError, match="would gather more than 192 frames"):
        pgwalk.PhysImage.open(write_kind(tmp_path, "lime", mem)).find_roots()
