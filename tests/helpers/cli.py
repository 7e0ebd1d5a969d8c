"""Running ``python -m pgwalk ...`` from the tests: always the pgwalk the
tests import (its parent folder on PYTHONPATH) and never from the checkout's
folder, whose uncompiled ``pgwalk/`` would shadow an installed package."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pgwalk

PKG_PARENT = str(Path(pgwalk.__file__).resolve().parent.parent)


def run_pgwalk(*args, stdin=None, timeout=600):
    """``python -m pgwalk ARGS`` in a fresh interpreter, run in an empty
    folder; the completed process (text output captured)."""
    env = dict(os.environ, PYTHONPATH=PKG_PARENT)
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-m", "pgwalk", *map(str, args)], input=stdin,
                              capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
