"""Build the compiled modules with Cython (directives set here, once).

Every ``pgwalk/*.pyx`` is an extension module ``pgwalk.<name>``."""
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        f"pgwalk.{pyx.stem}",
        [str(pyx)],
        depends=[str(h) for h in Path("pgwalk").glob("*.h")],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for pyx in sorted(Path("pgwalk").glob("*.pyx"))
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
