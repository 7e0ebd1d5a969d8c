"""pgwalk's image walk against Volatility 3's Intel32e layer.

Volatility 3 (``pip install volatility3``, in the ``image`` and ``test``
extras) translates with its own x86-64 walker: ``Intel32e`` in
volatility3/framework/layers/intel.py.  Over the same raw image and CR3,
its ``mapping(0, 2**48, ignore_errors=True)`` is compared with
``mm.mappings()`` once pgwalk's answer is put through Volatility's rules,
each of which docs/images.md describes with the function it comes from:

* runs contiguous in both virtual and physical addresses are merged
  (``Intel.mapping``);
* a table whose 512 entries are all equal is treated as absent
  (``Intel._get_valid_table``);
* a leaf whose physical range is not wholly inside the image is dropped
  (``Intel._mapping`` asks the physical layer ``is_valid``);
* a large leaf's address is its entry's bits 12-51 less the PAT bit
  (``Intel._translate_entry``/``_translate``): reserved bits 13-20 (2M) or
  13-29 (1G) end up in the address, where pgwalk masks them off;
* addresses are not canonical: the kernel half starts at 2**47;
* a top-level entry that the kernel's ``p4d_bad`` rejects (PS, PWT, PCD,
  G or the ignored bits 9-11 set) is followed by Volatility (it checks only
  P), while pgwalk reports it in ``mm.bad_entries`` and does not descend.
  Everything Volatility maps beyond pgwalk must lie under such an entry.

Volatility has no 5-level (LA57) layer, so only 4-level images are compared.
The images come from a generator of their own (below): tables in the first
frames of a sparse file of a few GiB, so that most leaves, 1G ones too, point
inside the image, with contiguous runs, tables of 512 equal entries, bad
top-level entries, reserved bits in large leaves, loops back to the root,
PROT_NONE and swap entries."""

import numpy as np
import pytest

import pgwalk

vol = pytest.importorskip(
    "volatility3", reason="Volatility 3 is not installed (pip install volatility3, or .[image])")
from volatility3.framework import contexts  # noqa: E402
from volatility3.framework.layers import intel, physical  # noqa: E402

from helpers.image_gen import (  # noqa: E402
    GIB, PAT_LARGE, PFN_MASK, TABLE, A, G, P, PSE, RW, make_vol_image, write_image,
)

VA48 = (1 << 48) - 1


def volatility_layer(path, cr3, cls=intel.Intel32e):
    """A minimal Volatility context: a FileLayer over ``path`` and a
    translation layer of class ``cls`` with page_map_offset = cr3."""
    ctx = contexts.Context()
    ctx.config["pgwalk.phys.location"] = path.resolve().as_uri()
    ctx.layers.add_layer(physical.FileLayer(ctx, "pgwalk.phys", "phys"))
    ctx.config["pgwalk.virt.memory_layer"] = "phys"
    ctx.config["pgwalk.virt.page_map_offset"] = cr3
    layer = cls(ctx, "pgwalk.virt", "virt")
    ctx.layers.add_layer(layer)
    return layer


def volatility_mappings(layer):
    """(va, size, pa) runs of ``layer.mapping`` over the whole 48-bit space."""
    out = []
    for va, size, pa, psize, name in layer.mapping(0, 1 << 48, ignore_errors=True):
        assert size == psize and name == "phys"
        out.append((va, size, pa))
    return out


def equal_table_ranges(mm):
    """VA ranges [lo, hi) (non-canonical, 48-bit) under a table whose 512
    entries are all equal, found with pgwalk's own walker (Python tier)."""
    frames = mm.image.frames
    nframes = frames.size // 512
    ranges = []

    def visit(level):
        def entry(e, addr, nxt, walk):
            v = int(e)
            if v & P and not (level in (2, 3) and v & PSE):
                pfn = (v & PFN_MASK) >> 12
                if pfn < nframes:
                    t = frames[pfn * 512:(pfn + 1) * 512]
                    if (t == t[0]).all():
                        ranges.append((addr & VA48, ((nxt - 1) & VA48) + 1))
                        walk.action = pgwalk.ACTION_CONTINUE
            else:
                walk.action = pgwalk.ACTION_CONTINUE
            return 0
        return entry

    ops = pgwalk.MMWalkOps(pgd_entry=visit(0), pud_entry=visit(2), pmd_entry=visit(3))
    with mm.mmap_read_lock():
        for lo, hi in mm._halves(None, None):
            assert pgwalk.walk_page_range_novma(mm, lo, hi, ops) == 0
    return ranges


def clip(runs, cuts):
    """``runs`` [(va, size, pa)] less the VA intervals ``cuts`` [(lo, hi)]."""
    out = []
    cuts = sorted(cuts)
    for va, size, pa in runs:
        pieces = [(va, va + size)]
        for lo, hi in cuts:
            nxt = []
            for a, b in pieces:
                if hi <= a or lo >= b:
                    nxt.append((a, b))
                    continue
                if a < lo:
                    nxt.append((a, lo))
                if hi < b:
                    nxt.append((hi, b))
            pieces = nxt
        out += [(a, b - a, pa + (a - va)) for a, b in pieces]
    return out


def merge(runs):
    out = []
    for va, size, pa in sorted(runs):
        if out and out[-1][0] + out[-1][1] == va and out[-1][2] + out[-1][1] == pa:
            out[-1] = (out[-1][0], out[-1][1] + size, out[-1][2])
        else:
            out.append((va, size, pa))
    return out


def pgwalk_as_volatility(mm, file_size):
    """pgwalk's mappings put through Volatility's rules (module docstring);
    returns (runs, cuts): cuts are the VA ranges Volatility treats otherwise
    (equal tables: absent; bad top-level entries: followed)."""
    maps = mm.mappings()
    runs = []
    for m in maps:
        va, size, entry = int(m["va"]), int(m["size"]), int(m["entry"])
        pa = entry & PFN_MASK
        if size > 4096:
            pa &= ~PAT_LARGE
        if pa + size <= file_size:
            runs.append((va & VA48, size, pa))
    count, addrs = mm.bad_entries
    assert count == len(addrs)
    # the top-level ones (Volatility follows any present PML4 entry); a link
    # out of the image below the top is a fault to Volatility too
    root = np.frombuffer(mm.image.frame(mm.root_pfn), dtype=np.uint64)

    def top_level(a):
        v = int(root[(a >> 39) & 511])
        return a % (1 << 39) == 0 and (pgwalk.p4d_bad(v) or mm.image.frame((v & PFN_MASK) >> 12) is None)

    bad = [(int(a) & VA48, (int(a) & VA48) + (1 << 39)) for a in addrs if top_level(int(a))]
    return runs, equal_table_ranges(mm), bad


def compare(tmp_path, seed):
    img, root, size = make_vol_image(seed)
    path = tmp_path / f"vol{seed}.raw"
    write_image(path, img, size)
    mm = pgwalk.PhysImage.open(path).mm(root << 12)
    runs, equal, bad = pgwalk_as_volatility(mm, size)
    got = volatility_mappings(volatility_layer(path, root << 12))
    want = merge(clip(runs, equal))
    assert clip(runs, bad) == runs                        # pgwalk maps nothing under a bad entry
    assert merge(clip(got, bad)) == want                  # Volatility's extras: all under bad entries
    return mm, runs, equal, bad, got, want


@pytest.mark.parametrize("seed", range(10))
def test_volatility_agrees_after_its_heuristics(tmp_path, seed):
    mm, runs, equal, bad, got, want = compare(tmp_path, seed)
    assert want                                           # the image maps something Volatility can see


def test_the_generator_exercises_every_heuristic(tmp_path):
    """Across the seeds of the comparison, each rule of Volatility's changed
    the answer at least once (so none of the normalisations is idle)."""
    merged = dropped_equal = followed_bad = outside = reserved = 0
    for seed in range(10):
        img, root, size = make_vol_image(seed)
        path = tmp_path / f"h{seed}.raw"
        write_image(path, img, size)
        mm = pgwalk.PhysImage.open(path).mm(root << 12)
        maps = mm.mappings()
        runs, equal, bad = pgwalk_as_volatility(mm, size)
        got = volatility_mappings(volatility_layer(path, root << 12))
        merged += len(runs) - len(merge(runs)) > 0
        dropped_equal += len(clip(runs, equal)) < len(runs)
        followed_bad += len(clip(got, bad)) < len(got)
        outside += len(runs) < len(maps)
        reserved += any(int(m["size"]) > 4096 and int(m["entry"]) & PFN_MASK & ~PAT_LARGE
                        & ((int(m["size"]) - 1)) for m in maps)
    assert min(merged, dropped_equal, followed_bad, outside, reserved) > 0, \
        (merged, dropped_equal, followed_bad, outside, reserved)


def test_each_difference_on_a_hand_built_image(tmp_path):
    """One image, one example of each documented difference, checked
    against Volatility's own output."""
    img = np.zeros(16 * 512, dtype=np.uint64)
    pgd, pud, pmd, pte, same, pud2 = 1, 2, 3, 4, 5, 6
    img[pgd * 512 + 0] = (pud << 12) | TABLE
    img[pgd * 512 + 1] = (pud2 << 12) | TABLE | PSE      # PS in a PML4E: pgwalk: bad; Volatility follows
    img[pud2 * 512 + 0] = (3 * GIB) | P | RW | PSE        # a 1G leaf under it (outside the image: dropped)
    img[pud2 * 512 + 1] = (1 * GIB) | P | RW | PSE        # inside
    img[pud * 512 + 0] = (pmd << 12) | TABLE
    img[pud * 512 + 1] = (2 * GIB) | P | RW | PSE | (1 << 14)   # reserved bit 14 in a 1G leaf
    img[pmd * 512 + 0] = (pte << 12) | TABLE
    img[pmd * 512 + 1] = (same << 12) | TABLE
    img[pmd * 512 + 2] = (0x40000000 + (6 << 20)) | P | PSE | PAT_LARGE   # 2M leaf with PAT
    img[pte * 512 + np.arange(8)] = ((np.arange(8, dtype=np.uint64) + 0x100) << 12) | P | RW   # a run of 8
    img[pte * 512 + 9] = (5 * GIB) | P                    # beyond the image: Volatility drops it
    img[same * 512:(same + 1) * 512] = (0x200 << 12) | P  # 512 equal PTEs: Volatility drops the table
    path = tmp_path / "hand.raw"
    write_image(path, img, 3 * GIB + (1 << 20))
    mm = pgwalk.PhysImage.open(path).mm(pgd << 12)
    maps = [(int(m["va"]), int(m["size"]), int(m["pa"])) for m in mm.mappings()]
    got = volatility_mappings(volatility_layer(path, pgd << 12))
    run = [(i << 12, 4096, (0x100 + i) << 12) for i in range(8)]
    assert maps == run + [(9 << 12, 4096, 5 * GIB)] \
        + [((2 << 20) + (i << 12), 4096, 0x200 << 12) for i in range(512)] \
        + [(4 << 20, 2 << 20, 0x40000000 + (6 << 20)), (GIB, GIB, 2 * GIB)]
    assert mm.bad_entries[0] == 1 and list(mm.bad_entries[1]) == [1 << 39]
    assert got == [(0, 8 << 12, 0x100 << 12),                 # merged run; the 5 GiB page and the
                   (4 << 20, 2 << 20, 0x40000000 + (6 << 20)),  # equal table are gone
                   (GIB, GIB, 2 * GIB + (1 << 14)),          # reserved bit kept in the address
                   ((1 << 39) + GIB, GIB, GIB)]              # under the PML4E pgwalk calls bad


def test_linux_intel32e_counts_prot_none_pages_as_mapped(tmp_path):
    """Volatility's LinuxIntel32e (the layer its Linux automagic builds)
    treats an entry with P or PROTNONE (bit 8) as present and un-inverts the
    PFN of one without P (the kernel's L1TF inversion), keeping 46 address
    bits.  pgwalk's mappings() holds present leaves only: the PROT_NONE page
    is in the non-present list, with its raw (inverted) entry."""
    img = np.zeros(8 * 512, dtype=np.uint64)
    img[512 + 0] = (2 << 12) | TABLE
    img[2 * 512 + 0] = (3 << 12) | TABLE
    img[3 * 512 + 0] = (4 << 12) | TABLE
    phys46 = ((1 << 46) - 1) & ~0xFFF
    protnone = (~(0x23 << 12) & phys46) | G | A          # PFN 0x23, inverted, P clear
    img[4 * 512 + 0] = (0x77 << 12) | P | RW
    img[4 * 512 + 1] = protnone
    img[4 * 512 + 2] = (1 << 50) | (0x88 << 12) | P        # bit 50: beyond LinuxIntel32e's 46 bits
    path = tmp_path / "linux.raw"
    write_image(path, img, 1 << 20)
    mm = pgwalk.PhysImage.open(path).mm(1 << 12)
    maps, other = mm.mappings(nonpresent=True)
    assert [(int(m["va"]), int(m["pa"])) for m in maps] == [(0, 0x77 << 12), (0x2000, (1 << 50) | (0x88 << 12))]
    assert [(int(o["va"]), int(o["entry"])) for o in other] == [(0x1000, protnone)]
    linux = volatility_mappings(volatility_layer(path, 1 << 12, intel.LinuxIntel32e))
    assert linux == [(0, 0x1000, 0x77 << 12), (0x1000, 0x1000, 0x23 << 12), (0x2000, 0x1000, 0x88 << 12)]
    plain = volatility_mappings(volatility_layer(path, 1 << 12))
    assert plain == [(0, 0x1000, 0x77 << 12)]             # 1 << 50 is outside the 1 MiB image
