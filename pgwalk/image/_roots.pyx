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

from libc.stdint cimport uint64_t, int64_t, int32_t, uint8_t
from libc.stdlib cimport realloc, free

import numpy as np
cimport numpy as cnp

cdef extern from *:
    """
    #include <stdint.h>
    #define pgw_prefetch(p) __builtin_prefetch((const void *)(p))
    /* The whole-frame test of a flat image's candidate, branch-free so that
       the compiler vectorises it (with GCC and glibc, an AVX2 clone too,
       picked at load time where the CPU has AVX2): every entry zero or a
       link (P set, no flag besides P RW US A D NX, frame below ``limit``).
       1 when an entry is no link. */
    #if defined(__GNUC__) && defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__)
    __attribute__((target_clones("avx2", "default")))
    #endif
    static int pgw_flat_frame(const uint64_t *f, uint64_t limit, uint64_t link_ok, uint64_t pfn) {
        /* two accumulators, eight operations an entry: ``bad`` collects a
           flag outside link_ok and the frame number, or any bit of an entry
           without P (so a zero entry adds nothing); ``below`` keeps the sign
           bit of (address - limit's address), set while every address is
           below it (both under 2**52: the difference cannot wrap) */
        const uint64_t notok = ~(link_ok | pfn), top = limit << 12;
        uint64_t bad = 0, below = ~(uint64_t)0;
        for (int i = 0; i < 512; i++) {
            uint64_t v = f[i];
            bad |= v & (notok | ((v & 1) - 1));
            below &= (v & pfn) - top;
        }
        return (bad != 0) | (int)(~below >> 63);
    }
    """
    void prefetch "pgw_prefetch" (const void *p) noexcept nogil
    int pgw_flat_frame(const uint64_t *f, uint64_t limit, uint64_t link_ok, uint64_t pfn) noexcept nogil

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
    const uint8_t *present             # bit per pfn (little-endian bit order): frames the
                                       # image holds, when ``base`` holds only some of them
                                       # (a LiME/kdump dump's gathered frames); NULL: ``base``
    uint8_t *memo                      # per frame of ``base``: leaves_of's answer (or NULL)


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


cdef inline bint held(Img *im, uint64_t pfn) noexcept nogil:
    """Whether the image holds frame ``pfn`` (its content may be elsewhere)."""
    if im.present != NULL:
        return pfn < im.max_pfn and (im.present[pfn >> 3] >> (pfn & 7)) & 1
    return frame(im, pfn) != NULL


cdef inline bint link(Img *im, uint64_t v) noexcept nogil:
    """A present table link, flags the kernel accepts, into the image."""
    return (v & P) != 0 and (v & ~(PFN | LINK_OK)) == 0 and held(im, (v & PFN) >> 12)


cdef inline const uint64_t *child(Img *im, uint64_t v) noexcept nogil:
    if not link(im, v):
        return NULL
    return frame(im, (v & PFN) >> 12)


cdef inline bint has_large_leaf(const uint64_t *t, uint64_t align) noexcept nogil:
    """Whether some present PSE entry's address is ``align``-aligned."""
    cdef int i
    for i in range(512):
        if (t[i] & (P | PSE)) == (P | PSE) and (t[i] & PFN & (align - 1)) == 0:
            return True
    return False


cdef enum:
    SEEN = 1                          # a frame's memo byte: computed
    ANY_PSE = 2                       # some present entry has PSE
    LEAF_2M = 4                       # some present PSE entry's address is 2M aligned


cdef inline uint8_t leaves_of(Img *im, const uint64_t *t) noexcept nogil:
    """What frame ``t`` holds as large leaves (ANY_PSE, LEAF_2M), scanned
    once and remembered per frame of ``base`` (a frame is scanned at most
    once however many candidates lead to it)."""
    cdef int64_t row = (t - im.base) >> 9
    cdef uint8_t m
    cdef uint64_t v
    cdef int i, any_pse = 0, leaf2m = 0
    if im.memo != NULL:
        m = im.memo[row]
        if m & SEEN:
            return m
    for i in range(512):              # no early exit: a branch-free, vectorised loop
        v = t[i]
        any_pse |= (v & (P | PSE)) == (P | PSE)
        leaf2m |= ((v & (P | PSE)) == (P | PSE)) & ((v & PFN & ((1 << 21) - 1)) == 0)
    m = SEEN | (ANY_PSE if any_pse else 0) | (LEAF_2M if leaf2m else 0)
    if im.memo != NULL:
        im.memo[row] = m
    return m


cdef int detect_levels(Img *im, uint64_t pgd511, uint64_t *kimg_pmd) noexcept nogil:
    """4 or 5 from where the kernel image's PMD table (2M leaves at
    0xffffffff80000000, PUD slot 510) is found under pgd[511]; 0 if neither
    or both.  ``kimg_pmd``: that PMD table's entry (link).  Reads one cache
    line of each table on the way (slots 510-511) and each table's leaves
    from the per-frame memo."""
    cdef const uint64_t *a = child(im, pgd511)
    cdef const uint64_t *b
    cdef const uint64_t *c
    cdef int l4 = 0, l5 = 0
    cdef uint64_t e4 = 0, e5 = 0
    if a == NULL:
        return 0
    # 4-level: a is a PUD table; a[510] links to the kernel image's PMD table
    if not (a[510] & PSE):
        b = child(im, a[510])
        if b != NULL and leaves_of(im, b) & LEAF_2M:
            l4, e4 = 1, a[510]
    # 5-level: a is a P4D table (no PSE entries), a[511] -> PUD, [510] -> PMD
    if not (a[511] & PSE):
        b = child(im, a[511])
        if b != NULL and not (b[510] & PSE):
            c = child(im, b[510])
            if c != NULL and leaves_of(im, c) & LEAF_2M and not (leaves_of(im, a) & ANY_PSE):
                l5, e5 = 1, b[510]
    if l4 and not l5:
        kimg_pmd[0] = e4
        return 4
    if l5 and not l4:
        kimg_pmd[0] = e5
        return 5
    return 0


cdef inline void ahead(Img *im, uint64_t pgd511, int stage) noexcept nogil:
    """Prefetch what detect_levels(f) reads at ``stage`` 1 (slots 510-511
    of pgd[511]'s table) or 2 (slot 510 of the table under its slot 511)."""
    cdef const uint64_t *a = child(im, pgd511)
    if a == NULL:
        return
    if stage == 1:
        prefetch(a + 510)
        return
    a = child(im, a[511])
    if a != NULL:
        prefetch(a + 510)


cdef inline bint candidate(Img *im, const uint64_t *f) noexcept nogil:
    """Whether frame ``f`` can be a top-level table: entry 511 a link, the
    guard hole empty (most frames stop here, after two cache lines), every
    entry zero or a link.  A candidate has no large leaf (PSE is no link
    flag): remembered (``leaves_of``), so that the paging-mode test of the
    candidates, which meets them as tables, rarely reads a frame again."""
    cdef int i
    cdef uint64_t v, limit = im.max_pfn
    if not link(im, f[511]):
        return False
    for i in range(256, 272):          # the hypervisor guard hole: 16 empty PGD slots
        if f[i] != 0:
            return False
    if im.segs == NULL and im.present == NULL:
        # a flat image: one branch-free loop (a link's frame is in the image
        # when below max_pfn)
        if pgw_flat_frame(f, limit, LINK_OK, PFN):
            return False
        if im.memo != NULL:             # every entry a link (no PSE): no large leaf, known for free
            im.memo[(f - im.base) >> 9] = SEEN
        return True
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


cdef struct Row:
    int64_t k                          # a candidate's frame in the file
    uint64_t pgd511                    # its entry 511 (read in the pass: not read again)


cdef struct Cand:
    uint64_t pfn, khash, kimg
    int32_t user, kernel, levels


cdef class Scanner:
    """One pass over an image's frames in chunks (``step``), keeping the
    top-level table candidates; or, over frames gathered from a dump read a
    frame at a time (``present``: the bitmap of the frames the dump holds),
    the candidates named by ``keep_pfns``.  Kept: the candidates with a
    paging mode, and the odd frames after them (a PTI user copy)."""
    cdef Img im
    cdef object keep                     # the arrays ``im`` points into
    cdef Cand *cands
    cdef int64_t ncands, cap
    cdef Row *rows                       # candidate frames of the pass, kept at its end
    cdef int64_t nrows, rows_cap
    cdef uint64_t last511                # detect_levels' last argument and answer: the
    cdef int last_levels                 # candidates of a real image share their entry 511
    cdef uint64_t last_kimg              # (init_mm's kernel half)
    cdef readonly int64_t done, total

    def __cinit__(self, const uint64_t[::1] words not None, segs, uint64_t max_pfn, present=None):
        cdef cnp.ndarray s = np.ascontiguousarray(np.asarray(segs, dtype=np.int64).reshape(-1, 3))
        cdef cnp.ndarray bits = None
        cdef cnp.ndarray memo
        if present is not None:
            bits = np.ascontiguousarray(present, dtype=np.uint8)
            if bits.shape[0] * 8 < <int64_t>max_pfn:
                raise ValueError("present: fewer bits than frames")
        memo = np.zeros(max(words.shape[0] // 512, 1), dtype=np.uint8)
        self.keep = (words, s, bits, memo)
        self.im.base = &words[0]
        self.im.nfile = words.shape[0] // 512
        self.im.segs = <const int64_t *>cnp.PyArray_DATA(s) if s.shape[0] else NULL
        self.im.nsegs = s.shape[0]
        self.im.max_pfn = max_pfn
        self.im.present = <const uint8_t *>cnp.PyArray_DATA(bits) if bits is not None else NULL
        self.im.memo = <uint8_t *>cnp.PyArray_DATA(memo)
        self.cands, self.ncands, self.cap = NULL, 0, 0
        self.rows, self.nrows, self.rows_cap = NULL, 0, 0
        self.last511, self.last_levels, self.last_kimg = 0, 0, 0
        self.done = 0
        self.total = self.im.nfile

    def __dealloc__(self):
        free(self.cands)
        free(self.rows)

    def step(self, int64_t nframes):
        """Scan the next ``nframes`` file frames; True while some remain.
        The candidates are kept (their paging mode found) after the last
        frame, when the leaves of every frame read whole are known."""
        cdef int64_t start = self.done, end = min(self.done + nframes, self.im.nfile)
        cdef int64_t k
        cdef Row *r
        cdef int failed = 0
        with nogil:
            for k in range(start, end):
                if candidate(&self.im, self.im.base + (k << 9)):
                    if self.nrows == self.rows_cap:
                        r = <Row *>realloc(self.rows, (2 * self.rows_cap + 256) * sizeof(Row))
                        if r == NULL:
                            failed = 1
                            break
                        self.rows, self.rows_cap = r, 2 * self.rows_cap + 256
                    self.rows[self.nrows].k = k
                    self.rows[self.nrows].pgd511 = self.im.base[(k << 9) + 511]
                    self.nrows += 1
            if not failed and end == self.im.nfile:
                for k in range(self.nrows):
                    # the lines detect_levels reads, fetched ahead (they are
                    # random: one miss each otherwise): slots 510-511 of the
                    # table the candidate's entry 511 links, then slot 510
                    # of the one under that table's slot 511
                    if k + 16 < self.nrows:
                        ahead(&self.im, self.rows[k + 16].pgd511, 1)
                    if k + 8 < self.nrows:
                        ahead(&self.im, self.rows[k + 8].pgd511, 2)
                    if self._keep(self.rows[k].k, self.rows[k].pgd511) < 0:
                        failed = 1
                        break
                self.nrows = 0
        if failed:
            raise MemoryError()
        self.done = end
        return self.done < self.im.nfile

    def keep_pfns(self, pfns):
        """Keep the frames ``pfns`` (candidates found elsewhere: in chunks of
        a dump read a frame at a time), as ``step`` keeps a candidate."""
        cdef const uint64_t *f
        cdef uint64_t pfn
        for p in pfns:
            pfn = p
            f = frame(&self.im, pfn)
            if f == NULL:
                raise ValueError(f"frame {pfn:#x} is not among the scanner's frames")
            if self._keep_pfn(pfn, f, f[511]) < 0:
                raise MemoryError()

    cdef int _keep(self, int64_t k, uint64_t pgd511) noexcept nogil:
        cdef uint64_t pfn = <uint64_t>k
        cdef int i
        if self.im.segs != NULL:               # file frame -> pfn
            pfn = <uint64_t>-1
            for i in range(self.im.nsegs):
                if self.im.segs[3 * i + 2] <= k < self.im.segs[3 * i + 2] + self.im.segs[3 * i + 1]:
                    pfn = <uint64_t>(self.im.segs[3 * i] + k - self.im.segs[3 * i + 2])
                    break
            if pfn == <uint64_t>-1:
                return 0
        return self._keep_pfn(pfn, self.im.base + (k << 9), pgd511)

    cdef int _keep_pfn(self, uint64_t pfn, const uint64_t *f, uint64_t pgd511) noexcept nogil:
        cdef uint64_t e = 0
        cdef int i, u = 0, kk = 0, levels
        cdef Cand *c
        if pgd511 == self.last511 and self.last511 != 0:
            levels, e = self.last_levels, self.last_kimg   # the image does not change under a scan
        else:
            levels = detect_levels(&self.im, pgd511, &e)
            self.last511, self.last_levels, self.last_kimg = pgd511, levels, e
        if levels == 0 and not (pfn & 1 and self._after_root(pfn, f)):
            return 0            # no paging mode and no PTI user copy (an odd frame): not a root
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
        c.levels = levels
        c.khash = khash(f)
        c.kimg = (e & PFN) >> 12 if levels else 0
        self.ncands += 1
        return 0

    cdef bint _after_root(self, uint64_t pfn, const uint64_t *f) noexcept nogil:
        """Whether frame ``pfn - 1`` is a candidate with a paging mode (``f``
        may be its PTI user copy).  Frames are kept in frame order within a
        run of the file, so that one was kept just before; only a frame
        that starts a run of an ELF core looks at the one before it."""
        cdef const uint64_t *g
        cdef uint64_t e = 0
        if self.ncands and self.cands[self.ncands - 1].pfn == pfn - 1:
            return self.cands[self.ncands - 1].levels != 0
        g = frame(&self.im, pfn - 1)
        if g == NULL or g == f - 512:
            return False            # not held, or held just before: it was no such candidate
        return candidate(&self.im, g) and detect_levels(&self.im, g[511], &e) != 0

    def result(self):
        """The candidates with a paging mode and the odd frames right after
        them (PTI user copies), as a dict of numpy arrays sorted by pfn."""
        cdef int64_t i, n = self.ncands
        names = ("pfn", "khash", "user", "kernel", "levels", "kimg_pmd")
        out = {k: np.empty(n, dtype=np.uint64 if k in ("pfn", "khash", "kimg_pmd") else np.int32)
               for k in names}
        cdef uint64_t[::1] pf = out["pfn"], kh = out["khash"], km = out["kimg_pmd"]
        cdef int32_t[::1] us = out["user"], ke = out["kernel"], lv = out["levels"]
        for i in range(n):
            pf[i], kh[i], km[i] = self.cands[i].pfn, self.cands[i].khash, self.cands[i].kimg
            us[i], ke[i], lv[i] = self.cands[i].user, self.cands[i].kernel, self.cands[i].levels
        order = np.argsort(out["pfn"], kind="stable")
        out = {k: v[order] for k, v in out.items()}
        rooted = out["pfn"][out["levels"] != 0]
        keep = (out["levels"] != 0) | np.isin(out["pfn"] - np.uint64(1), rooted)
        return {k: v[keep] for k, v in out.items()}

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


def candidates(const uint64_t[::1] words not None, present not None, uint64_t max_pfn):
    """Rows of ``words`` (frames of 512 entries) that are top-level table
    candidates, their links checked against ``present`` (a bit per pfn up
    to ``max_pfn``, little-endian bit order): the first pass over a chunk
    of a dump read a frame at a time."""
    cdef cnp.ndarray bits = np.ascontiguousarray(present, dtype=np.uint8)
    cdef Img im
    cdef int64_t k, n = words.shape[0] // 512, m = 0
    cdef cnp.ndarray out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] o = out
    if bits.shape[0] * 8 < <int64_t>max_pfn:
        raise ValueError("present: fewer bits than frames")
    if n == 0:
        return out
    im.base = &words[0]
    im.nfile = n
    im.segs = NULL
    im.nsegs = 0
    im.max_pfn = max_pfn
    im.present = <const uint8_t *>cnp.PyArray_DATA(bits)
    im.memo = NULL
    with nogil:
        for k in range(n):
            if candidate(&im, im.base + (k << 9)):
                o[m] = k
                m += 1
    return out[:m]
