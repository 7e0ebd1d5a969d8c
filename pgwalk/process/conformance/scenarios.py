"""Random scenarios for the live differential: sequences of
mmap/munmap/mprotect/mremap/madvise/mlock/touch/fork steps over a region of
1..2048 pages, in the step format of ``live.py``, one generator per kind
(``KINDS``).  A generator is a function of its seed alone, so a kind and a
seed name a scenario for good."""

import random

from ... import constants as P

RW = P.PROT_READ | P.PROT_WRITE
PRIV = P.MAP_PRIVATE | P.MAP_ANONYMOUS
SHARED = P.MAP_SHARED | P.MAP_ANONYMOUS
ADVICE = [P.MADV_DONTNEED, P.MADV_FREE, P.MADV_REMOVE, P.MADV_WILLNEED, P.MADV_COLD,
          P.MADV_PAGEOUT, P.MADV_HUGEPAGE, P.MADV_NOHUGEPAGE, P.MADV_POPULATE_READ,
          P.MADV_POPULATE_WRITE, P.MADV_WIPEONFORK, P.MADV_KEEPONFORK,
          P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE, P.MADV_DONTNEED_LOCKED,
          P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE, P.MADV_DONTNEED, P.MADV_COLLAPSE]


def _toggle_fork(r, steps, forked, p_exit):
    """A fork step, or (a child being alive, with probability ``p_exit``)
    the child's exit; returns whether a child is alive afterwards."""
    if forked and r.random() < p_exit:
        steps.append(("child_exit",))
        return False
    steps.append(("fork",))
    return True


def scenario(seed, npages=None, nsteps=None, thp=None):
    """A random scenario: (steps, npages)."""
    r = random.Random(seed)
    if npages is None:
        npages = r.choice([1, 2, 3, 8, 16, 33, 64, 100, 512, 1024])
    if thp is None:
        thp = npages >= 512 and r.random() < 0.6
    if nsteps is None:
        nsteps = r.randint(5, 30)
    steps = []

    def rng(maxlen=None):
        off = r.randrange(npages)
        cap = npages - off
        if maxlen:
            cap = min(cap, maxlen)
        n = r.choice([1, 1, 2, 3, r.randint(1, cap)])
        return off, min(n, cap)

    # start with something mapped
    flags = PRIV if r.random() < 0.8 else SHARED
    steps.append(("mmap", 0, npages, RW, flags | P.MAP_FIXED))
    if thp:
        steps.append(("madvise", 0, npages, P.MADV_HUGEPAGE))
    elif flags == PRIV:
        steps.append(("madvise", 0, npages, P.MADV_NOHUGEPAGE))
    forked = False
    for _ in range(nsteps):
        k = r.random()
        if k < 0.35:
            off = r.randrange(npages)
            steps.append(("touch", off, r.random() < 0.6))
        elif k < 0.42:
            off, n = rng()
            prot = r.choice([RW, RW, P.PROT_READ, P.PROT_NONE, P.PROT_WRITE])
            fl = r.choice([PRIV, PRIV, PRIV, SHARED]) | r.choice(
                [P.MAP_FIXED, P.MAP_FIXED, P.MAP_FIXED_NOREPLACE])
            if r.random() < 0.2:
                fl |= P.MAP_POPULATE
            if r.random() < 0.1:
                fl |= P.MAP_NORESERVE
            steps.append(("mmap", off, n, prot, fl))
            if fl & P.MAP_PRIVATE and not thp:
                steps.append(("madvise", off, n, P.MADV_NOHUGEPAGE))
        elif k < 0.47:
            off, n = rng()
            steps.append(("munmap", off, n))
        elif k < 0.55:
            off, n = rng()
            steps.append(("mprotect", off, n, r.choice([RW, P.PROT_READ, P.PROT_NONE, RW])))
        elif k < 0.80:
            off, n = rng()
            adv = r.choice(ADVICE)
            if adv == P.MADV_HUGEPAGE and not thp:
                adv = P.MADV_NOHUGEPAGE
            steps.append(("madvise", off, n, adv))
        elif k < 0.85:
            off, n = rng()
            steps.append((r.choice(["mlock", "mlock", "munlock"]), off, n))
        elif k < 0.93:
            off, n = rng()
            m = r.random()
            if m < 0.4:
                new_n = r.randint(1, min(npages - off, n + 4))
                steps.append(("mremap", off, n, new_n, 0, 0))
            else:
                new_n = n if m < 0.7 else r.randint(1, max(1, n))
                dst = r.randrange(npages - new_n + 1)
                fl = P.MREMAP_MAYMOVE | P.MREMAP_FIXED
                if m < 0.55:
                    fl |= P.MREMAP_DONTUNMAP
                    new_n = n
                    dst = r.randrange(max(1, npages - n + 1))
                if dst < off + n and off < dst + new_n:
                    continue
                if dst + new_n > npages:
                    continue
                steps.append(("mremap", off, n, new_n, fl, dst))
        else:
            forked = _toggle_fork(r, steps, forked, 0.5)
        if forked and r.random() < 0.15:
            off, n = rng()
            steps.append(("child", r.choice([
                ("touch", off, r.random() < 0.7), ("touch", off, True),
                ("madvise", off, n, r.choice([P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE,
                                              P.MADV_DONTNEED, P.MADV_FREE, P.MADV_PAGEOUT])),
                ("munmap", off, n), ("mprotect", off, n, r.choice([P.PROT_READ, RW]))])))
    return steps, npages


def thp_scenario(seed):
    """A scenario around 2 MiB boundaries: a MADV_HUGEPAGE region of 2-4
    huge pages, ranges that start/end on or near PMD boundaries, aligned
    remaps, collapses, forks and frees of parts of huge pages."""
    r = random.Random(seed)
    npages = r.choice([1024, 1536, 2048])
    steps = [("mmap", 0, npages, RW, PRIV | P.MAP_FIXED), ("madvise", 0, npages, P.MADV_HUGEPAGE)]

    def point():
        return max(0, min(npages - 1, r.randrange(npages // 512) * 512 + r.choice([0, 0, 1, 3, 255, 511, 510])))

    def rng():
        off = point()
        n = r.choice([1, 2, 511, 512, 513, 1024, r.randint(1, 600)])
        return off, max(1, min(n, npages - off))

    forked = False
    for _ in range(r.randint(6, 24)):
        k = r.random()
        if k < 0.35:
            steps.append(("touch", point() if r.random() < 0.5 else r.randrange(npages), r.random() < 0.6))
        elif k < 0.7:
            off, n = rng()
            steps.append(("madvise", off, n, r.choice(
                [P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE, P.MADV_DONTNEED, P.MADV_FREE,
                 P.MADV_PAGEOUT, P.MADV_COLD, P.MADV_COLLAPSE, P.MADV_POPULATE_READ,
                 P.MADV_POPULATE_WRITE, P.MADV_NOHUGEPAGE, P.MADV_HUGEPAGE, P.MADV_WIPEONFORK])))
        elif k < 0.78:
            off, n = rng()
            steps.append(("mprotect", off, n, r.choice([P.PROT_READ, RW, P.PROT_NONE])))
        elif k < 0.84:
            off, n = rng()
            steps.append((r.choice(["mlock", "munlock", "munmap"]), off, n))
        elif k < 0.92:
            n = r.choice([512, 512, 256, 1])
            src = r.randrange(npages // 512) * 512
            dst = r.randrange(npages // 512) * 512 + r.choice([0, 0, 7])
            if src + n > npages or dst + n > npages or (dst < src + n and src < dst + n):
                continue
            steps.append(("mremap", src, n, n, P.MREMAP_MAYMOVE | P.MREMAP_FIXED
                          | (P.MREMAP_DONTUNMAP if r.random() < 0.3 else 0), dst))
        else:
            forked = _toggle_fork(r, steps, forked, 0.5)
    return steps, npages


def shared_scenario(seed):
    """Shared anonymous (shmem) mappings next to private ones: fault-around,
    MADV_REMOVE and PAGEOUT on the object, DONTNEED keeping the object's
    pages, guards, mremap growth past the object's end (SIGBUS), forks with
    the child touching the same object."""
    r = random.Random(seed)
    npages = r.choice([8, 16, 40, 64, 100])
    steps = [("mmap", 0, npages, RW, SHARED | P.MAP_FIXED)]
    if r.random() < 0.4:
        cut = r.randrange(1, npages)
        steps.append(("mmap", cut, npages - cut, RW, PRIV | P.MAP_FIXED))
    forked = False
    for _ in range(r.randint(6, 28)):
        off = r.randrange(npages)
        n = max(1, min(npages - off, r.choice([1, 2, 3, 8, 20])))
        k = r.random()
        if k < 0.4:
            st = ("touch", off, r.random() < 0.5)
        elif k < 0.75:
            st = ("madvise", off, n, r.choice([
                P.MADV_REMOVE, P.MADV_DONTNEED, P.MADV_PAGEOUT, P.MADV_COLD, P.MADV_WILLNEED,
                P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE, P.MADV_POPULATE_READ,
                P.MADV_POPULATE_WRITE, P.MADV_FREE, P.MADV_COLLAPSE]))
        elif k < 0.82:
            st = ("mprotect", off, n, r.choice([P.PROT_READ, RW, P.PROT_NONE]))
        elif k < 0.88:
            st = ("mremap", off, n, min(npages - off, n + r.randint(0, 4)), 0, 0)
        elif k < 0.92:
            st = (r.choice(["mlock", "munlock", "munmap"]), off, n)
        else:
            forked = _toggle_fork(r, steps, forked, 0.4)
            continue
        if forked and r.random() < 0.35:
            st = ("child", st)
        steps.append(st)
    return steps, npages


def fork_scenario(seed):
    """Fork-heavy sequences: copy-on-write from either side (of 4K pages,
    zero pages and THPs), guards installed and removed on either side,
    WIPEONFORK ranges, mlock (not inherited), repeated forks."""
    r = random.Random(seed)
    npages = r.choice([4, 16, 64, 600, 1024])
    thp = npages >= 512 and r.random() < 0.7
    steps = [("mmap", 0, npages, RW, PRIV | P.MAP_FIXED),
             ("madvise", 0, npages, P.MADV_HUGEPAGE if thp else P.MADV_NOHUGEPAGE)]
    forked = False
    for _ in range(r.randint(8, 30)):
        off = r.randrange(npages)
        n = max(1, min(npages - off, r.choice([1, 2, 5, 64, 512])))
        k = r.random()
        if k < 0.45:
            st = ("touch", off, r.random() < 0.6)
        elif k < 0.75:
            st = ("madvise", off, n, r.choice([
                P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE, P.MADV_WIPEONFORK, P.MADV_KEEPONFORK,
                P.MADV_DONTNEED, P.MADV_FREE, P.MADV_POPULATE_WRITE, P.MADV_POPULATE_READ,
                P.MADV_PAGEOUT, P.MADV_COLLAPSE]))
        elif k < 0.82:
            st = ("mprotect", off, n, r.choice([P.PROT_READ, RW]))
        elif k < 0.86:
            st = (r.choice(["mlock", "munlock", "munmap"]), off, n)
        else:
            forked = _toggle_fork(r, steps, forked, 0.3)
            continue
        if forked and r.random() < 0.45:
            st = ("child", st)
        steps.append(st)
    return steps, npages


ALLADV = [P.MADV_DONTNEED, P.MADV_FREE, P.MADV_REMOVE, P.MADV_WILLNEED, P.MADV_COLD,
          P.MADV_PAGEOUT, P.MADV_HUGEPAGE, P.MADV_NOHUGEPAGE, P.MADV_COLLAPSE,
          P.MADV_POPULATE_READ, P.MADV_POPULATE_WRITE, P.MADV_WIPEONFORK, P.MADV_KEEPONFORK,
          P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE, P.MADV_DONTNEED_LOCKED]


def wide_scenario(seed):
    """Wider random sequences than ``scenario``: any size 1..1024, no
    NOHUGEPAGE padding (so MADV_COLLAPSE and merging see plain VMAs),
    MADV_HUGEPAGE over a random part, PMD-boundary points, in-place and
    moving remaps, child steps."""
    r = random.Random(seed)
    npages = r.choice([r.randint(1, 1024), r.randint(1, 64), 512, 1024, 1023, 513])
    steps = []
    fl = PRIV if r.random() < 0.75 else SHARED
    steps.append(("mmap", 0, npages, r.choice([RW, RW, RW, P.PROT_READ]), fl | P.MAP_FIXED))
    if r.random() < 0.5:
        a = r.randrange(npages); b = r.randint(a + 1, npages)
        if r.random() < 0.5: a, b = 0, npages
        steps.append(("madvise", a, b - a, P.MADV_HUGEPAGE))
    def point():
        if npages >= 512 and r.random() < 0.4:
            return min(npages - 1, r.randrange(max(1, npages // 512 + 1)) * 512 + r.choice([0, 1, 511, 510, 256]))
        return r.randrange(npages)
    def rng():
        off = point()
        cap = npages - off
        n = r.choice([1, 2, 3, 512, r.randint(1, cap), r.randint(1, cap)])
        return off, max(1, min(n, cap))
    forked = False
    for _ in range(r.randint(3, 40)):
        k = r.random()
        if k < 0.30:
            st = ("touch", point(), r.random() < 0.6)
        elif k < 0.36:
            off, n = rng()
            f = r.choice([PRIV, PRIV, SHARED]) | r.choice([P.MAP_FIXED, P.MAP_FIXED_NOREPLACE])
            if r.random() < 0.2: f |= P.MAP_POPULATE
            if r.random() < 0.1: f |= P.MAP_NORESERVE
            st = ("mmap", off, n, r.choice([RW, RW, P.PROT_READ, P.PROT_NONE]), f)
        elif k < 0.40:
            st = ("munmap",) + rng()
        elif k < 0.48:
            st = ("mprotect",) + rng() + (r.choice([RW, P.PROT_READ, P.PROT_NONE, P.PROT_WRITE, RW | P.PROT_EXEC]),)
        elif k < 0.78:
            st = ("madvise",) + rng() + (r.choice(ALLADV),)
        elif k < 0.83:
            st = (r.choice(["mlock", "munlock"]),) + rng()
        elif k < 0.92:
            off, n = rng()
            m = r.random()
            if m < 0.4:
                st = ("mremap", off, n, r.randint(1, min(npages - off, n + 8)), r.choice([0, 0, P.MREMAP_MAYMOVE]), 0)
                if st[4] == P.MREMAP_MAYMOVE and st[3] > n:
                    st = ("mremap", off, n, st[3], 0, 0)
            else:
                new_n = n if m < 0.7 else r.randint(1, n)
                f = P.MREMAP_MAYMOVE | P.MREMAP_FIXED
                if m < 0.55:
                    f |= P.MREMAP_DONTUNMAP; new_n = n
                if new_n > npages: continue
                dst = r.randrange(npages - new_n + 1)
                if r.random() < 0.3 and npages >= 1024:
                    dst = r.choice([0, 512])
                    if dst + new_n > npages: continue
                if dst < off + n and off < dst + new_n: continue
                st = ("mremap", off, n, new_n, f, dst)
        else:
            if forked and r.random() < 0.5:
                steps.append(("child_exit",)); forked = False
            else:
                steps.append(("fork",)); forked = True
            continue
        if forked and r.random() < 0.3 and st[0] != "mremap":
            st = ("child", st)
        steps.append(st)
    return steps, npages


def lazy_scenario(seed):
    """THPs and their splits under MADV_FREE / COLD / PAGEOUT: writes
    between them, single-page mprotect / DONTNEED / munmap that split the
    PMD or the folio, forks, child writes, partial and whole ranges."""
    r = random.Random(seed)
    npages = r.choice([512, 1024, 1536])
    steps = [("mmap", 0, npages, RW, PRIV | P.MAP_FIXED), ("madvise", 0, npages, P.MADV_HUGEPAGE)]
    for h in range(0, npages, 512):
        if r.random() < 0.8:
            steps.append(("touch", h + r.choice([0, 7, 300]), r.random() < 0.85))

    def rng():
        h = r.randrange(npages // 512) * 512
        kind = r.random()
        if kind < 0.5:
            return h, 512
        off = h + r.randrange(512)
        return off, max(1, min(npages - off, r.choice([1, 2, 50, 300, 600])))

    forked = False
    for _ in range(r.randint(4, 22)):
        k = r.random()
        if k < 0.3:
            st = ("touch", r.randrange(npages), r.random() < 0.6)
        elif k < 0.65:
            st = ("madvise",) + rng() + (r.choice([P.MADV_FREE, P.MADV_FREE, P.MADV_PAGEOUT,
                                                   P.MADV_PAGEOUT, P.MADV_COLD, P.MADV_DONTNEED]),)
        elif k < 0.78:
            off = r.randrange(npages)
            st = ("mprotect", off, 1, r.choice([P.PROT_READ, RW]))
        elif k < 0.82:
            st = (r.choice(["munmap", "mlock", "munlock"]), r.randrange(npages), 1)
        elif k < 0.86:
            st = ("madvise",) + rng() + (r.choice([P.MADV_COLLAPSE, P.MADV_GUARD_INSTALL,
                                                   P.MADV_GUARD_REMOVE, P.MADV_POPULATE_WRITE]),)
        else:
            forked = _toggle_fork(r, steps, forked, 0.4)
            continue
        if forked and r.random() < 0.3:
            st = ("child", st)
        steps.append(st)
    return steps, npages


def remap_scenario(seed):
    """mremap-heavy sequences over THP and 4K memory: moves of whole and
    partial huge pages to aligned and unaligned places, DONTUNMAP, growth
    and shrinking in place, moves over populated and guarded ranges,
    touches and forks between them."""
    r = random.Random(seed)
    npages = r.choice([1024, 1536, 2048])
    thp = r.random() < 0.7
    steps = [("mmap", 0, npages // 2, RW, PRIV | P.MAP_FIXED),
             ("madvise", 0, npages // 2, P.MADV_HUGEPAGE if thp else P.MADV_NOHUGEPAGE)]
    for _ in range(r.randint(1, 4)):
        steps.append(("touch", r.randrange(npages // 2), r.random() < 0.7))
    forked = False
    for _ in range(r.randint(4, 20)):
        k = r.random()
        if k < 0.45:
            src = r.choice([r.randrange(npages), r.randrange(npages // 512) * 512])
            n = r.choice([1, 3, 100, 256, 512, 513, r.randint(1, 700)])
            n = max(1, min(n, npages - src))
            m = r.random()
            if m < 0.25:
                new_n = max(1, min(npages - src, n + r.choice([-50, -1, 1, 7, 512])))
                # (no MREMAP_MAYMOVE here: a move to an address of the
                # kernel's choosing lands outside the region, where the
                # live process has other mappings than the model)
                st = ("mremap", src, n, new_n, 0, 0)
            else:
                dst = r.choice([r.randrange(npages), r.randrange(npages // 512) * 512,
                                r.randrange(npages // 512) * 512 + (src % 512)])
                new_n = n if m < 0.8 else max(1, n - r.randint(0, n - 1))
                fl = P.MREMAP_MAYMOVE | P.MREMAP_FIXED
                if m < 0.45:
                    fl |= P.MREMAP_DONTUNMAP
                    new_n = n
                if dst + new_n > npages or (dst < src + n and src < dst + new_n):
                    continue
                st = ("mremap", src, n, new_n, fl, dst)
        elif k < 0.7:
            st = ("touch", r.randrange(npages), r.random() < 0.6)
        elif k < 0.8:
            off = r.randrange(npages)
            st = ("madvise", off, max(1, min(npages - off, r.choice([1, 2, 512]))), r.choice(
                [P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE, P.MADV_DONTNEED, P.MADV_HUGEPAGE,
                 P.MADV_POPULATE_WRITE, P.MADV_FREE, P.MADV_COLLAPSE]))
        elif k < 0.88:
            off = r.randrange(npages)
            st = (r.choice(["mmap", "munmap", "mprotect"]), off, max(1, min(npages - off, r.choice([1, 5, 512]))))
            if st[0] == "mmap":
                st = st + (RW, PRIV | P.MAP_FIXED)
            elif st[0] == "mprotect":
                st = st + (r.choice([P.PROT_READ, RW]),)
        else:
            forked = _toggle_fork(r, steps, forked, 0.4)
            continue
        if forked and st[0] != "mremap" and r.random() < 0.25:
            st = ("child", st)
        steps.append(st)
    return steps, npages

def shmem_huge_scenario(seed):
    """Shared anonymous memory with huge folios made by MADV_COLLAPSE:
    faults that map a whole folio (by PMD, or by PTEs where a table is
    there), hole punches that split folios the non-uniform way, COLD and
    PAGEOUT over part or all of one, guards, mprotect, forks with the child
    touching the same object, moves."""
    r = random.Random(seed)
    npages = r.choice([512, 1024, 1536])
    steps = [("mmap", 0, npages, RW, SHARED | P.MAP_FIXED)]
    if r.random() < 0.3:
        steps.append(("madvise", 0, npages, P.MADV_HUGEPAGE))
    for h in range(0, npages, 512):
        if r.random() < 0.85:
            steps.append(("touch", h + r.randrange(512), r.random() < 0.7))
            steps.append(("madvise", h, 512, P.MADV_COLLAPSE))

    def rng():
        off = r.randrange(npages)
        n = r.choice([1, 2, 7, 10, 64, 300, 512, r.randint(1, npages)])
        return off, max(1, min(n, npages - off))

    forked = False
    for _ in range(r.randint(4, 24)):
        k = r.random()
        if k < 0.35:
            st = ("touch", r.randrange(npages), r.random() < 0.5)
        elif k < 0.72:
            st = ("madvise",) + rng() + (r.choice(
                [P.MADV_REMOVE, P.MADV_REMOVE, P.MADV_PAGEOUT, P.MADV_COLD, P.MADV_DONTNEED,
                 P.MADV_GUARD_INSTALL, P.MADV_GUARD_REMOVE, P.MADV_POPULATE_READ,
                 P.MADV_POPULATE_WRITE, P.MADV_COLLAPSE, P.MADV_NOHUGEPAGE]),)
        elif k < 0.8:
            st = ("mprotect",) + rng() + (r.choice([P.PROT_READ, RW]),)
        elif k < 0.85:
            st = (r.choice(["mlock", "munlock", "munmap"]),) + rng()
        elif k < 0.9:
            off, n = rng()
            dst = r.randrange(npages - n + 1)
            if dst < off + n and off < dst + n:
                continue
            st = ("mremap", off, n, n, P.MREMAP_MAYMOVE | P.MREMAP_FIXED, dst)
        else:
            forked = _toggle_fork(r, steps, forked, 0.4)
            continue
        if forked and st[0] != "mremap" and r.random() < 0.35:
            st = ("child", st)
        steps.append(st)
    return steps, npages


# The kinds, in the order they run: name -> generator(seed) -> (steps, npages).
KINDS = {
    "random": scenario,
    "thp": thp_scenario,
    "shared": shared_scenario,
    "fork": fork_scenario,
    "wide": wide_scenario,
    "lazy": lazy_scenario,
    "remap": remap_scenario,
    "shmem-huge": shmem_huge_scenario,
}
