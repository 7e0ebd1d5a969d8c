"""API bad-input fuzzing: wrong types, negatives, values >= 2**64,
unaligned and non-canonical addresses for every public walker entry point
and the MM table-editing calls.  Each call must return the kernel's errno
(a negative int; 0 when the input turns out to be valid) or raise
TypeError/ValueError/OSError naming the argument -- never crash, never
another exception type -- and leave the mm valid.

Known gaps, kept out of these checks and described in docs/robustness.md
(Open findings): ``stats=`` of the wrong type (AttributeError after the
walk), ``fail_table_alloc(at=...)`` messages and leniency, ``map(pfn=)``
beyond the PFN field.
"""

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, given, settings

import pgwalk
from pgwalk import P4D, PGD, PMD, PTE, PUD
from pgwalk.internal import walk_page_range_mm

MiB = 1 << 20
B = 0x7F0000000000
OK_EXC = (TypeError, ValueError, OSError)
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

junk = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=3),
    st.binary(max_size=3), st.lists(st.integers(0, 9), max_size=2), st.just(object()),
    st.integers(-(1 << 70), 1 << 70),
    st.sampled_from([np.uint64(B), np.int64(-1), np.int32(7), np.float64(4096.0)]),
)
addresses = st.one_of(
    st.integers(-(1 << 80), -1), st.integers(1 << 64, 1 << 80),
    st.sampled_from([0, 1, 4095, 4096, (1 << 47) - 4096, 1 << 47, (1 << 47) + 4096, 1 << 56,
                     1 << 63, (1 << 64) - 4096, (1 << 64) - 1, 0xFFFF800000000000,
                     0xFF00000000000000]),
    st.integers(0, (1 << 64) - 1),
    st.integers(0, 8 * MiB).map(lambda d: B + d),              # near the VMA, unaligned too
)
levels_ = st.one_of(st.integers(-3, 8), st.sampled_from([PGD, P4D, PUD, PMD, PTE]), junk)
anything = st.one_of(junk, addresses)


def names_arg(exc, names):
    msg = str(exc)
    return any(n in msg for n in names)


def check_outcome(call, names):
    try:
        r = call()
    except OK_EXC as e:
        assert names_arg(e, names), f"{type(e).__name__}({e}) names none of {names}"
        return e
    assert isinstance(r, int) and r <= 0, r
    return r


def new_mm(levels=4):
    mm = pgwalk.MM(levels)
    vma = mm.add_vma(B, B + 4 * MiB)
    mm.map(B)
    mm.map(B + 2 * MiB, level=PMD)
    return mm, vma


OPS = pgwalk.MMWalkOps(pmd_entry=lambda e, a, n, w: 0, pte_hole=lambda a, n, d, w: 0)
INSTALL = pgwalk.MMWalkOps(pte_entry=lambda e, a, n, w: 0,
                           install_pte=lambda a, n, p, w: p.set(0x67) or 0)
WALK_NAMES = ("start", "end", "ops", "mm", "vma", "pgd", "range")


@SETTINGS
@given(st.sampled_from(["walk_page_range", "walk_page_range_mm", "walk_page_range_novma",
                        "walk_page_range_vma", "walk_page_vma"]),
       st.sampled_from([4, 5]),
       st.lists(st.sampled_from(["start", "end", "ops", "mm", "vma", "pgd"]), min_size=1,
                max_size=2, unique=True),
       st.fixed_dictionaries({"start": anything, "end": anything, "ops": anything,
                              "mm": anything, "vma": anything, "pgd": anything}),
       st.booleans())
def test_walker_entry_points_reject_bad_input(api, levels, bad, values, install):
    mm, vma = new_mm(levels)
    args = {"start": B, "end": B + 4 * MiB, "ops": INSTALL if install and api.endswith("_mm") else OPS,
            "mm": mm, "vma": vma, "pgd": None}
    for k in bad:
        args[k] = values[k]
    a = args
    if api == "walk_page_range":
        call = lambda: pgwalk.walk_page_range(a["mm"], a["start"], a["end"], a["ops"])  # noqa: E731
    elif api == "walk_page_range_mm":
        call = lambda: walk_page_range_mm(a["mm"], a["start"], a["end"], a["ops"])  # noqa: E731
    elif api == "walk_page_range_novma":
        call = lambda: pgwalk.walk_page_range_novma(a["mm"], a["start"], a["end"], a["ops"],  # noqa: E731
                                                    pgd=a["pgd"])
    elif api == "walk_page_range_vma":
        call = lambda: pgwalk.walk_page_range_vma(a["vma"], a["start"], a["end"], a["ops"])  # noqa: E731
    else:
        call = lambda: pgwalk.walk_page_vma(a["vma"], a["ops"])  # noqa: E731
    lock = mm.mmap_write_lock() if api == "walk_page_range_novma" else mm.mmap_read_lock()
    with lock:
        check_outcome(call, WALK_NAMES)
    mm.validate()


def test_walker_errnos_for_the_kernels_own_refusals():
    """What the kernel itself refuses gives its errno, not an exception."""
    mm, vma = new_mm()
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B + 4096, B + 4096, OPS) == -22        # empty range
        assert pgwalk.walk_page_range(mm, B + 8192, B, OPS) == -22               # inverted
        assert pgwalk.walk_page_range(None, B, B + 4096, OPS) == -22             # no mm
        assert pgwalk.walk_page_range(mm, B, B + 4096, INSTALL) == -22           # install_pte
        assert pgwalk.walk_page_range_vma(vma, B - 4096, B + 4096, OPS) == -22   # outside the VMA
        assert pgwalk.walk_page_vma(pgwalk.VMA(B, B + 4096), OPS) == -22         # no vm_mm
    with mm.mmap_write_lock():
        assert pgwalk.walk_page_range_novma(mm, B, B, OPS) == -22
        assert pgwalk.walk_page_range_novma(mm, B, B + 4096, INSTALL) == -22


@SETTINGS
@given(st.sampled_from(["map", "alloc_table", "entry", "set_entry", "add_vma", "fail_table_alloc"]),
       st.sampled_from([4, 5]),
       st.fixed_dictionaries({"addr": addresses, "level": levels_, "value": anything,
                              "pfn": anything, "prot": anything, "start": addresses,
                              "end": addresses, "vm_flags": anything, "hugepage_size": anything,
                              "at": st.one_of(anything, st.lists(anything, max_size=3))}),
       st.lists(st.sampled_from(["addr", "level", "value", "pfn", "prot", "start", "end",
                                 "vm_flags", "hugepage_size"]), min_size=1, max_size=3, unique=True),
       st.booleans())
def test_mm_table_editing_rejects_bad_input(meth, levels, values, bad, init):
    mm = pgwalk.init_mm(levels) if init else pgwalk.MM(levels)
    mm.add_vma(B, B + 4 * MiB) if not init else None
    good = {"addr": B + 4096, "level": PTE, "value": 0x67, "pfn": None, "prot": 0x67,
            "start": B + 8 * MiB, "end": B + 10 * MiB, "vm_flags": 0, "hugepage_size": 2 * MiB}
    a = dict(good)
    for k in bad:
        a[k] = values[k]
    if meth == "map":
        if a["level"] == PMD and "addr" not in bad:
            a["addr"] = B + 2 * MiB
        call = lambda: mm.map(a["addr"], a["level"], pfn=a["pfn"], prot=a["prot"])  # noqa: E731
        names = ("addr", "level", "pfn", "prot", "address", "slot")
    elif meth == "alloc_table":
        call = lambda: mm.alloc_table(a["addr"], a["level"])  # noqa: E731
        names = ("addr", "level", "address", "slot", "allocation")
    elif meth == "entry":
        call = lambda: mm.entry(a["addr"], a["level"])  # noqa: E731
        names = ("addr", "level")
    elif meth == "set_entry":
        call = lambda: mm.set_entry(a["addr"], a["level"], a["value"])  # noqa: E731
        names = ("addr", "level", "value", "address")
    elif meth == "add_vma":
        call = lambda: mm.add_vma(a["start"], a["end"], a["vm_flags"],  # noqa: E731
                                  hugepage_size=a["hugepage_size"])
        names = ("start", "end", "vm_flags", "hugepage_size", "overlaps", "VM_HUGETLB")
    else:
        call = lambda: mm.fail_table_alloc(at=values["at"])  # noqa: E731
        names = ("",)          # the messages do not all name `at` (docs/robustness.md)
    try:
        r = call()
    except OK_EXC as e:
        assert names_arg(e, names), f"{type(e).__name__}({e}) names none of {names}"
    else:
        if meth == "map":
            assert isinstance(r, int)
        elif meth == "entry":
            assert isinstance(r, int) and 0 <= r < 1 << 64
    mm.fail_table_alloc(at=())
    mm.validate()
    # and the mm still walks
    with mm.mmap_write_lock():
        assert pgwalk.walk_page_range_novma(mm, 0, 1 << 20, OPS) == 0
