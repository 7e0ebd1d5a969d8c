"""Scenarios that once differed from the live kernel, each minimised, then
fixed in the model; tests/process/test_live_kernel.py keeps them pinned.
Steps in the format of ``pgwalk.process.conformance.live``."""

import pgwalk as P
from pgwalk.process.conformance.scenarios import PRIV, RW, SHARED

# Scenarios the wide generator found to differ from the live kernel (each
# minimised, then fixed); kept so the fix stays pinned.
REGRESSIONS = [
    # mremap of part of a PTE-mapped range moves nothing but still leaves an
    # (empty) PTE table at the destination, so the later read fault there
    # maps the 4K zero page, not the huge zero page (move_page_tables
    # pte_allocs the new PMD for every extent whose old PMD is a table)
    (1023, [("mmap", 0, 1023, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 1023, P.MADV_HUGEPAGE),
            ("touch", 941, False), ("mremap", 887, 42, 16, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, 91),
            ("madvise", 119, 1, P.MADV_POPULATE_READ)]),
]

# Lazy free of a large folio is decided for the whole folio, as reclaim
# decides it (a clean lazily freed folio is discarded whole; one written
# since MADV_FREE is kept whole and is no longer lazily free; a split
# passes any PTE's dirty bit to every subpage)
_THP = [("mmap", 0, 1024, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 1024, P.MADV_HUGEPAGE),
        ("touch", 0, True)]
_PTE_MAPPED = _THP + [("mprotect", 5, 1, P.PROT_READ), ("mprotect", 5, 1, RW)]
FREE, PAGEOUT, COLD, DONTNEED = P.MADV_FREE, P.MADV_PAGEOUT, P.MADV_COLD, P.MADV_DONTNEED
REGRESSIONS += [(1024, steps) for steps in [
    _PTE_MAPPED + [("madvise", 0, 512, FREE), ("madvise", 0, 512, PAGEOUT)],
    _PTE_MAPPED + [("madvise", 0, 512, FREE), ("touch", 10, False), ("madvise", 0, 512, PAGEOUT)],
    _PTE_MAPPED + [("madvise", 0, 512, FREE), ("touch", 10, True), ("madvise", 0, 512, PAGEOUT)],
    _PTE_MAPPED + [("madvise", 0, 512, FREE), ("touch", 511, True), ("madvise", 0, 512, PAGEOUT)],
    _PTE_MAPPED + [("madvise", 0, 512, FREE), ("touch", 10, True), ("madvise", 0, 100, PAGEOUT)],
    _PTE_MAPPED + [("madvise", 0, 512, FREE), ("touch", 10, True), ("madvise", 0, 512, COLD),
                   ("madvise", 0, 512, PAGEOUT)],
    _PTE_MAPPED + [("madvise", 0, 512, FREE), ("madvise", 0, 512, COLD), ("madvise", 0, 512, PAGEOUT)],
    _PTE_MAPPED + [("madvise", 0, 512, FREE), ("touch", 10, True), ("madvise", 0, 512, PAGEOUT),
                   ("madvise", 0, 512, FREE), ("madvise", 0, 512, PAGEOUT)],
    _PTE_MAPPED + [("madvise", 0, 512, FREE), ("touch", 100, True), ("madvise", 7, 1, DONTNEED),
                   ("madvise", 0, 512, PAGEOUT)],
    _THP + [("madvise", 0, 512, FREE), ("touch", 10, True), ("madvise", 0, 512, PAGEOUT),
            ("madvise", 0, 512, PAGEOUT)],
    # reclaim of a lazily freed PMD-mapped THP splits the PMD first
    # (thp_split_pmd in /proc/vmstat), so the discard leaves an empty PTE
    # table: later faults there map 4K pages, MADV_COLLAPSE finds a table
    _THP + [("madvise", 0, 512, FREE), ("madvise", 0, 512, PAGEOUT), ("touch", 225, False)],
    _THP + [("madvise", 0, 512, FREE), ("madvise", 0, 512, PAGEOUT), ("touch", 225, True)],
    _THP + [("madvise", 0, 512, FREE), ("madvise", 0, 512, PAGEOUT), ("madvise", 0, 512, P.MADV_COLLAPSE)],
    _THP + [("madvise", 0, 512, FREE), ("touch", 3, True), ("madvise", 0, 512, PAGEOUT),
            ("madvise", 0, 512, DONTNEED), ("touch", 225, False)],
    # a subpage of a THP split by reclaim inherits the folio's PG_dirty, so
    # MADV_FREE leaves it alone while a forked child maps it too (a page
    # written by a 4K fault is not PG_dirty and is marked lazily free)
    [("mmap", 0, 512, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 512, P.MADV_HUGEPAGE),
     ("touch", 7, True), ("madvise", 0, 512, PAGEOUT), ("fork",), ("madvise", 0, 512, FREE),
     ("child_exit",), ("madvise", 0, 512, PAGEOUT)],
    # a fault on a page of a shmem huge folio (made by MADV_COLLAPSE) maps
    # the whole folio by PMD where the PMD slot is empty, in the child too
    [("mmap", 0, 1024, RW, SHARED | P.MAP_FIXED), ("madvise", 0, 1024, P.MADV_HUGEPAGE),
     ("touch", 0, True), ("madvise", 0, 512, P.MADV_COLLAPSE), ("fork",),
     ("child", ("touch", 5, True)), ("madvise", 0, 512, DONTNEED), ("touch", 6, False)],
]]



# a PTE-mapped THP that a forked child still maps a part of counts as
# mapped by two mms (folio_maybe_mapped_shared) although no page of it
# is mapped twice: MADV_FREE of part of it does not split it
REGRESSIONS.append((1536, [("mmap", 0, 1536, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 1536, P.MADV_HUGEPAGE),
    ("touch", 1024, True), ("fork",), ("child", ("madvise", 693, 600, DONTNEED)),
    ("madvise", 1049, 487, P.MADV_POPULATE_WRITE), ("madvise", 1024, 512, FREE)]))
# ... but a THP whose first page was moved by mremap to another PMD of the
# same mm is not "mapped by another mm": a partial MADV_COLD splits it
REGRESSIONS.append((1024, [("mmap", 0, 1024, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 1024, P.MADV_HUGEPAGE),
                           ("touch", 510, True),
                           ("mremap", 0, 1, 1, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, 512),
                           ("madvise", 510, 513, P.MADV_COLD)]))
# MADV_COLLAPSE in a read-only VMA makes a read-only PMD (the model made it
# writable, which validate() caught)
REGRESSIONS.append((1536, [("mmap", 0, 1536, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 513, P.MADV_POPULATE_WRITE),
                           ("mprotect", 512, 512, P.PROT_READ), ("madvise", 512, 1024, P.MADV_COLLAPSE),
                           ("touch", 600, False), ("touch", 600, True), ("mprotect", 512, 512, RW),
                           ("touch", 601, True), ("fork",), ("touch", 602, True)]))



# Shared memory with a huge folio made by MADV_COLLAPSE (pgwalk/shmem.py)
_SHUGE = [("mmap", 0, 1024, RW, SHARED | P.MAP_FIXED), ("touch", 0, True),
          ("madvise", 0, 512, P.MADV_COLLAPSE)]
REGRESSIONS += [(1024, steps) for steps in [
    # a write fault where a PTE table is left (by a guard installed and
    # removed) maps the whole folio by PTEs; a read fault maps it whole by
    # fault-around, around a guard it cannot replace
    _SHUGE + [("madvise", 3, 1, P.MADV_GUARD_INSTALL), ("madvise", 3, 1, P.MADV_GUARD_REMOVE),
              ("touch", 7, True)],
    _SHUGE + [("madvise", 3, 1, P.MADV_GUARD_INSTALL), ("touch", 100, False)],
    # with VM_NOHUGEPAGE no PMD mapping, but still the whole folio by PTEs
    _SHUGE + [("madvise", 0, 512, P.MADV_DONTNEED), ("madvise", 0, 1024, P.MADV_NOHUGEPAGE),
              ("touch", 3, True)],
    # a hole punch splits the folio around the hole's ends (folios of
    # 256, 128, ... pages stay, each mapped whole by the next fault)
    _SHUGE + [("madvise", 0, 10, P.MADV_REMOVE), ("touch", 3, False), ("touch", 300, True),
              ("touch", 150, False)],
    _SHUGE + [("madvise", 100, 10, P.MADV_REMOVE), ("touch", 3, False), ("touch", 105, True),
              ("touch", 300, False), ("touch", 111, True)],
    # PAGEOUT unmaps a whole huge folio and keeps it (dirty, no swap); over
    # part of a PTE-mapped one it splits it, which unmaps all of it
    _SHUGE + [("madvise", 0, 512, P.MADV_PAGEOUT), ("touch", 3, False)],
    _SHUGE + [("madvise", 3, 1, P.MADV_GUARD_INSTALL), ("madvise", 3, 1, P.MADV_GUARD_REMOVE),
              ("touch", 7, True), ("madvise", 0, 100, P.MADV_PAGEOUT), ("touch", 50, False),
              ("touch", 200, True)],
    # fork does not copy a shmem huge PMD (even where VM_MAYBE_GUARD makes
    # it copy the page tables): the child faults it in
    [("mmap", 0, 1024, RW, SHARED | P.MAP_FIXED), ("touch", 271, False),
     ("madvise", 0, 512, P.MADV_COLLAPSE), ("madvise", 795, 7, P.MADV_GUARD_INSTALL), ("fork",)],
    # a populate that starts at a guard faults nothing around it
    [("mmap", 0, 1024, RW, SHARED | P.MAP_FIXED), ("touch", 664, True),
     ("madvise", 512, 512, P.MADV_COLLAPSE), ("madvise", 36, 512, P.MADV_GUARD_INSTALL), ("fork",),
     ("child", ("madvise", 545, 10, P.MADV_POPULATE_READ))],
]]

# folio_maybe_mapped_shared is about other mms: a THP whose parts sit in two
# PMDs of one mm (mremap) with a forked child alive that maps none of it is
# not shared, so MADV_COLD / FREE over it splits it
REGRESSIONS += [
    (2048, [("mmap", 0, 2048, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 2048, P.MADV_HUGEPAGE), ("fork",),
            ("touch", 912, True), ("mremap", 512, 256, 256, P.MREMAP_MAYMOVE | P.MREMAP_FIXED
                                     | P.MREMAP_DONTUNMAP, 0),
            ("madvise", 0, 1024, P.MADV_COLD)]),
    (1024, [("mmap", 0, 1024, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 1024, P.MADV_HUGEPAGE),
            ("touch", 721, True), ("madvise", 511, 513, P.MADV_WIPEONFORK),
            ("mremap", 512, 1, 1, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, 0), ("fork",),
            ("madvise", 512, 512, P.MADV_FREE)]),
    # mprotect making a locked PROT_NONE VMA writable merges it first, then
    # populates it (so the merge sees no anon_vma in it)
    (1024, [("mmap", 0, 1024, RW, PRIV | P.MAP_FIXED), ("mprotect", 515, 2, P.PROT_NONE),
            ("touch", 643, True), ("mlock", 512, 512), ("mprotect", 511, 512, RW)]),
]
# MADV_COLLAPSE of a block that is one huge folio already maps it by PMD in
# this mm only (collapse_pte_mapped_thp): the child keeps its mapping, and a
# marker in the PTE table fails the block without changing anything
REGRESSIONS += [(1024, _SHUGE + steps) for steps in [
    [("fork",), ("child", ("touch", 5, True)), ("madvise", 3, 1, P.MADV_GUARD_INSTALL),
     ("madvise", 3, 1, P.MADV_GUARD_REMOVE), ("touch", 7, True), ("madvise", 0, 512, P.MADV_COLLAPSE)],
    [("madvise", 3, 1, P.MADV_GUARD_INSTALL), ("touch", 7, True), ("madvise", 0, 512, P.MADV_COLLAPSE),
     ("touch", 9, False)],
]]
# a populate stops at a guard: folios after it are not mapped whole; a COLD
# split of a shmem folio unmaps it in every table; a shmem folio a forked
# child maps too is left alone (and the rest of that PTE table with it)
REGRESSIONS += [
    (1536, [("mmap", 0, 1536, RW, SHARED | P.MAP_FIXED), ("touch", 598, True),
            ("madvise", 512, 512, P.MADV_COLLAPSE), ("madvise", 509, 7, P.MADV_GUARD_INSTALL),
            ("madvise", 620, 1, P.MADV_REMOVE), ("madvise", 228, 512, P.MADV_POPULATE_WRITE)]),
    (1024, [("mmap", 0, 1024, RW, SHARED | P.MAP_FIXED), ("touch", 1023, False),
            ("madvise", 512, 512, P.MADV_COLLAPSE), ("madvise", 898, 126, P.MADV_NOHUGEPAGE),
            ("mremap", 736, 288, 288, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, 433),
            ("madvise", 10, 512, P.MADV_POPULATE_WRITE), ("madvise", 218, 512, P.MADV_COLD)]),
    (1024, [("mmap", 0, 1024, RW, SHARED | P.MAP_FIXED), ("touch", 1023, False),
            ("madvise", 512, 512, P.MADV_COLLAPSE), ("madvise", 898, 126, P.MADV_NOHUGEPAGE), ("fork",),
            ("madvise", 10, 512, P.MADV_POPULATE_WRITE), ("child", ("touch", 669, True)),
            ("madvise", 218, 512, P.MADV_COLD)]),
]
# MADV_COLLAPSE over a guard in shared memory still makes the object's huge
# folio (the marker only stops its mapping here): a later write fault sees
# one folio with a marker in its range and maps a single page
REGRESSIONS.append((1024, [("mmap", 0, 1024, RW, SHARED | P.MAP_FIXED), ("touch", 569, True),
                           ("madvise", 512, 512, P.MADV_COLLAPSE), ("madvise", 621, 300, P.MADV_REMOVE),
                           ("madvise", 601, 1, P.MADV_GUARD_INSTALL), ("madvise", 466, 558, P.MADV_COLLAPSE),
                           ("touch", 922, True)]))
# after a hole punch the pieces of a shmem folio are folios of their own: a
# forked child mapping one piece does not make another piece shared
REGRESSIONS.append((512, [("mmap", 0, 512, RW, SHARED | P.MAP_FIXED), ("touch", 330, True),
                          ("madvise", 0, 512, P.MADV_COLLAPSE), ("fork",),
                          ("child", ("madvise", 421, 91, P.MADV_REMOVE)), ("child", ("touch", 268, False)),
                          ("touch", 113, False), ("madvise", 19, 493, P.MADV_PAGEOUT)]))
# a write to a page of a THP that a forked child still maps a part of copies
# it (the folio is mapped by another mm) even if that page is mapped once, so
# the child's later PAGEOUT, alone with the folio, splits it
REGRESSIONS.append((1536, [("mmap", 0, 1536, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 1536, P.MADV_HUGEPAGE),
                           ("touch", 1031, True), ("fork",),
                           ("child", ("madvise", 492, 600, P.MADV_GUARD_INSTALL)),
                           ("madvise", 1024, 512, P.MADV_POPULATE_WRITE),
                           ("child", ("madvise", 1024, 512, P.MADV_PAGEOUT))]))
# the read faults of a populate are followed in order: the first fault's
# window maps the rest of the range, so no later fault maps past its end
REGRESSIONS.append((1536, [("mmap", 0, 1536, RW, SHARED | P.MAP_FIXED), ("touch", 1402, True),
                           ("madvise", 1024, 512, P.MADV_COLLAPSE), ("mprotect", 1150, 386, P.PROT_READ),
                           ("madvise", 866, 300, P.MADV_POPULATE_READ)]))
# MADV_PAGEOUT leaves a large folio another mm maps too alone but goes on
# with the PTEs after it (a lazily freed page further on is discarded)
REGRESSIONS.append((1024, [("mmap", 0, 1024, RW, PRIV | P.MAP_FIXED), ("madvise", 0, 1024, P.MADV_HUGEPAGE),
                           ("touch", 512, True), ("fork",), ("touch", 914, True),
                           ("madvise", 512, 512, P.MADV_FREE), ("child", ("touch", 662, True)),
                           ("madvise", 512, 512, P.MADV_PAGEOUT)]))
# a populate stopped by a guard does not reach a huge folio's block after it
REGRESSIONS.append((1536, [("mmap", 0, 1536, RW, SHARED | P.MAP_FIXED), ("touch", 600, True),
                           ("madvise", 512, 512, P.MADV_COLLAPSE), ("madvise", 512, 512, P.MADV_DONTNEED),
                           ("madvise", 100, 1, P.MADV_GUARD_INSTALL),
                           ("madvise", 0, 1536, P.MADV_POPULATE_READ)]))
