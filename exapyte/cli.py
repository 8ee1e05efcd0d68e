"""Command line: ``python main.py --node | --client | --cluster | --demo``.

Every mode exits non-zero on failure. ``--client`` prints one JSON object per call.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exapyte import __version__, limits
from exapyte import config as config_mod
from exapyte.errors import ConfigError, ExapyteError, RequestFailed, RequestTimeout

if TYPE_CHECKING:
    from exapyte.client import SessionToken

ABSENT = ":absent"  # the CLI's spelling of "no value" in cas

DESCRIPTION = """\
exapyte: a distributed key-value platform.

modes:
  --node      run one node of the cluster described by --config (ROUTER/DEALER/PUB/SUB sockets,
              storage, consensus) until SIGTERM or Ctrl-C.
  --client    send one request to the cluster in --config and print the reply as JSON:
                put KEY VALUE | get KEY | delete KEY | cas KEY EXPECTED NEW | scan [START [END]] | status
                transfer NODE | member add-voter|add-learner|remove NODE
              In cas, the word ':absent' means "no value" (expect absent, or delete).
              Admin operations (transfer, member) use the admin key (KEYS_DIR/admins/admin).
  --cluster   start every node of a cluster file as its own process on this machine, write
              RUN_DIR/cluster.json (ids, pids, endpoints), restart a node that exits (with
              backoff; --no-restart keeps it down) and stop them all on Ctrl-C or SIGTERM.
  --keygen    create the CURVE key pairs missing in DIR: one per node of --config, an admin
              and a client (see docs/security.md). --cluster and make run do this by themselves.
  --demo      run a named demonstration (consensus, replication, distribution).
"""

EPILOG = """\
examples:
  python main.py --node --config config.json
  python main.py --client --config config.json put greeting hello
  python main.py --client --config config.json get greeting
  python main.py --cluster topologies/three-node.json --run-dir run/three-node
  python main.py --keygen keys --config topologies/three-node.json
"""

DEMOS: dict[str, str] = {
    "consensus": "Raft vs Multi-Paxos vs ZAB on the same workload and faults",
    "replication": "synchronous vs asynchronous vs optimized replication on three regions",
    "distribution": "centralized vs sharded vs hierarchical distribution, with topology plots",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--node", action="store_true", help="run one node")
    mode.add_argument("--client", action="store_true", help="send one request and print JSON")
    mode.add_argument("--cluster", metavar="FILE", help="start every node of a cluster file")
    mode.add_argument("--keygen", metavar="DIR", help="create the missing key pairs in DIR")
    mode.add_argument("--demo", metavar="NAME", help=f"run a demo: {', '.join(DEMOS)}")
    mode.add_argument("--version", action="version", version=f"exapyte {__version__}")
    p.add_argument("--config", metavar="FILE", default="config.json", help="config file (default: config.json)")
    p.add_argument("--node-id", metavar="ID", help="which node of the config this is (overrides node_id)")
    p.add_argument("--data-dir", metavar="DIR", help="--node: keep storage in DIR/store.db")
    p.add_argument("--keys-dir", metavar="DIR", help="key directory (overrides security.keys_dir)")
    p.add_argument("--clients", metavar="NAMES", default="client",
                   help="--keygen: comma-separated client key names (default: client)")
    p.add_argument("--admins", metavar="NAMES", default="admin",
                   help="--keygen: comma-separated admin key names (default: admin)")
    p.add_argument("--instance-id", metavar="ID", help=argparse.SUPPRESS)  # set by launchers
    p.add_argument("--run-dir", metavar="DIR", help="--cluster: where cluster.json, logs and data go")
    p.add_argument("--no-restart", action="store_true", help="--cluster: leave a node that exits down")
    p.add_argument("--smoke", action="store_true", help="--cluster: show a put, get, cas and delete once started")
    p.add_argument("--once", action="store_true", help="--cluster: stop right after starting (and --smoke)")
    p.add_argument("--consistency", default=None, help="--client: consistency level of the request")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="--client: deadline in seconds (default: network.request_timeout_ms)")
    p.add_argument("--session", metavar="FILE",
                   help="--client: keep the session's tokens (one per replica group) in FILE across calls, so "
                   "the session guarantees hold from one call to the next")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="--client scan: at most N records")
    p.add_argument("--after", metavar="KEY", help="--client scan: start after KEY (see next_after)")
    p.add_argument("--out", metavar="DIR", help="--demo: where results.json and the plots go "
                   "(default: demo-out/NAME/, with --real demo-out/NAME-real/)")
    p.add_argument("--real", action="store_true",
                   help="--demo consensus: run on real node processes behind Toxiproxy, not the "
                   "simulator")
    p.add_argument("--param", metavar="KEY=VALUE", action="append", default=[],
                   help="--demo: a run parameter (seed, steady_s, workers, ...; see "
                        "docs/demos.md); repeatable")
    p.add_argument("--verbose", "-v", action="store_true", help="log debug detail")
    p.add_argument("args", nargs="*", help="--client: the operation and its arguments")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        if ns.node:
            return run_node(ns)
        if ns.client:
            return run_client(ns, parser)
        if ns.cluster:
            return run_cluster(ns)
        if ns.keygen:
            return run_keygen(ns)
        return run_demo(ns)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_node(ns: argparse.Namespace) -> int:
    from exapyte.runtime.node import serve

    cfg = _load(ns)
    if ns.data_dir:
        cfg = cfg.with_storage_path(str(Path(ns.data_dir) / "store.db"))
    return serve(cfg, instance_id=ns.instance_id)


def _load(ns: argparse.Namespace) -> config_mod.Config:
    cfg = config_mod.load(ns.config, node_id=ns.node_id)
    if ns.keys_dir:
        cfg = cfg.with_keys_dir(ns.keys_dir)
    return cfg


def run_keygen(ns: argparse.Namespace) -> int:
    from exapyte.security import generate

    cfg = config_mod.load(ns.config)
    names = {}
    for option in ("clients", "admins"):
        names[option] = tuple(n for n in getattr(ns, option).split(",") if n)
        bad = [n for n in names[option] if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", n)]
        if bad:
            raise ConfigError(f"--{option}: {bad} are not names (letters, digits, _ . -; 1..64)")
    created = generate(ns.keygen, cfg.node_ids(), admins=names["admins"], clients=names["clients"])
    for path in created:
        print(f"created {path} (secret: {path}_secret)")
    if not created:
        print(f"{ns.keygen}: every key already exists (nothing created)")
    print(
        f"nodes: {', '.join(cfg.node_ids())}; admins: {', '.join(names['admins'])}; clients: "
        f"{', '.join(names['clients'])}. Give each host its own nodes/<id>.key_secret and every "
        "public *.key (docs/deploy.md)."
    )
    return 0


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.hex()


def _arg(value: str) -> str | None:
    return None if value == ABSENT else value


CLIENT_ARITY = {
    "put": 2, "get": 1, "delete": 1, "cas": 3, "status": 0, "transfer": 1, "member": 2, "node": 2,
}


def run_client(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from exapyte.client import Client
    from exapyte.control.group import control_spec

    if not ns.args:
        parser.error("--client needs an operation: put, get, delete, cas, scan or status")
    op, *args = ns.args
    if op == "scan":
        if len(args) > 2:
            parser.error("scan takes at most START and END")
    elif op not in CLIENT_ARITY:
        parser.error(f"unknown operation {op!r}; allowed: {', '.join([*CLIENT_ARITY, 'scan'])}")
    elif len(args) != CLIENT_ARITY[op]:
        parser.error(f"{op} takes {CLIENT_ARITY[op]} argument(s), got {len(args)}")
    if ns.timeout is not None and not 0 < ns.timeout <= 600:
        parser.error(f"--timeout must be within (0, 600] seconds, got {ns.timeout}")
    if ns.consistency is not None and ns.consistency not in config_mod.CONSISTENCY_LEVELS:
        parser.error(
            f"unknown consistency level {ns.consistency!r}; allowed: "
            f"{', '.join(config_mod.CONSISTENCY_LEVELS)}"
        )
    if not 1 <= ns.limit <= limits.SCAN_LIMIT_MAX:
        parser.error(f"--limit must be within 1..{limits.SCAN_LIMIT_MAX}, got {ns.limit}")
    cfg = _load(ns)
    out: dict[str, Any] = {"op": op}
    kwargs: dict[str, Any] = {}
    if ns.timeout is not None:
        kwargs["timeout_s"] = ns.timeout
    if ns.consistency is not None:
        kwargs["consistency"] = ns.consistency
    session = Path(ns.session) if ns.session else None
    if session is not None:
        kwargs["session_tokens"] = _read_session(session)
    elif (ns.consistency or cfg.data_plane.default_consistency) == "session" and op in ("get", "scan"):
        print(
            "note: without --session FILE every call is a new session (token 0): a session read "
            "then promises no more than eventual; keep the token with --session FILE",
            file=sys.stderr,
        )
    try:
        # A one-shot call has no use for the control plane's feed: a stale descriptor costs it
        # one redirect (docs/control-plane.md).
        with Client.from_config(cfg, admin=op in ADMIN_CLI_OPS, subscribe=False, **kwargs) as client:
            if op == "put":
                out.update(key=args[0], version=client.put(args[0], args[1]))
            elif op == "get":
                got = client.get(args[0])
                out.update(key=args[0], found=got is not None)
                if got is not None:
                    out.update(value=_text(got.value), version=got.version)
            elif op == "delete":
                out.update(key=args[0], existed=client.delete(args[0]))
            elif op == "cas":
                out.update(key=args[0], swapped=client.cas(args[0], _arg(args[1]), _arg(args[2])))
            elif op == "scan":
                start, *rest = args or [""]
                if ns.after is not None:
                    start = max(start, ns.after + "\0")  # the first key after --after
                page = client.scan_page(start, *rest, limit=ns.limit)
                out["records"] = [
                    {"key": k, "value": _text(v.value), "version": v.version}
                    for k, v in page.records
                ]
                out["truncated"] = page.truncated
                if page.truncated:
                    out["next_after"] = page.records[-1][0]
                    print(
                        f"scan stopped at its limit of {ns.limit} records; more may follow "
                        f"(raise --limit, or scan again with --after {page.records[-1][0]})",
                        file=sys.stderr,
                    )
            elif op == "transfer":
                out.update(to=args[0], message=client.transfer_leader(args[0]))
            elif op == "member":
                out.update(change=args[0], member=args[1], index=client.change_membership(*args))
            elif op == "node":
                out.update(_node_change(cfg, args[0], args[1], client))
            else:
                out["status"] = client.status()
                if control_spec(cfg) is not None:
                    out["shard_map"] = _shard_map(client)
            out["ok"] = True
            out["node"] = client.last_node
            if session is not None:
                _write_session(session, client.session_tokens)
                out["session_tokens"] = {g: list(t) for g, t in sorted(client.session_tokens.items())}
    except RequestTimeout as exc:
        out.update(ok=False, error="timeout", message=str(exc))
    except RequestFailed as exc:
        out.update(ok=False, error=exc.code, message=str(exc).removeprefix(f"{exc.code}: "))
    except ExapyteError as exc:
        out.update(ok=False, error="error", message=str(exc))
    except (TypeError, ValueError) as exc:
        out.update(ok=False, error="bad_request", message=str(exc))
    print(json.dumps(out, sort_keys=True))
    return 0 if out["ok"] else 1


ADMIN_CLI_OPS = ("transfer", "member", "node")


def _shard_map(client: Any) -> dict[str, Any]:
    """The shard map as the control plane committed it (a linearizable read of its group)."""
    from exapyte.data.feed import read_plane

    try:
        plane = read_plane(client)
    except ExapyteError as exc:
        return {"error": str(exc)}
    return {
        "version": plane.version, "epoch": plane.epoch, "nodes": sorted(plane.nodes),
        "shards": {
            s: {"voters": list(e.group.voters), "learners": list(e.group.learners),
                "config_version": e.conf_version, "leader": e.leader}
            for s, e in sorted(plane.shards.items())
        },
    }


def _node_change(cfg: Any, action: str, node: str, client: Any) -> dict[str, Any]:
    """``node add ID`` / ``node remove ID``: rebalance (exapyte/control/rebalance.py), with each
    step on stderr as it happens."""
    from exapyte.control.rebalance import ClusterAdmin, node_change

    admin = ClusterAdmin(cfg, credentials=client.credentials)
    try:
        return node_change(
            cfg, action, node, admin,
            on_step=lambda text: print(text, file=sys.stderr, flush=True),
        )
    finally:
        admin.close()


def _read_session(path: Path) -> dict[str, SessionToken]:
    """The session tokens kept in ``path``, one per replica group (none when the file does not
    exist yet): ``{"tokens": {group: [term, index]}}``. Files of older releases still load: a
    token that is an int is the index-only form (term 0), and a file holding only
    ``session_index`` is the ``default`` group's token."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--session {path}: not a session file ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--session {path}: not a session file (a JSON object)")
    tokens = raw.get("tokens", {"default": raw["session_index"]} if "session_index" in raw else {})
    if not isinstance(tokens, dict):
        raise ConfigError(f"--session {path}: tokens must map group ids to [term, index]")
    from exapyte.client import session_token

    try:
        return {str(group): session_token(raw, str(group)) for group, raw in tokens.items()}
    except ValueError as exc:
        raise ConfigError(f"--session {path}: {exc}") from None


def _write_session(path: Path, tokens: dict[str, SessionToken]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"tokens": {g: list(t) for g, t in sorted(tokens.items())}}) + "\n")
    tmp.replace(path)


def run_cluster(ns: argparse.Namespace) -> int:
    from exapyte.runtime.cluster import ClusterError, LocalCluster, Supervisor

    explicit_run_dir = ns.run_dir is not None
    run_dir = Path(ns.run_dir or Path("run") / Path(ns.cluster).stem)
    cluster = LocalCluster(
        ns.cluster, run_dir, data_in_run_dir=explicit_run_dir, keys_dir=ns.keys_dir
    )
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"starting {len(cluster.node_ids)} node(s) from {ns.cluster} ...", flush=True)
    try:
        cluster.start()
        for node in cluster.cfg.cluster.nodes:
            print(f"  {node.id:>6}  {node.endpoint}  pid {cluster.procs[node.id].pid}  region {node.region}")
        print(f"cluster manifest: {run_dir / 'cluster.json'}", flush=True)
        if ns.smoke:
            smoke(cluster)
        if ns.once:
            return 0
        if cluster.keys_dir is not None:
            print(f"keys: {cluster.keys_dir} (clients use clients/client, admin operations "
                  "admins/admin)", flush=True)
        print("cluster running; Ctrl-C stops it", flush=True)
        supervisor = Supervisor(
            cluster, restart=not ns.no_restart,
            say=lambda line: print(line, file=sys.stderr, flush=True),
        )
        while not stopping:
            supervisor.poll()
            time.sleep(0.2)
        return 0
    except (ClusterError, ExapyteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        codes = cluster.stop()
        print(f"stopped: {json.dumps(codes, sort_keys=True)}", flush=True)


def smoke(cluster: Any) -> None:
    """Show the cluster working: a put, a get, a cas and a delete through the client."""
    key = f"hello-{int(time.time())}"
    with cluster.client(timeout_s=10.0) as client:
        steps = [
            ("put", lambda: {"version": client.put(key, "world")}),
            ("get", lambda: _got(client.get(key))),
            ("cas", lambda: {"swapped": client.cas(key, "world", "exapyte")}),
            ("get", lambda: _got(client.get(key))),
            ("delete", lambda: {"existed": client.delete(key)}),
            ("get", lambda: _got(client.get(key))),
        ]
        for name, step in steps:
            result = step()
            print(json.dumps({"op": name, "key": key, **result, "node": client.last_node}, sort_keys=True), flush=True)


def _got(record: Any) -> dict[str, Any]:
    if record is None:
        return {"found": False}
    return {"found": True, "value": _text(record.value), "version": record.version}


def run_demo(ns: argparse.Namespace) -> int:
    if ns.demo not in DEMOS:
        print(f"error: unknown demo {ns.demo!r}; allowed: {', '.join(DEMOS)}", file=sys.stderr)
        return 2
    if ns.demo == "consensus":
        from exapyte.demos import consensus

        try:
            params = consensus.params_from(ns.param, real=ns.real)
        except ValueError as exc:
            print(f"error: --param: {exc}", file=sys.stderr)
            return 2
        return consensus.main(ns.out, real=ns.real, params=params)
    if ns.demo == "distribution":
        from exapyte.demos import distribution

        try:
            dist_params = distribution.params_from(ns.param)
        except ValueError as exc:
            print(f"error: --param: {exc}", file=sys.stderr)
            return 2
        return distribution.main(ns.out, real=ns.real, params=dist_params)
    from exapyte.demos import replication

    try:
        repl_params = replication.params_from(ns.param)
    except ValueError as exc:
        print(f"error: --param: {exc}", file=sys.stderr)
        return 2
    return replication.main(ns.out, real=ns.real, params=repl_params)
