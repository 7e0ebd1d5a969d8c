"""A generator of random x86-64 4-level tables in a sparse raw image whose
leaves point mostly inside it (tests/image/test_image_volatility.py,
benchmarks/images.py): contiguous runs, tables of 512 equal entries, PML4
entries that the kernel's p4d_bad rejects, large leaves with the PAT bit or a
reserved bit, loops back to the root, links beyond the image, PROT_NONE and
swap PTEs."""

import random

import numpy as np

P, RW, US, PWT, PCD, A, PSE, G = 1, 2, 4, 8, 0x10, 0x20, 0x80, 0x100
TABLE = 0x67
PFN_MASK = ((1 << 52) - 1) & ~0xFFF
PAT_LARGE = 1 << 12
GIB = 1 << 30


def make_vol_image(seed, nframes=80, phys_gib=3):
    """A random 4-level image: (table frames as uint64, root pfn, file size).
    Leaves point mostly inside the ``phys_gib`` GiB file, some beyond it."""
    rng = random.Random(seed)
    img = np.zeros(nframes * 512, dtype=np.uint64)
    free = list(range(2, nframes))
    rng.shuffle(free)
    root = 1
    limit = phys_gib * GIB * 5 // 4                 # a fifth of the leaves land outside

    def leaf_pa(size):
        return rng.randrange(limit // size) * size

    def fill(frame, level):                         # 0 pgd, 2 pud, 3 pmd, 4 pte (p4d folded)
        base = frame * 512
        shape = rng.random()
        if level == 4 and shape < 0.15:             # 512 equal present PTEs
            img[base:base + 512] = leaf_pa(4096) | P | RW
            return
        if level == 4 and shape < 0.5:              # a contiguous run
            i, n, pa = rng.randrange(400), rng.randint(2, 100), leaf_pa(4096)
            img[base + i:base + i + n] = (pa + 4096 * np.arange(n, dtype=np.uint64)) | P | RW
        for k in range(rng.randint(1, 5) + (level == 0)):
            i = rng.randrange(512)
            kind = rng.random() if k or level != 0 else 0.99     # the root has one good link at least
            child = None
            if level == 4:
                v = rng.choice([leaf_pa(4096) | P | RW | US, leaf_pa(4096) | P | (1 << 63),
                                0x100 | (7 << 12), (3 << 52) | (9 << 12) | 2, 0x60])
            elif level in (2, 3) and kind < 0.35:
                size = GIB if level == 2 else 2 << 20
                v = leaf_pa(size) | P | RW | PSE
                r = rng.random()
                if r < 0.1:
                    v |= PAT_LARGE
                elif r < 0.2:
                    v |= 1 << rng.randrange(13, 21)        # reserved in a 2M and a 1G leaf
                elif r < 0.3:
                    v &= ~P
            elif level == 3 and kind < 0.45 and free:     # a PMD table of 512 equal links
                child = free.pop()
                img[base:base + 512] = (child << 12) | TABLE
                fill(child, 4)
                return
            elif kind < 0.5 and level == 0:
                v = (TABLE | rng.choice([PSE, PCD, PWT, G, 1 << 9]))      # p4d_bad, hardware-valid or not
                child = free.pop() if free else None
                if child is None:
                    continue
                v |= child << 12
            elif kind < 0.6:
                v = rng.choice([(root << 12) | TABLE, (1 << 51) | TABLE, 0xE3])
            else:
                child = free.pop() if free else None
                if child is None:
                    continue
                v = (child << 12) | TABLE
            img[base + i] = v
            if child is not None:
                fill(child, 2 if level == 0 else level + 1)

    fill(root, 0)
    return img, root, phys_gib * GIB


def write_image(path, img, size):
    with open(path, "wb") as f:
        f.write(img.tobytes())
        f.truncate(size)                            # sparse: the rest reads as zeros
