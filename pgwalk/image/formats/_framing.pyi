"""Typed surface of the compiled chunk-header walk (see _framing.pyx)."""

import numpy as np
from numpy.typing import NDArray

def walk(m: bytes | memoryview, pos: int, size: int, start: int, done: int, want: int,
         cap: int = ...) -> tuple[int, int, NDArray[np.int64], NDArray[np.int64], NDArray[np.int64],
                                  NDArray[np.int64]]: ...
