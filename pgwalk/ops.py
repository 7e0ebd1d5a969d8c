"""``MMWalkOps``, kept importable as ``pgwalk.ops``; it lives in
``pgwalk.walker.ops``."""

from .walker.ops import *  # noqa: F401,F403
from .walker.ops import __all__  # noqa: F401
