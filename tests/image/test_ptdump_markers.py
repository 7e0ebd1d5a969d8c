"""The x86-64 address markers of the kernel's page_tables dump
(arch/x86/mm/dump_pagetables.c) on image dumps, 4- and 5-level.

The kernel keeps its markers in a fixed order and, at each break in the
runs, compares the break's address with the next marker only: the header is
printed after the line that reaches the marker's address, one header per
break; the ESPfix area prints 16 lines at most and then a count of the
skipped ones.  The kernel half is walked from the end of the hypervisor
guard hole, the user half's last run reaches to there, and the last line
ends at the top of the space (printed as 0).  These tests build images with
mappings in every region and check the text against those rules, computed
here from the printed lines alone."""

import numpy as np
import pytest

import pgwalk

from helpers.cli import run_pgwalk
from pgwalk.ptdump import x86_64_markers

P, RW, US, PSE, NX, G = 1, 2, 4, 0x80, 1 << 63, 0x100
TABLE = 0x63
M64 = (1 << 64) - 1


class Builder:
    """Page tables for a raw image: tables from frame 1 (the root) on."""

    def __init__(self, levels):
        self.levels = levels
        self.frames = [np.zeros(512, dtype=np.uint64), np.zeros(512, dtype=np.uint64)]
        self.shifts = [48, 39, 30, 21, 12] if levels == 5 else [39, 30, 21, 12]

    def _table(self, frame, depth, va):
        i = (va >> self.shifts[depth]) & 511
        v = int(self.frames[frame][i])
        if v == 0:
            self.frames.append(np.zeros(512, dtype=np.uint64))
            v = ((len(self.frames) - 1) << 12) | TABLE
            self.frames[frame][i] = v
        return (v >> 12) & ((1 << 40) - 1)

    def map(self, va, size, flags, pa=0x200000):
        depth = len(self.shifts) - {4096: 1, 2 << 20: 2, 1 << 30: 3}[size]
        frame = 1
        for d in range(depth):
            frame = self._table(frame, d, va)
        self.frames[frame][(va >> self.shifts[depth]) & 511] = pa | flags | (PSE if size > 4096 else 0)

    def mm(self, tmp_path):
        path = tmp_path / f"markers{self.levels}.raw"
        np.concatenate(self.frames).tofile(path)
        return pgwalk.PhysImage.open(path).mm(1 << 12, self.levels)


def parse(text):
    """[(kind, ...)]: ("hdr", name), ("line", start, end), ("skip", n)."""
    out = []
    for ln in text.splitlines():
        if ln.startswith("---[ "):
            assert ln.endswith(" ]---")
            out.append(("hdr", ln[5:-5]))
        elif ln.startswith("... "):
            n, word = ln.split()[1:3]
            assert ln == f"... {n} {'entry' if n == '1' else 'entries'} skipped ... "
            out.append(("skip", int(n)))
        else:
            assert ln[:2] == "0x" and ln[18:21] == "-0x", ln
            out.append(("line", int(ln[2:18], 16), int(ln[21:37], 16)))
    return out


def check_kernel_rules(text, markers):
    """Every rule of the module docstring, from the text alone; returns
    {marker name: the end of the line after which its header came}."""
    items = parse(text)
    assert items[0] == ("hdr", markers[0][1])
    hdrs = [it[1] for it in items if it[0] == "hdr"]
    assert hdrs == [m[1] for m in markers[:len(hdrs)]]          # in the kernel's order
    where, mi, count, prev_end = {}, 0, 0, 0
    for k, it in enumerate(items[1:], 1):
        if it[0] == "skip":                 # lines past a marker's limit are not printed
            assert markers[mi][2] and count == markers[mi][2] and items[k + 1] == ("hdr", markers[mi + 1][1])
            where[markers[mi + 1][1]] = None
            mi, count, prev_end = mi + 1, 0, None
        elif it[0] == "line":
            assert prev_end is None or it[1] == prev_end            # contiguous
            prev_end = it[2]
            count += 1
            nxt = markers[mi + 1][0] if mi + 1 < len(markers) else None
            reached = nxt is not None and it[2] != 0 and it[2] >= nxt
            follow = items[k + 1] if k + 1 < len(items) else None
            limit = markers[mi][2]
            if reached:
                assert follow == ("hdr", markers[mi + 1][1]), (it, follow)
                where[markers[mi + 1][1]] = it[2]
                mi += 1
                count = 0
            else:
                assert follow is None or follow[0] == "line" or (limit and count == limit)
        elif it[0] == "hdr" and k > 1 and items[k - 1][0] == "line" and items[k - 1][2] == 0:
            raise AssertionError("a header after the last line")
    assert prev_end == 0                                            # the top of the space
    return where, items


def lines_under(items, name):
    out, on = [], False
    for it in items:
        if it[0] == "hdr":
            on = it[1] == name
        elif on and it[0] == "line":
            out.append(it)
    return out


def populate(b, levels, fixmap_start):
    """Mappings in every region of the kernel's layout (no randomisation)."""
    po = 0xFFFF888000000000 if levels == 4 else 0xFF11000000000000
    vm = 0xFFFFC90000000000 if levels == 4 else 0xFFA0000000000000
    vmemmap = 0xFFFFEA0000000000 if levels == 4 else 0xFFD4000000000000
    b.map(0x400000, 4096, P | RW | US)                          # user
    b.map(0x7FFFFFFFE000, 4096, P | RW | US | NX)
    b.map(po, 1 << 30, P | RW | NX | G)                         # direct map, 1G then 2M
    b.map(po + (1 << 30), 2 << 20, P | NX | G)
    b.map(vm + 0x1000, 4096, P | RW | NX | G)
    b.map(vmemmap, 2 << 20, P | RW | NX | G)
    b.map(0xFFFFFE0000000000, 4096, P | G)                      # CPU entry area
    for i in range(20):                                         # ESPfix: 20 alternating runs
        b.map(0xFFFFFF0000000000 + i * 4096, 4096, P | G | (RW if i % 2 else 0))
    b.map(0xFFFFFFEF00000000 + (1 << 30), 4096, P | RW | NX)    # EFI runtime services
    b.map(0xFFFFFFFF81000000, 2 << 20, P | G)                   # kernel text
    b.map(0xFFFFFFFFC0000000, 4096, P | RW | NX | G)            # a module
    for i in range(-3, 3):                                      # fixmap: a run across its start
        b.map(fixmap_start + i * 4096, 4096, P | RW | NX | G)


@pytest.mark.parametrize("levels", [4, 5])
def test_every_marker_where_the_kernel_prints_it(tmp_path, levels):
    fixmap = 0xFFFFFFFFFF5F9000
    b = Builder(levels)
    populate(b, levels, fixmap)
    mm = b.mm(tmp_path)
    markers = x86_64_markers(levels, fixmap_start=fixmap)
    text = mm.ptdump(fixmap_start=fixmap)
    where, items = check_kernel_rules(text, markers)
    assert list(where) == [m[1] for m in markers[1:]]           # all printed
    guard = 0xFFFF880000000000 if levels == 4 else 0xFF10000000000000
    half = 1 << (47 if levels == 4 else 56)
    # the user half's last run reaches the start of the kernel's walk
    assert where["Kernel Space"] == guard
    assert [it for it in items if it[0] == "line" and it[1] < half][-1][2] == guard
    assert not any(it[0] == "line" and half <= it[1] < guard for it in items)
    # markers aligned to where notes fall are reached exactly (EFI's header
    # follows the skipped ESPfix lines, so its line is not printed)
    assert where["EFI Runtime Services"] is None
    assert lines_under(items, "EFI Runtime Services")[0][1] == 0xFFFFFFEF00000000
    for name in ("CPU entry Area", "ESPfix Area", "High Kernel Mapping",
                 "Modules", "End Modules", "Fixmap Area"):
        assert where[name] == dict((m[1], m[0]) for m in markers)[name], name
    # the fixmap marker splits a run inside one PTE table
    fx = lines_under(items, "Fixmap Area")[0]
    assert fx[1] == fixmap and fx[2] == fixmap + 3 * 4096
    # ESPfix: 20 mapped runs, the rest of its PTE table, PMD table and PUD holes up to EFI
    assert ("skip", 20 + 3 - 16) in items
    assert len(lines_under(items, "ESPfix Area")) == 16
    # the one-header-per-break rule: the LDT header comes one break after its address
    assert where["LDT remap"] > guard


def test_markers_moved_by_kaslr_and_optional_ones(tmp_path):
    b = Builder(4)
    po = 0xFFFF9A0000000000                                   # a randomised page_offset_base
    b.map(po, 2 << 20, P | RW | NX | G)
    b.map(0xFFFFFFFF81000000, 2 << 20, P | G)
    mm = b.mm(tmp_path)
    default = mm.ptdump()
    assert "Fixmap Area" not in default and "KASAN" not in default
    moved = mm.ptdump(page_offset=po, ldt=False, efi=False)
    markers = x86_64_markers(4, page_offset=po, ldt=False, efi=False)
    where, items = check_kernel_rules(moved, markers)
    assert "LDT remap" not in moved and "EFI" not in moved
    assert where["Low Kernel Mapping"] == po
    assert lines_under(items, "Low Kernel Mapping")[0][1:] == (po, po + (2 << 20))
    # KASAN shadow (4-level, the default KASAN_SHADOW_OFFSET): given explicitly
    k = (0xFFFFEC0000000000, 0xFFFFFC0000000000)
    text = mm.ptdump(kasan_shadow=k)
    check_kernel_rules(text, x86_64_markers(4, kasan_shadow=k))
    assert text.index("KASAN shadow ]") < text.index("KASAN shadow end") < text.index("CPU entry Area")
    with pytest.raises(TypeError):
        mm.ptdump(0, 1 << 47, page_offset=po)
    with pytest.raises(ValueError):
        x86_64_markers(3)


def test_marker_addresses_are_the_kernels_layout():
    m4 = {name: (a, lim) for a, name, lim in x86_64_markers(4, fixmap_start=0xFFFFFFFFFF5F9000)}
    m5 = {name: (a, lim) for a, name, lim in x86_64_markers(5)}
    assert m4["Kernel Space"] == m5["Kernel Space"] == (1 << 63, 0)
    assert m4["LDT remap"][0] == 0xFFFF880000000000 and m5["LDT remap"][0] == 0xFF10000000000000
    assert m4["Low Kernel Mapping"][0] == 0xFFFF888000000000 and m5["Low Kernel Mapping"][0] == 0xFF11000000000000
    assert m4["vmalloc() Area"][0] == 0xFFFFC90000000000 and m5["vmalloc() Area"][0] == 0xFFA0000000000000
    assert m4["Vmemmap"][0] == 0xFFFFEA0000000000 and m5["Vmemmap"][0] == 0xFFD4000000000000
    for m in (m4, m5):
        assert m["CPU entry Area"][0] == 0xFFFFFE0000000000
        assert m["ESPfix Area"] == (0xFFFFFF0000000000, 16)
        assert m["EFI Runtime Services"][0] == 0xFFFFFFEF00000000
        assert m["High Kernel Mapping"][0] == 0xFFFFFFFF80000000
        assert m["Modules"][0] == 0xFFFFFFFFC0000000
        assert m["End Modules"][0] == 0xFFFFFFFFFF000000
    assert x86_64_markers(4, kernel_image_size=512 << 20)[-2][0] == 0xFFFFFFFFA0000000
    assert list(m4)[-1] == "Fixmap Area" and "Fixmap Area" not in m5


def test_a_zero_pte_breaks_a_run_of_flagless_entries(tmp_path):
    """A non-zero PTE with no flag bits (a swap-like value) and a zero PTE
    differ in effective protection under an NX table: the kernel breaks the
    run there, and so does the batched PTE walk."""
    b = Builder(4)
    b.map(0x400000, 4096, P | RW | US)
    b.frames[-1][1] = 0x5000                                  # flags 0, not zero
    b.frames[1][0] |= NX                                      # NX from the top: effective prot differs
    mm = b.mm(tmp_path)
    lines = [it for it in parse(mm.ptdump()) if it[0] == "line"]
    assert any(s == 0x401000 and e == 0x402000 for _, s, e in lines)


def test_command_line_marker_options(tmp_path):
    b = Builder(4)
    po = 0xFFFF9A0000000000
    b.map(po, 2 << 20, P | RW | NX | G)
    b.map(0xFFFFFFFFFF5F8000, 4096, P | RW | NX | G)            # notes up to the fixmap
    mm = b.mm(tmp_path)
    args = ["image", mm.image.path, "--cr3", "0x1000"]
    r = run_pgwalk(*args, "--page-offset", hex(po), "--fixmap-start", "0xffffffffff5f9000")
    assert r.returncode == 0, r.stderr
    assert r.stdout == mm.ptdump(page_offset=po, fixmap_start=0xFFFFFFFFFF5F9000)
    assert "---[ Fixmap Area ]---" in r.stdout
    r = run_pgwalk(*args, "--page-offset", hex(po), "--start", "0", "--end", "0x1000")
    assert r.returncode == 2 and "whole dump" in r.stderr
