# Part of pgwalk.walker._core (included by _core.pyx, not a module of its own):
# the table pool, its slab store, allocation, and the tree checks.

# ---------------------------------------------------------------------------
# The table pool
# ---------------------------------------------------------------------------

cdef inline uint64_t *table_base(pgwalk_pool_t *pool, uint64_t tid) noexcept nogil:
    return pool.slabs[tid // SLAB_TABLES] + (tid % SLAB_TABLES) * PTRS


cdef uint64_t *image_frame(pgwalk_pool_t *pool, uint64_t pfn) noexcept nogil:
    """Frame ``pfn`` of an image pool, or NULL outside the image or in a hole."""
    cdef int64_t lo = 0, hi = pool.nseg - 1, mid
    if pool.nseg == 0:
        if pfn >= pool.image_pages:
            return NULL
        return pool.image_base + pfn * PTRS
    while lo <= hi:                       # the last segment starting at or before pfn
        mid = (lo + hi) // 2
        if pool.seg_pfn[mid] <= pfn:
            lo = mid + 1
        else:
            hi = mid - 1
    if hi < 0 or pfn - pool.seg_pfn[hi] >= pool.seg_pages[hi]:
        return NULL
    return pool.image_base + (pool.seg_file_page[hi] + pfn - pool.seg_pfn[hi]) * PTRS


cdef uint64_t *table_of(pgwalk_pool_t *pool, uint64_t *slot) noexcept nogil:
    """The table a slot links to, or NULL when the link is not a live table
    of this pool owned by exactly this slot (garbage is never followed).  In
    an image pool, any frame of the image is a table, as to the hardware."""
    cdef uint64_t tid = entry_index(slot[0])
    if pool.image_base != NULL:
        return image_frame(pool, tid)
    if tid >= <uint64_t>pool.ntables or pool.owner[tid] != slot:
        return NULL
    return table_base(pool, tid)


cdef void pgwalk_bad_link(pgwalk_pool_t *pool, uint64_t addr) noexcept nogil:
    """In a read-only (image) pool: record that a walk met, at ``addr``, an
    entry it cannot follow (a bad one, or a link to a frame the image does
    not hold).  The count is exact under concurrent walks (one atomic
    increment); the first ``bad_cap`` addresses are kept.  Other pools:
    nothing (their garbage is never followed, decision 5)."""
    cdef int64_t k
    if not pool.read_only:
        return
    k = pgw_fetch_add_i64(&pool.nbad)
    if k < pool.bad_cap:
        pool.bad_addrs[k] = addr


cdef inline void bad_entry(pgwalk_pool_t *pool, uint64_t *slot, uint64_t addr) noexcept nogil:
    """A bad entry met by the walker: cleared, as the kernel's *_clear_bad
    does; in a read-only pool left alone and its address recorded."""
    pool.stats.clear_bad += 1
    if not pool.read_only:
        slot[0] = 0
        return
    pgwalk_bad_link(pool, addr)


cdef inline int child_level(int levels, int level) noexcept nogil:
    if levels == 4 and level == L_PGD:
        return L_PUD
    return level + 1


cdef inline int index_at(int levels, int level, uint64_t addr) noexcept nogil:
    if level == L_PGD:
        return (addr >> (39 if levels == 4 else 48)) & 511
    return (addr >> (12 + 9 * (4 - level))) & 511


cdef object _FIRST_LAZY_SLAB = None


cdef object _lazy_slab():
    return np.frombuffer(mmap.mmap(-1, SLAB_TABLES * PTRS * sizeof(uint64_t)),
                         dtype=np.uint64).reshape(SLAB_TABLES, PTRS)


cdef object _first_lazy_slab():
    """The first slab of every ``_LAZY_SLABS`` pool (an image's), shared: such
    a pool takes its top-level table from it (zeroed, never used: its walks
    start at the image's root) and then no other (an image pool is read
    only: edits are refused, and so are installing walks), so one mapping
    serves all, and an mm costs no mmap/munmap of its own (10 us)."""
    global _FIRST_LAZY_SLAB
    if _FIRST_LAZY_SLAB is None:
        _FIRST_LAZY_SLAB = _lazy_slab()
    return _FIRST_LAZY_SLAB


cdef class PageTables:
    """The page tables of one address space, in a pool of fixed slabs.

    A table is 512 uint64 entries; tables are named by their pool index,
    which is what a table entry stores in its PFN field.  Slabs are never
    moved or freed while the object lives, so a pointer into a table stays
    valid across anything a callback does.
    """

    def __cinit__(self, int levels=4, bint is_init_mm=False, *args, **kwargs):
        if levels != 4 and levels != 5:
            raise ValueError(f"levels must be 4 or 5, not {levels}")
        self.levels = levels
        self.is_init_mm = is_init_mm
        self._slabs = []
        # a subclass whose tables live elsewhere (an image's frames) sets
        # _LAZY_SLABS: it uses one table of its first slab, and a zeroed
        # 2 MiB allocation would cost more than the rest of its set-up
        self._lazy_slabs = getattr(type(self), "_LAZY_SLABS", False)
        memset(&self.pool, 0, sizeof(pgwalk_pool_t))
        self.pool.mutex = <void *>PyThread_allocate_lock()
        if self.pool.mutex == NULL:
            raise MemoryError()
        self._grow()
        self.pool.ntables = 1                  # id 0 is never handed out
        self.pool.self_obj = <void *>self
        self.pgd_id = pool_take(&self.pool, NULL, L_PGD)
        if self.pgd_id < 0:
            raise MemoryError("cannot allocate the top-level table")
        self.pgd_ptr = table_base(&self.pool, <uint64_t>self.pgd_id)

    def __dealloc__(self):
        free(self.pool.seg_pfn)
        free(self.pool.seg_pages)
        free(self.pool.seg_file_page)
        free(self.pool.bad_addrs)
        free(self.pool.slabs)
        free(self.pool.owner)
        free(self.pool.level)
        free(self.pool.free_ids)
        free(self.pool.fail_at)
        if self.pool.mutex != NULL:
            PyThread_free_lock(<PyThread_type_lock>self.pool.mutex)
        if self._retired is not None:
            for old in self._retired:
                free(<void *><size_t>old)

    cdef int _grow(self) except -1:
        """One more slab.  The per-id arrays grow by doubling into new
        memory; the outgrown ones are kept until the pool goes (a walk
        running without the GIL in another thread, under the read lock,
        may still be reading them while a fault grows the pool).  Runs
        under the pool lock from the check on (two threads may both have
        found the pool full); no Python code runs while it is held."""
        cdef int64_t ncap, i, old_ids
        cdef uint64_t **slabs = NULL
        cdef uint64_t **owner = NULL
        cdef int8_t *lvl = NULL
        cdef int64_t *fids = NULL
        cdef cnp.ndarray slab
        if self._lazy_slabs:             # the kernel's zero pages, faulted in as tables are used
            slab = _first_lazy_slab() if self.pool.nslabs == 0 else _lazy_slab()
        else:
            slab = np.zeros((SLAB_TABLES, PTRS), dtype=np.uint64)
        cdef size_t r0, r1, r2, r3
        if self._retired is None:
            self._retired = []
        pool_lock(&self.pool)
        if self.pool.nslabs + 1 > self._slab_cap:
            ncap = max(8, 2 * self._slab_cap)
            old_ids = self.pool.nslabs * SLAB_TABLES
            slabs = <uint64_t **>malloc(ncap * sizeof(uint64_t *))
            owner = <uint64_t **>malloc(ncap * SLAB_TABLES * sizeof(uint64_t *))
            lvl = <int8_t *>malloc(ncap * SLAB_TABLES * sizeof(int8_t))
            fids = <int64_t *>malloc(ncap * SLAB_TABLES * sizeof(int64_t))
            if slabs == NULL or owner == NULL or lvl == NULL or fids == NULL:
                pool_unlock(&self.pool)
                free(slabs)
                free(owner)
                free(lvl)
                free(fids)
                raise MemoryError()
            if self.pool.nslabs:
                memcpy(slabs, self.pool.slabs, self.pool.nslabs * sizeof(uint64_t *))
                memcpy(owner, self.pool.owner, old_ids * sizeof(uint64_t *))
                memcpy(lvl, self.pool.level, old_ids * sizeof(int8_t))
                memcpy(fids, self.pool.free_ids, self.pool.nfree * sizeof(int64_t))
            for i in range(old_ids, ncap * SLAB_TABLES):
                owner[i] = NULL
                lvl[i] = -1
            r0 = <size_t>self.pool.slabs
            r1 = <size_t>self.pool.owner
            r2 = <size_t>self.pool.level
            r3 = <size_t>self.pool.free_ids
            self.pool.slabs = slabs
            self.pool.owner = owner
            self.pool.level = lvl
            self.pool.free_ids = fids
            self._slab_cap = ncap
            if r0:                                   # ints: no garbage collection here
                self._retired.append(r0)
                self._retired.append(r1)
                self._retired.append(r2)
                self._retired.append(r3)
        self.pool.slabs[self.pool.nslabs] = <uint64_t *>cnp.PyArray_DATA(slab)
        self._slabs.append(slab)                     # same order as pool.slabs
        self.pool.nslabs += 1
        pool_unlock(&self.pool)
        return 0

    cdef uint64_t *_slot(self, uint64_t addr, int level, bint alloc, int *err) noexcept nogil:
        """The slot for ``addr`` at ``level`` in this mm's tree (pool_slot)."""
        return pool_slot(&self.pool, self.pgd_ptr, self.levels, addr, level, alloc, err)

    # --- Python-level primitives (the process model and the reference walker)
    cdef uint64_t *_live_slot(self, int64_t tid, int idx) except NULL:
        """The slot (tid, idx) of a live table; ValueError otherwise."""
        if tid <= 0 or tid >= self.pool.ntables or self.pool.level[tid] < 0:
            raise ValueError(f"no live table {tid}")
        if idx < 0 or idx >= PTRS:
            raise ValueError(f"slot index {idx} is not in 0..511")
        return table_base(&self.pool, <uint64_t>tid) + idx

    cdef int _new_table_slot(self, uint64_t *slot, int level) except -1:
        if level < L_P4D or level > L_PTE:
            raise ValueError(f"level {level} is not a level a table can be allocated at")
        if table_of(&self.pool, slot) != NULL:
            raise ValueError("the slot already links a table")
        return 0

    def _table(self, int64_t tid):
        """A writable numpy view of table ``tid``'s 512 entries."""
        self._live_slot(tid, 0)
        return self._slabs[tid // SLAB_TABLES][tid % SLAB_TABLES]

    def _table_level(self, int64_t tid):
        self._live_slot(tid, 0)
        return self.pool.level[tid]

    def _child(self, int64_t tid, int idx):
        """Index of the table that slot (tid, idx) links to, or -1."""
        cdef uint64_t *slot = self._live_slot(tid, idx)
        if table_of(&self.pool, slot) == NULL:
            return -1
        return <int64_t>entry_index(slot[0])

    def _alloc(self, int64_t tid, int idx, int level):
        """Counted allocation of a level-``level`` table linked at (tid, idx):
        0, or -ENOMEM when fault injection (or memory) fails it."""
        cdef uint64_t *slot = self._live_slot(tid, idx)
        self._new_table_slot(slot, level)
        return pool_alloc(&self.pool, slot, level)

    def _take_uncounted(self, int64_t tid, int idx, int level):
        """A table linked at (tid, idx) that is not a counted allocation."""
        cdef uint64_t *slot = self._live_slot(tid, idx)
        self._new_table_slot(slot, level)
        cdef int64_t r = pool_take(&self.pool, slot, level)
        if r < 0:
            raise MemoryError("table pool exhausted")
        return r

    def _free_below(self, int64_t tid, int idx, int level):
        """Free the tables below slot (tid, idx), a slot at ``level``, and clear it."""
        cdef uint64_t *slot = self._live_slot(tid, idx)
        if level < L_PGD or level >= L_PTE:
            raise ValueError(f"level {level} holds no table links")
        pool_free_subtree(&self.pool, self.levels, slot, level)

    def _clear_leaf_hook(self, uint64_t old, int level):
        """What the compiled walker's split does after clearing a
        non-anonymous huge leaf: tell the pool's owner (for pgwalk.reference)."""
        if self.pool.on_clear_leaf != NULL:
            self.pool.on_clear_leaf(self.pool.on_clear_ctx, old, level)

    def _stat_inc(self, str name):
        cdef pgwalk_mm_stats_t *s = &self.pool.stats
        if name == "split_pmd":
            s.split_pmd += 1
        elif name == "split_pud":
            s.split_pud += 1
        elif name == "clear_bad":
            s.clear_bad += 1
        elif name == "set_pte_at":
            s.set_pte_at += 1
        elif name == "update_mmu_cache":
            s.update_mmu_cache += 1
        elif name == "pte_map_ok":
            s.pte_map_ok += 1
        elif name == "pte_map_null":
            s.pte_map_null += 1
        else:
            raise KeyError(name)

    def _walk_enter(self):
        """A walk of this tree starts (for walkers written in Python)."""
        self.active_walks += 1

    def _walk_exit(self):
        self.active_walks -= 1

    def _next_alloc_fails(self):
        """Count one allocation attempt; True if fault injection fails it."""
        return alloc_attempt_fails(&self.pool)

    def _locate(self, uint64_t addr, int level, bint alloc):
        """(table id, index) of the slot for ``addr`` at ``level``, or None."""
        cdef int err = 0
        if self.pool.image_base != NULL:
            raise PermissionError("the tables of a physical-memory image are read only "
                                  "and not editable through the mm")
        cdef uint64_t *slot = self._slot(addr, level, alloc, &err)
        if err == -E_NOMEM:
            raise OSError(E_NOMEM, "page-table allocation failed")
        if err < 0:
            raise ValueError(f"address {addr:#x}: a non-table entry above level {level} blocks the way")
        if slot == NULL:
            return None
        return self._slot_location(slot)

    cdef tuple _slot_location(self, uint64_t *slot):
        cdef int64_t s
        cdef uint64_t off
        for s in range(self.pool.nslabs):
            if slot >= self.pool.slabs[s] and slot < self.pool.slabs[s] + SLAB_TABLES * PTRS:
                off = slot - self.pool.slabs[s]
                return (s * SLAB_TABLES + <int64_t>(off // PTRS), <int>(off % PTRS))
        raise AssertionError("slot outside the pool")

    @property
    def stats(self):
        """Counters: tables allocated/freed by level, failed allocations,
        splits, bad entries cleared, PTEs installed (dict of ints)."""
        cdef pgwalk_mm_stats_t *s = &self.pool.stats
        names = ("pgd", "p4d", "pud", "pmd", "pte")
        return {
            "alloc": {names[i]: s.alloc[i] for i in range(1, 5)},
            "freed": {names[i]: s.freed[i] for i in range(1, 5)},
            "alloc_failed": s.alloc_failed,
            "split_pmd": s.split_pmd, "split_pud": s.split_pud,
            "clear_bad": s.clear_bad, "set_pte_at": s.set_pte_at,
            "update_mmu_cache": s.update_mmu_cache,
            "pte_map_ok": s.pte_map_ok, "pte_map_null": s.pte_map_null,
            "tables": self.pool.live,
        }

    @property
    def nr_tables(self):
        """Live tables, the top-level one included."""
        return self.pool.live

    def _attach_image(self, cnp.ndarray frames not None, uint64_t root_pfn, segments=(),
                      int64_t bad_cap=65536):
        """Make this a read-only image pool over ``frames`` (a C-contiguous
        uint64 array, 512 entries per frame; the caller keeps it alive):
        frame ``pfn`` is ``frames[pfn]`` for a flat image, or found through
        ``segments`` = sorted (first pfn, frames, first row in ``frames``)."""
        cdef int64_t i, n = len(segments)
        if frames.dtype != np.uint64 or not frames.flags.c_contiguous:
            raise ValueError("frames must be a C-contiguous uint64 array")
        self.pool.image_base = <uint64_t *>cnp.PyArray_DATA(frames)
        self.pool.image_pages = frames.size // PTRS
        if n:
            self.pool.seg_pfn = <uint64_t *>malloc(n * sizeof(uint64_t))
            self.pool.seg_pages = <uint64_t *>malloc(n * sizeof(uint64_t))
            self.pool.seg_file_page = <uint64_t *>malloc(n * sizeof(uint64_t))
            if not (self.pool.seg_pfn and self.pool.seg_pages and self.pool.seg_file_page):
                raise MemoryError()
            for i, (pfn, pages, row) in enumerate(segments):
                if row + pages > self.pool.image_pages:
                    raise ValueError(f"segment {i} runs past the mapped frames")
                self.pool.seg_pfn[i] = pfn
                self.pool.seg_pages[i] = pages
                self.pool.seg_file_page[i] = row
            self.pool.nseg = n
        self.pool.read_only = 1
        self.pool.bad_cap = bad_cap
        self.pool.bad_addrs = <uint64_t *>malloc(bad_cap * sizeof(uint64_t))
        if self.pool.bad_addrs == NULL:
            raise MemoryError()
        root = image_frame(&self.pool, root_pfn)
        if root == NULL:
            raise ValueError(f"the root table (frame {root_pfn:#x}) is not in the image")
        self.pgd_ptr = root

    @property
    def bad_entries(self):
        """Entries the walks of a read-only image met and could not follow --
        bad ones, and links (at any level) to frames the image does not
        hold -- counted once per walk that meets them (each address a
        ``translate`` resolves is a walk): (count, the first addresses, as
        a uint64 array: the start of the range each entry covers, or of the
        walk if later)."""
        cdef int64_t n = min(self.pool.nbad, self.pool.bad_cap)
        out = np.empty(n, dtype=np.uint64)
        cdef int64_t i
        for i in range(n):
            out[i] = self.pool.bad_addrs[i]
        return self.pool.nbad, out

    def fail_table_alloc(self, at=()):
        """Make the k-th page-table allocation from now on fail (1-based,
        every k in ``at``), as the kernel's fault injection would."""
        if isinstance(at, (str, bytes)) or not hasattr(at, "__iter__"):
            raise TypeError(f"at must be an iterable of allocation numbers, not {type(at).__name__}")
        for k in at:
            if not isinstance(k, int) or isinstance(k, bool):
                raise TypeError(f"at: allocation numbers must be ints, not {type(k).__name__}")
        ks = sorted({int(k) for k in at})
        if any(k < 1 or k >= 1 << 63 for k in ks):
            raise ValueError("at: allocation numbers are 1-based and below 2**63")
        free(self.pool.fail_at)
        self.pool.fail_at = NULL
        self.pool.nfail = 0
        self.pool.alloc_seq = 0
        if ks:
            self.pool.fail_at = <int64_t *>malloc(len(ks) * sizeof(int64_t))
            if self.pool.fail_at == NULL:
                raise MemoryError()
            for i, k in enumerate(ks):
                self.pool.fail_at[i] = k
            self.pool.nfail = len(ks)

    def _validate_tables(self):
        """Structural check of the tree and of the pool that holds it;
        returns a message naming the first broken invariant, or None.

        Checked: the top-level table is the pool's level-0 table with no
        owner slot; every link the walker follows leads to a table of the
        child level; every live table is reached.  A table is reached only
        from its owner slot (``table_of`` follows nothing else), so no table
        is reachable from two parents; a second slot linking it is garbage
        that the walkers do not follow (decision 5), which ``MM.validate``
        refuses in process-model mms.  The pool's accounting is exact (live + free ids
        cover [1, ntables), each free id once, owner-less, levelless and
        zeroed, so ``pool_take`` hands out clean tables); the live tables per
        level agree with the allocation counters (``alloc - freed``; PTE
        tables may also come uncounted from a THP split, at most one per
        ``split_pmd``).  Image tables are not ours to hold to invariants:
        their bad entries are reported by the walks."""
        cdef int64_t reached = 0
        cdef int64_t tid, n = self.pool.ntables
        cdef uint8_t *seen
        cdef uint64_t *owner
        if self.pool.image_base != NULL:
            return None
        msg = _check_pool(self)
        if msg is not None:
            return msg
        seen = <uint8_t *>malloc(n)
        if seen == NULL:
            raise MemoryError()
        try:
            memset(seen, 0, n)
            seen[self.pgd_id] = 1
            msg = _check_tree(self, self.pgd_ptr, L_PGD, &reached, seen)
            if msg is not None:
                return msg
            if reached != self.pool.live:
                for tid in range(1, n):
                    if self.pool.level[tid] >= 0 and not seen[tid]:
                        owner = self.pool.owner[tid]
                        if owner == NULL or owner[0] == 0 or entry_index(owner[0]) != <uint64_t>tid:
                            return (f"table {tid} (level {self.pool.level[tid]}) is not linked "
                                    "from its owner slot")
                        return (f"table {tid} (level {self.pool.level[tid]}) is linked from "
                                "a slot that is not in the tree")
                return f"{self.pool.live - reached} live table(s) unreachable from the top level"
        finally:
            free(seen)
        return _check_counters(self)

    cdef object _check_table(self, uint64_t *tbl, int level, int64_t *reached):
        return _check_tree(self, tbl, level, reached, NULL)

    def _pool_poke(self, str what, int64_t tid=0, int64_t value=0):
        """Corrupt the pool's bookkeeping on purpose, for the tests that
        prove each check of ``_validate_tables`` can fail.  Never call it
        otherwise: the pool is left broken."""
        if what.startswith("stat_"):
            names = {"stat_alloc": self.pool.stats.alloc, "stat_freed": self.pool.stats.freed}
            if what not in names or not 0 <= tid < 5:
                raise KeyError(what)
            if what == "stat_alloc":
                self.pool.stats.alloc[tid] += value
            else:
                self.pool.stats.freed[tid] += value
            return
        if what == "live":
            self.pool.live += value
            return
        if what == "ntables":
            self.pool.ntables += value
            return
        if what == "push_free":             # list ``tid`` (any number) among the free ids
            if self.pool.nfree >= self.pool.nslabs * SLAB_TABLES:
                raise ValueError("the free list is full")
            self.pool.free_ids[self.pool.nfree] = tid
            self.pool.nfree += 1
            return
        if tid <= 0 or tid >= self.pool.ntables:
            raise ValueError(f"no table {tid}")
        if what == "level":
            self.pool.level[tid] = <int8_t>value
        elif what == "owner_null":
            self.pool.owner[tid] = NULL
        elif what == "owner_of":             # make ``tid`` owned by the owner slot of ``value``
            self.pool.owner[tid] = self.pool.owner[value]
        elif what == "free_word":            # write into a table (free ones included)
            table_base(&self.pool, <uint64_t>tid)[0] = <uint64_t>value
        else:
            raise KeyError(what)


cdef object _check_tree(PageTables pt, uint64_t *tbl, int level, int64_t *reached, uint8_t *seen):
    """Depth-first over the links the walker would follow from ``tbl`` (a
    table at ``level``): the child level of each; ``seen`` marks the tables
    reached."""
    cdef int i, cl
    cdef uint64_t *child
    cdef uint64_t tid
    cdef pgwalk_pool_t *pool = &pt.pool
    reached[0] += 1
    if level >= L_PTE:
        return None
    cl = child_level(pt.levels, level)
    for i in range(PTRS):
        if tbl[i] == 0:
            continue
        child = table_of(pool, &tbl[i])
        if child == NULL:
            continue
        tid = entry_index(tbl[i])
        if pool.level[tid] != cl:
            return f"table {tid} linked at level {level} holds level {pool.level[tid]}, expected {cl}"
        if seen != NULL:
            seen[tid] = 1
        msg = _check_tree(pt, child, cl, reached, seen)
        if msg is not None:
            return msg
    return None


cdef object _check_pool(PageTables pt):
    """The pool's accounting: ids, free list, owners, levels."""
    cdef pgwalk_pool_t *pool = &pt.pool
    cdef int64_t tid, k, n = pool.ntables, top = 0
    cdef int j
    cdef int lvl
    cdef uint64_t *t
    cdef uint8_t *free_seen
    if n < 1 or n > pool.nslabs * SLAB_TABLES:
        return f"pool: {n} table ids for {pool.nslabs} slab(s)"
    if pool.nfree < 0 or pool.nfree > n - 1:
        return f"pool: {pool.nfree} free ids among {n - 1}"
    if pool.live + pool.nfree != n - 1:
        return (f"pool: {pool.live} live + {pool.nfree} free tables, but ids 1..{n - 1} "
                "were handed out")
    if pt.pgd_id <= 0 or pt.pgd_id >= n or pool.level[pt.pgd_id] != L_PGD or pool.owner[pt.pgd_id] != NULL:
        return f"the top-level table {pt.pgd_id} is not the pool's owner-less level-0 table"
    free_seen = <uint8_t *>malloc(n)
    if free_seen == NULL:
        raise MemoryError()
    try:
        memset(free_seen, 0, n)
        for k in range(pool.nfree):
            tid = pool.free_ids[k]
            if tid <= 0 or tid >= n:
                return f"pool: free id {tid} was never handed out"
            if free_seen[tid]:
                return f"pool: table {tid} is on the free list twice"
            free_seen[tid] = 1
            if pool.level[tid] != -1 or pool.owner[tid] != NULL:
                return f"pool: free table {tid} still has a level or an owner slot"
            t = table_base(pool, <uint64_t>tid)
            for j in range(PTRS):
                if t[j] != 0:
                    return f"pool: free table {tid} is not zeroed (entry {j} = {t[j]:#x})"
        for tid in range(1, n):
            if free_seen[tid]:
                continue
            lvl = pool.level[tid]
            if lvl < L_PGD or lvl > L_PTE or (lvl == L_P4D and pt.levels == 4):
                return f"pool: table {tid} is neither free nor of a level of this mm (level {lvl})"
            if lvl == L_PGD:
                top += 1
            elif pool.owner[tid] == NULL:
                return f"pool: live table {tid} (level {lvl}) has no owner slot"
        if top != 1:
            return f"pool: {top} top-level tables"
    finally:
        free(free_seen)
    return None


cdef object _check_counters(PageTables pt):
    """Live tables per level against the mm's allocation counters."""
    cdef pgwalk_pool_t *pool = &pt.pool
    cdef int64_t live[5]
    cdef int64_t tid, net
    cdef int lvl
    memset(live, 0, sizeof(live))
    for tid in range(1, pool.ntables):
        if pool.level[tid] >= 0:
            live[pool.level[tid]] += 1
    if pool.stats.alloc[L_PGD] != 0 or pool.stats.freed[L_PGD] != 0:
        return "counters: the top-level table was counted as allocated or freed"
    for lvl in range(L_P4D, L_PTE + 1):
        net = pool.stats.alloc[lvl] - pool.stats.freed[lvl]
        if lvl < L_PTE and live[lvl] != net:
            return (f"counters: {live[lvl]} live level-{lvl} tables, but allocated - freed "
                    f"= {net}")
        if lvl == L_PTE and not (net <= live[lvl] <= net + pool.stats.split_pmd):
            return (f"counters: {live[lvl]} live PTE tables, outside allocated - freed = {net} "
                    f"plus at most {pool.stats.split_pmd} deposited by THP splits")
    return None


cdef bint alloc_attempt_fails(pgwalk_pool_t *pool) noexcept nogil:
    cdef int64_t i
    pool.alloc_seq += 1
    for i in range(pool.nfail):
        if pool.fail_at[i] == pool.alloc_seq:
            pool.stats.alloc_failed += 1
            return True
    return False


cdef uint64_t *pool_slot(pgwalk_pool_t *pool, uint64_t *pgd, int levels, uint64_t addr,
                         int level, bint alloc, int *err) noexcept nogil:
    """The slot for ``addr`` at ``level`` in the tree under ``pgd``; with
    ``alloc`` the missing tables above it are allocated (counted, as
    __pud_alloc and friends).  NULL with *err 0: the chain is missing; NULL
    with *err < 0: allocation failed (-ENOMEM) or a non-table blocks (-EEXIST)."""
    cdef uint64_t *slot = pgd + index_at(levels, L_PGD, addr)
    cdef uint64_t *tbl
    cdef int lvl = L_PGD, cl
    err[0] = 0
    if levels == 4 and level == L_P4D:
        level = L_PGD
    while lvl < level:
        cl = child_level(levels, lvl)
        tbl = table_of(pool, slot)
        if tbl == NULL:
            if not alloc:
                return NULL
            if not pte_none(slot[0]):
                err[0] = -17              # EEXIST: something else is there
                return NULL
            if pool_alloc(pool, slot, cl) < 0:
                err[0] = -E_NOMEM
                return NULL
            tbl = table_of(pool, slot)
        slot = tbl + index_at(levels, cl, addr)
        lvl = cl
    return slot


cdef int _pool_grow(pgwalk_pool_t *pool) noexcept with gil:
    try:
        (<PageTables>pool.self_obj)._grow()
    except MemoryError:
        return -E_NOMEM
    return 0


cdef inline void pool_lock(pgwalk_pool_t *pool) noexcept nogil:
    """Taking, freeing and splitting tables may happen in several threads at
    once (walks under the read lock split THPs and run install_pte, without
    the GIL).  Rule: nothing waits for the GIL while holding this lock, so
    a thread holding the GIL may block on it."""
    if pool.mutex != NULL:
        PyThread_acquire_lock(<PyThread_type_lock>pool.mutex, WAIT_LOCK)


cdef inline void pool_unlock(pgwalk_pool_t *pool) noexcept nogil:
    if pool.mutex != NULL:
        PyThread_release_lock(<PyThread_type_lock>pool.mutex)


cdef int64_t _take_locked(pgwalk_pool_t *pool, uint64_t *owner_slot, int level) noexcept nogil:
    """pool_take with the pool lock held; -2 when the pool must grow first."""
    cdef int64_t tid
    if pool.nfree > 0:
        pool.nfree -= 1
        tid = pool.free_ids[pool.nfree]
    else:
        if pool.ntables >= pool.nslabs * SLAB_TABLES:
            return -2
        tid = pool.ntables
        pool.ntables += 1
    pool.owner[tid] = owner_slot
    pool.level[tid] = level
    pool.live += 1
    if owner_slot != NULL:
        owner_slot[0] = mk_table(<uint64_t>tid)
    return tid


cdef int64_t pool_take(pgwalk_pool_t *pool, uint64_t *owner_slot, int level) noexcept nogil:
    """Hand out a zeroed table linked from ``owner_slot`` (not counted as an
    allocation: the THP split uses this for the deposited table)."""
    cdef int64_t tid
    while True:
        pool_lock(pool)
        tid = _take_locked(pool, owner_slot, level)
        pool_unlock(pool)
        if tid != -2:
            return tid
        if _pool_grow(pool) < 0:                # the GIL, without the pool lock
            return -E_NOMEM


cdef void pool_free_table(pgwalk_pool_t *pool, int64_t tid) noexcept nogil:
    memset(table_base(pool, <uint64_t>tid), 0, PTRS * sizeof(uint64_t))
    pool_lock(pool)
    pool.stats.freed[pool.level[tid]] += 1
    pool.owner[tid] = NULL
    pool.level[tid] = -1
    pool.free_ids[pool.nfree] = tid
    pool.nfree += 1
    pool.live -= 1
    pool_unlock(pool)


cdef void pool_free_subtree(pgwalk_pool_t *pool, int levels, uint64_t *slot, int level) noexcept nogil:
    """Free every table below ``slot`` (a slot at ``level``) and clear it."""
    cdef uint64_t *tbl = table_of(pool, slot)
    cdef int i, cl
    if tbl != NULL:
        cl = child_level(levels, level)
        if cl < L_PTE:
            for i in range(PTRS):
                if tbl[i] != 0:
                    pool_free_subtree(pool, levels, &tbl[i], cl)
        pool_free_table(pool, <int64_t>entry_index(slot[0]))
    slot[0] = 0


cdef int pool_alloc(pgwalk_pool_t *pool, uint64_t *slot, int level) noexcept nogil:
    """A counted page-table allocation (__pud_alloc and friends): subject to
    fault injection; links the new table into ``slot``.  A table another
    thread linked there meanwhile is kept (as the kernel re-checks under
    the page table lock) and nothing is counted."""
    cdef int64_t tid
    pool_lock(pool)
    if table_of(pool, slot) != NULL:
        pool_unlock(pool)
        return 0
    if alloc_attempt_fails(pool):
        pool_unlock(pool)
        return -E_NOMEM
    while True:
        tid = _take_locked(pool, slot, level)
        if tid != -2:
            break
        pool_unlock(pool)
        if _pool_grow(pool) < 0:
            return -E_NOMEM
        pool_lock(pool)
        if table_of(pool, slot) != NULL:
            pool_unlock(pool)
            return 0
    pool.stats.alloc[level] += 1
    pool_unlock(pool)
    return 0


cdef class PageTable:
    """One table of an address space: ``int(t[i])`` reads entry i;
    ``np.asarray(t)`` is a writable view of its 512 entries."""
    cdef readonly PageTables tables
    cdef readonly int64_t index
    cdef readonly int level

    def __init__(self, PageTables tables not None, int64_t index, int level):
        if level < L_PGD or level > L_PTE:
            raise ValueError(f"level must be 0..4, not {level}")
        tables._live_slot(index, 0)
        self.tables = tables
        self.index = index
        self.level = level

    @property
    def entries(self):
        return self.tables._table(self.index)

    def __array__(self, dtype=None, copy=None):
        a = self.tables._table(self.index)
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError("a PageTable is uint64: it cannot be viewed as another dtype without a copy")
            return a.astype(dtype)
        return a.copy() if copy else a

    def __len__(self):
        return PTRS

    def __getitem__(self, i):
        return int(self.tables._table(self.index)[i])

    def __repr__(self):
        return f"<PageTable {('pgd', 'p4d', 'pud', 'pmd', 'pte')[self.level]} #{self.index}>"


