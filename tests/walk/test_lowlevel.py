"""Low-level callables (scipy.LowLevelCallable convention): ctypes, cffi,
PyCapsule and numba function pointers in ops slots, the C view of `walk`
(private, action), signature checks; and the runnable examples, including
the Cython one built against the installed package."""

import ctypes
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pgwalk
from pgwalk._examples.ctypes import count_present as ex_ctypes

B = 0x7F0000000000
ARGS = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64, ctypes.c_uint64,
        ctypes.POINTER(pgwalk.WalkStruct), ctypes.c_void_p]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return ex_ctypes.build(tmp_path_factory.mktemp("lib"))


def fn(lib, name, argtypes=ARGS, restype=ctypes.c_int):
    f = getattr(lib, name)
    f.argtypes, f.restype = argtypes, restype
    return f


def mm_with(n_tables=4, every=3, levels=4):
    mm = pgwalk.MM(levels)
    mm.add_vma(B, B + (n_tables << 21))
    for i in range(0, n_tables * 512, every):
        mm.map(B + i * 4096)
    return mm, len(range(0, n_tables * 512, every))


def test_ctypes_function_counts_through_user_data(lib):
    mm, n = mm_with()
    counter = ctypes.c_int64(0)
    llc = pgwalk.LowLevelCallable(fn(lib, "count_present"), user_data=counter)
    assert llc.kind == "entry"
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B, B + (4 << 21), pgwalk.MMWalkOps(pte_entry=llc)) == 0
    assert counter.value == n


def test_c_callback_reads_private_and_sets_action(lib):
    mm, n = mm_with()
    counter = ctypes.c_int64(0)
    ops = pgwalk.MMWalkOps(pte_entry=pgwalk.LowLevelCallable(fn(lib, "count_into_private")))
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B, B + (4 << 21), ops, private=counter) == 0
    assert counter.value == n
    # a C pmd_entry setting ACTION_CONTINUE through walk->action: no PTE is visited
    counter.value = 0
    ops = pgwalk.MMWalkOps(pte_entry=pgwalk.LowLevelCallable(fn(lib, "count_present"), user_data=counter),
                           pmd_entry=pgwalk.LowLevelCallable(fn(lib, "skip_pmd")))
    st = pgwalk.WalkStats()
    with mm.mmap_read_lock():
        assert pgwalk.walk_page_range(mm, B, B + (4 << 21), ops, stats=st) == 0
    assert counter.value == 0 and st.calls == {"pmd_entry": 4}


def test_capsule_named_with_the_signature(lib):
    mm, n = mm_with()
    f = fn(lib, "count_present")
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    name = pgwalk.lowlevel.SIGNATURES["entry"].encode()     # kept alive: the capsule keeps a pointer
    cap = new(ctypes.cast(f, ctypes.c_void_p).value, name, None)
    counter = ctypes.c_int64(0)
    with mm.mmap_read_lock():
        pgwalk.walk_page_range(mm, B, B + (4 << 21), pgwalk.MMWalkOps(
            pte_entry=pgwalk.LowLevelCallable(cap, user_data=counter)))
    assert counter.value == n
    bad = new(ctypes.cast(f, ctypes.c_void_p).value, b"int (double)", None)
    with pytest.raises(ValueError, match="accepted"):
        pgwalk.LowLevelCallable(bad)


def test_signature_mismatches_list_the_accepted_ones(lib):
    wrong = fn(lib, "count_present", argtypes=[ctypes.c_double, ctypes.c_uint64], restype=ctypes.c_int)
    with pytest.raises(ValueError) as e:
        pgwalk.LowLevelCallable(wrong)
    for kind in ("entry", "hole", "install", "batch"):
        assert kind in str(e.value)
    llc = pgwalk.LowLevelCallable(fn(lib, "count_present"))
    with pytest.raises(ValueError, match="pte_hole takes a C function of signature"):
        pgwalk.MMWalkOps(pte_hole=llc)
    with pytest.raises(ValueError, match="does not match"):
        pgwalk.LowLevelCallable(fn(lib, "count_present"), signature=pgwalk.lowlevel.SIGNATURES["hole"])
    with pytest.raises(ValueError):
        pgwalk.LowLevelCallable(3.5)


def test_two_threads_walk_disjoint_ranges_under_the_read_lock(lib):
    """C tiers release the GIL; both walks run (and give exact answers)."""
    mm, _ = mm_with(n_tables=64, every=2)
    results = {}

    def work(k, lo, hi):
        counter = ctypes.c_int64(0)
        ops = pgwalk.MMWalkOps(pte_entry=pgwalk.LowLevelCallable(fn(lib, "count_present"), user_data=counter))
        with mm.mmap_read_lock():
            for _ in range(20):
                assert pgwalk.walk_page_range(mm, lo, hi, ops) == 0
        results[k] = counter.value

    half = B + (32 << 21)
    threads = [threading.Thread(target=work, args=(0, B, half)),
               threading.Thread(target=work, args=(1, half, B + (64 << 21)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: 20 * 32 * 256, 1: 20 * 32 * 256}


def test_example_ctypes_and_cffi():
    assert ex_ctypes.main() == len(range(0, 4 * 512, 3))
    from pgwalk._examples.cffi import count_present as ex_cffi
    assert ex_cffi.main() == 512


@pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                    reason="numba is an optional extra ('numba'); its example needs it")
def test_example_numba():
    from pgwalk._examples.numba import count_present as ex_numba
    assert ex_numba.main() == 256


def test_example_cython_builds_against_the_installed_package(tmp_path):
    """The Cython example cimports pgwalk's .pxd from the installed package,
    compiles into its own module and walks (about 10 s: a real compile)."""
    script = Path(pgwalk.__file__).parent / "_examples" / "cython" / "build.py"
    env = dict(os.environ, PYTHONPATH=str(Path(pgwalk.__file__).parent.parent))   # the pgwalk in use
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "present PTEs=128" in r.stdout
