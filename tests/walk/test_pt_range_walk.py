"""pt_range_walk, the RFC's batched, caller-driven walker: the compiled
walker against the reference (``pgwalk.walker.ptrange_reference``) on random
process-model states, properties that hold whatever the walker, hand-written
tests that each pin one behaviour of the RFC's ``mm/pagewalk.c``, and the
bad-input rules."""

import gc
import warnings

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import pgwalk
from pgwalk import constants as C
from pgwalk import entries as E
from pgwalk.constants import (
    MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PMD, PMD_SIZE, PROT_READ,
    PROT_WRITE, PT_TYPE_ALL, PT_TYPE_FOLIO, PT_TYPE_MARKER, PT_TYPE_NONE, PT_TYPE_PFN,
    PT_TYPE_SWAP, PTE, PTW_DEVICE, PTW_FOLIO, PTW_HWPOISON, PTW_MARKER, PTW_MIGRATION,
    PTW_NONE, PTW_PFN, PTW_PMD_LEVEL, PTW_PTE_LEVEL, PTW_PUD_LEVEL, PTW_SWAP, PUD, PUD_SIZE,
    VM_HUGETLB, VM_PFNMAP, VM_READ, VM_WRITE,
)
from pgwalk.walker import ptrange_reference as R

MiB = 1 << 20
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
BASE = 0x7E0000000000                      # 1 GiB aligned: room for every region
TYPE_BIT = {C.PTW_NONE: C.PT_TYPE_NONE, C.PTW_FOLIO: C.PT_TYPE_FOLIO,
            C.PTW_MARKER: C.PT_TYPE_MARKER, C.PTW_PFN: C.PT_TYPE_PFN,
            C.PTW_SWAP: C.PT_TYPE_SWAP, C.PTW_MIGRATION: C.PT_TYPE_MIGRATION,
            C.PTW_DEVICE: C.PT_TYPE_DEVICE, C.PTW_HWPOISON: C.PT_TYPE_HWPOISON}


def walk(impl, vma, start, end, flags=PT_TYPE_ALL, mm=None):
    mm = mm or vma.vm_mm
    with mm.mmap_read_lock():
        return list(impl(vma, start, end, flags))


def both(vma, start=None, end=None, flags=PT_TYPE_ALL):
    """The compiled and the reference records of one walk (must agree)."""
    start = vma.vm_start if start is None else start
    end = vma.vm_end if end is None else end
    c = walk(pgwalk.pt_range_walk, vma, start, end, flags)
    r = walk(R.pt_range_walk, vma, start, end, flags)
    assert c == r, next((x, y) for x, y in zip(c, r) if x != y) if len(c) == len(r) else (len(c), len(r))
    return c


def anon(mm, addr, length, prot=RW, flags=ANON):
    return mm.mmap(addr, length, prot, flags | MAP_FIXED)


# --- random process-model states --------------------------------------------------

SLOT = 16 * MiB                      # each recipe region gets its own slot


@st.composite
def recipes(draw):
    levels = draw(st.sampled_from([4, 4, 5]))
    ops = []
    for i in range(draw(st.integers(1, 4))):
        base = BASE + i * SLOT
        kind = draw(st.sampled_from(["anon", "thp", "thp", "shmem", "hugetlb", "pfnmap"]))
        npages = draw(st.integers(1, 1536))
        ops.append(("region", kind, base, npages))
        for _ in range(draw(st.integers(0, 8))):
            op = draw(st.sampled_from(["touch", "touchw", "fill", "mprotect", "munmap",
                                       "mremap", "guard", "swap", "migration", "special",
                                       "collapse", "hwpoison", "device", "pmdmig", "badpmd",
                                       "clearad"]))
            off = draw(st.integers(0, max(0, npages - 1))) * PAGE_SIZE
            n = draw(st.integers(1, 520))
            ops.append((op, base, off, n, draw(st.integers(0, 1 << 20))))
    fork = draw(st.booleans())
    return levels, ops, fork


def build(recipe):
    levels, ops, fork = recipe
    mm = pgwalk.MM(levels=levels)
    for op in ops:
        try:
            apply(mm, op)
        except (OSError, ValueError, pgwalk.SegmentationFault, pgwalk.BusError):
            pass
    if fork:
        child = mm.fork()
        return child, mm
    return mm, None


def apply(mm, op):
    if op[0] == "region":
        _, kind, base, npages = op
        length = npages * PAGE_SIZE
        if kind in ("anon", "thp"):
            anon(mm, base, length)
            if kind == "thp":
                mm.madvise(base, length, C.MADV_HUGEPAGE)
                for a in range(base, base + length, PMD_SIZE):
                    mm.touch(a, write=True)
        elif kind == "shmem":
            mm.mmap(base, -(-length // PMD_SIZE) * PMD_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
        elif kind == "hugetlb":
            size = PUD_SIZE if npages > 1400 else PMD_SIZE
            if size == PUD_SIZE:
                vbase = BASE + 64 * PUD_SIZE
                mm.add_vma(vbase, vbase + PUD_SIZE, VM_READ | VM_WRITE | VM_HUGETLB,
                           hugepage_size=PUD_SIZE)
                mm.map(vbase, level=PUD)
            else:
                mm.add_vma(base, base + 4 * PMD_SIZE, VM_READ | VM_WRITE | VM_HUGETLB)
                mm.map(base, level=PMD)
                mm.map(base + 2 * PMD_SIZE, level=PMD)
        elif kind == "pfnmap":
            mm.add_vma(base, base + length, VM_READ | VM_PFNMAP)
            for i in range(0, min(npages, 40)):
                mm.set_entry(base + i * PAGE_SIZE, PTE,
                             E.pfn_pte(0x5000 + i, C.PAGE_READONLY | C._PAGE_SPECIAL))
        return
    name, base, off, n, x = op
    addr = base + off
    vma = mm.find_vma(addr)
    if vma is None or vma.vm_start > addr:
        return
    end = min(vma.vm_end, addr + n * PAGE_SIZE)
    if name in ("touch", "touchw"):
        for a in range(addr, end, PAGE_SIZE * (1 + x % 7)):
            mm.touch(a, write=name == "touchw")
    elif name == "fill":
        for a in range(addr, end, PAGE_SIZE):
            mm.touch(a, write=True)
    elif name == "mprotect":
        mm.mprotect(addr, end - addr, PROT_READ if x % 2 else RW)
    elif name == "munmap":
        mm.munmap(addr, end - addr)
    elif name == "mremap":
        mm.mremap(addr, end - addr, end - addr, C.MREMAP_MAYMOVE | C.MREMAP_FIXED,
                  base + SLOT // 2 + (x % 64) * PAGE_SIZE)
    elif name == "guard":
        mm.madvise(addr, end - addr, C.MADV_GUARD_INSTALL)
    elif name == "collapse":
        mm.madvise(addr & ~(PMD_SIZE - 1), PMD_SIZE, C.MADV_COLLAPSE)
    elif name == "swap":
        t = x % 3
        for i, a in enumerate(range(addr, min(end, addr + 40 * PAGE_SIZE), PAGE_SIZE)):
            off2 = x + i + (1 if i == 17 else 0)
            mm.set_entry(a, PTE, E.swp_entry_to_pte(E.swp_entry(t, off2)))
    elif name in ("migration", "hwpoison", "device"):
        t = {"migration": C.SWP_MIGRATION_READ + x % 3, "hwpoison": C.SWP_HWPOISON,
             "device": C.SWP_DEVICE_WRITE + x % 3}[name]
        mm.set_entry(addr, PTE, E.swp_entry_to_pte(E.swp_entry(t, 0x100000 + x)))
    elif name == "pmdmig":
        h = addr & ~(PMD_SIZE - 1)
        if h >= vma.vm_start and h + PMD_SIZE <= vma.vm_end and E.pmd_leaf(mm.entry(h, PMD)):
            pfn = E.pmd_pfn(mm.entry(h, PMD))
            mm.set_entry(h, PMD, E.swp_entry_to_pmd(E.swp_entry(C.SWP_MIGRATION_WRITE, pfn)))
    elif name == "special":
        mm.set_entry(addr, PTE, E.pfn_pte(C.ZERO_PFN, C.PAGE_READONLY | C._PAGE_SPECIAL))
    elif name == "badpmd":
        h = addr & ~(PMD_SIZE - 1)
        if mm.entry(h, PMD) == 0:
            mm.set_entry(h, PMD, 0x8000_0000_0000_0067 | (x << 12))
    elif name == "clearad":
        v = mm.entry(addr, PTE)
        if E.pte_present(v):
            mm.set_entry(addr, PTE, v & ~(C._PAGE_ACCESSED | C._PAGE_DIRTY | C._PAGE_RW))


@st.composite
def walk_args(draw, vma):
    npages = (vma.vm_end - vma.vm_start) // PAGE_SIZE
    a = draw(st.integers(0, npages - 1))
    b = draw(st.integers(a + 1, npages))
    return vma.vm_start + a * PAGE_SIZE, vma.vm_start + b * PAGE_SIZE


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(recipe=recipes(), data=st.data())
def test_compiled_walker_matches_reference_on_process_states(recipe, data):
    """Built twice from one recipe (a walk may clear bad entries): both
    walkers give the same records for every VMA, for PT_TYPE_ALL and a random
    flags set over a random subrange, and leave the same tables."""
    mm_c, _pc = build(recipe)
    mm_r, _pr = build(recipe)
    assert [(v.vm_start, v.vm_end) for v in mm_c.vmas] == [(v.vm_start, v.vm_end) for v in mm_r.vmas]
    for vc, vr in zip(mm_c.vmas, mm_r.vmas):
        flags = data.draw(st.integers(0, PT_TYPE_ALL), label="flags")
        start, end = data.draw(walk_args(vc), label="range")
        for f, s, e in ((PT_TYPE_ALL, vc.vm_start, vc.vm_end), (flags, start, end)):
            c = walk(pgwalk.pt_range_walk, vc, s, e, f)
            r = walk(R.pt_range_walk, vr, s, e, f)
            assert c == r, (f, s, e)
    assert mm_c.stats == mm_r.stats
    for vc in mm_c.vmas:
        for a in range(vc.vm_start, min(vc.vm_end, vc.vm_start + 4 * PMD_SIZE), PMD_SIZE):
            assert mm_c.entry(a, PMD) == mm_r.entry(a, PMD)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(recipe=recipes(), flags=st.integers(0, PT_TYPE_ALL))
def test_a_flags_walk_is_the_full_walk_filtered(recipe, flags):
    """Every wanted entry starts a record where the full walk has one: the
    records of ``flags`` are those of PT_TYPE_ALL whose type ``flags`` asks
    for (``softleaf_entry`` aside: skipped entries set it too).  The full
    walk tiles the range, and a PTE batch maps consecutive pages."""
    mm, _parent = build(recipe)
    for vma in mm.vmas:
        full = walk(pgwalk.pt_range_walk, vma, vma.vm_start, vma.vm_end)
        part = walk(pgwalk.pt_range_walk, vma, vma.vm_start, vma.vm_end, flags)

        def key(r):
            t = r.astuple()
            return t[:12] + t[13:]
        assert [key(r) for r in part] == [key(r) for r in full if TYPE_BIT[r.type] & flags]
        for r in full:
            assert r.type in TYPE_BIT
        for prev, r in zip(full, full[1:]):
            assert r.curr_addr == prev.next_addr
        if full and full[-1].next_addr >= vma.vm_end:
            assert full[0].curr_addr == vma.vm_start
        for r in full:
            if r.type == PTW_FOLIO and r.level == PTW_PTE_LEVEL:
                for i in range(r.nr_entries):
                    assert E.pte_pfn(mm.entry(r.curr_addr + i * PAGE_SIZE, PTE)) == r.pfn + i


def test_every_flags_set_on_a_rich_state():
    """All 256 flags sets, compiled against reference, on one state holding
    every kind of entry."""
    mm = rich_mm()
    for vma in mm.vmas:
        for flags in range(PT_TYPE_ALL + 1):
            both(vma, flags=flags)


def rich_mm(levels=4):
    mm = pgwalk.MM(levels=levels)
    a = anon(mm, BASE, 8 * MiB)
    mm.madvise(a, 8 * MiB, C.MADV_HUGEPAGE)
    mm.touch(a, write=True)
    mm.touch(a + 2 * MiB, write=True)
    mm.mprotect(a + 2 * MiB + 0x10000, PAGE_SIZE, PROT_READ)
    mm.touch(a + 4 * MiB + 0x5000)
    mm.madvise(a + 4 * MiB + 0x8000, 2 * PAGE_SIZE, C.MADV_GUARD_INSTALL)
    for i, off in enumerate((100, 101, 103)):
        mm.set_entry(a + 4 * MiB + 0x20000 + i * PAGE_SIZE, PTE, E.swp_entry_to_pte(E.swp_entry(3, off)))
    mm.set_entry(a + 4 * MiB + 0x30000, PTE, E.swp_entry_to_pte(E.swp_entry(C.SWP_MIGRATION_READ, 0x123456)))
    mm.set_entry(a + 4 * MiB + 0x31000, PTE, E.swp_entry_to_pte(E.swp_entry(C.SWP_HWPOISON, 0x123457)))
    mm.set_entry(a + 4 * MiB + 0x32000, PTE, E.swp_entry_to_pte(E.swp_entry(C.SWP_DEVICE_READ, 0x123458)))
    s = mm.mmap(BASE + 64 * MiB, 4 * MiB, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    for o in range(0, 4 * MiB, PAGE_SIZE):
        mm.touch(s + o, write=True)
    mm.madvise(s, 2 * MiB, C.MADV_COLLAPSE)
    h = BASE + 128 * MiB
    mm.add_vma(h, h + 4 * MiB, VM_READ | VM_WRITE | VM_HUGETLB)
    mm.map(h, level=PMD)
    return mm


# --- one RFC behaviour each -------------------------------------------------------

def thp_mm():
    mm = pgwalk.MM()
    a = anon(mm, BASE, 4 * MiB)
    mm.madvise(a, 4 * MiB, C.MADV_HUGEPAGE)
    mm.touch(a, write=True)
    return mm, a, mm.find_vma(a)


def test_pmd_mapped_thp_is_one_folio_record():
    """A PMD-mapped THP (vm_normal_page_pmd; folio_size == PMD_SIZE, no
    folio_pmd_batch): one PTW_FOLIO record at PMD level, flags from the PMD,
    the page at curr_addr offset into the folio."""
    mm, a, vma = thp_mm()
    recs = both(vma, a + 0x3000, a + 2 * MiB, PT_TYPE_FOLIO)
    assert len(recs) == 1
    r = recs[0]
    assert (r.type, r.level, r.nr_entries, r.size) == (PTW_FOLIO, PTW_PMD_LEVEL, 1, PMD_SIZE)
    head = E.pmd_pfn(mm.entry(a, PMD))
    assert (r.folio, r.pfn) == (head, head + 3)
    assert r.present and r.writable and r.young and r.dirty
    assert r.next_addr == a + 2 * MiB


def test_pte_mapped_thp_is_batched_with_merged_bits():
    """folio_pte_batch_flags(FPB_MERGE_WRITE | FPB_MERGE_YOUNG_DIRTY): the PTEs
    of a PTE-mapped THP form batches that differ only in write/young/dirty;
    those bits are ORed over the batch.  The batch is bounded by the range
    and the PMD, not by the VMA: with ``end`` past vm_end it runs on into the
    next VMA (the read-only page there differs only in write, which is
    ignored) -- the RFC's caller does not limit max_nr to the VMA."""
    mm, a, vma = thp_mm()
    mm.mprotect(a + 0x10000, PAGE_SIZE, PROT_READ)          # splits the PMD and the VMA
    v = mm.entry(a, PTE)
    mm.set_entry(a, PTE, v & ~(C._PAGE_RW | C._PAGE_DIRTY | C._PAGE_ACCESSED))
    assert vma.vm_end == a + 0x10000
    recs = both(vma, flags=PT_TYPE_FOLIO)
    assert [(r.curr_addr - a, r.nr_entries) for r in recs] == [(0, 16)]
    assert recs[0].writable and recs[0].young and recs[0].dirty
    assert recs[0].folio == E.pte_pfn(v)
    recs = both(vma, a, a + 2 * MiB, PT_TYPE_FOLIO)          # ends at ``end``: no warning
    assert [(r.curr_addr - a, r.nr_entries) for r in recs] == [(0, 512)]


def test_pte_batch_stops_at_a_different_bit_and_at_the_range_end():
    """folio_pte_batch_flags compares every bit but PFN/dirty/soft-dirty/
    write/accessed: a PTE with NX cleared breaks the batch; max_nr is
    (pmd_addr_end(addr, end) - addr) >> PAGE_SHIFT, so the range end cuts it."""
    mm, a, vma = thp_mm()
    mm.madvise(a + 0x10000, PAGE_SIZE, C.MADV_GUARD_INSTALL)  # split the PMD, keep the VMA
    mm.madvise(a + 0x10000, PAGE_SIZE, C.MADV_GUARD_REMOVE)
    v = mm.entry(a + 0x5000, PTE)
    mm.set_entry(a + 0x5000, PTE, v & ~C._PAGE_NX)
    recs = both(vma, a, a + 0x40000, PT_TYPE_FOLIO)
    assert [(r.curr_addr - a, r.nr_entries) for r in recs] == [
        (0, 5), (0x5000, 1), (0x6000, 10), (0x11000, 0x2f)]
    assert recs[-1].next_addr == a + 0x40000


def test_pte_batch_never_leaves_the_pmd():
    """A THP moved by 1 MiB (mremap) straddles two PTE tables: the batch stops
    at the PMD boundary (max_nr from pmd_addr_end) and a new one starts."""
    mm, a, vma = thp_mm()
    new = BASE + 64 * MiB + MiB
    mm.mremap(a, 2 * MiB, 2 * MiB, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, new)
    nvma = mm.find_vma(new)
    recs = both(nvma, flags=PT_TYPE_FOLIO)
    assert [(r.curr_addr - new, r.nr_entries, r.level) for r in recs] == [
        (0, 256, PTW_PTE_LEVEL), (MiB, 256, PTW_PTE_LEVEL)]
    assert recs[0].folio == recs[1].folio and recs[1].pfn == recs[0].pfn + 256


def test_swap_ptes_batch_by_consecutive_offsets():
    """swap_pte_batch: swap PTEs of one type with offsets +1 each form one
    PTW_SWAP record; a gap in the offsets or another type starts a new one.
    Not present, no page."""
    mm = pgwalk.MM()
    a = anon(mm, BASE, 2 * MiB)
    offs = [(2, 10), (2, 11), (2, 12), (2, 14), (1, 15)]
    for i, (t, o) in enumerate(offs):
        mm.set_entry(a + i * PAGE_SIZE, PTE, E.swp_entry_to_pte(E.swp_entry(t, o)))
    recs = both(mm.find_vma(a), flags=PT_TYPE_SWAP)
    assert [(r.curr_addr - a, r.nr_entries, r.type) for r in recs] == [
        (0, 3, PTW_SWAP), (0x3000, 1, PTW_SWAP), (0x4000, 1, PTW_SWAP)]
    assert recs[0].softleaf_entry == E.swp_entry(2, 10)
    assert not recs[0].present and recs[0].pfn == -1 and recs[0].folio == -1


def test_zero_page_is_pfn():
    """A read fault maps the shared zero page (special): vm_normal_page gives
    no page and is_zero_pfn holds, so PTW_PFN, with no page or folio and the
    PTE's own bits (PTE level sets them for PTW_PFN)."""
    mm = pgwalk.MM()
    a = anon(mm, BASE, 2 * MiB)
    mm.madvise(a, 2 * MiB, C.MADV_NOHUGEPAGE)
    mm.touch(a)
    recs = both(mm.find_vma(a), flags=PT_TYPE_PFN | PT_TYPE_FOLIO)
    assert [(r.type, r.curr_addr) for r in recs] == [(PTW_PFN, a)]
    assert (recs[0].pfn, recs[0].folio, recs[0].present) == (-1, -1, True)
    assert not recs[0].writable


def test_pfnmap_special_is_pfn_and_plain_is_folio():
    """VM_PFNMAP: a special PTE is PTW_PFN; a PTE without the special bit is a
    normal page to vm_normal_page (x86 marks every special mapping), so
    PTW_FOLIO."""
    mm = pgwalk.MM()
    vma = mm.add_vma(BASE, BASE + 2 * MiB, VM_READ | VM_PFNMAP)
    mm.set_entry(BASE, PTE, E.pfn_pte(0x4242, C.PAGE_READONLY | C._PAGE_SPECIAL))
    mm.set_entry(BASE + PAGE_SIZE, PTE, E.pfn_pte(0x4243, C.PAGE_READONLY))
    recs = both(vma, flags=PT_TYPE_PFN | PT_TYPE_FOLIO)
    assert [(r.type, r.pfn) for r in recs] == [(PTW_PFN, -1), (PTW_FOLIO, 0x4243)]


def test_special_pte_elsewhere_ends_the_walk():
    """The RFC's pt_range_walk leaves the type at PTW_DONE for a special PTE
    that is neither the zero page nor in a VM_PFNMAP VMA: the caller's loop
    ends there, whatever the flags."""
    mm = pgwalk.MM()
    a = anon(mm, BASE, 2 * MiB)
    mm.touch(a + 2 * PAGE_SIZE, write=True)
    mm.set_entry(a + PAGE_SIZE, PTE, E.pfn_pte(0x4242, C.PAGE_READONLY | C._PAGE_SPECIAL))
    recs = both(mm.find_vma(a), flags=PT_TYPE_FOLIO)
    assert recs == []
    recs = both(mm.find_vma(a))
    assert [r.type for r in recs] == [PTW_NONE]


def test_pmd_swap_entry_ends_the_walk_and_pmd_migration_is_reported():
    """At PMD level the RFC handles markers, migration, hwpoison and device
    entries; a swap-file entry leaves the type at PTW_DONE (the walk ends).
    A PMD migration entry is PTW_MIGRATION with the page at curr_addr."""
    mm, a, vma = thp_mm()
    pfn = E.pmd_pfn(mm.entry(a, PMD))
    mm.set_entry(a, PMD, E.swp_entry_to_pmd(E.swp_entry(C.SWP_MIGRATION_READ, pfn)))
    r = both(vma, a + 0x2000, a + 4 * MiB, C.PT_TYPE_MIGRATION)
    assert [(x.type, x.level, x.pfn, x.folio, x.present) for x in r] == [
        (PTW_MIGRATION, PTW_PMD_LEVEL, pfn + 2, pfn, False)]
    mm.set_entry(a, PMD, E.swp_entry_to_pmd(E.swp_entry(5, 77)))
    assert both(vma, flags=PT_TYPE_ALL) == []


@pytest.mark.parametrize("level", [PUD, PMD], ids=["pud", "pmd"])
def test_non_present_huge_entries_by_type(level):
    """The RFC's PUD and PMD levels classify a non-present entry alike, but
    for device entries: a marker is PTW_MARKER, migration and hwpoison carry
    their page; a device entry is PTW_DEVICE (present) at PMD level and ends
    the walk (type PTW_DONE) at PUD level, as a swap-file entry does at
    both; an unwanted type is skipped and the walk goes on."""
    size = PUD_SIZE if level == PUD else PMD_SIZE
    lvl = PTW_PUD_LEVEL if level == PUD else PTW_PMD_LEVEL
    cases = [
        (E.make_pte_marker(C.PTE_MARKER_GUARD), C.PT_TYPE_MARKER, (PTW_MARKER, -1, False)),
        (E.swp_entry_to_pte(E.swp_entry(C.SWP_MIGRATION_READ, 0x4000)), C.PT_TYPE_MIGRATION,
         (PTW_MIGRATION, 0x4000, False)),
        (E.swp_entry_to_pte(E.swp_entry(C.SWP_HWPOISON, 0x4000)), C.PT_TYPE_HWPOISON,
         (PTW_HWPOISON, 0x4000, False)),
        (E.swp_entry_to_pte(E.swp_entry(C.SWP_DEVICE_EXCLUSIVE, 0x4000)), C.PT_TYPE_DEVICE,
         None if level == PUD else (PTW_DEVICE, 0x4000, True)),
        (E.swp_entry_to_pte(E.swp_entry(3, 0x4000)), C.PT_TYPE_SWAP, None),
    ]
    for value, wanted, want in cases:
        mm = pgwalk.MM()
        a = anon(mm, PUD_SIZE, 2 * size)
        mm.set_entry(a, level, value)
        vma = mm.find_vma(a)
        recs = both(vma, flags=PT_TYPE_ALL & ~PT_TYPE_NONE)
        assert [(r.type, r.level, r.pfn, r.present) for r in recs] == (
            [] if want is None else [(want[0], lvl, want[1], want[2])]), hex(value)
        if want is not None:
            assert recs[0].softleaf_entry == E.pte_to_swp_entry(value)
            # not wanted: skipped, and the walk goes on to the next entry
            mm.set_entry(a + size, level, value)
            assert [(r.curr_addr, r.type) for r in both(vma, flags=PT_TYPE_ALL & ~wanted)] == []
            assert len(both(vma, flags=wanted)) == 2


def test_markers_and_pfn_swap_entries():
    """Guard markers are PTW_MARKER; migration/hwpoison/device entries carry
    their page (softleaf_to_page) and folio; device entries count as present."""
    mm = pgwalk.MM()
    a = anon(mm, BASE, 2 * MiB)
    mm.madvise(a, PAGE_SIZE, C.MADV_GUARD_INSTALL)
    for i, t in enumerate((C.SWP_MIGRATION_WRITE, C.SWP_HWPOISON, C.SWP_DEVICE_EXCLUSIVE)):
        mm.set_entry(a + (i + 1) * PAGE_SIZE, PTE, E.swp_entry_to_pte(E.swp_entry(t, 0x9000 + i)))
    recs = both(mm.find_vma(a), flags=PT_TYPE_ALL & ~PT_TYPE_NONE)
    assert [(r.type, r.pfn, r.folio, r.present) for r in recs] == [
        (PTW_MARKER, -1, -1, False), (PTW_MIGRATION, 0x9000, 0x9000, False),
        (PTW_HWPOISON, 0x9001, 0x9001, False), (PTW_DEVICE, 0x9002, 0x9002, True)]
    assert E.is_guard_marker(recs[0].entry)


def test_top_levels_none_give_no_record_and_none_sizes_are_the_level_size():
    """A none PGD/P4D entry is skipped without a record even under
    PT_TYPE_ALL; none entries come back from the PUD level down, each with
    size nr_entries * the level's size -- even where the range clips it."""
    for levels in (4, 5):
        mm = pgwalk.MM(levels=levels)
        vma = mm.add_vma(BASE, BASE + 4 * PUD_SIZE, VM_READ | VM_WRITE)
        assert both(vma) == []
        mm.map(BASE + PUD_SIZE + 3 * PMD_SIZE + 5 * PAGE_SIZE)
        recs = both(vma, BASE + PUD_SIZE // 2, BASE + 4 * PUD_SIZE)
        first = recs[0]
        assert (first.type, first.level, first.size) == (PTW_NONE, PTW_PUD_LEVEL, PUD_SIZE)
        assert first.next_addr - first.curr_addr == PUD_SIZE // 2
        assert [r.level for r in recs[1:4]] == [PTW_PMD_LEVEL] * 3
        assert [r.type for r in recs].count(PTW_FOLIO) == 1


def test_hugetlb_is_walked_as_ordinary_tables():
    """hugetlb VMAs are walked with the same descent: PMD and PUD hugetlb
    leaves are PTW_FOLIO records at their level, pmd_shared false (no pool
    table is shared)."""
    mm = pgwalk.MM()
    v2 = mm.add_vma(BASE, BASE + 4 * MiB, VM_READ | VM_WRITE | VM_HUGETLB)
    mm.map(BASE + 2 * MiB, level=PMD)
    g = BASE + 8 * PUD_SIZE
    v1 = mm.add_vma(g, g + PUD_SIZE, VM_READ | VM_WRITE | VM_HUGETLB, hugepage_size=PUD_SIZE)
    mm.map(g, level=PUD)
    r2 = both(v2, flags=PT_TYPE_FOLIO)
    r1 = both(v1, g + 5 * PAGE_SIZE, g + PUD_SIZE, PT_TYPE_FOLIO)
    assert [(r.level, r.size, r.pmd_shared) for r in r2] == [(PTW_PMD_LEVEL, PMD_SIZE, False)]
    assert [(r.level, r.size, r.pfn - r.folio) for r in r1] == [(PTW_PUD_LEVEL, PUD_SIZE, 5)]


def test_shmem_folio_orders_come_from_the_object():
    """MM.pt_folio: a collapsed shmem folio split non-uniformly by a hole
    punch leaves folios of several orders; faulted back in by PTEs, each
    batch is one folio (folio_pte_batch_flags never passes the folio's end)."""
    mm = pgwalk.MM()
    s = mm.mmap(BASE, 2 * MiB, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    for o in range(0, 2 * MiB, PAGE_SIZE):
        mm.touch(s + o, write=True)
    assert mm.madvise(s, 2 * MiB, C.MADV_COLLAPSE) == 0
    mm.madvise(s + 0x3000, PAGE_SIZE, C.MADV_REMOVE)
    for o in range(0, 2 * MiB, PAGE_SIZE):
        mm.touch(s + o, write=True)
    vma = mm.find_vma(s)
    recs = both(vma, flags=PT_TYPE_FOLIO)
    obj = vma.vm_file
    for r in recs:
        idx = (r.curr_addr - s) // PAGE_SIZE
        k = int(obj.order[idx])
        assert r.nr_entries <= 1 << k
        assert r.folio == int(obj.pages[idx & ~((1 << k) - 1)])
    assert max(r.nr_entries for r in recs) >= 256


def test_fork_child_walks_like_the_parent_without_write():
    """After fork the child maps the same folios (COW, write-protected): the
    same records but writable."""
    mm, a, vma = thp_mm()
    child = mm.fork()
    pr = both(vma)
    cr = both(child.find_vma(a))
    assert [(r.type, r.curr_addr, r.folio) for r in pr] == [(r.type, r.curr_addr, r.folio) for r in cr]
    assert all(not r.writable for r in cr)


# --- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("impl", [pgwalk.pt_range_walk, R.pt_range_walk])
def test_empty_and_outside_ranges(impl):
    """start >= end: PTW_DONE at once (pt_range_walk_start), no lock needed; a
    start outside the VMA: the kernel's WARN_ON_ONCE (RuntimeWarning) and no
    record; the VMA's mm may be given but not another one."""
    mm, a, vma = thp_mm()
    assert list(impl(vma, a + PAGE_SIZE, a + PAGE_SIZE)) == []
    assert list(impl(vma, a + 2 * PAGE_SIZE, a)) == []
    with mm.mmap_read_lock():
        with pytest.warns(RuntimeWarning, match="outside"):
            assert list(impl(vma, a - 2 * MiB, a + MiB)) == []
        assert len(list(impl(vma, a, a + MiB, mm=mm))) == 1
    other = pgwalk.MM()
    with pytest.raises(ValueError, match="mm"):
        impl(vma, a, a + MiB, mm=other)
    loose = pgwalk.VMA(a, a + MiB)
    assert list(impl(loose, a, a + MiB)) == []       # no mm: PTW_DONE


@pytest.mark.parametrize("impl", [pgwalk.pt_range_walk, R.pt_range_walk])
def test_argument_errors_name_the_argument(impl):
    mm, a, vma = thp_mm()
    with pytest.raises(ValueError, match="start"):
        impl(vma, a + 1, a + MiB)
    with pytest.raises(ValueError, match="end"):
        impl(vma, a, a + MiB + 8)
    with pytest.raises(ValueError, match="flags"):
        impl(vma, a, a + MiB, 256)
    with pytest.raises(TypeError, match="flags"):
        impl(vma, a, a + MiB, None)
    with pytest.raises(TypeError, match="vma"):
        impl(mm, a, a + MiB)
    with pytest.raises(ValueError, match="canonical"):
        impl(vma, a, 1 << 50)


@pytest.mark.parametrize("impl", [pgwalk.pt_range_walk, R.pt_range_walk])
def test_a_step_needs_the_mmap_lock(impl):
    mm, a, vma = thp_mm()
    it = impl(vma, a, a + 4 * MiB)
    with pytest.raises(pgwalk.LockAssertionError):
        next(it)
    with mm.mmap_read_lock():
        assert next(it).type == PTW_FOLIO
    with mm.mmap_write_lock():
        assert next(it).type == PTW_NONE


@pytest.mark.parametrize("impl", [pgwalk.pt_range_walk, R.pt_range_walk])
def test_a_step_after_the_mm_changed_raises(impl):
    """munmap (mmap write lock) or a table freed by a raw edit between two
    steps: the next step raises RuntimeError and the iterator is finished."""
    mm, a, vma = thp_mm()
    mm.touch(a + 2 * MiB + PAGE_SIZE)
    it = impl(vma, a, a + 4 * MiB)
    with mm.mmap_read_lock():
        next(it)
    mm.munmap(a + 2 * MiB, 2 * MiB)
    with mm.mmap_read_lock():
        with pytest.raises(RuntimeError, match="changed"):
            next(it)
        assert list(it) == []
    it = impl(vma, a, a + 2 * MiB)
    mm2 = pgwalk.MM()
    v2 = anon(mm2, BASE, 4 * MiB)
    mm2.touch(v2 + 2 * MiB)
    it = impl(mm2.find_vma(v2), v2, v2 + 4 * MiB)
    with mm2.mmap_read_lock():
        next(it)
        mm2.set_entry(v2 + 2 * MiB, PMD, 0)              # frees the PTE table
        with pytest.raises(RuntimeError, match="changed"):
            next(it)


def test_abandoning_an_iterator_runs_done():
    """close(), exhaustion and garbage collection run pt_range_walk_done: no
    page-table lock, no entry pointer, no VMA lock left held."""
    mm, a, vma = thp_mm()
    mm.mprotect(a + 0x10000, PAGE_SIZE, PROT_READ)
    with mm.mmap_read_lock():
        it = pgwalk.pt_range_walk(vma, vma.vm_start, vma.vm_end)
        st_ = it._stepper
        next(it)
        assert st_.held() == (True, True, True)
        it.close()
        assert st_.held() == (False, False, False)
        assert list(it) == []
        it = pgwalk.pt_range_walk(vma, vma.vm_start, vma.vm_end)
        st_ = it._stepper
        next(it)
        del it
        gc.collect()
        assert st_.held() == (False, False, False)


def test_range_end_past_the_vma_follows_the_kernel():
    """The RFC checks only where a step starts against the VMA: one step may
    run past vm_end (skipping entries) and report an entry of the next VMA;
    the following step warns and ends the walk."""
    mm = pgwalk.MM()
    a = anon(mm, BASE, 2 * MiB)
    b = anon(mm, BASE + 2 * MiB, 2 * MiB, prot=PROT_READ)
    mm.touch(b + PAGE_SIZE)
    va = mm.find_vma(a)
    with mm.mmap_read_lock(), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = list(pgwalk.pt_range_walk(va, a, b + 2 * MiB, PT_TYPE_PFN | PT_TYPE_FOLIO))
        r = list(R.pt_range_walk(va, a, b + 2 * MiB, PT_TYPE_PFN | PT_TYPE_FOLIO))
    assert c == r and [x.curr_addr for x in c] == [b + PAGE_SIZE]
    assert len(w) == 2 and all(issubclass(x.category, RuntimeWarning) for x in w)


def test_constants_are_exported_and_agree_with_c():
    from pgwalk.walker import _ptrange
    for name, value in _ptrange.C_CONSTANTS.items():
        assert getattr(C, name) == value == getattr(pgwalk, name), name
    assert C.PT_TYPE_ALL == 0xFF and len(_ptrange.C_CONSTANTS) == 22


def test_example_cython_pt_range_builds_against_the_installed_package(tmp_path):
    """The Cython example drives pgwalk_pt_range_walk_start/next/done in
    nogil C: 512 (THP) + 511 (PTE-mapped THP, two batches) + 8 pages, in
    1 + 2 + 8 records (a real compile: about 10 s)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    script = Path(pgwalk.__file__).parent / "_examples" / "cython" / "build.py"
    env = dict(os.environ, PYTHONPATH=str(Path(pgwalk.__file__).parent.parent))
    r = subprocess.run([sys.executable, str(script), str(tmp_path), "ptrange_count"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "present pages=1031 records=11" in r.stdout


# --- the compiled iterator and record --------------------------------------------------

def dense_mm(npages=64):
    mm = pgwalk.MM()
    a = anon(mm, BASE, 2 * MiB)
    mm.madvise(a, 2 * MiB, C.MADV_NOHUGEPAGE)
    for i in range(npages):
        mm.touch(a + i * PAGE_SIZE, write=i % 3 != 0)
    return mm, a, mm.find_vma(a)


def test_a_record_the_caller_keeps_is_never_refilled():
    """The iterator refills a record only no one else holds: records kept in
    any pattern (every third one, the previous one) keep their values, equal
    to the reference walker's records at the same positions."""
    mm, a, vma = dense_mm()
    ref = walk(R.pt_range_walk, vma, a, a + 2 * MiB)
    kept, prev_pairs = [], []
    with mm.mmap_read_lock():
        prev = None
        for i, r in enumerate(pgwalk.pt_range_walk(vma, a, a + 2 * MiB)):
            if i % 3 == 0:
                kept.append((i, r))
            if prev is not None:
                prev_pairs.append((i - 1, prev, prev.astuple()))
            prev = r
    assert len(ref) > 64
    assert all(r == ref[i] for i, r in kept)
    assert all(p == ref[i] and p.astuple() == t for i, p, t in prev_pairs)
    assert len({id(r) for _i, r in kept}) == len(kept)


def test_record_type_fields_equality_and_pickle():
    """PtRangeRecord: fields in RECORD_FIELDS order, == by value (not by
    identity, not with other types), unhashable, picklable, a readable repr."""
    import pickle
    from pgwalk.walker.ptrange import RECORD_FIELDS, PtRangeRecord
    mm, a, vma = dense_mm(4)
    r = walk(pgwalk.pt_range_walk, vma, a, a + 2 * MiB, PT_TYPE_FOLIO)[1]
    assert r.astuple() == tuple(getattr(r, n) for n in RECORD_FIELDS)
    twin = PtRangeRecord(*r.astuple())
    assert twin == r and not (twin != r) and twin is not r
    assert r != r.astuple() and r != None                   # noqa: E711
    with pytest.raises(TypeError):
        hash(r)
    assert pickle.loads(pickle.dumps(r)) == r
    assert repr(r).startswith("<PTW_FOLIO pte [") and " W" in repr(r)
    with pytest.raises(AttributeError):
        r.pfn = 5
    assert isinstance(r, pgwalk.PtRangeRecord) and pgwalk.PtRangeRecord is PtRangeRecord


def test_the_lock_check_follows_every_lock_change():
    """The compiled iterator asks the lock again whenever it changed hands
    (LockCounts.changes): holding it, dropping it, taking it back, and a step
    from another thread that does not hold it."""
    import threading
    mm, a, vma = dense_mm(8)
    ref = walk(R.pt_range_walk, vma, a, a + 2 * MiB, PT_TYPE_FOLIO)
    it = pgwalk.pt_range_walk(vma, a, a + 2 * MiB, PT_TYPE_FOLIO)
    with mm.mmap_read_lock():
        assert [next(it), next(it)] == ref[:2]
    with pytest.raises(pgwalk.LockAssertionError):
        next(it)
    with mm.mmap_read_lock():
        assert next(it) == ref[2]
        errors = []

        def other():
            try:
                next(it)
            except pgwalk.LockAssertionError as e:
                errors.append(e)
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1
        assert next(it) == ref[3]
        assert it.last_type == PTW_FOLIO
    it.close()
    assert it.last_type == PTW_FOLIO and list(it) == []


def test_the_reference_iterator_is_the_same_type():
    """Both walkers hand out the one iterator type and the one record type."""
    mm, a, vma = dense_mm(2)
    with mm.mmap_read_lock():
        c, r = pgwalk.pt_range_walk(vma, a, a + MiB), R.pt_range_walk(vma, a, a + MiB)
        assert type(c) is type(r) is pgwalk.walker.PtRangeWalk
        assert c.last_type is None and next(c) == next(r) and c.last_type == r.last_type


def test_record_constructor_names_a_bad_field():
    """PtRangeRecord keeps its ints in C types: a value of another type or out
    of the type's range is an error naming the field, never a wrapped value."""
    from pgwalk.walker.ptrange import RECORD_FIELDS, PtRangeRecord
    good = (PTW_FOLIO, PTW_PTE_LEVEL, BASE, BASE + PAGE_SIZE, 1, PAGE_SIZE, True, False, True,
            True, False, 0x8000000000000067, 0, 5, 5)
    assert PtRangeRecord(*good).astuple() == good
    for name, bad, err in (("curr_addr", -1, ValueError), ("size", 1 << 64, ValueError),
                           ("pfn", 1 << 63, ValueError), ("type", "3", TypeError),
                           ("entry", 1.0, TypeError)):
        args = list(good)
        args[RECORD_FIELDS.index(name)] = bad
        with pytest.raises(err, match=name):
            PtRangeRecord(*args)
