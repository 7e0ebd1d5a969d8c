"""Count present PTEs with a numba @cfunc (numba is an optional extra).

    python -m pgwalk._examples.numba.count_present

The cfunc's signature is pgwalk's "entry" one; the counter is an int64
numpy array whose address is the user data.
"""

import numpy as np
from numba import carray, cfunc, types

import pgwalk

SIG = types.int32(types.CPointer(types.uint64), types.uint64, types.uint64,
                  types.voidptr, types.CPointer(types.int64))


@cfunc(SIG, nopython=True)
def count_present(entry, addr, next, walk, ctx):
    counter = carray(ctx, 1)
    if entry[0] & 1:
        counter[0] += 1
    return 0


def main():
    mm = pgwalk.MM(levels=4)
    base = 0x7F0000000000
    mm.add_vma(base, base + (2 << 21))
    for i in range(0, 1024, 4):
        mm.map(base + i * 4096)
    counter = np.zeros(1, dtype=np.int64)
    llc = pgwalk.LowLevelCallable(count_present, user_data=counter.ctypes.data)
    ops = pgwalk.MMWalkOps(pte_entry=llc)
    with mm.mmap_read_lock():
        rc = pgwalk.walk_page_range(mm, base, base + (2 << 21), ops)
    print(f"rc={rc} present PTEs={int(counter[0])}")
    return int(counter[0])


if __name__ == "__main__":
    main()
