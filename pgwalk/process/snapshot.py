"""Snapshots: model mms that mirror real address spaces, and their file form.

* ``from_process(cls, pid)``: the VMAs of a live process (/proc/PID/smaps:
  bounds, offsets, ``VmFlags``) and its page state (/proc/PID/pagemap, read
  per VMA in chunks): present pages, swap entries and guard markers; huge
  PMD leaves where a THP is PMD-mapped (below).
* ``from_image(cls, img, root)``: the user half of a memory image's tables
  (``ImageMM.mappings``), one VMA per maximal run of mapped pages.
* ``save(mm, file)`` / ``load(cls, file)``: an NPZ of the VMAs and every
  leaf entry that round-trips exactly.

A snapshot has no physical-page bookkeeping behind it (map counts, folio
flags), so its group is marked inexact and ``validate()`` checks structure
only.  A live process keeps running while it is read: the snapshot is
what each read saw, not one instant.
"""

import errno
import os
import time

import numpy as np

from .. import constants as C
from ..constants import PAGE_SHIFT, PAGE_SIZE, PMD, PMD_SIZE, PTE, PUD, PUD_SIZE
from ..entries import (
    make_pte_marker, pmd_leaf, pmd_present, pud_leaf, pud_present, swp_entry,
    swp_entry_to_pte,
)
from ..walker import MMWalkOps, VMA, batch, walk_page_range_novma
from ..constants import PM_GUARD_REGION, PM_PFN_MASK, PM_PRESENT, PM_SWAP
from .introspect import VMFLAG_NAMES
from .objects import pte_prot, rw_bits

NR = 512                                 # pages of a PMD
CHUNK = 1 << 18                          # pagemap words per read (2 MiB of words, 1 GiB of VA)
KPF_COMPOUND_HEAD = 1 << 15              # include/uapi/linux/kernel-page-flags.h
KPF_COMPOUND_TAIL = 1 << 16
KPF_THP = 1 << 22
GUARD_PTE = make_pte_marker(C.PTE_MARKER_GUARD)
FLAG_BITS = {name: bit for bit, name in VMFLAG_NAMES}
PERM_BITS = {"r": C.VM_READ, "w": C.VM_WRITE, "x": C.VM_EXEC, "s": C.VM_SHARED}
# the most PFNs the model's per-PFN map is grown to cover (5 bytes each)
PHYS_COVER_LIMIT = 1 << 26
FORMAT = 1


# --- /proc readers ------------------------------------------------------------

def _proc_error(e, pid, path):
    """The clear error for a failed /proc read: the pid is gone, or the file is not readable."""
    if isinstance(e, FileNotFoundError) or e.errno == errno.ESRCH:
        return ProcessLookupError(errno.ESRCH, f"no process with pid {pid}")
    if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM):
        return PermissionError(e.errno, f"cannot read {path} (pid {pid}): permission denied", path)
    return e


def read_smaps(pid):
    """The VMAs of /proc/PID/smaps as dicts: start, end, perms, offset, name,
    flags (VM_* from VmFlags, else from the permissions) and the kB fields."""
    path = f"/proc/{pid}/smaps"
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        if not os.path.exists(f"/proc/{pid}"):
            raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}") from None
        raise _proc_error(e, pid, path) from None
    vmas = []
    cur = None
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and ":" not in head:
            lo, hi = head.split("-")
            parts = rest.split(None, 4)
            cur = {"start": int(lo, 16), "end": int(hi, 16), "perms": parts[0],
                   "offset": int(parts[1], 16), "name": parts[4].strip() if len(parts) > 4 else "",
                   "flags": None}
            vmas.append(cur)
        elif head == "VmFlags:":
            cur["flags"] = sum(FLAG_BITS.get(n, 0) for n in rest.split())
            cur["vmflags"] = rest.split()
        elif head.endswith(":") and cur is not None:
            v = rest.split()
            if v and v[0].isdigit():
                cur[head[:-1]] = int(v[0])
    for v in vmas:
        if v["flags"] is None:        # no VmFlags line: what the permissions say
            v["flags"] = sum(b for ch, b in PERM_BITS.items() if ch in v["perms"])
    return vmas


def _pread_all(fd, n, off):
    out = bytearray()
    while len(out) < n:
        b = os.pread(fd, n - len(out), off + len(out))
        if not b:
            break
        out += b
    return bytes(out)


def read_pagemap(fd, start, end):
    """Dense pagemap words of [start, end) from an open pagemap ``fd``
    (zeros past a short read)."""
    n = (end - start) >> PAGE_SHIFT
    raw = _pread_all(fd, n * 8, (start >> PAGE_SHIFT) * 8)
    w = np.zeros(n, dtype=np.uint64)
    got = np.frombuffer(raw, dtype=np.uint64)
    w[:got.size] = got
    return w


class _KPageFlags:
    """/proc/kpageflags, if readable (root): 512 flag words per THP check."""

    def __init__(self):
        try:
            self.fd = os.open("/proc/kpageflags", os.O_RDONLY)
        except OSError:
            self.fd = None

    def is_pmd_thp(self, head_pfn):
        """The 512 pages from ``head_pfn`` are one order-9 THP: the head has
        THP and COMPOUND_HEAD, the other 511 COMPOUND_TAIL."""
        raw = _pread_all(self.fd, NR * 8, head_pfn * 8)
        if len(raw) < NR * 8:
            return False
        f = np.frombuffer(raw, dtype=np.uint64)
        return bool(int(f[0]) & (KPF_THP | KPF_COMPOUND_HEAD) == KPF_THP | KPF_COMPOUND_HEAD
                    and np.all(f[1:] & np.uint64(KPF_COMPOUND_TAIL)))

    def close(self):
        """Close /proc/kpageflags if it was opened."""
        if self.fd is not None:
            os.close(self.fd)


# --- building a model from leaf arrays ------------------------------------------

def fill_leaves(mm, addr, level, value):
    """Write leaf entries into ``mm``'s tables: PTE values one numpy store
    per PTE table, huge leaves one by one (tables allocated on the way)."""
    addr = np.asarray(addr, dtype=np.uint64)
    level = np.asarray(level)
    value = np.asarray(value, dtype=np.uint64)
    pte = level == PTE
    a, v = addr[pte], value[pte]
    if a.size:
        order = np.argsort(a, kind="stable")
        a, v = a[order], v[order]
        blocks = a >> np.uint64(21)
        cuts = np.flatnonzero(np.diff(blocks)) + 1
        bounds = np.concatenate(([0], cuts, [a.size]))
        idx = ((a >> np.uint64(PAGE_SHIFT)) & np.uint64(NR - 1)).astype(np.intp)
        for i in range(bounds.size - 1):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            tid, _ = mm.locate(int(a[lo]), PTE, True)
            mm.table(tid)[idx[lo:hi]] = v[lo:hi]
    for i in np.flatnonzero(~pte):
        tid, j = mm.locate(int(addr[i]), int(level[i]), True)
        mm.table(tid)[j] = value[i]


def leaves(mm, start=0, end=None):
    """Every non-none leaf entry of ``mm`` in [start, end) (default: the user
    half): (addr uint64, level int8, value uint64) arrays in address order.
    A huge or non-present PMD/PUD entry is a leaf; PTE slots come one numpy
    batch per table."""
    if end is None:
        end = 1 << (47 if mm.levels == 4 else 56)
    parts = []
    huge = []

    def ptes(entries, addr, nxt, walk):
        nz = np.flatnonzero(entries)
        if nz.size:
            parts.append((np.uint64(addr) + nz.astype(np.uint64) * np.uint64(PAGE_SIZE),
                          entries[nz].copy()))
        return 0

    def upper(is_leaf, present, level):
        def cb(entry, addr, nxt, walk):
            v = int(entry)
            if is_leaf(v) or not present(v):
                huge.append((addr, level, v))
                walk.action = C.ACTION_CONTINUE
            return 0
        return cb

    ops = MMWalkOps(pud_entry=upper(pud_leaf, pud_present, PUD),
                    pmd_entry=upper(pmd_leaf, pmd_present, PMD), pte_entry=batch(ptes))
    with mm.mmap_write_lock():
        rc = walk_page_range_novma(mm, start, end, ops)
    if rc:
        raise OSError(-rc, "walk of the snapshot's tables failed")
    addrs = [p[0] for p in parts] + [np.array([h[0] for h in huge], dtype=np.uint64)]
    vals = [p[1] for p in parts] + [np.array([h[2] for h in huge], dtype=np.uint64)]
    lvls = [np.full(p[0].size, PTE, dtype=np.int8) for p in parts] + \
        [np.array([h[1] for h in huge], dtype=np.int8)]
    a = np.concatenate(addrs)
    order = np.argsort(a, kind="stable")
    return a[order], np.concatenate(lvls)[order], np.concatenate(vals)[order]


def _cover_phys(mm, pfns):
    """Grow the model's per-PFN map past the highest PFN a leaf names (so
    that later syscalls on the snapshot index it in bounds, and fresh pages
    get new PFNs), when that is at most PHYS_COVER_LIMIT PFNs."""
    if pfns.size == 0:
        return True
    top = int(pfns.max())
    if top >= PHYS_COVER_LIMIT:
        return False
    if top >= mm.phys.next_pfn:
        mm.alloc_pfn(top + 1 - mm.phys.next_pfn)
    return True


def _new_mm(cls, levels, vmas, why):
    """An empty model mm of ``cls`` with ``vmas`` [(start, end, flags, pgoff,
    hugepage_size)] and its group marked inexact for ``why``."""
    mm = cls(levels)
    mm.mark_inexact(why)
    for start, end, flags, pgoff, hps in vmas:
        v = VMA(int(start), int(end), int(flags), vm_mm=mm, hugepage_size=int(hps))
        v.vm_pgoff = int(pgoff)
        mm.insert_vma(v)
    return mm


def _leaf_pfns(level, value):
    """The last PFN each present (or PROT_NONE) leaf maps."""
    present = (value & np.uint64(C._PAGE_PRESENT | C._PAGE_PROTNONE)) != 0
    pfn = (value[present] & np.uint64(C.PTE_PFN_MASK)) >> np.uint64(PAGE_SHIFT)
    span = np.where(level[present] == PTE, 1, np.where(level[present] == PMD, NR, NR * NR))
    return pfn + span.astype(np.uint64) - np.uint64(1)


def _rebase_synthetic(mm, parts):
    """Give each VMA's synthetic PFNs (relative to its first 2 MiB block)
    a block of the model's own physical memory, when all of them fit under
    PHYS_COVER_LIMIT, else blocks from 2**36 up (outside the model's map)."""
    mask = np.uint64(C._PAGE_PRESENT | C._PAGE_PROTNONE)
    spans = []
    for p in parts:
        rel = np.concatenate([p[1][(p[1] & mask) != 0], p[4]]) >> np.uint64(PAGE_SHIFT)
        rel &= np.uint64(C.PTE_PFN_MASK >> PAGE_SHIFT)
        spans.append((int(rel.min()) & ~(NR - 1), int(rel.max()) + NR) if rel.size else None)
    total = sum(hi - lo for lo, hi in filter(None, spans))
    own = mm.phys.next_pfn + total + NR * len(parts) < PHYS_COVER_LIMIT
    nxt = 1 << 36
    for p, sp in zip(parts, spans):
        if sp is None:
            continue
        lo, hi = sp
        if own:
            base = mm.alloc_pfn(hi - lo, NR)
        else:
            base, nxt = nxt, nxt + (hi - lo)
        delta = np.uint64((base - lo) << PAGE_SHIFT)
        pres = (p[1] & mask) != 0
        p[1] = np.where(pres, p[1] + delta, p[1])
        p[4] = p[4] + delta


# --- from a live process ---------------------------------------------------------

def _vma_leaves(fd, v, kpf, real_pfns, synth):
    """The leaves of one VMA from its pagemap: (PTE addrs, PTE values,
    PMD-leaf addrs, PMD-leaf values, notes)."""
    start, end, flags = v["start"], v["end"], v["flags"]
    prot = pte_prot(flags) | rw_bits(flags)
    hugetlb = bool(flags & C.VM_HUGETLB)
    hsize = v.get("KernelPageSize", 4) << 10 if hugetlb else PMD_SIZE
    pte_a, pte_v, blocks = [], [], []      # blocks: (addr, head pfn, verified)
    huge_leaves = []                       # hugetlb: (addr, level, value)
    notes = []
    span = CHUNK * PAGE_SIZE               # 1 GiB: a multiple of every leaf size
    base = start & ~(PMD_SIZE - 1)
    a = start
    while a < end:
        b = min(end, (a & ~(span - 1)) + span)
        w = read_pagemap(fd, a, b)
        present = (w & np.uint64(PM_PRESENT)) != 0
        pfn = w & np.uint64(PM_PFN_MASK)
        if real_pfns is None and present.any():
            real_pfns = bool(np.any(pfn[present]))
        if not real_pfns and present.any():
            # synthetic: consecutive per VMA, congruent to the address mod 512
            idx = np.arange(w.size, dtype=np.uint64) + np.uint64((a - base) >> PAGE_SHIFT)
            pfn = np.where(present, np.uint64(synth) + idx, pfn)
        keep = np.ones(w.size, dtype=bool)
        # aligned blocks wholly inside the VMA: huge-leaf candidates
        first = -(-a // hsize) * hsize
        nblk = max(0, (b // hsize * hsize - first) // hsize)
        per = hsize >> PAGE_SHIFT
        if (flags & C.VM_HUGETLB or v.get("pmd_kb", 0)) and nblk:
            o = (first - a) >> PAGE_SHIFT
            pb = present[o:o + nblk * per].reshape(nblk, per)
            fb = pfn[o:o + nblk * per].reshape(nblk, per)
            ok = pb.all(axis=1)
            ok &= (fb[:, 0] % np.uint64(per)) == 0
            ok &= (fb - fb[:, :1] == np.arange(per, dtype=np.uint64)).all(axis=1)
            for k in np.flatnonzero(ok):
                head = int(fb[k, 0])
                if hugetlb:
                    lvl = PMD if hsize == PMD_SIZE else PUD
                    huge_leaves.append((first + int(k) * hsize, lvl,
                                        (head << PAGE_SHIFT) | prot | C._PAGE_PSE))
                    keep[o + k * per:o + (k + 1) * per] = False
                else:
                    verified = kpf.fd is not None and real_pfns and kpf.is_pmd_thp(head)
                    blocks.append((first + int(k) * hsize, head, verified, o + k * per, a))
        nz = np.flatnonzero(keep & (w != 0) & ((w & np.uint64(PM_PRESENT | PM_SWAP)) != 0))
        if nz.size:
            ww = w[nz]
            vals = np.zeros(nz.size, dtype=np.uint64)
            pres = (ww & np.uint64(PM_PRESENT)) != 0
            vals[pres] = ((pfn[nz][pres] << np.uint64(PAGE_SHIFT)) & np.uint64(C.PTE_PFN_MASK)) | np.uint64(prot)
            guard = ~pres & ((ww & np.uint64(PM_GUARD_REGION)) != 0)
            vals[guard] = GUARD_PTE
            for i in np.flatnonzero(~pres & ~guard):
                frame = int(ww[i]) & PM_PFN_MASK
                vals[i] = swp_entry_to_pte(swp_entry(frame & 31, frame >> 5))
            pte_a.append(np.uint64(a) + nz.astype(np.uint64) * np.uint64(PAGE_SIZE))
            pte_v.append(vals)
        a = b
    # which candidate blocks are PMD-mapped THPs
    chosen = []
    if blocks:
        want = v.get("pmd_kb", 0) // 2048
        verified = [blk for blk in blocks if blk[2]]
        if kpf.fd is not None and real_pfns:
            chosen = verified[:want] if len(verified) > want else verified
        elif len(blocks) == want:
            chosen = blocks
        else:
            notes.append(f"{start:#x}: {len(blocks)} candidate THP blocks for {want} PMD-mapped; kept as PTEs")
    thp_a = np.array([blk[0] for blk in chosen], dtype=np.uint64)
    thp_v = np.array([(blk[1] << PAGE_SHIFT) | prot | C._PAGE_PSE for blk in chosen], dtype=np.uint64)
    pa = np.concatenate(pte_a) if pte_a else np.zeros(0, np.uint64)
    pv = np.concatenate(pte_v) if pte_v else np.zeros(0, np.uint64)
    if thp_a.size and pa.size:
        drop = np.isin(pa & ~np.uint64(PMD_SIZE - 1), thp_a)
        pa, pv = pa[~drop], pv[~drop]
    ha = np.array([h[0] for h in huge_leaves], dtype=np.uint64)
    hl = np.array([h[1] for h in huge_leaves], dtype=np.int8)
    hv = np.array([h[2] for h in huge_leaves], dtype=np.uint64)
    return (pa, pv, np.concatenate([thp_a, ha]),
            np.concatenate([np.full(thp_a.size, PMD, np.int8), hl]),
            np.concatenate([thp_v, hv]), notes, real_pfns)


def from_process(cls, pid):
    """A model mm of live process ``pid`` now: its VMAs (/proc/PID/smaps),
    present pages, swap entries and guard markers (/proc/PID/pagemap), PFNs
    where pagemap shows them (root) or else consecutive synthetic ones per
    VMA, and PMD leaves for PMD-mapped THPs (README: "Snapshots of real
    processes and images")."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError(f"pid must be a positive int, not {pid!r}")
    t0 = time.perf_counter()
    smaps = read_smaps(pid)
    path = f"/proc/{pid}/pagemap"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise _proc_error(e, pid, path) from None
    top4 = 1 << 47
    user = [v for v in smaps if v["end"] <= (1 << 56)]
    levels = 5 if any(v["end"] > top4 for v in user) else 4
    user = [v for v in user if v["end"] <= (top4 if levels == 4 else 1 << 56)]
    kpf = _KPageFlags()
    parts, notes = [], []
    real_pfns = None
    try:
        for v in user:
            v["pmd_kb"] = v.get("AnonHugePages", 0) + v.get("ShmemPmdMapped", 0) + v.get("FilePmdMapped", 0)
            try:
                r = _vma_leaves(fd, v, kpf, real_pfns, 0)
            except OSError as e:
                raise _proc_error(e, pid, path) from None
            parts.append(list(r[:5]))
            notes += r[5]
            real_pfns = r[6] if r[6] is not None else real_pfns
    finally:
        os.close(fd)
        kpf.close()
    vmas = [(v["start"], v["end"], v["flags"], v["offset"] >> PAGE_SHIFT,
             (v.get("KernelPageSize", 4) << 10) if v["flags"] & C.VM_HUGETLB else PMD_SIZE)
            for v in user]
    mm = _new_mm(cls, levels, vmas, f"snapshot of process {pid}")
    if not real_pfns:
        _rebase_synthetic(mm, parts)
    addr = np.concatenate([p[0] for p in parts] + [p[2] for p in parts]) if parts else np.zeros(0, np.uint64)
    level = np.concatenate([np.full(p[0].size, PTE, np.int8) for p in parts] + [p[3] for p in parts]) \
        if parts else np.zeros(0, np.int8)
    value = np.concatenate([p[1] for p in parts] + [p[4] for p in parts]) if parts else np.zeros(0, np.uint64)
    fill_leaves(mm, addr, level, value)
    covered = _cover_phys(mm, _leaf_pfns(level, value))
    mm.snapshot_info = {
        "source": f"pid {pid}", "names": {v["start"]: v["name"] for v in user if v["name"]},
        "real_pfns": bool(real_pfns), "kpageflags": kpf.fd is not None,
        "thp": int(np.count_nonzero(level == PMD)), "notes": notes,
        "skipped": [(v["start"], v["end"], v["name"]) for v in smaps if v not in user],
        "phys_covered": covered, "seconds": time.perf_counter() - t0,
    }
    return mm


# --- from a memory image ------------------------------------------------------------

def from_image(cls, img, root, levels=None):
    """A model mm of the user half of ``img``'s tables under ``root`` (a CR3
    value, or an object with a ``.pgd`` CR3 and optionally ``.levels``).

    A dump has no VMAs, so the model gets one VMA per maximal run of mapped
    user pages (present leaves, and non-present non-none PTEs: PROT_NONE,
    swap, markers), flags VM_READ plus VM_WRITE / VM_EXEC where any of its
    leaves is writable / executable.  A run of 1 GiB leaves is a VMA of its
    own, VM_HUGETLB with 1 GiB pages: in an ordinary VMA a walk would split
    (clear) such a leaf, as the kernel's split_huge_pud does.  Leaves are
    copied as they are, huge ones kept huge; non-present PMD/PUD entries
    are not copied."""
    cr3 = getattr(root, "pgd", root)
    if levels is None:
        levels = getattr(root, "levels", 4)
    imm = img.mm(cr3, levels)
    half = 1 << (47 if levels == 4 else 56)
    maps, other = imm.mappings(0, half, nonpresent=True)
    other = other[other["level"] == PTE]
    va = np.concatenate([maps["va"], other["va"]])
    size = np.concatenate([maps["size"], np.full(other.size, PAGE_SIZE, np.uint64)])
    level = np.concatenate([maps["level"], other["level"]]).astype(np.int8)
    value = np.concatenate([maps["entry"], other["entry"]])
    order = np.argsort(va, kind="stable")
    va, size, level, value = va[order], size[order], level[order], value[order]
    vmas = []
    if va.size:
        end = va + size
        gig = level == PUD
        brk = np.flatnonzero((va[1:] != end[:-1]) | (gig[1:] != gig[:-1])) + 1
        starts = np.concatenate(([0], brk))
        stops = np.concatenate((brk, [va.size]))
        rw = (value & np.uint64(C._PAGE_RW)) != 0
        ex = (value & np.uint64(C._PAGE_NX)) == 0
        for s, e in zip(starts, stops):
            flags = C.VM_READ | C.VM_MAYREAD | C.VM_MAYWRITE | C.VM_MAYEXEC
            if rw[s:e].any():
                flags |= C.VM_WRITE
            if ex[s:e].any():
                flags |= C.VM_EXEC
            if gig[s]:
                flags |= C.VM_HUGETLB
            lo = int(va[s])
            vmas.append((lo, int(end[e - 1]), flags, lo >> PAGE_SHIFT, PUD_SIZE if gig[s] else PMD_SIZE))
    mm = _new_mm(cls, levels, vmas, "snapshot of a memory image")
    fill_leaves(mm, va, level, value)
    covered = _cover_phys(mm, (maps["pa"] >> np.uint64(PAGE_SHIFT)) + (maps["size"] >> np.uint64(PAGE_SHIFT)) - np.uint64(1)
                          if maps.size else np.zeros(0, np.uint64))
    mm.snapshot_info = {"source": f"image {img.path} cr3 {cr3:#x}", "names": {}, "phys_covered": covered,
                        "thp": int(np.count_nonzero(level == PMD)),       # 2 MiB leaves of the dump
                        "real_pfns": True}                                 # a dump's PFNs are its own
    return mm


# --- the file form -------------------------------------------------------------------

def save(mm, file):
    """Write ``mm`` as an NPZ: levels, the VMAs as arrays (start, end, flags,
    pgoff, hugepage size, name) and every leaf entry as (addr, level, value)."""
    vmas = list(mm.vma_tree)
    names = getattr(mm, "snapshot_info", {}).get("names", {})
    addr, level, value = leaves(mm)
    np.savez_compressed(
        file, format=np.int64(FORMAT), levels=np.int64(mm.levels),
        vma_start=np.array([v.vm_start for v in vmas], np.uint64),
        vma_end=np.array([v.vm_end for v in vmas], np.uint64),
        vma_flags=np.array([v.vm_flags for v in vmas], np.uint64),
        vma_pgoff=np.array([v.vm_pgoff for v in vmas], np.uint64),
        vma_hugepage_size=np.array([v.hugepage_size for v in vmas], np.uint64),
        vma_name=np.array([names.get(v.vm_start, "") for v in vmas], dtype=str),
        leaf_addr=addr, leaf_level=level, leaf_value=value,
        source=np.array(getattr(mm, "snapshot_info", {}).get("source", "")))


def load(cls, file):
    """A model mm from a file ``save`` wrote."""
    with np.load(file, allow_pickle=False) as z:
        if int(z["format"]) != FORMAT:
            raise ValueError(f"{file}: snapshot format {int(z['format'])}, expected {FORMAT}")
        vmas = list(zip(z["vma_start"].tolist(), z["vma_end"].tolist(), z["vma_flags"].tolist(),
                        z["vma_pgoff"].tolist(), z["vma_hugepage_size"].tolist()))
        names = {s: n for s, n in zip(z["vma_start"].tolist(), z["vma_name"].tolist()) if n}
        addr, level, value = z["leaf_addr"], z["leaf_level"], z["leaf_value"]
        mm = _new_mm(cls, int(z["levels"]), vmas, f"snapshot loaded from {file}")
        fill_leaves(mm, addr, level, value)
        covered = _cover_phys(mm, _leaf_pfns(level, value))
        mm.snapshot_info = {"source": str(z["source"]), "names": names, "phys_covered": covered}
    return mm
