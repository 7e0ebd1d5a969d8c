"""Page-table entry predicates and constructors on raw 64-bit values.

Named like the kernel's helpers and defined as on x86-64 (with
CONFIG_PAGE_TABLE_ISOLATION, as distribution kernels build it).  Present
entries use the hardware format; non-present ones use pgwalk's own swap
format, described in ``docs/encodings.md``:

    bit  0      P = 0
    bit  1      swap tag, always 1 (so a swap entry is never "none")
    bits 12..51 offset (a PFN for migration entries, flags for markers)
    bits 52..56 type (include/linux/swap.h numbering; 31 = PTE marker)

Pure Python on purpose: the reference walker and the process model use these,
and ``tests/test_entries.py`` checks the Cython copies against them.
"""

from .constants import (
    _KERNPG_TABLE, _PAGE_ACCESSED, _PAGE_DEVMAP, _PAGE_KNL_ERRATUM_MASK,
    _PAGE_NX, _PAGE_PRESENT, _PAGE_PROTNONE, _PAGE_PSE, _PAGE_SWP_TAG,
    _PAGE_TABLE, _PAGE_USER, PHYSICAL_PMD_PAGE_MASK, PHYSICAL_PUD_PAGE_MASK,
    PTE_FLAGS_MASK, PTE_MARKER_GUARD, PTE_MARKER_MASK, PTE_PFN_MASK,
    MAX_SWAPFILES, SWP_DEVICE_EXCLUSIVE, SWP_DEVICE_READ, SWP_DEVICE_WRITE, SWP_HWPOISON,
    SWP_MIGRATION_READ, SWP_MIGRATION_READ_EXCLUSIVE, SWP_MIGRATION_WRITE,
    SWP_OFFSET_MASK, SWP_PTE_MARKER, SWP_TYPE_SHIFT, PAGE_SHIFT, U64_MASK,
)

_PTI_IGNORE = _PAGE_NX          # p4d_bad/pgd_bad ignore NX under PTI
SWP_ENTRY_TYPE_SHIFT = 58       # type position in an arch-independent swp_entry_t


def _u64(v, name="value"):
    """The check of the constructors' arguments: an int of 0 to 2**64 - 1
    (TypeError or ValueError naming it)."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, not {type(v).__name__}")
    if v < 0 or v > U64_MASK:
        raise ValueError(f"{name} must fit in 64 bits: {v:#x}")
    return v


# --- none / present -------------------------------------------------------
def pte_none(v):
    """True for an empty entry (the kernel's ``pte_none``): zero once the
    accessed and dirty bits are ignored, since a hardware erratum (Knights
    Landing) can set them in an empty entry.  ``pmd_none``, ``pud_none`` and
    ``p4d_none`` are this function: x86 defines them alike."""
    return (v & ~_PAGE_KNL_ERRATUM_MASK) == 0


pmd_none = pud_none = p4d_none = pte_none


def pgd_none(v, levels=5):
    """The kernel's ``pgd_none``: with 5 levels an all-zero entry; with 4
    levels never, since the P4D level is folded into the PGD and its slot is
    read as a P4D."""
    return levels == 5 and v == 0


def pte_present(v):
    """The kernel's ``pte_present``: P set, or PROTNONE (a PROT_NONE page is
    present to the kernel although the hardware faults on it)."""
    return bool(v & (_PAGE_PRESENT | _PAGE_PROTNONE))


def pmd_present(v):
    """The kernel's ``pmd_present``: P, PROTNONE or PSE set, so a huge PMD
    whose P bit is cleared while it is split still counts as present."""
    return bool(v & (_PAGE_PRESENT | _PAGE_PROTNONE | _PAGE_PSE))


def pud_present(v):
    """The kernel's ``pud_present`` (and ``p4d_present``, the same): P set."""
    return bool(v & _PAGE_PRESENT)


p4d_present = pud_present


def pgd_present(v, levels=5):
    """The kernel's ``pgd_present``: always true with 4 levels (the folded
    level), else P set."""
    return levels == 4 or bool(v & _PAGE_PRESENT)


# --- flags / pfn ----------------------------------------------------------
def _pmd_pfn_mask(v):
    """The PFN field of a PMD: 2 MiB aligned in a leaf (PSE), the whole
    field in a table link."""
    return PHYSICAL_PMD_PAGE_MASK if v & _PAGE_PSE else PTE_PFN_MASK


def _pud_pfn_mask(v):
    """The PFN field of a PUD: 1 GiB aligned in a leaf (PSE), the whole
    field in a table link."""
    return PHYSICAL_PUD_PAGE_MASK if v & _PAGE_PSE else PTE_PFN_MASK


def pte_flags(v):
    """The bits of an entry outside its PFN field (``pte_flags``)."""
    return v & PTE_FLAGS_MASK


def pmd_flags(v):
    """The bits of a PMD outside its PFN field (``pmd_flags``); in a leaf
    the field is 2 MiB aligned, so the bits below it (PAT included) count as
    flags."""
    return v & ~_pmd_pfn_mask(v) & U64_MASK


def pud_flags(v):
    """The bits of a PUD outside its PFN field (``pud_flags``); in a leaf
    the field is 1 GiB aligned."""
    return v & ~_pud_pfn_mask(v) & U64_MASK


def pte_pfn(v):
    """The page frame number a PTE maps (``pte_pfn``)."""
    return (v & PTE_PFN_MASK) >> PAGE_SHIFT


def pmd_pfn(v):
    """The first PFN of a PMD leaf, or the PFN a PMD table link points at
    (``pmd_pfn``)."""
    return (v & _pmd_pfn_mask(v)) >> PAGE_SHIFT


def pud_pfn(v):
    """The first PFN of a PUD leaf, or the PFN a PUD table link points at
    (``pud_pfn``)."""
    return (v & _pud_pfn_mask(v)) >> PAGE_SHIFT


def pfn_pte(pfn, prot):
    """The PTE mapping ``pfn`` with the flag bits ``prot`` (``pfn_pte``);
    bits of ``prot`` inside the PFN field are dropped."""
    return ((_u64(pfn, "pfn") << PAGE_SHIFT) & PTE_PFN_MASK) | (_u64(prot, "prot") & PTE_FLAGS_MASK)


def pfn_pmd(pfn, prot):
    """A PMD leaf (PSE set) mapping the 2 MiB page at ``pfn``."""
    return (((_u64(pfn, "pfn") << PAGE_SHIFT) & PHYSICAL_PMD_PAGE_MASK)
            | (_u64(prot, "prot") & PTE_FLAGS_MASK) | _PAGE_PSE)


def pfn_pud(pfn, prot):
    """A PUD leaf (PSE set) mapping the 1 GiB page at ``pfn``."""
    return (((_u64(pfn, "pfn") << PAGE_SHIFT) & PHYSICAL_PUD_PAGE_MASK)
            | (_u64(prot, "prot") & PTE_FLAGS_MASK) | _PAGE_PSE)


# --- leaves / huge --------------------------------------------------------
def pmd_leaf(v):
    """True for a PMD that maps memory itself (PSE set) instead of linking a
    PTE table (``pmd_leaf``; ``pud_leaf`` is the same test)."""
    return bool(v & _PAGE_PSE)


pud_leaf = pmd_leaf


def pmd_trans_huge(v):
    """True for a transparent huge page: PSE set and DEVMAP clear, since a
    huge mapping of device memory is not a THP (``pmd_trans_huge``;
    ``pud_trans_huge`` alike)."""
    return (v & (_PAGE_PSE | _PAGE_DEVMAP)) == _PAGE_PSE


pud_trans_huge = pmd_trans_huge


def pmd_devmap(v):
    """DEVMAP set (bit 58, as in 6.13): a huge mapping of device memory
    (``pmd_devmap``; ``pud_devmap`` alike)."""
    return bool(v & _PAGE_DEVMAP)


pud_devmap = pmd_devmap


# --- bad ------------------------------------------------------------------
def pgd_bad(v, levels=5):
    """x86's ``pgd_bad`` for 5-level paging: any bit but USR and NX (which PTI
    sets at this level) differing from a kernel table link's (P, RW, A, D)
    makes the entry bad.  Constant false when the P4D level is folded."""
    if levels == 4:
        return False
    return (pte_flags(v) & ~(_PAGE_USER | _PTI_IGNORE)) != _KERNPG_TABLE


def p4d_bad(v):
    """x86's ``p4d_bad``: any bit besides those of a kernel table link (P,
    RW, A, D), USR and NX (which PTI sets at this level) makes the entry
    bad, PSE included."""
    return (pte_flags(v) & ~(_KERNPG_TABLE | _PAGE_USER | _PTI_IGNORE)) != 0


def pud_bad(v):
    """x86's ``pud_bad``: any flag besides P, RW, A, D and USR makes the
    entry bad (PSE and NX included)."""
    return (pud_flags(v) & ~(_KERNPG_TABLE | _PAGE_USER)) != 0


def pmd_bad(v):
    """x86's ``pmd_bad``: an entry that links a table must carry exactly P,
    RW and D, with A and USR free; anything else (a leaf included) is bad."""
    return (pmd_flags(v) & ~(_PAGE_USER | _PAGE_ACCESSED)) != (_KERNPG_TABLE & ~_PAGE_ACCESSED)


# --- tables ---------------------------------------------------------------
def mk_table(index):
    """A table entry pointing at the table with pool index ``index``."""
    return (_u64(index, "index") << PAGE_SHIFT) & PTE_PFN_MASK | _PAGE_TABLE


def table_index(v):
    """The pool index of the table a table entry links (the inverse of
    ``mk_table``)."""
    return (v & PTE_PFN_MASK) >> PAGE_SHIFT


# --- swap entries, migration entries and PTE markers ------------------------
def swp_entry(type, offset):
    """An arch-independent swp_entry_t (type in the top bits, as the kernel's)."""
    if not 0 <= type < 32:
        raise ValueError(f"type must be in 0..31: {type}")
    if not 0 <= offset <= SWP_OFFSET_MASK:
        raise ValueError(f"offset must fit in 40 bits: {offset:#x}")
    return (type << SWP_ENTRY_TYPE_SHIFT) | offset


def swp_type(e):
    """The type of a ``swp_entry_t`` (its top bits: swap device, migration,
    marker, ...)."""
    return e >> SWP_ENTRY_TYPE_SHIFT


def swp_offset(e):
    """The offset of a ``swp_entry_t``: a swap slot, a PFN for migration
    entries, flags for markers."""
    return e & ((1 << SWP_ENTRY_TYPE_SHIFT) - 1)


def swp_entry_to_pte(e):
    """The non-present PTE holding the ``swp_entry_t`` ``e`` in pgwalk's
    swap format (type in bits 52..56, offset from bit 12, the swap tag in
    bit 1; ``docs/encodings.md``).  ``swp_entry_to_pmd`` is the same."""
    return ((swp_type(e) << SWP_TYPE_SHIFT) | (swp_offset(e) << PAGE_SHIFT)
            | _PAGE_SWP_TAG)


def pte_to_swp_entry(v):
    """The ``swp_entry_t`` held by a non-present PTE in pgwalk's swap format
    (the inverse of ``swp_entry_to_pte``; ``pmd_to_swp_entry`` is the same)."""
    return swp_entry((v >> SWP_TYPE_SHIFT) & 31, (v >> PAGE_SHIFT) & SWP_OFFSET_MASK)


swp_entry_to_pmd = swp_entry_to_pte
pmd_to_swp_entry = pte_to_swp_entry


def is_swap_pte(v):
    """Neither none nor present: a swap, migration or marker entry
    (``is_swap_pte``)."""
    return not pte_none(v) and not pte_present(v)


def is_swap_pmd(v):
    """A PMD that is neither none nor present: a swap-format entry such as a
    migration entry (``is_swap_pmd``)."""
    return not pmd_none(v) and not pmd_present(v)


def is_migration_entry(e):
    """True for a ``swp_entry_t`` of a migration type (read, read-exclusive
    or write)."""
    return swp_type(e) in (SWP_MIGRATION_READ, SWP_MIGRATION_READ_EXCLUSIVE,
                           SWP_MIGRATION_WRITE)


def is_hwpoison_entry(e):
    """True for a ``swp_entry_t`` of the hwpoison type: the entry of a page lost to a
    memory error."""
    return swp_type(e) == SWP_HWPOISON


def is_device_private_entry(e):
    """True for a ``swp_entry_t`` of a device-private page (its read or write type):
    memory that currently lives on a device."""
    return swp_type(e) in (SWP_DEVICE_WRITE, SWP_DEVICE_READ)


def is_device_exclusive_entry(e):
    """True for a ``swp_entry_t`` of the device-exclusive type: a page a device has
    taken for its exclusive use."""
    return swp_type(e) == SWP_DEVICE_EXCLUSIVE


def is_swapfile_entry(e):
    """A real swap entry (a swap file's type), not a special one."""
    return swp_type(e) < MAX_SWAPFILES


def is_pfn_swap_entry(e):
    """The entry's offset is a PFN: migration, device and hwpoison entries."""
    return (is_migration_entry(e) or is_device_private_entry(e)
            or is_device_exclusive_entry(e) or is_hwpoison_entry(e))


def is_pmd_migration_entry(v):
    """A non-present PMD holding a migration entry: a THP being migrated
    (``is_pmd_migration_entry``)."""
    return is_swap_pmd(v) and is_migration_entry(pmd_to_swp_entry(v))


def make_pte_marker(flags):
    """A PTE marker: a non-present PTE of the marker swap type carrying the
    ``PTE_MARKER_*`` bits ``flags`` (guard regions use
    ``PTE_MARKER_GUARD``).  ValueError for no bits or unknown ones."""
    if flags & ~PTE_MARKER_MASK or not flags:
        raise ValueError(f"flags must be a non-empty set of PTE_MARKER_* bits: {flags:#x}")
    return swp_entry_to_pte(swp_entry(SWP_PTE_MARKER, flags))


def is_pte_marker(v):
    """True for a PTE marker (``is_pte_marker``): a swap-format PTE of the
    marker type."""
    return is_swap_pte(v) and swp_type(pte_to_swp_entry(v)) == SWP_PTE_MARKER


def pte_marker_get(v):
    """The ``PTE_MARKER_*`` bits of a PTE marker (``pte_marker_get``)."""
    return swp_offset(pte_to_swp_entry(v)) & PTE_MARKER_MASK


def is_guard_marker(v):
    """True for a PTE holding the guard-region marker (PTE_MARKER_GUARD)."""
    return is_pte_marker(v) and bool(pte_marker_get(v) & PTE_MARKER_GUARD)
