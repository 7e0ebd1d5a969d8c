"""The process model: a Linux process's address space driven by syscalls.

Holds ``MM`` (``mm.py``), built on ``ProcessCore`` (``core.py``: the
walker's ``AddressSpace`` plus the physical-page bookkeeping and the named
internal interface the families use), and the families, each a module of
functions of an mm: mmap/munmap/exit (``mmap.py``), mprotect/mlock
(``mprotect.py``), faults and populate (``faults.py``), madvise
(``madvise.py``, with guard regions in ``guard.py`` and MADV_COLLAPSE in
``collapse.py``), mremap (``mremap.py``), fork (``fork.py``), shmem folios
(``shmem.py``), introspection (``introspect.py``: pagemap, mincore, smaps,
ptdump), ``validate()``'s invariants (``validate.py``), their shared
objects (``objects.py``) and the C ops that do the table work
(``_mmops.pyx``).

May use: ``pgwalk.constants``, ``pgwalk.entries`` and the walker through
``pgwalk.walker``'s exported names and its C contract (``_core.pxd``,
``_entries.pxd``).  Nothing outside the process model imports it but the
package's public face.
"""

from .mm import MM, init_mm
from .objects import BusError, SegmentationFault
from ..walker import VMA, InvariantError

__all__ = ["MM", "VMA", "BusError", "InvariantError", "SegmentationFault", "init_mm"]
