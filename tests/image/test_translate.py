"""``mm.translate`` (batched) and ``mm.translate1`` against a plain walker.

The batched translation remembers, within one call, what the tables above
the PTE level say for each 2 MiB region it met (a direct-mapped cache keyed
on the region), and reads PTE slots in groups after prefetching them.
Neither may change an answer: hypothesis draws small images (raw, and ELF
cores whose segments leave holes) whose entries are links inside and
outside the image, links with bad flags, 1G/2M/4K leaves with and without
P, and addresses over a few slots at each level, with regions that share
a cache line, repeats and non-canonical upper bits; each address's answer
must be the one ``reference_translate`` below gives, written from the
x86-64 rules and the walk's rules for images (a top-level entry that
``pgd_bad``/``p4d_bad`` rejects is not followed, nor a link outside the
image, and each is counted in ``mm.bad_entries`` once per address
translated under it, cached region or not; P must be set at every
level)."""

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
import hypothesis.strategies as st

import pgwalk

P, RW, US, A, D, PSE, NX = 1, 2, 4, 0x20, 0x40, 0x80, 1 << 63
TABLE = P | RW | US | A | D
PFN_MASK = ((1 << 52) - 1) & ~0xFFF
PMD_MASK = ((1 << 52) - 1) & ~((1 << 21) - 1)
PUD_MASK = ((1 << 52) - 1) & ~((1 << 30) - 1)
NFRAMES = 12
# slot indices the drawn entries and addresses use: 0/64/128 share a line of
# a 64-line cache when they are PMD indices of the same PUD entry
IDX = [0, 1, 64, 128, 511]


def reference_translate(frame, root, levels, va):
    """(physical address of ``va`` or -1, the address an unfollowable entry
    on the way is reported at or None); ``frame(pfn)`` is a frame's 512
    entries (ints) or None when the image lacks it.  An entry is reported
    at the start of the range it covers."""
    def bad(shift):
        return -1, va & ~((1 << shift) - 1)

    t = frame(root)
    if levels == 5:
        e = t[(va >> 48) & 511]
        if e == 0:
            return -1, None
        if pgwalk.pgd_bad(e, 5):
            return bad(48)
        t = frame((e & PFN_MASK) >> 12)
        if t is None:
            return bad(48)
    e = t[(va >> 39) & 511]
    if pgwalk.pte_none(e):
        return -1, None
    if pgwalk.p4d_bad(e):
        return bad(39)
    for up, shift, leaf_mask in ((39, 30, PUD_MASK), (30, 21, PMD_MASK), (21, 12, None)):
        t = frame((e & PFN_MASK) >> 12)
        if t is None:
            return bad(up)
        e = t[(va >> shift) & 511]
        if not e & P:
            return -1, None
        if leaf_mask is None:
            return (e & PFN_MASK) | (va & 0xFFF), None
        if e & PSE:
            return (e & leaf_mask) | (va & ((1 << shift) - 1)), None
    raise AssertionError("not reached")


def entries():
    """One table entry: a link (inside the image, outside it, with a flag the
    top levels reject), a leaf with or without P, or a non-present value."""
    frame = st.integers(0, NFRAMES + 3)
    link = st.builds(lambda f, nx: (f << 12) | TABLE | (NX if nx else 0), frame, st.booleans())
    bad_link = st.builds(lambda f, flag: (f << 12) | TABLE | flag, frame, st.sampled_from([PSE, 0x8, 0x200]))
    leaf = st.builds(lambda pfn, flags: (pfn << 12) | flags, st.integers(0, (1 << 40) - 1),
                     st.sampled_from([P | RW | PSE, P | RW, PSE, 0x100, P | PSE | (1 << 12)]))
    other = st.sampled_from([0, 0x60, 0xFFFFFFFFFFFFF600, 3 << 52 | 9 << 12 | 2])
    return st.one_of(link, link, bad_link, leaf, other)


@st.composite
def images(draw):
    """(image, root frame, levels, frame left out of the ELF core or None, addresses)."""
    levels = draw(st.sampled_from([4, 5]))
    img = np.zeros(NFRAMES * 512, dtype=np.uint64)
    root = draw(st.integers(0, NFRAMES - 1))
    frame = st.integers(0, NFRAMES - 1)
    idx = st.sampled_from(IDX)
    # paths of table links from the root down, each ending in a drawn entry at a drawn level
    paths = draw(st.lists(st.tuples(st.lists(idx, min_size=levels, max_size=levels),
                                    st.lists(frame.filter(lambda f: f != root), min_size=levels - 1,
                                             max_size=levels - 1, unique=True),
                                    st.sampled_from([levels - 1] * 3 + list(range(levels))), entries()),
                               min_size=1, max_size=8))
    for slots, frames, depth, last in paths:
        f = root
        for d in range(depth):
            img[f * 512 + slots[d]] = (frames[d] << 12) | TABLE
            f = frames[d]
        img[f * 512 + slots[depth]] = last
    for _ in range(draw(st.integers(0, 6))):            # and entries anywhere
        img[draw(frame) * 512 + draw(idx)] = draw(entries())
    hole = draw(st.none() | frame.filter(lambda f: f != root))

    def va(slots, off, top):
        shifts = (48, 39, 30, 21, 12) if levels == 5 else (39, 30, 21, 12)
        v = sum(i << s for i, s in zip(slots, shifts)) | off
        return v | (top << (57 if levels == 5 else 48))  # upper bits: canonical or not, ignored
    on_path = st.sampled_from([p[0] for p in paths])
    addr = st.builds(va, st.one_of(on_path, on_path, on_path, st.lists(idx, min_size=levels, max_size=levels)),
                     st.sampled_from([0, 1, 0xFFF, 0x1FFFFF]), st.sampled_from([0, 0x7F, 0x40, 1]))
    vas = draw(st.lists(addr, min_size=1, max_size=200))
    vas = vas * draw(st.integers(1, 3))                   # repeats: the same regions met again later
    return img, root, levels, hole, vas


def write_elf(path, img, hole):
    """An ELF core of ``img``'s frames less frame ``hole`` (two PT_LOADs)."""
    n = img.size // 512
    layout = [(0, hole), (hole + 1, n - hole - 1)]
    layout = [(f, k) for f, k in layout if k]
    ph, body, off = b"", b"", 4096
    for first, k in layout:
        ph += struct.pack("<IIQQQQQQ", 1, 4, off + len(body), 0, first * 4096, k * 4096, k * 4096, 4096)
        body += img[first * 512:(first + k) * 512].tobytes()
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, len(layout), 0, 0, 0)
    path.write_bytes((ehdr + ph).ljust(off, b"\0") + body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(images())
def test_translate_equals_the_reference(tmp_path, case):
    img, root, levels, hole, vas = case
    path = tmp_path / ("img.elf" if hole is not None else "img.raw")
    if hole is None:
        img.tofile(path)
    else:
        write_elf(path, img, hole)
    rows = img.reshape(-1, 512)

    def frame(pfn):
        if pfn >= NFRAMES or pfn == hole:
            return None
        return [int(x) for x in rows[pfn]]

    img_ = pgwalk.PhysImage.open(path)
    ref = [reference_translate(frame, root, levels, va) for va in vas]
    want = [pa for pa, _ in ref]
    reported = [b for _, b in ref if b is not None]      # one per address under such an entry
    mm = img_.mm(root << 12, levels)
    got = mm.translate(np.array(vas, dtype=np.uint64))
    assert got.tolist() == want
    count, addrs = mm.bad_entries
    assert count == len(reported) and addrs.tolist() == reported[:len(addrs)]
    mm = img_.mm(root << 12, levels)
    assert [mm.translate1(va) for va in vas] == want
    assert mm.bad_entries[0] == len(reported)
    # the same addresses one call each (no cache shared between them)
    assert [int(mm.translate(np.array([va], dtype=np.uint64))[0]) for va in vas[:20]] == want[:20]
