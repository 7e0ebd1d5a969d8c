"""Byte sources a dump is parsed from: the file itself (memory-mapped) or
makedumpfile's flattened stream seen as the file it stands for."""

import mmap
import struct
from bisect import bisect_right

import numpy as np

from .errors import ImageError


class FileSource:
    """A file mapped read-only; ``pread`` checks every read against its end."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.size = f.seek(0, 2)
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else b""

    def pread(self, off, n, what):
        """``n`` bytes at ``off``; an error naming ``what`` if past the end."""
        if off < 0 or n < 0 or off + n > self.size:
            raise ImageError(f"{self.path}: {what} at offset {off:#x} ({n} bytes) runs past the end "
                             f"of the file ({self.size:#x} bytes; truncated?)")
        return bytes(self.map[off:off + n])


FLAT_HEADER = 4096
FLAT_END = -1


class FlatSource:
    """makedumpfile's flattened stream (``-F``): a 4 KiB start header, then
    records (big-endian offset, size, data) written in any order, then an
    end marker.  Indexed once on open; reads see the file the records would
    rebuild (gaps read as zeros, as the rebuilt file's holes)."""

    def __init__(self, path):
        self.path = path
        self.file = FileSource(path)
        f = self.file
        head = f.pread(0, 32, "flattened start header")
        kind, version = struct.unpack_from(">qq", head, 16)
        if head[12:16] != bytes(4) or kind != 1 or version != 1:
            raise ImageError(f"{path}: flattened header at offset 0x0: type {kind} version {version} "
                             f"(expected 1 and 1)")
        dst, length, src = [], [], []
        pos = FLAT_HEADER
        while True:
            off, n = struct.unpack(">qq", f.pread(pos, 16, "flattened record header"))
            if off == FLAT_END:
                break
            if off < 0 or n < 0:
                raise ImageError(f"{path}: flattened record at offset {pos:#x}: offset {off} size {n}")
            if pos + 16 + n > f.size:
                raise ImageError(f"{path}: flattened record at offset {pos:#x} ({n} bytes) runs past "
                                 f"the end of the file (truncated?)")
            if n:
                dst.append(off)
                length.append(n)
                src.append(pos + 16)
            pos += 16 + n
        order = np.argsort(np.array(dst, dtype=np.int64), kind="stable")
        self.dst = np.array(dst, dtype=np.int64)[order]
        self.len = np.array(length, dtype=np.int64)[order]
        self.src = np.array(src, dtype=np.int64)[order]
        ends = self.dst + self.len
        clash = np.nonzero(ends[:-1] > self.dst[1:])[0]
        if clash.size:
            i = int(clash[0])
            raise ImageError(f"{path}: flattened records overlap: [{int(self.dst[i]):#x}, {int(ends[i]):#x}) "
                             f"(data at file offset {int(self.src[i]):#x}) and one from "
                             f"{int(self.dst[i + 1]):#x} (data at file offset {int(self.src[i + 1]):#x})")
        self.size = int(ends.max()) if ends.size else 0
        self.records = len(dst)
        self._starts = self.dst.tolist()

    def pread(self, off, n, what):
        """``n`` bytes at offset ``off`` of the rebuilt file."""
        if off < 0 or n < 0 or off + n > self.size:
            raise ImageError(f"{self.path}: {what} at offset {off:#x} ({n} bytes) runs past the end "
                             f"of the rebuilt dump ({self.size:#x} bytes; truncated stream?)")
        out = bytearray(n)
        i = max(bisect_right(self._starts, off) - 1, 0)
        pos = off
        while pos < off + n and i < len(self._starts):
            d, ln, s = self._starts[i], int(self.len[i]), int(self.src[i])
            if d >= off + n:
                break
            lo, hi = max(pos, d), min(off + n, d + ln)
            if hi > lo:
                out[lo - off:hi - off] = self.file.map[s + lo - d:s + hi - d]
                pos = hi
            i += 1
        return bytes(out)
