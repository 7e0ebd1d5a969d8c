"""Memory images: page tables inside physical-memory dumps.

Holds opening dumps (``physimage.py``: raw files and ELF cores, memory-mapped
read only; ``formats/``: format detection, LiME and kdump readers), the image's tables seen as an address space (``ImageMM``:
mappings, translate, ptdump), the C walks that gather mappings
(``_image.pyx``) and the command line (``cli.py``).

May use: ``pgwalk.constants``, ``pgwalk.entries`` and the walker through
``pgwalk.walker``'s exported names and its C contract.  It does not use the
process model: an image is read only, and nothing here can mmap or fork.
"""

from .physimage import MAPPING_DTYPE, NONPRESENT_DTYPE, AbsentError, ImageError, ImageMM, PhysImage

__all__ = ["MAPPING_DTYPE", "NONPRESENT_DTYPE", "AbsentError", "ImageError", "ImageMM", "PhysImage"]
