"""pgwalk on the physical memory of a real guest: a QEMU (TCG) guest running
a Debian kernel with PTI, dumped by tests/fixtures/make_qemu_image.sh.

The dump is 2 GiB and not committed; these tests run when it is present in
$PGWALK_QEMU_DIR (default /tmp/pgwalk-qemu), l4/ and l5/ for the two paging
modes, and skip with the command that makes it otherwise.  The guest's /init
(tests/fixtures/qemu_helper.c) maps 4K pages, THPs, the huge zero page,
hugetlb pages, PROT_NONE pages and a gap, prints what the kernel says of
them (/proc/self/pagemap) and spins in user mode while the host records CR3
and dumps memory.  Checked here, for the user (PTI) and kernel page tables:

* every page the kernel's pagemap calls present translates to its PFN;
  PROT_NONE pages are non-present entries whose inverted PFN is that PFN;
* THPs and hugetlb pages are 2M (1G) leaves, the huge zero page is one
  read-only 2M frame mapped twice;
* mappings() equals the independent reference walker of tests/test_image.py;
* the PTI user tables share the user half and map little of the kernel half;
* Volatility 3's Intel32e agrees after its documented heuristics (4-level);
* the ptdump text follows the kernel's marker rules."""

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


class Guest:
    def __init__(self, d, levels):
        self.dir, self.levels = d, levels
        cr3 = dict(ln.split("=") for ln in (d / "cr3.txt").read_text().split())
        self.cr3 = int(cr3["CR3"], 16)
        self.cr4 = int(cr3["CR4"], 16)
        self.user_pgd, self.kernel_pgd = int(cr3["user_pgd"], 16), int(cr3["kernel_pgd"], 16)
        self.regions, self.pagemap, self.madv, self.cpu, self.kbase = {}, {}, {}, {}, {}
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
            elif ln.startswith("KBASE "):
                self.kbase[f[1]] = int(f[2], 16)
            elif ln.startswith("CPU "):
                self.cpu = {k: int(v) for k, v in (x.split("=") for x in f[1:])}
        self.image = pgwalk.PhysImage.open(d / "guest.elf")

    def mm(self, which):
        return self.image.mm(self.kernel_pgd if which == "kernel" else self.user_pgd, self.levels)


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


def test_gap_and_guard_regions(g):
    maps, other = g.mm("kernel").mappings(nonpresent=True)
    start, length = g.regions["gap"]
    assert len(leaves_in(maps, start, length)) == 0
    assert not ((other["va"] >= np.uint64(start)) & (other["va"] < np.uint64(start + length))).any()
    start, length = g.regions["guard"]
    rc, err = g.madv["guard_install"]
    guard_other = [int(o["entry"]) for o in other if start <= int(o["va"]) < start + length]
    if rc == 0:                  # Linux 6.13 on: two guard markers after the one written page
        assert len(leaves_in(maps, start, length)) == 1
        assert len(guard_other) == 2 and all(pgwalk.is_guard_marker(pgwalk.pte_to_swp_entry(e))
                                             for e in guard_other)
    else:                        # the kernel has no MADV_GUARD_INSTALL
        assert err == 22 and guard_other == []


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
    assert as_set(ku) - as_set(kk) == set() or all(int(v) >> 39 == 0x1FFFFFC for v in ku["va"])


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
