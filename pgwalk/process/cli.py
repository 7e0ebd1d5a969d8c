"""``python -m pgwalk snapshot PID --out FILE``: take a model snapshot of a
live process (``MM.from_process``: its VMAs, present pages, swap entries,
guard markers and PMD-mapped THPs) and write it as a compact NPZ that
``pgwalk.MM.load(FILE)`` reads back."""

import sys

from .mm import MM

NAME = "snapshot"
HELP = "snapshot a live process's VMAs and page tables into a file"


def add_arguments(p):
    """The ``snapshot`` command's arguments, on its subparser ``p``."""
    p.add_argument("pid", type=int, help="the process to snapshot")
    p.add_argument("--out", required=True, help="the NPZ file to write (MM.load reads it)")


def run(a):
    """Run the ``snapshot`` command on parsed arguments ``a``; the exit status."""
    try:
        mm = MM.from_process(a.pid)
        mm.save(a.out)
    except (OSError, ValueError) as e:
        print(f"pgwalk: {e}", file=sys.stderr)
        return 2
    info = mm.snapshot_info
    print(f"pid {a.pid}: {len(mm.vmas)} VMAs, {mm.nr_tables} page tables, {info['thp']} PMD-mapped THPs, "
          f"PFNs {'real' if info['real_pfns'] else 'synthetic'}, read in {info['seconds']:.3f} s -> {a.out}")
    for note in info["notes"]:
        print(f"pgwalk: {note}", file=sys.stderr)
    return 0
