"""Leader churn under load: a real three-node cluster keeps serving through five leader changes.

Client threads saturate the cluster with puts and strong gets while the leadership is handed from
voter to voter five times. After each change, writes and strong reads must resume within a few
election timeouts, and no request may wait past its deadline: each returns or raises within it.
Nothing here depends on how fast the machine is, only on the protocol's own time (election
timeouts) and on the clients' deadlines.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exapyte.errors import ExapyteError, RequestTimeout
from exapyte.runtime.cluster import LocalCluster

pytestmark = pytest.mark.integration

TICK_MS = 10
ELECTION_TIMEOUT_TICKS = 20
ELECTION_TIMEOUT_S = TICK_MS * ELECTION_TIMEOUT_TICKS / 1000
DEADLINE_S = 2.0  # every request's deadline
GRACE_S = 0.5  # a thread of this process may be scheduled that late on a loaded machine
# Writes and strong reads resume within this many election timeouts of a leader change: the new
# leader commits its first entry within one round trip and clients find it within a redirect or
# two; the rest is room for a machine shared with other work.
RESUME_ELECTION_TIMEOUTS = 10
CHANGES = 5
WRITERS = 4
READERS = 4
KEYS = 16
FORM_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Op:
    kind: str  # "put" | "get"
    started: float
    ended: float
    outcome: str  # "ok" | "timeout" | an error's name


class Load:
    """Client threads, each with its own client, recording every request they make."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.ops: list[Op] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(kind, i), daemon=True)
            for kind, count in (("put", WRITERS), ("get", READERS))
            for i in range(count)
        ]

    def _run(self, kind: str, index: int) -> None:
        rng = random.Random(f"{kind}{index}")
        with self.cluster.client(timeout_s=DEADLINE_S) as client:
            n = 0
            while not self.stop.is_set():
                key = f"k{rng.randrange(KEYS)}"
                started = time.monotonic()
                try:
                    if kind == "put":
                        n += 1
                        client.put(key, f"{kind}{index}-{n}")
                    else:
                        client.get(key)  # strong, the client's default
                    outcome = "ok"
                except RequestTimeout:
                    outcome = "timeout"
                except ExapyteError as exc:
                    outcome = type(exc).__name__
                with self.lock:
                    self.ops.append(Op(kind, started, time.monotonic(), outcome))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=DEADLINE_S + 5)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not finish"

    def first_ok_after(self, kind: str, since: float) -> float | None:
        with self.lock:
            ends = [op.ended for op in self.ops
                    if op.kind == kind and op.outcome == "ok" and op.started >= since]
        return min(ends, default=None)


def leader_of(cluster: LocalCluster, admin: Any) -> tuple[str, int] | None:
    """The leader of the highest term any node reports, with that term."""
    best: tuple[int, str] | None = None
    for node_id in cluster.node_ids:
        try:
            status = admin.status(cluster.endpoint(node_id), timeout_s=0.5)
        except ExapyteError:
            continue
        if status.get("role") == "leader" and (best is None or status["term"] > best[0]):
            best = (status["term"], node_id)
    return (best[1], best[0]) if best else None


def wait_until(predicate: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return None


@pytest.fixture
def cluster(write_config: Any, tmp_path: Path) -> Any:
    path = write_config(
        ["n1", "n2", "n3"],
        network={"tick_ms": TICK_MS},
        consensus={"election_timeout_ticks": ELECTION_TIMEOUT_TICKS, "heartbeat_ticks": 2},
        storage={"backend": "memory"},
    )
    c = LocalCluster(path, tmp_path / "run")
    c.start()
    yield c
    c.stop()


def test_writes_and_strong_reads_resume_after_each_of_five_leader_changes(
    cluster: LocalCluster,
) -> None:
    with cluster.admin_client(timeout_s=DEADLINE_S) as admin:
        formed = wait_until(lambda: leader_of(cluster, admin), FORM_TIMEOUT_S)
        assert formed, "the cluster elected no leader: " + " | ".join(
            cluster.log_tail(n, 5) for n in cluster.node_ids
        )
        with Load(cluster) as load:
            assert wait_until(lambda: load.first_ok_after("put", 0.0), FORM_TIMEOUT_S)
            assert wait_until(lambda: load.first_ok_after("get", 0.0), FORM_TIMEOUT_S)
            resumed_s: list[float] = []
            for change in range(CHANGES):
                old, term = leader_of(cluster, admin) or formed
                target = next(n for n in cluster.node_ids[::-1] if n != old)
                changed = None
                for _ in range(5):  # a transfer the leader abandons (target behind) is retried
                    try:
                        admin.transfer_leader(target)
                    except ExapyteError:
                        pass
                    changed = wait_until(
                        lambda: (now := leader_of(cluster, admin)) and now[1] > term and now,
                        20 * ELECTION_TIMEOUT_S,
                    )
                    if changed:
                        break
                assert changed, f"change {change + 1}: leadership never left {old} (term {term})"
                since = time.monotonic()
                limit = RESUME_ELECTION_TIMEOUTS * ELECTION_TIMEOUT_S
                put_at = wait_until(lambda: load.first_ok_after("put", since), limit + DEADLINE_S)
                get_at = wait_until(lambda: load.first_ok_after("get", since), limit + DEADLINE_S)
                assert put_at is not None, f"change {change + 1}: no write succeeded after it"
                assert get_at is not None, f"change {change + 1}: no strong read succeeded after it"
                resumed_s.append(max(put_at, get_at) - since)
                assert resumed_s[-1] <= limit, (
                    f"change {change + 1} ({old} -> {changed[0]}): writes and reads resumed only "
                    f"after {resumed_s[-1]:.2f} s (limit {limit:.1f} s)"
                )
    late = [op for op in load.ops if op.ended - op.started > DEADLINE_S + GRACE_S]
    assert not late, f"{len(late)} request(s) waited past their deadline, e.g. {late[:3]}"
    refused = [op for op in load.ops if op.outcome not in ("ok", "timeout")]
    assert not refused, f"requests refused for good: {refused[:3]}"
    for kind in ("put", "get"):
        assert sum(1 for op in load.ops if op.kind == kind and op.outcome == "ok") >= CHANGES
