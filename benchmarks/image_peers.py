"""pgwalk against other page-table walkers on one image (benchmarks/images.py --peers).

Peers: Volatility 3 (Intel32e: translate and mapping()), drgn (follow_phys
on an ELF core with a synthetic VMCOREINFO; prog.read), MemProcFS
(virt2phys, maps.pte() on the raw image with -dtb) and LibVMI (per-call
page-table lookups and get_va_pages enumeration of the root, in file mode).  Every
peer answers for the same image, root and addresses, and its answers are
checked against pgwalk's before it is timed.  ``fixed_cost`` times pgwalk's
open, mm() and first mappings() on a tiny image."""

import os
import statistics
import struct
import time

import numpy as np

import pgwalk
from pgwalk.constants import START_KERNEL_MAP
from pgwalk.entries import p4d_bad, pgd_bad
from pgwalk.image.physimage import map_frames

_C = pgwalk.constants
PFN = np.uint64(_C.PTE_PFN_MASK)
DIRECT_MAP = 0xFFFF888000000000


def timed(fn, samples):
    """Seconds per call of ``fn``: median and min over ``samples`` calls after a warm-up."""
    fn()
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), min(out)


def _note(name, ntype, desc):
    n = name.encode() + b"\0"
    return struct.pack("<III", len(n), len(desc), ntype) + n + bytes(-len(n) % 4) + desc + bytes(-len(desc) % 4)


def vmcoreinfo(cr3, levels, osrelease="6.13.0"):
    """A VMCOREINFO that makes drgn walk from ``cr3``: swapper_pg_dir at the
    start of the kernel map and phys_base = cr3 (drgn reads that root
    physically); decimal NUMBERs, hex SYMBOLs, as the kernel writes them."""
    return (f"OSRELEASE={osrelease}\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)={START_KERNEL_MAP:x}\n"
            f"NUMBER(phys_base)={cr3}\nKERNELOFFSET=0\nNUMBER(pgtable_l5_enabled)={int(levels == 5)}\n")


def write_elf_core(path, frames, size, info):
    """An x86-64 ELF core: one PT_LOAD of ``size`` bytes of physical memory
    from address 0 (``frames`` first, the rest sparse) and a VMCOREINFO note."""
    nt = _note("VMCOREINFO", 0, info.encode())
    ph = 64 + 56 * 2
    off = 4096
    hdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    hdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, 2, 0, 0, 0)
    hdr += struct.pack("<IIQQQQQQ", 4, 0, ph, 0, 0, len(nt), len(nt), 4)
    hdr += struct.pack("<IIQQQQQQ", 1, 7, off, DIRECT_MAP, 0, size, size, 4096)
    hdr += nt
    assert len(hdr) <= off
    with open(path, "wb") as f:
        f.write(hdr)
        f.seek(off)
        f.write(frames.tobytes())
        f.truncate(off + size)


# --- the peers: each returns (name, object) or (name, reason it cannot run) ---------------------

def volatility(raw, cr3, levels):
    if levels != 4:
        return None, "no 5-level (LA57) layer"
    try:
        from volatility3.framework import contexts
        from volatility3.framework.layers import intel, physical
    except ImportError:
        return None, "not installed (pip install volatility3)"
    ctx = contexts.Context()
    ctx.config["peer.phys.location"] = raw.resolve().as_uri()
    ctx.layers.add_layer(physical.FileLayer(ctx, "peer.phys", "phys"))
    ctx.config["peer.virt.memory_layer"] = "phys"
    ctx.config["peer.virt.page_map_offset"] = cr3
    layer = intel.Intel32e(ctx, "peer.virt", "virt")
    ctx.layers.add_layer(layer)
    return layer, None


def drgn_program(elf):
    try:
        import drgn
    except ImportError:
        return None, "not installed (pip install drgn)"
    prog = drgn.Program()
    prog.set_core_dump(str(elf))
    return prog, None


def memprocfs_vmm(raw, cr3, levels):
    if levels != 4:
        return None, "no 5-level paging"
    try:
        import memprocfs
    except ImportError:
        return None, "not installed (pip install memprocfs; needs libusb-1.0-0)"
    except OSError as e:
        return None, f"cannot load: {e}"
    vmm = memprocfs.Vmm(["-device", str(raw), "-dtb", hex(cr3), "-arch", "x64"])
    return vmm, None


# --- LibVMI ------------------------------------------------------------------------------------

KERNEL_HALF = (1 << 64) - (1 << 47)      # the first canonical kernel-half address


def _libvmi():
    """The libvmi package, or the reason it cannot be used."""
    try:
        import libvmi
    except ImportError:
        return None, "not installed (pip install libvmi: the wheel bundles the LibVMI C library)"
    except Exception as e:  # the C library missing or not loadable
        return None, f"cannot load: {e}"
    return libvmi, None


def write_system_map(path, root, va, pa):
    """A System.map that makes LibVMI's Linux file-mode init take IA-32e
    paging with ``root`` as the kernel's top table: no swapper_pg_dir,
    startup_64 = ``va`` and phys_startup_64 = ``pa`` (a kernel-half leaf of
    ``root``, so boundary = va - pa), init_level4_pgt = root + boundary (so
    its physical address, init_level4_pgt - boundary, is ``root``) and
    init_task = ``va`` (a mapped address for the KASLR probe)."""
    boundary = va - pa
    with open(path, "w") as f:
        for a, name in ((pa, "phys_startup_64"), (va, "startup_64"), (root + boundary, "init_level4_pgt"),
                        (va, "init_task")):
            f.write(f"{a:016x} T {name}\n")


def libvmi_os_init(raw, root, maps, mapfile):
    """LibVMI opened as its users open a Linux dump: vmi_init_complete in file
    mode with a Linux OS config whose System.map is ``write_system_map``'s.
    Returns (Libvmi, None) or (None, why it failed and how long it took)."""
    lv, why = _libvmi()
    if lv is None:
        return None, why
    kern = maps[(maps["va"] >= KERNEL_HALF) & (maps["pa"] < maps["va"])]
    if not len(kern):
        return None, "the root maps no kernel-half address"
    write_system_map(mapfile, root, int(kern["va"][0]), int(kern["pa"][0]))
    t = time.perf_counter()
    try:
        v = lv.Libvmi(str(raw), config_mode=lv.VMIConfig.DICT,
                      config={"ostype": "Linux", "sysmap": str(mapfile)})
    except Exception as e:
        return None, (f"vmi_init_complete with a synthetic System.map fails ({type(e).__name__} {e}) after "
                      f"{time.perf_counter() - t:.1f} s")
    return v, None


class LibvmiPT:
    """LibVMI in file mode (vmi_init, no OS) walking one root with the page
    mode given per call: vmi_nested_pagetable_lookup and
    vmi_get_nested_va_pages with no nested table (npt 0, VMI_PM_UNKNOWN) and
    VMI_PM_IA32E.  These are LibVMI's public C calls; the Python binding does
    not declare them, so they are declared here with cffi on the library the
    binding loaded.  ``os_vmi``: a Libvmi whose OS init succeeded, then its
    own vmi_pagetable_lookup and vmi_get_va_pages are used."""

    def __init__(self, raw, root, os_vmi=None):
        import cffi
        lv, _ = _libvmi()
        import libvmi.libvmi as binding
        self._b = binding
        self.root = root
        self.vmi = os_vmi or lv.Libvmi(str(raw), mode=lv.VMIMode.FILE, partial=True)
        self.mode = lv.PageMode.IA32E.value
        self.none = lv.PageMode.UNKNOWN.value
        self.ffi = cffi.FFI()
        self.ffi.cdef("int vmi_nested_pagetable_lookup(void *, uint64_t, int, uint64_t, int, uint64_t, "
                      "uint64_t *, uint64_t *);\n"
                      "void *vmi_get_nested_va_pages(void *, uint64_t, int, uint64_t, int);")
        self.lib = self.ffi.dlopen(self._library_path(binding))
        self.handle = self.ffi.cast("void *", binding.ffi.cast("uintptr_t", self.vmi.vmi))
        self.out = self.ffi.new("uint64_t *")
        self.with_os = os_vmi is not None
        self.what = ("pagetable_lookup (binding, after OS init)" if self.with_os
                     else "vmi_nested_pagetable_lookup (IA-32e given)")

    @staticmethod
    def _library_path(binding):
        """The LibVMI shared object the binding's extension module links."""
        import ctypes.util
        import glob
        import os
        here = os.path.dirname(os.path.dirname(binding.__file__))
        found = sorted(glob.glob(os.path.join(here, "libvmi.libs", "libvmi-*.so*")))
        return found[0] if found else (ctypes.util.find_library("vmi") or "libvmi.so.0")

    def lookup(self, va):
        """The physical address of ``va`` under the root, or -1."""
        if self.with_os:
            try:
                return self.vmi.pagetable_lookup(self.root, va)
            except Exception:
                return -1
        ok = self.lib.vmi_nested_pagetable_lookup(self.handle, 0, self.none, self.root, self.mode, va,
                                                  self.out, self.ffi.NULL)
        return -1 if ok else self.out[0]

    def va_pages(self):
        """Every page LibVMI enumerates under the root: [(va, pa, size)]."""
        b = self._b
        if self.with_os:      # the binding's own vmi_get_va_pages (its PageInfo wants a dtb field page_info_t lacks)
            lst = b.lib.vmi_get_va_pages(self.vmi.vmi, self.root)
        else:
            head = self.lib.vmi_get_nested_va_pages(self.handle, 0, self.none, self.root, self.mode)
            lst = b.ffi.cast("GSList *", self.ffi.cast("uintptr_t", head))
        out, node = [], lst
        while node:
            pi = b.ffi.cast("page_info_t *", node.data)
            out.append((pi.vaddr, pi.paddr, pi.size))
            b.lib.g_free(node.data)
            node = node.next
        b.lib.g_slist_free(lst)
        return out

    def close(self):
        if self.vmi is not None:
            self.vmi.destroy()
        self.vmi = None


def libvmi_peer(raw, root, levels):
    """LibVMI walking ``root`` in ``raw``, or why it cannot run here."""
    if levels != 4:
        return None, "no 5-level paging mode"
    lv, why = _libvmi()
    if lv is None:
        return None, why
    try:
        return LibvmiPT(raw, root), None
    except Exception as e:
        return None, f"cannot open the image in file mode ({type(e).__name__} {e})"


VA48 = (1 << 48) - 1


def check(notes, tag, what, got, want):
    """Answers equal to pgwalk's: asserted on the synthetic image; on a real
    dump the differences are counted (each peer's own rules, docs/images.md)."""
    bad = sum(g != w for g, w in zip(got, want))
    if tag == "synthetic":
        assert not bad, f"{what} disagrees with pgwalk on {bad} addresses"
    notes[f"{tag} {what} check"] = f"{len(want) - bad:,} of {len(want):,} addresses equal"


def table_frames(raw, root, levels):
    """The frame of every table a whole-space walk of ``root`` reads, once per
    visit: the root, then each present entry that links a table (the upper
    levels' links as the walker checks them, ``pgd_bad``/``p4d_bad``; PS
    clear in a PUD or PMD table), inside the file.  For the floor row:
    copying these is the least any walker that reads every table can cost."""
    tables = np.memmap(raw, dtype="<u8", mode="r", shape=(os.path.getsize(raw) // 4096, 512))
    frames, level = [root >> 12], [root >> 12]
    for depth in range(levels - 1):
        e = tables[np.asarray(level, dtype=np.int64)].ravel()
        if depth < levels - 3:                      # a PGD, or a 5-level P4D table
            bad = pgd_bad if depth == 0 and levels == 5 else p4d_bad
            link = np.fromiter((bool(v & 1) and not bad(v) for v in e.tolist()), dtype=bool, count=e.size)
        else:
            link = ((e & 1) != 0) & ((e & np.uint64(_C._PAGE_PSE)) == 0)
        level = ((e[link] & PFN) >> 12).astype(np.int64)
        level = level[level < tables.shape[0]].tolist()
        frames += level
    return np.asarray(frames, dtype=np.int64)


def fresh_rows(res, names, open_, enumerate_, close, samples, units):
    """The whole-space enumeration of a freshly opened dump, the same way
    for every side: ``names`` are the rows of open + first enumeration,
    first enumeration alone, and first enumeration with every result held
    (as a user holds it: its memory is new, not the last result's, which
    the other rows reuse).  ``close(handle)`` after each, when given."""
    def once(kept):
        t0 = time.perf_counter()
        h = open_()
        t1 = time.perf_counter()
        got = enumerate_(h)
        t2 = time.perf_counter()
        if close is not None:
            close(h)
        if kept is not None:
            kept.append(got)
        return t2 - t0, t2 - t1
    dropped = [once(None) for _ in range(samples)]
    kept = []
    held = [once(kept)[1] for _ in range(samples)]
    for name, ts in zip(names, ([t for t, _ in dropped], [t for _, t in dropped], held)):
        res[name] = (statistics.median(ts), min(ts), units)


def per_call(fn, vas):
    out = []
    for va in vas:
        try:
            out.append(fn(va))
        except Exception:
            out.append(-1)
    return out


def fixed_cost(d, n=500):
    """pgwalk's fixed cost on a tiny raw image (a root, three tables, four
    4K leaves): open, mm() and the first mappings() of each of ``n`` fresh
    dumps, each dropped outside the timed part.  Returns {part: (median s,
    min s)}: "open", "mm()", "first mappings()" and their sum "fixed cost"."""
    path = d / "tiny.raw"
    img = np.zeros(8 * 512, dtype=np.uint64)
    img[512], img[1024], img[1536] = (2 << 12) | 0x67, (3 << 12) | 0x67, (4 << 12) | 0x67
    img[2048:2052] = ((np.arange(4, dtype=np.uint64) + 5) << 12) | 0x63
    img.tofile(path)
    parts = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        image = pgwalk.PhysImage.open(path)
        t1 = time.perf_counter()
        mm = image.mm(1 << 12)
        t2 = time.perf_counter()
        assert len(mm.mappings()) == 4
        t3 = time.perf_counter()
        parts.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
        del mm, image
    parts = parts[1:]                  # the first: the free list of MappingsOps is empty
    return {name: (statistics.median(p[i] for p in parts), min(p[i] for p in parts))
            for i, name in enumerate(("open", "mm()", "first mappings()", "fixed cost"))}


_OS_INIT = {}


def libvmi_rows(res, notes, tag, raw, cr3, levels, maps, few, wf, samples):
    """LibVMI's rows: per-call lookups and whole-space enumeration of ``cr3``,
    checked against pgwalk's answers (``wf`` for ``few``, ``maps``).  Its
    Linux OS init (``libvmi_os_init``) is tried on the synthetic image; when
    it works its own pagetable_lookup/get_va_pages are timed, otherwise the
    page-mode-given C calls on a file-mode instance without OS init."""
    import tempfile
    lib, why = libvmi_peer(raw, cr3, levels)
    if lib is None:
        notes[f"{tag} LibVMI"] = why
        return
    os_vmi = None
    if tag == "synthetic" or _OS_INIT.get("synthetic"):
        with tempfile.TemporaryDirectory() as d:
            os_vmi, why = libvmi_os_init(raw, cr3, maps, f"{d}/System.map")
        _OS_INIT[tag] = os_vmi is not None
        notes[f"{tag} LibVMI OS init"] = why or "vmi_init_complete with a synthetic System.map: IA-32e, kpgd set"
    else:
        notes[f"{tag} LibVMI OS init"] = ("not tried (it failed on the synthetic image)" if "synthetic" in _OS_INIT
                                          else "not tried (tried on the synthetic image only: when it fails, "
                                          "its brute-force search costs tens of seconds per GiB)")
    if os_vmi is not None:
        lib.close()
        lib = LibvmiPT(raw, cr3, os_vmi)
    check(notes, tag, f"LibVMI {lib.what}", per_call(lib.lookup, few), wf)
    res[f"{tag} LibVMI {lib.what} per call"] = (*timed(lambda: per_call(lib.lookup, few), samples), len(few))
    got = sorted(lib.va_pages())
    want = sorted(zip(maps["va"].tolist(), maps["pa"].tolist(), maps["size"].tolist()))
    same = len(set(got) & set(want))
    if tag == "synthetic":
        assert got == want, f"LibVMI get_va_pages disagrees with pgwalk: {same:,} of {len(want):,} leaves equal"
    notes[f"{tag} LibVMI get_va_pages check"] = (f"{same:,} of {len(want):,} leaves (va, pa, size) equal; "
                                                 f"LibVMI lists {len(got):,}")
    res[f"{tag} LibVMI get_va_pages() warm"] = (*timed(lib.va_pages, samples), len(maps))
    lib.close()

    def fresh():
        v, _ = libvmi_peer(raw, cr3, levels)
        t = time.perf_counter()
        v.va_pages()
        t = time.perf_counter() - t
        v.close()
        return t
    ts = [fresh() for _ in range(3)]
    res[f"{tag} LibVMI get_va_pages() fresh (file-mode instance)"] = (statistics.median(ts), min(ts), len(maps))


def run(res, notes, tag, raw, elf, cr3, levels, vas, samples, read_va=None, read_size=0,
        drgn_pgtable=None):
    """Every row for one image: ``res[key] = (median s, min s, units)``."""
    vas = np.asarray(vas, dtype=np.uint64)
    few = vas[:20000].tolist()
    t0 = time.perf_counter()
    mm = pgwalk.PhysImage.open(raw).mm(cr3, levels)
    maps = mm.mappings()
    notes[f"{tag} pgwalk first mappings() in the process (open, mm, walk)"] = (
        f"{(time.perf_counter() - t0) * 1e3:.2f} ms")
    fresh_rows(res, [f"{tag} pgwalk {row}" for row in (
        "open + mm() + first mappings()", "first mappings() of a fresh dump",
        "first mappings() of a fresh dump, results kept")],
        lambda: pgwalk.PhysImage.open(raw).mm(cr3, levels), lambda m: m.mappings(), None,
        max(samples, 5), len(maps))
    res[f"{tag} pgwalk mappings() cached"] = (*timed(mm.mappings, samples), len(maps))
    frames = table_frames(raw, cr3, levels)
    tables = np.memmap(raw, dtype="<u8", mode="r", shape=(os.path.getsize(raw) // 4096, 512))
    res[f"{tag} floor: copy the {len(frames)} tables walked (numpy)"] = (
        *timed(lambda: tables[frames], samples), len(maps))

    def fresh_tables():                 # mapped as PhysImage.open maps a raw file (no np.memmap set-up)
        t = time.perf_counter()
        fd = os.open(raw, os.O_RDONLY)
        fresh = map_frames(fd, 0, tables.shape[0]).reshape(tables.shape)
        os.close(fd)
        fresh[frames]
        return time.perf_counter() - t
    ts = [fresh_tables() for _ in range(max(samples, 5))]
    res[f"{tag} floor: map the file, copy the tables walked"] = (statistics.median(ts), min(ts), len(maps))
    want = mm.translate(vas)
    res[f"{tag} pgwalk translate() batched"] = (*timed(lambda: mm.translate(vas), samples), vas.size)
    t1 = mm.translate1
    assert [t1(v) for v in few] == want[:len(few)].tolist()
    res[f"{tag} pgwalk translate1() per call"] = (*timed(lambda: [t1(v) for v in few], samples), len(few))
    wf = want[:len(few)].tolist()

    layer, why = volatility(raw, cr3, levels)
    if layer is None:
        notes[f"{tag} Volatility 3"] = why
    else:
        def vt(va):
            return layer.translate(va & VA48)[0]        # Volatility's addresses are not canonical
        check(notes, tag, "Volatility 3 translate", per_call(vt, few[:2000]), wf[:2000])
        n = min(len(few), 5000)
        res[f"{tag} Volatility 3 translate() per call"] = (*timed(lambda: per_call(vt, few[:n]), 3), n)

        def vmap():
            lay, _ = volatility(raw, cr3, levels)
            return list(lay.mapping(0, 1 << 48, ignore_errors=True))
        got = vmap()
        pages = sum(s for _, s, _, _, _ in got) >> 12
        res[f"{tag} Volatility 3 mapping() fresh layer"] = (*timed(vmap, 1), len(maps))
        notes[f"{tag} Volatility 3 mapping()"] = f"{pages:,} pages (pgwalk {int(maps['size'].sum()) >> 12:,})"

    prog, why = drgn_program(elf) if elf is not None else (None, "no ELF core of this image")
    if prog is None:
        notes[f"{tag} drgn"] = why
    else:
        from _drgn import _linux_helper_follow_phys as follow
        pgt = START_KERNEL_MAP if drgn_pgtable is None else drgn_pgtable

        def dt(va):
            return follow(prog, pgt, va)
        check(notes, tag, "drgn follow_phys", per_call(dt, few), wf)
        res[f"{tag} drgn follow_phys per call"] = (*timed(lambda: per_call(dt, few), samples), len(few))
        notes[f"{tag} drgn enumeration"] = "no page-table enumeration API"
        if read_size:
            assert prog.read(read_va, read_size) == mm.read(read_va, read_size), "drgn read disagrees"
            res[f"{tag} drgn prog.read {read_size >> 20} MiB"] = (
                *timed(lambda: prog.read(read_va, read_size), samples), read_size)

    vmm, why = memprocfs_vmm(raw, cr3, levels)
    if vmm is None:
        notes[f"{tag} MemProcFS"] = why
    else:
        mem = vmm.process(1).memory
        check(notes, tag, "MemProcFS virt2phys", per_call(mem.virt2phys, few), wf)
        res[f"{tag} MemProcFS virt2phys per call"] = (*timed(lambda: per_call(mem.virt2phys, few), samples),
                                                      len(few))
        pte = vmm.process(1).maps.pte()
        mp = sum(e["pages"] for e in pte)
        notes[f"{tag} MemProcFS maps.pte()"] = f"{mp:,} pages in {len(pte):,} ranges"
        vmm.close()

        fresh_rows(res, [f"{tag} MemProcFS {row}" for row in (
            "Vmm start + maps.pte()", "maps.pte() fresh", "maps.pte() fresh, results kept")],
            lambda: memprocfs_vmm(raw, cr3, levels)[0], lambda v: v.process(1).maps.pte(),
            lambda v: v.close(), max(samples, 5), len(maps))
        v, _ = memprocfs_vmm(raw, cr3, levels)
        v.process(1).maps.pte()
        res[f"{tag} MemProcFS maps.pte() warm"] = (*timed(lambda: v.process(1).maps.pte(), samples), len(maps))
        v.close()

    libvmi_rows(res, notes, tag, raw, cr3, levels, maps, few, wf, samples)

    if read_size:
        res[f"{tag} pgwalk mm.read {read_size >> 20} MiB"] = (
            *timed(lambda: mm.read(read_va, read_size), samples), read_size)
    res[f"{tag} pgwalk find_roots"] = (*timed(lambda: mm.image.find_roots(), 1), 1)
    notes[f"{tag} roots"] = ("Volatility 3, drgn, MemProcFS, LibVMI: cannot find roots without OS symbols "
                             "(a DTB or swapper_pg_dir must be given; LibVMI's own kernel-root search "
                             "needs a System.map and the init_task it names)")
    return mm
