"""Regression histories after the anomaly scenarios of the public Cosmos DB TLA+ specifications
(``AnomaliesCosmosDB``: dirty reads that a log truncation takes back, the read non-equivalencies
of the five levels, bounded staleness allowing dirty reads and not bounding writes in flight,
a failed write that becomes durable), written as exapyte histories.

Each builder returns the history and the level it must pass at; it must fail at the next
stronger level. ``python tests/checker/cosmos_histories.py DIR`` writes them as JSONL files with
an ``EXPECTED.tsv`` (the committed copies live in ``tests/checker/histories/levels/``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from level_build import LH

#: Staleness bounds the bounded-staleness scenarios are judged with: K versions, T ms.
K_VERSIONS = 0
T_MS = 0.0
#: The bound of the session scenario (its stale read is 2 versions behind).
K_SESSION = 1
T_SESSION = 1000.0


def _final(h: LH, at: float, value: str, index: list[int] | int) -> LH:
    h.heal(at)
    for n, replica in enumerate(("n1", "n2", "n3")):
        h.op(90 + n, "read", "k1", None, at + 10 + n, at + 12 + n, session=f"final-{replica}",
             level="eventual", result=value, index=index, replica=replica)
    return h


def dirty_read_truncated() -> LH:
    """StrongConsistencyDirtyReads: an eventual read sees v1 from the old leader's log (epoch 1,
    index 1); the log is truncated and the new leader commits v2 at (2, 1). v1 was written (its
    write timed out), so eventual holds; no prefix of the commit order holds v1: not consistent
    prefix."""
    h = (LH().op(0, "write", "k1", "v1", 0, 50, type="info", session="a")
         .op(1, "read", "k1", None, 10, 12, session="b", level="eventual", result="v1", index=[1, 1], replica="n2")
         .op(2, "write", "k1", "v2", 60, 70, session="c", index=[2, 1], replica="n1")
         .op(1, "read", "k1", None, 80, 82, session="b", level="eventual", result="v2", index=[2, 1], replica="n2"))
    return _final(h, 90, "v2", [2, 1])


def prefix_read_of_nothing() -> LH:
    """ReadNonEquivalencies, the consistent-prefix read: after writing v1 and v2, the session reads
    from read index 0 and finds nothing. A prefix (the empty one), so consistent prefix; not its
    own writes: not session."""
    h = (LH().op(0, "write", "k1", "v1", 0, 10, session="a", index=1, replica="n1")
         .op(0, "write", "k1", "v2", 12, 20, session="a", index=2, replica="n1")
         .op(0, "read", "k1", None, 30, 32, session="a", level="consistent_prefix", result=None, index=0,
             replica="n3"))
    return _final(h, 40, "v2", 2)


def session_token_read() -> LH:
    """ReadNonEquivalencies, the session read: the writer's session (token 2) reads v2; a new
    session, with no token, reads from read index 0 and finds nothing, two versions behind. Every
    session guarantee holds; with K=1 bounded staleness does not."""
    h = (LH().op(0, "write", "k1", "v1", 0, 10, session="a", index=1, replica="n1")
         .op(0, "write", "k1", "v2", 12, 20, session="a", index=2, replica="n1")
         .op(0, "read", "k1", None, 30, 32, session="a", level="session", result="v2", index=2, replica="n2")
         .op(1, "read", "k1", None, 30, 32, session="b", level="session", result=None, index=0, replica="n3"))
    return _final(h, 40, "v2", 2)


def bounded_dirty_read() -> LH:
    """BoundedStalenessAllowsDirtyReads: a bounded-staleness read sees v1 at index 1 before it is
    committed; a strong read after it still finds nothing. Within K=0 and T=0 (nothing was
    acknowledged yet), but no linearization explains both reads: not strong."""
    h = (LH().op(0, "write", "k1", "v1", 0, 50, session="a", index=1, replica="n1")
         .op(1, "read", "k1", None, 10, 12, session="b", level="bounded_staleness", result="v1", index=1,
             replica="n1")
         .op(2, "read", "k1", None, 20, 22, session="c", level="strong", result=None, index=0, replica="n1"))
    return _final(h, 60, "v1", 1)


def bounded_writes_in_flight() -> LH:
    """BoundedStalenessAtStrongConsistencyDoesNotEnforceBounds: while v1, v2, v3 are in flight,
    one bounded read sees v3 and a later one v1. Nothing had been acknowledged, so both are within
    any bound and each is a prefix; a strong read at the end sees v3, and no linearization
    puts v3 both before and after v1: not strong."""
    h = LH()
    for n, value in enumerate(("v1", "v2", "v3")):
        h.op(n, "write", "k1", value, n, 50 + n, session=f"w{n}", index=n + 1, replica="n1")
    h.op(3, "read", "k1", None, 10, 12, session="d", level="bounded_staleness", result="v3", index=3, replica="n2")
    h.op(4, "read", "k1", None, 20, 22, session="e", level="bounded_staleness", result="v1", index=1, replica="n3")
    h.op(5, "read", "k1", None, 60, 62, session="f", level="strong", result="v3", index=3, replica="n1")
    return _final(h, 70, "v3", 3)


def durable_timed_out_write() -> LH:
    """DurableDirtyRead: a write the client saw fail (here: time out, exapyte's ``info``) becomes
    durable, and a strong read sees it. Linearizable: an op of unknown outcome may take effect."""
    h = (LH().op(0, "write", "k1", "v1", 0, 50, type="info", session="a")
         .op(1, "read", "k1", None, 60, 62, session="b", level="strong", result="v1", index=1, replica="n1"))
    return _final(h, 70, "v1", 1)


def refused_write_seen() -> LH:
    """The same with a *refused* write (``fail``, ``not_leader``): in exapyte's contract a refusal
    applied nothing, so a read that sees it shows a value never written: not even eventual."""
    h = (LH().op(0, "write", "k1", "v1", 0, 50, type="fail", error="not_leader", session="a")
         .op(1, "read", "k1", None, 60, 62, session="b", level="strong", result="v1", index=1, replica="n1"))
    return _final(h, 70, "v1", 1)


#: file -> (builder, the level it passes at or "-", K, T)
SCENARIOS: dict[str, tuple[Callable[[], LH], str, int | None, float | None]] = {
    "cosmos-dirty-read-truncated.jsonl": (dirty_read_truncated, "eventual", None, None),
    "cosmos-prefix-read-of-nothing.jsonl": (prefix_read_of_nothing, "consistent_prefix", None, None),
    "cosmos-session-token-read.jsonl": (session_token_read, "session", K_SESSION, T_SESSION),
    "cosmos-bounded-dirty-read.jsonl": (bounded_dirty_read, "bounded_staleness", K_VERSIONS, T_MS),
    "cosmos-bounded-writes-in-flight.jsonl": (bounded_writes_in_flight, "bounded_staleness", K_VERSIONS, T_MS),
    "cosmos-durable-timed-out-write.jsonl": (durable_timed_out_write, "strong", K_VERSIONS, T_MS),
    "exapyte-refused-write-seen.jsonl": (refused_write_seen, "-", None, None),
}


def write_all(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rows = ["# file\tpasses\tstaleness_versions\tstaleness_ms\tscenario"]
    for name, (build, passes, k, t) in SCENARIOS.items():
        build().write_jsonl(directory / name)
        scenario = (build.__doc__ or "").split(":")[0].strip()
        rows.append("\t".join([name, passes, "" if k is None else str(k), "" if t is None else f"{t:g}", scenario]))
    (directory / "EXPECTED.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_all(Path(sys.argv[1]))
