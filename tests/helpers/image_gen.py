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


# --- Linux-shaped images for find_roots (tests/image/test_roots.py, test_fleet.py) ---------------
#
# The layout follows arch/x86: every process PGD's kernel half is a copy of
# init_mm's from pgd_index(PAGE_OFFSET) on (pgd_ctor -> clone_pgd_range, which
# with PTI copies the user PGD's kernel half too); with PTI a PGD is an order-1
# allocation, the user copy in the odd frame (kernel_to_user_pgdp), holding the
# user half (without the NX the kernel copy gets) and, in its kernel half, the
# cpu_entry_area and ESPfix P4D entries, the per-CPU TSS page and the entry text
# (pti_clone_user_shared, pti_setup_espfix64, pti_clone_entry_text).  The kernel
# image is mapped with 2M leaves at 0xffffffff80000000 (PUD slot 510), and
# init_top_pgt lies inside it.  Boot-time tables: the real-mode trampoline PGD
# (low memory, entry 0 aliasing the direct map's table, kernel half copied) and
# early_top_pgt (in the kernel image, only entry 511 in its kernel half).

KTABLE, UTABLE = 0x63, 0x67                 # _KERNPG_TABLE, _PAGE_TABLE
NX = 1 << 63
LAYOUT = {4: dict(page_offset=0xFFFF888000000000, vmalloc=0xFFFFC90000000000, vmemmap=0xFFFFEA0000000000,
                  ldt_slot=512 - 240),
          5: dict(page_offset=0xFF11000000000000, vmalloc=0xFFA0000000000000, vmemmap=0xFFD4000000000000,
                  ldt_slot=512 - 112)}
KIMG_VA, CEA_VA, ESPFIX_VA = 0xFFFFFFFF80000000, 0xFFFFFE0000000000, 0xFFFFFF0000000000
VSYSCALL_VA, FIXMAP_VA = 0xFFFFFFFFFF600000, 0xFFFFFFFFFF5FF000


class TableBuilder:
    """x86-64 tables written into a frames array, tables taken from pools."""

    def __init__(self, nframes, levels):
        self.w = np.zeros(nframes * 512, dtype=np.uint64)
        self.levels = levels
        self.pools = {}

    def pool(self, name, first, last):
        self.pools[name] = iter(range(first, last))

    def alloc(self, pool):
        return next(self.pools[pool])

    def shifts(self):
        return [48, 39, 30, 21, 12] if self.levels == 5 else [39, 30, 21, 12]

    def table(self, root, va, depth, pool, flags=KTABLE):
        """The table at ``depth`` (0: the root) on ``va``'s path, allocated as needed."""
        t = root
        for sh in self.shifts()[:depth]:
            i = t * 512 + ((va >> sh) & 511)
            if not int(self.w[i]) & 1:
                self.w[i] = (self.alloc(pool) << 12) | flags
            t = (int(self.w[i]) & PFN_MASK) >> 12
        return t

    def set(self, root, va, depth, value, pool, flags=KTABLE):
        t = self.table(root, va, depth, pool, flags)
        self.w[t * 512 + ((va >> self.shifts()[depth]) & 511)] = value

    def get(self, root, va, depth):
        t = self.table(root, va, depth, None)
        return int(self.w[t * 512 + ((va >> self.shifts()[depth]) & 511)])

    def frame(self, pfn):
        return self.w[pfn * 512:(pfn + 1) * 512]


def make_linux_image(levels=4, pti=True, nproc=4, seed=0, nframes=8192):
    """A Linux-shaped image: (frames as uint64, truth).  ``truth``: kernel
    (pfn), user_of {kernel pfn: user pfn}, process [pfn], stale [pfn], boot
    [pfn], ldt (pfn of the process with an LDT mapping)."""
    rng = random.Random(seed)
    b = TableBuilder(nframes, levels)
    lay = LAYOUT[levels]
    pd, pmd, pte = levels - 3, levels - 2, levels - 1        # depths of the PUD, PMD, PTE slots
    kimg_pa = 16 << 20                                        # the kernel image: 16-24 MiB
    kimg_pfn = kimg_pa >> 12
    b.pool("kimg", kimg_pfn + 0x200, kimg_pfn + 0x240)
    b.pool("ram", 1024, 1536)
    data = list(range(1536, 4096))                           # data frames (leaves point here)
    rng.shuffle(data)
    ktop = b.alloc("kimg")
    if ktop % 2:
        ktop = b.alloc("kimg")
    utop = b.alloc("kimg") if pti else None
    tr = {"kernel": ktop, "user_of": {}, "process": [], "stale": [], "boot": []}
    # init_top_pgt: kernel image (2M leaves, G), fixmap, vsyscall, direct map, vmalloc, vmemmap, CEA, ESPfix
    for i in range(4):
        b.set(ktop, KIMG_VA + (i << 21), pmd, (kimg_pa + (i << 21)) | 0x1E3, "kimg")
    b.set(ktop, FIXMAP_VA, pte, (data.pop() << 12) | 0x163, "kimg")
    b.set(ktop, VSYSCALL_VA, pte, (data.pop() << 12) | 0x125, "kimg")
    b.set(ktop, lay["page_offset"], pd, 0 | 0x1E3, "ram")                     # 1G of direct map
    for k in range(3):
        b.set(ktop, lay["vmalloc"] + (k << 12), pte, (data.pop() << 12) | 0x8000000000000163, "ram")
    b.set(ktop, lay["vmemmap"], pmd, (4 << 20) | 0x80000000000001E3, "ram")
    for k in range(4):
        b.set(ktop, CEA_VA + (k << 12), pte, (data.pop() << 12) | 0x8000000000000161, "ram")
    b.set(ktop, ESPFIX_VA, pte, (data.pop() << 12) | 0x8000000000000161, "ram")
    boundary = (lay["page_offset"] >> b.shifts()[0]) & 511   # KERNEL_PGD_BOUNDARY
    if pti:
        # the user copy's kernel half: CEA and ESPfix P4D entries, TSS page, entry text, vsyscall
        for va in (CEA_VA, ESPFIX_VA):
            b.set(utop, va, levels - 4, b.get(ktop, va, levels - 4), "ram")
        b.set(utop, lay["page_offset"] + 0x1234000, pte, (0x1234 << 12) | 0x8000000000000163, "ram")
        b.set(utop, KIMG_VA + (1 << 24), pmd, b.get(ktop, KIMG_VA + (1 << 24), pmd), "ram")
        b.set(utop, VSYSCALL_VA, pte, b.get(ktop, VSYSCALL_VA, pte), "ram")
        tr["user_of"][ktop] = utop

    free = list(range(6144 // 2, 8000 // 2))                 # order-1 PGD allocations: even frames
    rng.shuffle(free)

    def pgd_alloc():
        k = free.pop() * 2
        b.frame(k)[boundary:] = b.frame(ktop)[boundary:]
        if pti:
            b.frame(k + 1)[boundary:] = b.frame(utop)[boundary:]
        return k

    def user_map(k, va, depth, value):
        """A user mapping: tables with _PAGE_TABLE; the top entry NX in the
        kernel copy (__pti_set_user_pgtbl) and mirrored in the user copy."""
        b.set(k, va, depth, value, "ram", UTABLE)
        i = k * 512 + ((va >> b.shifts()[0]) & 511)
        if pti:
            b.w[i + 512] = int(b.w[i]) & ~NX
            b.w[i] = int(b.w[i]) | NX

    for n in range(nproc):
        k = pgd_alloc()
        for j in range(rng.randint(2, 6)):
            user_map(k, 0x400000 + (j << 12), pte, (data.pop() << 12) | 0x25)
        user_map(k, 0x7FFFFFFDE000, pte, (data.pop() << 12) | 0x8000000000000067)
        if n == 1:
            user_map(k, 0x7F0000200000, pmd, (6 << 20) | 0x80000000000000E7)    # a THP
        if n == 2:                                                             # an LDT mapping (map_ldt_struct)
            b.set(k, ((lay["ldt_slot"] - 512) << b.shifts()[0]) & ((1 << 64) - 1), pte,
                  (data.pop() << 12) | 0x8000000000000161, "ram")
            if pti:
                b.w[(k + 1) * 512 + lay["ldt_slot"]] = b.w[k * 512 + lay["ldt_slot"]]
            tr["ldt"] = k
        tr["process"].append(k)
        if pti:
            tr["user_of"][k] = k + 1
    # freed PGDs of exited processes: user half cleared by free_pgtables, or
    # its tables freed and reused (garbage where a PUD table was)
    for n in range(2):
        k = pgd_alloc()
        if n == 1:
            g = data.pop()
            b.frame(g)[:] = np.frombuffer(rng.randbytes(4096), dtype=np.uint64)
            b.w[k * 512 + 3] = (g << 12) | UTABLE | NX
            if pti:
                b.w[(k + 1) * 512 + 3] = (g << 12) | UTABLE
        tr["stale"].append(k)
        if pti:
            tr["user_of"][k] = k + 1
    # boot-time tables: the trampoline PGD (setup_real_mode) and early_top_pgt
    tramp = 0x9A
    b.frame(tramp)[boundary:] = b.frame(ktop)[boundary:]
    b.frame(tramp)[0] = b.frame(ktop)[boundary]
    early = b.alloc("kimg")
    early += early % 2
    b.frame(early)[511] = b.frame(ktop)[511]
    b.set(early, 0, pd, 0x1E3, "ram")                                         # identity 1G
    tr["boot"] += [tramp, early]
    # noise: random frames, a full user PTE table, a lone link at entry 511
    for _ in range(40):
        b.frame(data.pop())[:] = np.frombuffer(rng.randbytes(4096), dtype=np.uint64)
    full = data.pop()
    b.frame(full)[:] = ((np.array(data[:512], dtype=np.uint64) << np.uint64(12))
                        | np.uint64(0x8000000000000067))
    b.frame(data.pop())[511] = (data[0] << 12) | UTABLE
    return b.w, tr
