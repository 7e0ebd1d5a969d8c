"""The pure-Python reference of the batched walker, kept importable as
``pgwalk.ptrange_reference``; it lives in ``pgwalk.walker.ptrange_reference``."""

from .walker.ptrange_reference import *  # noqa: F401,F403
from .walker.ptrange_reference import __all__  # noqa: F401
