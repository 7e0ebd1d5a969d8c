"""Constants with the Linux x86-64 values: geometry, walker enums, errno,
page-table bits, VMA flags and the mmap/madvise ABI.

Everything here is a plain int so that the pure-Python reference walker, the
process model and user code share one source of truth.  The C side keeps the
same numbers in ``walker/_constants.pxd`` (levels, actions, errnos, zero
pages) and ``walker/_entries.pxd`` (entry bits); tests check that the two
views agree (``test_architecture.py``, ``test_entries.py``).
"""

# --- geometry -------------------------------------------------------------
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1) & 0xFFFF_FFFF_FFFF_FFFF


def page_down(n):
    """``n`` rounded down to a page boundary, in Python's unbounded ints (no
    64-bit wrap: syscall models check the range afterwards, as the kernel does)."""
    return n & ~(PAGE_SIZE - 1)


def page_align(n):
    """``n`` rounded up to a page boundary (the kernel's ``PAGE_ALIGN``),
    in Python's unbounded ints."""
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


PMD_SHIFT = 21
PUD_SHIFT = 30
P4D_SHIFT = 39
PMD_SIZE = 1 << PMD_SHIFT
PUD_SIZE = 1 << PUD_SHIFT
P4D_SIZE = 1 << P4D_SHIFT
PTRS_PER_TABLE = 512
HPAGE_PMD_NR = PMD_SIZE // PAGE_SIZE

U64_MASK = 0xFFFF_FFFF_FFFF_FFFF

# Depth numbers as the kernel's pte_hole() uses them.
PGD, P4D, PUD, PMD, PTE = 0, 1, 2, 3, 4
LEVEL_NAMES = ("pgd", "p4d", "pud", "pmd", "pte")


def pgdir_shift(levels):
    """PGDIR_SHIFT for 4-level (39, p4d folded) or 5-level (48) paging."""
    return 39 if levels == 4 else 48


def task_size(levels):
    """TASK_SIZE of a user mm: one page short of the lower canonical half."""
    return (1 << (47 if levels == 4 else 56)) - PAGE_SIZE


# --- walker enums (include/linux/pagewalk.h) ------------------------------
ACTION_SUBTREE = 0
ACTION_CONTINUE = 1
ACTION_AGAIN = 2

PGWALK_RDLOCK = 0
PGWALK_WRLOCK = 1
PGWALK_WRLOCK_VERIFY = 2
PGWALK_VMA_RDLOCK_VERIFY = 3      # today's kernel: the VMA is read-locked (no mmap lock)

# The batched, caller-driven walker (pt_range_walk, RFC v3): which entry types
# come back (pt_type_flags_t bits), what a step returns and at which level.
PT_TYPE_NONE = 1 << 0
PT_TYPE_FOLIO = 1 << 1
PT_TYPE_MARKER = 1 << 2
PT_TYPE_PFN = 1 << 3
PT_TYPE_SWAP = 1 << 4
PT_TYPE_MIGRATION = 1 << 5
PT_TYPE_DEVICE = 1 << 6
PT_TYPE_HWPOISON = 1 << 7
PT_TYPE_ALL = (PT_TYPE_NONE | PT_TYPE_FOLIO | PT_TYPE_MARKER | PT_TYPE_PFN | PT_TYPE_SWAP
               | PT_TYPE_MIGRATION | PT_TYPE_DEVICE | PT_TYPE_HWPOISON)
PTW_ABORT = 0
PTW_DONE = 1
PTW_NONE = 2
PTW_FOLIO = 3
PTW_MARKER = 4
PTW_PFN = 5
PTW_SWAP = 6
PTW_MIGRATION = 7
PTW_DEVICE = 8
PTW_HWPOISON = 9
PTW_PUD_LEVEL = 0
PTW_PMD_LEVEL = 1
PTW_PTE_LEVEL = 2

# --- errno ----------------------------------------------------------------
EPERM = 1
ENOENT = 2
EINTR = 4
EBADF = 9
EAGAIN = 11
ENOMEM = 12
EACCES = 13
EFAULT = 14
EBUSY = 16
EEXIST = 17
EINVAL = 22
EOVERFLOW = 75
EOPNOTSUPP = 95

# --- x86-64 page-table entry bits (arch/x86/include/asm/pgtable_types.h) ---
_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_USER = 1 << 2
_PAGE_PWT = 1 << 3
_PAGE_PCD = 1 << 4
_PAGE_ACCESSED = 1 << 5
_PAGE_DIRTY = 1 << 6
_PAGE_PSE = 1 << 7
_PAGE_GLOBAL = 1 << 8
_PAGE_PROTNONE = _PAGE_GLOBAL          # only meaningful when P is clear
_PAGE_SOFT_DIRTY = 1 << 11             # _PAGE_BIT_SOFTW3
_PAGE_UFFD_WP = 1 << 10                # _PAGE_BIT_SOFTW2
_PAGE_SPECIAL = 1 << 9                 # _PAGE_BIT_SOFTW1
_PAGE_DEVMAP = 1 << 58                 # _PAGE_BIT_SOFTW4 (6.13 still has devmap)
_PAGE_SAVED_DIRTY = 1 << 57            # _PAGE_BIT_SOFTW5: pte_dirty() reads it too
_PAGE_NX = 1 << 63
_PAGE_KNL_ERRATUM_MASK = _PAGE_DIRTY | _PAGE_ACCESSED

PHYSICAL_MASK_SHIFT = 52
PTE_PFN_MASK = ((1 << PHYSICAL_MASK_SHIFT) - 1) & ~(PAGE_SIZE - 1)
PTE_FLAGS_MASK = ~PTE_PFN_MASK & U64_MASK
PHYSICAL_PMD_PAGE_MASK = ((1 << PHYSICAL_MASK_SHIFT) - 1) & ~(PMD_SIZE - 1)
PHYSICAL_PUD_PAGE_MASK = ((1 << PHYSICAL_MASK_SHIFT) - 1) & ~(PUD_SIZE - 1)
PFN_BITS = PHYSICAL_MASK_SHIFT - PAGE_SHIFT      # 40
START_KERNEL_MAP = 0xFFFFFFFF80000000            # __START_KERNEL_map: the kernel image's mapping

_KERNPG_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY
_PAGE_TABLE = _KERNPG_TABLE | _PAGE_USER

# Protections for present leaves (the user variants of x86's PAGE_* sets).
PAGE_NONE = _PAGE_PROTNONE | _PAGE_ACCESSED
PAGE_READONLY = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED | _PAGE_NX
PAGE_SHARED = PAGE_READONLY | _PAGE_RW
PAGE_READONLY_EXEC = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED
PAGE_SHARED_EXEC = PAGE_READONLY_EXEC | _PAGE_RW
PAGE_DEFAULT = PAGE_SHARED | _PAGE_DIRTY

# --- non-present encodings (pgwalk's own; documented in docs/encodings.md) -
# A swap-format entry: P=0, PSE=0, PROTNONE=0, tag bit 1 always set so that it
# is never "none"; type in bits 52..56, offset in bits 12..51.
_PAGE_SWP_TAG = 1 << 1
SWP_TYPE_SHIFT = 52
SWP_TYPE_BITS = 5
SWP_OFFSET_BITS = PFN_BITS
SWP_OFFSET_MASK = (1 << SWP_OFFSET_BITS) - 1

# include/linux/swap.h: the special types count down from the top of the
# 5-bit type space.
MAX_SWAPFILES_SHIFT = 5
SWP_DEVICE_NUM = 3
SWP_MIGRATION_NUM = 3
SWP_HWPOISON_NUM = 1
SWP_PTE_MARKER_NUM = 1
MAX_SWAPFILES = ((1 << MAX_SWAPFILES_SHIFT) - SWP_DEVICE_NUM
                 - SWP_MIGRATION_NUM - SWP_HWPOISON_NUM - SWP_PTE_MARKER_NUM)
SWP_HWPOISON = MAX_SWAPFILES
SWP_MIGRATION_READ = MAX_SWAPFILES + SWP_HWPOISON_NUM
SWP_MIGRATION_READ_EXCLUSIVE = SWP_MIGRATION_READ + 1
SWP_MIGRATION_WRITE = SWP_MIGRATION_READ + 2
SWP_DEVICE_WRITE = MAX_SWAPFILES + SWP_HWPOISON_NUM + SWP_MIGRATION_NUM
SWP_DEVICE_READ = SWP_DEVICE_WRITE + 1
SWP_DEVICE_EXCLUSIVE = SWP_DEVICE_WRITE + 2
SWP_PTE_MARKER = SWP_DEVICE_WRITE + SWP_DEVICE_NUM

# include/linux/swapops.h PTE marker bits (6.13).
PTE_MARKER_UFFD_WP = 1 << 0
PTE_MARKER_POISONED = 1 << 1
PTE_MARKER_GUARD = 1 << 2
PTE_MARKER_MASK = PTE_MARKER_UFFD_WP | PTE_MARKER_POISONED | PTE_MARKER_GUARD

# --- VMA flags (include/linux/mm.h) ---------------------------------------
VM_NONE = 0
VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_MAYSHARE = 0x00000080
VM_GROWSDOWN = 0x00000100
VM_UFFD_MISSING = 0x00000200
VM_PFNMAP = 0x00000400
VM_MAYBE_GUARD = 0x00000800          # 6.18: a guard was installed in this VMA (sticky)
VM_UFFD_WP = 0x00001000
VM_LOCKED = 0x00002000
VM_IO = 0x00004000
VM_SEQ_READ = 0x00008000
VM_RAND_READ = 0x00010000
VM_DONTCOPY = 0x00020000
VM_DONTEXPAND = 0x00040000
VM_LOCKONFAULT = 0x00080000
VM_ACCOUNT = 0x00100000
VM_NORESERVE = 0x00200000
VM_HUGETLB = 0x00400000
VM_SYNC = 0x00800000
VM_ARCH_1 = 0x01000000
VM_WIPEONFORK = 0x02000000
VM_DONTDUMP = 0x04000000
VM_SOFTDIRTY = 0x08000000
VM_MIXEDMAP = 0x10000000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
VM_MERGEABLE = 0x80000000
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP

# --- mmap / mprotect / madvise / mremap ABI (x86-64) ------------------------
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_ANON = MAP_ANONYMOUS
MAP_GROWSDOWN = 0x0100
MAP_DENYWRITE = 0x0800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
MAP_UNINITIALIZED = 0x4000000

MADV_NORMAL = 0
MADV_RANDOM = 1
MADV_SEQUENTIAL = 2
MADV_WILLNEED = 3
MADV_DONTNEED = 4
MADV_FREE = 8
MADV_REMOVE = 9
MADV_DONTFORK = 10
MADV_DOFORK = 11
MADV_MERGEABLE = 12
MADV_UNMERGEABLE = 13
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_DONTDUMP = 16
MADV_DODUMP = 17
MADV_WIPEONFORK = 18
MADV_KEEPONFORK = 19
MADV_COLD = 20
MADV_PAGEOUT = 21
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
MADV_DONTNEED_LOCKED = 24
MADV_COLLAPSE = 25
MADV_HWPOISON = 100
MADV_SOFT_OFFLINE = 101
MADV_GUARD_INSTALL = 102
MADV_GUARD_REMOVE = 103

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4

MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
MLOCK_ONFAULT = 1

# --- model PFNs -------------------------------------------------------------
# The shared zero page and the huge zero page of the model; data pages get
# PFNs from a per-mm counter starting at FIRST_DATA_PFN.
ZERO_PFN = 1
HUGE_ZERO_PFN = 512
FIRST_DATA_PFN = 1 << 20

# --- the process model's address-space layout (x86-64 defaults) -------------
MMAP_MIN_ADDR = 0x10000                 # vm.mmap_min_addr
MMAP_BASE_GAP = 1 << 30                 # room left below the top for the stack

# --- /proc/PID/pagemap word bits (fs/proc/task_mmu.c) ----------------------
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_UFFD_WP = 1 << 57
PM_GUARD_REGION = 1 << 58
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63
PM_PFN_MASK = (1 << 55) - 1
