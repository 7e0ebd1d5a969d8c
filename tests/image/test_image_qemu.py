"""pgwalk on the physical memory of a real guest: a QEMU (TCG) guest running
a Debian kernel (6.18 from trixie-backports by default) with PTI, dumped by
tests/fixtures/make_qemu_image.sh.

The dump is 3 GiB and not committed; these tests run when it is present in
$PGWALK_QEMU_DIR (default /tmp/pgwalk-qemu), l4/ and l5/ for the two paging
modes, and skip with the command that makes it otherwise.  The guest's /init
(tests/fixtures/qemu_helper.c) maps 4K pages, THPs, the huge zero page,
hugetlb pages, PROT_NONE pages, guard regions (MADV_GUARD_INSTALL over
written and never-touched pages, and over two pages of a THP) and a gap,
prints what the kernel says of them (/proc/self/pagemap) and spins in user
mode while the host records CR3 and dumps memory.  Checked here, for the
user (PTI) and kernel page tables:

* every page the kernel's pagemap calls present translates to its PFN;
  PROT_NONE pages are non-present entries whose inverted PFN is that PFN;
* THPs and hugetlb pages are 2M (1G) leaves, the huge zero page is one
  read-only 2M frame mapped twice;
* guard pages are non-present PTE markers in the x86-64 swap-entry layout
  (type SWP_PTE_MARKER, offset PTE_MARKER_GUARD: the entry pgwalk's own
  make_pte_marker(PTE_MARKER_GUARD) stands for), translate() gives -1 for
  them, and the guest's pagemap says the same (bit 58, Linux 6.15 on);
* mappings() equals the independent reference walker of tests/image/test_image.py;
* the PTI user tables share the user half and map little of the kernel half;
* Volatility 3's Intel32e agrees after its documented heuristics (4-level);
* the ptdump text follows the kernel's marker rules;
* the same memory as raw (pmemsave), LiME, kdump-compressed (flattened, and
  standard after makedumpfile -R) gives the ELF dump's mappings for every
  recorded root, and libkdumpfile reads the standard kdump's frames as pgwalk
  does; find_roots() finds the recorded roots (raw and ELF), the same in
  the LiME and kdump dumps."""

import functools
import os
import re
from pathlib import Path

import numpy as np
import pytest

import pgwalk

QEMU_DIR = Path(os.environ.get("PGWALK_QEMU_DIR", "/tmp/pgwalk-qemu"))
PFN_MASK = ((1 << 52) - 1) & ~0xFFF
P, RW, PSE, PROTNONE = 1, 2, 0x80, 0x100
HALF4 = 1 << 47
U64 = (1 << 64) - 1
# /proc/pid/pagemap (Documentation/admin-guide/mm/pagemap.rst)
PM_PRESENT, PM_SWAP, PM_GUARD_REGION = 1 << 63, 1 << 62, 1 << 58
PM_FRAME = (1 << 55) - 1          # swap entries: type in bits 0-4, offset above
EINVAL = 22
START_KERNEL_MAP = 0xFFFFFFFF80000000          # __START_KERNEL_map
# the fixture's dumps of the same memory and the format each is detected as
DUMPS = {"guest.raw": "raw", "guest.elf": "elf", "guest.lime": "lime", "guest.avml": "avml",
         "guest.kdump": "kdump", "guest.kdump-flat": "kdump-flat"}

# The x86-64 swap-entry layout of a non-present PTE (arch/x86/include/asm/pgtable_64.h,
# the L1TF layout of Linux 4.18 on): type in the top 5 bits (59-63), the offset
# inverted in bits 9-58, bits 0-8 for P (0), the swap flags and PROTNONE (0).
X86_SWP_TYPE_SHIFT, X86_SWP_OFFSET_SHIFT, X86_SWP_OFFSET_BITS = 59, 9, 50


def x86_swp_type(pte):
    return pte >> X86_SWP_TYPE_SHIFT


def x86_swp_offset(pte):
    return ((~pte & U64) >> X86_SWP_OFFSET_SHIFT) & ((1 << X86_SWP_OFFSET_BITS) - 1)


def x86_swp_pte(type, offset):
    return (type << X86_SWP_TYPE_SHIFT) \
        | ((~offset & ((1 << X86_SWP_OFFSET_BITS) - 1)) << X86_SWP_OFFSET_SHIFT)


def release(uname):
    """(major, minor) of a kernel release string such as 6.18.15+deb13-cloud-amd64."""
    m = re.match(r"(\d+)\.(\d+)", uname)
    return (int(m.group(1)), int(m.group(2))) if m else None


class Guest:
    def __init__(self, d, levels):
        self.dir, self.levels = d, levels
        cr3 = dict(ln.split("=") for ln in (d / "cr3.txt").read_text().split())
        self.cr3 = int(cr3["CR3"], 16)
        self.cr4 = int(cr3["CR4"], 16)
        self.user_pgd, self.kernel_pgd = int(cr3["user_pgd"], 16), int(cr3["kernel_pgd"], 16)
        self.regions, self.pagemap, self.madv, self.cpu, self.kbase, self.ksym = {}, {}, {}, {}, {}, {}
        self.guards, self.unguards, self.uname = [], [], None
        region = None
        for ln in (d / "console.log").read_text(errors="replace").splitlines():
            f = ln.split()
            if ln.startswith("REGION "):
                region = f[1]
                self.regions[region] = (int(f[2], 16), int(f[3], 16))
            elif ln.startswith("PM "):
                self.pagemap.setdefault(region, []).append((int(f[1], 16), int(f[2], 16)))
            elif ln.startswith("MADV "):
                self.madv[f[1]] = (int(f[2]), int(f[3]))
            elif ln.startswith("GUARD "):        # region, first page, pages, populated, rc, errno
                self.guards.append((f[1], int(f[2], 16), int(f[3]), int(f[4]), int(f[5]), int(f[6])))
            elif ln.startswith("UNGUARD "):      # region, first page, pages, rc, errno
                self.unguards.append((f[1], int(f[2], 16), int(f[3]), int(f[4]), int(f[5])))
            elif ln.startswith("UNAME "):
                self.uname = f[1]
            elif ln.startswith("KBASE "):
                self.kbase[f[1]] = int(f[2], 16)
            elif ln.startswith("KSYM "):
                self.ksym[f[1]] = int(f[2], 16)
            elif ln.startswith("CPU "):
                self.cpu = {k: int(v) for k, v in (x.split("=") for x in f[1:])}
        self.image = pgwalk.PhysImage.open(d / "guest.elf")

    def swapper_pgd(self):
        """The physical address of the kernel's swapper_pg_dir (x86-64:
        init_top_pgt) from the helper's KSYM/KBASE lines, or None."""
        va = self.ksym.get("swapper_pg_dir", self.ksym.get("init_top_pgt"))
        if va is None or "phys_base" not in self.kbase:
            return None
        return va - START_KERNEL_MAP + self.kbase["phys_base"]

    def roots(self):
        """The recorded roots: the process's PTI pair and the kernel's, when known."""
        out = {"kernel_pgd": self.kernel_pgd, "user_pgd": self.user_pgd}
        if self.swapper_pgd() is not None:
            out["swapper_pg_dir"] = self.swapper_pgd()
        return out

    def dump(self, name):
        """One of the fixture's dump files opened, or a skip naming it."""
        path = self.dir / name
        if not path.exists():
            pytest.skip(f"no {name} in {self.dir}: rerun tests/fixtures/make_qemu_image.sh (it writes "
                        f"guest.kdump only when makedumpfile is installed, guest.avml only with cramjam)")
        return pgwalk.PhysImage.open(path)

    def mm(self, which):
        return self.image.mm(self.kernel_pgd if which == "kernel" else self.user_pgd, self.levels)

    @functools.cached_property
    def elf_roots(self):
        """find_roots() of the ELF dump, scanned once (several tests compare
        with it, and a scan reads the whole 3 GiB)."""
        return self.image.find_roots()


def guest(levels):
    d = QEMU_DIR / f"l{levels}"
    if not (d / "guest.elf").exists():
        pytest.skip(f"no QEMU guest dump in {d}: run tests/fixtures/make_qemu_image.sh {QEMU_DIR} {levels} "
                    f"(1-3 minutes under TCG; needs qemu-system-x86 and gcc), or set PGWALK_QEMU_DIR")
    return Guest(d, levels)


@pytest.fixture(scope="module", params=[4, 5])
def g(request):
    return guest(request.param)


def leaves_in(maps, start, length):
    sel = (maps["va"] >= np.uint64(start)) & (maps["va"] < np.uint64(start + length))
    return maps[sel]


def test_the_guest_is_what_the_fixture_says(g):
    assert bool(g.cr4 & (1 << 12)) == (g.levels == 5)          # CR4.LA57
    assert g.cpu.get("pti") == 1                               # PTI on (pti=on)
    assert g.cr3 & 0x1000                                      # stopped in user mode: the PTI user PGD
    assert g.kernel_pgd == g.user_pgd - 0x1000
    assert {"small", "thp", "zero", "hugetlb2m", "protnone", "guard", "gap"} <= set(g.regions)
    if g.uname is not None:                                    # the kernel the script booted
        assert g.uname == (g.dir / "meta.txt").read_text().split("kernel_release=")[1].split()[0]


@pytest.mark.parametrize("which", ["user", "kernel"])
def test_pagemap_pages_translate_to_their_pfn(g, which):
    mm = g.mm(which)
    maps, other = mm.mappings(nonpresent=True)
    checked = 0
    for region, pages in g.pagemap.items():
        vas = np.array([va for va, _ in pages], dtype=np.uint64)
        pas = mm.translate(vas)
        for (va, e), pa in zip(pages, pas):
            present, pfn = e >> 63 & 1, e & ((1 << 55) - 1)
            if region == "protnone":
                # present for the kernel (pte_present), not for the hardware
                assert present and pa == -1
                ent = [int(o["entry"]) for o in other if int(o["va"]) == va]
                assert len(ent) == 1 and ent[0] & PROTNONE and not ent[0] & P
                assert ((~ent[0]) & PFN_MASK) >> 12 == pfn      # the L1TF inversion
            elif present:
                assert pa == pfn << 12, (region, hex(va))
                checked += 1
            else:
                assert pa == -1, (region, hex(va))
    assert checked > 100


def test_huge_pages_are_leaves_of_their_size(g):
    maps = g.mm("kernel").mappings()
    thp = leaves_in(maps, *g.regions["thp"])
    assert list(thp["size"]) == [2 << 20, 2 << 20] and all(int(e) & RW for e in thp["entry"])
    zero = leaves_in(maps, *g.regions["zero"])
    assert list(zero["size"]) == [2 << 20, 2 << 20]
    assert zero["pa"][0] == zero["pa"][1] and not any(int(e) & RW for e in zero["entry"])
    h2 = leaves_in(maps, *g.regions["hugetlb2m"])
    assert list(h2["size"]) == [2 << 20, 2 << 20]
    if "hugetlb1g" in g.regions:
        h1 = leaves_in(maps, *g.regions["hugetlb1g"])
        assert list(h1["size"]) == [1 << 30] and int(h1["level"][0]) == 2
    else:
        assert not g.cpu.get("pdpe1gb"), "the guest had 1G pages but the helper mapped none"
    small = leaves_in(maps, *g.regions["small"])
    assert list(small["size"]) == [4096] * 16


def test_gap(g):
    maps, other = g.mm("kernel").mappings(nonpresent=True)
    start, length = g.regions["gap"]
    assert len(leaves_in(maps, start, length)) == 0
    assert not ((other["va"] >= np.uint64(start)) & (other["va"] < np.uint64(start + length))).any()


def test_the_x86_swap_layout_of_a_guard_marker():
    """The x86-64 layout above against pgwalk's model (docs/encodings.md): the
    model stores type and offset in a format of its own (type in bits 52-56),
    but both stand for the same arch-independent swp_entry_t."""
    model = pgwalk.make_pte_marker(pgwalk.PTE_MARKER_GUARD)
    swp = pgwalk.pte_to_swp_entry(model)
    assert (pgwalk.swp_type(swp), pgwalk.swp_offset(swp)) == (pgwalk.SWP_PTE_MARKER, pgwalk.PTE_MARKER_GUARD)
    x86 = x86_swp_pte(pgwalk.SWP_PTE_MARKER, pgwalk.PTE_MARKER_GUARD)
    assert x86 == 0xFFFFFFFFFFFFF600          # type 31 in 59-63; ~4 in 9-58: all set but bit 11
    assert (x86_swp_type(x86), x86_swp_offset(x86)) == (31, 4)
    assert not x86 & (P | PSE | PROTNONE)     # neither present nor PROT_NONE for the kernel
    for t, o in [(0, 0), (5, 0x123456789), (24, 1), (31, 1), (31, (1 << 50) - 1)]:
        e = x86_swp_pte(t, o)
        assert (x86_swp_type(e), x86_swp_offset(e)) == (t, o) and not e & 0x1FF


def guard_pages(g):
    """The page VAs of the helper's guard regions after its removes; None when
    the kernel has no MADV_GUARD_INSTALL."""
    if not g.guards:
        pytest.skip(f"the dump in {g.dir} was made by an older qemu_helper.c (no GUARD lines): "
                    "rerun tests/fixtures/make_qemu_image.sh")
    if any(rc for *_, rc, _ in g.guards):
        # before Linux 6.13 every install fails with EINVAL
        assert all((rc, err) == (-1, EINVAL) for *_, rc, err in g.guards)
        assert g.uname is None or release(g.uname) < (6, 13)
        return None
    pages = set()
    for _, va, n, _, _, _ in g.guards:
        pages |= {va + i * 4096 for i in range(n)}
    for _, va, n, rc, _ in g.unguards:
        assert rc == 0
        pages -= {va + i * 4096 for i in range(n)}
    return pages


@pytest.mark.parametrize("which", ["user", "kernel"])
def test_guard_regions(g, which):
    """Guard pages are PTE markers (x86-64 layout) in the non-present list, no
    leaf, translate() -1; the guest's pagemap says guard region (bit 58, from
    Linux 6.15) and swap (bit 62) with the same type and offset; written
    pages that were guarded were zapped first; a removed guard leaves none."""
    pages = guard_pages(g)
    mm = g.mm(which)
    maps, other = mm.mappings(nonpresent=True)
    regions = [g.regions["guard"], g.regions["guardthp"]]
    in_regions = np.zeros(len(other), dtype=bool)
    for start, length in regions:
        in_regions |= (other["va"] >= np.uint64(start)) & (other["va"] < np.uint64(start + length))
    found = {int(o["va"]): (int(o["level"]), int(o["entry"])) for o in other[in_regions]}
    if pages is None:                          # no guard regions in this kernel
        assert found == {}
        return
    assert len(pages) == 11 and [w for *_, w, _, _ in g.guards] == [1, 0, 1, 0, 1]
    assert set(found) == set(pages)
    marker = x86_swp_pte(pgwalk.SWP_PTE_MARKER, pgwalk.PTE_MARKER_GUARD)
    model = pgwalk.pte_to_swp_entry(pgwalk.make_pte_marker(pgwalk.PTE_MARKER_GUARD))
    for va, (level, entry) in found.items():
        assert level == pgwalk.PTE and entry == marker, (hex(va), hex(entry))
        swp = pgwalk.swp_entry(x86_swp_type(entry), x86_swp_offset(entry))
        assert swp == model and pgwalk.is_guard_marker(pgwalk.swp_entry_to_pte(swp))
    vas = np.array(sorted(pages), dtype=np.uint64)
    assert (mm.translate(vas) == -1).all()
    for start, length in regions:
        for m in leaves_in(maps, start, length):
            assert not any(int(m["va"]) <= va < int(m["va"]) + int(m["size"]) for va in pages)

    pm = {va: e for r in ("guard", "guardthp") for va, e in g.pagemap[r]}
    assert set(pages) <= set(pm)
    new_pagemap = release(g.uname) >= (6, 15)
    for va, e in pm.items():
        if va in pages:
            assert e & PM_SWAP and not e & PM_PRESENT, hex(e)
            assert bool(e & PM_GUARD_REGION) == new_pagemap, hex(e)
            # pagemap's swap fields (root sees them) = the entry's type and offset
            assert (e & 31, (e & PM_FRAME) >> 5) == (x86_swp_type(marker), x86_swp_offset(marker))
        else:
            assert not e & (PM_GUARD_REGION | PM_SWAP), hex(e)

    # the "guard" region: written pages 0-5 and 20-23, installs over 4-9, 12-13,
    # 21 and 31, page 9 removed again; page 11 written after the installs
    start, _ = g.regions["guard"]
    page = {i: pm[start + i * 4096] for i in range(32)}
    present = {i for i, e in page.items() if e & PM_PRESENT}
    assert present == {0, 1, 2, 3, 11, 20, 22, 23}
    guarded = {(va - start) // 4096 for va in pages if start <= va < start + 32 * 4096}
    assert guarded == {4, 5, 6, 7, 8, 12, 13, 21, 31}
    assert start + 9 * 4096 not in found and not page[9] & PM_PRESENT   # the removed guard: none

    # the "guardthp" region: a written THP, pages 1-2 guarded: the PMD leaf was
    # split into a PTE table whose other 510 entries still map the THP's frames
    start, length = g.regions["guardthp"]
    thp = leaves_in(maps, start, length)
    assert len(thp) == 510 and set(thp["size"]) == {4096}
    assert set(int(v) for v in thp["va"]) == {start + i * 4096 for i in range(512)} - set(pages)
    base = int(thp["pa"][0])
    assert base % (2 << 20) == 0 and all(int(m["pa"]) - base == int(m["va"]) - start for m in thp)


class FramesOfImage:
    """The image's frames as one array-like for the reference walker (what
    no PT_LOAD covers reads as zero)."""

    def __init__(self, image):
        self.frames, self.segs = image.frames, image.segments
        self.size = max(p + n for p, n, _ in self.segs) * 512

    def __getitem__(self, i):
        pfn = i >> 9
        for first, n, filef in self.segs:
            if first <= pfn < first + n:
                return self.frames[(filef + pfn - first) * 512 + (i & 511)]
        return 0


@pytest.mark.parametrize("which", ["user", "kernel"])
def test_mappings_equal_the_reference_walker(g, which):
    from test_image import as_tuples, reference_mappings
    mm = g.mm(which)
    maps, other = mm.mappings(nonpresent=True)
    root = (g.kernel_pgd if which == "kernel" else g.user_pgd) >> 12
    want_maps, want_other, want_bad = reference_mappings(FramesOfImage(g.image), root, g.levels)
    assert as_tuples(maps) == want_maps
    assert as_tuples(other) == want_other
    assert mm.bad_entries[0] == len(want_bad)


def test_pti_user_tables(g):
    user, kernel = g.mm("user").mappings(), g.mm("kernel").mappings()
    half = np.uint64(1 << (47 if g.levels == 4 else 56))
    assert as_set(user[user["va"] < half]) == as_set(kernel[kernel["va"] < half])
    ku, kk = user[user["va"] >= half], kernel[kernel["va"] >= half]
    assert 0 < len(ku) < len(kk) // 10            # entry text, CPU entry area: little of the kernel
    # each page the user tables map in the kernel half, the kernel tables map to
    # the same frame, though not always with a leaf of the same size: PTI maps
    # the first page of each CPU's TSS at its per-CPU address (in the direct
    # map) with a 4K PTE; the 6.12 guest's kernel tables had that part of the
    # direct map in 4K pages too, the 6.18 guest's cover it with a 2M page
    kmm = g.mm("kernel")
    for m in ku:
        va, pa, size = int(m["va"]), int(m["pa"]), int(m["size"])
        ends = kmm.translate(np.array([va, va + size - 1], dtype=np.uint64))
        assert list(ends) == [pa, pa + size - 1], hex(va)


def as_set(a):
    return {(int(m["va"]), int(m["pa"]), int(m["size"])) for m in a}


def test_volatility_agrees_after_its_heuristics(g):
    if g.levels != 4:
        pytest.skip("Volatility 3 has no 5-level (LA57) layer")
    pytest.importorskip("volatility3", reason="Volatility 3 is not installed (pip install volatility3)")
    from test_image_volatility import clip, merge, pgwalk_as_volatility, volatility_layer, volatility_mappings
    raw = g.dir / "guest.raw"
    size = raw.stat().st_size
    for pgd in (g.user_pgd, g.kernel_pgd):
        mm = pgwalk.PhysImage.open(raw).mm(pgd)
        runs, equal, bad = pgwalk_as_volatility(mm, size)
        got = volatility_mappings(volatility_layer(raw, pgd))
        assert merge(clip(got, bad)) == merge(clip(runs, equal))
        assert len(got) > 10


def test_ptdump_follows_the_kernels_rules(g):
    """With the bases KASLR chose (read by the guest from /proc/kcore), the
    text follows the kernel's marker rules and each moved marker's header
    comes where the kernel's own mappings of that region begin."""
    from test_ptdump_markers import check_kernel_rules, lines_under
    mm = g.mm("kernel")
    maps = mm.mappings()
    half = 1 << (47 if g.levels == 4 else 56)
    bases = {k: g.kbase[k] for k in ("page_offset_base", "vmalloc_base", "vmemmap_base")}
    # the direct map starts at page_offset_base: physical 0 is mapped there
    assert min(int(m["va"]) for m in maps if int(m["pa"]) == 0 and half <= int(m["va"])) \
        == bases["page_offset_base"]
    kw = dict(page_offset=bases["page_offset_base"], vmalloc_start=bases["vmalloc_base"],
              vmemmap_start=bases["vmemmap_base"])
    text = mm.ptdump(**kw)
    markers = pgwalk.ptdump.x86_64_markers(g.levels, **kw)
    where, items = check_kernel_rules(text, markers)
    assert {"Low Kernel Mapping", "vmalloc() Area", "Vmemmap", "High Kernel Mapping"} <= set(where)
    # struct pages of RAM from PFN 0 on: the vmemmap region's first leaf is at its base,
    # and the first line under the "Vmemmap" header starts there (a PGD-aligned base)
    vm = bases["vmemmap_base"]
    assert min(int(m["va"]) for m in maps if int(m["va"]) >= vm) == vm
    assert lines_under(items, "Vmemmap")[0][1] == vm
    assert re.search(r"^0x[0-9a-f]{16}-0x[0-9a-f]{16} +\d+[KMG] +ro +PSE +GLB x  pmd$", text, re.M), \
        "no read-only executable 2M kernel text line"


def _check_recorded_roots(g, roots):
    """The helper's PGD pair is a process root in the right paging mode and
    exactly one kernel root is found; returns the kernel roots."""
    by = {r.pgd: r for r in roots}
    assert g.kernel_pgd in by, [r.summary() for r in roots][:20]
    mine = by[g.kernel_pgd]
    assert (mine.kind, mine.levels, mine.user_pgd) == ("process", g.levels, g.user_pgd)
    kernels = [r for r in roots if r.kind == "kernel"]
    assert len(kernels) == 1 and kernels[0].levels == g.levels
    return kernels


def test_find_roots_finds_the_recorded_cr3_and_the_kernel_root(g):
    """Without the CR3: the helper's PGD pair (the page below the recorded
    user CR3, and that CR3) is a process root in the right paging mode, and
    exactly one kernel root is found, whose tables map the same kernel half."""
    kernels = _check_recorded_roots(g, g.elf_roots)
    kvas = np.array([0xFFFFFFFF81000000], dtype=np.uint64)
    assert (g.image.mm(kernels[0]).translate(kvas) == g.mm("kernel").translate(kvas)).all()


@pytest.mark.parametrize("name", [n for n in DUMPS if n != "guest.elf"])
def test_every_format_maps_as_the_elf_dump(g, name):
    """Each layout of the same stopped guest: its format detected from the
    content, and for every recorded root the same leaves, non-present
    entries and bad-entry count as the ELF dump."""
    img = g.dump(name)
    assert img.format == DUMPS[name]
    for label, root in g.roots().items():
        want, got = g.image.mm(root, g.levels), img.mm(root, g.levels)
        wm, wo = want.mappings(nonpresent=True)
        gm, go = got.mappings(nonpresent=True)
        assert len(wm) > 100, label
        assert as_tuples(gm) == as_tuples(wm), (name, label)
        assert as_tuples(go) == as_tuples(wo), (name, label)
        assert got.bad_entries[0] == want.bad_entries[0], (name, label)
    # data through the tables too: the helper's 4K pages and THP, the kernel's text
    user, kernel = img.mm(g.user_pgd, g.levels), img.mm(g.kernel_pgd, g.levels)
    reads = [(user, g.regions["small"][0], 16 * 4096), (user, g.regions["thp"][0], 2 << 20)]
    if "_text" in g.ksym:
        reads.append((kernel, g.ksym["_text"], 1 << 20))
    for mm, va, n in reads:
        want_mm = g.mm("user") if mm is user else g.mm("kernel")
        assert mm.read(va, n) == want_mm.read(va, n), (name, hex(va))


def as_tuples(a):
    from test_image import as_tuples as tuples
    return tuples(a)


def test_the_recorded_swapper_pg_dir_is_the_kernels_root(g):
    """The kernel's own root (from the KSYM/KBASE lines) maps the kernel half
    as the process's kernel PGD does, its user half is empty, and the
    kernel's own tables map swapper_pg_dir's address to it."""
    root = g.swapper_pgd()
    if root is None:
        pytest.skip(f"the dump in {g.dir} was made by an older qemu_helper.c (no KSYM lines): "
                    "rerun tests/fixtures/make_qemu_image.sh")
    half = np.uint64(1 << (47 if g.levels == 4 else 56))
    kernel = g.image.mm(root, g.levels).mappings()
    assert not (kernel["va"] < half).any()
    mine = g.mm("kernel").mappings()
    assert as_set(kernel) == as_set(mine[mine["va"] >= half])
    va = g.ksym.get("swapper_pg_dir", g.ksym.get("init_top_pgt"))
    assert list(g.mm("kernel").translate(np.array([va], dtype=np.uint64))) == [root]
    for name in DUMPS:                        # VMCOREINFO, when QEMU recorded one, says the same
        if (g.dir / name).exists():
            kr = pgwalk.PhysImage.open(g.dir / name).kernel_root()
            assert kr is None or kr == (root, g.levels), (name, kr)


@pytest.mark.parametrize("name", ["guest.raw", "guest.elf"])
def test_find_roots_on_raw_and_elf(g, name):
    """find_roots() of the raw and ELF dumps: the helper's PTI pair as a
    process root, and swapper_pg_dir as the one kernel root."""
    roots = g.elf_roots if name == "guest.elf" else g.dump(name).find_roots()
    kernels = _check_recorded_roots(g, roots)
    if g.swapper_pgd() is not None:
        assert kernels[0].pgd == g.swapper_pgd()


@pytest.mark.parametrize("name", ["guest.lime", "guest.avml", "guest.kdump", "guest.kdump-flat"])
def test_find_roots_on_frame_at_a_time_formats(g, name):
    """find_roots() of the LiME, AVML, kdump and flattened kdump dumps (read in
    chunks, pages decompressed): the ELF dump's roots, kinds, levels and
    PTI pairs, so the helper's pair and swapper_pg_dir among them."""
    img = g.dump(name)
    roots = img.find_roots()
    want = g.elf_roots
    assert [(r.pgd, r.levels, r.kind, r.user_pgd) for r in roots] == \
        [(r.pgd, r.levels, r.kind, r.user_pgd) for r in want]
    by = {r.pgd: r for r in roots}
    assert (by[g.kernel_pgd].kind, by[g.kernel_pgd].user_pgd) == ("process", g.user_pgd)
    if g.swapper_pgd() is not None:
        assert [r.pgd for r in roots if r.kind == "kernel"] == [g.swapper_pgd()]


def test_libkdumpfile_reads_the_standard_kdump_as_pgwalk(g):
    """libkdumpfile, an independent reader of the standard kdump-compressed
    layout, gives the same bytes as pgwalk (kdump and flattened) and the raw
    image for the recorded roots, the tables under them and some data frames."""
    kdumpfile = pytest.importorskip("kdumpfile", reason="libkdumpfile's Python module is not installed "
                                    "(apt-get install python3-libkdumpfile)")
    img = g.dump("guest.kdump")
    flat, raw = g.dump("guest.kdump-flat"), g.dump("guest.raw")
    k = kdumpfile.kdumpfile(str(g.dir / "guest.kdump"))
    pas = set(g.roots().values())
    for which in ("kernel", "user"):
        maps = g.mm(which).mappings()
        small = maps[maps["size"] == 4096]
        pas |= {int(p) for p in small["pa"][::max(1, len(small) // 40)]}
    rng = np.random.default_rng(0)
    pas |= {int(p) << 12 for p in rng.integers(0x100, raw.frames.size // 512, 40)}
    held = 0
    for pa in sorted(pas):
        try:
            theirs = bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, pa, 4096))
        except kdumpfile.exceptions.NoDataException:      # not in the dump (MMIO the kernel maps): absent for pgwalk too
            assert img.frame(pa >> 12) is None and flat.frame(pa >> 12) is None, hex(pa)
            continue
        assert theirs == img.read_phys(pa, 4096) == flat.read_phys(pa, 4096) == raw.read_phys(pa, 4096), hex(pa)
        held += 1
    assert held > 80
