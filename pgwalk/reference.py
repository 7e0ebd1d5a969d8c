"""The pure-Python reference walker, kept importable as ``pgwalk.reference``;
it lives in ``pgwalk.walker.reference``."""

from .walker.reference import *  # noqa: F401,F403
from .walker.reference import __all__  # noqa: F401
