"""Snapshots (pgwalk/process/snapshot.py): ``MM.from_process`` against a
child process this test sets up (4 KiB pages, a THP, guard regions, a
PROT_NONE range, an unmapped hole), page for page against the live
pagemap; the errors for a gone pid and unreadable files; ``save``/``load``;
``MM.from_image`` on the synthetic images of tests/helpers/image_gen.py."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pgwalk
from pgwalk import PAGE_SIZE, PMD, PTE
from pgwalk.process import snapshot as S

from helpers import image_gen, live_kernel as L

if not sys.platform.startswith("linux") or not os.path.exists("/proc/self/pagemap"):
    pytest.skip("snapshots of live processes need Linux's /proc/PID/pagemap", allow_module_level=True)

GUARD_OK, GUARD_WHY = L.guard_regions_supported()
PRESENT, SWAP, GUARD = 1 << 63, 1 << 62, 1 << 58
MASK = np.uint64(PRESENT | GUARD)
MB2 = 1 << 21

# The child: maps a 2 MiB-aligned region of 6 MiB at BASE and shapes it;
# prints the base and waits for a line on stdin before exiting.
#   [0, 2M)      MADV_HUGEPAGE, every page written (a THP where THPs work)
#   [2M, 4M)     4 KiB pages: every 3rd written, every 5th read (zero page),
#                pages 100..109 a guard region (if asked), pages 200..219
#                PROT_NONE (after the touches), pages 300..339 unmapped
#   [4M, 6M)     untouched
CHILD = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    for f in ("madvise", "mprotect"):
        getattr(libc, f).argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    P, M2 = 4096, 1 << 21
    guard, thp = int(sys.argv[1]), int(sys.argv[2])
    raw = libc.mmap(None, 8 * M2, 0, 0x22 | 0x4000, -1, 0)
    base = (raw + M2 - 1) & ~(M2 - 1)
    b = libc.mmap(base, 3 * M2, 3, 0x22 | 0x10, -1, 0)
    assert b == base
    if thp:
        assert libc.madvise(base, M2, 14) == 0          # MADV_HUGEPAGE
        ctypes.memset(base, 1, M2)
    else:
        assert libc.madvise(base, M2, 15) == 0          # MADV_NOHUGEPAGE
        for i in range(0, 512, 2):
            ctypes.c_char.from_address(base + i * P).value = b"x"
    r = base + M2
    for i in range(512):
        if i % 3 == 0:
            ctypes.c_char.from_address(r + i * P).value = b"y"
        elif i % 5 == 0:
            ctypes.c_char.from_address(r + i * P).value
    if guard:
        assert libc.madvise(r + 100 * P, 10 * P, 102) == 0   # MADV_GUARD_INSTALL
    assert libc.mprotect(r + 200 * P, 20 * P, 0) == 0
    assert libc.munmap(r + 300 * P, 40 * P) == 0
    print(hex(base), flush=True)
    sys.stdin.readline()
""")


def thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "unavailable"


class Child:
    """A child process running CHILD; ``base`` is its region's address."""

    def __init__(self, guard=False, thp=False, user=None):
        self.p = subprocess.Popen([sys.executable, "-c", CHILD, str(int(guard)), str(int(thp))],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, user=user)
        self.base = int(self.p.stdout.readline(), 16)
        self.pid = self.p.pid

    def live_pagemap(self, start, end):
        fd = os.open(f"/proc/{self.pid}/pagemap", os.O_RDONLY)
        try:
            return S.read_pagemap(fd, start, end)
        finally:
            os.close(fd)

    def anon_huge_kb(self, addr):
        return next(v.get("AnonHugePages", 0) for v in S.read_smaps(self.pid)
                    if v["start"] <= addr < v["end"])

    def close(self):
        self.p.stdin.write("\n")
        self.p.stdin.close()
        self.p.wait()
        self.p.stdout.close()


@pytest.fixture
def child(request):
    c = Child(**getattr(request, "param", {}))
    yield c
    c.close()


def same_present_and_guard(mm, c, start, end):
    live = c.live_pagemap(start, end)
    model = mm.pagemap(start, end)
    diff = np.flatnonzero((live & MASK) != (model & MASK))
    assert diff.size == 0, (f"{diff.size} pages differ, first at {start + int(diff[0]) * PAGE_SIZE:#x}: "
                            f"live {int(live[diff[0]]):#x} model {int(model[diff[0]]):#x}")
    return live, model


def test_from_process_4k_pages_protnone_and_hole(child):
    """Every page of the region: present bits as live (4 KiB pages, the zero
    page, PROT_NONE pages), the hole unmapped in both, VMAs as live."""
    mm = pgwalk.MM.from_process(child.pid)
    b = child.base
    live, model = same_present_and_guard(mm, child, b, b + 3 * MB2)
    assert np.count_nonzero(live & np.uint64(PRESENT)) > 400
    if os.geteuid() == 0:                     # PFNs are readable: the model has them
        pres = (live & np.uint64(PRESENT)) != 0
        assert np.array_equal(live[pres] & np.uint64(S.PM_PFN_MASK), model[pres] & np.uint64(S.PM_PFN_MASK))
    r = b + MB2
    assert mm.find_vma(r + 300 * PAGE_SIZE).vm_start == r + 340 * PAGE_SIZE     # the hole
    pn = mm.find_vma(r + 200 * PAGE_SIZE)
    assert (pn.vm_start, pn.vm_end) == (r + 200 * PAGE_SIZE, r + 220 * PAGE_SIZE)
    assert not pn.vm_flags & (pgwalk.VM_READ | pgwalk.VM_WRITE)
    assert model[200 + 512] & np.uint64(PRESENT) and not model[217 + 512] & np.uint64(PRESENT)
    assert pgwalk.pte_present(mm.entry(r + 200 * PAGE_SIZE, PTE))
    ours = [(v["start"], v["end"], v["flags"]) for v in S.read_smaps(child.pid) if v["end"] <= 1 << 47]
    assert [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.vmas] == ours
    mm.validate()
    assert mm.phys_group.inexact.startswith("snapshot")


@pytest.mark.skipif(not GUARD_OK, reason=f"guard regions: {GUARD_WHY}")
@pytest.mark.parametrize("child", [{"guard": True}], indirect=True)
def test_from_process_guard_regions_become_markers(child):
    mm = pgwalk.MM.from_process(child.pid)
    r = child.base + MB2
    live, model = same_present_and_guard(mm, child, child.base, child.base + 3 * MB2)
    assert np.count_nonzero(live & np.uint64(GUARD)) == 10
    for i in range(100, 110):
        assert pgwalk.is_guard_marker(mm.entry(r + i * PAGE_SIZE, PTE))
    with pytest.raises(pgwalk.SegmentationFault):
        mm.touch(r + 105 * PAGE_SIZE)
    mm.validate()


@pytest.mark.skipif(thp_mode() in ("never", "unavailable"),
                    reason=f"transparent hugepages: {thp_mode()}")
@pytest.mark.parametrize("child", [{"thp": True}], indirect=True)
def test_from_process_thp_becomes_a_pmd_leaf(child):
    if child.anon_huge_kb(child.base) < 2048:
        pytest.skip("the kernel did not give the child a THP (fragmented memory?)")
    mm = pgwalk.MM.from_process(child.pid)
    same_present_and_guard(mm, child, child.base, child.base + 3 * MB2)
    assert pgwalk.pmd_trans_huge(mm.entry(child.base, PMD))
    assert mm.smaps()[[v.vm_start for v in mm.vmas].index(child.base)]["AnonHugePages"] == 2048
    mm.validate()


def as_nobody(fn):
    """Run ``fn()`` in a forked child that became user nobody (and stays
    dumpable, so that its own children's /proc files are its to read);
    returns what it returned, or the traceback text it raised."""
    import ctypes
    import pickle
    import traceback
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            ctypes.CDLL("libc.so.6").prctl(4, 1, 0, 0, 0)     # PR_SET_DUMPABLE
            try:
                res = fn()
            except BaseException:
                res = traceback.format_exc()
            os.write(w, pickle.dumps(res))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


class ForkedChild(Child):
    """CHILD run in a forked process (no exec), for a caller that cannot
    exec the interpreter (user nobody)."""

    def __init__(self, guard=False, thp=False):
        import io
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r1)
                os.close(w2)
                sys.argv = ["child", str(int(guard)), str(int(thp))]
                sys.stdout = io.TextIOWrapper(os.fdopen(w1, "wb"))
                sys.stdin = io.TextIOWrapper(os.fdopen(r2, "rb"))
                exec(CHILD, {"__name__": "child"})
            finally:
                os._exit(0)
        os.close(w1)
        os.close(r2)
        self.out = os.fdopen(r1)
        self.inp = os.fdopen(w2, "w")
        self.base = int(self.out.readline(), 16)
        self.pid = pid

    def close(self):
        self.inp.write("\n")
        self.inp.close()
        os.waitpid(self.pid, 0)
        self.out.close()


def test_without_root_pfns_are_synthetic_and_thps_come_from_smaps():
    """As an unprivileged user (pagemap shows no PFNs, kpageflags is
    closed): present and guard bits still equal, PFNs consecutive per VMA,
    a THP found through AnonHugePages."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as another user")
    thp = thp_mode() not in ("never", "unavailable")

    def check():
        c = ForkedChild(guard=GUARD_OK, thp=thp)
        try:
            mm = pgwalk.MM.from_process(c.pid)
            same_present_and_guard(mm, c, c.base, c.base + 3 * MB2)
            info = mm.snapshot_info
            assert not info["real_pfns"] and not info["kpageflags"], info
            r = c.base + MB2
            pfns = [pgwalk.pte_pfn(mm.entry(r + i * PAGE_SIZE, PTE)) for i in (0, 3)]
            assert pfns[1] - pfns[0] == 3, pfns
            huge = c.anon_huge_kb(c.base) >= 2048
            if huge:
                assert pgwalk.pmd_trans_huge(mm.entry(c.base, PMD))
            mm.validate()
            return ("ok", huge)
        finally:
            c.close()

    res = as_nobody(check)
    assert isinstance(res, tuple) and res[0] == "ok", res


def test_gone_pid_and_unreadable_files_get_clear_errors():
    """ProcessLookupError naming a pid that is gone; PermissionError naming
    the /proc file another user may not read."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    with pytest.raises(ProcessLookupError, match=str(p.pid)):
        pgwalk.MM.from_process(p.pid)
    with pytest.raises(ValueError):
        pgwalk.MM.from_process(-1)
    if os.geteuid() == 0:
        me = os.getpid()

        def try_read():
            try:
                pgwalk.MM.from_process(me)
            except PermissionError as e:
                return ("PE", e.filename, str(e))
            return "readable"

        res = as_nobody(try_read)
        assert res[0] == "PE" and res[1].startswith(f"/proc/{me}/") and str(me) in res[2], res
    else:
        try:
            pgwalk.MM.from_process(1)
        except PermissionError as e:
            assert e.filename.startswith("/proc/1/")
        else:
            pytest.skip("pid 1 is readable by this user")


def assert_same_mm(a, b, mask=~0):
    """Same levels, VMAs, leaf entries and pagemap (bits of ``mask``)."""
    assert a.levels == b.levels
    assert [(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, v.hugepage_size) for v in a.vmas] == \
        [(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, v.hugepage_size) for v in b.vmas]
    for x, y in zip(S.leaves(a), S.leaves(b)):
        assert np.array_equal(x, y)
    for v in a.vmas:
        m = np.uint64(mask & ((1 << 64) - 1))
        assert np.array_equal(a.pagemap(v.vm_start, v.vm_end) & m, b.pagemap(v.vm_start, v.vm_end) & m)


@pytest.mark.parametrize("child", [{"guard": GUARD_OK, "thp": thp_mode() not in ("never", "unavailable")}],
                         indirect=True)
def test_save_load_round_trip(child, tmp_path):
    mm = pgwalk.MM.from_process(child.pid)
    f = tmp_path / "snap.npz"
    mm.save(f)
    back = pgwalk.MM.load(f)
    assert_same_mm(mm, back)
    back.validate()
    assert back.snapshot_info["names"] == mm.snapshot_info["names"]
    back.save(tmp_path / "again.npz")
    assert_same_mm(back, pgwalk.MM.load(tmp_path / "again.npz"))


def test_save_load_of_a_process_model_mm(tmp_path):
    """A model-made mm (THP, zero pages, guards) saves and loads too; the
    file keeps no map counts, so pagemap's exclusive and file bits (56, 61),
    which the model derives from them, are left out of the comparison."""
    mm = pgwalk.MM()
    a = mm.mmap(None, 8 * MB2, pgwalk.PROT_READ | pgwalk.PROT_WRITE,
                pgwalk.MAP_PRIVATE | pgwalk.MAP_ANONYMOUS)
    mm.madvise(a, 8 * MB2, pgwalk.MADV_HUGEPAGE)
    h = (a + MB2 - 1) & ~(MB2 - 1)
    mm.touch(h, write=True)
    mm.touch(h + MB2 + PAGE_SIZE)
    mm.touch(h + MB2 + 2 * PAGE_SIZE, write=True)
    mm.madvise(h + 2 * MB2, 4 * PAGE_SIZE, pgwalk.MADV_GUARD_INSTALL)
    mm.save(tmp_path / "m.npz")
    back = pgwalk.MM.load(tmp_path / "m.npz")
    assert_same_mm(mm, back, mask=~((1 << 56) | (1 << 61)))
    back.validate()


def test_snapshot_command_line(child, tmp_path, capsys):
    from pgwalk import cli
    out = tmp_path / "c.npz"
    assert cli.main(["snapshot", str(child.pid), "--out", str(out)]) == 0
    assert "VMAs" in capsys.readouterr().out
    mm = pgwalk.MM.load(out)
    same_present_and_guard(mm, child, child.base, child.base + 3 * MB2)
    assert cli.main(["snapshot", "999999999", "--out", str(out)]) == 2
    assert "999999999" in capsys.readouterr().err


@pytest.mark.parametrize("seed", range(4))
def test_from_image_copies_the_user_half(tmp_path, seed):
    img, root, size = image_gen.make_vol_image(seed)
    path = tmp_path / "img.raw"
    image_gen.write_image(path, img, size)
    pimg = pgwalk.PhysImage.open(path)
    imm = pimg.mm(root << 12)
    maps, other = imm.mappings(0, 1 << 47, nonpresent=True)
    mm = pgwalk.MM.from_image(pimg, root << 12)
    mm.validate()
    addr, level, value = S.leaves(mm)
    want = sorted([(int(m["va"]), int(m["level"]), int(m["entry"])) for m in maps]
                  + [(int(o["va"]), int(o["level"]), int(o["entry"])) for o in other if o["level"] == PTE])
    assert list(zip(addr.tolist(), level.tolist(), value.tolist())) == want
    assert mm.snapshot_info["thp"] == sum(1 for m in maps if m["level"] == 3)   # its 2 MiB leaves
    # one VMA per maximal run of mapped pages
    # (a run of 1 GiB leaves is a VMA of its own)
    runs = []
    for va, lvl, _ in want:
        size_ = {4: PAGE_SIZE, 3: MB2, 2: 1 << 30}[lvl]
        if runs and runs[-1][1] == va and (runs[-1][2] == (lvl == 2)):
            runs[-1][1] = va + size_
        else:
            runs.append([va, va + size_, lvl == 2])
    assert [[v.vm_start, v.vm_end, bool(v.vm_flags & pgwalk.VM_HUGETLB)] for v in mm.vmas] == runs
    # a root object with .pgd works too, and the model's pagemap agrees with the image
    class Root:
        pgd = root << 12
    again = pgwalk.MM.from_image(pimg, Root())
    assert_same_mm(mm, again)
    before = S.leaves(mm)
    for m in maps[maps["level"] != 2][:50]:          # (the model's pagemap skips hugetlb VMAs)
        pm = mm.pagemap(int(m["va"]), int(m["va"]) + PAGE_SIZE)
        assert pm[0] & np.uint64(PRESENT)
        assert int(pm[0]) & S.PM_PFN_MASK == int(m["pa"]) >> 12
    for x, y in zip(before, S.leaves(mm)):         # the walks left every leaf in place
        assert np.array_equal(x, y)
    f = tmp_path / "img.npz"
    mm.save(f)
    assert_same_mm(mm, pgwalk.MM.load(f))
