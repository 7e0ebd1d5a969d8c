"""Links a walk of an image cannot follow, at every level (docs/images.md,
"Untrusted input"): a present PGD, P4D, PUD or PMD entry that links to a
frame the image does not hold -- past its end, in a hole of an ELF core,
outside every LiME range, a frame a kdump dump left out -- is not followed
and is counted in ``mm.bad_entries`` with the address it covers, by every
walk of the image's tables: ``mappings()`` (both shapes of its C ops), a
walk with Python callbacks, ``ptdump()``, ``translate``/``translate1``,
``pt_range_walk`` and the command line.  The memory is
``dump_writers.broken_links_memory``: one such link per level past the end
of memory (every format the same), and one PUD link into a frame that is
not held (raw: zeros, an empty table; the other formats: absent)."""

import numpy as np
import pytest

import pgwalk
from pgwalk.image import _image

from helpers import dump_writers as W
from helpers.cli import run_pgwalk

KINDS = ["raw", "elf", "lime", "avml", "kdump-none", "kdump-zlib", "kdump-lzo", "kdump-snappy", "kdump-zstd",
         "kdump-excluded", "flat-zlib"]


def open_kind(tmp_path, kind, mem, gap):
    """mem written as ``kind`` (kdump-excluded: zlib, the hole frame in the
    1st bitmap only), opened; skips when a decompressor is missing."""
    comp = "snappy" if kind == "avml" else kind.split("-", 1)[1] if "-" in kind else None
    if comp == "excluded":
        kind, comp, excluded = "kdump-zlib", "zlib", [gap]
    else:
        excluded = ()
    if comp not in (None, "none") and W.compressor(comp) is None:
        pytest.skip(f"{comp}: its library is not installed (pip install 'pgwalk[kdump]')")
    path = W.write_dump(kind, tmp_path / "dump", mem, excluded=excluded)
    return pgwalk.PhysImage.open(path)


def halves(levels):
    half = 1 << (47 if levels == 4 else 56)
    return [(0, half), ((1 << 64) - half, (1 << 64) - 1)]


def bad_list(mm):
    count, addrs = mm.bad_entries
    assert count == len(addrs)
    return sorted(int(a) for a in addrs)


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("kind", KINDS)
def test_every_walk_reports_unfollowable_links_at_every_level(tmp_path, kind, levels):
    mem, beyond, gap = W.broken_links_memory(levels)
    img = open_kind(tmp_path, kind, mem, W.GAP_FRAME)
    want = sorted(beyond + ([] if kind == "raw" else gap))
    # one link of each level past the end of memory (and 5-level: the PGD's)
    assert len(beyond) == levels

    mm = img.mm(mem.root << 12, levels)
    maps = mm.mappings()
    assert sorted((int(m["va"]), int(m["pa"]), int(m["size"])) for m in maps) == [
        (0, 5 << 12, 4096), (2 << 21, 3 << 21, 1 << 21), (2 << 30, 1 << 30, 1 << 30),
        (0xffffffff80a00000, 4 << 21, 1 << 21)]
    assert bad_list(mm) == want

    # the per-entry shape of the C ops, and Python callbacks at every level
    op = _image.MappingsOp()
    seen = []
    shapes = [pgwalk.MMWalkOps(pud_entry=op.pud_entry, pmd_entry=op.pmd_entry, pte_entry=op.pte_entry),
              pgwalk.MMWalkOps(pud_entry=lambda *a: seen.append(2) or 0,
                               pmd_entry=lambda *a: seen.append(3) or 0,
                               pte_entry=lambda *a: seen.append(4) or 0)]
    for ops in shapes:
        fresh = img.mm(mem.root << 12, levels)
        with fresh.mmap_read_lock():
            for lo, hi in halves(levels):
                assert pgwalk.walk_page_range_novma(fresh, lo, hi, ops) == 0
        assert bad_list(fresh) == want
    assert op.result()[0].tobytes() == maps.tobytes() and seen

    # ptdump walks the same ranges less the hypervisor guard hole
    fresh = img.mm(mem.root << 12, levels)
    fresh.ptdump()
    assert bad_list(fresh) == want

    # translate: each address under such a link is unmapped and counted
    fresh = img.mm(mem.root << 12, levels)
    probes = np.array([va + 0x1234 for va in want], dtype=np.uint64)
    assert (fresh.translate(probes) == -1).all()
    assert bad_list(fresh) == want
    assert fresh.translate1(want[0] + 8) == -1 and fresh.bad_entries[0] == len(want) + 1
    assert fresh.translate1(0) == 5 << 12 and fresh.bad_entries[0] == len(want) + 1

    # pt_range_walk, with a VMA over the user half: what lies there, once each
    fresh = img.mm(mem.root << 12, levels)
    vma = pgwalk.VMA(0, halves(levels)[0][1], pgwalk.VM_READ, vm_mm=fresh)
    with fresh.mmap_read_lock():
        recs = list(pgwalk.pt_range_walk(vma, 0, vma.vm_end))
    assert bad_list(fresh) == [va for va in want if va < vma.vm_end]
    assert [r.curr_addr for r in recs if r.type == pgwalk.PTW_FOLIO][:1] == [0]


@pytest.mark.parametrize("kind", ["raw", "lime", "kdump-zlib"])
def test_the_command_line_reports_them(tmp_path, kind):
    mem, beyond, gap = W.broken_links_memory(4)
    img = open_kind(tmp_path, kind, mem, W.GAP_FRAME)
    n = len(beyond) + (0 if kind == "raw" else len(gap))
    r = run_pgwalk("image", img.path, "--cr3", hex(mem.root << 12))
    assert r.returncode == 0, r.stderr                 # the root is a real one: a dump, a warning
    assert f"pgwalk: {n} bad entries skipped" in r.stderr
    assert "0xffffffff80a00000-0xffffffff80c00000" in r.stdout


def test_each_walk_counts_what_it_meets(tmp_path):
    """The count is of entries met, per walk (as the kernel's clear_bad
    counter): a second walk meets them again; a walk of a range without
    them meets none."""
    mem, beyond, _ = W.broken_links_memory(4)
    W.write_raw(tmp_path / "r", mem)
    mm = pgwalk.PhysImage.open(tmp_path / "r").mm(mem.root << 12)
    mm.mappings(0, 1 << 21)                           # the 4K leaf's PMD entry only
    assert mm.bad_entries[0] == 0
    mm.mappings()
    mm.mappings()
    assert mm.bad_entries[0] == 2 * len(beyond)
