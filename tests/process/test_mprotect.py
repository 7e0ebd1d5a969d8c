"""mprotect (mm/mprotect.c) and mlock / munlock (mm/mlock.c): VMA splits
and merges, partial success before a hole, write faults after a downgrade,
and mlock's populate.  Scenario tests run on ``pgwalk.MM`` and, where this
kernel can, live (pgwalk/process/conformance/)."""

import errno

import pgwalk as P
from pgwalk import PAGE_SIZE as PS

from helpers import live_kernel as L
from helpers.family import EXCL, PA, PRESENT, RW, run


def test_mprotect_and_mlock_argument_errnos():
    """mprotect of an unaligned start or with an unknown PROT bit fails with
    EINVAL (do_mprotect_pkey, mm/mprotect.c); mlock rounds an unaligned
    start down to its page instead (do_mlock, mm/mlock.c) and succeeds.
    Checked live as well."""
    model, live = L.call_errnos([("mprotect", 1, PS, P.PROT_READ), ("mprotect", 0, PS, 0x40),
                                 ("mprotect", 0, PS, P.PROT_READ), ("mlock", 1, PS),
                                 ("munlock", 1, PS)])
    assert model == [errno.EINVAL, errno.EINVAL, 0, 0, 0]
    assert live in (None, model)


def test_mprotect_over_a_hole_fails_enomem_after_changing_what_precedes_it():
    """mprotect over a range with a hole changes the VMAs before the hole,
    then fails with ENOMEM; the VMA after the hole keeps its protection
    (do_mprotect_pkey's loop, mm/mprotect.c)."""
    steps = [("mmap", 0, 4, RW, PA), ("mmap", 6, 2, RW, PA), ("mprotect", 0, 8, P.PROT_READ)]
    mm, obs = run(steps, 8)
    assert obs[2][0] == errno.ENOMEM
    assert obs[2][2] == [(0, 4, P.PROT_READ, "p"), (6, 8, RW, "p")]


def test_mprotect_splits_a_vma_and_restoring_merges_it_back():
    """mprotect of the middle of a VMA splits it in three; giving the middle
    back its old protection merges the three into one (mprotect_fixup,
    vma_modify_flags)."""
    steps = [("mmap", 0, 8, RW, PA), ("mprotect", 2, 3, P.PROT_READ), ("mprotect", 2, 3, RW)]
    mm, obs = run(steps, 8)
    assert obs[1][2] == [(0, 2, RW, "p"), (2, 5, P.PROT_READ, "p"), (5, 8, RW, "p")]
    assert obs[2][2] == [(0, 8, RW, "p")]


def test_write_after_mprotect_read_is_segv_and_the_page_stays():
    """After mprotect(PROT_READ) a written private page stays mapped and
    exclusive; a write to it is SIGSEGV, a read is fine; once writable
    again a write reuses the same page (change_protection keeps the PTEs)."""
    steps = [("mmap", 0, 2, RW, PA), ("touch", 0, True), ("mprotect", 0, 2, P.PROT_READ),
             ("touch", 0, True), ("touch", 0, False), ("mprotect", 0, 2, RW), ("touch", 0, True)]
    mm, obs = run(steps, 2)
    assert obs[2][1][0] == PRESENT | EXCL
    assert obs[3][0] == "SEGV" and obs[4][0] == "ok" and obs[6][0] == "ok"
    assert obs[6][1] == [PRESENT | EXCL, 0]


def test_mlock_populates_and_splits_and_munlock_merges():
    """mlock of part of a VMA splits it and populates the locked part (write
    faults on a private writable VMA: exclusive pages); munlock merges the
    VMA back and leaves the pages mapped (mm/mlock.c apply_vma_lock_flags,
    __mm_populate)."""
    steps = [("mmap", 0, 4, RW, PA), ("mlock", 1, 2), ("munlock", 1, 2)]
    mm, obs = run(steps, 4)
    assert obs[1][0] == 0
    assert obs[1][1] == [0, PRESENT | EXCL, PRESENT | EXCL, 0]
    assert len(obs[1][2]) == 3
    assert obs[2][2] == [(0, 4, RW, "p")] and obs[2][1] == obs[1][1]


def test_mlock_of_a_read_only_vma_maps_the_zero_page():
    """mlock populates a read-only private VMA with read faults: the zero
    page, present and not exclusive (populate_vma_page_range without
    FOLL_WRITE)."""
    steps = [("mmap", 0, 4, P.PROT_READ, PA), ("mlock", 0, 4)]
    mm, obs = run(steps, 4)
    assert obs[1][0] == 0 and obs[1][1] == [PRESENT] * 4


def test_mlock_over_a_hole_or_prot_none_fails_enomem():
    """mlock over a range with a hole fails with ENOMEM and populates
    nothing (apply_vma_lock_flags); so does mlock of a PROT_NONE VMA (the
    populate cannot fault it in)."""
    mm, obs = run([("mmap", 0, 2, RW, PA), ("mmap", 3, 1, RW, PA), ("mlock", 0, 4)], 4)
    assert obs[2][0] == errno.ENOMEM and obs[2][1] == [0, 0, 0, 0]
    mm, obs = run([("mmap", 0, 4, P.PROT_NONE, PA), ("mlock", 0, 4)], 4)
    assert obs[1][0] == errno.ENOMEM and obs[1][1] == [0, 0, 0, 0]
