"""Page tables inside physical-memory images (raw dumps and ELF cores).

``PhysImage.open(path)`` memory-maps an image read-only without reading it:
a flat raw file (file offset = physical address) or an ELF core (``PT_LOAD``
segments placed by ``p_paddr``; what no segment covers reads as absent).
``img.mm(cr3, levels)`` is an mm whose tables are the image's frames: every
no-VMA walk and every callback tier works on it, writes are refused, bad
top-level entries are reported (``mm.bad_entries``) instead of cleared, and a
link to a frame outside the image is never followed.

    img = pgwalk.PhysImage.open("dump.raw")
    mm = img.mm(cr3=0x1a2b3000)
    maps = mm.mappings()             # every present leaf: va, pa, size, level, entry
    pas = mm.translate([0xffffffff81000000])
"""

import struct
from pathlib import Path

import numpy as np

from . import _image
from ..walker import AddressSpace, MMWalkOps, check_range, walk_page_range_novma
from ..constants import PAGE_SHIFT, PAGE_SIZE, PTE_PFN_MASK, U64_MASK
from ..walker.ptdump import guard_hole_end, kernel_ptdump, x86_64_markers

MAPPING_DTYPE = _image.MAPPING_DTYPE
NONPRESENT_DTYPE = _image.OTHER_DTYPE
PT_LOAD = 1


class ImageError(ValueError):
    """A malformed or truncated image; the message names the file."""


class PhysImage:
    """A physical-memory image, mapped read-only."""

    def __init__(self, path, frames, segments, kind):
        self.path = Path(path)
        self.frames = frames            # uint64 view of the mapped file, 512 per frame
        self.segments = segments        # [(first pfn, frames, first file frame)], sorted
        self.kind = kind                # "raw" or "elf"

    @classmethod
    def open(cls, path):
        path = Path(path)
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
        if head[:4] == b"\x7fELF":
            return cls._open_elf(path, size)
        if size < PAGE_SIZE:
            raise ImageError(f"{path}: a raw image needs at least one 4 KiB frame ({size} bytes)")
        frames = np.memmap(path, dtype=np.uint64, mode="r", shape=((size // PAGE_SIZE) * 512,))
        return cls(path, frames, [], "raw")

    @classmethod
    def _open_elf(cls, path, size):
        with open(path, "rb") as f:
            ehdr = f.read(64)
            if len(ehdr) < 64:
                raise ImageError(f"{path}: truncated ELF header")
            if ehdr[4] != 2 or ehdr[5] != 1:
                raise ImageError(f"{path}: only little-endian ELF64 cores are supported")
            phoff, = struct.unpack_from("<Q", ehdr, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", ehdr, 0x36)
            if phentsize < 56 or phoff + phnum * phentsize > size:
                raise ImageError(f"{path}: program headers run past the end of the file")
            f.seek(phoff)
            raw = f.read(phnum * phentsize)
        segs = []
        for i in range(phnum):
            p_type, _flags, off, _vaddr, paddr, filesz, _memsz = struct.unpack_from(
                "<IIQQQQQ", raw, i * phentsize)
            if p_type != PT_LOAD or filesz == 0:
                continue
            if paddr % PAGE_SIZE or filesz % PAGE_SIZE or off % 8:
                raise ImageError(f"{path}: PT_LOAD #{i} is not 4 KiB aligned "
                                 f"(offset {off:#x}, paddr {paddr:#x}, size {filesz:#x})")
            if off + filesz > size:
                raise ImageError(f"{path}: PT_LOAD #{i} ends at {off + filesz:#x}, past the file's "
                                 f"{size:#x} bytes (truncated?)")
            segs.append((paddr >> PAGE_SHIFT, filesz >> PAGE_SHIFT, off))
        # QEMU's dump-guest-memory packs the segments right after the headers:
        # their file offsets are not page aligned but all alike modulo 4 KiB,
        # so the file is mapped from that remainder on, frame by frame.
        bases = {off % PAGE_SIZE for _, _, off in segs}
        if len(bases) > 1:
            raise ImageError(f"{path}: PT_LOAD file offsets differ modulo 4 KiB "
                             f"({', '.join(hex(b) for b in sorted(bases))})")
        base = bases.pop() if bases else 0
        segs = sorted((pfn, n, (off - base) >> PAGE_SHIFT) for pfn, n, off in segs)
        for (a, n, _), (b, _, _) in zip(segs, segs[1:]):
            if a + n > b:
                raise ImageError(f"{path}: PT_LOAD segments overlap at frame {b:#x}")
        if not segs:
            raise ImageError(f"{path}: no PT_LOAD segment with contents")
        frames = np.memmap(path, dtype=np.uint64, mode="r", offset=base,
                           shape=(((size - base) // PAGE_SIZE) * 512,))
        return cls(path, frames, segs, "elf")

    def mm(self, cr3, levels=4):
        """An mm over this image's tables, rooted at ``cr3`` (PCID and flag
        bits masked off), or at a ``Root`` of ``find_roots`` (its levels)."""
        if hasattr(cr3, "pgd") and hasattr(cr3, "levels"):
            cr3, levels = cr3.pgd, cr3.levels
        if not isinstance(cr3, int) or isinstance(cr3, bool):
            raise TypeError(f"cr3 must be an int, not {type(cr3).__name__}")
        if not 0 <= cr3 <= U64_MASK:
            raise ValueError(f"cr3 must fit in 64 bits: {cr3}")
        mm = ImageMM(levels, is_init_mm=True)
        try:
            mm.attach_image(self.frames, (cr3 & PTE_PFN_MASK) >> PAGE_SHIFT, self.segments)
        except ValueError as e:
            raise ValueError(f"cr3 {cr3:#x}: {e}") from None
        mm.image = self
        return mm

    def find_roots(self, progress=None):
        """Every page-table root in the image, found by scanning its frames
        (no CR3 needed): a list of ``roots.Root``, kernel first."""
        from .roots import find_roots
        return find_roots(self, progress)

    def __repr__(self):
        return f"<PhysImage {self.kind} {self.path} frames={self.frames.size // 512}>"


class ImageMM(AddressSpace):
    """The tables of a physical-memory image seen as a (kernel) mm: no VMAs,
    read only; walk it with ``walk_page_range_novma``."""

    def _halves(self, start, end):
        half = 1 << (47 if self.levels == 4 else 56)
        if start is None and end is None:
            return [(0, half), ((1 << 64) - half, U64_MASK)]
        start = 0 if start is None else start
        end = U64_MASK if end is None else end
        check_range(self, start, end)
        return [(start, end)]

    def mappings(self, start=None, end=None, nonpresent=False):
        """Every leaf the hardware would use (P set), unmerged, in address
        order, as a structured array (va, pa, size, level, entry); with
        ``nonpresent=True`` also the non-present non-none entries (PROT_NONE,
        swap, markers: va, level, entry).  Default: both canonical halves
        (the range ends at 2**64 - 1: the last page is included)."""
        op = getattr(self, "_mappings_op", None)
        if op is None:                  # kept: its buffers stay faulted in for the next call
            op = self._mappings_op = _image.MappingsOp()
        op.reset()
        # pte_range: the pmd_entry reads each PTE table in one loop
        ops = MMWalkOps(pud_entry=op.pud_entry, pmd_entry=op.pte_range)
        with self.mmap_read_lock():
            for lo, hi in self._halves(start, end):
                rc = walk_page_range_novma(self, lo, hi, ops)
                if rc:
                    raise OSError(-rc, f"walk of [{lo:#x}, {hi:#x}) failed")
        maps, other = op.result()
        return (maps, other) if nonpresent else maps

    def ptdump(self, start=None, end=None, markers=None, **layout):
        """The text of the kernel's page_tables dump of the image's tables.

        Default: what the kernel walks, the user half and the kernel half
        from the end of the hypervisor guard hole (0xffff880000000000;
        5-level: 0xff10000000000000), with the kernel's x86-64 address
        markers (``pgwalk.ptdump.x86_64_markers(levels, **layout)``: pass
        e.g. ``page_offset=``, ``vmalloc_start=``, ``vmemmap_start=`` for a
        kernel booted with KASLR's memory randomisation, ``fixmap_start=``,
        ``kasan_shadow=``), or ``markers`` [(address, name[, max_lines])].
        With ``start``/``end``: that range alone, without markers."""
        if start is None and end is None:
            half = 1 << (47 if self.levels == 4 else 56)
            ranges = [(0, half), (guard_hole_end(self.levels), U64_MASK)]
            if markers is None:
                markers = x86_64_markers(self.levels, **layout)
        else:
            if markers is not None or layout:
                raise TypeError("markers apply to the whole-space dump (no start/end)")
            ranges, markers = self._halves(start, end), ()
        with self.mmap_read_lock():
            return kernel_ptdump(self, ranges, markers)

    def translate(self, vas):
        """Physical address of each virtual address (int64; -1 where unmapped)."""
        return _image.translate(self, vas)
