"""Property tests: random fault schedules over 3 and 5 Raft cores.

Hypothesis generates a schedule of partitions, message drops/duplicates/reorders, crashes and
restarts, ticks, proposals and reads. The cluster fixture checks election safety, log matching,
leader completeness and state-machine safety after every delivery. At the end the faults heal,
every node restarts, and every acknowledged write (committed and applied on the leader that
proposed it) must be in every node's state; every answered read must have seen every write
acknowledged before the read was issued (linearizable reads), and every read ended exactly once,
answered or failed, unless the leader it was given to crashed first.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exapyte.errors import NotLeader
from exapyte.protocol.types import Role

from .cluster import Cluster

OPS = st.one_of(
    st.tuples(st.just("tick"), st.integers(1, 30)),
    st.tuples(st.just("deliver"), st.integers(1, 40)),
    st.tuples(st.just("propose"), st.integers(1, 4)),
    st.tuples(st.just("propose"), st.integers(1, 4)),
    st.tuples(st.just("read"), st.integers(0, 0)),
    st.tuples(st.just("partition"), st.integers(1, 30)),
    st.tuples(st.just("heal"), st.just(0)),
    st.tuples(st.just("crash"), st.integers(0, 4)),
    st.tuples(st.just("restart"), st.integers(0, 4)),
    st.tuples(st.just("faults"), st.integers(0, 7)),
    st.tuples(st.just("snapshot"), st.integers(0, 4)),
)


def run_schedule(n: int, seed: int, ops: list[tuple[str, int]], **config: Any) -> None:
    ids = tuple(f"n{i + 1}" for i in range(n))
    c = Cluster(ids, seed=seed, **config)
    counter = 0
    reads: dict[bytes, set[str]] = {}  # request id -> keys acknowledged before the read began
    read_at: dict[bytes, str] = {}  # request id -> the leader it was given to
    lost: set[bytes] = set()  # reads whose leader crashed before they ended (the client times out)

    def ends(request_id: bytes) -> int:
        answered = sum(1 for _, rs, _ in c.read_answers if rs.request_id == request_id)
        return answered + c.failed_reads.count(request_id)

    def acked_keys() -> set[str]:
        return {w.decode().partition("=")[0] for w in c.acked}

    for op, arg in ops:
        if op == "tick":
            for _ in range(arg):
                c.tick()
                c.deliver(max_messages=3 * n)
        elif op == "deliver":
            c.deliver(max_messages=arg)
        elif op == "propose":
            leader = c.leader()
            if leader is not None:
                for _ in range(arg):
                    counter += 1
                    c.propose(leader, f"w{counter}=x".encode())
        elif op == "read":
            leader = c.leader()
            if leader is not None:
                counter += 1
                rid = f"r{counter}".encode()
                try:
                    c.core(leader).read(rid)
                except NotLeader:
                    continue
                reads[rid] = acked_keys()
                read_at[rid] = leader
                c.drive_all()
        elif op == "partition":
            c.heal()
            group = [ids[i] for i in range(n) if arg >> i & 1]
            rest = [x for x in ids if x not in group]
            if group and rest:
                c.partition(group, rest)
        elif op == "heal":
            c.heal()
        elif op == "crash":
            node = ids[arg % n]
            down = len(ids) - len(c.alive)
            if node in c.alive and down < (n - 1) // 2 + 1:
                lost.update(r for r, at in read_at.items() if at == node and not ends(r))
                c.crash(node)
        elif op == "restart":
            node = ids[arg % n]
            if node not in c.alive:
                c.restart(node)
        elif op == "faults":
            c.drop_rate = 0.2 if arg & 1 else 0.0
            c.dup_rate = 0.2 if arg & 2 else 0.0
            c.reorder = bool(arg & 4)
        elif op == "snapshot":
            node = ids[arg % n]
            if node in c.alive and c.core(node).log.applied > c.core(node).log.offset:
                c.snapshot(node)

    # heal everything and let the cluster converge
    c.heal()
    for node in ids:
        if node not in c.alive:
            c.restart(node)
    leader = c.wait_leader(max_ticks=400)
    for _ in range(200):
        c.tick()
        c.stabilize()
        leader = c.leader() or c.wait_leader()
        target = c.core(leader).log.committed
        if all(c.core(x).log.applied == target for x in ids) and c.core(leader).role is Role.LEADER:
            break
    else:
        raise AssertionError("cluster did not converge: " + c.describe())
    final = acked_keys()
    for node in ids:
        missing = final - set(c.hosts[node].kv.data)
        assert not missing, f"{node} lost acknowledged writes {sorted(missing)}: {c.describe()}"
    for node, rs, data in c.read_answers:
        required = reads.get(rs.request_id, set())
        missing = required - set(data)
        assert not missing, f"read {rs.request_id!r} on {node} missed {sorted(missing)}"
    # Every read ended exactly once, answered or failed, unless its leader crashed first (an
    # election timeout is the longest a read may wait).
    c.run(10)
    for request_id in reads:
        if request_id not in lost:
            assert ends(request_id) == 1, f"read {request_id!r} ended {ends(request_id)} times"


COMMON = dict(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings(max_examples=150, **COMMON)  # type: ignore[arg-type]
@given(seed=st.integers(0, 10_000), ops=st.lists(OPS, min_size=40, max_size=120))
def test_random_faults_three_nodes(seed: int, ops: list[tuple[str, int]]) -> None:
    run_schedule(3, seed, ops)


@settings(max_examples=100, **COMMON)  # type: ignore[arg-type]
@given(seed=st.integers(0, 10_000), ops=st.lists(OPS, min_size=40, max_size=120))
def test_random_faults_five_nodes(seed: int, ops: list[tuple[str, int]]) -> None:
    run_schedule(5, seed, ops)


@settings(max_examples=60, **COMMON)  # type: ignore[arg-type]
@given(seed=st.integers(0, 10_000), ops=st.lists(OPS, min_size=40, max_size=100))
def test_random_faults_without_pre_vote_and_check_quorum(
    seed: int, ops: list[tuple[str, int]]
) -> None:
    run_schedule(3, seed, ops, pre_vote=False, check_quorum=False, max_inflight_msgs=4,
                 max_entries_per_msg=3)
