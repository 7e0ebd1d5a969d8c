"""The built-in C ops, kept importable as ``pgwalk._builtin`` (the README
and benchmarks use it); they live in ``pgwalk.walker._builtin``."""

from .walker._builtin import (  # noqa: F401
    CountOp, CountPresentOp, FillOp, MincoreOp, PtRangeMincoreOp, call_python_4, map_thp_range,
)
