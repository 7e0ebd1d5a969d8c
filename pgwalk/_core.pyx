# cython: language_level=3
"""``pgwalk._core``: the compiled walker core under the name it had before
the package had rooms.  The core itself is ``pgwalk/walker/_core.pyx`` and
its ``.pxi`` includes; this module hands out the same objects, so Python
code that imports ``pgwalk._core`` and Cython code that cimports it (through
``_core.pxd``) keep working."""

import pgwalk.walker._core as _impl

globals().update({name: getattr(_impl, name) for name in dir(_impl) if not name.startswith("__")})
