"""Faults and populating (mm/memory.c handle_mm_fault, mm/gup.c
populate_vma_page_range): touch() on every kind of VMA, THP faults, and
MAP_POPULATE / MADV_POPULATE_(READ|WRITE) / mlock prefaulting.  Scenario
tests run on ``pgwalk.MM`` and, where this kernel can, live
(pgwalk/process/conformance/)."""

import errno

import pytest

import pgwalk as P
from pgwalk import PAGE_SIZE as PS

from helpers.family import EXCL, FILE, PA, PRESENT, PRIV, RW, SA, SHARED, run


def test_touch_faults_and_errors():
    """Read fault on private anonymous memory maps the zero page (present,
    not exclusive); a write allocates an exclusive page; a write to a
    read-only VMA, any access to PROT_NONE or an unmapped address is
    SIGSEGV; on shared anonymous memory a read allocates a shmem page
    (present, file, exclusive) and an access past the object's end after
    mremap growth is SIGBUS."""
    mm = P.MM()
    a = mm.mmap(None, 4 * PS, P.PROT_READ, PRIV)
    mm.touch(a)
    assert mm.pagemap(a, a + PS)[0] == PRESENT | P.ZERO_PFN
    with pytest.raises(P.SegmentationFault) as e:
        mm.touch(a + PS, write=True)
    assert e.value.addr == a + PS
    mm.mprotect(a, 4 * PS, P.PROT_NONE)
    with pytest.raises(P.SegmentationFault):
        mm.touch(a)
    with pytest.raises(P.SegmentationFault):
        mm.touch(a + 64 * PS)
    s = mm.mmap(None, 2 * PS, RW, SHARED)
    mm.touch(s)
    w = int(mm.pagemap(s, s + PS)[0])
    assert w & (PRESENT | FILE | EXCL) == PRESENT | FILE | EXCL
    s2 = mm.mremap(s, 2 * PS, 4 * PS, P.MREMAP_MAYMOVE)
    with pytest.raises(P.BusError):
        mm.touch(s2 + 3 * PS)
    mm.validate()

def test_thp_fault_huge_zero_page_and_cow_after_fork():
    """A MADV_HUGEPAGE range faults in a PMD leaf: the huge zero page on a
    read (present + file in pagemap), a THP on a write; after fork the THP
    is shared (not exclusive on either side); a write in the child splits
    its PMD and copies one 4K page."""
    mm = P.MM()
    a = mm.mmap(None, 4 << 20, RW, PRIV)
    mm.madvise(a, 4 << 20, P.MADV_HUGEPAGE)
    mm.touch(a)
    assert P.pmd_pfn(mm.entry(a, P.PMD)) == P.HUGE_ZERO_PFN
    assert int(mm.pagemap(a, a + PS)[0]) & (PRESENT | FILE) == PRESENT | FILE
    mm.touch(a + (2 << 20), write=True)
    assert P.pmd_trans_huge(mm.entry(a + (2 << 20), P.PMD))
    child = mm.fork()
    assert not int(mm.pagemap(a + (2 << 20), a + (2 << 20) + PS)[0]) & EXCL
    child.touch(a + (2 << 20) + 5 * PS, write=True)
    assert not P.pmd_leaf(child.entry(a + (2 << 20), P.PMD))
    pm = child.pagemap(a + (2 << 20), a + (4 << 20))
    assert int(pm[5]) & EXCL and not int(pm[4]) & EXCL
    assert P.pmd_trans_huge(mm.entry(a + (2 << 20), P.PMD))
    child.exit()
    mm.validate()


def test_map_populate_prefaults_as_each_vma_faults():
    """MAP_POPULATE prefaults the mapping the way the first access would:
    a private writable one with write faults (exclusive pages), a private
    read-only one with read faults (the zero page), a shared one with
    shmem pages (present, file, exclusive) (populate_vma_page_range)."""
    steps = [("mmap", 0, 4, RW, PA | P.MAP_POPULATE), ("mmap", 4, 4, P.PROT_READ, PA | P.MAP_POPULATE),
             ("mmap", 8, 4, RW, SA | P.MAP_POPULATE)]
    mm, obs = run(steps, 12)
    assert obs[2][1] == [PRESENT | EXCL] * 4 + [PRESENT] * 4 + [PRESENT | FILE | EXCL] * 4


def test_populate_read_maps_the_zero_page_and_populate_write_private_pages():
    """MADV_POPULATE_READ on private anonymous memory maps the zero page;
    MADV_POPULATE_WRITE maps exclusive pages (madvise_populate, mm/madvise.c)."""
    steps = [("mmap", 0, 4, RW, PA), ("madvise", 0, 2, P.MADV_POPULATE_READ),
             ("madvise", 2, 2, P.MADV_POPULATE_WRITE)]
    mm, obs = run(steps, 4)
    assert obs[1][0] == obs[2][0] == 0
    assert obs[2][1] == [PRESENT, PRESENT, PRESENT | EXCL, PRESENT | EXCL]


def test_populate_without_the_access_right_is_einval():
    """MADV_POPULATE_WRITE on a read-only VMA, and MADV_POPULATE_READ on a
    PROT_NONE one, fail with EINVAL and map nothing (faultin_page_range's
    permission check); POPULATE_READ of the read-only one works."""
    steps = [("mmap", 0, 4, P.PROT_READ, PA), ("madvise", 0, 4, P.MADV_POPULATE_WRITE),
             ("madvise", 0, 4, P.MADV_POPULATE_READ), ("mmap", 4, 4, P.PROT_NONE, PA),
             ("madvise", 4, 4, P.MADV_POPULATE_READ)]
    mm, obs = run(steps, 8)
    assert obs[1][0] == errno.EINVAL and obs[1][1][:4] == [0] * 4
    assert obs[2][0] == 0 and obs[2][1][:4] == [PRESENT] * 4
    assert obs[4][0] == errno.EINVAL and obs[4][1][4:] == [0] * 4
