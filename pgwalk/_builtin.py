"""The built-in C ops, kept importable as ``pgwalk._builtin`` (the README
and benchmarks use it); they live in ``pgwalk.walker._builtin``."""

from .walker._builtin import *  # noqa: F401,F403
from .walker._builtin import __all__  # noqa: F401
