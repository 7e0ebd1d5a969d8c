"""Count present PTEs with a C function reached through cffi (ABI mode).

    python -m pgwalk._examples.cffi.count_present

Reuses the ctypes example's C file (pgwalk/_examples/ctypes/count_present.c);
the cffi function pointer and a cffi ``int64_t *`` as user data go into a
pgwalk.LowLevelCallable.
"""

import tempfile

import cffi

import pgwalk
from pgwalk._examples.ctypes.count_present import build


def main():
    ffi = cffi.FFI()
    ffi.cdef("int count_present(uint64_t *, uint64_t, uint64_t, void *, void *);")
    mm = pgwalk.MM(levels=5)
    base = 0x7F0000000000
    mm.add_vma(base, base + (2 << 21))
    for i in range(0, 1024, 2):
        mm.map(base + i * 4096)
    with tempfile.TemporaryDirectory() as d:
        path = build(d)._name
        lib = ffi.dlopen(path)
        counter = ffi.new("int64_t *")
        fn = ffi.addressof(lib, "count_present")
        ops = pgwalk.MMWalkOps(pte_entry=pgwalk.LowLevelCallable(fn, user_data=counter))
        with mm.mmap_read_lock():
            rc = pgwalk.walk_page_range(mm, base, base + (2 << 21), ops)
        print(f"rc={rc} present PTEs={counter[0]}")
        return counter[0]


if __name__ == "__main__":
    main()
