"""Namespaces per node: the commands as pure functions (no root needed), then, where this host
allows it, real namespaces on a bridge: a cut stops packets, a heal lets them through, a
teardown leaves nothing behind."""

from __future__ import annotations

import io
import ipaddress
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from exapyte import config as config_mod
from exapyte.client import Client
from exapyte.control import topology as topo
from exapyte.errors import ExapyteError
from harness import netns
from harness.db import ClusterDB, HostsUnavailable, check_hosts
from harness.generator import Rand
from harness.history import read_events
from harness.nemesis import isolate_node, one_way
from harness.runner import TestSpec, run_test

REPO = Path(__file__).resolve().parents[2]
NODES = ["n1", "n2", "n3"]


@pytest.fixture
def plan() -> netns.NetnsPlan:
    return netns.make_plan(netns.make_prefix(0x1f3a, 0), NODES, "10.199.7.0/24")


# --- names and addresses -----------------------------------------------------------------------


def test_a_plan_names_every_object_with_the_run_prefix(plan: netns.NetnsPlan) -> None:
    assert plan.prefix == "xp1f3ag0" and plan.bridge == "xp1f3ag0-br"
    assert plan.root_address == "10.199.7.1"
    assert [(h.namespace, h.address) for h in plan.hosts] == [
        ("xp1f3ag0-n1", "10.199.7.2"), ("xp1f3ag0-n2", "10.199.7.3"), ("xp1f3ag0-n3", "10.199.7.4")]
    assert {h.host_if for h in plan.hosts} == {"xp1f3ag0-h0", "xp1f3ag0-h1", "xp1f3ag0-h2"}
    names = [plan.bridge] + [h.namespace for h in plan.hosts] + [h.host_if for h in plan.hosts]
    assert {netns.owner_pid(n) for n in names} == {0x1f3a}
    assert netns.owner_pid("eth0") is None and netns.owner_pid("xpnothex-br") is None


def test_interface_names_longer_than_the_kernel_allows_are_refused() -> None:
    prefix = netns.make_prefix(0x3fffff, 12345)  # 15 characters before "-h0"
    with pytest.raises(ValueError, match="longer than 15 bytes"):
        netns.make_plan(prefix, NODES, "10.199.0.0/24")
    with pytest.raises(ValueError, match="unique"):
        netns.make_plan("xp1g0", ["a", "a"], "10.199.0.0/24")
    with pytest.raises(ValueError, match="no room"):
        netns.make_plan("xp1g0", [f"n{i}" for i in range(20)], "10.199.0.0/28")


def test_the_subnet_is_the_first_one_nothing_on_the_host_overlaps() -> None:
    net = ipaddress.IPv4Network
    assert netns.choose_subnet([]) == net("10.199.0.0/24")
    used = [net("0.0.0.0/0"), net("192.0.2.0/24"), net("10.199.0.0/24"), net("10.199.1.7/32")]
    assert netns.choose_subnet(used) == net("10.199.2.0/24")  # a default route is no use
    with pytest.raises(netns.NetnsError, match="no free /24"):
        netns.choose_subnet([net("10.0.0.0/8")])


def test_stale_prefixes_are_those_whose_creator_is_gone() -> None:
    names = ["xp10g0-br", "xp10g0-n1", "xp20g3-h0", "xp30g1-n2", "xp30g2-br", "eth0", "lo"]
    alive = {0x10: False, 0x20: True, 0x30: True}
    stale = netns.stale_prefixes(names, lambda pid: alive[pid], active={"xp30g2"}, own_pid=0x30)
    # 0x10 is dead; 0x20 lives; 0x30 is this process: its inactive prefix g1 is a leftover
    assert stale == {"xp10g0", "xp30g1"}


def test_the_probe_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.sys, "platform", "linux")
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    support = netns._probe()
    assert support.namespaces is not None and "needs root (this process runs as uid 1000)" in support.namespaces
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool == "iptables" else f"/usr/sbin/{tool}")
    assert netns._probe().namespaces == "no iptables command on PATH (Debian: apt-get install -y iptables)"
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None)
    assert netns._probe().namespaces == "no ip command on PATH (Debian: apt-get install -y iproute2)"


# --- commands ----------------------------------------------------------------------------------


def test_setup_creates_a_bridge_then_one_namespace_and_veth_per_node(plan: netns.NetnsPlan) -> None:
    cmds = netns.setup_commands(plan)
    assert cmds[:3] == [
        ["ip", "link", "add", "xp1f3ag0-br", "type", "bridge"],
        ["ip", "addr", "add", "10.199.7.1/24", "dev", "xp1f3ag0-br"],
        ["ip", "link", "set", "xp1f3ag0-br", "up"],
    ]
    n2 = plan.host("n2")
    assert ["ip", "netns", "add", "xp1f3ag0-n2"] in cmds
    assert ["ip", "link", "add", "xp1f3ag0-h1", "type", "veth", "peer", "name", "xp1f3ag0-e1",
            "netns", "xp1f3ag0-n2"] in cmds
    assert ["ip", "link", "set", "xp1f3ag0-h1", "master", "xp1f3ag0-br", "up"] in cmds
    assert ["ip", "-n", n2.namespace, "link", "set", "lo", "up"] in cmds
    assert ["ip", "-n", n2.namespace, "addr", "add", "10.199.7.3/24", "dev", "xp1f3ag0-e1"] in cmds
    jump = ["ip", "netns", "exec", n2.namespace, "iptables", "-w", "-A", "INPUT", "-j", netns.CUT_CHAIN]
    create = ["ip", "netns", "exec", n2.namespace, "iptables", "-w", "-N", netns.CUT_CHAIN]
    assert cmds.index(create) < cmds.index(jump)
    assert sum(c[:3] == ["ip", "netns", "add"] for c in cmds) == 3


def test_teardown_deletes_every_veth_namespace_and_the_bridge(plan: netns.NetnsPlan) -> None:
    cmds = netns.teardown_commands(plan)
    assert cmds[-1] == ["ip", "link", "delete", "xp1f3ag0-br"]
    assert sorted(c[3] for c in cmds if c[:3] == ["ip", "netns", "delete"]) == [h.namespace for h in plan.hosts]
    assert sorted(c[3] for c in cmds if c[:3] == ["ip", "link", "delete"]) == sorted(
        [h.host_if for h in plan.hosts] + [plan.bridge])


def test_a_node_runs_inside_its_namespace(plan: netns.NetnsPlan) -> None:
    assert netns.exec_command(plan, "n3", ["python", "-m", "exapyte"]) == [
        "ip", "netns", "exec", "xp1f3ag0-n3", "python", "-m", "exapyte"]


def test_a_cut_drops_the_sources_packets_at_the_destinations_input(plan: netns.NetnsPlan) -> None:
    assert netns.rule_commands(plan, "n1", "n2") == [
        "ip", "netns", "exec", "xp1f3ag0-n2", "iptables", "-w", "-A", "XP-CUT",
        "-s", "10.199.7.2/32", "-m", "comment", "--comment", "exapyte cut n1->n2", "-j", "DROP"]
    assert netns.rule_commands(plan, "n1", "n2", delete=True)[6:8] == ["-D", "XP-CUT"]
    reject = netns.cut_rule(plan, "n3", "n1", "reject")
    assert reject == ["-s", "10.199.7.4/32", "-p", "tcp", "-m", "comment", "--comment", "exapyte cut n3->n1",
                      "-j", "REJECT", "--reject-with", "tcp-reset"]
    reset = netns.rule_commands(plan, "n3", "n1", "reject", chain=netns.RESET_CHAIN)
    assert reset[7] == "XP-RESET" and "exapyte reset n3->n1" in reset
    with pytest.raises(ValueError, match="drop, reject"):
        netns.cut_rule(plan, "n1", "n2", "down")


def test_a_cut_set_maps_to_rules_in_each_destinations_namespace(plan: netns.NetnsPlan) -> None:
    graph = topo.load(REPO / "topologies" / "single-region.json")
    assert sorted(graph.nodes) == NODES
    # isolate n1: n2 and n3 drop n1's packets, n1 drops both of theirs
    rules = netns.rules_for_cuts(plan, isolate_node(graph, "n1"))
    sources = {ns: sorted(r[1] for r in rs) for ns, rs in rules.items()}
    assert sources == {
        "xp1f3ag0-n1": ["10.199.7.3/32", "10.199.7.4/32"],
        "xp1f3ag0-n2": ["10.199.7.2/32"],
        "xp1f3ag0-n3": ["10.199.7.2/32"],
    }
    # one-way: only the node that hears nobody gets rules
    cuts, node, _ = one_way(graph, Rand.seeded(3))
    rules = netns.rules_for_cuts(plan, cuts)
    assert list(rules) == [plan.host(node).namespace] and len(rules[plan.host(node).namespace]) == 2
    assert netns.rules_for_cuts(plan, []) == {}
    with pytest.raises(ValueError, match="itself"):
        netns.rules_for_cuts(plan, [("n1", "n1")])


def test_heal_flushes_only_the_harness_chains(plan: netns.NetnsPlan) -> None:
    cmds = netns.heal_commands(plan)
    assert len(cmds) == 2 * len(plan.hosts)
    assert {tuple(c[4:]) for c in cmds} == {("iptables", "-w", "-F", "XP-CUT"), ("iptables", "-w", "-F", "XP-RESET")}
    assert all("INPUT" not in c for c in cmds)


def test_shaping_gives_each_destination_a_class_and_wan_links_a_netem_delay(plan: netns.NetnsPlan) -> None:
    cmds = netns.shaping_commands(plan, {("n1", "n3"): netns.LinkShape(delay_ms=90)})
    n1 = [c[5:] for c in cmds if c[3] == "xp1f3ag0-n1"]
    assert n1[0] == ["qdisc", "add", "dev", "xp1f3ag0-e0", "root", "handle", "1:", "htb", "default", "1"]
    filters = [c for c in n1 if c[0] == "filter"]
    assert [(c[c.index("dst") + 1], c[-1]) for c in filters] == [("10.199.7.3/32", "1:11"), ("10.199.7.4/32", "1:12")]
    assert ["qdisc", "add", "dev", "xp1f3ag0-e0", "parent", "1:12", "handle", "12:", "netem", "delay", "90ms",
            "limit", "10000"] in n1
    assert sum("netem" in c for c in cmds) == 1  # no other link has latency
    assert all(c[3] != "xp1f3ag0-n1" or "1:10" not in c for c in cmds)  # no class towards itself


def test_link_shape_changes_are_minimal_commands(plan: netns.NetnsPlan) -> None:
    base = netns.LinkShape(delay_ms=35)
    spiked = netns.LinkShape(delay_ms=285, jitter_ms=150)
    (cmd,) = netns.shape_commands(plan, "n2", "n1", base, spiked)
    assert cmd[3] == "xp1f3ag0-n2" and cmd[5:] == [
        "qdisc", "replace", "dev", "xp1f3ag0-e1", "parent", "1:10", "handle", "10:",
        "netem", "delay", "285ms", "150ms", "limit", "10000"]
    (cmd,) = netns.shape_commands(plan, "n2", "n1", netns.LinkShape(delay_ms=250), netns.LinkShape())
    assert cmd[5:7] == ["qdisc", "del"]
    (cmd,) = netns.shape_commands(plan, "n1", "n2", netns.LinkShape(), netns.LinkShape(rate_kbit=64))
    assert cmd[5:] == ["class", "change", "dev", "xp1f3ag0-e0", "parent", "1:", "classid", "1:11", "htb",
                       "rate", "64kbit", "ceil", "64kbit", "quantum", "1514"]
    assert netns.shape_commands(plan, "n1", "n2", base, base) == []


# --- on this host: real namespaces -------------------------------------------------------------


def _require_namespaces() -> netns.Support:
    support = netns.probe()
    if support.namespaces is not None:
        pytest.skip(f"network namespaces are not available here: {support.namespaces}")
    return support


@pytest.fixture
def hosts() -> Iterator[netns.NetnsHosts]:
    _require_namespaces()
    h = netns.NetnsHosts(NODES)
    h.create()
    try:
        yield h
    finally:
        left = h.teardown()
        assert left == []


LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


def _connect_from(hosts: netns.NetnsHosts, node: str, address: str, port: int, timeout_s: float = 1.0) -> str:
    done = subprocess.run(hosts.wrap(node, [sys.executable, "-c", CONNECT, address, str(port), str(timeout_s)]),
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


@pytest.fixture
def listener(hosts: netns.NetnsHosts) -> Iterator[tuple[str, int]]:
    """A TCP listener inside n2's namespace, on n2's address."""
    address, port = hosts.address("n2"), 7901
    proc = subprocess.Popen(hosts.wrap("n2", [sys.executable, "-c", LISTENER, address, str(port)]),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield address, port
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_nodes_reach_each_other_and_the_root_namespace_reaches_them(
        hosts: netns.NetnsHosts, listener: tuple[str, int]) -> None:
    address, port = listener
    assert _connect_from(hosts, "n1", address, port) == "connected"
    with socket.create_connection((address, port), timeout=2):  # from the root namespace
        pass
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert all(h.namespace in listed for h in hosts._plan().hosts)


def test_a_cut_stops_packets_in_the_kernel_and_a_heal_lets_them_through(
        hosts: netns.NetnsHosts, listener: tuple[str, int]) -> None:
    address, port = listener
    hosts.cut("n1", "n2")
    assert hosts.rules()["n2"][netns.CUT_CHAIN] == [
        f'-A XP-CUT -s {hosts.address("n1")}/32 -m comment --comment "exapyte cut n1->n2" -j DROP']
    assert _connect_from(hosts, "n1", address, port) in ("TimeoutError", "timeout")  # dropped: no answer
    assert _connect_from(hosts, "n3", address, port) == "connected"  # only n1 is cut from n2
    with socket.create_connection((address, port), timeout=2):  # clients are never cut
        pass
    hosts.uncut("n1", "n2")
    assert hosts.rules()["n2"][netns.CUT_CHAIN] == []
    assert _connect_from(hosts, "n1", address, port) == "connected"
    hosts.cut("n1", "n2", "reject")
    assert _connect_from(hosts, "n1", address, port) == "ConnectionRefusedError"  # a reset, at once
    hosts.add_reset("n3", "n2")
    assert _connect_from(hosts, "n3", address, port) == "ConnectionRefusedError"
    hosts.heal()
    assert all(chain == [] for rules in hosts.rules().values() for chain in rules.values())
    assert _connect_from(hosts, "n1", address, port) == "connected"
    assert _connect_from(hosts, "n3", address, port) == "connected"


def test_a_bandwidth_limit_is_an_htb_class_rate_and_heal_lifts_it(hosts: netns.NetnsHosts) -> None:
    support = netns.probe()
    if support.shaping is not None:
        pytest.skip(f"tc htb is not available here: {support.shaping}")
    hosts.limit_rate("n1", "n3", 64)
    dev = hosts._plan().host("n1").ns_if
    shown = subprocess.run(hosts.wrap("n1", ["tc", "class", "show", "dev", dev]),
                           capture_output=True, text=True, check=True).stdout
    assert "class htb 1:12 root prio 0 rate 64Kbit ceil 64Kbit" in shown
    assert hosts.shape("n1", "n3") == netns.LinkShape(rate_kbit=64)
    hosts.heal()
    shown = subprocess.run(hosts.wrap("n1", ["tc", "class", "show", "dev", dev]),
                           capture_output=True, text=True, check=True).stdout
    assert "64Kbit" not in shown and hosts.shape("n1", "n3") == netns.LinkShape()
    if support.netem is not None:
        with pytest.raises(netns.NetnsError, match="netem"):
            hosts.add_latency("n1", "n3", 250, 150)


def test_teardown_leaves_nothing_with_the_prefix() -> None:
    _require_namespaces()
    h = netns.NetnsHosts(NODES)
    plan = h.create()
    sleeper = subprocess.Popen(h.wrap("n1", ["sleep", "60"]))  # a process left inside is killed
    deadline = time.monotonic() + 10
    while subprocess.run(["ip", "netns", "identify", str(sleeper.pid)], capture_output=True,
                         text=True).stdout.strip() != plan.host("n1").namespace:
        assert time.monotonic() < deadline, "the process never entered its namespace"
        time.sleep(0.01)  # ip netns exec has not joined the namespace yet
    assert h.teardown() == []
    assert sleeper.wait(10) == -9
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert plan.prefix not in namespaces and plan.prefix not in links
    assert h.teardown() == []  # idempotent


def test_leftovers_of_a_process_that_died_are_cleaned_up() -> None:
    _require_namespaces()
    script = (
        "import os; from harness import netns; h = netns.NetnsHosts(['a', 'b']); p = h.create(); "
        "print(p.prefix, flush=True); os._exit(0)"  # no teardown, no atexit
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=True)
    prefix = done.stdout.strip()
    assert prefix.startswith("xp")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"{prefix}-a" in listed
    deadline = time.monotonic() + 10
    while prefix not in netns.cleanup_stale() and time.monotonic() < deadline:
        time.sleep(0.1)  # the dead creator's pid could be taken by another process for a moment
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert prefix not in links and prefix not in listed


# --- the db and the runner in netns mode -------------------------------------------------------


NO_ROOT = netns.Support("creating network namespaces, veths, a bridge and iptables rules needs root "
                        "(this process runs as uid 1000)", "no root", "no root")
NO_NETEM = netns.Support(None, None, "this kernel has no tc netem qdisc (Specified qdisc kind is unknown)")


def test_a_host_mode_that_cannot_run_here_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown hosts 'vm'"):
        check_hosts("vm")
    with pytest.raises(ValueError, match="cut mode 'drop' does not exist with hosts 'local'; allowed: down, blackhole"):
        check_hosts("local", (), "drop")
    with pytest.raises(ValueError, match="allowed: drop, reject"):
        check_hosts("netns", (), "blackhole")
    check_hosts("local", ("partition", "latency"), "blackhole")  # never probes
    monkeypatch.setattr(netns, "probe", lambda: NO_ROOT)
    with pytest.raises(HostsUnavailable, match="--hosts netns cannot run here: .*needs root"):
        check_hosts("netns", ("partition",))
    monkeypatch.setattr(netns, "probe", lambda: NO_NETEM)
    check_hosts("netns", ("partition", "kill", "pause", "bandwidth", "reset", "clock"), "reject")
    with pytest.raises(HostsUnavailable, match="the latency nemesis cannot run with --hosts netns here: .*netem"):
        check_hosts("netns", ("partition", "latency"))


def test_the_cli_fails_at_once_saying_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import build_parser, main

    parser = build_parser()
    assert parser.parse_args(["test", "--topology", "x"]).hosts == "local"
    assert parser.parse_args(["test", "--topology", "x", "--hosts", "netns", "--cut", "reject"]).cut == "reject"
    monkeypatch.setattr(netns, "probe", lambda: NO_ROOT)
    store = tmp_path / "store"
    assert main(["test", "--topology", "single-region", "--hosts", "netns", "--time", "1", "--store", str(store)]) == 2
    out = capsys.readouterr().out
    assert "--hosts netns cannot run here" in " ".join(out.split()) and "root" in out
    assert not store.exists()  # refused before any run folder or process
    assert main(["test", "--topology", "single-region", "--cut", "drop", "--store", str(store)]) == 2
    assert "does not exist with hosts 'local'" in capsys.readouterr().out


def test_a_spec_names_its_host_mode_and_resolves_its_cut_mode() -> None:
    local, ns = TestSpec(topology="three-region"), TestSpec(topology="three-region", hosts="netns")
    assert local.resolved_cut_mode() == "down" and ns.resolved_cut_mode() == "drop"
    assert ns.test_name() == "register-three-region-netns" and local.test_name() == "register-three-region"
    assert ns.to_dict()["cut_mode"] == "drop" and ns.to_dict()["hosts"] == "netns"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_db_runs_each_node_in_its_namespace_and_cuts_in_the_kernel(tmp_path: Path) -> None:
    _require_namespaces()
    db = ClusterDB(REPO / "topologies" / "single-region.json", tmp_path, hosts="netns")
    try:
        db.setup()
        assert db.netns is not None and db.toxiproxy is None and db.proxies == {}
        plan = db.netns._plan()
        for node in db.node_ids:
            cfg = config_mod.load(tmp_path / "config" / f"{node}.json")
            assert cfg.node.host == plan.host(node).address and cfg.network.peer_endpoints == {}
            assert cfg.bind_host == plan.host(node).address  # not the topology's 127.0.0.1
            assert cfg.security.mode == "curve" and Path(cfg.security.keys_dir) == (tmp_path / "keys").resolve()
            assert cfg.peer_endpoint("n1") == f"tcp://{plan.host('n1').address}:{cfg.node_by_id('n1').port}"
            pid = db._cluster().procs[node].pid
            where = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout
            assert where.strip() == plan.host(node).namespace  # the pid held is the node's own
        assert db.endpoints()["n2"] == f"tcp://{plan.host('n2').address}:7602"
        assert db.statuses(timeout_s=2.0)["n2"] is not None  # the harness's clients carry the run's keys
        with Client(db.endpoints()["n2"], timeout_s=0.5) as stranger, pytest.raises(ExapyteError):
            stranger.status(timeout_s=0.5)  # a client without them gets no answer over CURVE
        assert json.loads((tmp_path / "netns.json").read_text())["hosts"]["n3"]["address"] == plan.host("n3").address
        db.cut("n1", "n2")
        db.cut("n3", "n2")
        applied = db.applied_cuts()
        assert applied["layer"] == "iptables" and applied["rules"] == 2 and applied["rules_by_node"] == {"n2": 2}
        assert applied["text"] == "2 iptables DROP rules in XP-CUT: n2 2"
        with pytest.raises(ValueError, match="allowed|must be one of"):
            db.cut("n1", "n3", mode="down")
        with pytest.raises(HostsUnavailable, match="'slicer' has no equivalent"):
            db.add_toxic("n1", "n3", "slice", "slicer", {"average_size": 10})
        db.add_toxic("n1", "n3", "reset", "reset_peer", {"timeout": 0}, streams=("upstream",))
        assert db.applied_cuts()["reset_rules"] == 1 and db.toxics("n1", "n3") == {"reset"}
        db.kill("n3")
        db.heal_all()  # rules gone, n3 restarted inside its namespace
        assert db.applied_cuts()["rules"] == 0 and db.applied_cuts()["reset_rules"] == 0
        assert db.alive("n3") and all(status is not None for status in db.statuses(timeout_s=2.0).values())
    finally:
        prefix = db.netns._plan().prefix if db.netns is not None and db.netns.plan is not None else None
        db.teardown()
    assert prefix is not None
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout + subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert prefix not in left


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_a_short_netns_run_under_partitions_and_kills_is_valid(tmp_path: Path) -> None:
    _require_namespaces()
    spec = TestSpec(topology="single-region", nemesis=("partition", "kill"), time_s=6.0, rate=60.0, seed=5,
                    store=str(tmp_path / "store"), nemesis_interval_s=1.2, quiet_s=1.0, checker_timeout_s=20.0,
                    hosts="netns")
    outcome = run_test(spec, Console(file=io.StringIO(), width=120))
    results = outcome.results
    assert outcome.valid is True, (results["notes"], results["checkers"])
    assert results["options"]["hosts"] == "netns" and results["options"]["cut_mode"] == "drop"
    events = read_events(outcome.run_dir / "history.jsonl")
    started = [e.value for e in events if e.f == "start-partition" and e.type == "info"]
    assert started, "no partition in the run"
    for fault in started:  # the kernel held one rule per directed cut, in the chain of the harness
        assert fault["applied"]["layer"] == "iptables" and fault["applied"]["rules"] == len(fault["cuts"])
    assert all(f["applied"]["text"].startswith(f"{f['applied']['rules']} iptables DROP rules")
               for f in results["faults"] if f["fault"] == "partition")
    heal = [e for e in events if e.f == "heal" and e.type == "info"]
    assert heal[0].value["applied"]["rules"] == 0
    prefix = json.loads((outcome.run_dir / "netns.json").read_text())["prefix"]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in left
