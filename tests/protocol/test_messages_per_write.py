"""Messages per committed write: one write at a time on five nodes, every message a core hands
its host counted, against each protocol's documented count (``DOCUMENTED_COUNTS`` in
``exapyte/demos/consensus.py``, quoted by docs/raft.md, docs/multipaxos.md and docs/zab.md).

No tick runs while the writes are counted, so no heartbeat leaves: what is counted is exactly
what the writes cost. Raft and Multi-Paxos announce a commit with nothing of their own (the
next Append or Accept carries it, or the next heartbeat); ZAB sends COMMIT to every follower.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from exapyte.demos.consensus import DOCUMENTED_COUNTS
from tests.protocol.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
FIVE = ("n1", "n2", "n3", "n4", "n5")
WRITES = 6
DOCS = {"raft": "docs/raft.md", "multipaxos": "docs/multipaxos.md", "zab": "docs/zab.md"}
# the kinds that carry a write, per protocol, and how many of each one write sends per follower
WRITE_KINDS = {
    "raft": {"raft.append": 1, "raft.append_resp": 1},
    "multipaxos": {"paxos.accept": 1, "paxos.accepted": 1},
    "zab": {"zab.proposal": 1, "zab.ack": 1, "zab.commit": 1},
}


def _tag(m: Any) -> str:
    return str(type(m).__struct_config__.tag)


def _steady_cluster(protocol: str, seed: int) -> tuple[Cluster, str]:
    c = Cluster(FIVE, seed=seed, protocol=protocol)
    leader = c.wait_leader()
    c.run(5)  # every follower caught up and told every commit
    return c, leader


def _count_writes(c: Cluster, leader: str, writes: int) -> Counter[str]:
    sent: Counter[str] = Counter()
    enqueue = c.enqueue

    def spy(m: Any) -> None:
        sent[_tag(m)] += 1
        enqueue(m)

    c.enqueue = spy  # type: ignore[method-assign]
    try:
        for i in range(writes):
            assert c.propose(leader, f"k{i}=v{i}".encode()) is not None
            c.stabilize()
            assert c.core(leader).log.committed == c.core(leader).log.last_index
    finally:
        c.enqueue = enqueue  # type: ignore[method-assign]
    return sent


@pytest.mark.parametrize("protocol", sorted(DOCUMENTED_COUNTS))
def test_one_write_on_five_nodes_costs_the_documented_count(protocol: str) -> None:
    _, count = DOCUMENTED_COUNTS[protocol]
    c, leader = _steady_cluster(protocol, seed=5)
    sent = _count_writes(c, leader, WRITES)
    followers = len(FIVE) - 1
    expected = {kind: per * followers * WRITES for kind, per in WRITE_KINDS[protocol].items()}
    assert dict(sent) == expected, (protocol, dict(sent))
    assert sum(sent.values()) == count(len(FIVE)) * WRITES


@pytest.mark.parametrize("protocol", ["raft", "multipaxos"])
def test_followers_learn_a_commit_with_the_next_heartbeat_and_not_before(protocol: str) -> None:
    # Raft §5.3 / PMS §2.3: no message announces the commit; the next heartbeat carries it.
    c, leader = _steady_cluster(protocol, seed=6)
    index, _ = c.put("last", "write")
    assert c.core(leader).log.committed >= index
    followers = [n for n in FIVE if n != leader]
    for n in followers:
        assert c.core(n).log.committed < index  # holds it (accepted), not yet committed
        assert "last" not in c.hosts[n].kv.data
    c.run(1)
    for n in followers:
        assert c.core(n).log.committed >= index
        assert c.hosts[n].kv.data["last"] == "write"


def test_zab_every_follower_is_sent_commit_even_before_it_acknowledged() -> None:
    # Zab §IV-C: on a quorum of ACKs, COMMIT to all followers. n5's ACK is held back until
    # the entry commits on the others' ACKs; n5 is sent COMMIT all the same, after the PROPOSAL.
    c, leader = _steady_cluster("zab", seed=7)
    late = next(n for n in reversed(FIVE) if n != leader)
    index, _ = c.propose(leader, b"k=v") or (0, 0)
    assert index
    for _ in range(50):
        if not c.deliver(where=lambda m: not (m.frm == late and _tag(m) == "zab.ack")):
            break
    assert c.core(leader).log.committed >= index
    to_late = [_tag(m) for m in c.queue if m.to == late]
    assert to_late == [] or set(to_late) <= {"zab.commit"}
    assert c.core(late).log.committed >= index  # the COMMIT was delivered
    assert c.hosts[late].kv.data == c.hosts[leader].kv.data
    held = [m for m in c.queue if m.frm == late and _tag(m) == "zab.ack"]
    assert held  # its ACK never reached the leader


@pytest.mark.parametrize("protocol", sorted(DOCUMENTED_COUNTS))
def test_the_docs_quote_the_documented_count(protocol: str) -> None:
    formula, _ = DOCUMENTED_COUNTS[protocol]
    text = (ROOT / DOCS[protocol]).read_text()
    section = text[text.index("## Messages per write"):]
    assert formula in " ".join(section.split()), (DOCS[protocol], formula)
    assert formula in " ".join((ROOT / "docs" / "demos.md").read_text().split())
