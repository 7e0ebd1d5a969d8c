"""Walking page tables in a physical-memory image: pgwalk's image walk,
callback tiers and translate against a vectorised numpy walker and
Volatility 3's Intel32e mapping(), per page, in one run.

    python benchmarks/images.py [--gib 8] [--samples 5] [--vol-mib 256] [--no-fixture] [--qemu DIR]
                                [--peers-gib 1] [--no-peers] [--only-peers]

The peers rows (benchmarks/image_peers.py, extra ``peers``) time Volatility
3, drgn, MemProcFS and LibVMI on one synthetic image of PEERS_GIB GiB and
on the QEMU guest, same addresses, answers checked; before them, pgwalk's
fixed cost (open + mm() + first mappings()) on a tiny image.

Synthetic image: GIB GiB of 4 KiB mappings (one PTE table per 2 MiB) at the
bottom of the user half, plus a copy at the start of the kernel half; the
data frames follow the tables inside the (sparse) file, so that Volatility,
which drops leaves outside the image, sees every page.  Rows:

  mappings()      mm.mappings(0, 2**47): every leaf of the user half
  translate()     1M random VAs of the mapped range
  C op            the built-in MincoreOp in the pte_entry slot
  low-level       count_present.c (pgwalk/_examples/ctypes) through ctypes
  batch           pgwalk.batch, one numpy count_nonzero per PTE table
  Python          a plain Python pte_entry, one call per PTE
  numpy           all PTEs resolved level by level with numpy gathers
  Volatility 3    Intel32e(...).mapping(0, VOL_MIB MiB, ignore_errors=True),
                  a fresh layer per sample (its caches start cold)

The Python and batch tiers walk at most 1 GiB, Volatility VOL_MIB MiB of the
same image: their ns/page is extrapolated to the whole range (cost per page
is flat: every PTE table is alike).  The fixture rows repeat mappings() and
Volatility on the random images of tests/helpers/image_gen.py (the comparison's own
generator: 4K/2M/1G leaves, merged runs, equal tables), per leaf; the QEMU
rows do the same on the guest dump of tests/fixtures/make_qemu_image.sh
(DIR/l4, when present: a real kernel's tables, kernel and PTI user CR3).

Harness as run.py: median and min-max of --samples samples after one
warm-up.  The load average before and after is printed (2 cores shared)."""

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
if list((_ROOT / "pgwalk").rglob("_core.*.so")):      # this checkout, when built in place
    sys.path.insert(0, str(_ROOT))                       # (else the installed pgwalk)
import pgwalk  # noqa: E402
from pgwalk._builtin import MincoreOp  # noqa: E402

TABLE = 0x67
PFN_MASK = ((1 << 52) - 1) & ~0xFFF
PY_CAP_PAGES = 1 << 18          # Python and batch tiers: 1 GiB at most
TESTS = Path(__file__).resolve().parent.parent / "tests"


def build_image(gib):
    """Frames: 0 unused, 1 pgd, 2 pud, 3.. pmd tables, then PTE tables; data
    frames follow the tables (the file is extended, sparse, to hold them).
    Returns (table frames, file size)."""
    n_pte_tables = gib * 512
    n_pmd_tables = gib
    first_pmd, first_pte = 3, 3 + n_pmd_tables
    nframes = first_pte + n_pte_tables
    img = np.zeros(nframes * 512, dtype=np.uint64)
    img[512 + 0] = (2 << 12) | TABLE                       # pgd[0]: user half
    img[512 + 256] = (2 << 12) | TABLE                     # pgd[256]: the kernel half, same tables
    img[2 * 512 + np.arange(gib)] = ((first_pmd + np.arange(gib, dtype=np.uint64)) << 12) | TABLE
    pmd = img[first_pmd * 512:(first_pmd + n_pmd_tables) * 512]
    pmd[:] = ((first_pte + np.arange(n_pte_tables, dtype=np.uint64)) << 12) | TABLE
    ptes = img[first_pte * 512:]
    ptes[:] = ((np.arange(ptes.size, dtype=np.uint64) + nframes) << 12) | 0x63
    return img, (nframes + ptes.size) * 4096


def write_sparse(path, img, size):
    with open(path, "wb") as f:
        f.write(img.tobytes())
        f.truncate(size)


def numpy_walk(img, root):
    """All present 4 KiB leaves of the user half, vectorised: (va, pa)."""
    frames = img.reshape(-1, 512)
    pgd = frames[root]
    i0 = np.flatnonzero(pgd[:256] & 1)
    pud_frames = (pgd[i0] & PFN_MASK) >> 12
    pud = frames[pud_frames.astype(np.int64)]
    j, k = np.nonzero(pud & 1)
    pmd_frames = (pud[j, k] & PFN_MASK) >> 12
    pmd = frames[pmd_frames.astype(np.int64)]
    a, b = np.nonzero(pmd & 1)
    pte_frames = (pmd[a, b] & PFN_MASK) >> 12
    pte = frames[pte_frames.astype(np.int64)]
    c, d = np.nonzero(pte & 1)
    va = (i0[j[a[c]]].astype(np.uint64) << 39) | (k[a[c]].astype(np.uint64) << 30) | \
        (b[c].astype(np.uint64) << 21) | (d.astype(np.uint64) << 12)
    return va, pte[c, d] & PFN_MASK


def measure(fn, n, samples, warm=True):
    """ns per unit (n units per call): median, min, max (``warm``: one call
    first, untimed; False when the caller has just made it)."""
    if warm:
        fn()
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) / n * 1e9)
    return statistics.median(out), min(out), max(out)


def volatility_layer(path, cr3):
    """Volatility 3's Intel32e over a FileLayer of ``path`` (None when
    volatility3 is not installed)."""
    try:
        from volatility3.framework import contexts
        from volatility3.framework.layers import intel, physical
    except ImportError:
        return None
    ctx = contexts.Context()
    ctx.config["bench.phys.location"] = Path(path).resolve().as_uri()
    ctx.layers.add_layer(physical.FileLayer(ctx, "bench.phys", "phys"))
    ctx.config["bench.virt.memory_layer"] = "phys"
    ctx.config["bench.virt.page_map_offset"] = cr3
    layer = intel.Intel32e(ctx, "bench.virt", "virt")
    ctx.layers.add_layer(layer)
    return layer


def volatility_mapping(path, cr3, end):
    return list(volatility_layer(path, cr3).mapping(0, end, ignore_errors=True))


def low_level_counter(tmpdir):
    """count_present from pgwalk's ctypes example, compiled (None without a C compiler)."""
    from pgwalk._examples.ctypes import count_present
    try:
        lib = count_present.build(tmpdir)
    except (RuntimeError, OSError):
        return None
    fn = lib.count_present
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64, ctypes.c_uint64,
                   ctypes.POINTER(pgwalk.WalkStruct), ctypes.c_void_p]
    return fn


def synthetic(a, d, res):
    img, size = build_image(a.gib)
    path = Path(d) / "image.raw"
    write_sparse(path, img, size)
    mm = pgwalk.PhysImage.open(path).mm(1 << 12)
    pages = a.gib << 18
    end = a.gib << 30
    res["mappings()"] = measure(lambda: mm.mappings(0, 1 << 47), pages, a.samples)
    vas = (np.random.default_rng(1).integers(0, pages, 1 << 20, dtype=np.uint64) << np.uint64(12))
    res["translate() (1M random VAs, per VA)"] = measure(lambda: mm.translate(vas), 1 << 20, a.samples)
    op = MincoreOp(0, pages)
    skip = {"pmd_entry": op.pmd_entry, "pte_hole": op.pte_hole}

    def walk(ops, hi):
        with mm.mmap_read_lock():
            rc = pgwalk.walk_page_range_novma(mm, 0, hi, ops)
        assert rc == 0
    ops = pgwalk.MMWalkOps(pte_entry=op.pte_entry, **skip)
    res["C op (MincoreOp)"] = measure(lambda: walk(ops, end), pages, a.samples)
    assert op.vec.all()
    fn = low_level_counter(d)
    if fn is not None:
        counter = ctypes.c_int64(0)
        llops = pgwalk.MMWalkOps(pte_entry=pgwalk.LowLevelCallable(fn, user_data=counter), **skip)
        res["low-level (ctypes C function)"] = measure(lambda: walk(llops, end), pages, a.samples)
        assert counter.value == pages * (a.samples + 1)
    small = min(pages, PY_CAP_PAGES)
    bops = pgwalk.MMWalkOps(pte_entry=pgwalk.batch(lambda e, ad, n, w: np.count_nonzero(e) * 0), **skip)
    res["batch (numpy per PTE table)"] = measure(lambda: walk(bops, small << 12), small,
                                                 max(3, a.samples // 2))
    pops = pgwalk.MMWalkOps(pte_entry=lambda e, ad, n, w: 0, **skip)
    res["Python (per PTE)"] = measure(lambda: walk(pops, small << 12), small, max(3, a.samples // 2))
    res["numpy vectorised walker"] = measure(lambda: numpy_walk(img, 1), pages, a.samples)
    got = mm.mappings(0, 1 << 47)
    va, pa = numpy_walk(img, 1)
    assert (got["va"] == va).all() and (got["pa"] == pa).all(), "pgwalk and numpy disagree"
    if volatility_layer(path, 1 << 12) is not None:
        vend = min(end, a.vol_mib << 20)
        vol = volatility_mapping(path, 1 << 12, vend)
        want = int(got["pa"][0])
        assert [(o, s, m) for o, s, m, _, _ in vol] == [(0, vend, want)], "Volatility disagrees"
        res["Volatility 3 Intel32e mapping()"] = measure(
            lambda: volatility_mapping(path, 1 << 12, vend), vend >> 12, max(3, a.samples // 2))
    return pages


def fixture(a, d, res):
    """mappings() and Volatility on the comparison's random images, per leaf."""
    sys.path.insert(0, str(TESTS))
    try:
        from helpers.image_gen import make_vol_image, write_image
    finally:
        sys.path.remove(str(TESTS))
    rows = {}
    for seed in a.fixture_seeds:
        img, root, size = make_vol_image(seed)
        path = Path(d) / f"fixture{seed}.raw"
        write_image(path, img, size)
        mm = pgwalk.PhysImage.open(path).mm(root << 12)
        leaves = len(mm.mappings())
        rows[seed] = leaves
        res[f"fixture {seed}: mappings() per leaf"] = measure(lambda: mm.mappings(), leaves, a.samples)
        if volatility_layer(path, root << 12) is not None:
            res[f"fixture {seed}: Volatility 3 mapping() per leaf"] = measure(
                lambda: volatility_mapping(path, root << 12, 1 << 48), leaves, 3)
    return rows


def roots(a, d, res):
    """find_roots (one C pass over the frames) against reading the whole
    image once with numpy (np.count_nonzero), same image, warm page cache:
    a Linux-shaped image (tests/helpers/image_gen.py) padded with random
    data frames to ROOTS_MIB MiB; the worst case, ROOTS_MIB MiB of frames
    that all are candidates (every entry a link into the image, the guard
    hole empty, like full PTE tables); QEMU guests too, when present, and
    their LiME, AVML and kdump dumps (read in chunks, against the raw dump's
    numpy read)."""
    sys.path.insert(0, str(TESTS))
    try:
        from helpers.image_gen import make_linux_image
    finally:
        sys.path.remove(str(TESTS))
    imgs = []
    if a.roots_mib:
        w, _ = make_linux_image(4, nproc=16)
        path = Path(d) / "roots.raw"
        rng = np.random.default_rng(2)
        with open(path, "wb") as f:
            f.write(w.tobytes())
            left = (a.roots_mib << 20) - w.nbytes
            while left > 0:                     # random words, a quarter of the frames zero
                n = min(left, 64 << 20)
                chunk = rng.integers(0, 1 << 63, n // 8, dtype=np.uint64).reshape(-1, 512)
                chunk[::4] = 0
                f.write(chunk.tobytes())
                left -= n
        imgs.append((f"{a.roots_mib} MiB synthetic", path))
        path = Path(d) / "roots-worst.raw"
        nframes = (a.roots_mib << 20) // 4096
        with open(path, "wb") as f:
            for lo in range(0, nframes, 16384):
                n = min(16384, nframes - lo)
                chunk = (rng.integers(0, nframes, (n, 512), dtype=np.uint64) << np.uint64(12)) | np.uint64(0x63)
                chunk[:, 256:272] = 0
                f.write(chunk.tobytes())
        imgs.append((f"{a.roots_mib} MiB worst case", path))
    for lv in (4, 5):
        p = Path(a.qemu) / f"l{lv}" / "guest.raw"
        if p.exists():
            imgs.append((f"QEMU l{lv} guest.raw", p))
            for other in ("guest.lime", "guest.avml", "guest.kdump"):
                if (p.parent / other).exists():
                    imgs.append((f"QEMU l{lv} {other}", p.parent / other))
    rows = {}
    for name, path in imgs:
        img = pgwalk.PhysImage.open(path)
        if img.frames is not None:
            nbytes = img.frames.nbytes
            res[f"roots {name}: np.count_nonzero"] = measure(lambda: np.count_nonzero(img.frames), 1,
                                                             a.samples)
        else:                               # a dump read in chunks: against its raw twin's read
            nbytes = rows[name.rsplit(" ", 1)[0] + " guest.raw"][0]
            res[f"roots {name}: np.count_nonzero"] = res[f"roots {name.rsplit(' ', 1)[0]} guest.raw: "
                                                         f"np.count_nonzero"]
        found = img.find_roots()            # the warm-up, and the answer reported
        res[f"roots {name}: find_roots"] = measure(lambda: img.find_roots(), 1,
                                                   a.samples if img.frames is not None else 1,
                                                   warm=False)
        rows[name] = (nbytes, len(found))
    return rows


def qemu_guest(a, res):
    """mappings() and Volatility on the QEMU guest dump of
    tests/fixtures/make_qemu_image.sh (4-level, kernel and PTI user CR3)."""
    d = Path(a.qemu) / "l4"
    if not (d / "guest.raw").exists():
        return {}
    regs = dict(ln.split("=") for ln in (d / "cr3.txt").read_text().split())
    rows = {}
    for which in ("kernel_pgd", "user_pgd"):
        cr3 = int(regs[which], 16)
        for kind in ("guest.elf", "guest.raw"):
            mm = pgwalk.PhysImage.open(d / kind).mm(cr3)
            maps = mm.mappings()
            pages = int(maps["size"].sum()) >> 12
            rows[which] = (len(maps), pages)
            res[f"qemu {which} {kind}: mappings()"] = measure(lambda: mm.mappings(), len(maps), a.samples)
        if volatility_layer(d / "guest.raw", cr3) is not None:
            res[f"qemu {which}: Volatility 3 mapping()"] = measure(
                lambda: volatility_mapping(d / "guest.raw", cr3, 1 << 48), len(maps), 3)
        if which == "kernel_pgd":
            qemu_tiers(a, mm, maps, res)
    return rows


def qemu_tiers(a, mm, maps, res):
    """translate() and the callback tiers over the guest's kernel tables,
    per VA and per PTE entry the walk visits (both halves)."""
    vas = maps["va"] + (np.random.default_rng(2).integers(0, 1 << 12, len(maps), dtype=np.uint64)
                        % maps["size"])
    res["qemu translate() (one VA per leaf, per VA)"] = measure(lambda: mm.translate(vas), len(vas), a.samples)
    st = pgwalk.WalkStats()
    halves = mm._halves(None, None)

    def walk(ops, stats=None):
        with mm.mmap_read_lock():
            for lo, hi in halves:
                assert pgwalk.walk_page_range_novma(mm, lo, hi, ops, stats=stats) == 0
    walk(pgwalk.MMWalkOps(pte_entry=lambda e, ad, n, w: 0), st)
    ptes = st.calls.get("pte_entry", 0)
    res["qemu Python pte_entry (per PTE)"] = measure(
        lambda: walk(pgwalk.MMWalkOps(pte_entry=lambda e, ad, n, w: 0)), ptes, 3)
    res["qemu batch (per PTE)"] = measure(
        lambda: walk(pgwalk.MMWalkOps(pte_entry=pgwalk.batch(lambda e, ad, n, w: np.count_nonzero(e) * 0))),
        ptes, a.samples)
    with tempfile.TemporaryDirectory() as d:
        fn = low_level_counter(d)
        if fn is not None:
            counter = ctypes.c_int64(0)
            ll = pgwalk.MMWalkOps(pte_entry=pgwalk.LowLevelCallable(fn, user_data=counter))
            res["qemu low-level (per PTE)"] = measure(lambda: walk(ll), ptes, a.samples)
    res["qemu_ptes"] = (ptes, ptes, ptes)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=8)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--vol-mib", type=int, default=256, help="MiB of the image Volatility walks")
    ap.add_argument("--fixture-seeds", type=int, nargs="*", default=[0, 4])
    ap.add_argument("--no-fixture", dest="fixture_seeds", action="store_const", const=[])
    ap.add_argument("--qemu", default=os.environ.get("PGWALK_QEMU_DIR", "/tmp/pgwalk-qemu"),
                    help="directory of tests/fixtures/make_qemu_image.sh's dumps (skipped when absent)")
    ap.add_argument("--roots-mib", type=int, default=1024, help="MiB of the find_roots image (0: none)")
    ap.add_argument("--only-roots", action="store_true", help="the find_roots rows alone")
    ap.add_argument("--peers-gib", type=int, default=1, help="GiB of the peers' synthetic image (0: none)")
    ap.add_argument("--no-peers", dest="peers", action="store_false")
    ap.add_argument("--only-peers", action="store_true", help="the peers rows alone")
    a = ap.parse_args(argv)
    load0 = os.getloadavg()
    res = {}
    if a.only_peers:
        with tempfile.TemporaryDirectory() as d:
            print_peers(*peers(a, d))
        return res
    if a.only_roots:
        with tempfile.TemporaryDirectory() as d:
            print_roots(roots(a, d, res), res)
        return res
    with tempfile.TemporaryDirectory() as d:
        roots_rows = roots(a, d, res)
        pages = synthetic(a, d, res)
        fixture_leaves = fixture(a, d, res)
    qemu_rows = qemu_guest(a, res)
    load1 = os.getloadavg()
    vol = res.get("Volatility 3 Intel32e mapping()")
    print(f"{a.gib} GiB of 4 KiB mappings ({pages:,} pages), ns per page, median (min-max); "
          f"load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    for k, (med, lo, hi) in res.items():
        if k.startswith(("fixture", "qemu", "roots")):
            continue
        ratio = f"   {vol[0] / med:9.0f}x Volatility" if vol else ""
        print(f"  {k:<38} {med:10.2f}  ({lo:.2f}-{hi:.2f})  {1e3 / med:9.2f} Mpages/s{ratio}")
    if vol is None:
        print("  Volatility 3: not installed (pip install volatility3, or pgwalk[image])")
    else:
        print(f"  (Volatility walked the first {min(a.gib << 10, a.vol_mib)} MiB; Python and batch "
              f"tiers the first {min(pages, PY_CAP_PAGES) >> 8} MiB: per page, extrapolated)")
    base = res["numpy vectorised walker"][0]
    print(f"  mappings() is {base / res['mappings()'][0]:.1f}x the numpy walker per page")
    for seed, leaves in fixture_leaves.items():
        m = res[f"fixture {seed}: mappings() per leaf"]
        v = res.get(f"fixture {seed}: Volatility 3 mapping() per leaf")
        line = (f"  fixture seed {seed} ({leaves:,} leaves, 4K/2M/1G): mappings() {m[0]:.1f} ns/leaf "
                f"({m[0] * leaves / 1e6:.2f} ms)")
        if v:
            line += f", Volatility {v[0]:.0f} ns/leaf ({v[0] * leaves / 1e6:.1f} ms): {v[0] / m[0]:.0f}x"
        print(line)
    if "qemu_ptes" in res:
        n = res.pop("qemu_ptes")[0]
        print(f"  QEMU guest kernel tables ({n:,} PTE entries walked, both halves), ns per VA or PTE entry:")
        for k in [k for k in res if k.startswith("qemu ") and k.endswith(("per PTE)", "per VA)"))]:
            med, lo, hi = res[k]
            print(f"    {k[5:]:<40} {med:8.2f} ns  ({lo:.2f}-{hi:.2f})")
    for which, (leaves, pages) in qemu_rows.items():
        elf = res[f"qemu {which} guest.elf: mappings()"]
        raw = res[f"qemu {which} guest.raw: mappings()"]
        v = res.get(f"qemu {which}: Volatility 3 mapping()")
        line = (f"  QEMU guest {which} ({leaves:,} leaves, {pages:,} pages): mappings() "
                f"{elf[0] * leaves / 1e6:.2f} ms (ELF), {raw[0] * leaves / 1e6:.2f} ms (raw)")
        if v:
            line += f"; Volatility {v[0] * leaves / 1e6:.0f} ms: {v[0] / raw[0]:.0f}x"
        print(line)
    print_roots(roots_rows, res)
    if a.peers:
        with tempfile.TemporaryDirectory() as d:
            print_peers(*peers(a, d))
    return res


def peers(a, d):
    """The peers rows: a synthetic image (raw and ELF core) and the QEMU guest."""
    import image_peers as P
    res, notes = {}, {}
    for part, (med, lo) in P.fixed_cost(Path(d)).items():
        res[f"tiny pgwalk {part}"] = (med, lo, 1)
    if a.peers_gib:
        img, size = build_image(a.peers_gib)
        raw, elf = Path(d) / "peers.raw", Path(d) / "peers.elf"
        write_sparse(raw, img, size)
        P.write_elf_core(elf, img, size, P.vmcoreinfo(1 << 12, 4))
        vas = np.random.default_rng(3).integers(0, a.peers_gib << 30, 1 << 20, dtype=np.uint64)
        P.run(res, notes, "synthetic", raw, elf, 1 << 12, 4, vas, a.samples,
              read_va=0x10000, read_size=min(64 << 20, (a.peers_gib << 30) - 0x10000))
    q = Path(a.qemu) / "l4"
    if (q / "guest.raw").exists():
        regs = dict(ln.split("=") for ln in (q / "cr3.txt").read_text().split())
        cr3 = int(regs["kernel_pgd"], 16)
        mm = pgwalk.PhysImage.open(q / "guest.raw").mm(cr3)
        maps = mm.mappings()
        rng = np.random.default_rng(4)
        pick = rng.integers(0, len(maps), 1 << 20)
        vas = maps["va"][pick] + (rng.integers(0, 1 << 30, 1 << 20, dtype=np.uint64) % maps["size"][pick])
        swapper = vmci_symbol(q / "guest.elf", "SYMBOL(swapper_pg_dir)")
        P.run(res, notes, "qemu", q / "guest.raw", q / "guest.elf" if swapper else None, cr3, 4, vas,
              a.samples, drgn_pgtable=swapper)
    return res, notes


def vmci_symbol(elf, key):
    """A VMCOREINFO value (hex) of the guest's ELF dump, or None."""
    try:
        info = pgwalk.PhysImage.open(elf).vmcoreinfo or {}
    except Exception:
        return None
    v = info.get(key[len("SYMBOL("):-1]) if isinstance(info, dict) else None
    return int(v, 16) if isinstance(v, str) else v


def print_peers(res, notes):
    """Per image: each row's median per unit, then the targets."""
    print("Peers (per address, per call from Python, per leaf, per image); median (min):")
    for k, (med, lo, n) in res.items():
        unit = "s" if n == 1 else ("ns/B" if "read" in k else "ns/unit")
        scale = 1 if n == 1 else 1e9 / n
        if k.startswith("tiny "):
            unit, scale = "us", 1e6
        print(f"  {k:<48} {med * scale:12.2f} {unit} ({lo * scale:.2f})  [{n:,} units, {med * 1e3:.2f} ms]")
    for k, v in notes.items():
        print(f"  {k}: {v}")
    for tag in sorted({k.split()[0] for k in res}):
        r = {k[len(tag) + 1:]: v[0] / v[2] for k, v in res.items() if k.startswith(tag + " ")}
        calls = {k: v for k, v in r.items() if "per call" in k and not k.startswith("pgwalk")}
        if calls:
            best = min(calls, key=calls.get)
            print(f"  {tag}: batched translate {calls[best] / r['pgwalk translate() batched']:.0f}x {best} "
                  f"(target 100x); translate1 {r['pgwalk translate1() per call'] / calls[best]:.3f}x of it "
                  f"(target <= 0.5x)")
        first = {k: v for k, v in r.items()
                 if "fresh" in k and "kept" not in k and not k.startswith(("pgwalk", "floor"))}
        if first:
            best = min(first, key=first.get)
            mine = r["pgwalk first mappings() of a fresh dump"]
            floor = next(v for k, v in r.items() if k.startswith("floor: copy"))
            mapped = next(v for k, v in r.items() if k.startswith("floor: map"))
            print(f"  {tag}: mappings() on a fresh dump {first[best] / mine:.1f}x {best} (target 20x; "
                  f"20x leaves {first[best] / 20 * 1e9:.1f} ns/leaf against pgwalk's "
                  f"{mine * 1e9:.1f}; copying the tables walked costs {floor * 1e9:.1f} ns/leaf, "
                  f"{mapped * 1e9:.1f} from a fresh mapping of the file); "
                  f"with the open {first[best] / r['pgwalk open + mm() + first mappings()']:.1f}x")
            kept = {k: v for k, v in r.items() if "kept" in k and not k.startswith("pgwalk")}
            for k, v in kept.items():
                print(f"  {tag}: mappings() on a fresh dump, results kept "
                      f"{v / r['pgwalk first mappings() of a fresh dump, results kept']:.1f}x {k}")
            started = {k: v for k, v in r.items() if "start +" in k}
            for k, v in started.items():
                print(f"  {tag}: open + mm() + first mappings() {v / r['pgwalk open + mm() + first mappings()']:.1f}x {k}")
            warm = {k: v for k, v in r.items() if "warm" in k}
            if warm:
                best = min(warm, key=warm.get)
                print(f"  {tag}: mappings() cached {warm[best] / r['pgwalk mappings() cached']:.2f}x {best} "
                      f"(a peer's second call may be answered from its cache)")
        if tag == "tiny":
            print(f"  tiny image: fixed cost (open + mm() + first mappings()) "
                  f"{res['tiny pgwalk fixed cost'][0] * 1e6:.1f} us (target < 50 us)")
        rd = [k for k in r if k.startswith("drgn prog.read")]
        if rd:
            print(f"  {tag}: mm.read {r[rd[0]] / r['pgwalk ' + rd[0][len('drgn prog.'):].replace('read', 'mm.read', 1)]:.2f}x "
                  f"drgn prog.read (target 1.5x)")


def print_roots(rows, res):
    """The find_roots rows: time per image and the ratio to one numpy read."""
    for name, (nbytes, n) in rows.items():
        base = res[f"roots {name}: np.count_nonzero"]
        fr = res[f"roots {name}: find_roots"]
        print(f"  find_roots on {name} ({nbytes >> 20} MiB, {n} roots): {fr[0] / 1e6:.1f} ms "
              f"({fr[1] / 1e6:.1f}-{fr[2] / 1e6:.1f}), np.count_nonzero over it {base[0] / 1e6:.1f} ms "
              f"({base[1] / 1e6:.1f}-{base[2] / 1e6:.1f}): {fr[0] / base[0]:.2f}x, "
              f"{nbytes / fr[0]:.2f} GB/s")


if __name__ == "__main__":
    main()
