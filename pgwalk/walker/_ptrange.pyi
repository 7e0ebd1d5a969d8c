from collections.abc import Iterator
from typing import Any

from .ptrange import PtRangeRecord, PtRangeWalk
from .vma import VMA

C_CONSTANTS: dict[str, int]

def pt_range_walk(vma: VMA, start: int, end: int, flags: int = ..., *,
                  mm: Any = ...) -> PtRangeWalk: ...
