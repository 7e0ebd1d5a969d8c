"""``python -m pgwalk image IMAGE --cr3 ADDR [--levels 4|5]
[--csv FILE | --npz FILE] [--start A --end B] [--page-offset A]
[--vmalloc-start A] [--vmemmap-start A] [--fixmap-start A] [--format raw]``:
print the image's page tables as the kernel's page_tables dump (with its
x86-64 address markers), or write its mappings.  A root table that is empty
or whose entries all are bad (not a CR3 of this image) is a warning and
exit status 1."""

import sys

import numpy as np

from .physimage import ImageError, PhysImage


NAME = "image"
HELP = "walk the page tables in a physical-memory image"


def add_arguments(im):
    """The ``image`` command's arguments, on its subparser ``im``."""
    im.add_argument("image", help="physical-memory dump: raw, ELF core, LiME, kdump-compressed or "
                                  "flattened makedumpfile (named from its content)")
    im.add_argument("--format", choices=("raw",), help="read the file as a raw image whatever it holds")
    im.add_argument("--cr3", required=True, type=lambda s: int(s, 0), help="CR3 (PCID bits are masked)")
    im.add_argument("--levels", type=int, choices=(4, 5), default=4)
    im.add_argument("--start", type=lambda s: int(s, 0))
    im.add_argument("--end", type=lambda s: int(s, 0))
    for opt, what in (("page-offset", "page_offset_base (Low Kernel Mapping)"),
                      ("vmalloc-start", "vmalloc_base (vmalloc() Area)"),
                      ("vmemmap-start", "vmemmap_base (Vmemmap)"),
                      ("fixmap-start", "FIXADDR_START (Fixmap Area; omitted without it)")):
        im.add_argument(f"--{opt}", type=lambda s: int(s, 0),
                        help=f"the dump's marker for {what}, as the booted kernel has it")
    out = im.add_mutually_exclusive_group()
    out.add_argument("--csv", help="write the mappings (va, pa, size, level, entry) as CSV")
    out.add_argument("--npz", help="write the mappings and the non-present entries as NPZ")


def run(a):
    """Run the ``image`` command on parsed arguments ``a``; the exit status."""
    try:
        mm = PhysImage.open(a.image, format=a.format).mm(a.cr3, a.levels)
        nonzero, good = mm.root_report()
    except (OSError, ImageError, ValueError) as e:
        print(f"pgwalk: {e}", file=sys.stderr)
        return 2
    garbage = not good
    if garbage:
        print(f"pgwalk: warning: the root table at {a.cr3 & ~0xFFF:#x} "
              + ("is empty" if not nonzero else
                 f"has {nonzero} non-zero entr{'y' if nonzero == 1 else 'ies'}, none a link a walk can "
                 f"follow (bad, or outside the image)")
              + f": not a CR3 of this {mm.image.format} image?", file=sys.stderr)
    if a.csv or a.npz:
        maps, other = mm.mappings(a.start, a.end, nonpresent=True)
        if a.csv:
            with open(a.csv, "w") as f:
                f.write("va,pa,size,level,entry\n")
                for m in maps:
                    f.write(f"{int(m['va']):#x},{int(m['pa']):#x},{int(m['size'])},{int(m['level'])},"
                            f"{int(m['entry']):#x}\n")
        else:
            np.savez(a.npz, mappings=maps, nonpresent=other)
    else:
        layout = {k: v for k, v in (("page_offset", a.page_offset), ("vmalloc_start", a.vmalloc_start),
                                    ("vmemmap_start", a.vmemmap_start), ("fixmap_start", a.fixmap_start))
                  if v is not None}
        if layout and (a.start is not None or a.end is not None):
            print("pgwalk: the marker options apply to the whole dump (no --start/--end)", file=sys.stderr)
            return 2
        sys.stdout.write(mm.ptdump(a.start, a.end, **layout))
    count, _ = mm.bad_entries
    if count:
        print(f"pgwalk: {count} bad entr{'y' if count == 1 else 'ies'} skipped", file=sys.stderr)
    return 1 if garbage else 0

