"""C functions in ops slots (the built-in ops' tier): same walk, same
results as Python callbacks; signature checked per slot."""

import pytest

import pgwalk
from pgwalk._builtin import CountOp

B = 0x7F0000000000


def populated(levels):
    mm = pgwalk.MM(levels)
    mm.add_vma(B, B + (64 << 21))
    mm.add_vma(B + (80 << 21), B + (90 << 21))
    for i in range(0, 64, 3):
        mm.alloc_table(B + (i << 21), pgwalk.PMD)
    for i in range(5):
        mm.map(B + (1 << 21) * 3 + i * 4096 * 7)
    mm.map(B + (4 << 21), pgwalk.PMD)
    mm.set_entry(B + 5, pgwalk.PTE, pgwalk.swp_entry_to_pte(pgwalk.swp_entry(0, 9)))
    return mm


@pytest.mark.parametrize("levels", [4, 5])
def test_count_op_matches_python_callbacks(levels):
    mm = populated(levels)
    c = CountOp()
    ops = pgwalk.MMWalkOps(pte_entry=c.pte_entry, pmd_entry=c.pmd_entry, pte_hole=c.pte_hole)
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B - 4096, B + (100 << 21), ops) == 0
    seen = {"pte_present": 0, "pte_none": 0, "pte_swap": 0, "pmd": 0, "holes": 0}

    def pte(e, a, n, w):
        v = int(e)
        key = "pte_none" if pgwalk.pte_none(v) else "pte_present" if pgwalk.pte_present(v) else "pte_swap"
        seen[key] += 1
        return 0

    def pmd(e, a, n, w):
        seen["pmd"] += 1
        return 0

    def hole(a, n, d, w):
        seen["holes"] += 1
        return 0

    mm2 = populated(levels)
    with mm2.mmap_read_lock():
        assert pgwalk.walk_page_range(mm2, B - 4096, B + (100 << 21), pgwalk.MMWalkOps(
            pte_entry=pte, pmd_entry=pmd, pte_hole=hole)) == 0
    got = c.counts
    assert got["pte_present"] == seen["pte_present"] > 0
    assert got["pte_none"] == seen["pte_none"]
    assert got["pte_swap"] == seen["pte_swap"] == 1
    assert got["pmd_table"] + got["pmd_thp"] + got["pmd_other"] == seen["pmd"]
    assert got["holes"] == seen["holes"] > 0
    assert mm2.stats == mm.stats         # the THP was split the same way by both


def test_slot_signature_checked():
    c = CountOp()
    with pytest.raises(ValueError, match="pte_hole takes a C function of signature"):
        pgwalk.MMWalkOps(pte_hole=c.pte_entry)
    ops = pgwalk.MMWalkOps()
    with pytest.raises(ValueError):
        ops.install_pte = c.pte_hole
    with pytest.raises(TypeError):
        pgwalk.walker._core.CFunc()
