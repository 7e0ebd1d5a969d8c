"""The kernel's page-table dump, kept importable as ``pgwalk.ptdump``; it
lives in ``pgwalk.walker.ptdump``."""

from .walker.ptdump import *  # noqa: F401,F403
from .walker.ptdump import __all__  # noqa: F401
