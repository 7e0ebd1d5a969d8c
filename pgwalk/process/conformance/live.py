"""The live side of the differential: run a scenario (``steps.py``) on this
machine's kernel through ctypes and record what it observes.

The run happens in a forked runner process (so the calling process's own
memory is untouched); each touch is done by a small C helper (compiled once
with the system compiler, called through ctypes) that catches SIGSEGV and
SIGBUS, so that they are observations.  (Without a compiler, a touch is
first tried in a forked probe child, which is wrong for WIPEONFORK and
DONTFORK ranges.)  /proc/self/pagemap is read unbuffered with ``os.pread``.
"""

import ctypes
import ctypes.util
import errno
import os
import pickle
import signal
import struct

import numpy as np

from ...constants import (
    MADV_GUARD_INSTALL, MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PAGE_SIZE, PMD_SIZE,
)
from .steps import FLAG_MASK, SMAPS_FIELDS

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mremap.restype = ctypes.c_void_p
_libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                         ctypes.c_void_p]
for _name in ("munmap", "mlock", "munlock"):
    getattr(_libc, _name).argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MAP_FAILED = ctypes.c_void_p(-1).value


def _rc(r):
    return ctypes.get_errno() if r != 0 else 0


def reserve(npages, align=PMD_SIZE):
    """A free, ``align``-aligned (2 MiB by default) address range of
    ``npages`` pages (+ slack) in this process: mapped PROT_NONE, aligned,
    then unmapped.  With ``align`` of 1 GiB the range starts a PUD of its
    own, where this process has no page tables at all."""
    size = npages * PAGE_SIZE + 4 * align
    a = _libc.mmap(None, size, 0, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    assert a != MAP_FAILED
    _libc.munmap(a, size)
    return ((a + 2 * align - 1) & ~(align - 1)) + align


def guard_regions_supported():
    """(True, "") when MADV_GUARD_INSTALL works on this kernel, else (False, reason)."""
    a = _libc.mmap(None, PAGE_SIZE, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if a == MAP_FAILED:
        return False, "mmap failed"
    try:
        if _libc.madvise(a, PAGE_SIZE, MADV_GUARD_INSTALL) != 0:
            e = ctypes.get_errno()
            return False, f"madvise(MADV_GUARD_INSTALL) fails with {errno.errorcode.get(e, e)} on {os.uname().release}"
        try:
            fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        except OSError as e:
            return False, f"/proc/self/pagemap unreadable: {e}"
        try:
            w = struct.unpack("<Q", os.pread(fd, 8, (a // PAGE_SIZE) * 8))[0]
        finally:
            os.close(fd)
        if not w >> 58 & 1:
            return False, "pagemap has no guard bit (58) on this kernel"
        return True, ""
    finally:
        _libc.munmap(a, PAGE_SIZE)


def _maps(base, npages):
    out = []
    end = base + npages * PAGE_SIZE
    with open("/proc/self/maps") as f:
        for line in f:
            rng, perms = line.split()[:2]
            s, e = (int(x, 16) for x in rng.split("-"))
            if e <= base or s >= end:
                continue
            prot = (perms[0] == "r") | (perms[1] == "w") << 1 | (perms[2] == "x") << 2
            out.append(((max(s, base) - base) // PAGE_SIZE, (min(e, end) - base) // PAGE_SIZE,
                        prot, perms[3]))
    return out


def _pagemap(fd, base, npages):
    raw = os.pread(fd, npages * 8, (base // PAGE_SIZE) * 8)
    return np.frombuffer(raw, dtype=np.uint64) & np.uint64(FLAG_MASK)


_TOUCH_C = r"""
#include <setjmp.h>
#include <signal.h>
#include <string.h>
static sigjmp_buf env;
static void on_fault(int sig) { siglongjmp(env, sig); }
/* One access at p: 0 done, else the signal it raised (SIGSEGV, SIGBUS). */
int pgwalk_touch(volatile char *p, int write)
{
    struct sigaction sa, old_segv, old_bus;
    int sig;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    sig = sigsetjmp(env, 1);
    if (sig == 0) {
        if (write)
            *p = 0x5a;
        else
            (void)*p;
    }
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    return sig;
}
"""
_touch_fn = None


def _touch_helper():
    """A C helper (built once with the system compiler, called through ctypes)
    that does one access and catches SIGSEGV/SIGBUS, so the access happens in
    the runner itself; None if no compiler is available."""
    global _touch_fn
    if _touch_fn is None:
        import shutil
        import subprocess
        import tempfile
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            _touch_fn = False
            return None
        d = tempfile.mkdtemp(prefix="pgwalk-touch-")
        src, lib = os.path.join(d, "touch.c"), os.path.join(d, "touch.so")
        with open(src, "w") as f:
            f.write(_TOUCH_C)
        r = subprocess.run([cc, "-O1", "-shared", "-fPIC", "-o", lib, src], capture_output=True)
        if r.returncode != 0:
            _touch_fn = False
            return None
        fn = ctypes.CDLL(lib).pgwalk_touch
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int]
        fn.restype = ctypes.c_int
        _touch_fn = fn
    return _touch_fn or None


def _access(addr, write):
    if write:
        ctypes.memset(addr, 0x5A, 1)
    else:
        ctypes.string_at(addr, 1)


def _touch(addr, write):
    fn = _touch_helper()
    if fn is not None:
        sig = fn(addr, int(bool(write)))
        return {0: "ok", signal.SIGSEGV: "SEGV", signal.SIGBUS: "BUS"}.get(sig, f"sig{sig}")
    res = _probe(addr, write)
    if res == "ok":
        _access(addr, write)
    return res


def _probe(addr, write):
    pid = os.fork()
    if pid == 0:
        try:
            import faulthandler
            faulthandler.disable()
            signal.signal(signal.SIGSEGV, signal.SIG_DFL)
            signal.signal(signal.SIGBUS, signal.SIG_DFL)
            _access(addr, write)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return {signal.SIGSEGV: "SEGV", signal.SIGBUS: "BUS"}.get(sig, f"sig{sig}")
    return "ok"


def _send(fd, obj):
    data = pickle.dumps(obj)
    os.write(fd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _recv(fd):
    def read_n(n):
        buf = b""
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError("peer closed the pipe")
            buf += chunk
        return buf
    (n,) = struct.unpack("<Q", read_n(8))
    return pickle.loads(read_n(n))


def do_step(st, base):
    """One memory step of this process; returns its result."""
    kind = st[0]
    a = lambda off: base + off * PAGE_SIZE  # noqa: E731
    ctypes.set_errno(0)
    if kind == "mmap":
        _, off, n, prot, flags = st
        r = _libc.mmap(a(off), n * PAGE_SIZE, prot, flags, -1, 0)
        return ("err", ctypes.get_errno()) if r == MAP_FAILED else ("at", (r - base) // PAGE_SIZE)
    if kind == "munmap":
        return _rc(_libc.munmap(a(st[1]), st[2] * PAGE_SIZE))
    if kind == "mprotect":
        return _rc(_libc.mprotect(a(st[1]), st[2] * PAGE_SIZE, st[3]))
    if kind == "madvise":
        return _rc(_libc.madvise(a(st[1]), st[2] * PAGE_SIZE, st[3]))
    if kind == "mlock":
        return _rc(_libc.mlock(a(st[1]), st[2] * PAGE_SIZE))
    if kind == "munlock":
        return _rc(_libc.munlock(a(st[1]), st[2] * PAGE_SIZE))
    if kind == "mremap":
        _, off, old_n, new_n, flags, new_off = st
        r = _libc.mremap(a(off), old_n * PAGE_SIZE, new_n * PAGE_SIZE, flags, a(new_off))
        return ("err", ctypes.get_errno()) if r == MAP_FAILED else ("at", (r - base) // PAGE_SIZE)
    if kind == "touch":
        return _touch(a(st[1]), st[2])
    if kind == "clear_refs":
        with open("/proc/self/clear_refs", "w") as f:
            f.write(str(st[1]))
        return 0
    raise ValueError(kind)


def _child_loop(base, npages, up_w, down_r):
    """The forked child: report its pagemap, then run the steps it is sent
    (("child", step)) and report each result with its pagemap and VMAs."""
    cfd = os.open("/proc/self/pagemap", os.O_RDONLY)
    _send(up_w, _pagemap(cfd, base, npages).tolist())
    while True:
        try:
            st = _recv(down_r)
        except EOFError:
            return
        if st is None:
            return
        res = do_step(st, base)
        _send(up_w, (res, _pagemap(cfd, base, npages).tolist(), _maps(base, npages)))


def _run_steps(base, npages, steps):
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    child = None
    obs = []

    def end_child():
        if child is not None:
            _send(child[1], None)
            os.waitpid(child[0], 0)
            os.close(child[1])
            os.close(child[2])

    for st in steps:
        kind = st[0]
        if kind == "fork":
            end_child()
            up_r, up_w = os.pipe()
            down_r, down_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(up_r)
                    os.close(down_w)
                    _child_loop(base, npages, up_w, down_r)
                finally:
                    os._exit(0)
            os.close(up_w)
            os.close(down_r)
            child = (pid, down_w, up_r)
            res = _recv(up_r)
        elif kind == "child_exit":
            end_child()
            child = None
            res = 0
        elif kind == "child":
            if child is None:
                res = "no child"
            else:
                _send(child[1], st[1])
                res = _recv(child[2])
        else:
            res = do_step(st, base)
        obs.append((res, _pagemap(fd, base, npages).tolist(), _maps(base, npages)))
    end_child()
    os.close(fd)
    return obs


def in_runner(fn):
    """Call ``fn()`` in a fresh forked runner pinned to one CPU and return
    what it returns (pickled back), so that the calling process's own memory
    is never touched; an exception in the runner becomes a RuntimeError."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            # one CPU: pages faulted in sit in that CPU's LRU batches, which
            # MADV_COLD/PAGEOUT drain; from another CPU they might not be
            # isolated yet and the outcome would depend on scheduling
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpus[-1]})
            out = ("ok", fn())
        except BaseException as e:  # report, never return into the caller
            import traceback
            out = ("error", f"{e!r}\n{traceback.format_exc()}")
            code = 1
        try:
            data = pickle.dumps(out)
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        c = os.read(r, 1 << 20)
        if not c:
            break
        chunks.append(c)
    os.close(r)
    os.waitpid(pid, 0)
    out = pickle.loads(b"".join(chunks))
    if out[0] != "ok":
        raise RuntimeError(f"live runner failed: {out[1]}")
    return out[1]


def run_live(steps, npages, align=PMD_SIZE):
    """Run ``steps`` in a fresh forked runner, the region at an
    ``align``-aligned base; returns (base, observations)."""
    def go():
        base = reserve(npages + 8, align)
        return base, _run_steps(base, npages, steps)
    return in_runner(go)


# --- the final state's smaps and mincore -------------------------------------------

def live_smaps(base, npages):
    """This process's /proc/self/smaps entries for the VMAs in the region:
    {"start", "end" (page offsets, clipped to the region), each numeric
    field, "VmFlags" (a list)}."""
    end = base + npages * PAGE_SIZE
    vmas, cur = [], None
    with open("/proc/self/smaps") as f:
        for line in f:
            head, *rest = line.split()
            if "-" in head and not line[0].isupper():
                s, e = (int(x, 16) for x in head.split("-"))
                cur = None
                if s < end and e > base:
                    cur = {"start": (max(s, base) - base) // PAGE_SIZE,
                           "end": (min(e, end) - base) // PAGE_SIZE}
                    vmas.append(cur)
            elif cur is not None and head == "VmFlags:":
                cur["VmFlags"] = rest
            elif cur is not None and rest and rest[0].isdigit():
                cur[head.rstrip(":")] = int(rest[0])
    return vmas


def _live_smaps_mincore(base, npages):
    """smaps figures (SMAPS_FIELDS) and mincore bytes of each VMA in the
    region, here (the live runner)."""
    libc = _libc
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    vmas = [{k: v[k] for k in ("start", "end") + SMAPS_FIELDS if k in v}
            for v in live_smaps(base, npages)]
    mc = []
    for v in vmas:
        n = v["end"] - v["start"]
        buf = (ctypes.c_ubyte * n)()
        rc = libc.mincore(ctypes.c_void_p(base + v["start"] * PAGE_SIZE), n * PAGE_SIZE, buf)
        mc.append(list(buf) if rc == 0 else ctypes.get_errno())
    return vmas, mc


def run_live_final(steps, npages):
    """Run ``steps`` live in a fresh forked runner; then the smaps figures
    and mincore bytes of each VMA in the region (see SMAPS_FIELDS)."""
    def go():
        base = reserve(npages + 8)
        _run_steps(base, npages, steps)
        return _live_smaps_mincore(base, npages)
    return in_runner(go)


def run_live_all(steps, npages):
    """``run_live`` and ``run_live_final`` in one runner: (observations,
    final smaps and mincore)."""
    def go():
        base = reserve(npages + 8)
        obs = _run_steps(base, npages, steps)
        return obs, _live_smaps_mincore(base, npages)
    return in_runner(go)


# --- what this kernel can run -------------------------------------------------------

_LIVE = []


def live_supported():
    """(True, "") when the live runner can observe everything the model
    does (guard regions and pagemap's guard bit included); cached."""
    if not _LIVE:
        _LIVE.append(guard_regions_supported())
    return _LIVE[0]
