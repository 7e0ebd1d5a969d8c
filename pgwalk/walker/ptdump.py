"""The text of the kernel's ``/sys/kernel/debug/page_tables`` dump.

Like the kernel's ptdump (mm/ptdump.c with arch/x86/mm/dump_pagetables.c), a
no-VMA walk notes every leaf, every PTE and every hole with its level and
flags, and prints one line per run of entries alike in flags, effective
protection and level:

    0x00007f0000200000-0x00007f0000400000           2M     USR RW                     NX pte

(start, end, size, then USR/RW|ro/PWT/PCD/PSE/PAT/GLB/NX|x, then the level).
PTE tables are consumed in batches (one Python call per table).

``x86_64_markers`` gives the kernel's x86-64 address markers (``---[ name
]---`` lines) for 4- and 5-level paging; with markers the dump follows the
kernel's rules for them: a marker is printed after the line that reaches its
address, one marker per break, and a marker with a line limit (the ESPfix
area: 16) prints at most that many lines and then ``... N entries skipped
...``.
"""

import numpy as np

from ..constants import (
    LEVEL_NAMES,
    _PAGE_GLOBAL, _PAGE_NX, _PAGE_PCD, _PAGE_PRESENT, _PAGE_PSE, _PAGE_PWT, _PAGE_RW,
    _PAGE_USER, PTE_FLAGS_MASK, START_KERNEL_MAP, U64_MASK,
)
from ._core import batch
from .ops import MMWalkOps
from .api import walk_page_range_novma

__all__ = [
    "CPU_ENTRY_AREA_BASE", "EFI_VA_END", "ESPFIX_BASE_ADDR", "ESPFIX_MAX_LINES",
    "KERNEL_SPACE", "LAYOUT", "LEVEL_NAMES", "MODULES_END", "START_KERNEL_MAP",
    "effective_prot", "guard_hole_end", "kernel_ptdump", "prot_text", "size_text",
    "x86_64_markers",
]

_PAGE_PAT = 1 << 7          # in a PTE
_PAGE_PAT_LARGE = 1 << 12   # in a PUD/PMD leaf
_UNITS = "BKMGTPE"

# x86-64 layout (arch/x86/include/asm/page_64_types.h, pgtable_64_types.h):
# addresses that do not depend on KASLR or on the kernel's configuration.
KERNEL_SPACE = 1 << 63
CPU_ENTRY_AREA_BASE = (-4 << 39) & U64_MASK           # PGD slot -4 of 512 GiB
ESPFIX_BASE_ADDR = (-2 << 39) & U64_MASK
EFI_VA_END = (-68 << 30) & U64_MASK
MODULES_END = 0xFFFFFFFFFF000000
ESPFIX_MAX_LINES = 16
# per paging mode: (guard hole end = LDT remap base, PAGE_OFFSET, VMALLOC_START,
# VMEMMAP_START) -- the last three are the bases without memory randomisation
LAYOUT = {
    4: ((-240 << 39) & U64_MASK, 0xFFFF888000000000, 0xFFFFC90000000000, 0xFFFFEA0000000000),
    5: ((-240 << 48) & U64_MASK, 0xFF11000000000000, 0xFFA0000000000000, 0xFFD4000000000000),
}


def guard_hole_end(levels):
    """Where the kernel's dump starts walking the kernel half (the 16 PGD
    slots of the hypervisor hole below it are not walked)."""
    return LAYOUT[levels][0]


def x86_64_markers(levels=4, *, page_offset=None, vmalloc_start=None, vmemmap_start=None,
                   kasan_shadow=None, ldt=True, espfix=True, efi=True,
                   kernel_image_size=1 << 30, modules_end=MODULES_END, fixmap_start=None):
    """The address markers of the kernel's x86-64 page_tables dump, in its
    order, as [(address, name, max_lines)].

    Fixed by the architecture: User Space (0), Kernel Space (2**63), LDT
    remap (-240 PGD slots: 0xffff880000000000 / 0xff10000000000000; omit
    with ldt=False, a kernel without MODIFY_LDT_SYSCALL), CPU entry Area
    (0xfffffe0000000000), ESPfix Area (0xffffff0000000000, 16 lines at most;
    espfix=False without X86_ESPFIX64), EFI Runtime Services (-68 GiB;
    efi=False without EFI), High Kernel Mapping (0xffffffff80000000),
    Modules (High Kernel Mapping + ``kernel_image_size``: 1 GiB with
    RANDOMIZE_BASE, 512 MiB without), End Modules (``modules_end``).
    Moved by KASLR's memory randomisation (the defaults are the bases
    without it; pass the booted kernel's page_offset_base, vmalloc_base and
    vmemmap_base): Low Kernel Mapping, vmalloc() Area, Vmemmap.  Depending
    on the configuration, omitted unless given: KASAN shadow and KASAN
    shadow end (``kasan_shadow=(start, end)``) and Fixmap Area
    (``fixmap_start``, FIXADDR_START)."""
    if levels not in LAYOUT:
        raise ValueError(f"levels must be 4 or 5, not {levels!r}")
    ldt_base, po, vm, vmemmap = LAYOUT[levels]
    m = [(0, "User Space", 0), (KERNEL_SPACE, "Kernel Space", 0)]
    if ldt:
        m.append((ldt_base, "LDT remap", 0))
    m += [(po if page_offset is None else page_offset, "Low Kernel Mapping", 0),
          (vm if vmalloc_start is None else vmalloc_start, "vmalloc() Area", 0),
          (vmemmap if vmemmap_start is None else vmemmap_start, "Vmemmap", 0)]
    if kasan_shadow is not None:
        m += [(kasan_shadow[0], "KASAN shadow", 0), (kasan_shadow[1], "KASAN shadow end", 0)]
    m.append((CPU_ENTRY_AREA_BASE, "CPU entry Area", 0))
    if espfix:
        m.append((ESPFIX_BASE_ADDR, "ESPfix Area", ESPFIX_MAX_LINES))
    if efi:
        m.append((EFI_VA_END, "EFI Runtime Services", 0))
    m += [(START_KERNEL_MAP, "High Kernel Mapping", 0),
          (START_KERNEL_MAP + kernel_image_size, "Modules", 0),
          (modules_end, "End Modules", 0)]
    if fixmap_start is not None:
        m.append((fixmap_start, "Fixmap Area", 0))
    return m


def effective_prot(upper, val):
    """What an entry allows given the levels above it (x86's rule)."""
    return (upper & val & (_PAGE_USER | _PAGE_RW)) | ((upper | val) & _PAGE_NX)


def prot_text(prot, level):
    """The flag columns of a dump line for an entry's bits ``prot`` at
    ``level`` (the kernel's ``printk_prot``): USR, RW or ro, PWT, PCD, PSE
    (leaves above the PTE level), PAT (the bit's place differs in PTEs and
    in PMD/PUD leaves), GLB, NX or x; 30 blanks for a non-present entry."""
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
    """The size column of a dump line: ``delta`` bytes in the largest unit
    (B, K, M, G, ...) that divides it exactly, right-aligned as the kernel
    prints it."""
    unit = 0
    while delta and not delta & 1023 and unit < len(_UNITS) - 1:
        delta >>= 10
        unit += 1
    return f"{delta:9d}{_UNITS[unit]} "


class _State:
    """The kernel's note_page: one line per run alike in flags, effective
    protection and level; with markers, their headers as the kernel prints
    them (markers kept in the given order, not sorted, as the kernel's array)."""

    def __init__(self, markers):
        self.lines = []
        self.level = None
        self.start = self.prot = self.eff = 0
        self.prot_levels = [0] * 5
        self.markers = [tuple(m) + (0,) * (3 - len(m)) for m in markers]
        self.kernel = bool(self.markers)
        if not self.kernel:
            self.markers = [(0, None, 0)]
        self.markers.append((U64_MASK, None, 0))     # the kernel's END_OF_SPACE (-1)
        self.mi = 0
        self.count = 0                                 # lines under the current marker

    def next_marker(self):
        """The address of the marker after the current one."""
        return self.markers[self.mi + 1][0]

    def note(self, addr, level, val):
        """Record the entry ``val`` (0 for a hole) at ``addr`` and ``level``:
        a change of flags, effective protection or level, or reaching the
        next marker, ends the open run with a line."""
        prot = val & PTE_FLAGS_MASK
        eff = self.prot_levels[level] if val and level >= 0 else 0
        if self.level is None:
            if self.kernel and not self.lines:
                self.lines.append(f"---[ {self.markers[0][1]} ]---")
        elif (prot, eff, level) != (self.prot, self.eff, self.level) or addr >= self.next_marker():
            self.line(addr)
            if addr >= self.next_marker():
                name, limit = self.markers[self.mi][1:]
                if limit and self.count > limit:
                    skipped = self.count - limit
                    self.lines.append(f"... {skipped} entr{'y' if skipped == 1 else 'ies'} skipped ... ")
                self.mi += 1
                self.count = 0
                self.lines.append(f"---[ {self.markers[self.mi][1]} ]---")
        else:
            return
        self.level, self.start, self.prot, self.eff = level, addr, prot, eff

    def line(self, addr):
        """Print the open run as ending at ``addr``, unless the current
        marker's line limit is reached (the run is then only counted)."""
        limit = self.markers[self.mi][2]
        if not limit or self.count < limit:
            self.lines.append(f"0x{self.start:016x}-0x{addr & U64_MASK:016x}   "
                              f"{size_text((addr - self.start) & U64_MASK)}"
                              f"{prot_text(self.prot, self.level)}{LEVEL_NAMES[self.level]}")
        self.count += 1

    def flush(self, addr):
        """End of a range without markers: close the open run at ``addr``."""
        if self.level is not None and addr > self.start:
            self.line(addr)
        self.level = None

    def set_eff(self, level, val):
        """Keep the effective protection at ``level`` given the entry
        ``val`` there, for the levels below it (``effective_prot``)."""
        upper = self.prot_levels[level - 1] if level else val
        self.prot_levels[level] = effective_prot(upper, val) if level else val & PTE_FLAGS_MASK


def kernel_ptdump(mm, ranges, markers=()):
    """The dump of ``ranges`` [(start, end)] of ``mm`` (walked with
    walk_page_range_novma; the caller holds the lock it needs).  Without
    markers each range's last run ends at the range's end.  With markers
    [(address, name[, max_lines])] (``x86_64_markers``), the kernel's rules:
    runs continue across the gap between ranges and the last one ends at
    the top of the space (printed as 0x0000000000000000)."""
    st = _State(markers)
    stops = sorted({a for a, *_ in st.markers[1:-1]})

    def upper(level):
        """The entry callback of an upper ``level`` (PGD to PMD)."""
        def entry(e, addr, next, walk):
            """Track the effective protection; note a huge leaf and do not
            descend into (or split) it."""
            v = int(e)
            st.set_eff(level, v)
            if v & _PAGE_PSE and level in (2, 3):          # pud_leaf / pmd_leaf
                st.note(addr, level, v)
                walk.action = 1                           # ACTION_CONTINUE
            return 0
        return entry

    def ptes(entries, addr, next, walk):
        """A run of PTEs (batched): note only where the flags, noneness or
        a marker break the run, not every entry."""
        vals = np.asarray(entries)
        flags = vals & np.uint64(PTE_FLAGS_MASK)
        none = vals == 0                              # a zero entry's effective protection is 0
        cuts = np.flatnonzero((flags[1:] != flags[:-1]) | (none[1:] != none[:-1])) + 1
        base = addr & ~0xFFF
        inside = [(a - base) >> 12 for a in stops if base < a < base + 4096 * len(vals)]
        if inside:                                    # a marker inside the table breaks the run
            cuts = np.union1d(cuts, inside)
        for i in np.concatenate(([0], cuts)).astype(np.int64):
            v = int(vals[i])
            st.set_eff(4, v)
            st.note((addr & ~0xFFF) + int(i) * 4096 if i else addr, 4, v)
        return 0

    def hole(addr, next, depth, walk):
        """A missing table or slot: noted as an empty entry at its level."""
        st.note(addr, max(depth, 0), 0)
        return 0

    ops = MMWalkOps(pgd_entry=upper(0), p4d_entry=upper(1),   # called for the folded level too
                    pud_entry=upper(2), pmd_entry=upper(3), pte_entry=batch(ptes),
                    pte_hole=hole)
    for lo, hi in ranges:
        rc = walk_page_range_novma(mm, lo, hi, ops)
        if rc:
            raise OSError(-rc, f"walk of [{lo:#x}, {hi:#x}) failed")
        if not st.kernel:
            st.flush(hi + 1 if hi == U64_MASK else hi)     # the top of the space: printed as 0x0
    if st.kernel:
        st.note(0, -1, 0)                              # the kernel's final flush: level -1 at 0
    return "\n".join(st.lines) + "\n"
