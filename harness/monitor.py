"""The status monitor: each node's role and term, sampled all through a run.

Theory of operation
-------------------
One thread per node asks it for its status (``Client.status``, no redirect) every
``interval_s`` and appends ``{"time", "node", "role", "term", "leader", "commit", "groups"}`` to
``status.jsonl`` in the run folder, on the history's time line; ``groups`` holds each replica
group the node hosts (group -> role, term, leader, commit), so one sample per node covers all
its groups however many there are. A node that is killed or paused
does not answer; that sample is simply missing. The samples feed the ``election-safety``
checker (:func:`harness.checker.invariants.check_election_safety`): Raft allows at most one
leader per term, ever (Multi-Paxos one per ballot round, since a round belongs to one node), so
two nodes seen leading the same term of the same group is a violation, whatever the clients saw. Reading a node's status takes no part in consensus and changes nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["StatusMonitor", "read_samples", "sample_groups", "status_sample"]

STATUS_INTERVAL_S = 0.2
STATUS_TIMEOUT_S = 0.5
SAMPLE_GROUP_FIELDS = ("role", "term", "leader", "commit")


class StatusMonitor:
    """Samples ``endpoints`` (node id -> endpoint) into ``path`` until :meth:`stop`."""

    def __init__(self, endpoints: dict[str, str], path: str | Path, now_ns: Callable[[], int], *,
                 interval_s: float = STATUS_INTERVAL_S, credentials: Any = None) -> None:
        self.endpoints = dict(endpoints)
        self.credentials = credentials  # exapyte.security.Credentials, or None with security off
        self.path = Path(path)
        self.now_ns = now_ns
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> StatusMonitor:
        self._file = self.path.open("w", encoding="utf-8")
        for node, endpoint in sorted(self.endpoints.items()):
            t = threading.Thread(target=self._poll, args=(node, endpoint), name=f"status-{node}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _poll(self, node: str, endpoint: str) -> None:
        from exapyte.client import Client

        def fresh() -> Client:
            return Client(endpoint, timeout_s=STATUS_TIMEOUT_S, credentials=self.credentials)

        client = fresh()
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    status = client.status(timeout_s=STATUS_TIMEOUT_S)
                except Exception:  # noqa: BLE001 - down or paused: no sample; a fresh socket next time
                    client.close()
                    client = fresh()
                    continue
                sample = status_sample(self.now_ns(), node, status)
                with self._lock:
                    if self._file is not None:
                        self._file.write(json.dumps(sample, separators=(",", ":")) + "\n")
                        self._file.flush()
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(STATUS_TIMEOUT_S * 4)
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def status_sample(time_ns: int, node: str, status: dict[str, Any]) -> dict[str, Any]:
    """One line of ``status.jsonl``: the node's own role, term, leader and commit (those of its
    group ``default``; null on a node of shards), and with ``groups`` in the status, each group's
    role, term, leader and commit."""
    sample: dict[str, Any] = {"time": time_ns, "node": node, "role": status.get("role"), "term": status.get("term"),
                              "leader": status.get("leader"), "commit": status.get("commit")}
    groups = status.get("groups")
    if isinstance(groups, dict) and groups:
        sample["groups"] = {str(g): {k: st.get(k) for k in SAMPLE_GROUP_FIELDS}
                            for g, st in sorted(groups.items()) if isinstance(st, dict)}
    return sample


def sample_groups(sample: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A sample's per-group view: its ``groups``, else (samples of a single-group node, or
    written before groups existed) the top-level fields as the group ``default``."""
    groups = sample.get("groups")
    if isinstance(groups, dict) and groups:
        return groups
    return {"default": {k: sample.get(k) for k in SAMPLE_GROUP_FIELDS}}


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """The samples of a ``status.jsonl`` (a torn last line is ignored)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
