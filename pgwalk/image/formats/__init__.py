"""Dump formats other than a flat raw file: detection from the content and
readers that serve physical frames one at a time.

``detect`` names the format of a file from its first bytes (never its name);
``lime``, ``avml`` (AVML's compressed ranges), ``kdump``
(diskdump/kdump-compressed and makedumpfile's flattened stream, read through
``source.FlatSource``) and ``vmcoreinfo`` hold the parsers.  Each reader
raises ``ImageError`` naming the file and the offset for anything
malformed; none reads or decompresses the whole dump.
"""

from .errors import ImageError

LIME_MAGIC = b"EMiL"                 # 0x4C694D45 little-endian
AVML_MAGIC = b"AVML"                 # 0x4C4D5641 little-endian
KDUMP_SIG = b"KDUMP   "
DISKDUMP_SIG = b"DISKDUMP"
FLAT_SIG = b"makedumpfile"
ELF_MAGIC = b"\x7fELF"
FORMATS = ("raw", "elf", "lime", "avml", "kdump", "kdump-flat")


def detect(path, head, size):
    """The format of a file whose first bytes are ``head``: a signature, or
    raw when none matches and the size is a whole number of 4 KiB frames."""
    if head[:4] == ELF_MAGIC:
        return "elf"
    if head[:4] == LIME_MAGIC:
        return "lime"
    if head[:4] == AVML_MAGIC:
        return "avml"
    if head[:8] == KDUMP_SIG:
        return "kdump"
    if head[:8] == DISKDUMP_SIG:
        raise ImageError(f"{path}: an old diskdump (DISKDUMP) file: only kdump-compressed "
                         f"(KDUMP) dumps are read")
    if head[:12] == FLAT_SIG:
        return "kdump-flat"
    if size == 0 or size % 4096:
        raise ImageError(f"{path}: no known dump signature (ELF, LiME, AVML, KDUMP, makedumpfile) and "
                         f"{size} bytes is not a whole number of 4 KiB frames, so not a raw "
                         f"image either (force one with format='raw')")
    return "raw"
