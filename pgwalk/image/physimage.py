"""Page tables inside physical-memory images (raw dumps, ELF cores, LiME,
kdump-compressed and flattened makedumpfile dumps).

``PhysImage.open(path)`` names the format from the file's content
(``img.format``) and opens it read-only without reading it all: a flat raw
file (file offset = physical address) or an ELF core (``PT_LOAD`` segments
placed by ``p_paddr``) is memory-mapped; LiME and kdump dumps
(``formats/``) serve frames one at a time, and an mm over them gathers the
tables reachable from its root into one array first.  What the dump does
not hold is absent.
``img.mm(cr3, levels)`` is an mm whose tables are the image's frames: every
no-VMA walk and every callback tier works on it, writes are refused, bad
top-level entries are reported (``mm.bad_entries``) instead of cleared, and a
link to a frame outside the image is never followed.

    img = pgwalk.PhysImage.open("dump.raw")
    mm = img.mm(cr3=0x1a2b3000)
    maps = mm.mappings()             # every present leaf: va, pa, size, level, entry
    pas = mm.translate([0xffffffff81000000])
"""

import mmap
import os
import struct
from bisect import bisect_right
from pathlib import Path

import numpy as np

from . import _image
from ..walker import AddressSpace, MMWalkOps, check_range
from ..walker.api import walk_page_range_novma_each
from ..constants import PAGE_SHIFT, PAGE_SIZE, PTE_PFN_MASK, U64_MASK
from ..walker.ptdump import guard_hole_end, kernel_ptdump, x86_64_markers
from ..entries import p4d_bad, pgd_bad
from .formats import FORMATS, detect
from .formats import vmcoreinfo as vmci
from .formats.errors import AbsentError, ImageError
from .formats.avml import AvmlStore
from .formats.kdump import KdumpStore
from .formats.lime import LimeStore
from .formats.source import FileSource, FlatSource

MAPPING_DTYPE = _image.MAPPING_DTYPE
NONPRESENT_DTYPE = _image.OTHER_DTYPE
PT_LOAD = 1
PT_NOTE = 4
MAX_TABLES = 1 << 18            # frames an mm over a LiME/AVML/kdump dump gathers at most (1 GiB)
FREE_OPS = 2                    # MappingsOps kept for the next mappings() of any mm (threads: one each)
FREE_OPS_BYTES = 64 << 20       # ... when their buffers hold at most this
_FREE_OPS = []


def map_frames(fd, base, nframes):
    """``nframes`` frames of the open file ``fd`` from byte ``base`` on,
    memory-mapped read only, as a uint64 array (512 entries per frame).  A
    plain mmap and a numpy view of it: the pages ``numpy.memmap`` would map,
    at a quarter of its cost to set up."""
    m = mmap.mmap(fd, base + nframes * PAGE_SIZE, access=mmap.ACCESS_READ)
    return np.frombuffer(m, dtype=np.uint64, count=nframes * 512, offset=base)


class PhysImage:
    """A physical-memory image, mapped read-only."""

    def __init__(self, path, frames, segments, kind, store=None, vmcoreinfo=None):
        self.path = path if isinstance(path, Path) else Path(path)
        self.frames = frames            # uint64 view of the mapped file, 512 per frame (raw, ELF)
        self.segments = segments        # [(first pfn, frames, first file frame)], sorted
        self.kind = kind                # the format: one of formats.FORMATS
        self.store = store              # LiME / AVML / kdump: frames one at a time (frame(pfn))
        self.vmcoreinfo = vmcoreinfo    # the kernel's VMCOREINFO lines (dict), or None

    @property
    def format(self):
        """The dump's format: "raw", "elf", "lime", "avml", "kdump" or "kdump-flat"."""
        return self.kind

    @classmethod
    def open(cls, path, format=None):
        """Open a dump read-only; its format from its content, or ``format``
        (``"raw"`` reads any file as a raw image)."""
        path = path if isinstance(path, Path) else Path(path)
        if format is not None and format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        fd = os.open(path, os.O_RDONLY)             # a plain descriptor: no buffered file object
        try:
            size = os.fstat(fd).st_size
            try:
                head = os.pread(fd, 64, 0)
            except OSError as e:                    # a directory, say: name the path
                raise type(e)(e.errno, e.strerror, str(path)) from None
            found = format if format == "raw" else detect(path, head, size)
            if format is not None and found != format:
                raise ImageError(f"{path}: not a {format} dump (its content says {found})")
            if found == "raw":
                if size < PAGE_SIZE:
                    raise ImageError(f"{path}: a raw image needs at least one 4 KiB frame ({size} bytes)")
                return cls(path, map_frames(fd, 0, size // PAGE_SIZE), [], "raw")
        finally:
            os.close(fd)
        if found == "elf":
            return cls._open_elf(path, size)
        if found == "lime":
            return cls(path, None, [], "lime", LimeStore(FileSource(path)))
        if found == "avml":
            return cls(path, None, [], "avml", AvmlStore(FileSource(path)))
        src = FileSource(path) if found == "kdump" else FlatSource(path)
        if found == "kdump-flat" and src.pread(0, 8, "kdump header") != b"KDUMP   ":
            raise ImageError(f"{path}: the flattened stream does not hold a kdump-compressed dump "
                             f"(only those are read flattened)")
        store = KdumpStore(src)
        return cls(path, None, [], found, store, store.vmcoreinfo)

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
        info = None
        for i in range(phnum):
            p_type, _flags, off, _vaddr, paddr, filesz, _memsz = struct.unpack_from(
                "<IIQQQQQ", raw, i * phentsize)
            if p_type == PT_NOTE and info is None and filesz:
                if filesz > 64 << 20 or off + filesz > size:
                    raise ImageError(f"{path}: PT_NOTE #{i} at offset {off:#x} ({filesz} bytes) runs past "
                                     f"the end of the file or is too large")
                with open(path, "rb") as f:
                    f.seek(off)
                    info = vmci.parse_notes(path, f.read(filesz), off)
                continue
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
        with open(path, "rb") as f:
            frames = map_frames(f.fileno(), base, (size - base) // PAGE_SIZE)
        return cls(path, frames, segs, "elf", vmcoreinfo=info)

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
        root = (cr3 & PTE_PFN_MASK) >> PAGE_SHIFT
        frames, segments = self.frames, self.segments
        if self.store is not None:
            frames, segments = self._gather_tables(root, mm.levels)
            mm._table_frames = frames          # the tables the walks read, kept alive with the mm
        try:
            mm.attach_image(frames, root, segments)
        except ValueError as e:
            raise ValueError(f"cr3 {cr3:#x}: {e}") from None
        mm.image = self
        mm.root_pfn = root
        return mm

    def _gather_tables(self, root, levels, limit=MAX_TABLES):
        """The frames a walk from ``root`` may read as tables, copied out of a
        LiME/AVML/kdump dump into one array: every frame a non-zero entry of a
        table above the PTE level names (a superset of what the walker
        follows), level by level.  (frames, segments) for attach_image."""
        got = {}
        frontier = [root]
        for depth in range(levels):
            nxt = set()
            for pfn in frontier:
                if pfn in got:
                    continue
                data = self.store.frame(pfn)
                if data is None:
                    continue
                got[pfn] = data
                if len(got) > limit:
                    raise ImageError(f"{self.path}: more than {limit} page-table frames under root frame "
                                     f"{root:#x} (garbage tables?)")
                if depth < levels - 1:
                    e = np.frombuffer(data, dtype="<u8")
                    e = e[e != 0]
                    nxt.update(((e & PTE_PFN_MASK) >> PAGE_SHIFT).tolist())
            frontier = sorted(nxt)
        pfns = sorted(got)
        frames = np.empty(max(len(pfns), 1) * 512, dtype=np.uint64)
        segs = []
        for row, pfn in enumerate(pfns):
            frames[row * 512:(row + 1) * 512] = np.frombuffer(got[pfn], dtype="<u8")
            if segs and segs[-1][0] + segs[-1][1] == pfn and segs[-1][2] + segs[-1][1] == row:
                segs[-1][1] += 1
            else:
                segs.append([pfn, 1, row])
        if not segs:
            raise ImageError(f"{self.path}: the root table (frame {root:#x}) is not in the dump")
        return frames, [tuple(s) for s in segs]

    def frame(self, pfn):
        """Frame ``pfn``'s 4 KiB as bytes, or None when the dump does not hold it."""
        if self.store is not None:
            return self.store.frame(pfn)
        if not self.segments:
            n = self.frames.size // 512
            return self.frames[pfn * 512:(pfn + 1) * 512].tobytes() if 0 <= pfn < n else None
        i = bisect_right(self.segments, (pfn, 1 << 64, 0)) - 1
        if i < 0 or pfn - self.segments[i][0] >= self.segments[i][1]:
            return None
        row = self.segments[i][2] + pfn - self.segments[i][0]
        return self.frames[row * 512:(row + 1) * 512].tobytes()

    def rows_of(self, pfns):
        """Frame rows (in ``frames``) of the frames ``pfns`` (a numpy array),
        or None when one is not in the dump or the frames live elsewhere."""
        if self.store is not None:
            return None
        pfns = np.asarray(pfns, dtype=np.int64)
        if not self.segments:
            return pfns if not pfns.size or int(pfns.max()) < self.frames.size // 512 else None
        seg = np.array(self.segments, dtype=np.int64).reshape(-1, 3)
        i = np.searchsorted(seg[:, 0], pfns, side="right") - 1
        if (i < 0).any():
            return None
        off = pfns - seg[i, 0]
        if (off >= seg[i, 1]).any():
            return None
        return seg[i, 2] + off

    def read_phys(self, pa, size, fill=None):
        """``size`` bytes of physical memory from ``pa``; a frame the dump does
        not hold raises ``AbsentError`` naming it, or reads as ``fill`` (a
        byte value) when given."""
        out = bytearray()
        while size > 0:
            n = min(size, PAGE_SIZE - pa % PAGE_SIZE)
            data = self.frame(pa >> PAGE_SHIFT)
            if data is None:
                if fill is None:
                    raise AbsentError(f"{self.path}: physical address {pa:#x} is not in the dump", pa)
                out += bytes([fill]) * n
            else:
                out += data[pa % PAGE_SIZE:pa % PAGE_SIZE + n]
            pa += n
            size -= n
        return bytes(out)

    def kernel_root(self):
        """(cr3, levels) of the kernel's own tables (swapper_pg_dir) as the
        dump's VMCOREINFO names them, or None without it."""
        return vmci.kernel_root(self.vmcoreinfo, getattr(self.store, "phys_base", None))

    def find_roots(self, progress=None):
        """Every page-table root in the image, found by scanning its frames
        (no CR3 needed): a list of ``roots.Root``, kernel first."""
        from .roots import find_roots
        return find_roots(self, progress)

    def __repr__(self):
        held = self.frames.size // 512 if self.store is None else sum(n for _, n in self.store.present())
        return f"<PhysImage {self.kind} {self.path} frames={held}>"


class ImageMM(AddressSpace):
    """The tables of a physical-memory image seen as a (kernel) mm: no VMAs,
    read only; walk it with ``walk_page_range_novma``."""

    _LAZY_SLABS = True              # the pool's own slab holds an unused table: not zeroed up front

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
        halves = self._halves(start, end)
        try:                            # ops of an earlier call (any mm): buffers already faulted in
            op, ops = _FREE_OPS.pop()
        except IndexError:
            op = _image.MappingsOp()
            # pte_range: the pmd_entry reads each PTE table in one loop
            ops = MMWalkOps(pud_entry=op.pud_entry, pmd_entry=op.pte_range)
        op.reset()
        try:
            with self.mmap_read_lock():
                rc = walk_page_range_novma_each(self, halves, ops)     # one walk set-up for both
                if rc:
                    raise OSError(-rc, f"walk of {[(hex(lo), hex(hi)) for lo, hi in halves]} failed")
            maps, other = op.result()
        finally:
            if len(_FREE_OPS) < FREE_OPS and op.buffer_bytes <= FREE_OPS_BYTES:
                _FREE_OPS.append((op, ops))
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

    translate1 = _image.translate1

    def read(self, va, size, fill=None):
        """``size`` bytes of virtual memory from ``va``, through the tables.  An
        unmapped page, or one whose frame the dump lacks, raises
        ``AbsentError`` naming the address, unless ``fill`` (a byte value)
        is given: then its bytes read as ``fill``."""
        if isinstance(va, int) and isinstance(size, int) and 0 <= va and 0 < size <= 1 << 30 \
                and va + size - 1 <= U64_MASK:
            data = self._read_runs(va, size)
            if data is not None:
                return data
        return self.read_many([va], size, fill)[0].tobytes()

    def _read_runs(self, va, size):
        """One contiguous read, copied run by run (pages contiguous in the
        file too) from the image's mapped frames in one C call; None when a
        page is unmapped or absent, or the image keeps its frames elsewhere
        (the slow path)."""
        img = self.image
        if img.store is not None:
            return None
        first = va & ~(PAGE_SIZE - 1)
        npages = (va + size - first + PAGE_SIZE - 1) >> PAGE_SHIFT
        pas = self.translate(np.arange(npages, dtype=np.uint64) * np.uint64(PAGE_SIZE) + np.uint64(first))
        if int(pas.min()) < 0:
            return None
        rows = img.rows_of(pas >> PAGE_SHIFT)
        if rows is None:
            return None
        brk = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate(([0], brk))
        ends = np.concatenate((brk, [npages]))
        offsets = rows[starts].astype(np.uint64) * np.uint64(PAGE_SIZE)
        lengths = (ends - starts).astype(np.uint64) * np.uint64(PAGE_SIZE)
        skip = va - first                      # the first run starts inside its page ...
        offsets[0] += np.uint64(skip)
        lengths[0] -= np.uint64(skip)
        lengths[-1] -= np.uint64(npages * PAGE_SIZE - skip - size)   # ... the last ends inside its page
        return _image.copy_runs(img.frames, offsets, lengths)

    def read_many(self, vas, size, fill=None):
        """``size`` bytes from each of ``vas``, as a (len(vas), size) uint8
        array: one translation of every page touched, each frame read once."""
        vas = np.ascontiguousarray(vas, dtype=np.uint64).ravel()
        if not isinstance(size, int) or size < 0 or size > 1 << 30:
            raise ValueError(f"size must be an int from 0 to 1 GiB: {size!r}")
        if fill is not None and not 0 <= fill <= 255:
            raise ValueError(f"fill must be a byte value: {fill!r}")
        out = np.empty((vas.size, size), dtype=np.uint8)
        if not vas.size or not size:
            return out
        if int(vas.max()) + size - 1 > U64_MASK:
            raise ValueError("a read runs past the top of the address space")
        first = vas & ~np.uint64(PAGE_SIZE - 1)
        npages = (vas - first + np.uint64(size + PAGE_SIZE - 1)) >> np.uint64(PAGE_SHIFT)
        pages = np.unique(np.concatenate([first + np.uint64(k * PAGE_SIZE)
                                          for k in range(int(npages.max()))]))
        pas = self.translate(pages)
        where = dict(zip(pages.tolist(), pas.tolist()))
        frames = {}
        for r, va in enumerate(vas.tolist()):
            pos = 0
            while pos < size:
                a = va + pos
                n = min(size - pos, PAGE_SIZE - a % PAGE_SIZE)
                pa = where[a - a % PAGE_SIZE]
                data = None
                if pa >= 0:
                    pfn = pa >> PAGE_SHIFT
                    if pfn not in frames:
                        frames[pfn] = self.image.frame(pfn)
                    data = frames[pfn]
                if data is None:
                    if fill is None:
                        what = "not mapped" if pa < 0 else f"mapped to {pa:#x}, which is not in the dump"
                        raise AbsentError(f"{self.image.path}: virtual address {a:#x} is {what}", a)
                    out[r, pos:pos + n] = fill
                else:
                    out[r, pos:pos + n] = np.frombuffer(data, dtype=np.uint8, count=n, offset=a % PAGE_SIZE)
                pos += n
        return out

    def root_report(self):
        """What the root table holds: (non-zero entries, entries a walk can
        follow: not bad and naming a frame in the image).  A root with
        entries of which none can be followed is garbage (not a CR3)."""
        data = self.image.frame(self.root_pfn)
        e = np.frombuffer(data, dtype="<u8")
        nonzero = good = 0
        for v in e[e != 0].tolist():
            nonzero += 1
            bad = pgd_bad(v, 5) if self.levels == 5 else p4d_bad(v)
            if not bad and self.image.frame((v & PTE_PFN_MASK) >> PAGE_SHIFT) is not None:
                good += 1
        return nonzero, good
