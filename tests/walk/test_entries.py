"""Entry encodings: the Python predicates of pgwalk.entries against the
walker's inline C copies (pgwalk/_entries.pxd), and the x86-64 definitions
they pin, on random and hand-picked raw values."""

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import pgwalk
from pgwalk.walker import _core
from pgwalk import entries as E
from pgwalk.constants import (
    PTE_MARKER_GUARD, SWP_MIGRATION_READ, SWP_MIGRATION_WRITE, SWP_PTE_MARKER,
)

SPECIAL = [0, 0x20, 0x40, 0x60, 0x61, 0x63, 0x67, 0xE3, 0x80, 0x100, 0x2,
           1 << 58 | 0x81, 1 << 63 | 0x67, (1 << 64) - 1, 0x1F0000000004002]
values = st.one_of(st.sampled_from(SPECIAL), st.integers(0, (1 << 64) - 1),
                   st.builds(lambda pfn, fl: pfn << 12 | fl, st.integers(0, (1 << 40) - 1),
                             st.sampled_from([0, 1, 3, 0x63, 0x67, 0xE7, 0x80, 0x100, 0x2])))


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(values)
def test_c_predicates_match_python(v):
    c = _core._c_predicates(v)
    assert c["pte_none"] == E.pte_none(v) == E.pmd_none(v) == E.pud_none(v) == E.p4d_none(v)
    assert c["pgd_none_l5"] == E.pgd_none(v, 5)
    assert c["pte_present"] == E.pte_present(v)
    assert c["pmd_present"] == E.pmd_present(v)
    assert c["pud_present"] == E.pud_present(v) == E.p4d_present(v)
    assert c["pmd_leaf"] == E.pmd_leaf(v) == E.pud_leaf(v)
    assert c["pmd_trans_huge"] == E.pmd_trans_huge(v) == E.pud_trans_huge(v)
    assert c["pmd_devmap"] == E.pmd_devmap(v)
    assert c["pgd_bad_l5"] == E.pgd_bad(v, 5)
    assert c["p4d_bad"] == E.p4d_bad(v)
    assert c["pmd_bad"] == E.pmd_bad(v)
    assert c["is_swap_pmd"] == E.is_swap_pmd(v)
    assert c["is_pmd_migration_entry"] == E.is_pmd_migration_entry(v)
    assert c["pmd_flags"] == E.pmd_flags(v)
    assert c["pud_flags"] == E.pud_flags(v)
    assert c["pmd_pfn"] == E.pmd_pfn(v)
    assert c["entry_index"] == E.table_index(v)
    if E.is_swap_pte(v):
        e = E.pte_to_swp_entry(v)
        assert (c["swp_pte_type"], c["swp_pte_offset"]) == (E.swp_type(e), E.swp_offset(e))
    assert c["mk_table"] == E.mk_table(v & 0xFFFFFFFFFF)
    assert c["mk_swp_pte"] == E.swp_entry_to_pte(E.swp_entry(v >> 59, v & 0xFFFFFFFFFF))


def test_x86_definitions():
    """The x86-64 rules the predicates pin (arch/x86/include/asm/pgtable.h)."""
    # none ignores Accessed/Dirty below the top level (KNL erratum mask)...
    assert pgwalk.pte_none(0x60) and pgwalk.pmd_none(0x20) and pgwalk.p4d_none(0x40)
    # ...but the 5-level pgd_none does not, and a folded PGD is never none/bad.
    assert not pgwalk.pgd_none(0x20, levels=5)
    assert not pgwalk.pgd_none(0, levels=4) and not pgwalk.pgd_bad(0xE3, levels=4)
    # a table entry (_PAGE_TABLE) is not bad at any level; PS makes it bad.
    t = pgwalk.mk_table(7)
    assert t == 7 << 12 | 0x67
    assert not (pgwalk.pgd_bad(t) or pgwalk.p4d_bad(t) or pgwalk.pud_bad(t) or pgwalk.pmd_bad(t))
    assert pgwalk.pgd_bad(0xE3) and pgwalk.p4d_bad(0xE3) and pgwalk.pud_bad(0xE3)
    # PTI: NX is ignored at the top levels, not by pmd_bad.
    assert not pgwalk.p4d_bad(t | 1 << 63) and not pgwalk.pgd_bad(t | 1 << 63)
    # pmd_bad ignores only USER and ACCESSED: NX or a cleared RW make it bad
    # (the espfix PMDs that walk_pte_range's comment mentions).
    assert pgwalk.pmd_bad(t | 1 << 63) and pgwalk.pmd_bad(t & ~0x2)
    assert not pgwalk.pmd_bad(t & ~0x24)
    # pmd_present counts PSE and PROTNONE; pud_present only P.
    assert pgwalk.pmd_present(0x80) and pgwalk.pmd_present(0x100) and not pgwalk.pud_present(0x80)
    # trans_huge excludes devmap; leaf does not.
    assert pgwalk.pmd_leaf(1 << 58 | 0x81) and not pgwalk.pmd_trans_huge(1 << 58 | 0x81)
    # leaf PFNs are aligned: bits 12..20 of a PMD leaf are flags.
    leaf = pgwalk.pfn_pmd(512 * 3, 0x3)
    assert pgwalk.pmd_pfn(leaf) == 1536 and pgwalk.pmd_pfn(leaf | 1 << 12) == 1536
    assert pgwalk.pud_pfn(pgwalk.pfn_pud(1 << 18, 0x3)) == 1 << 18


def test_swap_entries_and_markers():
    """pgwalk's own non-present format (docs/encodings.md)."""
    e = pgwalk.swp_entry(SWP_MIGRATION_WRITE, 12345)
    pte = pgwalk.swp_entry_to_pte(e)
    assert pgwalk.is_swap_pte(pte) and not pgwalk.pte_present(pte) and not pgwalk.pte_none(pte)
    assert pgwalk.pte_to_swp_entry(pte) == e
    assert pgwalk.swp_type(e) == SWP_MIGRATION_WRITE and pgwalk.swp_offset(e) == 12345
    assert pgwalk.is_migration_entry(e)
    pmd = pgwalk.swp_entry_to_pmd(pgwalk.swp_entry(SWP_MIGRATION_READ, 512))
    assert pgwalk.is_pmd_migration_entry(pmd) and pgwalk.is_swap_pmd(pmd)
    assert not pgwalk.pmd_present(pmd) and not pgwalk.pmd_trans_huge(pmd)
    assert not pgwalk.is_pmd_migration_entry(pgwalk.swp_entry_to_pmd(pgwalk.swp_entry(0, 512)))
    g = pgwalk.make_pte_marker(PTE_MARKER_GUARD)
    assert pgwalk.is_guard_marker(g) and pgwalk.is_pte_marker(g)
    assert pgwalk.swp_type(pgwalk.pte_to_swp_entry(g)) == SWP_PTE_MARKER == 31
    assert not pgwalk.is_guard_marker(pgwalk.make_pte_marker(1))
    assert not pgwalk.is_guard_marker(pgwalk.pfn_pte(5, 0x67))
    with pytest.raises(ValueError):
        pgwalk.make_pte_marker(8)
    with pytest.raises(ValueError):
        pgwalk.swp_entry(32, 0)
    with pytest.raises(TypeError):
        pgwalk.pfn_pte("1", 0)


def test_swap_numbering_matches_linux():
    """include/linux/swap.h: 32 types, the special ones counted from the top."""
    assert pgwalk.MAX_SWAPFILES == 24
    assert (pgwalk.SWP_HWPOISON, pgwalk.SWP_MIGRATION_READ, pgwalk.SWP_MIGRATION_READ_EXCLUSIVE,
            pgwalk.SWP_MIGRATION_WRITE, pgwalk.SWP_DEVICE_WRITE, pgwalk.SWP_PTE_MARKER) == \
        (24, 25, 26, 27, 28, 31)
