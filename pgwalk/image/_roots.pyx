# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""C passes over an image's frames for ``roots.find_roots``.

``scan`` reads every frame once (nogil) and keeps the frames that can be a
Linux x86-64 top-level table: entry 511 present (every PGD maps the kernel
image there) and every entry either zero or a table link the kernel's
``pgd_bad``/``p4d_bad`` would accept, pointing inside the image.  For each it
requires the 16 slots of the hypervisor guard hole (256-271, both paging
modes) to be empty; for each candidate it hashes the kernel half (entries 256-511 less the two LDT slots), counts the
present entries of both halves and tries the kernel-image test of
``detect_levels``.
"""

from libc.stdint cimport uint64_t, int64_t, int32_t
from libc.stdlib cimport realloc, free

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef uint64_t P = 1
cdef uint64_t PSE = 0x80
cdef uint64_t PFN = ((<uint64_t>1 << 52) - 1) & ~<uint64_t>0xFFF
# what a table link may carry besides its address: P RW US A D NX (p4d_bad)
cdef uint64_t LINK_OK = 0x1 | 0x2 | 0x4 | 0x20 | 0x40 | (<uint64_t>1 << 63)
cdef int LDT_L4 = 512 - 240          # pgd slot of LDT_BASE_ADDR, 4-level (-240 PGD entries)
cdef int LDT_L5 = 512 - 112           # 5-level
cdef uint64_t FNV_BASIS = 0xcbf29ce484222325
cdef uint64_t FNV_PRIME = 0x100000001b3


cdef struct Img:
    const uint64_t *base
    int64_t nfile                      # frames in the file
    const int64_t *segs                # (first pfn, frames, first file frame) * nsegs; NULL: raw
    int64_t nsegs
    uint64_t max_pfn                   # one past the highest pfn in the image


cdef inline const uint64_t *frame(Img *im, uint64_t pfn) noexcept nogil:
    """The frame ``pfn`` of the image, or NULL outside it."""
    cdef int64_t lo, hi, mid
    if pfn >= im.max_pfn:
        return NULL
    if im.segs == NULL:
        return im.base + (pfn << 9)
    lo, hi = 0, im.nsegs - 1
    while lo <= hi:
        mid = (lo + hi) >> 1
        if <uint64_t>im.segs[3 * mid] > pfn:
            hi = mid - 1
        elif pfn >= <uint64_t>(im.segs[3 * mid] + im.segs[3 * mid + 1]):
            lo = mid + 1
        else:
            return im.base + ((<uint64_t>im.segs[3 * mid + 2] + pfn - <uint64_t>im.segs[3 * mid]) << 9)
    return NULL


cdef inline bint link(Img *im, uint64_t v) noexcept nogil:
    """A present table link, flags the kernel accepts, into the image."""
    return (v & P) != 0 and (v & ~(PFN | LINK_OK)) == 0 and frame(im, (v & PFN) >> 12) != NULL


cdef inline const uint64_t *child(Img *im, uint64_t v) noexcept nogil:
    if not link(im, v):
        return NULL
    return frame(im, (v & PFN) >> 12)


cdef inline int has_large_leaf(const uint64_t *t, uint64_t align) noexcept nogil:
    """Number of present PSE entries whose address is ``align``-aligned."""
    cdef int i, n = 0
    for i in range(512):
        if (t[i] & (P | PSE)) == (P | PSE) and (t[i] & PFN & (align - 1)) == 0:
            n += 1
    return n


cdef int detect_levels(Img *im, const uint64_t *pgd, uint64_t *kimg_pmd) noexcept nogil:
    """4 or 5 from where the kernel image's PMD table (2M leaves at
    0xffffffff80000000, PUD slot 510) is found under pgd[511]; 0 if neither
    or both.  ``kimg_pmd``: that PMD table's entry (link)."""
    cdef const uint64_t *a = child(im, pgd[511])
    cdef const uint64_t *b
    cdef const uint64_t *c
    cdef int l4 = 0, l5 = 0, i
    cdef uint64_t e4 = 0, e5 = 0
    if a == NULL:
        return 0
    # 4-level: a is a PUD table; a[510] links to the kernel image's PMD table
    if not (a[510] & PSE):
        b = child(im, a[510])
        if b != NULL and has_large_leaf(b, 1 << 21):
            l4, e4 = 1, a[510]
    # 5-level: a is a P4D table (no PSE entries), a[511] -> PUD, [510] -> PMD
    for i in range(512):
        if (a[i] & (P | PSE)) == (P | PSE):
            break
    else:
        b = child(im, a[511])
        if b != NULL and not (b[510] & PSE):
            c = child(im, b[510])
            if c != NULL and has_large_leaf(c, 1 << 21):
                l5, e5 = 1, b[510]
    if l4 and not l5:
        kimg_pmd[0] = e4
        return 4
    if l5 and not l4:
        kimg_pmd[0] = e5
        return 5
    return 0


cdef inline bint candidate(Img *im, const uint64_t *f) noexcept nogil:
    cdef int i
    cdef uint64_t v
    if not link(im, f[511]):
        return False
    for i in range(256, 272):          # the hypervisor guard hole: 16 empty PGD slots
        if f[i] != 0:
            return False
    for i in range(511):
        v = f[i]
        if v != 0 and not link(im, v):
            return False
    return True


cdef inline uint64_t khash(const uint64_t *f) noexcept nogil:
    cdef uint64_t h = FNV_BASIS
    cdef int i
    for i in range(256, 512):
        if i == LDT_L4 or i == LDT_L5:
            continue
        h = (h ^ f[i]) * FNV_PRIME
        h ^= h >> 29
    return h


cdef struct Cand:
    uint64_t pfn, khash, kimg
    int32_t user, kernel, levels


cdef class Scanner:
    """One pass over an image's frames in chunks (``step``), keeping the
    top-level table candidates."""
    cdef Img im
    cdef object keep                     # the arrays ``im`` points into
    cdef Cand *cands
    cdef int64_t ncands, cap
    cdef readonly int64_t done, total

    def __cinit__(self, const uint64_t[::1] words not None, segs, uint64_t max_pfn):
        cdef cnp.ndarray s = np.ascontiguousarray(np.asarray(segs, dtype=np.int64).reshape(-1, 3))
        self.keep = (words, s)
        self.im.base = &words[0]
        self.im.nfile = words.shape[0] // 512
        self.im.segs = <const int64_t *>cnp.PyArray_DATA(s) if s.shape[0] else NULL
        self.im.nsegs = s.shape[0]
        self.im.max_pfn = max_pfn
        self.cands, self.ncands, self.cap = NULL, 0, 0
        self.done = 0
        self.total = self.im.nfile

    def __dealloc__(self):
        free(self.cands)

    def step(self, int64_t nframes):
        """Scan the next ``nframes`` file frames; True while some remain."""
        cdef int64_t start = self.done, end = min(self.done + nframes, self.im.nfile)
        cdef int64_t k
        cdef int failed = 0
        with nogil:
            for k in range(start, end):
                if candidate(&self.im, self.im.base + (k << 9)) and self._keep(k) < 0:
                    failed = 1
                    break
        if failed:
            raise MemoryError()
        self.done = end
        return self.done < self.im.nfile

    cdef int _keep(self, int64_t k) noexcept nogil:
        cdef const uint64_t *f = self.im.base + (k << 9)
        cdef uint64_t pfn = <uint64_t>k, e = 0
        cdef int i, u = 0, kk = 0
        cdef Cand *c
        if self.im.segs != NULL:               # file frame -> pfn
            pfn = <uint64_t>-1
            for i in range(self.im.nsegs):
                if self.im.segs[3 * i + 2] <= k < self.im.segs[3 * i + 2] + self.im.segs[3 * i + 1]:
                    pfn = <uint64_t>(self.im.segs[3 * i] + k - self.im.segs[3 * i + 2])
                    break
            if pfn == <uint64_t>-1:
                return 0
        if self.ncands == self.cap:
            c = <Cand *>realloc(self.cands, (2 * self.cap + 256) * sizeof(Cand))
            if c == NULL:
                return -1
            self.cands, self.cap = c, 2 * self.cap + 256
        for i in range(256):
            u += f[i] != 0
            kk += f[256 + i] != 0
        c = self.cands + self.ncands
        c.pfn, c.user, c.kernel = pfn, u, kk
        c.levels = detect_levels(&self.im, f, &e)
        c.khash = khash(f)
        c.kimg = (e & PFN) >> 12 if c.levels else 0
        self.ncands += 1
        return 0

    def result(self):
        """The candidates, as a dict of numpy arrays sorted by pfn."""
        cdef int64_t i
        names = ("pfn", "khash", "user", "kernel", "levels", "kimg_pmd")
        out = {k: np.empty(self.ncands, dtype=np.uint64 if k in ("pfn", "khash", "kimg_pmd") else np.int32)
               for k in names}
        for i in range(self.ncands):
            c = self.cands[i]
            out["pfn"][i], out["khash"][i], out["kimg_pmd"][i] = c.pfn, c.khash, c.kimg
            out["user"][i], out["kernel"][i], out["levels"][i] = c.user, c.kernel, c.levels
        order = np.argsort(out["pfn"], kind="stable")
        return {k: v[order] for k, v in out.items()}

    def frame(self, uint64_t pfn):
        """Frame ``pfn`` as a read-only uint64 array of 512, or None."""
        cdef const uint64_t *f = frame(&self.im, pfn)
        if f == NULL:
            return None
        words = self.keep[0]
        return np.asarray(words[(f - self.im.base):(f - self.im.base) + 512])

    def is_table(self, uint64_t pfn, int level):
        """Whether frame ``pfn`` reads as a table of ``level`` (0 pgd, 1 p4d,
        2 pud, 3 pmd): every entry zero, a link the kernel accepts into the
        image, or (PUD/PMD) a large leaf; a PTE table (4) is any frame."""
        cdef const uint64_t *f = frame(&self.im, pfn)
        cdef int i
        cdef uint64_t v
        if f == NULL:
            return False
        if level >= 4:
            return True
        for i in range(512):
            v = f[i]
            if v == 0:
                continue
            if level in (2, 3) and (v & PSE):
                continue
            if not link(&self.im, v):
                return False
        return True

    def maps_pa(self, uint64_t pmd_pfn, uint64_t pa):
        """Whether the PMD table ``pmd_pfn`` maps physical address ``pa``
        (a 2M leaf, or a 4K leaf of one of its PTE tables)."""
        cdef const uint64_t *t = frame(&self.im, pmd_pfn)
        cdef const uint64_t *pte
        cdef int i, j
        cdef uint64_t v, w
        if t == NULL:
            return False
        for i in range(512):
            v = t[i]
            if not (v & P):
                continue
            if v & PSE:
                if (v & PFN & ~<uint64_t>((1 << 21) - 1)) == (pa & ~<uint64_t>((1 << 21) - 1)):
                    return True
                continue
            pte = child(&self.im, v)
            if pte == NULL:
                continue
            for j in range(512):
                w = pte[j]
                if (w & P) and (w & PFN) == (pa & PFN):
                    return True
        return False
