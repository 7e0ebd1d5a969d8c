# Part of pgwalk.walker._core (included by _core.pyx):
# the level walk, the file to hold beside the kernel's mm/pagewalk.c (6.13).
#
# One function per level, each in the kernel's shape: compute ``next``,
# handle the hole, call the slot, honour walk->action, descend only when a
# lower slot exists, stop on an error.  Every per-entry loop reads the same:
#
#     again = True                      # the first pass: the entry at addr
#     while again or next != end:
#         if again: again = False       # this entry (first, or once more)
#         else: slot += 1; addr = next  # the next entry
#
# so ``continue`` moves on to the next entry and ``again = True; continue``
# walks the current one once more: the kernel's ``goto again``.  What the
# loops call (splits, batches, holes, install_pte) is in _walk_support.pxi.

# Today's kernel (NEWER_* bits of WalkCtx.newer; 0 is 6.13, the default):
#   NEWER_RESET_TOP   walk_pmd_range/walk_pud_range reset walk->action at the
#                     top of every iteration (6.13: just before pmd/pud_entry)
#   NEWER_PUD_RECHECK walk_pmd_range retries (ACTION_AGAIN) unless the PUD
#                     links a table; walk_pud_range honours that AGAIN and no
#                     longer re-tests pud_none after the split
# The PTE loop is the same in both.  See docs/pagewalk-releases.md.
cdef enum:
    NEWER_RESET_TOP = 1
    NEWER_PUD_RECHECK = 2


# Which PTE loop a walk runs, fixed at compile time: the level functions
# are compiled once per kind.  The generic copy is every walk's; the other
# is the benchmark's inlined mincore (_mincore_inline.pxi), whose code never
# reaches the generic copy.
cdef struct GenericPtes:
    char unused                       # (a struct needs a member)

ctypedef fused PteLoop:
    GenericPtes
    InlineMincore


cdef int walk_pte_range_inner(WalkCtx *c, uint64_t *pte, uint64_t addr, uint64_t end) noexcept nogil:
    """pte_entry (or install_pte) for each slot from ``pte`` up to ``end``."""
    cdef pgwalk_ops_t *ops = &c.ops
    cdef int err = 0
    cdef int i, j, n = pte_count(addr, end)
    cdef pgwalk_entry_fn fn
    cdef void *ctx
    c.entries += n
    if ops.pte_batch != NULL:
        err = walk_pte_batches(c, pte, addr, n)
    elif ops.install_pte == NULL:
        # the common case, kept tight: slot and context in registers, the
        # call count added once
        fn = ops.pte_entry
        ctx = ops.pte_entry_ctx
        i = 0
        while i < n:
            err = fn(&pte[i], addr, addr + 4096, &c.w, ctx)
            i += 1
            if err:
                break
            addr += 4096
        c.calls[L_PTE] += i
    else:
        i = 0
        while i < n:
            if pte_none(pte[i]):
                j = _none_run(pte, i, n) if ops.install_batch != NULL else i + 1
                err = install_run(c, &pte[i], addr, j - i)
                addr += <uint64_t>(j - i) << 12
                i = j
            else:
                if ops.pte_entry == NULL:
                    err = _null_pte_entry(c, addr)
                else:
                    c.calls[L_PTE] += 1
                    err = ops.pte_entry(&pte[i], addr, addr + 4096, &c.w, ops.pte_entry_ctx)
                addr += 4096
                i += 1
            if err:
                break
    if err == 0:
        err = tick(c, n)
    return err


cdef int walk_pte_range(WalkCtx *c, PteLoop *ptes, uint64_t *pmd, uint64_t addr, uint64_t end) noexcept nogil:
    cdef uint64_t *pte
    cdef uint64_t *tbl
    if c.w.no_vma and (c.is_init_mm or addr >= c.task_size):
        # pte_offset_kernel(): no validation in the kernel; pgwalk still
        # refuses to follow a link that leads to no table of this tree.
        tbl = table_of(c.pool, pmd)
        if tbl == NULL:
            if pmd != c.bad_pmd:
                pgwalk_bad_link(c.pool, addr)         # a link out of the image: reported
            return 0
        pte = tbl + ((addr >> 12) & 511)
    else:
        pte = pte_offset_map(c, pmd, addr)
    if pte == NULL:
        # The kernel retries for ever when the PMD stays unmappable and
        # unchanged (a devmap PMD without PS in a no-VMA walk); pgwalk moves
        # on after the third refusal in a row of the same slot and value, where
        # the golden corpus' driver stops too (docs/decisions.md, 17).
        if pmd == c.refused_pmd and pmd[0] == c.refused_val:
            c.refusals += 1
        else:
            c.refused_pmd = pmd
            c.refused_val = pmd[0]
            c.refusals = 1
        if c.refusals >= 3:
            c.refused_pmd = NULL
            return 0
        c.w.action = ACT_AGAIN
        return 0
    c.refused_pmd = NULL
    c.tables[L_PTE] += 1
    if PteLoop is InlineMincore:
        return mincore_pte_range(c, ptes, pte, addr, end)
    else:
        return walk_pte_range_inner(c, pte, addr, end)


cdef int walk_pmd_range(WalkCtx *c, PteLoop *ptes, uint64_t *pud, uint64_t addr, uint64_t end) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef bint has_handler = ops.pte_entry != NULL or ops.pte_batch != NULL
    cdef bint has_install = ops.install_pte != NULL
    cdef uint64_t *pmd = table_of(c.pool, pud)
    cdef uint64_t next = addr, skip
    cdef bint again = True
    cdef int err = 0
    cdef BatchRun run
    run.start = run.end = NULL
    if c.newer & NEWER_PUD_RECHECK and (not pud_present(pud[0]) or pmd_leaf(pud[0])):
        # today: anything but a table link is retried by walk_pud_range;
        # pgwalk moves on after the third refusal of an unchanged slot
        # (the kernel would retry for ever; docs/decisions.md, 24)
        if pud == c.refused_pud and pud[0] == c.refused_pud_val:
            c.pud_refusals += 1
        else:
            c.refused_pud = pud
            c.refused_pud_val = pud[0]
            c.pud_refusals = 1
        if c.pud_refusals >= 3:
            c.refused_pud = NULL
            return 0
        c.w.action = ACT_AGAIN
        return 0
    c.refused_pud = NULL
    if pmd == NULL:
        pgwalk_bad_link(c.pool, addr)             # (today's path) a link out of the image
        return 0
    c.tables[L_PMD] += 1
    pmd += (addr >> 21) & 511
    while again or next != end:
        if again:
            again = False
        else:
            pmd += 1
            addr = next
        err = tick(c, 1)
        if err:
            break
        if c.newer & NEWER_RESET_TOP:
            c.w.action = ACT_SUBTREE
        next = addr_end(addr, end, PMD_SIZE_)
        if pte_none(pmd[0]):
            if has_install:
                err = pool_alloc(c.pool, pmd, L_PTE)
            elif ops.pte_hole != NULL:
                err = hole_at(c, addr, next, 3)
            else:
                skip = skip_none_run(c, pmd, addr, end, 21)
                if skip:
                    pmd += skip
                    next = addr_end(((addr >> 21) + skip) << 21, end, PMD_SIZE_)
            if err:
                break
            if not has_install:
                continue
        if c.ph_on:
            err = flush_holes(c)
            if err:
                break
        c.w.action = ACT_SUBTREE
        err = call_entry(c, L_PMD, pmd, addr, next, end, PMD_SIZE_, &run)
        if err:
            break
        if c.w.action == ACT_AGAIN:
            again = True
            continue
        if c.w.action == ACT_CONTINUE:
            continue
        if not has_handler:
            if not has_install:
                continue                                  # nothing below to call
            if pmd_present(pmd[0]) and (pmd_trans_huge(pmd[0]) or pmd_devmap(pmd[0])):
                continue                                  # installing only: keep the THP
        if c.w.has_vma:
            err = split_huge_pmd(c, pmd)
            if err:
                break
        elif pmd_leaf(pmd[0]) or not pmd_present(pmd[0]):
            continue
        err = walk_pte_range(c, ptes, pmd, addr, next)
        if err:
            break
        if c.w.action == ACT_AGAIN:
            again = True                                  # the PTE table went away
    if err == 0 and c.ph_on:
        err = flush_holes(c)                              # a run ends with its table
    return err


cdef int walk_pud_range(WalkCtx *c, PteLoop *ptes, uint64_t *p4d, uint64_t addr, uint64_t end) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef bint has_handler = (ops.pmd_entry != NULL or ops.pmd_batch != NULL or
                             ops.pte_entry != NULL or ops.pte_batch != NULL)
    cdef bint has_install = ops.install_pte != NULL
    cdef uint64_t *pud = table_of(c.pool, p4d)
    cdef uint64_t next = addr, skip
    cdef bint again = True
    cdef int err = 0
    cdef BatchRun run
    run.start = run.end = NULL
    if pud == NULL:
        return 0
    c.tables[L_PUD] += 1
    pud += (addr >> 30) & 511
    while again or next != end:
        if again:
            again = False
        else:
            pud += 1
            addr = next
        err = tick(c, 1)
        if err:
            break
        if c.newer & NEWER_RESET_TOP:
            c.w.action = ACT_SUBTREE
        next = addr_end(addr, end, PUD_SIZE_)
        if pte_none(pud[0]):
            if has_install:
                err = pool_alloc(c.pool, pud, L_PMD)
            elif ops.pte_hole != NULL:
                err = hole_at(c, addr, next, 2)
            else:
                skip = skip_none_run(c, pud, addr, end, 30)
                if skip:
                    pud += skip
                    next = addr_end(((addr >> 30) + skip) << 30, end, PUD_SIZE_)
            if err:
                break
            if not has_install:
                continue
        if c.ph_on:
            err = flush_holes(c)
            if err:
                break
        c.w.action = ACT_SUBTREE
        err = call_entry(c, L_PUD, pud, addr, next, end, PUD_SIZE_, &run)
        if err:
            break
        if c.w.action == ACT_AGAIN:
            again = True
            continue
        if c.w.action == ACT_CONTINUE:
            continue
        if not has_handler:
            if not has_install:
                continue
            if pud_present(pud[0]) and (pmd_trans_huge(pud[0]) or pmd_devmap(pud[0])):
                continue
        if c.w.has_vma:
            split_huge_pud(c, pud)
        elif pmd_leaf(pud[0]) or not pud_present(pud[0]):
            continue
        if not c.newer & NEWER_PUD_RECHECK:
            if pte_none(pud[0]):
                again = True                              # the split cleared it
                continue
            # The kernel has no bad check here; pgwalk does not follow a
            # link that leads to no PMD table of this tree (in an image:
            # a frame it does not hold, reported).
            if table_of(c.pool, pud) == NULL:
                pgwalk_bad_link(c.pool, addr)
                continue
        # (today: walk_pmd_range checks the PUD itself and asks for AGAIN;
        # one call site, so the 6.13 path compiles as it did)
        err = walk_pmd_range(c, ptes, pud, addr, next)
        if err:
            break
        if c.newer & NEWER_PUD_RECHECK and c.w.action == ACT_AGAIN:
            again = True
    if err == 0 and c.ph_on:
        err = flush_holes(c)
    return err


cdef int walk_p4d_range(WalkCtx *c, PteLoop *ptes, uint64_t *pgd, uint64_t addr, uint64_t end) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef bint has_handler = (ops.pud_entry != NULL or ops.pud_batch != NULL or
                             ops.pmd_entry != NULL or ops.pmd_batch != NULL or
                             ops.pte_entry != NULL or ops.pte_batch != NULL)
    cdef bint has_install = ops.install_pte != NULL
    cdef bint folded = c.w.levels == 4
    cdef int depth = 0 if folded else 1                   # real_depth(1)
    cdef uint64_t next = addr
    cdef uint64_t *p4d
    cdef bint again = True                                # (no retry at this level)
    cdef int err = 0
    cdef BatchRun run
    run.start = run.end = NULL
    if folded:
        p4d = pgd                     # p4d_offset() of a folded level is the pgd slot
    else:
        p4d = table_of(c.pool, pgd)
        if p4d == NULL:
            return 0
        c.tables[L_P4D] += 1
        p4d += (addr >> 39) & 511
    while again or next != end:
        if again:
            again = False
        else:
            p4d += 1
            addr = next
        next = end if folded else addr_end(addr, end, P4D_SIZE_)
        if p4d_none_or_clear_bad(c, p4d, addr):
            if has_install:
                err = pool_alloc(c.pool, p4d, L_PUD)
            elif ops.pte_hole != NULL:
                err = hole_at(c, addr, next, depth)
            if err:
                break
            if not has_install:
                continue
        if c.ph_on:
            err = flush_holes(c)
            if err:
                break
        err = call_entry(c, L_P4D, p4d, addr, next, end, P4D_SIZE_, &run)
        if err:
            break
        if has_handler or has_install:
            err = walk_pud_range(c, ptes, p4d, addr, next)
            if err:
                break
    if err == 0 and c.ph_on and not folded:
        err = flush_holes(c)          # folded: the run goes on in the PGD table
    return err


cdef int walk_pgd_range(WalkCtx *c, PteLoop *ptes, uint64_t addr, uint64_t end) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef bint has_handler = (ops.p4d_entry != NULL or ops.p4d_batch != NULL or
                             ops.pud_entry != NULL or ops.pud_batch != NULL or
                             ops.pmd_entry != NULL or ops.pmd_batch != NULL or
                             ops.pte_entry != NULL or ops.pte_batch != NULL)
    cdef bint has_install = ops.install_pte != NULL
    cdef int shift = 39 if c.w.levels == 4 else 48
    cdef uint64_t *pgd = c.pgd + ((addr >> shift) & 511)
    cdef uint64_t next = addr
    cdef bint again = True                                # (no retry at this level)
    cdef int err = 0
    cdef BatchRun run
    run.start = run.end = NULL
    c.tables[L_PGD] += 1
    while again or next != end:
        if again:
            again = False
        else:
            pgd += 1
            addr = next
        next = addr_end(addr, end, (<uint64_t>1) << shift)
        if pgd_none_or_clear_bad(c, pgd, addr):
            if has_install:
                err = pool_alloc(c.pool, pgd, L_P4D)
            elif ops.pte_hole != NULL:
                err = hole_at(c, addr, next, 0)
            if err:
                break
            if not has_install:
                continue
        if c.ph_on and (c.w.levels == 5 or ops.pgd_entry != NULL or ops.pgd_batch != NULL):
            err = flush_holes(c)      # (4-level: a run may go on in the next folded P4D)
            if err:
                break
        err = call_entry(c, L_PGD, pgd, addr, next, end, (<uint64_t>1) << shift, &run)
        if err:
            break
        if has_handler or has_install:
            err = walk_p4d_range(c, ptes, pgd, addr, next)
            if err:
                break
    if err == 0 and c.ph_on:
        err = flush_holes(c)
    return err


cdef int walk_hugetlb_range(WalkCtx *c, uint64_t addr, uint64_t end, uint64_t sz) noexcept nogil:
    cdef pgwalk_ops_t *ops = &c.ops
    cdef uint64_t hmask = ~(sz - 1)
    cdef uint64_t next = addr, boundary
    cdef uint64_t *pte
    cdef bint again = True                                # (no retry at this level)
    cdef int err = 0
    if ops.hugetlb_batch != NULL:
        return walk_hugetlb_batches(c, addr, end, sz)
    while again or next != end:
        if again:
            again = False
        else:
            addr = next
            err = tick(c, 1)
            if err:
                break
        boundary = (addr & hmask) + sz                    # hugetlb_entry_end()
        next = boundary if boundary < end else end
        pte = hugetlb_walk(c, addr & hmask, sz)
        if pte != NULL:
            c.calls[SLOT_HUGETLB_ENTRY] += 1
            err = ops.hugetlb_entry(pte, hmask, addr, next, &c.w, ops.hugetlb_entry_ctx)
        elif ops.pte_hole != NULL:
            c.calls[SLOT_PTE_HOLE] += 1
            err = ops.pte_hole(addr, next, -1, &c.w, ops.pte_hole_ctx)
        if err:
            break
    return err
