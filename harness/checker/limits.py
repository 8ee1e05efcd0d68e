"""Every limit of the checker, named in one place (units last in the name)."""

from __future__ import annotations

#: Budget of ``python -m harness check`` per file when ``--timeout`` is not given.
CHECK_TIMEOUT_S_DEFAULT = 60.0

#: The search reads the clock once per this many backtracks (a power of two minus one, used as a mask).
DEADLINE_CHECK_MASK = 255

#: Operations drawn in one HTML timeline; a larger partition is drawn as a window around the failing op.
VISUALIZE_OPS_MAX = 1_500

#: Time allowed to build one HTML timeline (replaying the partial linearization, laying out bars).
VISUALIZE_TIME_S_MAX = 5.0

#: Largest HTML file written; past this the timeline is cut to fewer operations.
VISUALIZE_HTML_BYTES_MAX = 8 * 1024 * 1024

#: Notes a reader keeps about anomalies in one history (the rest are counted, not kept).
HISTORY_NOTES_MAX = 20
