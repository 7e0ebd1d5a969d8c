"""The text of the kernel's ``/sys/kernel/debug/page_tables`` dump.

Like the kernel's ptdump (mm/ptdump.c with arch/x86/mm/dump_pagetables.c), a
no-VMA walk notes every leaf, every PTE and every hole with its level and
flags, and prints one line per run of entries alike in flags, effective
protection and level:

    0x00007f0000200000-0x00007f0000400000           2M     USR RW                     NX pte

(start, end, size, then USR/RW|ro/PWT/PCD/PSE/PAT/GLB/NX|x, then the level).
PTE tables are consumed in batches (one Python call per table).
"""

import numpy as np

from .constants import (
    _PAGE_GLOBAL, _PAGE_NX, _PAGE_PCD, _PAGE_PRESENT, _PAGE_PSE, _PAGE_PWT, _PAGE_RW,
    _PAGE_USER, PTE_FLAGS_MASK, U64_MASK,
)
from ._core import batch
from .ops import MMWalkOps
from .walker import walk_page_range_novma

LEVEL_NAMES = ("pgd", "p4d", "pud", "pmd", "pte")
_PAGE_PAT = 1 << 7          # in a PTE
_PAGE_PAT_LARGE = 1 << 12   # in a PUD/PMD leaf
_UNITS = "BKMGTPE"


def effective_prot(upper, val):
    """What an entry allows given the levels above it (x86's rule)."""
    return (upper & val & (_PAGE_USER | _PAGE_RW)) | ((upper | val) & _PAGE_NX)


def prot_text(prot, level):
    if not prot & _PAGE_PRESENT:
        return " " * 30
    return "".join((
        "USR " if prot & _PAGE_USER else "    ",
        "RW " if prot & _PAGE_RW else "ro ",
        "PWT " if prot & _PAGE_PWT else "    ",
        "PCD " if prot & _PAGE_PCD else "    ",
        "PSE " if level <= 3 and prot & _PAGE_PSE else "    ",
        "PAT " if (level == 4 and prot & _PAGE_PAT) or (level in (2, 3) and prot & _PAGE_PAT_LARGE)
        else "    ",
        "GLB " if prot & _PAGE_GLOBAL else "    ",
        "NX " if prot & _PAGE_NX else "x  ",
    ))


def size_text(delta):
    unit = 0
    while delta and not delta & 1023 and unit < len(_UNITS) - 1:
        delta >>= 10
        unit += 1
    return f"{delta:9d}{_UNITS[unit]} "


class _State:
    def __init__(self, markers):
        self.lines = []
        self.level = None
        self.start = self.prot = self.eff = 0
        self.prot_levels = [0] * 5
        self.markers = markers            # [(address, name)], sorted

    def note(self, addr, level, val):
        prot = val & PTE_FLAGS_MASK
        eff = self.prot_levels[level] if val else 0
        while self.markers and addr >= self.markers[0][0]:
            self.flush(addr)
            self.lines.append(f"---[ {self.markers.pop(0)[1]} ]---")
        if self.level is None:
            self.level, self.start, self.prot, self.eff = level, addr, prot, eff
        elif (prot, eff, level) != (self.prot, self.eff, self.level):
            self.flush(addr)
            self.level, self.start, self.prot, self.eff = level, addr, prot, eff

    def flush(self, addr):
        if self.level is not None and addr > self.start:
            self.lines.append(f"0x{self.start:016x}-0x{addr & U64_MASK:016x}   {size_text(addr - self.start)}"
                              f"{prot_text(self.prot, self.level)}{LEVEL_NAMES[self.level]}")
        self.level = None

    def set_eff(self, level, val):
        upper = self.prot_levels[level - 1] if level else val
        self.prot_levels[level] = effective_prot(upper, val) if level else val & PTE_FLAGS_MASK


def kernel_ptdump(mm, ranges, markers=()):
    """The dump of ``ranges`` [(start, end)] of ``mm`` (walked with
    walk_page_range_novma; the caller holds the lock it needs)."""
    st = _State(sorted(markers))
    levels = mm.levels

    def upper(level):
        def entry(e, addr, next, walk):
            v = int(e)
            st.set_eff(level, v)
            if v & _PAGE_PSE and level in (2, 3):          # pud_leaf / pmd_leaf
                st.note(addr, level, v)
                walk.action = 1                           # ACTION_CONTINUE
            return 0
        return entry

    def ptes(entries, addr, next, walk):
        vals = np.asarray(entries)
        flags = vals & np.uint64(PTE_FLAGS_MASK)
        cuts = np.flatnonzero(flags[1:] != flags[:-1]) + 1
        for i in np.concatenate(([0], cuts)):
            v = int(vals[i])
            st.set_eff(4, v)
            st.note((addr & ~0xFFF) + int(i) * 4096 if i else addr, 4, v)
        return 0

    def hole(addr, next, depth, walk):
        st.note(addr, max(depth, 0), 0)
        return 0

    ops = MMWalkOps(pgd_entry=upper(0), p4d_entry=upper(1) if levels == 5 else None,
                    pud_entry=upper(2), pmd_entry=upper(3), pte_entry=batch(ptes),
                    pte_hole=hole)
    for lo, hi in ranges:
        rc = walk_page_range_novma(mm, lo, hi, ops)
        if rc:
            raise OSError(-rc, f"walk of [{lo:#x}, {hi:#x}) failed")
        st.flush(hi + 1 if hi == U64_MASK else hi)     # the top of the space: printed as 0x0
    return "\n".join(st.lines) + "\n"
