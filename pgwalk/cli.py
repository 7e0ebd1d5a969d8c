"""The command line, ``python -m pgwalk COMMAND ...``.

Each command is a module with ``NAME``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> exit status``, listed in ``COMMANDS``; the rooms keep
their own commands (``image/cli.py``, ``walker/cli.py``, ``process/cli.py``,
``process/conformance/cli.py``)."""

import argparse

from .image import cli as image_cli
from .process import cli as snapshot_cli
from .process.conformance import cli as conformance_cli
from .walker import cli as trace_cli

COMMANDS = [image_cli, trace_cli, conformance_cli, snapshot_cli]


def main(argv=None):
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit status."""
    ap = argparse.ArgumentParser(prog="python -m pgwalk",
                                 description="pgwalk's command-line tools")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for mod in COMMANDS:
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    a = ap.parse_args(argv)
    return a.run(a)
