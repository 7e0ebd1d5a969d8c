"""LiME dumps: each range of physical memory is a 32-byte header (magic
0x4C694D45, version 1, first and last -- inclusive -- physical address, 8
reserved bytes) followed by its bytes; what no range covers is absent."""

import struct
from bisect import bisect_right

from ...constants import PHYSICAL_MASK_SHIFT
from . import LIME_MAGIC
from .errors import ImageError

HEADER = struct.Struct("<IIQQ8s")
MAGIC = int.from_bytes(LIME_MAGIC, "little")     # 0x4C694D45


class LimeStore:
    """The ranges of a LiME file, served frame by frame from the mapped file."""

    format = "lime"

    def __init__(self, source):
        self.source = source
        path, size = source.path, source.size
        ranges = []
        pos = 0
        while pos < size:
            magic, version, start, last, _ = HEADER.unpack(source.pread(pos, HEADER.size, "LiME header"))
            if magic != MAGIC:
                raise ImageError(f"{path}: LiME header at offset {pos:#x}: bad magic {magic:#010x}")
            if version != 1:
                raise ImageError(f"{path}: LiME header at offset {pos:#x}: version {version} (only 1 is known)")
            if last < start:
                raise ImageError(f"{path}: LiME range at offset {pos:#x} is reversed "
                                 f"({start:#x} to {last:#x})")
            if last >> PHYSICAL_MASK_SHIFT:
                raise ImageError(f"{path}: LiME range at offset {pos:#x} ends at {last:#x}, past x86-64's "
                                 f"{PHYSICAL_MASK_SHIFT}-bit physical addresses")
            n = last - start + 1
            if pos + HEADER.size + n > size:
                raise ImageError(f"{path}: LiME range at offset {pos:#x} ({start:#x} to {last:#x}) runs "
                                 f"past the end of the file (truncated?)")
            ranges.append((start, last + 1, pos + HEADER.size, pos))
            pos += HEADER.size + n
        if not ranges:
            raise ImageError(f"{path}: no LiME range")
        ranges.sort()
        for (a, b, _, pa), (c, _, _, pc) in zip(ranges, ranges[1:]):
            if c < b:
                raise ImageError(f"{path}: LiME ranges overlap: [{a:#x}, {b:#x}) (header at offset "
                                 f"{pa:#x}) and one from {c:#x} (header at offset {pc:#x})")
        self.ranges = [(a, b, off) for a, b, off, _ in ranges]
        self._starts = [a for a, _, _ in self.ranges]

    def _covering(self, pa, n):
        i = bisect_right(self._starts, pa) - 1
        if i >= 0:
            a, b, off = self.ranges[i]
            if pa + n <= b:
                return off + pa - a
        return None

    def frame(self, pfn):
        """Frame ``pfn``'s 4 KiB, or None unless a range holds all of it."""
        off = self._covering(pfn << 12, 4096)
        return None if off is None else bytes(self.source.map[off:off + 4096])

    def present(self):
        """Sorted (first pfn, frames) runs of whole frames held."""
        out = []
        for a, b, _ in self.ranges:
            lo, hi = (a + 4095) >> 12, b >> 12
            if hi > lo:
                out.append((lo, hi - lo))
        return out

    def read_frames(self, pfn, n):
        """Frames ``pfn`` to ``pfn + n - 1`` (they must lie in one range:
        part of a run of ``present``) as a read-only buffer: a view of the
        mapped file where the range's bytes are 8-byte aligned (as LiME
        writes them), else a copy."""
        off = self._covering(pfn << 12, n << 12)
        if off is None:
            raise ValueError(f"frames {pfn:#x}+{n} are not in one LiME range")
        if off % 8:
            return bytes(self.source.map[off:off + (n << 12)])
        return memoryview(self.source.map)[off:off + (n << 12)].toreadonly()
