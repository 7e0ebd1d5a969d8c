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


def test_fixed_cost_parts(tmp_path):
    """The benchmark's fixed-cost rows: each part timed on fresh dumps of
    its tiny image (whose four leaves fixed_cost checks)."""
    parts = P.fixed_cost(tmp_path, n=5)
    assert set(parts) == {"open", "mm()", "first mappings()", "fixed cost"}
    assert all(0 < lo <= med for med, lo in parts.values())
    assert parts["fixed cost"][1] >= max(lo for name, (_, lo) in parts.items() if name != "fixed cost")
