"""``python -m exapyte``: the same command line as ``python main.py``."""

import sys

from exapyte.cli import main

sys.exit(main())
