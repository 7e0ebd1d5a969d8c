"""``python -m pgwalk``: the command line (see ``pgwalk.image.cli``)."""

import sys

from .image.cli import main

sys.exit(main())
