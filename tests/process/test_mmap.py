"""mmap and munmap (mm/mmap.c, mm/vma.c): argument errnos, address
choice, MAP_FIXED replacing what was there, MAP_FIXED_NOREPLACE, MAP_POPULATE
and munmap splitting VMAs.  Scenario tests run on ``pgwalk.MM`` and, where
this kernel can, live (pgwalk/process/conformance/): every observation must
be the same."""

import errno

import pgwalk as P
from pgwalk import PAGE_SIZE as PS

from helpers import live_kernel as L
from helpers.family import EXCL, PA, PRESENT, PRIV, RW, SHARED, err, run


def test_mmap_argument_errnos():
    """mmap: length 0 -> EINVAL; no MAP_PRIVATE/MAP_SHARED -> EINVAL; a file
    mapping without a file -> EBADF; MAP_FIXED at an unaligned address ->
    EINVAL; MAP_FIXED_NOREPLACE over a mapping -> EEXIST; MAP_SHARED_VALIDATE
    with an unknown flag -> EOPNOTSUPP."""
    mm = P.MM()
    assert err(mm.mmap, None, 0, RW, PRIV) == errno.EINVAL
    assert err(mm.mmap, None, PS, RW, P.MAP_ANONYMOUS) == errno.EINVAL
    assert err(mm.mmap, None, PS, RW, P.MAP_PRIVATE) == errno.EBADF
    assert err(mm.mmap, 0x10001000 + 1, PS, RW, PRIV | P.MAP_FIXED) == errno.EINVAL
    a = mm.mmap(None, 4 * PS, RW, PRIV)
    assert err(mm.mmap, a + PS, PS, RW, PRIV | P.MAP_FIXED_NOREPLACE) == errno.EEXIST
    assert err(mm.mmap, None, PS, RW, P.MAP_SHARED_VALIDATE | P.MAP_ANONYMOUS | (1 << 22)) \
        == errno.EOPNOTSUPP

def test_mmap_addresses_top_down_hint_and_thp_alignment():
    """Without MAP_FIXED the address is chosen top-down below the mmap base;
    a free hint is honoured; a private mapping whose length is a multiple
    of 2 MiB is 2 MiB-aligned (thp_get_unmapped_area); adjacent compatible
    anonymous mappings merge into one VMA."""
    mm = P.MM()
    a = mm.mmap(None, 4 * PS, RW, PRIV)
    b = mm.mmap(None, 4 * PS, RW, PRIV)
    assert b + 4 * PS == a and len(mm.vmas) == 1
    h = mm.mmap(0x200000000, PS, RW, PRIV)
    assert h == 0x200000000
    t = mm.mmap(None, 4 << 20, RW, PRIV)
    assert t % (2 << 20) == 0
    s = mm.mmap(None, 4 * PS, RW, SHARED)
    assert len([v for v in mm.vmas if v.vm_start in (s,)]) == 1


def test_munmap_argument_errnos():
    """munmap of an unaligned start or of length 0 fails with EINVAL
    (do_vmi_munmap's checks, mm/vma.c); checked live as well."""
    model, live = L.call_errnos([("munmap", 1, PS), ("munmap", 0, 0), ("munmap", 0, PS)])
    assert model == [errno.EINVAL, errno.EINVAL, 0]
    assert live in (None, model)


def test_map_fixed_replaces_the_pages_and_protection_under_it():
    """MAP_FIXED over part of a mapping unmaps what was there (the written
    page is gone) and splits the old VMA around the new one, which has the
    new protection (mm/mmap.c do_mmap -> mmap_region)."""
    steps = [("mmap", 0, 4, RW, PA), ("touch", 0, True), ("mmap", 0, 2, P.PROT_READ, PA)]
    mm, obs = run(steps, 4)
    assert obs[1][1][0] == PRESENT | EXCL
    assert obs[2][0] == ("at", 0)
    assert obs[2][1] == [0, 0, 0, 0]
    assert obs[2][2] == [(0, 2, P.PROT_READ, "p"), (2, 4, RW, "p")]


def test_map_fixed_noreplace_refuses_an_overlap_and_merges_beside():
    """MAP_FIXED_NOREPLACE over any mapped page fails with EEXIST and maps
    nothing; right after a compatible mapping it succeeds and the two merge
    into one VMA (mm/mmap.c do_mmap, vma_merge_new_range)."""
    noreplace = P.MAP_PRIVATE | P.MAP_ANONYMOUS | P.MAP_FIXED_NOREPLACE
    steps = [("mmap", 0, 4, RW, PA), ("mmap", 2, 4, RW, noreplace), ("mmap", 4, 4, RW, noreplace)]
    mm, obs = run(steps, 8)
    assert obs[1][0] == ("err", errno.EEXIST) and obs[1][2] == [(0, 4, RW, "p")]
    assert obs[2][0] == ("at", 4) and obs[2][2] == [(0, 8, RW, "p")]


def test_munmap_splits_a_vma_and_unmapping_a_hole_succeeds():
    """munmap in the middle of a VMA leaves two VMAs and drops the pages in
    between (a later access is SIGSEGV); munmap of a range with nothing
    mapped returns 0 (mm/vma.c do_vmi_munmap: no VMA is not an error)."""
    steps = [("mmap", 0, 8, RW, PA), ("touch", 3, True), ("munmap", 3, 2), ("munmap", 3, 2),
             ("touch", 3, False)]
    mm, obs = run(steps, 8)
    assert obs[2][0] == 0 and obs[2][2] == [(0, 3, RW, "p"), (5, 8, RW, "p")]
    assert obs[2][1][3] == 0
    assert obs[3][0] == 0
    assert obs[4][0] == "SEGV"
