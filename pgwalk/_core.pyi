"""``pgwalk._core`` hands out the objects of ``pgwalk.walker._core``."""

from pgwalk.walker._core import *  # noqa: F401,F403
