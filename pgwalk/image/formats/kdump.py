"""kdump-compressed dumps (makedumpfile's diskdump layout, "KDUMP   "):
a header block, the kdump sub-header, two bitmaps (1st: frames that exist;
2nd: frames dumped), then one 24-byte page descriptor (offset, size, flags,
page flags) per dumped frame in frame order, pointing at its data, raw or
compressed with zlib, LZO, snappy or zstd.

Frames are read one at a time: a frame's descriptor is found by counting the
2nd bitmap's bits before it (a rank table per 64 frames), and decompressed
pages are kept in a small LRU cache; nothing decompresses the whole file.
"""

import struct
from collections import OrderedDict

import numpy as np

from .errors import ImageError
from . import vmcoreinfo as vmci

PAGE = 4096
HEADER_SIZE = 464                # x86-64 disk_dump_header
ZLIB, LZO, SNAPPY, INCOMPLETE_PAGE, EXCLUDED_VMEMMAP, ZSTD = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
COMPRESSED = ZLIB | LZO | SNAPPY | ZSTD
KNOWN_FLAGS = COMPRESSED | INCOMPLETE_PAGE | EXCLUDED_VMEMMAP
STATUS_INCOMPLETE = 0x1
DESC = np.dtype([("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("page_flags", "<u8")])
CHUNK = 1 << 20                  # descriptors checked per pass on open
EXTRA = "install the kdump extra: pip install 'pgwalk[kdump]'"


def _zlib(data):
    import zlib
    d = zlib.decompressobj()
    out = d.decompress(data, PAGE + 1)
    if not d.eof or d.unconsumed_tail:
        if len(out) > PAGE or d.unconsumed_tail:
            raise ValueError("inflates past 4 KiB")
        raise ValueError("truncated zlib stream")
    return out


def _lzo(data):
    try:
        import lzallright
    except ImportError:
        raise ModuleNotFoundError(f"LZO pages need lzallright ({EXTRA})") from None
    return lzallright.LZOCompressor.decompress(data, output_size_hint=PAGE)


def _snappy(data):
    n, shift, i = 0, 0, 0
    while i < min(len(data), 5):               # the uncompressed length, a varint, comes first
        n |= (data[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not data[i - 1] & 0x80:
            break
    if n != PAGE:
        raise ValueError(f"snappy page says it holds {n} bytes")
    try:
        import cramjam
    except ImportError:
        raise ModuleNotFoundError(f"snappy pages need cramjam ({EXTRA})") from None
    return bytes(cramjam.snappy.decompress_raw(data))


def _zstd(data):
    try:
        import zstandard
    except ImportError:
        raise ModuleNotFoundError(f"zstd pages need zstandard ({EXTRA})") from None
    import io
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as r:
        return r.read(PAGE + 1)                # bounded, whatever the frame header claims


DECOMPRESS = {ZLIB: ("zlib", _zlib), LZO: ("lzo", _lzo), SNAPPY: ("snappy", _snappy), ZSTD: ("zstd", _zstd)}


class KdumpStore:
    """A kdump-compressed dump over a byte source (the file, or a flattened
    stream's rebuilt view); frames through the descriptors."""

    format = "kdump"

    def __init__(self, source, cache_pages=1024):
        self.source = source
        self.path = path = source.path
        h = source.pread(0, HEADER_SIZE, "kdump header")
        self.header_version, = struct.unpack_from("<i", h, 8)
        self.release = h[12 + 2 * 65:12 + 3 * 65].split(b"\0")[0].decode("ascii", "replace")
        (self.status, block, sub_blocks, bitmap_blocks, max32) = struct.unpack_from("<IiiII", h, 424)
        if block != PAGE:
            raise ImageError(f"{path}: kdump header at offset 0x0: block size {block} (x86-64 dumps use 4096)")
        if sub_blocks < 0 or bitmap_blocks == 0 or bitmap_blocks % 2:
            raise ImageError(f"{path}: kdump header at offset 0x0: sub-header of {sub_blocks} blocks, "
                             f"bitmaps of {bitmap_blocks} blocks")
        if not 1 <= self.header_version <= 7:
            raise ImageError(f"{path}: kdump header at offset 0x0: unknown header version {self.header_version}")
        sub_off = PAGE
        sub = source.pread(sub_off, min(104, sub_blocks * PAGE), "kdump sub-header") if sub_blocks else b""
        sub = sub.ljust(104, b"\0")
        (self.phys_base, self.dump_level, _split, _s, _e, vi_off, vi_size, _no, _ns, _eo, _es,
         _s64, _e64, max64) = struct.unpack_from("<QiiQQQQQQQQQQQ", sub, 0)
        self.max_mapnr = max64 if self.header_version >= 6 else max32
        bitmap_off = (1 + sub_blocks) * PAGE
        half = bitmap_blocks * PAGE // 2
        if self.max_mapnr > half * 8:
            raise ImageError(f"{path}: kdump header at offset 0x0: {self.max_mapnr} frames but bitmaps "
                             f"of {half * 8} bits")
        self.vmcoreinfo = None
        if self.header_version >= 3 and vi_size:
            if vi_size > vmci.MAX_TEXT:
                raise ImageError(f"{path}: VMCOREINFO at offset {vi_off:#x} is {vi_size} bytes")
            self.vmcoreinfo = vmci.parse(source.pread(vi_off, vi_size, "VMCOREINFO"))
        nbytes = (self.max_mapnr + 7) // 8
        b1 = np.frombuffer(source.pread(bitmap_off, half, "1st bitmap"), dtype=np.uint8)[:nbytes].copy()
        b2 = np.frombuffer(source.pread(bitmap_off + half, half, "2nd bitmap"), dtype=np.uint8)[:nbytes].copy()
        if self.max_mapnr % 8 and nbytes:
            keep = np.uint8((1 << (self.max_mapnr % 8)) - 1)
            b1[-1] &= keep
            b2[-1] &= keep
        stray = np.nonzero(b2 & ~b1)[0]
        if stray.size:
            i = int(stray[0])
            x = int(b2[i] & ~b1[i])
            bit = (x & -x).bit_length() - 1             # the lowest such frame
            raise ImageError(f"{path}: 2nd bitmap (offset {bitmap_off + half + i:#x}) marks frame "
                             f"{(i * 8 + bit):#x} dumped that the 1st bitmap does not have")
        words = np.zeros((nbytes + 7) // 8 * 8, dtype=np.uint8)
        words[:nbytes] = b2
        self._bits = words.view("<u8")
        counts = np.bitwise_count(self._bits).astype(np.int64)
        self._rank = np.concatenate(([0], np.cumsum(counts)))
        self.ndumped = int(self._rank[-1])
        self.desc_off = bitmap_off + bitmap_blocks * PAGE
        end = self.desc_off + self.ndumped * DESC.itemsize
        if end > source.size:
            raise ImageError(f"{path}: the 2nd bitmap marks {self.ndumped} frames dumped but their "
                             f"descriptors (from offset {self.desc_off:#x}) run past the end of the "
                             f"file at {end:#x} ({source.size:#x} bytes; truncated?)")
        self.compressions = set()
        self._check_descriptors()
        self._cache = OrderedDict()
        self._cache_pages = cache_pages

    def _bad(self, i, d, why):
        return ImageError(f"{self.path}: page descriptor #{i} at offset {self.desc_off + i * DESC.itemsize:#x} "
                          f"(data offset {int(d['offset']):#x}, size {int(d['size'])}, flags "
                          f"{int(d['flags']):#x}): {why}")

    def _check_descriptors(self):
        """Every descriptor inside the file, of a known kind and a sane size
        (checked in bounded chunks, not kept)."""
        incomplete = self.status & STATUS_INCOMPLETE
        size = self.source.size
        for lo in range(0, self.ndumped, CHUNK):
            n = min(CHUNK, self.ndumped - lo)
            d = np.frombuffer(self.source.pread(self.desc_off + lo * 24, n * 24, "page descriptors"), dtype=DESC)
            comp = (d["flags"] & COMPRESSED) != 0
            hole = (d["offset"] == 0) & (d["size"] == 0)
            bad = ((d["flags"] & ~np.uint32(KNOWN_FLAGS)) != 0)
            bad |= np.bitwise_count(d["flags"] & np.uint32(COMPRESSED)) > 1
            bad |= (d["offset"] < 0) | (d["offset"] + d["size"].astype(np.int64) > size)
            bad |= comp & ((d["size"] == 0) | (d["size"] > PAGE))
            bad |= ~comp & (d["size"] != PAGE)
            if incomplete:
                bad &= ~hole
            k = np.nonzero(bad)[0]
            if k.size:
                i = int(k[0])
                dd = d[i]
                why = ("unknown flags" if int(dd["flags"]) & ~KNOWN_FLAGS else
                       "more than one compression" if bin(int(dd["flags"]) & COMPRESSED).count("1") > 1 else
                       "data past the end of the file" if int(dd["offset"]) < 0 or
                       int(dd["offset"]) + int(dd["size"]) > size else
                       "a compressed page longer than 4 KiB or empty" if int(dd["flags"]) & COMPRESSED else
                       "a raw page that is not 4 KiB")
                raise self._bad(lo + i, dd, why)
            for flag, (name, _) in DECOMPRESS.items():
                if (d["flags"] & flag).any():
                    self.compressions.add(name)

    def _index(self, pfn):
        """Descriptor number of frame ``pfn``, or -1 when it was not dumped."""
        if pfn < 0 or pfn >= self.max_mapnr:
            return -1
        w, b = divmod(pfn, 64)
        word = int(self._bits[w])
        if not (word >> b) & 1:
            return -1
        return int(self._rank[w]) + (word & ((1 << b) - 1)).bit_count()

    def frame(self, pfn):
        """Frame ``pfn``'s 4 KiB (decompressed, cached), or None when absent."""
        hit = self._cache.get(pfn)
        if hit is not None:
            self._cache.move_to_end(pfn)
            return hit
        i = self._index(pfn)
        if i < 0:
            return None
        d = np.frombuffer(self.source.pread(self.desc_off + i * 24, 24, "page descriptor"), dtype=DESC)[0]
        off, n = int(d["offset"]), int(d["size"])
        if off == 0 and n == 0 and self.status & STATUS_INCOMPLETE:
            return None                         # never written: the dump was cut short
        data = self._decode(pfn, i, d, self.source.pread(off, n, f"page data of frame {pfn:#x}"))
        self._cache[pfn] = data
        if len(self._cache) > self._cache_pages:
            self._cache.popitem(last=False)
        return data

    def _decode(self, pfn, i, d, data):
        """Frame ``pfn``'s page from its data as descriptor #``i`` (``d``)
        stores it: raw, or decompressed (to exactly 4 KiB)."""
        kind = int(d["flags"]) & COMPRESSED
        if kind:
            name, fn = DECOMPRESS[kind]
            try:
                data = fn(data)
            except ModuleNotFoundError as e:
                raise ImageError(f"{self.path}: frame {pfn:#x}: {e}") from None
            except Exception as e:              # each library has errors of its own
                raise self._bad(i, d, f"{name} data does not decompress: {e}") from None
            if len(data) != PAGE:
                raise self._bad(i, d, f"{name} data inflates past 4 KiB" if len(data) > PAGE else
                                f"{name} data inflates to {len(data)} bytes, not one 4 KiB page")
        return data

    def read_frames(self, pfn, n):
        """Frames ``pfn`` to ``pfn + n - 1``, which must all be dumped (part
        of a run of ``present``), as a read-only buffer (no copy of it is
        made): their descriptors read at once,
        their data in a few reads (the pages' data sorted and merged where
        it lies together, as makedumpfile and QEMU write it; a shared zero
        page read once), raw pages copied a run at a time, the others
        decompressed; a frame a cut-short dump never wrote reads as zeros
        (``present_bits`` leaves it out).  The page cache is left alone."""
        i = self._index(pfn)
        if i < 0 or n <= 0 or self._index(pfn + n - 1) != i + n - 1:
            raise ValueError(f"frames {pfn:#x}+{n} are not a run of dumped frames")
        d = np.frombuffer(self.source.pread(self.desc_off + i * 24, n * 24, "page descriptors"), dtype=DESC)
        off = d["offset"].astype(np.int64)
        end = off + d["size"].astype(np.int64)
        flags = d["flags"]
        out = np.zeros(n * PAGE, dtype=np.uint8)
        todo = ~((off == 0) & (end == 0)) if self.status & STATUS_INCOMPLETE else np.ones(n, dtype=bool)
        # the reads: the pages' data sorted by offset, merged while the gaps are small
        ks = np.flatnonzero(todo)
        ks = ks[np.argsort(off[ks], kind="stable")]
        if not ks.size:
            return memoryview(out).toreadonly()
        so, se = off[ks], np.maximum.accumulate(end[ks])
        cut = np.flatnonzero(so[1:] > se[:-1] + 65536) + 1
        starts = np.concatenate(([0], cut))
        stops = np.concatenate((cut, [ks.size]))
        raw = (flags & np.uint32(COMPRESSED)) == 0
        for a, b in zip(starts.tolist(), stops.tolist()):
            lo, hi = int(so[a]), int(se[b - 1])
            buf = np.frombuffer(self.source.pread(lo, hi - lo, f"page data of frames {pfn:#x}+{n}"),
                                dtype=np.uint8)
            group = ks[a:b]
            # raw pages: one copy per run of frames whose data follow each other;
            # pages that share all-zero data (QEMU and the writers point every
            # zero page at one) stay as ``out`` has them
            rk = np.sort(group[raw[group]])
            if rk.size:
                uo, inv, cnt = np.unique(off[rk], return_inverse=True, return_counts=True)
                zero = np.zeros(uo.size, dtype=bool)
                for j in np.flatnonzero(cnt > 1).tolist():
                    zero[j] = not buf[int(uo[j]) - lo:int(uo[j]) - lo + PAGE].any()
                rk = rk[~zero[inv]]
            if rk.size:
                brk = np.flatnonzero((np.diff(rk) != 1) | (np.diff(off[rk]) != PAGE)) + 1
                for x, y in zip(np.concatenate(([0], brk)).tolist(), np.concatenate((brk, [rk.size])).tolist()):
                    k0, src = int(rk[x]), int(off[rk[x]]) - lo
                    out[k0 * PAGE:(k0 + y - x) * PAGE] = buf[src:src + (y - x) * PAGE]
            # compressed pages: one call each (the same data decompressed once)
            done = {}
            for k in np.sort(group[~raw[group]]).tolist():
                a0 = int(off[k])
                page = done.get(a0)
                if page is None:
                    data = buf[a0 - lo:int(end[k]) - lo].tobytes()
                    try:
                        page = DECOMPRESS[int(flags[k]) & COMPRESSED][1](data)
                    except Exception:
                        page = None
                    if page is None or len(page) != PAGE:
                        page = self._decode(pfn + k, i + k, d[k], data)     # its error, named
                    done[a0] = page
                out[k * PAGE:(k + 1) * PAGE] = np.frombuffer(page, dtype=np.uint8)
        return memoryview(out).toreadonly()

    def present_bits(self):
        """A bit per frame (little-endian bit order, uint8): the frames the
        dump holds (the 2nd bitmap, less what a cut-short dump never
        wrote, its descriptors read a million at a time)."""
        bits = self._bits.view(np.uint8)[:(self.max_mapnr + 7) // 8].copy()
        if self.status & STATUS_INCOMPLETE:
            dumped = np.flatnonzero(np.unpackbits(bits, bitorder="little")[:self.max_mapnr])
            for lo in range(0, self.ndumped, CHUNK):
                n = min(CHUNK, self.ndumped - lo)
                d = np.frombuffer(self.source.pread(self.desc_off + lo * 24, n * 24, "page descriptors"),
                                  dtype=DESC)
                for pfn in dumped[lo:lo + n][(d["offset"] == 0) & (d["size"] == 0)].tolist():
                    bits[pfn >> 3] &= ~np.uint8(1 << (pfn & 7))
        return bits

    def present(self):
        """Sorted (first pfn, frames) runs of dumped frames."""
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:self.max_mapnr]
        edges = np.diff(np.concatenate(([0], bits.astype(np.int8), [0])))
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        return [(int(a), int(b - a)) for a, b in zip(starts, ends)]
