# Part of pgwalk.walker._core (included by _core.pyx):
# what the level loops of _walk.pxi call: Ctrl-C checks, pte_offset_map,
# THP splits, the batched slots' runs, install_pte, pte_hole runs and the
# hugetlb lookup.

cdef int _check_signals(WalkCtx *c) noexcept with gil:
    try:
        PyErr_CheckSignals()
    except BaseException as e:
        return (<MMWalk>c.w.pywalk)._park(e)
    return 0


cdef inline int tick(WalkCtx *c, int64_t n) noexcept nogil:
    c.budget -= n
    if c.budget > 0:
        return 0
    c.budget = CHECK_EVERY
    c.pool.stats.pte_map_ok += c.pte_map_ok      # mm.stats current when a signal handler runs
    c.pte_map_ok = 0
    if not c.main_thread:
        return 0        # Python runs signal handlers on the main thread only
    return _check_signals(c)


cdef int _null_pte_entry(WalkCtx *c, uint64_t addr) noexcept with gil:
    return (<MMWalk>c.w.pywalk)._park(TypeError(
        f"install_pte is set without pte_entry and the walk met a non-none PTE at {addr:#x}: "
        "the kernel would call a NULL pte_entry here (pgwalk decision 8.1)"))


cdef int _no_memory(WalkCtx *c) noexcept with gil:
    return (<MMWalk>c.w.pywalk)._park(MemoryError("page-table pool exhausted during a THP split"))



cdef inline uint64_t addr_end(uint64_t addr, uint64_t end, uint64_t size) noexcept nogil:
    cdef uint64_t boundary = (addr + size) & ~(size - 1)
    if boundary - 1 < end - 1:
        return boundary
    return end


cdef uint64_t *pte_offset_map(WalkCtx *c, uint64_t *pmd, uint64_t addr) noexcept nogil:
    """Map the PTE table under ``pmd``; NULL (after clearing a bad PMD) when
    the PMD is no longer a table."""
    cdef uint64_t v = pmd[0]
    cdef uint64_t *tbl
    if pte_none(v) or is_pmd_migration_entry(v) or pmd_trans_huge(v) or pmd_devmap(v):
        c.pool.stats.pte_map_null += 1
        return NULL
    tbl = table_of(c.pool, pmd)
    if pmd_bad(v) or tbl == NULL:
        bad_entry(c.pool, pmd, addr)
        c.pool.stats.pte_map_null += 1
        return NULL
    if c.py_slots:
        c.pool.stats.pte_map_ok += 1
    else:
        c.pte_map_ok += 1
    return tbl + ((addr >> 12) & 511)


cdef uint64_t *pgwalk_pte_offset_map(pgwalk_walk_t *walk, uint64_t *pmd, uint64_t addr) noexcept nogil:
    """For C ops: pte_offset_map() from a pmd_entry, as the kernel's own
    pmd_entry users (mincore, smaps, ...) read the PTE table themselves.  The
    slot for ``addr`` in the table under ``pmd`` (slots up to the table's
    end follow it), or NULL when ``pmd`` is not a PTE table (a bad one is
    cleared first, as the walker does; kernel addresses of a no-VMA walk
    take the walker's pte_offset_kernel() path, unvalidated but never
    leaving the tree).  Counted as a PTE table visited.  Only valid on the
    ``walk`` a slot function was given: it is the first member of the
    walk's context."""
    cdef WalkCtx *c = <WalkCtx *>walk
    cdef uint64_t *tbl
    if c.w.no_vma and (c.is_init_mm or addr >= c.task_size):
        tbl = table_of(c.pool, pmd)
        if tbl == NULL:
            if pmd_present(pmd[0]) and not pmd_leaf(pmd[0]) and pmd != c.bad_pmd:
                pgwalk_bad_link(c.pool, addr)     # a link out of the image: reported once
                c.bad_pmd = pmd
            return NULL
        tbl += (addr >> 12) & 511
    else:
        tbl = pte_offset_map(c, pmd, addr)
    if tbl != NULL:
        c.tables[L_PTE] += 1
    return tbl


cdef inline int pte_count(uint64_t addr, uint64_t end) noexcept nogil:
    """How many slots the kernel's PTE loop visits from ``addr``: it stops
    after the slot at or past ``end - PAGE_SIZE``.  Bounded by the table's
    end (where ``end < PAGE_SIZE`` the kernel's unsigned test would run off
    the table; pgwalk visits the one slot, as Python's ints give)."""
    cdef uint64_t last = end - 4096 if end >= 4096 else 0
    cdef uint64_t n = 1
    if addr < last:
        n = 1 + ((last - addr + 4095) >> 12)
    if n > <uint64_t>(512 - ((addr >> 12) & 511)):
        n = 512 - ((addr >> 12) & 511)
    return <int>n


cdef inline int _install_one(WalkCtx *c, uint64_t *pte, uint64_t addr) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef uint64_t new_pte = 0
    cdef int err
    c.calls[SLOT_INSTALL_PTE] += 1
    err = ops.install_pte(addr, addr + 4096, &new_pte, &c.w, ops.install_pte_ctx)
    if err:
        return err
    pte[0] = new_pte
    c.pool.stats.set_pte_at += 1
    if not c.w.no_vma:
        c.pool.stats.update_mmu_cache += 1
    return 0


cdef int _install_placeholder(uint64_t addr, uint64_t next, uint64_t *ptep,
                              pgwalk_walk_t *w, void *ctx) noexcept nogil:
    # install_pte's slot when install_pte is batched: the walker calls
    # install_batch instead and never this (a slot must be non-NULL for the
    # walker's "has install_pte" tests)
    return -22


cdef inline uint64_t skip_none_run(WalkCtx *c, uint64_t *slot, uint64_t addr, uint64_t end,
                                   int shift) noexcept nogil:
    """How many none entries follow ``slot`` (itself none, at ``addr``) inside
    ``[addr, end)``: a PMD or PUD loop with neither pte_hole nor install_pte
    does nothing for a none entry, so it steps over the whole run at once.
    A saving in cost only: no call, stat or result changes (decision 27);
    the entries still count towards the next signal check.  The scan is
    ``pgw_first_not_none``, the batched walker's (``_kernels.h``)."""
    cdef int n = <int>(((end - 1) >> shift) - (addr >> shift))   # entries after this one
    cdef uint64_t k = pgw_first_not_none(slot + 1, n, PGW_KNL_ERRATUM)
    c.budget -= <int64_t>k
    return k


cdef inline int _none_run(uint64_t *pte, int i, int n) noexcept nogil:
    """The end of the run of none slots from ``i`` (exclusive, at most n):
    ``pte_none``'s test, vectorised (``pgw_first_not_none``)."""
    return i + pgw_first_not_none(pte + i, n - i, PGW_KNL_ERRATUM)


cdef int install_run(WalkCtx *c, uint64_t *pte, uint64_t addr, int n) noexcept nogil:
    """install_pte for ``n`` consecutive none slots: one call each, or one
    call of a batched install_pte for all of them, whose scratch values are
    stored when it returns 0 (nothing of the run is stored otherwise)."""
    cdef pgwalk_ops_t *ops = &c.ops
    cdef int i, err
    if ops.install_batch == NULL:
        for i in range(n):
            err = _install_one(c, &pte[i], addr + (<uint64_t>i << 12))
            if err:
                return err
        return 0
    memset(c.iscratch, 0, n * sizeof(uint64_t))
    c.calls[SLOT_INSTALL_PTE] += 1
    err = ops.install_batch(c.iscratch, n, addr, addr + (<uint64_t>n << 12), &c.w, ops.install_batch_ctx)
    if err:
        return err
    for i in range(n):
        pte[i] = c.iscratch[i]
    c.pool.stats.set_pte_at += n
    if not c.w.no_vma:
        c.pool.stats.update_mmu_cache += n
    return 0


cdef int walk_pte_batches(WalkCtx *c, uint64_t *pte, uint64_t addr, int n) noexcept nogil:
    """The PTE loop for a batched pte_entry: one call per run of slots (all
    of them; with install_pte, each run of non-none slots, none slots going
    to install_pte one by one, in address order)."""
    cdef pgwalk_ops_t *ops = &c.ops
    cdef int i = 0, j, err = 0
    if ops.install_pte == NULL:
        c.calls[L_PTE] += 1
        return ops.pte_batch(pte, n, addr, addr + (<uint64_t>n << 12), &c.w, ops.pte_batch_ctx)
    while i < n:
        if pte_none(pte[i]):
            j = _none_run(pte, i, n) if ops.install_batch != NULL else i + 1
            err = install_run(c, &pte[i], addr + (<uint64_t>i << 12), j - i)
            if err:
                return err
            i = j
            continue
        j = i
        while j < n and not pte_none(pte[j]):
            j += 1
        c.calls[L_PTE] += 1
        err = ops.pte_batch(&pte[i], j - i, addr + (<uint64_t>i << 12), addr + (<uint64_t>j << 12),
                            &c.w, ops.pte_batch_ctx)
        if err:
            return err
        i = j
    return 0


cdef int split_huge_pmd(WalkCtx *c, uint64_t *pmd) noexcept nogil:
    """split_huge_pmd(): anon THP -> PTE table (the deposited table, not a
    counted allocation); PMD migration entry -> 512 PTE migration entries;
    huge zero page -> 512 zero-page PTEs; not anonymous -> cleared."""
    cdef uint64_t v = pmd[0]
    cdef uint64_t flags, pfn, typ
    cdef uint64_t *tbl
    cdef int i
    cdef int64_t tid
    if not (is_swap_pmd(v) or pmd_trans_huge(v) or pmd_devmap(v)):
        return 0
    if not (pmd_trans_huge(v) or pmd_devmap(v) or is_pmd_migration_entry(v)):
        return 0
    if not c.vma_anon:
        # the kernel zaps a file/shmem huge PMD and removes its rmap: the
        # pool's owner (the process model) is told, once, under the lock
        pool_lock(c.pool)
        if pmd[0] == v:
            c.pool.stats.split_pmd += 1
            pmd[0] = 0
            if c.pool.on_clear_leaf != NULL:
                c.pool.on_clear_leaf(c.pool.on_clear_ctx, v, L_PMD)
        pool_unlock(c.pool)
        return 0
    # under the pool lock, as the kernel splits under the PMD lock: another
    # walk (another thread, the read lock) may be splitting the same PMD;
    # the new table is filled before the PMD links it, so a walk reading the
    # PMD meanwhile sees the leaf or the whole table, never an empty slot
    while True:
        pool_lock(c.pool)
        if pmd[0] != v:
            pool_unlock(c.pool)                  # split (or changed) meanwhile
            return 0
        tid = _take_locked(c.pool, NULL, L_PTE)
        if tid != -2:
            break
        pool_unlock(c.pool)
        if _pool_grow(c.pool) < 0:
            return _no_memory(c)
    c.pool.stats.split_pmd += 1
    tbl = table_base(c.pool, <uint64_t>tid)
    if is_pmd_migration_entry(v):
        typ = swp_pte_type(v)
        pfn = swp_pte_offset(v)
        for i in range(PTRS):
            tbl[i] = mk_swp_pte(typ, pfn + i)
    elif pmd_pfn(v) == PGW_HUGE_ZERO_PFN:
        flags = ((v & PGW_FLAGS_MASK) & ~(PGW_PSE | PGW_RW | PGW_DIRTY)) | PGW_SPECIAL
        for i in range(PTRS):
            tbl[i] = (PGW_ZERO_PFN << 12) | flags
    else:
        flags = (v & PGW_FLAGS_MASK) & ~PGW_PSE
        pfn = pmd_pfn(v)
        for i in range(PTRS):
            tbl[i] = (((pfn + i) << 12) & PGW_PFN_MASK) | flags
    c.pool.owner[tid] = pmd
    pmd[0] = mk_table(<uint64_t>tid)
    pool_unlock(c.pool)
    return 0


cdef inline void split_huge_pud(WalkCtx *c, uint64_t *pud) noexcept nogil:
    """split_huge_pud() in 6.13: a huge PUD leaf is simply cleared."""
    cdef uint64_t v = pud[0]
    if pmd_trans_huge(v) or pmd_devmap(v):
        pool_lock(c.pool)
        if pud[0] == v:
            pud[0] = 0
            c.pool.stats.split_pud += 1
            if c.pool.on_clear_leaf != NULL:
                c.pool.on_clear_leaf(c.pool.on_clear_ctx, v, L_PUD)
        pool_unlock(c.pool)


cdef struct BatchRun:
    uint64_t *start              # the slots a batch call covered: [start, end)
    uint64_t *end
    int action                   # the action the batch left


cdef inline bint _skipped(WalkCtx *c, int level, uint64_t *slot) noexcept nogil:
    """A slot the level loop would not hand to its entry callback (none, or
    bad at the levels that clear bad entries): where a batched run ends."""
    cdef uint64_t v = slot[0]
    if level == L_PGD:
        if c.w.levels == 4:
            return False
        return v == 0 or pgd_bad_l5(v) or table_of(c.pool, slot) == NULL
    if pte_none(v):
        return True
    if level == L_P4D:
        return p4d_bad(v) or table_of(c.pool, slot) == NULL
    return False


cdef int call_entry(WalkCtx *c, int level, uint64_t *slot, uint64_t addr, uint64_t next,
                    uint64_t end, uint64_t size, BatchRun *run) noexcept nogil:
    """The entry callback of ``level`` for ``slot``: the per-entry function,
    or the level's batch, called once for the run of slots from ``slot``
    (consecutive, handed to the callback, in this table and range); a slot
    inside a run already handed over gets the run's action instead."""
    cdef pgwalk_ops_t *ops = &c.ops
    cdef pgwalk_entry_fn fn
    cdef pgwalk_batch_fn bfn
    cdef void *ctx
    cdef int j, room, err
    cdef uint64_t base, run_next
    if level == L_PGD:
        fn, bfn, ctx = ops.pgd_entry, ops.pgd_batch, ops.pgd_batch_ctx
    elif level == L_P4D:
        fn, bfn, ctx = ops.p4d_entry, ops.p4d_batch, ops.p4d_batch_ctx
    elif level == L_PUD:
        fn, bfn, ctx = ops.pud_entry, ops.pud_batch, ops.pud_batch_ctx
    else:
        fn, bfn, ctx = ops.pmd_entry, ops.pmd_batch, ops.pmd_batch_ctx
    if bfn == NULL:
        if fn == NULL:
            return 0
        c.calls[level] += 1
        if level == L_PGD:
            ctx = ops.pgd_entry_ctx
        elif level == L_P4D:
            ctx = ops.p4d_entry_ctx
        elif level == L_PUD:
            ctx = ops.pud_entry_ctx
        else:
            ctx = ops.pmd_entry_ctx
        return fn(slot, addr, next, &c.w, ctx)
    if slot >= run.start and slot < run.end:
        c.w.action = run.action
        return 0
    base = addr & ~(size - 1)
    room = 512 - <int>((addr / size) & 511)
    if level == L_P4D and c.w.levels == 4:
        room = 1                # a folded P4D "table" is the one PGD slot
    j = 1
    while j < room and (base + <uint64_t>j * size) - 1 < end - 1 and not _skipped(c, level, &slot[j]):
        j += 1
    run_next = addr_end(base + <uint64_t>(j - 1) * size, end, size)
    c.calls[level] += 1
    err = bfn(slot, j, addr, run_next, &c.w, ctx)
    run.start = slot
    run.end = slot + j
    run.action = c.w.action
    if run.action == ACT_AGAIN:
        run.end = NULL          # the slot is redone: the batch is called again
    return err


cdef int flush_holes(WalkCtx *c) noexcept nogil:
    """Hand a batched pte_hole its pending run of holes."""
    if not c.ph_on:
        return 0
    c.ph_on = 0
    c.calls[SLOT_PTE_HOLE] += 1
    return c.ops.pte_hole(c.ph_start, c.ph_end, c.ph_depth, &c.w, c.ops.pte_hole_ctx)


cdef inline int hole_at(WalkCtx *c, uint64_t addr, uint64_t next, int depth) noexcept nogil:
    """pte_hole for one none slot of a level loop: called at once, or (when
    batched) added to the pending run, which is handed over before the loop
    does anything else (the next non-none slot, the table's end)."""
    cdef int err
    if not c.ops.hole_batch:
        c.calls[SLOT_PTE_HOLE] += 1
        return c.ops.pte_hole(addr, next, depth, &c.w, c.ops.pte_hole_ctx)
    if c.ph_on and c.ph_depth == depth and c.ph_end == addr:
        c.ph_end = next
        return 0
    err = flush_holes(c)
    if err:
        return err
    c.ph_on = 1
    c.ph_depth = depth
    c.ph_start = addr
    c.ph_end = next
    return 0


cdef inline bint p4d_none_or_clear_bad(WalkCtx *c, uint64_t *p4d, uint64_t addr) noexcept nogil:
    if pte_none(p4d[0]):
        return True
    if p4d_bad(p4d[0]) or table_of(c.pool, p4d) == NULL:
        bad_entry(c.pool, p4d, addr)
        return True
    return False


cdef inline bint pgd_none_or_clear_bad(WalkCtx *c, uint64_t *pgd, uint64_t addr) noexcept nogil:
    if c.w.levels == 4:
        return False                  # folded: never none, never bad
    if pgd_none_l5(pgd[0]):
        return True
    if pgd_bad_l5(pgd[0]) or table_of(c.pool, pgd) == NULL:
        bad_entry(c.pool, pgd, addr)
        return True
    return False


cdef uint64_t *hugetlb_walk(WalkCtx *c, uint64_t addr, uint64_t sz) noexcept nogil:
    """The generic huge_pte_offset(): the PMD (or, for 1 GiB pages, PUD) slot
    for ``addr`` when the tables above it exist, else NULL."""
    cdef uint64_t *pgd = c.pgd + ((addr >> (39 if c.w.levels == 4 else 48)) & 511)
    cdef uint64_t *p4d
    cdef uint64_t *pud
    cdef uint64_t *tbl
    if c.w.levels == 5:
        if not pud_present(pgd[0]):
            return NULL
        tbl = table_of(c.pool, pgd)
        if tbl == NULL:
            return NULL
        p4d = tbl + ((addr >> 39) & 511)
    else:
        p4d = pgd
    if not pud_present(p4d[0]):
        return NULL
    tbl = table_of(c.pool, p4d)
    if tbl == NULL:
        return NULL
    pud = tbl + ((addr >> 30) & 511)
    if sz == PUD_SIZE_:
        return pud
    if not pud_present(pud[0]):
        return NULL
    tbl = table_of(c.pool, pud)
    if tbl == NULL:
        return NULL
    return tbl + ((addr >> 21) & 511)


cdef int walk_hugetlb_batches(WalkCtx *c, uint64_t addr, uint64_t end, uint64_t sz) noexcept nogil:
    """walk_hugetlb_range for a batched hugetlb_entry: one call per run of
    huge pages whose slots follow each other in one table; a page whose
    table is missing is a hole (-1), as without batching."""
    cdef pgwalk_ops_t *ops = &c.ops
    cdef uint64_t hmask = ~(sz - 1)
    cdef int shift = 30 if sz == PUD_SIZE_ else 21
    cdef uint64_t next, boundary, run_next, nb
    cdef uint64_t *pte
    cdef uint64_t *p2
    cdef int err = 0, n, room
    c.hmask = hmask
    while True:
        boundary = (addr & hmask) + sz
        next = boundary if boundary < end else end
        pte = hugetlb_walk(c, addr & hmask, sz)
        if pte == NULL:
            if ops.pte_hole != NULL:
                c.calls[SLOT_PTE_HOLE] += 1
                err = ops.pte_hole(addr, next, -1, &c.w, ops.pte_hole_ctx)
            n = 1
        else:
            room = 512 - <int>(((addr & hmask) >> shift) & 511)
            n = 1
            run_next = next
            while run_next != end and n < room:
                nb = run_next                          # the next huge page's start
                p2 = hugetlb_walk(c, nb, sz)
                if p2 != pte + n:
                    break
                n += 1
                run_next = nb + sz if nb + sz < end else end
            next = run_next
            c.calls[SLOT_HUGETLB_ENTRY] += 1
            err = ops.hugetlb_batch(pte, n, addr, next, &c.w, ops.hugetlb_batch_ctx)
        if err:
            break
        addr = next
        if addr == end:
            break
        err = tick(c, n)
        if err:
            break
    return err
