"""Argument checks shared by the compiled walker and the reference walker.

These are Python's checks (types, ranges), made before any kernel rule: a
bad address raises ``TypeError``/``ValueError`` naming the argument; what the
kernel itself rejects (an empty range, a missing mm, ...) is left to the
walkers, which return the kernel's negative errno.
"""

from ..constants import PAGE_SIZE, PT_TYPE_ALL, U64_MASK
from ._core import PageTable, PageTables, WalkStats
from .ops import MMWalkOps
from .vma import VMA


def _levels_of(mm):
    return getattr(mm, "levels", 5)


def check_addr(name, value, levels, is_end=False):
    """An address of a ``levels``-level address space: an int, canonical (in
    the lower or upper half); an ``end`` may also be the end of the lower half."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative: {value}")
    if value > U64_MASK:
        raise ValueError(f"{name} {value:#x} is beyond the 64-bit address space")
    half = 1 << (47 if levels == 4 else 56)
    if half <= value < (1 << 64) - half and not (is_end and value == half):
        raise ValueError(f"{name} {value:#x} is not a canonical address of a "
                         f"{levels}-level address space (it lies in the hole between the halves)")
    return value


def check_range(mm, start, end):
    """Check ``start`` and ``end`` as addresses of ``mm``'s address space and refuse a
    range across the non-canonical hole (TypeError or ValueError)."""
    levels = _levels_of(mm)
    check_addr("start", start, levels)
    check_addr("end", end, levels, is_end=True)
    half = 1 << (47 if levels == 4 else 56)
    if start < half < end:
        raise ValueError(f"the range [{start:#x}, {end:#x}) spans the non-canonical hole; "
                         "walk the lower and the upper half separately")


def check_mm(mm, name="mm"):
    """TypeError unless ``mm`` (the argument called ``name``) is page tables such as a
    ``pgwalk.MM``, or None."""
    if mm is not None and not isinstance(mm, PageTables):
        raise TypeError(f"{name} must be a pgwalk.MM or None, not {type(mm).__name__}")


def check_ops(ops):
    """TypeError unless ``ops`` is an ``MMWalkOps``."""
    if not isinstance(ops, MMWalkOps):
        raise TypeError(f"ops must be a pgwalk.MMWalkOps, not {type(ops).__name__}")


def check_stats(stats):
    """TypeError unless ``stats`` is a ``WalkStats`` or None."""
    if stats is not None and not isinstance(stats, WalkStats):
        raise TypeError(f"stats must be a pgwalk.WalkStats or None, not {type(stats).__name__}")


def check_vma(vma):
    """TypeError unless ``vma`` is a ``VMA``."""
    if not isinstance(vma, VMA):
        raise TypeError(f"vma must be a pgwalk.VMA, not {type(vma).__name__}")


def check_pgd(mm, pgd):
    """Check the optional top-level table ``pgd``: None, or an mm's top-level
    ``PageTable`` with as many paging levels as ``mm`` (TypeError or ValueError)."""
    if pgd is None:
        return
    if not isinstance(pgd, PageTable):
        raise TypeError(f"pgd must be a top-level PageTable (such as other_mm.pgd) or None, "
                        f"not {type(pgd).__name__}")
    if pgd.level != 0 or pgd.index != pgd.tables.pgd_id:
        raise ValueError("pgd must be the top-level table of an mm")
    if mm is not None and pgd.tables.levels != mm.levels:
        raise ValueError(f"pgd has {pgd.tables.levels}-level paging but mm has {mm.levels}")


# --- which kernel's walk loops (docs/pagewalk-releases.md) ------------------

# "7.0": the PUD re-check (7.0-7.2, and the stable trees that took it);
# "today": that and the action reset at the top of the loops (7.3 on).
KERNELS = ("6.13", "7.0", "today")
_NEWER_BITS = {"6.13": 0, "7.0": 2, "today": 3}      # NEWER_PUD_RECHECK = 2, NEWER_RESET_TOP = 1
_default_kernel = ["6.13"]


def set_default_kernel(kernel):
    """Make ``kernel`` (one of ``KERNELS``) the loops every walk runs unless it
    passes ``kernel=``; returns the previous default."""
    check_kernel(kernel)
    old = _default_kernel[0]
    _default_kernel[0] = kernel
    return old


def get_default_kernel():
    """The loops a walk runs when it passes no ``kernel=`` ("6.13" unless changed)."""
    return _default_kernel[0]


def check_kernel(kernel):
    """The NEWER_* bits of ``kernel`` (None: the default)."""
    if kernel is None:
        kernel = _default_kernel[0]
    if not isinstance(kernel, str) or kernel not in _NEWER_BITS:
        raise ValueError(f"kernel must be one of {KERNELS} or None, not {kernel!r}")
    return _NEWER_BITS[kernel]


def check_ops_safe(ops):
    """Today's ``check_ops_safe``: ops that install PTEs are unsafe; only the
    mm-internal ``*_unsafe`` entry points accept them."""
    check_ops(ops)
    return ops.install_pte is None


def check_pt_range_args(vma, start, end, flags, mm):
    """``pt_range_walk``'s checks, made before any kernel rule (ValueError or
    TypeError naming the argument).  Returns the mm to walk (None: the VMA
    has no mm)."""
    if not isinstance(vma, VMA):
        raise TypeError(f"vma must be a pgwalk.VMA, not {type(vma).__name__}")
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    if flags < 0 or flags & ~PT_TYPE_ALL:
        raise ValueError(f"flags must be a set of PT_TYPE_* bits: {flags:#x}")
    vmm = vma.vm_mm
    if mm is None:
        mm = vmm
    elif not isinstance(mm, PageTables):
        raise TypeError(f"mm must be a pgwalk.MM or None, not {type(mm).__name__}")
    elif mm is not vmm:
        # the kernel would read one mm's tables with another mm's VMA
        raise ValueError("mm: the VMA does not belong to this mm")
    check_range(mm, start, end)
    # An unaligned range can make a PTE batch empty (max_nr 0), and the
    # kernel's walk would then return the same record forever.
    if start % PAGE_SIZE:
        raise ValueError(f"start {start:#x} is not page aligned")
    if end % PAGE_SIZE:
        raise ValueError(f"end {end:#x} is not page aligned")
    return mm
