"""``python -m tests.mutants``: see :mod:`tests.mutants.run`."""

from __future__ import annotations

import sys

from tests.mutants.run import main

sys.exit(main())
