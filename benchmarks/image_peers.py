"""pgwalk against other page-table walkers on one image (benchmarks/images.py --peers).

Peers: Volatility 3 (Intel32e: translate and mapping()), drgn (follow_phys
on an ELF core with a synthetic VMCOREINFO; prog.read), MemProcFS
(virt2phys, maps.pte() on the raw image with -dtb) and LibVMI
(pagetable_lookup; reported as unavailable when it cannot run).  Every
peer answers for the same image, root and addresses, and its answers are
checked against pgwalk's before it is timed.  ``fixed_cost`` times pgwalk's
open, mm() and first mappings() on a tiny image."""

import statistics
import struct
import time

import numpy as np

import pgwalk

START_KERNEL_MAP = 0xFFFFFFFF80000000
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


def libvmi_reason(raw, cr3):
    """LibVMI's pagetable_lookup, or why it cannot run here."""
    try:
        from libvmi import Libvmi, VMIMode
    except ImportError:
        return None, "not installed (pip install libvmi needs the LibVMI C library, not packaged by Debian)"
    except Exception as e:  # the C library missing
        return None, f"cannot load: {e}"
    try:
        v = Libvmi(str(raw), mode=VMIMode.FILE, partial=True)
        v.pagetable_lookup(cr3, 0)
    except Exception as e:
        return None, (f"file mode has no vCPU registers, so no paging mode: pagetable_lookup fails "
                      f"({type(e).__name__} {e})")
    return v, None


VA48 = (1 << 48) - 1


def check(notes, tag, what, got, want):
    """Answers equal to pgwalk's: asserted on the synthetic image; on a real
    dump the differences are counted (each peer's own rules, docs/images.md)."""
    bad = sum(g != w for g, w in zip(got, want))
    if tag == "synthetic":
        assert not bad, f"{what} disagrees with pgwalk on {bad} addresses"
    notes[f"{tag} {what} check"] = f"{len(want) - bad:,} of {len(want):,} addresses equal"


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

    def fresh():
        t = time.perf_counter()
        pgwalk.PhysImage.open(raw).mm(cr3, levels).mappings()
        return time.perf_counter() - t
    ts = [fresh() for _ in range(max(samples, 3))]
    res[f"{tag} pgwalk mappings() fresh dump"] = (statistics.median(ts), min(ts), len(maps))
    res[f"{tag} pgwalk mappings() cached"] = (*timed(mm.mappings, samples), len(maps))
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

        def fresh():
            v, _ = memprocfs_vmm(raw, cr3, levels)
            t = time.perf_counter()
            v.process(1).maps.pte()
            t = time.perf_counter() - t
            v.close()
            return t
        ts = [fresh() for _ in range(3)]
        res[f"{tag} MemProcFS maps.pte() fresh"] = (statistics.median(ts), min(ts), len(maps))

    _, why = libvmi_reason(raw, cr3)
    if why:
        notes[f"{tag} LibVMI"] = why

    if read_size:
        res[f"{tag} pgwalk mm.read {read_size >> 20} MiB"] = (
            *timed(lambda: mm.read(read_va, read_size), samples), read_size)
    res[f"{tag} pgwalk find_roots"] = (*timed(lambda: mm.image.find_roots(), 1), 1)
    notes[f"{tag} roots"] = ("Volatility 3, drgn, MemProcFS: no root finding without OS symbols "
                             "(a DTB or swapper_pg_dir must be given)")
    return mm
