"""The table pool and the MM's page-table editing calls:
map / alloc_table / entry / set_entry / validate / fail_table_alloc / stats,
and the pool primitives' refusal of out-of-range input (never a crash)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pgwalk
from pgwalk import P4D, PGD, PMD, PTE, PUD

A = 0x7F0000200000


@pytest.mark.parametrize("levels", [4, 5])
def test_map_entry_and_tables(levels):
    mm = pgwalk.MM(levels)
    assert mm.nr_tables == 1 and mm.entry(A, PTE) == 0
    v = mm.map(A, pfn=0x1234)
    assert pgwalk.pte_pfn(v) == 0x1234 and mm.entry(A, PTE) == v
    assert mm.nr_tables == (4 if levels == 4 else 5)           # pgd (+p4d) + pud + pmd + pte
    assert mm.stats["alloc"] == {"p4d": levels - 4, "pud": 1, "pmd": 1, "pte": 1}
    thp = mm.map(A + (1 << 21), PMD)
    assert pgwalk.pmd_trans_huge(thp) and pgwalk.pmd_pfn(thp) % 512 == 0
    # 4-level: PGD and P4D name the same (folded) slot.
    assert (mm.entry(A, PGD) == mm.entry(A, P4D)) == (levels == 4)
    with pytest.raises(ValueError, match="aligned"):
        mm.map(A + 4096, PMD)
    with pytest.raises(ValueError, match="links a page table"):
        mm.map(A, PMD)                                          # a PTE table is there
    with pytest.raises(ValueError, match="level"):
        mm.map(A, 7)
    mm.validate()


def test_alloc_table_and_set_entry_free_subtrees():
    mm = pgwalk.MM(4)
    t = mm.alloc_table(A, PMD)
    assert t.level == PTE and len(t) == 512 and int(np.asarray(t).sum()) == 0
    assert mm.alloc_table(A, PMD).index == t.index            # an existing table is kept
    mm.map(A, pfn=5)
    assert t[0] == mm.entry(A, PTE)
    before = mm.nr_tables
    mm.set_entry(A, PUD, 0)                                    # unlinks the PMD + PTE tables
    assert mm.nr_tables == before - 2 and mm.entry(A, PTE) == 0
    assert mm.stats["freed"]["pte"] == 1 and mm.stats["freed"]["pmd"] == 1
    mm.set_entry(A, PMD, 0xDEADBEEF)                           # garbage is allowed
    with pytest.raises(ValueError):
        mm.alloc_table(A, PMD)                                 # ...but is not a table
    mm.validate()


def test_validate_catches_a_broken_tree():
    mm = pgwalk.MM(4)
    mm.map(A)
    tid, idx = mm._locate(A, PMD, False)
    mm._table(tid)[idx] = 0                                    # orphan the PTE table by hand
    with pytest.raises(pgwalk.InvariantError, match="unreachable|not linked"):
        mm.validate()


def test_fail_table_alloc_counts_every_allocation():
    mm = pgwalk.MM(4)
    mm.fail_table_alloc(at=[2])
    with pytest.raises(OSError) as e:
        mm.map(A)                                              # pud ok, pmd fails
    assert e.value.errno == 12
    assert mm.stats["alloc_failed"] == 1 and mm.stats["alloc"]["pud"] == 1
    mm.map(A)                                                  # 3rd, 4th succeed
    with pytest.raises(ValueError):
        mm.fail_table_alloc(at=[0])
    mm.fail_table_alloc(at=[1])
    with pytest.raises(ValueError):
        mm.fail_table_alloc(at=[1, 1 << 64])                   # bad input keeps the old schedule
    with pytest.raises(OSError):
        mm.alloc_table(A + (1 << 30), PUD)
    mm.validate()


def test_pool_grows_without_moving_tables():
    mm = pgwalk.MM(4)
    first = mm.alloc_table(A, PMD)
    ptr = np.asarray(first).__array_interface__["data"][0]
    for i in range(1, 1200):                                   # > 2 slabs of tables
        mm.alloc_table(A + i * (1 << 21), PMD)
    assert np.asarray(first).__array_interface__["data"][0] == ptr
    assert mm.nr_tables > 1200
    mm.validate()


def test_primitives_refuse_bad_indices():
    mm = pgwalk.MM(4)
    for call in (lambda: mm._child(10 ** 7, 0), lambda: mm._child(mm.pgd_id, 512),
                 lambda: mm._table_level(10 ** 4), lambda: mm._table(0),
                 lambda: mm._alloc(mm.pgd_id, 0, 9), lambda: mm._free_below(mm.pgd_id, 0, 4),
                 lambda: pgwalk.PageTable(mm, 10 ** 6, 0), lambda: pgwalk.PageTable(mm, mm.pgd_id, 7)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(KeyError):
        mm._stat_inc("alloc")
    with pytest.raises(TypeError):
        pgwalk.PageTable(None, 1, 0)
    mm.alloc_table(A, PGD)
    tid, idx = mm._locate(A, PGD, False)
    with pytest.raises(ValueError, match="already links"):
        mm._alloc(tid, idx, PUD)                               # would orphan the table
    mm.validate()


def test_pagetable_array_protocol():
    mm = pgwalk.MM(4)
    mm.map(A)
    view = np.asarray(mm.pgd)
    copy = np.array(mm.pgd, copy=True)
    copy[254] = 0
    assert view[254] != 0 and mm.pgd[254] == int(view[254])
    with pytest.raises(ValueError):
        np.array(mm.pgd, dtype=np.int32, copy=False)


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is the optional 'typecheck' extra; the stub check needs it")
def test_type_stub_matches_the_compiled_module(tmp_path):
    """The stubs of every compiled module (_core, _builtin, _ptrange, _image, _mmops, _roots, _framing)
    against the compiled modules (mypy stubtest),
    run from an empty folder so that the imported pgwalk is the one in use."""
    root = Path(pgwalk.__file__).parent
    allow = Path(__file__).resolve().parents[2] / "pgwalk" / "stubtest-allowlist.txt"
    env = dict(__import__("os").environ, PYTHONPATH=str(root.parent))
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "pgwalk.walker._core", "pgwalk.walker._builtin",
                        "pgwalk.image._image", "pgwalk.process._mmops", "pgwalk.walker._ptrange",
                        "pgwalk.image._roots", "pgwalk.image.formats._framing",
                        "--allowlist", str(allow)], capture_output=True, text=True,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr + str(root)


def test_argument_checks_found_by_the_api_fuzzer():
    """stats= must be a WalkStats; fail_table_alloc(at=) an iterable of ints;
    map(pfn=) within the 40-bit PFN field (docs/robustness.md, findings 3-5)."""
    mm = pgwalk.MM(4)
    mm.add_vma(A, A + 4096)
    ops = pgwalk.MMWalkOps(pte_entry=lambda *a: 0)
    with mm.mmap_read_lock():
        for bad in (5, pgwalk.WalkStats):
            with pytest.raises(TypeError, match="stats"):
                pgwalk.walk_page_range(mm, A, A + 4096, ops, stats=bad)
    for bad in ("12", 3, [1.5], [True]):
        with pytest.raises(TypeError, match="at"):
            mm.fail_table_alloc(at=bad)
    with pytest.raises(ValueError, match="pfn"):
        mm.map(A, pfn=1 << 40)
    mm.validate()
