"""``python -m pgwalk image IMAGE [--cr3 ADDR [--levels 4|5]]
[--csv FILE | --npz FILE] [--start A --end B] [--page-offset A]
[--vmalloc-start A] [--vmemmap-start A] [--fixmap-start A] [--format raw]``:
print the image's page tables as the kernel's page_tables dump (with its
x86-64 address markers), or write its mappings; without ``--cr3``, of the
kernel root found by scanning the image.  A root table that is empty or
whose entries all are bad (not a CR3 of this image) is a warning and exit
status 1.  ``IMAGE --roots``: list the roots found; ``IMAGE --all --out DIR
[--out-format parquet|npz]``: every root's mappings; ``--scan DUMP... --out
DIR [--scheduler ADDRESS]``: a fleet of dumps on Dask into one Parquet
dataset."""

import sys

import numpy as np

from .physimage import ImageError, PhysImage


NAME = "image"
HELP = "walk the page tables in a physical-memory image"


def add_arguments(im):
    """The ``image`` command's arguments, on its subparser ``im``."""
    im.add_argument("image", nargs="?", help="physical-memory dump: raw, ELF core, LiME, kdump-compressed or "
                                             "flattened makedumpfile (named from its content)")
    im.add_argument("--format", choices=("raw",), help="read the file as a raw image whatever it holds")
    im.add_argument("--cr3", type=lambda s: int(s, 0),
                    help="CR3 (PCID bits are masked); default: the kernel root found by scanning")
    im.add_argument("--levels", type=int, choices=(4, 5), default=None, help="paging levels (default 4 with --cr3)")
    im.add_argument("--roots", action="store_true", help="list the page-table roots found by scanning the image")
    im.add_argument("--all", action="store_true", help="write every root's mappings into --out")
    im.add_argument("--scan", nargs="+", metavar="DUMP", help="scan a fleet of dumps on Dask into --out")
    im.add_argument("--out", help="output directory (--all, --scan)")
    im.add_argument("--out-format", choices=("parquet", "npz"), default="parquet", help="--all's file format")
    im.add_argument("--scheduler", help="--scan: a Dask scheduler address (default: a local cluster)")
    im.add_argument("--workers", type=int, default=None, help="--scan: local cluster workers")
    im.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
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
    from . import roots_cli
    garbage = False
    if a.scan or a.roots or a.all or (a.image and a.cr3 is None):
        status, mm = roots_cli.run(a)
        if mm is None:
            return status
    else:
        if not a.image:
            print("pgwalk: an IMAGE is needed (or --scan DUMP...)", file=sys.stderr)
            return 2
        try:
            mm = PhysImage.open(a.image, format=a.format).mm(a.cr3, a.levels or 4)
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

