"""VMCOREINFO: the kernel's ``KEY=VALUE`` lines that name its symbols and
settings (in an ELF note or the kdump sub-header), and what they tell about
the kernel's page tables."""

from ...constants import PTE_PFN_MASK, START_KERNEL_MAP
from .errors import ImageError

MAX_TEXT = 1 << 20                      # a real one is a few KiB


def parse(text):
    """The ``KEY=VALUE`` lines of a VMCOREINFO text as a dict of strings."""
    out = {}
    for line in text.decode("ascii", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            out[key.strip()] = value.strip()
    return out


def parse_notes(path, data, base):
    """The VMCOREINFO of an ELF note area ``data`` (file offset ``base``), or None."""
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, _type = (int.from_bytes(data[pos + k:pos + k + 4], "little") for k in (0, 4, 8))
        name_end = pos + 12 + namesz
        desc = pos + 12 + ((namesz + 3) & ~3)
        end = desc + ((descsz + 3) & ~3)
        if name_end > len(data) or desc + descsz > len(data):
            raise ImageError(f"{path}: ELF note at offset {base + pos:#x} runs past its segment")
        if data[pos + 12:name_end].rstrip(b"\0") == b"VMCOREINFO":
            return parse(data[desc:desc + descsz])
        pos = end
    return None


def _int(info, key, base=16):
    v = info.get(key)
    if v is None:
        return None
    for b in (base, 0):
        try:
            return int(v, b)
        except ValueError:
            pass
    return None


def kernel_root(info, phys_base=None):
    """(cr3, levels) of the kernel's own tables (swapper_pg_dir) named by a
    VMCOREINFO dict, or None: the symbol's address less the kernel map's
    start, plus phys_base (VMCOREINFO's NUMBER(phys_base), else the dump
    header's)."""
    if not info:
        return None
    sym = _int(info, "SYMBOL(swapper_pg_dir)") or _int(info, "SYMBOL(init_top_pgt)")
    if sym is None or sym < START_KERNEL_MAP:
        return None
    pb = _int(info, "NUMBER(phys_base)", 10)
    if pb is None:
        pb = phys_base if phys_base is not None else 0
    levels = 5 if _int(info, "NUMBER(pgtable_l5_enabled)", 10) == 1 else 4
    return (sym - START_KERNEL_MAP + pb) & PTE_PFN_MASK, levels
