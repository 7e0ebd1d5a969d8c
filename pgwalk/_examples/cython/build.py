"""Build count_present.pyx (or another example of this folder) against the
installed pgwalk and run it.

    python build.py [outdir] [count_present | ptrange_count]

Finds pgwalk's .pxd files through the installed package (its parent folder
goes on Cython's include path), compiles the module into ``outdir`` (default:
a temporary folder), imports it and walks a small mm with it."""

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Distribution, Extension

import pgwalk

HERE = Path(__file__).resolve().parent


def build(outdir, name="count_present"):
    outdir = Path(outdir)
    pkg_parent = str(Path(pgwalk.__file__).resolve().parent.parent)
    ext = Extension(name, [str(HERE / f"{name}.pyx")],
                    include_dirs=[np.get_include()])
    dist = Distribution({"ext_modules": cythonize([ext], include_path=[pkg_parent],
                                                  build_dir=str(outdir / "c"), quiet=True)})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(outdir)
    cmd.build_temp = str(outdir / "tmp")
    cmd.ensure_finalized()
    cmd.run()
    so = next(outdir.glob(f"{name}*.so"))
    spec = importlib.util.spec_from_file_location(name, so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(outdir=None):
    with tempfile.TemporaryDirectory() as tmp:
        mod = build(outdir or tmp)
        mm = pgwalk.MM(levels=4)
        base = 0x7F0000000000
        mm.add_vma(base, base + (2 << 21))
        for i in range(0, 1024, 8):
            mm.map(base + i * 4096)
        op = mod.CountPresent()
        with mm.mmap_read_lock():
            rc = pgwalk.walk_page_range(mm, base, base + (2 << 21), pgwalk.MMWalkOps(pte_entry=op.pte_entry))
        print(f"rc={rc} present PTEs={op.value}")
        return op.value


def main_ptrange(outdir=None):
    """The pt_range_walk example: a THP (one PMD record), a PTE-mapped
    one (batches) and single pages."""
    with tempfile.TemporaryDirectory() as tmp:
        mod = build(outdir or tmp, "ptrange_count")
        mm = pgwalk.MM(levels=4)
        base = 0x7F0000000000
        rw = pgwalk.PROT_READ | pgwalk.PROT_WRITE
        mm.mmap(base, 8 << 20, rw, pgwalk.MAP_PRIVATE | pgwalk.MAP_ANONYMOUS | pgwalk.MAP_FIXED)
        mm.madvise(base, 4 << 20, pgwalk.MADV_HUGEPAGE)
        mm.touch(base, write=True)
        mm.touch(base + (2 << 20), write=True)
        mm.madvise(base + (2 << 20) + 0x5000, 4096, pgwalk.MADV_DONTNEED)    # PTE-maps it
        for i in range(8):
            mm.touch(base + (4 << 20) + i * 4096 * 3, write=True)
        pages = records = 0
        with mm.mmap_read_lock():
            for vma in mm.vmas:
                p, r = mod.count_present(mm, vma, vma.vm_start, vma.vm_end)
                pages, records = pages + p, records + r
        print(f"present pages={pages} records={records}")
        return pages, records


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "ptrange_count":
        main_ptrange(sys.argv[1])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else None)
