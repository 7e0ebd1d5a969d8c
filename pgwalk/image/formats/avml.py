"""AVML's compressed dumps (what ``avml --compress`` writes): per range of
physical memory, LiME's 32-byte header with magic 0x4C4D5641 ("AVML") and
version 2 (first and last -- inclusive -- physical address, eight zero
bytes), then the range's bytes as a snappy framed stream, then that
stream's length in bytes (u64).  The framed stream is a stream identifier
chunk, then chunks of at most 64 KiB of data each, compressed or stored,
each with a masked CRC-32C of its data; padding and skippable chunks may
come between.  AVML cuts a range into blocks of 16 MiB and leaves out a
block that is all zeros: what no range covers is absent, as in LiME.

Opening reads the chunk headers once (four bytes a chunk, no data; the
ordinary ones in C, ``_framing.walk``); a frame is read by decompressing
the chunks that hold it, checksums checked (kept in a small LRU cache);
nothing decompresses the whole file.
"""

import struct
from collections import OrderedDict

import numpy as np

from ...constants import PHYSICAL_MASK_SHIFT
from . import AVML_MAGIC, _framing
from .errors import ImageError
from .ranges import RangeStore

HEADER = struct.Struct("<IIQQQ")
MAGIC = int.from_bytes(AVML_MAGIC, "little")     # 0x4C4D5641
VERSION = 2
STREAM_ID = b"\xff\x06\x00\x00sNaPpY"      # the framing format's stream identifier chunk
MAX_DATA = 1 << 16                          # bytes of data one chunk may hold
COMPRESSED, STORED, PADDING, IDENTIFIER = 0x00, 0x01, 0xFE, 0xFF
RESERVED = range(0x02, 0x80)                # unskippable chunk types with no meaning yet
EXTRA = "install the avml extra: pip install 'pgwalk[avml]'"


def _varint(m, pos, end):
    """The snappy preamble (the data's length, a little-endian base-128
    varint of at most 5 bytes) at ``pos``; None when malformed."""
    n = shift = 0
    for i in range(pos, min(end, pos + 5)):
        n |= (m[i] & 0x7F) << shift
        shift += 7
        if not m[i] & 0x80:
            return n
    return None


def _decompress(framed):
    """The data of a framed stream (checksums checked by the library)."""
    try:
        import cramjam
    except ImportError:
        raise ModuleNotFoundError(f"AVML's snappy streams need cramjam ({EXTRA})") from None
    return cramjam.snappy.decompress(framed)


class AvmlStore(RangeStore):
    """The ranges of an AVML file, served frame by frame through the chunk
    index built on open."""

    format = "avml"

    def __init__(self, source, cache_chunks=64):
        self.source = source
        self.path = path = source.path
        size = source.size
        blocks = []                         # (start, end, header offset, first chunk, end chunk)
        self._parts = ([], [], [], [])      # arrays of data chunks' (pa, bytes, header offset, body end)
        self._held = 0                      # data chunks so far
        pos = 0
        while pos < size:
            magic, version, start, last, pad = HEADER.unpack(source.pread(pos, HEADER.size, "AVML header"))
            where = f"{path}: AVML header at offset {pos:#x}"
            if magic != MAGIC:
                raise ImageError(f"{where}: bad magic {magic:#010x}")
            if version != VERSION:
                raise ImageError(f"{where}: version {version} (AVML's compressed ranges are version 2)")
            if pad:
                raise ImageError(f"{where}: reserved field {pad:#x} (must be 0)")
            if last < start:
                raise ImageError(f"{where}: reversed range ({start:#x} to {last:#x})")
            if last >> PHYSICAL_MASK_SHIFT:
                raise ImageError(f"{where}: the range ends at {last:#x}, past x86-64's "
                                 f"{PHYSICAL_MASK_SHIFT}-bit physical addresses")
            first = self._held
            p = self._stream(pos + HEADER.size, start, last - start + 1, where)
            length, = struct.unpack("<Q", source.pread(p, 8, "AVML stream length"))
            if length != p - pos - HEADER.size:
                raise ImageError(f"{path}: AVML stream length at offset {p:#x} says {length} bytes; the "
                                 f"stream of the range at offset {pos:#x} has {p - pos - HEADER.size}")
            blocks.append((start, last + 1, pos, first, self._held))
            pos = p + 8
        self._set_ranges("AVML", blocks)        # (start, end, first chunk, end chunk) in file order
        order = np.concatenate([np.arange(c0, c1, dtype=np.int64) for _, _, c0, c1 in self.ranges])

        def table(parts):                   # in address order, as the ranges
            return np.concatenate(parts)[order] if parts else np.zeros(0, dtype=np.int64)
        self.chunk_pa, self.chunk_bytes, self.chunk_at, self.chunk_stop = map(table, self._parts)
        del self._parts
        ranges, k = [], 0
        for a, b, c0, c1 in self.ranges:        # chunks renumbered in address order
            ranges.append((a, b, k, k + c1 - c0))
            k += c1 - c0
        self.ranges = ranges
        self._cache = OrderedDict()
        self._cache_chunks = cache_chunks

    def _take(self, *columns):
        """Data chunks found (arrays of pa, bytes, header offset, body end)."""
        for part, col in zip(self._parts, columns):
            part.append(col)
        self._held += columns[0].size

    def _stream(self, p, start, want, where):
        """The framed stream at offset ``p`` of the range of ``want`` bytes
        from ``start``: its data chunks taken; returns where it ends.  The
        ordinary chunks are walked in C (``_framing.walk``), any other here,
        where its error is raised."""
        m, size, path = self.source.map, self.source.size, self.path
        done, started = 0, False
        while done < want:
            if started:
                p, done, *taken = _framing.walk(m, p, size, start, done, want)
                self._take(*taken)
                if done == want:
                    break
            if p + 4 > size:
                raise ImageError(f"{where}: its snappy stream ends at the end of the file after "
                                 f"{done:#x} of the range's {want:#x} bytes (truncated?)")
            kind, n = m[p], int.from_bytes(m[p + 1:p + 4], "little")
            body = p + 4
            if body + n > size:
                raise ImageError(f"{path}: snappy chunk at offset {p:#x} ({n} bytes) runs past the end "
                                 f"of the file (truncated?)")
            bad = f"{path}: snappy chunk at offset {p:#x} (type {kind:#04x}, {n} bytes)"
            if kind == IDENTIFIER:
                if m[body:body + n] != b"sNaPpY":
                    raise ImageError(f"{bad}: not the stream identifier")
                started = True
            elif not started:
                raise ImageError(f"{bad}: the range's stream does not start with the snappy stream "
                                 f"identifier")
            elif kind in (COMPRESSED, STORED):
                got = n - 4 if kind == STORED else (_varint(m, body + 4, body + n) if n > 4 else None)
                if got is None or got < 0:
                    raise ImageError(f"{bad}: too short, or its length preamble is malformed")
                if got > MAX_DATA:
                    raise ImageError(f"{bad}: holds {got} bytes (at most {MAX_DATA})")
                if done + got > want:
                    raise ImageError(f"{bad}: the stream holds more than the range's {want:#x} bytes")
                if got:
                    self._take(*(np.array([v], dtype=np.int64) for v in (start + done, got, p, body + n)))
                done += got
            elif kind in RESERVED:
                raise ImageError(f"{bad}: a reserved chunk type")
            p = body + n                        # padding and skippable chunks: passed over
        return p

    def _data(self, c0, c1):
        """The data of chunks ``c0`` to ``c1 - 1`` (one range's, in a row in
        the file), in one call; the failing chunk named on an error."""
        lo, hi = int(self.chunk_at[c0]), int(self.chunk_stop[c1 - 1])
        want = int(self.chunk_bytes[c0:c1].sum())
        try:
            out = _decompress(STREAM_ID + self.source.map[lo:hi])
        except ModuleNotFoundError as e:
            raise ImageError(f"{self.path}: {e}") from None
        except Exception as e:                  # the library's own error: find the chunk
            if c1 - c0 == 1:
                raise ImageError(f"{self.path}: snappy chunk at offset {lo:#x} does not decompress: {e}") from None
            for c in range(c0, c1):
                self._data(c, c + 1)
            raise ImageError(f"{self.path}: snappy chunks from offset {lo:#x} do not decompress: {e}") from None
        if len(out) != want:
            raise ImageError(f"{self.path}: snappy chunks from offset {lo:#x} hold {len(out)} bytes, "
                             f"their headers say {want}")
        return out

    def _chunk(self, c):
        hit = self._cache.get(c)
        if hit is not None:
            self._cache.move_to_end(c)
            return hit
        data = bytes(self._data(c, c + 1))
        self._cache[c] = data
        if len(self._cache) > self._cache_chunks:
            self._cache.popitem(last=False)
        return data

    def _first_chunk(self, r, pa):
        return r[2] + int(np.searchsorted(self.chunk_pa[r[2]:r[3]], pa, side="right")) - 1

    def frame(self, pfn):
        """Frame ``pfn``'s 4 KiB, or None unless a range holds all of it."""
        pa = pfn << 12
        r = self._range(pa, 4096) if pfn >= 0 else None
        if r is None:
            return None
        c = self._first_chunk(r, pa)
        out = b""
        while len(out) < 4096:
            data = self._chunk(c)
            skip = pa + len(out) - int(self.chunk_pa[c])
            out += data[skip:skip + 4096 - len(out)]
            c += 1
        return out

    def read_frames(self, pfn, n):
        """Frames ``pfn`` to ``pfn + n - 1`` (in one range: part of a run of
        ``present``), decompressed in one call, as a read-only buffer; the
        cache is left alone."""
        pa = pfn << 12
        r = self._range(pa, n << 12) if pfn >= 0 and n > 0 else None
        if r is None:
            raise ValueError(f"frames {pfn:#x}+{n} are not in one AVML range")
        c0 = self._first_chunk(r, pa)
        c1 = self._first_chunk(r, pa + (n << 12) - 1) + 1
        skip = pa - int(self.chunk_pa[c0])
        return memoryview(self._data(c0, c1))[skip:skip + (n << 12)].toreadonly()
