"""Smoke test of benchmarks/image_peers.py: each installed peer answers as
pgwalk does on a small synthetic image (skipped, with the reason, when not)."""

import sys
from pathlib import Path

import numpy as np
import pytest

import pgwalk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import image_peers as P  # noqa: E402
from images import build_image, write_sparse  # noqa: E402


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("peers")
    img, size = build_image(1)
    write_sparse(d / "p.raw", img, size)
    P.write_elf_core(d / "p.elf", img, size, P.vmcoreinfo(1 << 12, 4))
    vas = np.random.default_rng(0).integers(0, 2 << 30, 300, dtype=np.uint64).tolist()
    mm = pgwalk.PhysImage.open(d / "p.raw").mm(1 << 12)
    return d, mm, vas, [mm.translate1(v) for v in vas]


def test_translate1(image):
    _, mm, vas, want = image
    assert want == mm.translate(np.array(vas, dtype=np.uint64)).tolist() and -1 in want


def test_volatility(image):
    d, _, vas, want = image
    layer, why = P.volatility(d / "p.raw", 1 << 12, 4)
    if layer is None:
        pytest.skip(f"Volatility 3: {why}")
    assert P.per_call(lambda v: layer.translate(v)[0], vas) == want


def test_drgn(image):
    d, mm, vas, want = image
    prog, why = P.drgn_program(d / "p.elf")
    if prog is None:
        pytest.skip(f"drgn: {why}")
    from _drgn import _linux_helper_follow_phys as follow
    assert P.per_call(lambda v: follow(prog, P.START_KERNEL_MAP, v), vas) == want
    assert prog.read(0x1ff00, 3 << 20) == mm.read(0x1ff00, 3 << 20)


def test_memprocfs(image):
    d, _, vas, want = image
    vmm, why = P.memprocfs_vmm(d / "p.raw", 1 << 12, 4)
    if vmm is None:
        pytest.skip(f"MemProcFS: {why}")
    try:
        assert P.per_call(vmm.process(1).memory.virt2phys, vas) == want
        assert sum(e["pages"] for e in vmm.process(1).maps.pte()) == 2 << 18
    finally:
        vmm.close()


def test_table_frames_counts_each_table_walked(image):
    """The floor row's tables: one per table a walk visits (the root, and
    each PUD, PMD and PTE table under a leaf: the synthetic image has no
    empty tables), each half's copies counted apart as the walk reads them."""
    d, mm, _, _ = image
    va, level = mm.mappings()["va"], mm.mappings()["level"]
    visits = 1 + sum(len(np.unique(va[level >= lv] >> np.uint64(shift)))
                     for lv, shift in ((2, 39), (3, 30), (4, 21)))
    frames = P.table_frames(d / "p.raw", 1 << 12, 4)
    assert len(frames) == visits and frames[0] == 1


def test_fixed_cost_parts(tmp_path):
    """The benchmark's fixed-cost rows: each part timed on fresh dumps of
    its tiny image (whose four leaves fixed_cost checks)."""
    parts = P.fixed_cost(tmp_path, n=5)
    assert set(parts) == {"open", "mm()", "first mappings()", "fixed cost"}
    assert all(0 < lo <= med for med, lo in parts.values())
    assert parts["fixed cost"][1] >= max(lo for name, (_, lo) in parts.items() if name != "fixed cost")


def test_libvmi(image):
    """LibVMI in file mode, IA-32e given per call (vmi_nested_pagetable_lookup,
    vmi_get_nested_va_pages): every address and every leaf as pgwalk's."""
    d, mm, vas, want = image
    lib, why = P.libvmi_peer(d / "p.raw", 1 << 12, 4)
    if lib is None:
        pytest.skip(f"LibVMI: {why}")
    try:
        assert P.per_call(lib.lookup, vas) == want
        maps = mm.mappings()
        assert sorted(lib.va_pages()) == sorted(zip(maps["va"].tolist(), maps["pa"].tolist(),
                                                    maps["size"].tolist()))
    finally:
        lib.close()
    assert P.libvmi_peer(d / "p.raw", 1 << 12, 5) == (None, "no 5-level paging mode")


def test_libvmi_os_init_from_a_synthetic_system_map(tmp_path):
    """LibVMI's linux_init in file mode (linux_filemode_init) with the
    System.map write_system_map writes for a tiny image: its IA-32e paging
    from init_level4_pgt/startup_64/phys_startup_64 and then the init_task
    check.  Either the OS init works and its pagetable_lookup agrees with
    pgwalk, or it fails at the OS step (not the driver or paging step): the
    LibVMI wheel's init_task check wants a swapper task there."""
    if P._libvmi()[0] is None:
        pytest.skip(f"LibVMI: {P._libvmi()[1]}")
    img = np.zeros(16 * 512, dtype=np.uint64)          # frames: 1 pgd, 2 pud, 3 pmd, 4 pte, 8.. data
    img[512 + 256] = (2 << 12) | 0x63
    img[2 * 512] = (3 << 12) | 0x63
    img[3 * 512] = (4 << 12) | 0x63
    img[4 * 512:4 * 512 + 8] = ((8 + np.arange(8, dtype=np.uint64)) << 12) | 0x63
    raw = tmp_path / "tiny.raw"
    raw.write_bytes(img.tobytes())
    mm = pgwalk.PhysImage.open(raw).mm(1 << 12)
    maps = mm.mappings()
    assert len(maps) == 8 and int(maps["va"][0]) == P.KERNEL_HALF
    v, why = P.libvmi_os_init(raw, 1 << 12, maps, tmp_path / "System.map")
    lines = (tmp_path / "System.map").read_text().split("\n")
    assert lines[0] == f"{8 << 12:016x} T phys_startup_64" and lines[2].endswith(" T init_level4_pgt")
    if v is None:
        assert "fails (LibvmiError OS)" in why, why
        return
    try:
        vas = [P.KERNEL_HALF + i * 0x1001 for i in range(10)]
        got = []
        for va in vas:
            try:
                got.append(v.pagetable_lookup(1 << 12, va))
            except Exception:
                got.append(-1)
        assert got == [mm.translate1(va) for va in vas]
    finally:
        v.destroy()
