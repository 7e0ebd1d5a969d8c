"""``python -m pgwalk``: the command line (``pgwalk.cli``)."""

import sys

from .cli import main

sys.exit(main())
