"""mremap (mm/mremap.c): argument errnos, shrinking in place, growing,
moves (MREMAP_FIXED, MREMAP_DONTUNMAP, across VMAs) and what a move leaves
in the page tables.  Scenario tests run on ``pgwalk.MM`` and, where this
kernel can, live (pgwalk/process/conformance/)."""

import errno

import pgwalk as P
from pgwalk import PAGE_SIZE as PS

from helpers import live_kernel as L
from helpers.family import EXCL, FILE, PA, PRESENT, PRIV, RW, run


def test_mremap_move_leaves_an_empty_pte_table_at_the_destination():
    """move_page_tables (6.18) allocates the destination's PMD and PTE table
    for every extent whose source PMD is a table, even when no PTE in the
    extent is set; that empty table then stops a THP fault there (a read
    fault maps the 4K zero page, not the huge zero page).  An extent whose
    source PMD is none allocates nothing at the destination."""
    mm = P.MM()
    base = 0x7F0000000000
    mm.mmap(base, 1023 * PS, RW, PRIV | P.MAP_FIXED)
    mm.madvise(base, 1023 * PS, P.MADV_HUGEPAGE)
    mm.touch(base + 941 * PS)                       # a PTE table for block 512..1023
    mm.mremap(base + 887 * PS, 42 * PS, 16 * PS, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, base + 91 * PS)
    v = mm.entry(base, P.PMD)
    assert not P.entries.pte_none(v) and not P.entries.pmd_leaf(v)
    mm.madvise(base + 119 * PS, PS, P.MADV_POPULATE_READ)
    assert mm.pagemap(base + 119 * PS, base + 120 * PS)[0] & (PRESENT | FILE) == PRESENT

    mm = P.MM()
    mm.mmap(base, 1024 * PS, RW, PRIV | P.MAP_FIXED)
    mm.mremap(base + 900 * PS, 8 * PS, 8 * PS, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, base + 91 * PS)
    assert P.entries.pte_none(mm.entry(base, P.PMD))
    mm.validate()

MAYMOVE, FIXED, DONTUNMAP = P.MREMAP_MAYMOVE, P.MREMAP_FIXED, P.MREMAP_DONTUNMAP


def test_mremap_argument_errnos():
    """mremap of an unaligned address, and MREMAP_FIXED without
    MREMAP_MAYMOVE, fail with EINVAL (check_mremap_params, mm/mremap.c);
    checked live as well."""
    model, live = L.call_errnos([("mremap", 1, PS, PS, 0, 0),
                                 ("mremap", 0, PS, PS, FIXED, 0x7E0000000000),
                                 ("mremap", 0, 2 * PS, PS, 0, 0)])
    assert model == [errno.EINVAL, errno.EINVAL, 0]
    assert live in (None, model)


def test_resize_across_two_vmas_is_efault_but_a_move_may_span_them():
    """Growing a range that covers two VMAs fails with EFAULT (the old range
    must lie in one VMA: resize_is_valid); a pure move (MREMAP_FIXED,
    old_len == new_len) of the same range moves both VMAs (6.17+ multi-VMA
    moves in mm/mremap.c; checked live on 6.18)."""
    steps = [("mmap", 0, 4, RW, PA), ("mmap", 4, 4, P.PROT_READ, PA),
             ("mremap", 0, 8, 16, MAYMOVE, 0), ("mremap", 0, 8, 8, MAYMOVE | FIXED, 16)]
    mm, obs = run(steps, 32)
    assert obs[2][0] == ("err", errno.EFAULT) and obs[2][2] == obs[1][2]
    assert obs[3][0] == ("at", 16)
    assert obs[3][2] == [(16, 20, RW, "p"), (20, 24, P.PROT_READ, "p")]


def test_shrink_in_place_unmaps_the_tail():
    """Shrinking returns the same address and unmaps the tail, pages
    included (mremap_shrink -> do_vmi_munmap)."""
    steps = [("mmap", 0, 8, RW, PA), ("touch", 6, True), ("mremap", 0, 8, 4, 0, 0)]
    mm, obs = run(steps, 16)
    assert obs[1][1][6] == PRESENT | EXCL
    assert obs[2][0] == ("at", 0) and obs[2][2] == [(0, 4, RW, "p")] and obs[2][1][6] == 0


def test_grow_in_place_against_a_mapping_is_enomem_and_maymove_moves():
    """Growing in place when the next page is mapped fails with ENOMEM
    (vma_expandable); with MREMAP_MAYMOVE the range moves elsewhere, the old
    range is unmapped and the pages go with it (mremap_to / move_vma)."""
    steps = [("mmap", 0, 4, RW, PA), ("mmap", 4, 1, RW | P.PROT_EXEC, PA), ("touch", 1, True),
             ("mremap", 0, 4, 8, 0, 0)]
    mm, obs = run(steps, 16)
    assert obs[3][0] == ("err", errno.ENOMEM) and obs[3][2] == obs[2][2]
    base = 0x7F0000000000
    new = mm.mremap(base, 4 * PS, 8 * PS, MAYMOVE)
    assert not base <= new < base + 5 * PS
    assert [(v.vm_start, v.vm_end) for v in mm.vmas if v.vm_start == new] == [(new, new + 8 * PS)]
    assert mm.pagemap(base, base + 4 * PS).tolist() == [0] * 4
    assert int(mm.pagemap(new + PS, new + 2 * PS)[0]) & (PRESENT | EXCL) == PRESENT | EXCL
    mm.validate()


def test_move_carries_the_pages_and_dontunmap_leaves_the_source_empty():
    """A MREMAP_FIXED move takes the pages to the new address as they were
    (move_page_tables); with MREMAP_DONTUNMAP the source VMA stays mapped
    but empty (a read there maps the zero page), and DONTUNMAP with a size
    change fails with EINVAL (check_mremap_params)."""
    steps = [("mmap", 0, 4, RW, PA), ("touch", 0, True), ("touch", 2, False),
             ("mremap", 0, 4, 4, MAYMOVE | FIXED, 8)]
    mm, obs = run(steps, 16)
    assert obs[3][0] == ("at", 8) and obs[3][2] == [(8, 12, RW, "p")]
    assert obs[3][1][8:12] == obs[2][1][0:4] == [PRESENT | EXCL, 0, PRESENT, 0]
    steps = [("mmap", 0, 4, RW, PA), ("touch", 0, True), ("mremap", 0, 4, 4, MAYMOVE | FIXED | DONTUNMAP, 8),
             ("touch", 0, False), ("mremap", 8, 4, 8, MAYMOVE | DONTUNMAP, 0)]
    mm, obs = run(steps, 16)
    assert obs[2][0] == ("at", 8) and obs[2][2] == [(0, 4, RW, "p"), (8, 12, RW, "p")]
    assert obs[2][1][0] == 0 and obs[2][1][8] == PRESENT | EXCL
    assert obs[3][1][0] == PRESENT
    assert obs[4][0] == ("err", errno.EINVAL)
