"""benchmarks/real_shapes.py keeps working: the QEMU guest's process is
found from the fixture's record and walked at every tier (here on a
Linux-shaped synthetic dump laid out as the fixture lays out its files)."""

import importlib.util
from pathlib import Path

from helpers.image_gen import make_linux_image

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "real_shapes.py"


def load():
    spec = importlib.util.spec_from_file_location("real_shapes", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_guest_process_is_walked_from_the_fixture_record(tmp_path):
    rs = load()
    assert rs.guest_root(tmp_path, 4) is None                      # no dump: left out
    w, truth = make_linux_image(4, pti=True, nproc=3, seed=1)
    d = tmp_path / "l4"
    d.mkdir()
    w.tofile(d / "guest.elf")                                       # a raw image (named as the fixture names it)
    pgd = truth["process"][0]
    (d / "cr3.txt").write_text(f"CR3={pgd << 12:x} CR4=0 user_pgd={(pgd + 1) << 12:x} "
                               f"kernel_pgd={pgd << 12:x}\n")
    g = rs.guest_root(tmp_path, 4)
    assert g == (d / "guest.elf", pgd << 12, 4)
    row = rs.one("guest", None, 1, 0.0, image=g)
    assert row["comm"] == "guest dump" and row["vmas"] > 0 and row["mapped_pages"] > 0
    assert set(row["tiers"]) == {"c-pmd", "c-slot", "batch", "python"}
    assert all(t["median"] > 0 for t in row["tiers"].values())
