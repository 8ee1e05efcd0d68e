"""``python -m exapyte.sim``: see :mod:`exapyte.sim.cli`."""

from __future__ import annotations

import sys

from exapyte.sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
