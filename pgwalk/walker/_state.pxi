# Part of pgwalk.walker._core (included by _core.pyx):
# the C callbacks' objects (CFunc, Batch, WalkStats) and the walk state
# (WalkCtx, EntryRef, Scratch, MMWalk).

# ---------------------------------------------------------------------------
# C callbacks (the tiers below plain Python)
# ---------------------------------------------------------------------------

SIGNATURES = {
    "entry": "int (uint64_t *, uint64_t, uint64_t, pgwalk_walk_t *, void *)",
    "hole": "int (uint64_t, uint64_t, int, pgwalk_walk_t *, void *)",
    "hugetlb": "int (uint64_t *, uint64_t, uint64_t, uint64_t, pgwalk_walk_t *, void *)",
    "range": "int (uint64_t, uint64_t, pgwalk_walk_t *, void *)",
    "post": "void (pgwalk_walk_t *, void *)",
    "install": "int (uint64_t, uint64_t, uint64_t *, pgwalk_walk_t *, void *)",
    "batch": "int (uint64_t *, int, uint64_t, uint64_t, pgwalk_walk_t *, void *)",
}
SLOT_KINDS = {
    "pgd_entry": "entry", "p4d_entry": "entry", "pud_entry": "entry",
    "pmd_entry": "entry", "pte_entry": "entry", "pte_hole": "hole",
    "hugetlb_entry": "hugetlb", "test_walk": "range", "pre_vma": "range",
    "post_vma": "post", "install_pte": "install",
}


cdef class CFunc:
    """A C function in an ops slot (built-in ops, Cython users' functions,
    low-level callables).  Made from C with ``make_cfunc``; from Python,
    through ``pgwalk.LowLevelCallable``."""

    def __init__(self):
        raise TypeError("CFunc objects are made by C code or pgwalk.LowLevelCallable")

    @property
    def signature(self):
        return SIGNATURES[self.kind]

    @property
    def address(self):
        return <size_t>self.fn

    def __repr__(self):
        return f"<CFunc {self.kind} {self.signature} at {<size_t>self.fn:#x}>"


cdef CFunc make_cfunc(void *fn, void *ctx, str kind, object owner):
    if kind not in SIGNATURES:
        raise ValueError(f"kind must be one of {sorted(SIGNATURES)}")
    if fn == NULL:
        raise ValueError("NULL function pointer")
    cdef CFunc f = CFunc.__new__(CFunc)
    f.fn = fn
    f.ctx = ctx
    f.kind = kind
    f.owner = owner
    return f


def _cfunc_from_address(size_t fn, size_t ctx, str kind, object owner):
    """A CFunc for a raw function address (what LowLevelCallable unpacks)."""
    return make_cfunc(<void *>fn, <void *>ctx, kind, owner)


def check_slot(str name, object value):
    """Raise unless ``value`` may sit in slot ``name`` (None, a Python
    callable, a CFunc of the slot's signature, or an object that carries one
    as ``__pgwalk_cfunc__``, such as a LowLevelCallable)."""
    value = getattr(value, "__pgwalk_cfunc__", value)
    if isinstance(value, Batch):
        inner = getattr(value.fn, "__pgwalk_cfunc__", value.fn)
        if name == "hugetlb_entry" and isinstance(inner, CFunc):
            raise ValueError("hugetlb_entry: a batch there is Python only "
                             "(fn(entries, hmask, addr, next, walk)); use a per-entry C function")
        if isinstance(inner, CFunc):
            want = "batch" if SLOT_KINDS[name] in ("entry", "install") else SLOT_KINDS[name]
            if (<CFunc>inner).kind != want:
                raise ValueError(f"{name}: batch() of a C function needs signature "
                                 f"{SIGNATURES[want]!r}, not {(<CFunc>inner).signature!r}")
        return
    if isinstance(value, CFunc):
        want = SLOT_KINDS[name]
        if want in ("entry", "install") and (<CFunc>value).kind == "batch":
            return
        if (<CFunc>value).kind != want:
            raise ValueError(f"{name} takes a C function of signature {SIGNATURES[want]!r}, "
                             f"not {(<CFunc>value).signature!r}")
        return
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")


class Batch:
    """``pgwalk.batch(fn)``: one call per run instead of one per entry.
    Entry slots: ``fn(entries, addr, next, walk)`` per contiguous run of
    slots of one table (``entries`` a numpy uint64 array of the slots; at
    PTE level a writable copy whose changed slots are stored on return).  install_pte: ``fn(ptes, addr, next, walk)`` per
    run of none PTE slots, ``ptes`` zeroed scratch stored on return 0.
    pte_hole: ``fn(addr, next, depth, walk)`` per run of holes of one table
    at one depth.  hugetlb_entry (Python only): ``fn(entries, hmask, addr,
    next, walk)`` per run of huge pages in one table, ``entries`` read only.
    Per-VMA slots (test_walk, pre_vma, post_vma): called as ``fn`` itself,
    once per VMA.  See docs/decisions.md 14 and 18."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        if not callable(fn) and not isinstance(getattr(fn, "__pgwalk_cfunc__", fn), CFunc):
            raise TypeError(f"batch() needs a callable or a C function, not {type(fn).__name__}")
        self.fn = fn

    def __repr__(self):
        return f"batch({self.fn!r})"


def batch(fn):
    """Wrap ``fn`` (a Python callable, or a C function of the slot's batch
    signature) as a batched callback; see ``Batch`` for each slot."""
    return Batch(fn)


class WalkStats:
    """What one walk did, filled when passed as ``stats=`` to an entry point:
    ``calls`` per slot, ``tables`` visited per level, ``entries`` visited,
    and the mm counters' change (``alloc``, ``split_pmd``, ``split_pud``...)."""

    def __init__(self):
        self.calls = {}
        self.tables = {}
        self.entries = 0
        self.indirect_calls = 0
        self.mm = {}

    def __repr__(self):
        return (f"WalkStats(indirect_calls={self.indirect_calls}, entries={self.entries}, "
                f"calls={self.calls}, tables={self.tables}, mm={self.mm})")


# ---------------------------------------------------------------------------
# The walk state
# ---------------------------------------------------------------------------

# Indexes of WalkCtx.calls, in SLOT_NAMES order: the entry slots are counted
# at their level (L_PGD ... L_PTE), a batch call as one call of its slot.
cdef enum:
    SLOT_PTE_HOLE = 5
    SLOT_HUGETLB_ENTRY = 6
    SLOT_TEST_WALK = 7
    SLOT_PRE_VMA = 8
    SLOT_POST_VMA = 9
    SLOT_INSTALL_PTE = 10
    N_SLOTS = 11


cdef struct WalkCtx:
    pgwalk_walk_t w               # first member: a WalkCtx* is a pgwalk_walk_t*
    pgwalk_ops_t ops
    pgwalk_pool_t *pool           # pool of the tree being walked
    void *pt                      # its PageTables (borrowed)
    uint64_t *pgd                 # top-level table walked
    uint64_t task_size
    int is_init_mm
    int vma_anon
    int64_t budget                # entries until the next Ctrl-C check
    int64_t calls[N_SLOTS]        # calls per slot, indexed by SLOT_* (SLOT_NAMES order)
    int64_t tables[5]             # tables visited, by level
    int64_t entries               # slots visited
    int main_thread               # the walk runs on Python's main thread
    uint64_t *refused_pmd         # the PMD pte_offset_map last refused...
    uint64_t refused_val          # ...its value then...
    int refusals                  # ...and how many times in a row
    int64_t pte_map_ok            # pte_offset_map successes of a C-only walk, added
                                  # to the pool's stats at every tick and at the end
                                  # (no shared cache line written per table by
                                  # concurrent walks); Python walks count directly
    int py_slots                  # some slot runs Python (it may read mm.stats)
    uint64_t *iscratch            # a batched install_pte's scratch (512 slots)
    uint64_t hmask                # the hugetlb range being walked: its page mask
    int ph_on                     # a batched pte_hole's pending run...
    int ph_depth
    uint64_t ph_start
    uint64_t ph_end
    # last, so the fields the 6.13 loops touch keep their places
    int newer                     # today's loop behaviour (NEWER_* bits); 0 = 6.13
    uint64_t *refused_pud         # the PUD walk_pmd_range last refused (today's
    uint64_t refused_pud_val      # re-check), its value then, and how many
    int pud_refusals              # times in a row
    uint64_t *bad_pmd             # the PMD whose broken link pgwalk_pte_offset_map
                                  # last recorded (the walker does not count it again)


# where a PTE batch's snapshot sits in its scratch: not 4 KiB after the
# working copy, whose loads would alias it
cdef enum:
    SNAP_AT = 520


cdef class EntryRef:
    """A reference to a live table slot, valid only during the callback that
    received it (like a kernel ``pte_t *`` under its lock)."""
    cdef uint64_t *ptr
    cdef readonly int level
    cdef PageTables pt

    cdef inline uint64_t _get(self) except? 0:
        if self.ptr == NULL:
            raise RuntimeError("entry reference used outside its callback")
        return self.ptr[0]

    @property
    def val(self):
        return self._get()

    def __int__(self):
        return self._get()

    def __index__(self):
        return self._get()

    def __eq__(self, other):
        if isinstance(other, EntryRef):
            return self._get() == (<EntryRef>other)._get()
        if isinstance(other, int):
            return self._get() == other
        return NotImplemented

    def __hash__(self):
        return hash(self._get())

    def set(self, value):
        """Write the live slot.  Above PTE level a slot that links a table,
        or a value that would, is refused (a callback may not
        restructure the tree through an entry reference)."""
        cdef uint64_t v = _u64(value, "value")
        cdef uint64_t old = self._get()
        if self.pt is not None and self.pt.pool.read_only:
            raise PermissionError("entry.set: the page tables of a read-only image cannot be written")
        if self.level < L_PTE and v != old and self.pt is not None:
            if table_of(&self.pt.pool, self.ptr) != NULL:
                raise ValueError("entry.set: this slot links a page table; "
                                 "a callback may not unlink tables (pgwalk decision 8.3)")
        self.ptr[0] = v

    def __repr__(self):
        if self.ptr == NULL:
            return "<EntryRef (expired)>"
        return f"<EntryRef {('pgd', 'p4d', 'pud', 'pmd', 'pte')[self.level]} {self.ptr[0]:#018x}>"


cdef class Scratch:
    """The ``ptep`` handed to ``install_pte``: a scratch value, not the live
    slot; what it holds when the callback returns 0 is stored (starts 0)."""
    cdef uint64_t *ptr

    @property
    def val(self):
        if self.ptr == NULL:
            raise RuntimeError("ptep used outside install_pte")
        return self.ptr[0]

    def __int__(self):
        return self.val

    def __index__(self):
        return self.val

    def set(self, value):
        if self.ptr == NULL:
            raise RuntimeError("ptep used outside install_pte")
        self.ptr[0] = _u64(value, "value")


cdef uint64_t _u64(object value, str name) except? 0:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"{name} must fit in 64 bits: {value:#x}")
    return <uint64_t>value


cdef class MMWalk:
    """The ``struct mm_walk`` a callback receives: ``mm, vma, pgd, private,
    ops, no_vma`` and the settable ``action``."""
    cdef WalkCtx c
    cdef readonly object mm
    cdef readonly object vma
    cdef readonly object pgd
    cdef readonly object ops
    cdef public object private
    cdef object _exc
    cdef list _refs
    cdef Scratch _scratch
    cdef tuple _keep
    cdef object _iscratch           # a batched install_pte's scratch (numpy, 512 slots)
    cdef object _bscratch           # a batched pte_entry's copy and snapshot (numpy)
    cdef bint _py_slots             # some slot calls Python: walk holding the GIL
    cdef pgw_boxes _boxes           # addr/next as Python ints, reused (_pyint.h)

    def __dealloc__(self):
        pgw_boxes_clear(&self._boxes)

    @property
    def action(self):
        return self.c.w.action

    @action.setter
    def action(self, value):
        if not isinstance(value, int) or isinstance(value, bool) or value not in (ACT_SUBTREE, ACT_CONTINUE, ACT_AGAIN):
            raise ValueError("walk.action must be ACTION_SUBTREE, ACTION_CONTINUE or ACTION_AGAIN")
        self.c.w.action = value

    @property
    def no_vma(self):
        return bool(self.c.w.no_vma)

    def __repr__(self):
        return f"<MMWalk vma={self.vma!r} action={self.c.w.action} no_vma={self.no_vma}>"

    cdef object _batch_scratch(self):
        """The copy a PTE batch's view shows, one per walk: a view kept
        beyond its call aliases it (a write through it lands in the run being
        handed over then, or, after the walk, nowhere); it never reaches a
        table directly."""
        if self._bscratch is None:
            self._bscratch = np.empty(SNAP_AT + 512, dtype=np.uint64)
        return self._bscratch

    cdef inline int _park(self, object exc):
        if self._exc is None:
            self._exc = exc
        return PGWALK_EXC

    cdef inline EntryRef _ref(self, int level):
        cdef EntryRef ref = <EntryRef>self._refs[level]
        if Py_REFCNT(ref) > 2:       # a callback kept the last one: hand out a fresh one
            ref = EntryRef.__new__(EntryRef)
            ref.level = level
            ref.pt = <PageTables>self.c.pt
            self._refs[level] = ref
        return ref

    cdef inline PyObject *_ref_borrowed(self, int level) noexcept:
        """_ref as a borrowed pointer (the list keeps it), for the hot path;
        NULL with an exception set if a fresh one could not be made."""
        cdef PyObject *p = PyList_GET_ITEM_p(self._refs, level)
        if Py_REFCNT_p(p) == 1:
            return p
        try:
            self._ref(level)
        except BaseException:
            return NULL
        return PyList_GET_ITEM_p(self._refs, level)


