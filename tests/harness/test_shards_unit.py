"""The harness on shards, without processes: keys spread over shards, faults that name a
group's leader, per-group election safety and final leaders, the options that go into every
node's config, and the group, index and replica a keyed op records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

from exapyte.control import topology as topo
from exapyte.distribution import make_strategy
from exapyte.wire import ClientReply, ReplyCode
from harness import generator as gen
from harness.checker.invariants import check_election_safety
from harness.client import HarnessClient, RecordingClient
from harness.generator import NEMESIS, Op, Rand
from harness.monitor import sample_groups, status_sample
from harness.nemesis import LEADER_TARGET_SHARE, FaultSchedule, Nemesis, choose_fault
from harness.runner import DEFAULT_SHARDS, TestSpec, build_generator, check_cluster_options, final_group_status
from harness.workloads import ShardKeys, WorkloadOptions, register_generator

REPO = Path(__file__).resolve().parents[2]
GROUPS = {"s0000": ("n1", "n3", "n5"), "s0001": ("n4", "n1", "n5"), "s0002": ("n5", "n3", "n1"),
          "s0003": ("n4", "n2", "n5")}


@pytest.fixture
def three_region() -> nx.Graph:
    return topo.load(REPO / "topologies" / "three-region.json")


# --- keys over shards --------------------------------------------------------------------------


def test_shard_keys_go_round_robin_over_the_shards() -> None:
    strategy = make_strategy("sharded", shards=8)
    shards = tuple(strategy.shards())
    keys = ShardKeys(shards, strategy.shard_of)
    first = [keys(i) for i in range(3 * len(shards))]
    assert len(set(first)) == len(first)  # distinct names
    assert [strategy.shard_of(k) for k in first] == list(shards) * 3
    assert Counter(strategy.shard_of(k) for k in first) == {s: 3 for s in shards}
    assert all(k.startswith("r") for k in first)
    again = ShardKeys(shards, strategy.shard_of)
    assert [again(i) for i in reversed(range(len(first)))] == list(reversed(first))  # order of calls does not matter


def test_shard_keys_refuse_a_shard_no_name_falls_in() -> None:
    keys = ShardKeys(("s0000", "nowhere"), lambda k: "s0000")
    assert keys(0).startswith("r")
    with pytest.raises(ValueError, match="no key of shard 'nowhere'"):
        keys(1)


def test_the_register_workload_spreads_keys_over_shards_only_when_given_them() -> None:
    strategy = make_strategy("hierarchical", shards=2, regions=("ap", "eu", "us"))
    shards = tuple(strategy.shards())
    options = WorkloadOptions(seed=3, concurrency=5, ops_per_key=5, shards=shards, shard_of=strategy.shard_of)
    ops = [op for _, op in gen.drain(gen.clients(register_generator(options)), concurrency=5, ops_max=400)]
    keys = list(dict.fromkeys(op.key for op in ops))
    assert Counter(strategy.shard_of(k) for k in keys[:4 * len(shards)]) == {s: 4 for s in shards}
    plain = [op.key for _, op in gen.drain(gen.clients(register_generator(WorkloadOptions(seed=3, ops_per_key=5))),
                                           concurrency=5, ops_max=40)]
    assert list(dict.fromkeys(plain)) == [f"r{i}" for i in range(len(set(plain)))]  # r0, r1, ... as before


# --- options -----------------------------------------------------------------------------------


def test_spec_options_go_into_the_node_config_and_the_test_name() -> None:
    spec = TestSpec(topology="three-region")
    assert spec.config_overrides() == {"consensus": {"protocol": "raft"},
                                       "distribution": {"strategy": "centralized", "shards": 1}}
    assert spec.test_name() == "register-three-region" and spec.resolved_ops_per_key(1) == 200
    sharded = TestSpec(topology="three-region", protocol="multipaxos", distribution="sharded", replication_factor=2)
    assert sharded.resolved_shards() == DEFAULT_SHARDS
    assert sharded.config_overrides() == {"consensus": {"protocol": "multipaxos"}, "distribution": {
        "strategy": "sharded", "shards": DEFAULT_SHARDS, "replication_factor": 2}}
    assert sharded.test_name() == f"register-three-region-multipaxos-sharded{DEFAULT_SHARDS}"
    assert sharded.to_dict()["shards"] == DEFAULT_SHARDS


def test_ops_per_key_shrink_with_shards_so_each_shard_gets_keys() -> None:
    spec = TestSpec(topology="three-region", distribution="sharded", time_s=60.0, rate=100.0)
    per_key = spec.resolved_ops_per_key(8)
    assert 10 <= per_key < 200
    assert spec.resolved_ops_per_key(24) < per_key
    assert TestSpec(topology="x", ops_per_key=7).resolved_ops_per_key(8) == 7  # given: kept


@pytest.mark.parametrize(("options", "message"), [
    ({"protocol": "paxos-made-up"}, "unknown protocol 'paxos-made-up'; allowed: raft"),
    ({"distribution": "scattered"}, "unknown distribution 'scattered'"),
    ({"shards": 4}, "4 shards need --distribution sharded or hierarchical"),
    ({"distribution": "sharded", "shards": 0}, "shards must be at least 1"),
    ({"distribution": "sharded", "replication_factor": 0}, "replication factor must be at least 1"),
])
def test_cluster_options_are_refused_before_anything_starts(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_cluster_options(TestSpec(topology="three-region", **options))


# --- faults that name a leader -----------------------------------------------------------------


def test_without_groups_faults_are_those_of_a_centralized_run(three_region: nx.Graph) -> None:
    for kind in ("kill", "pause", "clock", "transfer"):
        for seed in range(20):
            plain = choose_fault(three_region, kind, Rand.seeded(seed))
            assert choose_fault(three_region, kind, Rand.seeded(seed), {"default": ("n1", "n2")}) == plain
            assert "group" not in plain[0] and "target" not in plain[0]


def test_with_groups_a_transfer_hands_a_groups_leadership_to_one_of_its_voters(three_region: nx.Graph) -> None:
    rand = Rand.seeded(4)
    seen = set()
    for _ in range(40):
        fault, rand = choose_fault(three_region, "transfer", rand, GROUPS)
        assert fault["to"] in GROUPS[fault["group"]]
        assert fault["description"] == f"leadership of {fault['group']} to {fault['to']}"
        seen.add(fault["group"])
    assert seen == set(GROUPS)


def test_with_groups_about_half_the_process_faults_hit_a_groups_leader(three_region: nx.Graph) -> None:
    for kind in ("kill", "pause", "clock"):
        rand = Rand.seeded(9)
        aimed = 0
        for _ in range(200):
            fault, rand = choose_fault(three_region, kind, rand, GROUPS)
            if fault.get("target") == "leader":
                aimed += 1
                assert fault["group"] in GROUPS and fault["nodes"] == []
                assert f"{fault['group']}'s leader" in fault["description"]
            else:
                assert fault["nodes"] and "group" not in fault
        assert abs(aimed / 200 - LEADER_TARGET_SHARE) < 0.15, (kind, aimed)
    assert choose_fault(three_region, "kill", Rand.seeded(5), GROUPS) == choose_fault(three_region, "kill",
                                                                                      Rand.seeded(5), GROUPS)


class LeaderDb:
    def __init__(self, leaders: dict[str, str]) -> None:
        self._leaders = leaders
        self.calls: list[tuple] = []

    def leaders(self) -> dict[str, str]:
        return dict(self._leaders)

    def groups(self) -> dict[str, tuple[str, ...]]:
        return GROUPS

    def kill(self, node: str) -> None:
        self.calls.append(("kill", node))

    def start_node(self, node: str) -> None:
        self.calls.append(("start_node", node))

    def transfer_leader(self, to: str, group: str = "default") -> dict:
        self.calls.append(("transfer_leader", to, group))
        return {"result": "started", "from": "n4", "group": group}


def test_a_leader_fault_hits_the_leader_the_nodes_report_when_it_starts() -> None:
    db = LeaderDb({"s0001": "n4"})
    nemesis = Nemesis(db)  # type: ignore[arg-type]
    fault = {"kind": "kill", "nodes": [], "description": "kill s0001's leader", "target": "leader", "group": "s0001"}
    kind, value = nemesis.invoke(Op(f="start-kill", value=fault, process=NEMESIS))
    assert kind == "info" and value["nodes"] == ["n4"] and value["leader_known"] is True
    assert value["description"] == "kill s0001's leader n4"
    nemesis.invoke(Op(f="stop-kill", value=fault, process=NEMESIS))  # the unresolved value, as scheduled
    assert db.calls == [("kill", "n4"), ("start_node", "n4")]
    # no leader known (an election): the group's first voter, and the value says so
    db2 = LeaderDb({})
    _, value = Nemesis(db2).invoke(Op(f="start-kill", value=fault | {"group": "s0003"}, process=NEMESIS))  # type: ignore[arg-type]
    assert value["nodes"] == ["n4"] and value["leader_known"] is False and "no leader known" in value["description"]
    transfer = {"kind": "transfer", "to": "n1", "group": "s0001", "description": "leadership of s0001 to n1"}
    _, value = Nemesis(db).invoke(Op(f="start-transfer", value=transfer, process=NEMESIS))  # type: ignore[arg-type]
    assert db.calls[-1] == ("transfer_leader", "n1", "s0001") and value["applied"]["group"] == "s0001"


def test_the_fault_schedule_passes_its_groups_to_the_faults(three_region: nx.Graph) -> None:
    schedule = FaultSchedule(three_region, ("transfer",), 1_000_000_000, Rand.seeded(2), groups=GROUPS)
    ops = [op for _, op in gen.drain(gen.nemesis(gen.time_limit(20.0, schedule)), concurrency=1)
           if op.f == "start-transfer"]
    assert ops and all(op.value["group"] in GROUPS for op in ops)


def test_the_generator_of_a_sharded_run_spreads_keys_and_aims_faults_at_groups(three_region: nx.Graph) -> None:
    strategy = make_strategy("sharded", shards=4)
    groups = {s: GROUPS[s] for s in strategy.shards()}
    spec = TestSpec(topology="three-region", distribution="sharded", shards=4, nemesis=("transfer",), time_s=30.0,
                    ops_per_key=5, nemesis_interval_s=1.0)
    ops = [op for _, op in gen.drain(build_generator(spec, three_region, groups, strategy.shard_of), concurrency=5)]
    keys = list(dict.fromkeys(op.key for op in ops if op.key is not None))
    assert {strategy.shard_of(k) for k in keys[:8]} == set(groups)
    assert any(op.f == "start-transfer" and op.value["group"] in groups for op in ops)


# --- status: per-group samples, election safety, final leaders ---------------------------------


def test_a_status_sample_keeps_every_group_and_an_old_sample_is_the_default_group() -> None:
    status = {"node": "n1", "groups": {"s0001": {"role": "leader", "term": 3, "leader": "n1", "commit": 9,
                                                 "applied": 9, "quiesced": False}}}
    sample = status_sample(5, "n1", status)
    assert sample["role"] is None and sample["groups"] == {"s0001": {"role": "leader", "term": 3, "leader": "n1",
                                                                     "commit": 9}}
    old = {"time": 1, "node": "n2", "role": "follower", "term": 2, "leader": "n1", "commit": 4}
    assert sample_groups(old) == {"default": {"role": "follower", "term": 2, "leader": "n1", "commit": 4}}


def test_election_safety_is_per_group() -> None:
    def lead(t: int, node: str, group: str, term: int) -> dict:
        return {"time": t, "node": node, "groups": {group: {"role": "leader", "term": term, "leader": node}}}

    fine = [lead(1, "n1", "s0000", 2), lead(2, "n2", "s0001", 2), lead(3, "n1", "s0000", 2)]
    verdict = check_election_safety(fine)
    assert verdict.valid is True and verdict.evidence["groups"] == 2
    bad = fine + [lead(4, "n3", "s0001", 2)]
    verdict = check_election_safety(bad)
    assert verdict.valid is False and "term 2 of group s0001" in (verdict.cause or "")
    assert verdict.evidence["violations"][0]["group"] == "s0001"
    assert set(verdict.evidence["violations"][0]["leaders"]) == {"n2", "n3"}


def test_the_final_status_names_each_groups_leader_and_counts_them_per_node() -> None:
    statuses = {
        "n1": {"groups": {"s0000": {"role": "leader", "term": 2}, "s0001": {"role": "leader", "term": 2},
                          "s0002": {"role": "follower", "term": 3}}},
        "n3": {"groups": {"s0000": {"role": "follower", "term": 2}, "s0002": {"role": "leader", "term": 3}}},
        "n4": {"groups": {"s0001": {"role": "leader", "term": 4}}},  # the newer leader of s0001
        "n2": None,
    }
    final = final_group_status(statuses, GROUPS)
    assert {g: v["leader"] for g, v in final["groups"].items()} == {"s0000": "n1", "s0001": "n4", "s0002": "n3",
                                                                    "s0003": None}
    assert final["leaders_per_node"] == {"n1": 1, "n2": 0, "n3": 1, "n4": 1}
    assert final["without_leader"] == ["s0003"] and final["unanswered"] == ["n2"]
    centralized = final_group_status({"n1": {"role": "leader", "term": 5}, "n2": {"role": "follower", "term": 5}},
                                     {"default": ("n1", "n2")})
    assert centralized["groups"]["default"]["leader"] == "n1" and centralized["leaders_per_node"] == {"n1": 1, "n2": 0}


# --- the client records group, index and replica ----------------------------------------------


class FakeClient(RecordingClient):
    """A RecordingClient whose wire is a function: (op, group) -> reply."""

    def __init__(self, *args: object, answer: object = None, **kwargs: object) -> None:
        self.client_id = "c1"
        self.last_node = None
        self.last_reply = None
        self.router = None
        self.answer = answer
        self.sent: list[tuple[str, str]] = []

    def group_of(self, key: str) -> str:
        return "s000" + str(len(key) % 2)

    def _send(self, op: object, **kwargs: object) -> ClientReply:
        group = str(kwargs.get("group", "default"))
        self.sent.append((type(op).__name__, group))
        reply = self.answer(op, group)  # type: ignore[misc]
        self.last_node = reply.node
        return reply

    def close(self) -> None:
        pass


def test_a_keyed_op_records_its_group_and_its_replys_index_and_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exapyte.client.Client.request", lambda self, op, **kw: self._send(op, **kw))

    def answer(op: object, group: str) -> ClientReply:
        name = type(op).__name__
        if name == "CasOp":
            return ClientReply("c1", 1, ReplyCode.CAS_FAILED, index=7, node="n3", term=2)
        return ClientReply("c1", 1, ReplyCode.OK, value=b"3", version=1, index=5, node="n2", term=2)

    client = HarnessClient({"n1": "tcp://a:1", "n2": "tcp://b:2"}, home="n1",
                           client_factory=lambda *a, **k: FakeClient(answer=answer))
    read = client.invoke(Op("read", key="rr", process=0))
    assert (read.type, read.value, read.group, read.index, read.replica) == ("ok", 3, "s0000", (2, 5), "n2")
    assert client.client.sent[-1] == ("GetOp", "s0000")  # reads go to the key's group too
    cas = client.invoke(Op("cas", key="r", value=[1, 2], process=0))
    assert (cas.type, cas.error, cas.group, cas.index, cas.replica) == ("fail", "cas-mismatch", "s0001", (2, 7), "n3")
    write = client.invoke(Op("write", key="r", value=4, process=0))
    assert (write.group, write.index) == ("s0001", (2, 5)) and client.client.sent[-1] == ("PutOp", "s0001")

    def timeout(op: object, group: str) -> ClientReply:
        from exapyte.errors import RequestTimeout
        raise RequestTimeout("no reply")

    client.client.answer = timeout
    lost = client.invoke(Op("write", key="r", value=1, process=0))
    assert (lost.type, lost.group, lost.index, lost.replica) == ("info", "s0001", None, None)
