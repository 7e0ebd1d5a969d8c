"""Page-table roots found in an image without a CR3: ``find_roots(img)``.

How a Linux x86-64 root is recognised (arch/x86/mm/pgtable.c, pti.c,
include/asm/pgtable.h), from one pass over the frames (``_roots.Scanner``):

* a candidate top-level table has entry 511 present (the kernel image is
  mapped there) and every entry zero or a table link ``pgd_bad`` accepts,
  into the image;
* its paging mode comes from where the kernel image's PMD table of 2M leaves
  (0xffffffff80000000, PUD slot 510) is: pgd[511] -> [510] (4 levels) or
  pgd[511] -> [511] -> [510] (5 levels);
* every process PGD's kernel half is a copy of init_mm's (``pgd_ctor`` ->
  ``clone_pgd_range``, from ``pgd_index(PAGE_OFFSET)`` on), the LDT slot
  apart (``map_ldt_struct``), so the most common kernel half is init_mm's;
* with PTI a PGD is an order-1 allocation, the user copy in the odd frame
  (``kernel_to_user_pgdp``): same user half less NX, a kernel half of its own;
* init_top_pgt is the PGD with that kernel half and an empty user half that
  lies inside the kernel image, as its own tables map it (the Linux
  counterpart of the self-referencing entry other systems have);
* a PGD with that kernel half and an empty user half elsewhere is a freed one
  (``free_pgtables`` cleared it at exit); one whose user half links to frames
  that no longer read as tables is freed too; one whose user half links to
  the kernel's own tables is an identity map of boot (the real-mode
  trampoline's); one in the kernel image with another kernel half is a
  boot-time table (early_top_pgt).

VMCOREINFO (ELF notes, the kdump sub-header), when present, is used as a
cross-check and as the kernel root when the scan finds none.

A raw image or an ELF core is scanned in place.  A LiME, AVML or kdump dump
(read a frame at a time) is read in chunks of its held frames (LiME:
straight from its ranges; AVML: a chunk's snappy chunks decompressed in one
call; kdump: descriptors a chunk at a time, pages decompressed)
for the candidates, their links checked against the bitmap of held frames;
their paging modes are found in batches over the few frames each reads;
then the frames the classification reads for those with one (theirs, the
tables their user halves and entry 511 link, the kernel image's tables
below) are gathered into one array and scanned as an ELF core's segments
would be: the same roots as the raw image of the same memory.
"""

import struct
from dataclasses import dataclass, field

import numpy as np

from ..constants import PAGE_SHIFT, PTE_PFN_MASK as PFN_MASK, START_KERNEL_MAP
from . import _roots
from .formats.errors import ImageError

STORE_CHUNK = 1 << 13             # frames of a LiME/AVML/kdump dump read (and decompressed) at a time: 32 MiB
MAX_GATHER = 1 << 18              # frames gathered for the classification at most (1 GiB)
MODE_BATCH = 1 << 11              # candidates whose paging mode is found at a time (a few frames each)
MAX_BITMAP = 1 << 30              # bytes of a LiME/AVML dump's held-frame bitmap: 32 TiB of physical addresses

NX = np.uint64(1 << 63)
LDT_SLOT = {4: 512 - 240, 5: 512 - 112}       # LDT_PGD_ENTRY_L4 / _L5
KINDS = ("kernel", "process", "stale", "boot")


@dataclass(frozen=True)
class Root:
    """A page-table root: physical address of the top table, paging levels,
    kind ("kernel", "process", "stale", "boot"), the PTI user PGD paired with
    it (or None) and the evidence it was classified on."""
    pgd: int
    levels: int
    kind: str
    user_pgd: int | None = None
    evidence: dict = field(default_factory=dict, compare=False, hash=False)

    def summary(self):
        """One line: pgd, levels, kind, user pgd, evidence."""
        user = f"{self.user_pgd:#x}" if self.user_pgd is not None else "-"
        ev = "; ".join(f"{k}={v}" for k, v in self.evidence.items())
        return f"{self.pgd:#014x} {self.levels} {self.kind:<7} {user:>14} {ev}"


def vmcoreinfo(img):
    """The VMCOREINFO of an ELF image's note or a kdump dump's sub-header
    as a dict (empty without one)."""
    if img.kind != "elf":
        return dict(getattr(img, "vmcoreinfo", None) or {})
    try:
        with open(img.path, "rb") as f:
            ehdr = f.read(64)
            phoff, = struct.unpack_from("<Q", ehdr, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", ehdr, 0x36)
            f.seek(phoff)
            raw = f.read(phnum * phentsize)
            for i in range(phnum):
                p_type, _fl, off, _va, _pa, filesz, _m = struct.unpack_from("<IIQQQQQ", raw, i * phentsize)
                if p_type != 4 or filesz > 1 << 20:        # PT_NOTE
                    continue
                f.seek(off)
                notes = f.read(filesz)
                pos = 0
                while pos + 12 <= len(notes):
                    namesz, descsz, _t = struct.unpack_from("<III", notes, pos)
                    name = notes[pos + 12:pos + 12 + namesz].rstrip(b"\0")
                    dpos = pos + 12 + (namesz + 3) // 4 * 4
                    desc = notes[dpos:dpos + descsz]
                    pos = dpos + (descsz + 3) // 4 * 4
                    if name == b"VMCOREINFO":
                        return dict(ln.split("=", 1) for ln in desc.decode(errors="replace").splitlines()
                                    if "=" in ln)
    except (OSError, struct.error):
        return {}
    return {}


def _vmcore_kernel(info):
    """(pgd, levels) of init_top_pgt from VMCOREINFO, or None."""
    sym = info.get("SYMBOL(init_top_pgt)")
    if sym is None:
        return None
    try:
        pa = int(sym, 16) - START_KERNEL_MAP + int(info.get("NUMBER(phys_base)", "0"))
        levels = 5 if info.get("NUMBER(pgtable_l5_enabled)", "0").strip() == "1" else 4
    except ValueError:
        return None
    return pa, levels


def _segments(img):
    if not img.segments:
        n = img.frames.size // 512
        return np.zeros((0, 3), dtype=np.int64), n
    segs = np.array(img.segments, dtype=np.int64).reshape(-1, 3)
    return segs, int((segs[:, 0] + segs[:, 1]).max())


def scan(img, progress=None, chunk=1 << 16):
    """The candidate top-level tables of ``img`` (one C pass; ``progress(done,
    total)`` after each ``chunk`` frames): (scanner, dict of arrays)."""
    if getattr(img, "store", None) is not None:
        return _scan_store(img, progress, min(chunk, STORE_CHUNK))
    segs, max_pfn = _segments(img)
    sc = _roots.Scanner(img.frames, segs, max_pfn)
    while sc.step(chunk):
        if progress:
            progress(sc.done, sc.total)
    if progress:
        progress(sc.done, sc.total)
    return sc, sc.result()


def _present_bits(img, runs, max_pfn):
    """A bit per frame below ``max_pfn`` (uint8, little-endian bit order,
    a spare byte at the end): the frames ``img``'s store holds.  A dump
    whose ranges lie higher than ``MAX_BITMAP`` bytes of bits reach is an
    ImageError, not an unbounded allocation."""
    out_bytes = (max_pfn + 7) // 8 + 1
    if out_bytes > MAX_BITMAP:
        raise ImageError(f"{img.path}: it holds frames up to physical address {max_pfn << PAGE_SHIFT:#x}; "
                         f"find_roots reads dumps whose frames lie below "
                         f"{(MAX_BITMAP * 8) << PAGE_SHIFT:#x}")
    out = np.zeros(out_bytes, dtype=np.uint8)
    if hasattr(img.store, "present_bits"):
        bits = img.store.present_bits()
        n = min(out.size, bits.size)
        out[:n] = bits[:n]
        return out
    for a, n in runs:                                   # bits a to b - 1
        b = a + n - 1
        first, last = a >> 3, b >> 3
        head, tail = (0xFF << (a & 7)) & 0xFF, 0xFF >> (7 - (b & 7))
        if first == last:
            out[first] |= head & tail
        else:
            out[first] |= head
            out[first + 1:last] = 0xFF
            out[last] |= tail
    return out


def _scan_store(img, progress, chunk):
    """``scan`` of a dump read a frame at a time (LiME, AVML, kdump): its held
    frames in chunks of ``chunk`` for the candidates (their frame numbers
    kept, not their frames); their paging modes in batches of MODE_BATCH,
    each over the few frames it reads, gathered; then, for the candidates
    with one (and the odd frames after them), the frames the classification
    reads gathered into one array for a Scanner over them."""
    store = img.store
    runs = store.present()
    max_pfn = max((a + n for a, n in runs), default=0)
    bits = _present_bits(img, runs, max_pfn)
    total = sum(n for _, n in runs)
    cands, done = [], 0
    for a, n in runs:
        for lo in range(a, a + n, chunk):
            m = min(chunk, a + n - lo)
            words = np.frombuffer(store.read_frames(lo, m), dtype="<u8")
            cands.extend((lo + _roots.candidates(words, bits, max_pfn)).tolist())
            done += m
            if progress:
                progress(done, total)

    def held(p):
        return p < max_pfn and (bits[p >> 3] >> (p & 7)) & 1

    def gatherer():
        got = {}

        def fetch(pfns):
            """The frames ``pfns`` that the dump holds, added to ``got``."""
            out = []
            for p in sorted(set(pfns)):
                if p not in got:
                    data = store.frame(p) if held(p) else None
                    if data is None:
                        continue
                    got[p] = np.frombuffer(data, dtype="<u8")
                    if len(got) > MAX_GATHER:
                        raise ImageError(f"{img.path}: find_roots would gather more than {MAX_GATHER} "
                                         f"frames of this {img.format} dump (garbage tables?)")
                out.append(got[p])
            return out
        return got, fetch

    def links(frames, slots):
        if not frames:
            return []
        e = np.stack(frames)[:, slots].ravel()
        e = e[(e & np.uint64(1)) != 0]
        return ((e & np.uint64(PFN_MASK)) >> np.uint64(12)).tolist()

    def scanner(got, pfns):
        order = sorted(got)
        words = np.empty(max(len(order), 1) * 512, dtype=np.uint64)
        segs = []
        for row, p in enumerate(order):
            words[row * 512:(row + 1) * 512] = got[p]
            if segs and segs[-1][0] + segs[-1][1] == p:
                segs[-1][1] += 1
            else:
                segs.append([p, 1, row])
        sc = _roots.Scanner(words, np.array(segs, dtype=np.int64).reshape(-1, 3), max_pfn, bits)
        sc.keep_pfns(pfns)
        return sc

    def mode_tables(fetch, top):
        a = fetch(links(top, slice(511, 512)))        # pgd[511]'s table: PUD (4) or P4D (5)
        b = fetch(links(a, slice(510, 512)))          # its slots 510/511: the kernel image's PMD, a PUD
        c = fetch(links(b, slice(510, 511)))          # (5 levels: the kernel image's PMD)
        return b, c

    rooted = []                                       # candidates with a paging mode, batch by batch
    for lo in range(0, len(cands), MODE_BATCH):
        batch = cands[lo:lo + MODE_BATCH]
        got, fetch = gatherer()
        mode_tables(fetch, fetch(batch))
        r = scanner(got, batch).result()
        rooted.extend(r["pfn"][r["levels"] != 0].tolist())
    at = set(cands)
    keep = sorted(set(rooted) | {p + 1 for p in rooted if p + 1 in at})
    got, fetch = gatherer()
    top = fetch(keep)
    fetch(links(top, slice(0, 256)))                  # the user halves' tables (is_table)
    b, c = mode_tables(fetch, top)
    fetch(links(b + c, slice(None)))                  # the PTE tables under them (maps_pa)
    sc = scanner(got, keep)
    return sc, sc.result()


def find_roots(img, progress=None):
    """Every page-table root of ``img`` (a ``PhysImage`` of any format),
    kernel first, then by kind and address: a list of ``Root``.  Raw images
    and ELF cores are scanned in place; LiME, AVML and kdump dumps in chunks of
    their held frames (see the module's docstring)."""
    sc, c = scan(img, progress)
    pfns = [int(p) for p in c["pfn"]]
    at = {p: i for i, p in enumerate(pfns)}
    levels = {p: int(lv) for p, lv in zip(pfns, c["levels"])}
    frame = sc.frame

    # tables below a top-level candidate are not roots (in 5-level images the
    # P4D table under pgd[511] has the layout of a 4-level PGD's kernel end)
    below = set()
    for p in pfns:
        if levels[p]:
            f = frame(p)
            below.update(int(v) >> 12 & (PFN_MASK >> 12) for v in f[f != 0])
    # PTI pairs: an even PGD and the next frame with the same user half (less NX)
    user_of = {}
    for p in pfns:
        if p % 2 or not levels[p] or p + 1 not in at or p + 1 in below:
            continue
        a, b = frame(p), frame(p + 1)
        if np.array_equal(a[:256] & ~NX, b[:256] & ~NX) and not np.array_equal(a[256:], b[256:]):
            user_of[p] = p + 1
    users = set(user_of.values())
    tops = [p for p in pfns if levels[p] and p not in users and p not in below]
    if not tops:
        return _fallback(img)

    def khalf(p):
        k = frame(p)[256:].copy()
        k[LDT_SLOT[levels[p]] - 256] = 0
        return k

    in_kimg = {p: bool(sc.maps_pa(int(c["kimg_pmd"][at[p]]), p << 12)) for p in tops}
    ucount = {p: int(c["user"][at[p]]) for p in tops}
    groups = {}
    for p in tops:
        groups.setdefault(int(c["khash"][at[p]]), []).append(p)
    # init_mm's kernel half: the most common; ties go to the one held by a
    # kernel-image PGD with an empty user half
    best = max(groups.values(), key=lambda g: (len(g), any(in_kimg[p] and not ucount[p] for p in g)))
    kref = khalf(best[0])
    knz = kref != 0
    info = vmcoreinfo(img)
    vm = _vmcore_kernel(info)

    roots = []
    kernel = [p for p in best if in_kimg[p] and not ucount[p]]
    if vm and len(kernel) > 1 and (vm[0] >> 12) in kernel:
        kernel = [vm[0] >> 12]
    kernel = kernel[:1]
    for p in tops:
        f = frame(p)
        same = np.array_equal(khalf(p), kref)
        ev = {"kernel_half": f"init_mm's ({len(best)} PGDs)" if same
              else f"{int(((khalf(p) == kref) & knz).sum())}/{int(knz.sum())} of init_mm's"}
        user = f[:256]
        links = {int(v) & PFN_MASK for v in user if v}
        alias = links & {int(v) & PFN_MASK for v in f[256:] if v}
        if p in kernel:
            kind = "kernel"
            ev["in_kernel_image"] = True
            ev["user_half"] = "empty"
        elif alias:
            kind = "boot"
            ev["user_half"] = f"aliases the kernel half's tables ({len(alias)}): an identity map"
        elif not same and in_kimg[p]:
            kind = "boot"
            ev["in_kernel_image"] = True
        elif not same and (int(((khalf(p) == kref) & knz).sum()) < knz.sum() / 2):
            continue                                          # not a copy of this kernel's PGD
        elif not ucount[p]:
            kind = "stale"
            ev["user_half"] = "empty (cleared at exit)"
        else:
            below = 1 if levels[p] == 5 else 2
            bad = [i for i, v in enumerate(user) if v and not sc.is_table((int(v) & PFN_MASK) >> 12, below)]
            if bad:
                kind = "stale"
                ev["user_half"] = f"{len(bad)} of {ucount[p]} links reach frames that are not tables"
            elif not same:
                kind = "stale"
                ev["user_half"] = f"{ucount[p]} entries"
            else:
                kind = "process"
                ev["user_half"] = f"{ucount[p]} entries, tables valid"
        if vm and vm[0] >> 12 == p:
            ev["vmcoreinfo"] = "init_top_pgt"
        up = user_of.get(p)
        if up is not None:
            ev["pti"] = f"user copy at +4K ({int(c['kernel'][at[up]])} kernel-half entries)"
        roots.append(Root(p << 12, levels[p], kind, None if up is None else up << 12, ev))
    if not kernel and vm:
        roots.append(Root(vm[0], vm[1], "kernel", None, {"vmcoreinfo": "init_top_pgt (not found by the scan)"}))
    roots.sort(key=lambda r: (KINDS.index(r.kind), r.pgd))
    return roots


def _fallback(img):
    vm = _vmcore_kernel(vmcoreinfo(img))
    return [Root(vm[0], vm[1], "kernel", None, {"vmcoreinfo": "init_top_pgt (no candidate found)"})] if vm else []


def kernel_root(roots):
    """The kernel root of a ``find_roots`` list, or None."""
    return next((r for r in roots if r.kind == "kernel"), None)
