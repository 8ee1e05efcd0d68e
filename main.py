#!/usr/bin/env python3
"""exapyte's command line. Run ``python main.py --help``."""

import sys

from exapyte.cli import main

if __name__ == "__main__":
    sys.exit(main())
