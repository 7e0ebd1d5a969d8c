"""Build the compiled modules with Cython (directives set here, once).

Every ``pgwalk/**/X.pyx`` is an extension module named by its path
(``pgwalk/walker/_core.pyx`` -> ``pgwalk.walker._core``).  The walker's C
headers (``pgwalk/walker/*.h``) are on every module's include path: the
process model's and images' C ops use its helpers."""
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HEADERS = sorted(str(h) for h in Path("pgwalk").rglob("*.h"))
PXDS = sorted(str(p) for p in Path("pgwalk").rglob("*.pxd"))
# textual includes: a module is rebuilt when one of them changes
PXIS = sorted(str(p) for p in Path("pgwalk").rglob("*.pxi"))

extensions = [
    Extension(
        ".".join(pyx.with_suffix("").parts),
        [str(pyx)],
        depends=HEADERS + PXDS + PXIS,
        include_dirs=[np.get_include(), "pgwalk/walker"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for pyx in sorted(Path("pgwalk").rglob("*.pyx"))
    if "_examples" not in pyx.parts      # built by the user against the installed package
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
)
