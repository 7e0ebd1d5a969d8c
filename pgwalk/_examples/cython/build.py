"""Build count_present.pyx against the installed pgwalk and run it.

    python build.py [outdir]

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


def build(outdir):
    outdir = Path(outdir)
    pkg_parent = str(Path(pgwalk.__file__).resolve().parent.parent)
    ext = Extension("count_present", [str(HERE / "count_present.pyx")],
                    include_dirs=[np.get_include()])
    dist = Distribution({"ext_modules": cythonize([ext], include_path=[pkg_parent],
                                                  build_dir=str(outdir / "c"), quiet=True)})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(outdir)
    cmd.build_temp = str(outdir / "tmp")
    cmd.ensure_finalized()
    cmd.run()
    so = next(outdir.glob("count_present*.so"))
    spec = importlib.util.spec_from_file_location("count_present", so)
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


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
