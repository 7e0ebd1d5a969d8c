"""The mmap lock model, kept importable as ``pgwalk.locks``; it lives in
``pgwalk.walker.locks``."""

from .walker.locks import *  # noqa: F401,F403
from .walker.locks import __all__  # noqa: F401
