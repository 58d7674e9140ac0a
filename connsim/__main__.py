"""``python -m connsim``: the command line (:mod:`connsim.cli`)."""

import sys

from .cli import main

sys.exit(main())
