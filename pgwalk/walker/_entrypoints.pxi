# Part of pgwalk.walker._core (included by _core.pyx):
# the entry points, with the GIL: ops to slots, the VMA loop, the stats.

# ---------------------------------------------------------------------------
# Entry points (argument checks and the VMA loop, with the GIL)
# ---------------------------------------------------------------------------

cdef inline void *_slot(object f, void *py_tramp, void **ctx, list keep, list pykeep):
    """Slot function and context for one field: a CFunc's own, or the Python
    trampoline with the callable as context."""
    if f is None:
        ctx[0] = NULL
        return NULL
    keep.append(f)
    f = getattr(f, "__pgwalk_cfunc__", f)
    if isinstance(f, CFunc):
        ctx[0] = (<CFunc>f).ctx
        return (<CFunc>f).fn
    pykeep.append(f)
    ctx[0] = <void *>f
    return py_tramp


cdef inline void *_entry_slot(object f, void *py_tramp, void *py_batch, void **ctx,
                              void **batch, void **batch_ctx, list keep, list pykeep):
    """An entry slot: a per-entry function (returned, with ``ctx``) or a
    batch (stored in ``batch``/``batch_ctx``; NULL returned)."""
    f = getattr(f, "__pgwalk_cfunc__", f)
    if isinstance(f, Batch):
        keep.append(f)
        inner = getattr(f.fn, "__pgwalk_cfunc__", f.fn)
        if isinstance(inner, CFunc):
            f = inner                  # batch() of a C batch function: that function
        else:
            pykeep.append(f)
            batch[0] = py_batch
            batch_ctx[0] = <void *>f.fn
            ctx[0] = NULL
            return NULL
    if isinstance(f, CFunc) and (<CFunc>f).kind == "batch":
        keep.append(f)
        batch[0] = (<CFunc>f).fn
        batch_ctx[0] = (<CFunc>f).ctx
        ctx[0] = NULL
        return NULL
    return _slot(f, py_tramp, ctx, keep, pykeep)


cdef inline object _unbatched(object f):
    g = getattr(f, "__pgwalk_cfunc__", f)
    return g.fn if isinstance(g, Batch) else f


cdef int _fill_ops(pgwalk_ops_t *o, object ops, list keep) except -1:
    """Fill the dispatch table from an MMWalkOps; returns how many slots
    call Python."""
    cdef list pykeep = []
    cdef object f
    memset(o, 0, sizeof(pgwalk_ops_t))
    o.pgd_entry = <pgwalk_entry_fn>_entry_slot(ops.pgd_entry, <void *>_py_pgd, <void *>_py_pgd_batch,
                                               &o.pgd_entry_ctx, <void **>&o.pgd_batch, &o.pgd_batch_ctx,
                                               keep, pykeep)
    o.p4d_entry = <pgwalk_entry_fn>_entry_slot(ops.p4d_entry, <void *>_py_p4d, <void *>_py_p4d_batch,
                                               &o.p4d_entry_ctx, <void **>&o.p4d_batch, &o.p4d_batch_ctx,
                                               keep, pykeep)
    o.pud_entry = <pgwalk_entry_fn>_entry_slot(ops.pud_entry, <void *>_py_pud, <void *>_py_pud_batch,
                                               &o.pud_entry_ctx, <void **>&o.pud_batch, &o.pud_batch_ctx,
                                               keep, pykeep)
    o.pmd_entry = <pgwalk_entry_fn>_entry_slot(ops.pmd_entry, <void *>_py_pmd, <void *>_py_pmd_batch,
                                               &o.pmd_entry_ctx, <void **>&o.pmd_batch, &o.pmd_batch_ctx,
                                               keep, pykeep)
    o.pte_entry = <pgwalk_entry_fn>_entry_slot(ops.pte_entry, <void *>_py_pte, <void *>_py_pte_batch,
                                               &o.pte_entry_ctx, <void **>&o.pte_batch, &o.pte_batch_ctx,
                                               keep, pykeep)
    f = getattr(ops.pte_hole, "__pgwalk_cfunc__", ops.pte_hole)
    if isinstance(f, Batch):
        keep.append(f)
        o.hole_batch = 1
        f = f.fn
    o.pte_hole = <pgwalk_hole_fn>_slot(f, <void *>_py_hole, &o.pte_hole_ctx, keep, pykeep)
    f = getattr(ops.hugetlb_entry, "__pgwalk_cfunc__", ops.hugetlb_entry)
    if isinstance(f, Batch):
        keep.append(f)
        pykeep.append(f)
        o.hugetlb_batch = <pgwalk_batch_fn><void *>_py_hugetlb_batch
        o.hugetlb_batch_ctx = <void *>f.fn
        o.hugetlb_entry = _hugetlb_placeholder       # non-NULL: the VMA's range is walked
        o.hugetlb_entry_ctx = NULL
    else:
        o.hugetlb_entry = <pgwalk_hugetlb_fn>_slot(ops.hugetlb_entry, <void *>_py_hugetlb,
                                                   &o.hugetlb_entry_ctx, keep, pykeep)
    # per-VMA slots: one call per VMA, nothing to batch (a batch() is its fn)
    o.test_walk = <pgwalk_range_fn>_slot(_unbatched(ops.test_walk), <void *>_py_test_walk,
                                         &o.test_walk_ctx, keep, pykeep)
    o.pre_vma = <pgwalk_range_fn>_slot(_unbatched(ops.pre_vma), <void *>_py_pre_vma, &o.pre_vma_ctx, keep, pykeep)
    o.post_vma = <pgwalk_post_fn>_slot(_unbatched(ops.post_vma), <void *>_py_post_vma,
                                       &o.post_vma_ctx, keep, pykeep)
    f = getattr(ops.install_pte, "__pgwalk_cfunc__", ops.install_pte)
    if isinstance(f, Batch) and isinstance(getattr(f.fn, "__pgwalk_cfunc__", f.fn), CFunc):
        keep.append(f)
        f = getattr(f.fn, "__pgwalk_cfunc__", f.fn)
    if isinstance(f, Batch) or (isinstance(f, CFunc) and (<CFunc>f).kind == "batch"):
        keep.append(f)
        if isinstance(f, Batch):
            pykeep.append(f)
            o.install_batch = <pgwalk_batch_fn><void *>_py_install_batch
            o.install_batch_ctx = <void *>f.fn
        else:
            o.install_batch = <pgwalk_batch_fn>(<CFunc>f).fn
            o.install_batch_ctx = (<CFunc>f).ctx
        o.install_pte = _install_placeholder
        o.install_pte_ctx = NULL
    else:
        o.install_pte = <pgwalk_install_fn>_slot(ops.install_pte, <void *>_py_install,
                                                 &o.install_pte_ctx, keep, pykeep)
    o.walk_lock = ops.walk_lock
    return len(pykeep)


cdef size_t _private_pointer(object private) except? 0:
    """What C callbacks find in walk->private: NULL for None, the address for
    an int or a ctypes object, else the Python object itself (PyObject *)."""
    if private is None:
        return 0
    if isinstance(private, int) and not isinstance(private, bool):
        if private < 0 or private > <object>SIZE_MAX_:
            raise ValueError("private: an int private is an address and must fit a pointer")
        return <size_t>private
    import ctypes
    if isinstance(private, ctypes._SimpleCData) or isinstance(private, (ctypes.Structure, ctypes.Array)):
        return <size_t>ctypes.addressof(private)
    return <size_t><void *>private


cdef MMWalk _new_walk(object mm, object ops, object private, bint no_vma, object pgd, int newer=0):
    cdef MMWalk walk = MMWalk.__new__(MMWalk)
    cdef PageTables pt = <PageTables>mm
    cdef PageTables tree = pt if pgd is None else (<PageTable>pgd).tables
    cdef list keep = []
    cdef int i
    cdef EntryRef ref
    walk.mm = mm
    walk.vma = None
    walk.pgd = pgd
    walk.ops = ops
    walk.private = private
    walk._exc = None
    memset(&walk.c, 0, sizeof(WalkCtx))
    walk._py_slots = _fill_ops(&walk.c.ops, ops, keep) > 0
    if walk.c.ops.install_batch != NULL:
        walk._iscratch = np.zeros(512, dtype=np.uint64)
        walk.c.iscratch = <uint64_t *>cnp.PyArray_DATA(walk._iscratch)
    walk.c.py_slots = walk._py_slots
    walk._keep = tuple(keep)
    walk.c.w.pywalk = <void *>walk
    walk.c.w.private = <void *><size_t>_private_pointer(private)
    walk.c.w.no_vma = no_vma
    walk.c.w.levels = pt.levels
    walk.c.pool = &tree.pool
    walk.c.pt = <void *>tree
    walk.c.pgd = tree.pgd_ptr if pgd is None else table_base(&tree.pool, <uint64_t>(<PageTable>pgd).index)
    walk.c.task_size = ((<uint64_t>1) << (47 if pt.levels == 4 else 56)) - 4096
    walk.c.is_init_mm = pt.is_init_mm
    walk.c.budget = CHECK_EVERY
    walk.c.newer = newer
    walk.c.main_thread = threading.current_thread() is threading.main_thread()
    if walk._py_slots:                # the entry references and install scratch of Python slots
        walk._refs = []
        for i in range(6):
            ref = EntryRef.__new__(EntryRef)
            ref.level = i if i < 5 else L_PMD
            ref.pt = tree
            walk._refs.append(ref)
        walk._scratch = Scratch.__new__(Scratch)
    return walk


cdef void _fill_stats(MMWalk walk, object stats, dict before):
    cdef int i
    if stats is None:
        return
    stats.calls = {SLOT_NAMES[i]: walk.c.calls[i] for i in range(N_SLOTS) if walk.c.calls[i]}
    stats.indirect_calls = sum(stats.calls.values())
    stats.tables = {("pgd", "p4d", "pud", "pmd", "pte")[i]: walk.c.tables[i]
                    for i in range(5) if walk.c.tables[i]}
    stats.entries = walk.c.entries
    after = (<PageTables>walk.c.pt).stats
    stats.mm = {k: (after[k] - before[k]) for k in after if not isinstance(after[k], dict)}
    stats.mm["alloc"] = {k: after["alloc"][k] - before["alloc"][k] for k in after["alloc"]}


cdef int _finish(MMWalk walk, int err, object stats=None, dict before=None) except? -1:
    walk.c.pool.stats.pte_map_ok += walk.c.pte_map_ok
    walk.c.pte_map_ok = 0
    _fill_stats(walk, stats, before)
    exc = walk._exc
    if exc is not None:
        walk._exc = None
        raise exc
    return err


cdef void _enter_vma(MMWalk walk, object vma):
    walk.vma = vma
    walk.c.w.has_vma = 1
    walk.c.w.vma_start = vma.vm_start
    walk.c.w.vma_end = vma.vm_end
    walk.c.w.vma_flags = vma.vm_flags
    walk.c.vma_anon = vma.vm_ops is None


cdef void _leave_vma(MMWalk walk):
    walk.vma = None
    walk.c.w.has_vma = 0


cdef int _call_hole(MMWalk walk, uint64_t start, uint64_t end):
    if walk.c.ops.pte_hole == NULL:
        return 0
    walk.c.calls[SLOT_PTE_HOLE] += 1
    return walk.c.ops.pte_hole(start, end, -1, &walk.c.w, walk.c.ops.pte_hole_ctx)


cdef int _walk_page_test(MMWalk walk, uint64_t start, uint64_t end):
    cdef int err
    if walk.c.ops.test_walk != NULL:
        walk.c.calls[SLOT_TEST_WALK] += 1
        return walk.c.ops.test_walk(start, end, &walk.c.w, walk.c.ops.test_walk_ctx)
    if walk.c.w.vma_flags & 0x400:           # VM_PFNMAP
        err = 1
        if walk.c.ops.pte_hole != NULL:
            walk.c.calls[SLOT_PTE_HOLE] += 1
            err = walk.c.ops.pte_hole(start, end, -1, &walk.c.w, walk.c.ops.pte_hole_ctx)
        return err if err else 1
    return 0


cdef int _run_tables(MMWalk walk, uint64_t start, uint64_t end, bint hugetlb, uint64_t hsize):
    """The nogil part: the table walk of one range.  Runs without the GIL
    when no slot needs Python, else with it (trampolines re-enter cheaply)."""
    cdef WalkCtx *c = &walk.c
    cdef int err
    if walk._py_slots:
        # Python callbacks: keep the GIL; their trampolines re-enter it cheaply
        # (releasing it around every call costs ~70 ns per callback here).
        if hugetlb:
            return walk_hugetlb_range(c, start, end, hsize)
        return walk_pgd_range(c, <GenericPtes *>NULL, start, end)
    with nogil:
        if hugetlb:
            err = walk_hugetlb_range(c, start, end, hsize)
        else:
            err = walk_pgd_range(c, <GenericPtes *>NULL, start, end)
    return err


cdef int _walk_vma_range(MMWalk walk, object vma, uint64_t start, uint64_t end):
    """__walk_page_range(): install check, pre_vma, the tables, post_vma."""
    cdef pgwalk_ops_t *ops = &walk.c.ops
    cdef bint is_hugetlb = (vma.vm_flags & 0x00400000) != 0     # VM_HUGETLB
    cdef int err = 0
    if ops.install_pte != NULL and is_hugetlb:
        return -E_INVAL
    if ops.pre_vma != NULL:
        walk.c.calls[SLOT_PRE_VMA] += 1
        err = ops.pre_vma(start, end, &walk.c.w, ops.pre_vma_ctx)
        if err:
            return err
    if is_hugetlb:
        if ops.hugetlb_entry != NULL:
            err = _run_tables(walk, start, end, True, vma.hugepage_size)
    else:
        err = _run_tables(walk, start, end, False, 0)
    if ops.post_vma != NULL and walk._exc is None:
        walk.c.calls[SLOT_POST_VMA] += 1
        ops.post_vma(&walk.c.w, ops.post_vma_ctx)
    if walk._exc is not None:
        return PGWALK_EXC           # an exception (post_vma's included) ends the walk
    return err


def _walk_range(PageTables mm not None, uint64_t start, uint64_t end, ops, private, stats=None,
                int newer=0):
    """walk_page_range_mm() after its argument checks: the VMA loop."""
    cdef MMWalk walk = _new_walk(mm, ops, private, False, None, newer)
    cdef dict before = mm.stats if stats is not None else None
    mm.active_walks += 1
    try:
        return _walk_range_vmas(walk, mm, start, end, ops, stats, before)
    finally:
        mm.active_walks -= 1


cdef object _walk_range_vmas(MMWalk walk, PageTables mm, uint64_t start, uint64_t end, ops,
                             object stats, dict before):
    cdef int err = 0
    cdef uint64_t next
    lock = ops.walk_lock
    vma = mm.find_vma(start)
    while True:
        if vma is None:
            _leave_vma(walk)
            next = end
            err = _call_hole(walk, start, next)
        elif start < <uint64_t>vma.vm_start:
            _leave_vma(walk)
            next = min(end, <uint64_t>vma.vm_start)
            err = _call_hole(walk, start, next)
        else:
            mm._process_vma_walk_lock(vma, lock)
            _enter_vma(walk, vma)
            next = min(end, <uint64_t>vma.vm_end)
            cur = vma
            vma = mm.find_vma(cur.vm_end)
            err = _walk_page_test(walk, start, next)
            if err > 0 and walk._exc is None:
                err = 0
            elif err == 0:
                err = _walk_vma_range(walk, cur, start, next)
        if err:
            break
        start = next
        if start >= end:
            break
    return _finish(walk, err, stats, before)


def _walk_vma(vma, uint64_t start, uint64_t end, ops, private, stats=None, int newer=0):
    """walk_page_range_vma()/walk_page_vma() after their checks."""
    if not isinstance(vma.vm_mm, PageTables):
        raise TypeError("vma.vm_mm must be a pgwalk.MM")
    cdef MMWalk walk = _new_walk(vma.vm_mm, ops, private, False, None, newer)
    cdef dict before = vma.vm_mm.stats if stats is not None else None
    cdef PageTables tree = <PageTables>walk.c.pt
    _enter_vma(walk, vma)
    tree.active_walks += 1
    try:
        return _finish(walk, _walk_vma_range(walk, vma, start, end), stats, before)
    finally:
        tree.active_walks -= 1


def _walk_novma(PageTables mm not None, ranges, ops, PageTable pgd, private, stats=None,
                int newer=0):
    """walk_page_range_novma() (today: walk_page_range_debug and
    walk_kernel_page_table_range*) after its checks, of each ``(start, end)``
    of ``ranges`` in turn on one walk set-up (``walk_page_range_novma_each``;
    the kernel's calls walk one range each).  The first non-zero return ends
    it and is returned."""
    cdef MMWalk walk = _new_walk(mm, ops, private, True, pgd, newer)
    cdef dict before = (<PageTables>walk.c.pt).stats if stats is not None else None
    cdef PageTables tree = <PageTables>walk.c.pt
    cdef int err = 0
    tree.active_walks += 1
    try:
        for start, end in ranges:
            err = _run_tables(walk, start, end, False, 0)
            if err or walk._exc is not None:
                break
        return _finish(walk, err, stats, before)
    finally:
        tree.active_walks -= 1


def _c_predicates(uint64_t v):
    """The walker's inline C predicates on one raw value, for the tests that
    check them against the Python definitions in ``pgwalk.entries``."""
    return {
        "pte_none": pte_none(v), "pgd_none_l5": pgd_none_l5(v),
        "pte_present": pte_present(v), "pmd_present": pmd_present(v),
        "pud_present": pud_present(v), "pmd_leaf": pmd_leaf(v),
        "pmd_trans_huge": pmd_trans_huge(v), "pmd_devmap": pmd_devmap(v),
        "pgd_bad_l5": pgd_bad_l5(v), "p4d_bad": p4d_bad(v), "pmd_bad": pmd_bad(v),
        "is_swap_pmd": is_swap_pmd(v), "is_pmd_migration_entry": is_pmd_migration_entry(v),
        "pmd_flags": pmd_flags(v), "pud_flags": pud_flags(v), "pmd_pfn": pmd_pfn(v),
        "entry_index": entry_index(v), "swp_pte_type": swp_pte_type(v),
        "swp_pte_offset": swp_pte_offset(v), "mk_table": mk_table(v & 0xFFFFFFFFFF),
        "mk_swp_pte": mk_swp_pte(v >> 59, v & 0xFFFFFFFFFF),
    }


def _int_rewrite_enabled():
    """Whether plain Python callbacks get addresses in reused int boxes
    (pgwalk/_pyint.h) on this interpreter; otherwise each is a fresh int."""
    return bool(pgw_int_rewrite_enabled())
