"""Memory images: page tables inside physical-memory dumps.

Holds opening dumps (``physimage.py``: raw files and ELF cores, memory-mapped
read only; ``formats/``: format detection, LiME and kdump readers), the image's tables seen as an address space (``ImageMM``:
mappings, translate, ptdump), the C walks that gather mappings
(``_image.pyx``), the roots found without a CR3 (``roots.py`` over the C
pass of ``_roots.pyx``), fleets of dumps on Dask (``fleet.py``) and the
command line (``cli.py``, ``roots_cli.py``).

May use: ``pgwalk.constants``, ``pgwalk.entries`` and the walker through
``pgwalk.walker``'s exported names and its C contract.  It does not use the
process model: an image is read only, and nothing here can mmap or fork.
"""

from .fleet import scan
from .physimage import MAPPING_DTYPE, NONPRESENT_DTYPE, AbsentError, ImageError, ImageMM, PhysImage
from .roots import Root, find_roots

__all__ = ["MAPPING_DTYPE", "NONPRESENT_DTYPE", "AbsentError", "ImageError", "ImageMM", "PhysImage", "Root",
           "find_roots", "scan"]
