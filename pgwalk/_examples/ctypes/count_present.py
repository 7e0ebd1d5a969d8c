"""Count present PTEs with a C function loaded through ctypes.

    python -m pgwalk._examples.ctypes.count_present

Compiles count_present.c with the system C compiler into a temporary
directory, loads it with ctypes, and hands it to the walker as a
pgwalk.LowLevelCallable: the walk then runs without the GIL.
"""

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import pgwalk

HERE = Path(__file__).parent
ENTRY = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64,
                         ctypes.c_uint64, ctypes.POINTER(pgwalk.WalkStruct), ctypes.c_void_p)


def build(outdir):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler")
    lib = Path(outdir) / "libcount_present.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(HERE / "count_present.c")],
                   check=True)
    return ctypes.CDLL(str(lib))


def main():
    mm = pgwalk.MM(levels=4)
    base = 0x7F0000000000
    mm.add_vma(base, base + (4 << 21))
    for i in range(0, 4 * 512, 3):
        mm.map(base + i * 4096)
    with tempfile.TemporaryDirectory() as d:
        lib = build(d)
        fn = lib.count_present
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64, ctypes.c_uint64,
                       ctypes.POINTER(pgwalk.WalkStruct), ctypes.c_void_p]
        counter = ctypes.c_int64(0)
        ops = pgwalk.MMWalkOps(pte_entry=pgwalk.LowLevelCallable(fn, user_data=counter))
        with mm.mmap_read_lock():
            rc = pgwalk.walk_page_range(mm, base, base + (4 << 21), ops)
        print(f"rc={rc} present PTEs={counter.value}")
        return counter.value


if __name__ == "__main__":
    main()
