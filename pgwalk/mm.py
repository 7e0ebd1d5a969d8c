"""The model mm, kept importable as ``pgwalk.mm``; it lives in
``pgwalk.process.mm`` (``MM``) and ``pgwalk.walker`` (``VMA``, ``InvariantError``)."""

from .process import MM, VMA, InvariantError, init_mm

__all__ = ["MM", "VMA", "InvariantError", "init_mm"]
