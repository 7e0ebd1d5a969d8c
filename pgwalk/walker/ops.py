"""``MMWalkOps``: the callbacks of one walk (kernel ``struct mm_walk_ops``).

Every field is optional; a field left ``None`` is a NULL member in the
kernel, and the walker does not descend to a level no callback needs.
"""

from ._core import check_slot
from ..constants import PGWALK_RDLOCK, PGWALK_VMA_RDLOCK_VERIFY, PGWALK_WRLOCK, PGWALK_WRLOCK_VERIFY

__all__ = [
    "CALLBACKS", "MMWalkOps", "WALK_LOCKS",
]

CALLBACKS = ("pgd_entry", "p4d_entry", "pud_entry", "pmd_entry", "pte_entry",
             "pte_hole", "hugetlb_entry", "test_walk", "pre_vma", "post_vma",
             "install_pte")
WALK_LOCKS = (PGWALK_RDLOCK, PGWALK_WRLOCK, PGWALK_WRLOCK_VERIFY, PGWALK_VMA_RDLOCK_VERIFY)


class MMWalkOps:
    """The callbacks of a walk.  Signatures, as in the kernel:

    * ``pgd_entry / p4d_entry / pud_entry / pmd_entry / pte_entry(entry, addr, next, walk) -> int``
    * ``pte_hole(addr, next, depth, walk) -> int``
    * ``hugetlb_entry(entry, hmask, addr, next, walk) -> int``
    * ``test_walk(addr, next, walk) -> int``, ``pre_vma(start, end, walk) -> int``
    * ``post_vma(walk) -> None``
    * ``install_pte(addr, next, ptep, walk) -> int`` (``ptep.set(value)``)

    ``walk_lock`` is one of ``PGWALK_RDLOCK``, ``PGWALK_WRLOCK``,
    ``PGWALK_WRLOCK_VERIFY`` or (today's kernel) ``PGWALK_VMA_RDLOCK_VERIFY``.
    """

    __slots__ = CALLBACKS + ("walk_lock",)

    def __init__(self, pgd_entry=None, p4d_entry=None, pud_entry=None,
                 pmd_entry=None, pte_entry=None, pte_hole=None,
                 hugetlb_entry=None, test_walk=None, pre_vma=None,
                 post_vma=None, install_pte=None, walk_lock=PGWALK_RDLOCK):
        args = locals()
        for name in CALLBACKS:
            setattr(self, name, args[name])
        self.walk_lock = walk_lock

    def __setattr__(self, name, value):
        if name == "walk_lock":
            if isinstance(value, bool) or value not in WALK_LOCKS:
                raise ValueError(f"walk_lock must be PGWALK_RDLOCK, PGWALK_WRLOCK, "
                                 f"PGWALK_WRLOCK_VERIFY or PGWALK_VMA_RDLOCK_VERIFY, not {value!r}")
        elif name in CALLBACKS:
            check_slot(name, value)
        object.__setattr__(self, name, value)

    def __repr__(self):
        set_ = [n for n in CALLBACKS if getattr(self, n) is not None]
        return f"MMWalkOps({', '.join(set_)}; walk_lock={self.walk_lock})"
