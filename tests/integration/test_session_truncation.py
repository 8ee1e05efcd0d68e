"""Real processes: a session token whose entry was truncated. The leader acknowledges a write at
append (known bug ``ack-before-fsync``, or ``token-after-truncate`` which has it too), its
followers are down, so the write never commits; the leader is killed and the next leader puts
other entries at that index. The session read that follows must be refused (``session_lost``)
when the replica checks the token's term; with the index-only check of ``token-after-truncate``
it is served from a state without the session's write (read-your-writes broken: the session
checker's own tests, tests/checker/test_levels_session.py, catch that history)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exapyte.errors import RequestFailed, SessionLost
from exapyte.runtime.cluster import LocalCluster
from exapyte.wire import GetOp
from tests.integration.test_raft_cluster import statuses, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _leader(cluster: LocalCluster, among: list[str]) -> str | None:
    sts = statuses(cluster)
    return next((n for n in among if sts.get(n, {}).get("role") == "leader"), None)


@pytest.mark.parametrize("bug", ["ack-before-fsync", "token-after-truncate"])
def test_a_session_read_after_its_write_was_truncated(write_config, tmp_path: Path, bug: str) -> None:
    path = write_config(
        ["n1", "n2", "n3"], network={"tick_ms": 10},
        consensus={"election_timeout_ticks": 100, "heartbeat_ticks": 5},
        unsafe={"enabled": True, "bugs": [bug]},
    )
    with LocalCluster(path, tmp_path / "run") as cluster:
        cluster.start()
        leader = wait_for(lambda: _leader(cluster, cluster.node_ids), "a leader")
        followers = [n for n in cluster.node_ids if n != leader]
        with cluster.client(timeout_s=10) as other:
            other.put("k", "before")
            for f in followers:
                with cluster.node_client(f, timeout_s=5) as fc:
                    wait_for(lambda: fc.request(GetOp("k"), consistency="eventual", follow=False).value == b"before",
                             f"{f} holding the first write")
            with cluster.client(timeout_s=5) as session:
                session.consistency = "session"
                session.get("k")  # connected, and routed to the leader
                for f in followers:  # gone: nothing the leader sends from now on reaches them
                    cluster.kill(f)
                # acknowledged at append only, before the leader's check-quorum steps it down
                session.put("k", "mine")
                token = session.session_tokens["default"]
                cluster.kill(leader)
                for f in followers:
                    cluster.restart(f)
                wait_for(lambda: _leader(cluster, followers), "a new leader")
                # the new leader's entries take the index the session's write had
                for i in range(3):
                    other.put("k", f"other{i}")
                wait_for(lambda: all(statuses(cluster)[f]["applied"] >= token.index for f in followers),
                         "the survivors past the token's index")
                try:
                    reply = session.get("k", consistency="session")
                except SessionLost as exc:
                    assert bug == "ack-before-fsync", f"the index-only check refused: {exc}"
                    assert exc.group == "default"
                    return
                except RequestFailed as exc:
                    pytest.fail(f"neither served nor refused as session_lost: {exc}")
                assert reply is not None and reply.value != b"mine", "the write was not truncated"
                assert bug == "token-after-truncate", f"a truncated token's read was served: {reply}"
