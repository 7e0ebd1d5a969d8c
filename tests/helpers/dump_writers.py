"""Writers of small synthetic dumps in every format pgwalk reads (raw, ELF
core with VMCOREINFO, LiME, AVML's compressed ranges, kdump-compressed with
each compression, makedumpfile's flattened stream), all from one synthetic
physical memory:
the tables of ``image_gen.make_vol_image`` (4-level; for 5 levels a PGD in
frame 0 over them) and patterned data frames that its leaves point at.
Written from the layouts alone; tests/image/test_formats.py reads them."""

import random
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from helpers.image_gen import make_vol_image

PAGE = 4096
PFN_MASK = ((1 << 52) - 1) & ~0xFFF
TABLE = 0x67
PHYS = 1 << 30                                   # 1 GiB of physical address space


@dataclass
class Memory:
    """Physical memory: the frames held (pfn -> 4 KiB), the root, the paging mode."""
    pages: dict
    root: int
    levels: int
    size: int = PHYS
    data: list = field(default_factory=list)     # the patterned data frames

    def runs(self):
        """Sorted (first pfn, frames) runs of held frames."""
        out = []
        for pfn in sorted(self.pages):
            if out and out[-1][0] + out[-1][1] == pfn:
                out[-1][1] += 1
            else:
                out.append([pfn, 1])
        return [tuple(r) for r in out]


def phys_memory(seed, levels=4, ndata=24, size=PHYS):
    """A Memory of make_vol_image's tables (frames 1-79; 5-level: a PGD in
    frame 0 linking to them twice, plus one bad entry) and ``ndata`` data
    frames that present entries point at, each filled with its pfn and a
    seed-dependent pattern."""
    img, root, _ = make_vol_image(seed, nframes=80, phys_gib=1)
    pages = {}
    for pfn in range(80):
        f = img[pfn * 512:(pfn + 1) * 512]
        if f.any():
            pages[pfn] = f.tobytes()
    if levels == 5:
        pgd = np.zeros(512, dtype=np.uint64)
        pgd[0] = (root << 12) | TABLE
        pgd[511] = (root << 12) | TABLE
        pgd[300] = 0x1E3 | (5 << 12)                # PS in a PGD entry: bad
        pages[0] = pgd.tobytes()
        root = 0
    vals = img[(img & 1) != 0]
    pfns = sorted({int(p) for p in ((vals & PFN_MASK) >> 12) if 80 <= p < size // PAGE})
    rng = random.Random(seed)
    data = sorted(rng.sample(pfns, min(ndata, len(pfns))))
    for pfn in data:
        body = bytes(rng.randrange(256) for _ in range(64)) * (PAGE // 64)
        pages[pfn] = pfn.to_bytes(8, "little") + body[8:]
    if data:                                      # one all-zero data frame (kdump shares its data)
        pages[data[0]] = bytes(PAGE)
    return Memory(pages, root, levels, size, data)


def write_raw(path, mem):
    """A sparse raw image: file offset = physical address."""
    with open(path, "wb") as f:
        for pfn, body in mem.pages.items():
            f.seek(pfn * PAGE)
            f.write(body)
        f.truncate(mem.size)


def vmcoreinfo_text(mem, phys_base=0):
    """A VMCOREINFO naming mem's root as swapper_pg_dir (with phys_base)."""
    sym = 0xFFFFFFFF80000000 + mem.root * PAGE - phys_base
    return (f"OSRELEASE=6.18.0-test\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)={sym:x}\n"
            f"NUMBER(phys_base)={phys_base}\nKERNELOFFSET=1e000000\n"
            f"NUMBER(pgtable_l5_enabled)={int(mem.levels == 5)}\n").encode()


def _note(name, ntype, desc):
    name = name + b"\0"
    pad = lambda b: b + bytes(-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def write_elf(path, mem, vmcoreinfo=None, data_off=0x1000):
    """An ELF core: one PT_LOAD per run of held frames, a PT_NOTE with the
    VMCOREINFO note when given."""
    runs = mem.runs()
    notes = _note(b"VMCOREINFO", 0, vmcoreinfo) if vmcoreinfo else b""
    phnum = len(runs) + bool(notes)
    head = 64 + 56 * phnum
    note_off = head
    body_off = max(data_off, (note_off + len(notes) + PAGE - 1) // PAGE * PAGE)
    ph = b""
    if notes:
        ph += struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 4)
    body = b""
    for first, n in runs:
        ph += struct.pack("<IIQQQQQQ", 1, 4, body_off + len(body), 0, first * PAGE, n * PAGE, n * PAGE, PAGE)
        body += b"".join(mem.pages[p] for p in range(first, first + n))
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    with open(path, "wb") as f:
        f.write((ehdr + ph + notes).ljust(body_off, b"\0") + body)


def lime_bytes(mem, ranges=None):
    """A LiME file: a 32-byte header (magic, version 1, first and last byte,
    reserved) per range; ``ranges`` = [(first byte, last byte)] (default:
    the runs of held frames), their bytes taken from mem (zeros elsewhere)."""
    if ranges is None:
        ranges = [(a * PAGE, (a + n) * PAGE - 1) for a, n in mem.runs()]
    out = bytearray()
    for start, last in ranges:
        out += struct.pack("<IIQQ8s", 0x4C694D45, 1, start, last, bytes(8))
        pa = start
        while pa <= last:
            n = min(last + 1 - pa, PAGE - pa % PAGE)
            page = mem.pages.get(pa // PAGE, bytes(PAGE))
            out += page[pa % PAGE:pa % PAGE + n]
            pa += n
    return bytes(out)


def write_lime(path, mem, ranges=None):
    with open(path, "wb") as f:
        f.write(lime_bytes(mem, ranges))


AVML_BLOCK = 16 << 20                # AVML cuts ranges into blocks of this size
SNAPPY_ID = b"\xff\x06\x00\x00sNaPpY"  # the framing format's stream identifier chunk


def snappy_chunks(data, piece=1 << 16, stored=False):
    """``data`` as snappy framing-format chunks (no stream identifier), one
    per ``piece`` bytes: compressed ones made by cramjam (the Rust snap
    crate's frame encoder, the one AVML writes with), or stored ones
    (type 1) carrying the checksum cramjam computed for the same bytes."""
    import cramjam
    out = bytearray()
    for i in range(0, len(data), piece):
        chunk = bytes(cramjam.snappy.compress(data[i:i + piece]))[len(SNAPPY_ID):]
        if stored:
            crc = chunk[4:8]
            chunk = bytes([1]) + (4 + len(data[i:i + piece])).to_bytes(3, "little") + crc + data[i:i + piece]
        out += chunk
    return bytes(out)


def avml_block(start, data, stream=None):
    """One AVML range: header (magic AVML, version 2, first and last byte,
    zero), a framed stream of ``data`` (default: cramjam's), its length."""
    if stream is None:
        import cramjam
        stream = bytes(cramjam.snappy.compress(data))
    return (struct.pack("<IIQQQ", 0x4C4D5641, 2, start, start + len(data) - 1, 0) + stream
            + struct.pack("<Q", len(stream)))


def avml_bytes(mem, ranges=None, block=AVML_BLOCK, skip_zero=True):
    """An AVML compressed dump of mem's ``ranges`` [(first byte, last byte)]
    (default: the runs of held frames) as AVML writes one: each range cut
    into ``block``-byte blocks, an all-zero block left out when
    ``skip_zero``."""
    if ranges is None:
        ranges = [(a * PAGE, (a + n) * PAGE - 1) for a, n in mem.runs()]
    out = bytearray()
    for start, last in ranges:
        for lo in range(start, last + 1, block):
            hi = min(last + 1, lo + block)
            data = b"".join(mem.pages.get(p, bytes(PAGE)) for p in range(lo // PAGE, (hi + PAGE - 1) // PAGE))
            data = data[lo % PAGE:lo % PAGE + hi - lo]
            if skip_zero and not any(data):
                continue
            out += avml_block(lo, data)
    return bytes(out)


def compressor(name):
    """A function compressing one page with ``name`` as makedumpfile does
    (raw streams: zlib's, LZO1X's, snappy's raw format, a zstd frame), or
    None when its library is not installed."""
    if name == "zlib":
        return zlib.compress
    try:
        if name == "lzo":
            import lzallright
            c = lzallright.LZOCompressor()
            return c.compress
        if name == "snappy":
            import cramjam
            return lambda b: bytes(cramjam.snappy.compress_raw(b))
        if name == "zstd":
            import zstandard
            return zstandard.ZstdCompressor().compress
    except ImportError:
        return None
    raise ValueError(name)


FLAG = {None: 0, "zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20}
DESC = struct.Struct("<qIIQ")


def kdump_bytes(mem, compression=None, version=6, vmcoreinfo=None, excluded=(), status=0,
                phys_base=0x2000000, edit=None):
    """A kdump-compressed dump of mem: header, sub-header (``version``'s
    fields), 1st bitmap = held + ``excluded`` frames, 2nd bitmap = held
    frames, one descriptor per held frame, then the page data (compressed
    when that is smaller, all-zero frames sharing one copy).  ``edit(parts)``
    may change the parts (dict of bytearrays/lists) before they are joined."""
    comp = compressor(compression) if compression else None
    if compression and comp is None:
        raise RuntimeError(f"{compression} is not installed")
    max_mapnr = mem.size // PAGE
    bitmap_bytes = (max_mapnr + 7) // 8
    bitmap_blocks = 2 * ((bitmap_bytes + PAGE - 1) // PAGE)
    b1 = bytearray(bitmap_blocks * PAGE // 2)
    b2 = bytearray(len(b1))
    held = sorted(mem.pages)
    for pfn in held:
        b1[pfn // 8] |= 1 << pfn % 8
        b2[pfn // 8] |= 1 << pfn % 8
    for pfn in excluded:
        b1[pfn // 8] |= 1 << pfn % 8
    desc_off = (2 + bitmap_blocks) * PAGE
    data_off = desc_off + len(held) * DESC.size
    descs, data = [], bytearray()
    zero_at = None
    for pfn in held:
        page = mem.pages[pfn]
        if page == bytes(PAGE) and zero_at is not None:
            descs.append(list(descs[zero_at]))
            continue
        body, flags = page, 0
        if comp is not None:
            c = comp(page)
            if len(c) < PAGE:
                body, flags = c, FLAG[compression]
        if page == bytes(PAGE):
            zero_at = len(descs)
        descs.append([data_off + len(data), len(body), flags, 0])
        data += body
    header = bytearray(464)
    header[:8] = b"KDUMP   "
    struct.pack_into("<i", header, 8, version)
    header[12 + 2 * 65:12 + 2 * 65 + 13] = b"6.18.0-test\0\0"
    struct.pack_into("<IiiII", header, 424, status | 8, PAGE, 1, bitmap_blocks,
                     max_mapnr if max_mapnr < 1 << 32 else 0)
    vmci = vmcoreinfo or b""
    sub = bytearray(104)
    vi_off = data_off + len(data)
    struct.pack_into("<QiiQQQQQQQQQQQ", sub, 0, phys_base, 31, 0, 0, max_mapnr,
                     vi_off if vmci else 0, len(vmci), 0, 0, 0, 0, 0, max_mapnr, max_mapnr)
    if version < 6:
        sub[80:104] = bytes(24)
    if version < 3:
        sub[32:] = bytes(len(sub) - 32)
    parts = {"header": header, "sub": sub, "b1": b1, "b2": b2, "descs": descs, "data": data, "vmcoreinfo": vmci}
    if edit:
        edit(parts)
    out = bytearray(parts["header"]).ljust(PAGE, b"\0") + bytearray(parts["sub"]).ljust(PAGE, b"\0")
    out += parts["b1"] + parts["b2"]
    out += b"".join(DESC.pack(*d) for d in parts["descs"])
    out += parts["data"] + parts["vmcoreinfo"]
    return bytes(out)


def flat_bytes(dump, seed=0, chunk=(1, 9000), skip_zero=True):
    """makedumpfile's flattened stream of ``dump``: a 4 KiB start header
    ("makedumpfile", type 1, version 1, big-endian), the bytes as records
    (big-endian offset, size, data) of random sizes in shuffled order
    (all-zero ones left out when ``skip_zero``: the rebuilt file's holes),
    then the end marker."""
    rng = random.Random(seed)
    recs, pos = [], 0
    while pos < len(dump):
        n = min(rng.randint(*chunk), len(dump) - pos)
        piece = dump[pos:pos + n]
        if not (skip_zero and not any(piece) and pos + n < len(dump)):
            recs.append((pos, piece))
        pos += n
    rng.shuffle(recs)
    out = bytearray(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(PAGE, b"\0")
    for off, piece in recs:
        out += struct.pack(">qq", off, len(piece)) + piece
    out += struct.pack(">qq", -1, -1)
    return bytes(out)


GAP_FRAME = 20                                   # broken_links_memory's frame that is never held


def broken_links_memory(levels=4, size=64 << 20):
    """A small Memory whose tables hold, at every level, one present link
    to a frame past the end of physical memory (in no format's image), and
    one PUD link to a frame that is not held (a hole of ELF/LiME, a frame a
    kdump leaves out; a raw image reads it as zeros): (mem, beyond, gap)
    with ``beyond`` the virtual addresses of the first kind of entry (the
    start of the range each covers) and ``gap`` those of the second; plus a
    4K, a 2M and a 1G leaf that map.  Frames: PGD 1 (5-level: PGD 9 over
    P4Ds 1 and 8), user PUD 2, PMD 3, PTE 4, data 5, kernel PUD 6, PMD 7."""
    out = size // PAGE + 100                      # past the end of memory
    hole = GAP_FRAME                              # inside it, never held
    t = {f: np.zeros(512, dtype=np.uint64) for f in (1, 2, 3, 4, 6, 7)}
    link = lambda f: (f << 12) | TABLE
    half = 47 if levels == 4 else 56
    top = 39                                      # what a 4-level PGD / 5-level P4D slot covers
    t[1][0], t[1][1], t[1][511] = link(2), link(out), link(6)
    t[2][0], t[2][1], t[2][2], t[2][3] = link(3), link(out + 1), (1 << 30) | 0xE3, link(hole)
    t[3][0], t[3][1], t[3][2] = link(4), link(out + 2), (3 << 21) | 0xE3
    t[4][0] = (5 << 12) | 0x63
    t[6][510] = link(7)
    t[7][0], t[7][5] = link(out + 3), (4 << 21) | 0xE3
    canon = lambda va: va | (((1 << 64) - 1) & ~((1 << (half + 1)) - 1)) if va >> half & 1 else va
    k = 511 << top                                 # the kernel end under P4D/PGD slot 511
    beyond = [1 << top, (1 << 30), (1 << 21), k | (510 << 30)]
    gap = [3 << 30]
    pages = {f: v.tobytes() for f, v in t.items()}
    pages[5] = bytes(range(256)) * 16
    root = 1
    if levels == 5:
        p4d_k = np.zeros(512, dtype=np.uint64)
        p4d_k[511] = link(6)
        t[1][511] = 0
        pgd = np.zeros(512, dtype=np.uint64)
        pgd[0], pgd[1], pgd[511] = link(1), link(out + 4), link(8)
        pages.update({1: t[1].tobytes(), 8: p4d_k.tobytes(), 9: pgd.tobytes()})
        root = 9
        k = (511 << 48) | (511 << 39)
        beyond = [1 << top, 1 << 30, 1 << 21, k | (510 << 30), 1 << 48]
    beyond = sorted(canon(va) for va in beyond)
    return Memory(pages, root, levels, size, [5]), beyond, [canon(va) for va in gap]


def write_dump(kind, path, mem, vmcoreinfo=None, excluded=()):
    """Write mem as ``kind``: raw, elf, lime, avml, kdump-<compression> or
    flat-<compression> (compression ``none`` for raw pages); kdump's
    ``excluded`` frames are in its 1st bitmap only.  Raises RuntimeError
    when the compression's library is not installed."""
    if kind == "raw":
        write_raw(path, mem)
    elif kind == "elf":
        write_elf(path, mem, vmcoreinfo)
    elif kind == "lime":
        write_lime(path, mem)
    elif kind == "avml":                       # every held frame kept, zero ones too: the raw image's
        with open(path, "wb") as f:
            f.write(avml_bytes(mem, skip_zero=False))
    else:
        comp = kind.split("-", 1)[1]
        dump = kdump_bytes(mem, None if comp == "none" else comp, vmcoreinfo=vmcoreinfo, excluded=excluded)
        with open(path, "wb") as f:
            f.write(flat_bytes(dump, seed=len(dump)) if kind.startswith("flat") else dump)
    return path
