"""Low-level callables, kept importable as ``pgwalk.lowlevel``; they live in
``pgwalk.walker.lowlevel``."""

from .walker.lowlevel import *  # noqa: F401,F403
from .walker.lowlevel import __all__  # noqa: F401
