"""Nodes on separate hosts: one Linux network namespace per node, partitions in the kernel.

Theory of operation
-------------------
``--hosts netns`` gives every node a host of its own, as Jepsen's nodes are separate machines.
:class:`NetnsHosts` creates, for a run:

- one **network namespace** per node, named ``PREFIX-<node id>``, with its loopback up;
- one **veth pair** per node: ``PREFIX-e<i>`` inside the namespace holds the node's address,
  ``PREFIX-h<i>`` in the root namespace is a port of
- one **bridge** ``PREFIX-br``, which holds an address of the subnet too (``.1``): the harness's
  clients, its status monitor and :class:`~exapyte.runtime.cluster.LocalCluster` reach every
  node directly from the root namespace, through no fault;
- a private **/24** of :data:`SUBNET_POOL` that no address or route of the root namespace
  overlaps (chosen under a file lock, so two runs never take the same one).

A node is started as ``ip netns exec NAMESPACE python -m exapyte ...``; ``ip netns exec`` execs
the command in place, so the pid the harness holds is the node's own (kill -9, SIGSTOP and
SIGCONT reach it as before).

**Partitions** are sets of directed cuts ``(src, dst)``: src's messages must not reach dst
(:mod:`harness.nemesis`). A cut is one iptables rule in dst's namespace, in a chain of the
harness's own (:data:`CUT_CHAIN`, jumped to from INPUT)::

    iptables -A XP-CUT -s SRC_IP/32 -m comment --comment "exapyte cut SRC->DST" -j DROP

so every packet from src is dropped on arrival at dst, whatever the port (TCP retransmits, as on
a real network). Because src's ACKs are dropped too, a one-way cut stalls the reverse
direction's TCP streams as well after their first window (../shared/TOXIPROXY.md §8). The
``reject`` target answers TCP packets with a reset instead (connects fail at once). Healing
flushes the harness's chains and nothing else. The ``reset`` fault is the same REJECT rule in a
chain of its own (:data:`RESET_CHAIN`).

**Shaping** is ``tc`` on the egress of each namespace's veth: an ``htb`` root with one class per
destination node, selected by a ``u32`` match on the destination address. A class's rate is a
bandwidth limit of that directed link; a ``netem`` leaf under it is that link's latency (the
topology's one-way WAN latency, plus a latency spike while one is active). Both directions of a
link are delayed at their own sender, so the round trip is twice the one-way latency, as with the
proxies' latency toxics. Kernels without netem (:func:`probe` finds out) get neither WAN latency
nor latency spikes; the harness says so instead of pretending.

**Names** carry their creator: ``PREFIX`` is ``xp<pid in hex>g<n>``, the harness process's pid
and a counter. :func:`cleanup_stale` removes the namespaces and links of any prefix whose
process is gone (killed before it could tear down), and every :meth:`NetnsHosts.create` runs it
first. :meth:`NetnsHosts.teardown` deletes everything it created (it also runs at exit), and
:meth:`NetnsHosts.leftovers` checks that nothing with its prefix is left.

Every command is computed by a pure function of a :class:`NetnsPlan` (the functions named
``*_commands`` and :func:`rules_for_cuts`); the thin effects below run them as root.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = [
    "CUT_CHAIN",
    "CUT_TARGETS",
    "RESET_CHAIN",
    "SUBNET_POOL",
    "HostNet",
    "LinkShape",
    "NetnsError",
    "NetnsHosts",
    "NetnsPlan",
    "Support",
    "choose_subnet",
    "cleanup_stale",
    "cut_rule",
    "exec_command",
    "heal_commands",
    "make_plan",
    "make_prefix",
    "owner_pid",
    "probe",
    "rule_commands",
    "rules_for_cuts",
    "setup_commands",
    "shape_commands",
    "shaping_commands",
    "stale_prefixes",
    "teardown_commands",
]

#: Where the subnets of runs come from: the first /24 of it that nothing on this host uses.
SUBNET_POOL = ipaddress.IPv4Network("10.199.0.0/16")
SUBNET_PREFIXLEN = 24
NAME_PREFIX = "xp"
#: The harness's own iptables chains in every namespace (jumped to from INPUT).
CUT_CHAIN = "XP-CUT"
RESET_CHAIN = "XP-RESET"
#: How a cut treats src's packets: dropped in silence, or TCP answered with a reset.
CUT_TARGETS: tuple[str, ...] = ("drop", "reject")
IFNAME_BYTES_MAX = 15  # IFNAMSIZ - 1
#: The rate of an htb class that is not limited (far above what a veth carries here).
RATE_UNLIMITED = "10gbit"
HTB_QUANTUM_BYTES = 1514
NETEM_LIMIT_PACKETS = 10_000
CLASS_MINOR_BASE = 0x10  # class 1:<base + i> carries the packets to node i; 1:1 everything else
COMMAND_TIMEOUT_S = 20.0
LOCK_PATH = Path("/run/exapyte-netns.lock")

_NAME_RE = re.compile(rf"^{NAME_PREFIX}([0-9a-f]+)g([0-9]+)-")
_sequence = itertools.count()
_active: set[str] = set()  # prefixes of this process's live NetnsHosts
_active_lock = threading.Lock()


class NetnsError(RuntimeError):
    """A namespace, link, rule or qdisc could not be created or changed."""


# --- the plan: names and addresses -------------------------------------------------------------


@dataclass(frozen=True)
class HostNet:
    """One node's host: its namespace, its veth pair and its address."""

    node_id: str
    index: int
    namespace: str
    host_if: str  # bridge port, in the root namespace
    ns_if: str  # inside the namespace, holds ``address``
    address: str


@dataclass(frozen=True)
class NetnsPlan:
    """Everything one run creates, by name."""

    prefix: str
    subnet: str
    bridge: str
    root_address: str
    hosts: tuple[HostNet, ...]

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def host(self, node_id: str) -> HostNet:
        for h in self.hosts:
            if h.node_id == node_id:
                return h
        raise KeyError(f"{node_id!r} is not a node of this plan ({[h.node_id for h in self.hosts]})")

    def to_dict(self) -> dict[str, object]:
        return {
            "prefix": self.prefix, "subnet": self.subnet, "bridge": self.bridge,
            "root_address": self.root_address,
            "hosts": {h.node_id: {"namespace": h.namespace, "address": h.address, "veth": [h.host_if, h.ns_if]}
                      for h in self.hosts},
        }


def make_prefix(pid: int, sequence: int) -> str:
    """``xp<pid hex>g<sequence>``: the creator is readable back from every name (:func:`owner_pid`)."""
    return f"{NAME_PREFIX}{pid:x}g{sequence}"


def owner_pid(name: str) -> int | None:
    """The pid a namespace or link name was created by, or None for names not made here."""
    match = _NAME_RE.match(name)
    return int(match.group(1), 16) if match else None


def _prefix_of(name: str) -> str | None:
    match = _NAME_RE.match(name)
    return name[: match.end() - 1] if match else None


def make_plan(prefix: str, node_ids: Sequence[str], subnet: str) -> NetnsPlan:
    """Names and addresses for ``node_ids`` on ``subnet``: ``.1`` is the root namespace's, node
    ``i`` (in the given order) gets ``.2 + i``."""
    net = ipaddress.IPv4Network(subnet)
    if len(node_ids) != len(set(node_ids)):
        raise ValueError(f"node ids must be unique: {list(node_ids)}")
    if len(node_ids) + 2 > net.num_addresses - 1:
        raise ValueError(f"{subnet} has no room for {len(node_ids)} nodes")
    bridge = f"{prefix}-br"
    hosts = tuple(
        HostNet(node_id=node, index=i, namespace=f"{prefix}-{node}", host_if=f"{prefix}-h{i}",
                ns_if=f"{prefix}-e{i}", address=str(net.network_address + 2 + i))
        for i, node in enumerate(node_ids)
    )
    for name in [bridge] + [h.host_if for h in hosts] + [h.ns_if for h in hosts]:
        if len(name.encode()) > IFNAME_BYTES_MAX:
            raise ValueError(f"interface name {name!r} is longer than {IFNAME_BYTES_MAX} bytes")
    return NetnsPlan(prefix=prefix, subnet=str(net), bridge=bridge,
                     root_address=str(net.network_address + 1), hosts=hosts)


def choose_subnet(used: Iterable[ipaddress.IPv4Network], pool: ipaddress.IPv4Network = SUBNET_POOL,
                  prefixlen: int = SUBNET_PREFIXLEN) -> ipaddress.IPv4Network:
    """The first subnet of ``pool`` that overlaps none of ``used`` (addresses and routes of the
    root namespace; a default route is not a use)."""
    taken = [n for n in used if n.prefixlen > 0]
    for candidate in pool.subnets(new_prefix=prefixlen):
        if not any(candidate.overlaps(n) for n in taken):
            return candidate
    raise NetnsError(f"no free /{prefixlen} in {pool}: every one overlaps an address or route of this host")


# --- commands: pure functions of the plan ------------------------------------------------------

Command = list[str]


def _in(namespace: str, *cmd: str) -> Command:
    return ["ip", "netns", "exec", namespace, *cmd]


def _iptables(namespace: str, *args: str) -> Command:
    return _in(namespace, "iptables", "-w", *args)


def exec_command(plan: NetnsPlan, node_id: str, command: Sequence[str]) -> Command:
    """``command`` run inside ``node_id``'s namespace."""
    return _in(plan.host(node_id).namespace, *command)


def setup_commands(plan: NetnsPlan) -> list[Command]:
    """The bridge, then per node: namespace, veth pair, addresses, loopback, the harness's chains."""
    cmds: list[Command] = [
        ["ip", "link", "add", plan.bridge, "type", "bridge"],
        ["ip", "addr", "add", f"{plan.root_address}/{plan.prefixlen}", "dev", plan.bridge],
        ["ip", "link", "set", plan.bridge, "up"],
    ]
    for h in plan.hosts:
        cmds += [
            ["ip", "netns", "add", h.namespace],
            ["ip", "link", "add", h.host_if, "type", "veth", "peer", "name", h.ns_if, "netns", h.namespace],
            ["ip", "link", "set", h.host_if, "master", plan.bridge, "up"],
            ["ip", "-n", h.namespace, "link", "set", "lo", "up"],
            ["ip", "-n", h.namespace, "addr", "add", f"{h.address}/{plan.prefixlen}", "dev", h.ns_if],
            ["ip", "-n", h.namespace, "link", "set", h.ns_if, "up"],
        ]
        for chain in (CUT_CHAIN, RESET_CHAIN):
            cmds += [_iptables(h.namespace, "-N", chain), _iptables(h.namespace, "-A", "INPUT", "-j", chain)]
    return cmds


def teardown_commands(plan: NetnsPlan) -> list[Command]:
    """Each veth pair (deleting one end deletes both), each namespace, the bridge."""
    cmds: list[Command] = []
    for h in plan.hosts:
        cmds += [["ip", "link", "delete", h.host_if], ["ip", "netns", "delete", h.namespace]]
    return cmds + [["ip", "link", "delete", plan.bridge]]


def cut_rule(plan: NetnsPlan, src: str, dst: str, target: str = "drop", *, label: str = "cut") -> list[str]:
    """The rule (after ``-A CHAIN``) in dst's namespace that stops src's packets to dst."""
    if target not in CUT_TARGETS:
        raise ValueError(f"cut target must be one of {', '.join(CUT_TARGETS)}, got {target!r}")
    match = ["-s", f"{plan.host(src).address}/32"]
    comment = ["-m", "comment", "--comment", f"exapyte {label} {src}->{dst}"]
    if target == "drop":
        return match + comment + ["-j", "DROP"]
    return match + ["-p", "tcp"] + comment + ["-j", "REJECT", "--reject-with", "tcp-reset"]


def rules_for_cuts(plan: NetnsPlan, cuts: Iterable[tuple[str, str]], target: str = "drop") -> dict[str, list[list[str]]]:
    """A cut set as iptables rules: namespace -> the rules of :data:`CUT_CHAIN` there. Cut
    ``(src, dst)`` becomes a rule in **dst**'s namespace matching **src**'s address."""
    out: dict[str, list[list[str]]] = {}
    for src, dst in sorted(set(cuts)):
        if src == dst:
            raise ValueError(f"a node cannot be cut from itself: {src}")
        out.setdefault(plan.host(dst).namespace, []).append(cut_rule(plan, src, dst, target))
    return out


def rule_commands(plan: NetnsPlan, src: str, dst: str, target: str = "drop", *, chain: str = CUT_CHAIN,
                  delete: bool = False) -> Command:
    """Add (``-A``) or delete (``-D``) the rule of cut ``(src, dst)`` in ``chain``."""
    label = "cut" if chain == CUT_CHAIN else "reset"
    rule = cut_rule(plan, src, dst, target, label=label)
    return _iptables(plan.host(dst).namespace, "-D" if delete else "-A", chain, *rule)


def heal_commands(plan: NetnsPlan) -> list[Command]:
    """Flush the harness's chains in every namespace: exactly the rules it added, nothing else."""
    return [_iptables(h.namespace, "-F", chain) for h in plan.hosts for chain in (CUT_CHAIN, RESET_CHAIN)]


@dataclass(frozen=True)
class LinkShape:
    """What ``tc`` does to one directed link: a one-way delay (with jitter) and a rate limit."""

    delay_ms: int = 0
    jitter_ms: int = 0
    rate_kbit: int | None = None  # None: unlimited

    @property
    def needs_netem(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0


def _minor(h: HostNet) -> int:
    return CLASS_MINOR_BASE + h.index


def _class_rate(rate_kbit: int | None) -> list[str]:
    rate = RATE_UNLIMITED if rate_kbit is None else f"{rate_kbit}kbit"
    return ["rate", rate, "ceil", rate, "quantum", str(HTB_QUANTUM_BYTES)]


def _netem(shape: LinkShape) -> list[str]:
    delay = ["delay", f"{shape.delay_ms}ms"] + ([f"{shape.jitter_ms}ms"] if shape.jitter_ms else [])
    return ["netem", *delay, "limit", str(NETEM_LIMIT_PACKETS)]


def shaping_commands(plan: NetnsPlan, shapes: dict[tuple[str, str], LinkShape] | None = None) -> list[Command]:
    """The htb tree on every namespace's veth: class 1:1 (the root namespace, unlimited), one
    class per destination node chosen by destination address, and a netem leaf for each link of
    ``shapes`` with a delay."""
    shapes = shapes or {}
    cmds: list[Command] = []
    for src in plan.hosts:
        dev = src.ns_if
        tc = ["ip", "netns", "exec", src.namespace, "tc"]
        cmds += [
            tc + ["qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1"],
            tc + ["class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", *_class_rate(None)],
        ]
        for dst in plan.hosts:
            if dst is src:
                continue
            minor = _minor(dst)
            shape = shapes.get((src.node_id, dst.node_id), LinkShape())
            cmds += [
                tc + ["class", "add", "dev", dev, "parent", "1:", "classid", f"1:{minor:x}", "htb",
                      *_class_rate(shape.rate_kbit)],
                tc + ["filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                      "match", "ip", "dst", f"{dst.address}/32", "flowid", f"1:{minor:x}"],
            ]
            if shape.needs_netem:
                cmds.append(tc + ["qdisc", "add", "dev", dev, "parent", f"1:{minor:x}", "handle", f"{minor:x}:",
                                  *_netem(shape)])
    return cmds


def shape_commands(plan: NetnsPlan, src: str, dst: str, old: LinkShape, new: LinkShape) -> list[Command]:
    """Change link ``(src, dst)`` from ``old`` to ``new`` (in src's namespace, on its veth)."""
    s, d = plan.host(src), plan.host(dst)
    tc = ["ip", "netns", "exec", s.namespace, "tc"]
    minor = _minor(d)
    cmds: list[Command] = []
    if new.rate_kbit != old.rate_kbit:
        cmds.append(tc + ["class", "change", "dev", s.ns_if, "parent", "1:", "classid", f"1:{minor:x}", "htb",
                          *_class_rate(new.rate_kbit)])
    if (new.delay_ms, new.jitter_ms) != (old.delay_ms, old.jitter_ms):
        if new.needs_netem:
            cmds.append(tc + ["qdisc", "replace", "dev", s.ns_if, "parent", f"1:{minor:x}", "handle",
                              f"{minor:x}:", *_netem(new)])
        elif old.needs_netem:
            cmds.append(tc + ["qdisc", "del", "dev", s.ns_if, "parent", f"1:{minor:x}", "handle", f"{minor:x}:"])
    return cmds


def stale_prefixes(names: Iterable[str], alive: Callable[[int], bool], active: Iterable[str] = (),
                   own_pid: int | None = None) -> set[str]:
    """The prefixes among ``names`` whose creating process is gone. This process's own prefixes
    are stale unless ``active`` (a pid may be reused, so its old sets count as stale too)."""
    own = os.getpid() if own_pid is None else own_pid
    keep = set(active)
    out = set()
    for name in names:
        prefix, pid = _prefix_of(name), owner_pid(name)
        if prefix is None or pid is None or prefix in keep:
            continue
        if pid == own or not alive(pid):
            out.add(prefix)
    return out


# --- effects -----------------------------------------------------------------------------------


def _run(cmd: Command, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(cmd)}: {exc}") from None
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {(done.stderr or done.stdout).strip() or f'exit {done.returncode}'}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Support:
    """What this host can do; each field is None when it works, else the reason it does not."""

    namespaces: str | None
    shaping: str | None  # tc htb: bandwidth limits
    netem: str | None  # tc netem: WAN latency and latency spikes

    def to_dict(self) -> dict[str, str | None]:
        return {"namespaces": self.namespaces, "shaping": self.shaping, "netem": self.netem}


_support: Support | None = None


def probe(*, refresh: bool = False) -> Support:
    """Find out (once per process) whether namespaces, iptables in them, tc htb and tc netem work
    here, by trying them in a namespace of its own that it deletes again."""
    global _support
    if _support is not None and not refresh:
        return _support
    _support = _probe()
    return _support


def _probe() -> Support:
    if sys.platform != "linux":
        return Support(f"network namespaces are Linux only (this is {sys.platform})", "no namespaces", "no namespaces")
    if os.geteuid() != 0:
        reason = (f"creating network namespaces, veths, a bridge and iptables rules needs root "
                  f"(this process runs as uid {os.geteuid()})")
        return Support(reason, reason, reason)
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            reason = f"no {tool} command on PATH (Debian: apt-get install -y {package})"
            return Support(reason, reason, reason)
    prefix = make_prefix(os.getpid(), next(_sequence))
    namespace = f"{prefix}-probe"
    with _active_lock:
        _active.add(prefix)
    try:
        for cmd, what in (
            (["ip", "netns", "add", namespace], "cannot create a network namespace"),
            (["ip", "-n", namespace, "link", "set", "lo", "up"], "cannot configure a network namespace"),
            (_iptables(namespace, "-N", CUT_CHAIN), "iptables does not work inside a network namespace"),
        ):
            try:
                _run(cmd)
            except NetnsError as exc:
                reason = f"{what}: {exc}"
                return Support(reason, reason, reason)
        shaping: str | None = None
        netem: str | None = None
        if shutil.which("tc") is None:
            shaping = netem = "no tc command on PATH (Debian: apt-get install -y iproute2)"
        else:
            try:
                _run(_in(namespace, "tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1"))
            except NetnsError as exc:
                shaping = f"tc htb does not work here: {exc}"
            try:
                _run(_in(namespace, "tc", "qdisc", "replace", "dev", "lo", "root", "netem", "delay", "1ms"))
            except NetnsError as exc:
                netem = f"this kernel has no tc netem qdisc ({exc})"
        return Support(None, shaping, netem)
    finally:
        _run(["ip", "netns", "delete", namespace], check=False)
        with _active_lock:
            _active.discard(prefix)


def _namespaces() -> list[str]:
    listed = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def _names() -> list[str]:
    """Every namespace name, and every link name of the root namespace."""
    names = _namespaces()
    links = _run(["ip", "-o", "link", "show"], check=False).stdout
    for line in links.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def _used_networks() -> list[ipaddress.IPv4Network]:
    used: list[ipaddress.IPv4Network] = []
    addrs = json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    for link in addrs:
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                used.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(dst, strict=False))
    return used


def _remove_prefix(prefix: str, names: Iterable[str]) -> None:
    """Delete every namespace and link named ``prefix-*`` (processes left inside are killed)."""
    mine = [n for n in names if n.startswith(prefix + "-")]
    namespaces = set(_namespaces())
    for name in mine:
        if name in namespaces:
            _kill_inside(name)
    for name in mine:
        if name in namespaces:
            _run(["ip", "netns", "delete", name], check=False)
        else:
            _run(["ip", "link", "delete", name], check=False)


def _kill_inside(namespace: str) -> None:
    pids = _run(["ip", "netns", "pids", namespace], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_PATH.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cleanup_stale() -> list[str]:
    """Remove the namespaces and links of every prefix whose creating process is gone; returns
    the prefixes removed."""
    with _active_lock:
        active = set(_active)
    names = _names()
    stale = sorted(stale_prefixes(names, _pid_alive, active))
    for prefix in stale:
        _remove_prefix(prefix, names)
    return stale


@dataclass
class _State:
    cuts: dict[tuple[str, str], str] = field(default_factory=dict)  # (src, dst) -> target
    resets: set[tuple[str, str]] = field(default_factory=set)
    shapes: dict[tuple[str, str], LinkShape] = field(default_factory=dict)  # current, where not base


class NetnsHosts:
    """The namespaces, bridge, rules and qdiscs of one cluster. Thread-safe.

    ``delays_ms`` is each directed link's base one-way latency (the topology's WAN latency);
    links not in it have none. Nothing exists before :meth:`create`."""

    def __init__(self, node_ids: Sequence[str], *, delays_ms: dict[tuple[str, str], int] | None = None,
                 support: Support | None = None, log: Callable[[str], None] | None = None) -> None:
        self.node_ids = list(node_ids)
        self.support = support
        self.base = {link: LinkShape(delay_ms=ms) for link, ms in (delays_ms or {}).items() if ms > 0}
        self.plan: NetnsPlan | None = None
        self._state = _State()
        self._lock = threading.RLock()
        self._log = log or (lambda text: None)

    # -- life cycle ---------------------------------------------------------------------------

    def create(self) -> NetnsPlan:
        """Clean up stale leftovers, choose a free subnet, create everything; on any failure,
        remove what was made and raise :class:`NetnsError`."""
        support = self.support or probe()
        self.support = support
        if support.namespaces is not None:
            raise NetnsError(support.namespaces)
        if self.base and support.netem is not None:
            raise NetnsError(f"link latency needs tc netem: {support.netem}")
        with self._lock, _host_lock():
            removed = cleanup_stale()
            if removed:
                self._log(f"removed stale namespaces and links of {', '.join(removed)}")
            prefix = make_prefix(os.getpid(), next(_sequence))
            plan = make_plan(prefix, self.node_ids, str(choose_subnet(_used_networks())))
            self.plan = plan
            with _active_lock:
                _active.add(prefix)
            atexit.register(self.teardown)
            try:
                for cmd in setup_commands(plan):
                    _run(cmd)
                if support.shaping is None:
                    for cmd in shaping_commands(plan, self.base):
                        _run(cmd)
            except BaseException:
                self.teardown()
                raise
        self._log(f"{len(plan.hosts)} namespaces on {plan.bridge} ({plan.subnet}, root at {plan.root_address})")
        return plan

    def teardown(self) -> list[str]:
        """Delete every namespace, link and (with them) rule and qdisc this made; processes still
        inside are killed. Idempotent. Returns what is left with this prefix (should be [])."""
        with self._lock:
            plan = self.plan
            if plan is None:
                return []
            for h in plan.hosts:
                _kill_inside(h.namespace)
            for cmd in teardown_commands(plan):
                _run(cmd, check=False)
            left = self.leftovers()
            if left:  # a namespace kept alive a moment by a dying process: once more
                _remove_prefix(plan.prefix, left)
                left = self.leftovers()
            self.plan = None
            self._state = _State()
            with _active_lock:
                _active.discard(plan.prefix)
            atexit.unregister(self.teardown)
            return left

    def leftovers(self) -> list[str]:
        """Namespaces and links with this run's prefix that exist now."""
        plan = self.plan
        if plan is None:
            return []
        return sorted(n for n in _names() if n.startswith(plan.prefix + "-"))

    def __enter__(self) -> NetnsHosts:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # -- what the db needs --------------------------------------------------------------------

    def _plan(self) -> NetnsPlan:
        if self.plan is None:
            raise NetnsError("the namespaces are not created (NetnsHosts.create)")
        return self.plan

    def address(self, node_id: str) -> str:
        return self._plan().host(node_id).address

    def wrap(self, node_id: str, command: list[str]) -> list[str]:
        """``command`` as run inside ``node_id``'s namespace (LocalCluster's ``wrap``)."""
        return exec_command(self._plan(), node_id, command)

    # -- partitions ---------------------------------------------------------------------------

    def cut(self, src: str, dst: str, target: str = "drop") -> None:
        with self._lock:
            if (src, dst) in self._state.cuts:
                return
            _run(rule_commands(self._plan(), src, dst, target))
            self._state.cuts[(src, dst)] = target

    def uncut(self, src: str, dst: str) -> None:
        with self._lock:
            target = self._state.cuts.pop((src, dst), None)
            if target is not None:
                _run(rule_commands(self._plan(), src, dst, target, delete=True))

    def is_cut(self, src: str, dst: str) -> bool:
        with self._lock:
            return (src, dst) in self._state.cuts

    def add_reset(self, src: str, dst: str) -> None:
        """TCP from src to dst is answered with resets (a ``reject`` rule in :data:`RESET_CHAIN`)."""
        with self._lock:
            if (src, dst) in self._state.resets:
                return
            _run(rule_commands(self._plan(), src, dst, "reject", chain=RESET_CHAIN))
            self._state.resets.add((src, dst))

    def remove_reset(self, src: str, dst: str) -> None:
        with self._lock:
            if (src, dst) in self._state.resets:
                _run(rule_commands(self._plan(), src, dst, "reject", chain=RESET_CHAIN, delete=True))
                self._state.resets.discard((src, dst))

    def rules(self) -> dict[str, dict[str, list[str]]]:
        """The rules of the harness's chains as the kernel has them: node -> chain -> rules."""
        plan = self._plan()
        out: dict[str, dict[str, list[str]]] = {}
        for h in plan.hosts:
            out[h.node_id] = {}
            for chain in (CUT_CHAIN, RESET_CHAIN):
                listed = _run(_iptables(h.namespace, "-S", chain)).stdout
                out[h.node_id][chain] = [line for line in listed.splitlines() if line.startswith("-A ")]
        return out

    # -- shaping ------------------------------------------------------------------------------

    def _reshape(self, src: str, dst: str, change: Callable[[LinkShape], LinkShape]) -> None:
        with self._lock:
            base = self.base.get((src, dst), LinkShape())
            old = self._state.shapes.get((src, dst), base)
            new = change(old)
            if new.needs_netem and self._netem_missing():
                raise NetnsError(f"link latency needs tc netem: {self._netem_missing()}")
            if new.rate_kbit is not None and self._shaping_missing():
                raise NetnsError(f"bandwidth limits need tc htb: {self._shaping_missing()}")
            for cmd in shape_commands(self._plan(), src, dst, old, new):
                _run(cmd)
            if new == base:
                self._state.shapes.pop((src, dst), None)
            else:
                self._state.shapes[(src, dst)] = new

    def _netem_missing(self) -> str | None:
        return self.support.netem if self.support is not None else "not probed"

    def _shaping_missing(self) -> str | None:
        return self.support.shaping if self.support is not None else "not probed"

    def add_latency(self, src: str, dst: str, latency_ms: int, jitter_ms: int = 0) -> None:
        """A latency spike on top of the link's base latency."""
        base = self.base.get((src, dst), LinkShape())
        self._reshape(src, dst, lambda s: replace(s, delay_ms=base.delay_ms + latency_ms, jitter_ms=jitter_ms))

    def remove_latency(self, src: str, dst: str) -> None:
        base = self.base.get((src, dst), LinkShape())
        self._reshape(src, dst, lambda s: replace(s, delay_ms=base.delay_ms, jitter_ms=base.jitter_ms))

    def limit_rate(self, src: str, dst: str, rate_kbit: int) -> None:
        self._reshape(src, dst, lambda s: replace(s, rate_kbit=rate_kbit))

    def unlimit_rate(self, src: str, dst: str) -> None:
        self._reshape(src, dst, lambda s: replace(s, rate_kbit=None))

    def shape(self, src: str, dst: str) -> LinkShape:
        with self._lock:
            return self._state.shapes.get((src, dst), self.base.get((src, dst), LinkShape()))

    # -- heal ---------------------------------------------------------------------------------

    def heal(self) -> None:
        """Every rule the harness added gone; every link back to its base shape."""
        with self._lock:
            plan = self._plan()
            for cmd in heal_commands(plan):
                _run(cmd)
            self._state.cuts.clear()
            self._state.resets.clear()
            for src, dst in list(self._state.shapes):
                base = self.base.get((src, dst), LinkShape())
                self._reshape(src, dst, lambda s, base=base: base)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.netns cleanup``: remove leftovers of harness processes that are gone;
    ``python -m harness.netns probe``: what this host supports."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["cleanup"]:
        if os.geteuid() != 0:
            print("cleanup needs root", file=sys.stderr)
            return 2
        removed = cleanup_stale()
        print("removed: " + (", ".join(removed) if removed else "nothing"))
        return 0
    if args == ["probe"]:
        print(json.dumps(probe().to_dict(), indent=2))
        return 0
    print("usage: python -m harness.netns cleanup|probe", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
