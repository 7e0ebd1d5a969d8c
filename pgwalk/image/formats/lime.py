"""LiME dumps: each range of physical memory is a 32-byte header (magic
0x4C694D45, version 1, first and last -- inclusive -- physical address, 8
reserved bytes) followed by its bytes; what no range covers is absent."""

import struct

from ...constants import PHYSICAL_MASK_SHIFT
from . import LIME_MAGIC
from .errors import ImageError
from .ranges import RangeStore

HEADER = struct.Struct("<IIQQ8s")
MAGIC = int.from_bytes(LIME_MAGIC, "little")     # 0x4C694D45


class LimeStore(RangeStore):
    """The ranges of a LiME file, served frame by frame from the mapped file."""

    format = "lime"

    def __init__(self, source):
        self.source = source
        self.path = path = source.path
        size = source.size
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
            ranges.append((start, last + 1, pos, pos + HEADER.size))
            pos += HEADER.size + n
        self._set_ranges("LiME", ranges)          # (start, end, data offset)

    def _covering(self, pa, n):
        """The file offset of ``[pa, pa + n)`` when one range holds it all."""
        r = self._range(pa, n)
        return None if r is None else r[2] + pa - r[0]

    def frame(self, pfn):
        """Frame ``pfn``'s 4 KiB, or None unless a range holds all of it."""
        off = self._covering(pfn << 12, 4096)
        return None if off is None else bytes(self.source.map[off:off + 4096])

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
