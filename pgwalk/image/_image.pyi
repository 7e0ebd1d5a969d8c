"""C consumers for page tables in physical-memory images."""

from typing import Any

from typing_extensions import Self, disjoint_base

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pgwalk.walker._core import CFunc, PageTables

MAPPING_DTYPE: np.dtype[Any]
OTHER_DTYPE: np.dtype[Any]

@disjoint_base
class MappingsOp:
    """Walk ops recording present leaves and other non-none entries."""
    @property
    def pud_entry(self) -> CFunc: ...
    @property
    def pmd_entry(self) -> CFunc: ...
    @property
    def pte_entry(self) -> CFunc: ...
    @property
    def pte_range(self) -> CFunc:
        """A pmd_entry that reads each PTE table itself (no pte_entry needed)."""
    @property
    def buffer_bytes(self) -> int: ...
    def result(self) -> tuple[NDArray[np.void], NDArray[np.void]]: ...
    def reset(self) -> None: ...

def translate(pt: PageTables, vas: ArrayLike) -> NDArray[np.int64]: ...
def translate1(pt: PageTables, va: int) -> int: ...
def copy_runs(frames: NDArray[Any], offsets: ArrayLike, lengths: ArrayLike) -> bytes: ...
