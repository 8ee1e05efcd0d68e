"""Keys: who is a member, who is an admin, who is a client (ZeroMQ CURVE).

Theory of operation
-------------------
With ``security.mode: curve`` (the default) every ZeroMQ link is a CurveZMQ connection: it is
encrypted, the client proves it holds the secret key of its public key, and it talks only to a
server whose public key it was given. Each key pair belongs to one **principal**, and the
directory a key file sits in decides what that principal may do::

    KEYS_DIR/
      nodes/<node id>.key          a cluster member (one per node of the cluster file)
      nodes/<node id>.key_secret   ...its secret: only on that node's host
      admins/<name>.key            may also make admin requests (membership, transfer, clock)
      clients/<name>.key           may read and write
      (each *.key_secret beside its *.key, readable by its owner only)

The files are ZeroMQ's certificate format (``zmq.auth``). A node needs its own secret and every
public key; a client needs its own pair and the nodes' public keys. ``python main.py --keygen
DIR --config FILE`` creates whatever is missing: one pair per node of the config, an ``admin`` and
a ``client``. Existing keys are never overwritten.

A node's ZAP handler (:mod:`exapyte.runtime.auth`) maps the public key that completed a handshake
to a principal's **user id** (``node:n2``, ``admin:admin``, ``client:client``, ``anon``), which
ZeroMQ then attaches to every frame of that connection, so the node knows who sent each frame.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec
import zmq
import zmq.auth

from exapyte.errors import ConfigError, ExapyteError

ROLES = ("nodes", "admins", "clients")
DEFAULT_ADMIN = "admin"
DEFAULT_CLIENT = "client"
ANONYMOUS = "anon"
KEY_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


class KeyFileError(ConfigError):
    """A key file is missing, unreadable or malformed."""


class Principal(msgspec.Struct, frozen=True):
    """Who holds a key: ``role`` is one of :data:`ROLES`."""

    role: str
    name: str

    @property
    def user_id(self) -> str:
        return f"{self.role.removesuffix('s')}:{self.name}"


def user_id_role(user_id: str) -> tuple[str, str]:
    """``node:n2`` -> (``node``, ``n2``); ``anon`` -> (``anon``, ``""``)."""
    role, _, name = user_id.partition(":")
    return role, name


def _check_curve() -> None:
    if not zmq.has("curve"):
        raise ConfigError(
            "security.mode is 'curve' but this libzmq was built without CURVE; install a pyzmq "
            "wheel (which bundles CURVE) or set security.mode to 'off' on loopback"
        )


def key_path(keys_dir: Path, role: str, name: str, *, secret: bool = False) -> Path:
    return Path(keys_dir) / role / (name + (SECRET_SUFFIX if secret else KEY_SUFFIX))


def generate(keys_dir: str | Path, node_ids: list[str], *, admins: tuple[str, ...] = (DEFAULT_ADMIN,),
             clients: tuple[str, ...] = (DEFAULT_CLIENT,)) -> list[Path]:
    """Create the key pairs that are missing under ``keys_dir``; returns the public key files
    created. Secret files are made readable by their owner only."""
    _check_curve()
    base = Path(keys_dir)
    created: list[Path] = []
    for role, names in (("nodes", node_ids), ("admins", admins), ("clients", clients)):
        folder = base / role
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            public = key_path(base, role, name)
            secret = key_path(base, role, name, secret=True)
            if public.exists() and secret.exists():
                continue
            if public.exists() != secret.exists():
                raise KeyFileError(
                    f"{public if public.exists() else secret} exists without its pair; remove it "
                    "or restore the other half"
                )
            pub_file, sec_file = zmq.auth.create_certificates(str(folder), name)
            os.chmod(sec_file, stat.S_IRUSR | stat.S_IWUSR)
            created.append(Path(pub_file))
    return created


def _load_public(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc}") from None
    if not public or len(public) != 40:
        raise KeyFileError(f"{path} holds no valid CURVE public key")
    return public


def _load_pair(path: Path) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read secret key {path}: {exc}") from None
    if not public or not secret:
        raise KeyFileError(f"{path} holds no CURVE secret key")
    return public, secret


class KeyRing(msgspec.Struct, frozen=True):
    """What a node knows: its own pair, and every principal's public key (Z85, 40 bytes)."""

    own_public: bytes
    own_secret: bytes
    members: dict[str, bytes]  # node id -> public key
    principals: dict[bytes, Principal]  # public key -> who holds it

    def principal(self, public: bytes) -> Principal | None:
        return self.principals.get(public)


def _publics(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {
        p.name.removesuffix(KEY_SUFFIX): _load_public(p)
        for p in sorted(folder.iterdir())
        if p.name.endswith(KEY_SUFFIX)
    }


def missing_keys_hint(keys_dir: Path, config_path: str | None) -> str:
    config = f" --config {config_path}" if config_path else ""
    return f"create the keys with: python main.py --keygen {keys_dir}{config}"


def load_keyring(keys_dir: str | Path, node_id: str, node_ids: list[str],
                 config_path: str | None = None) -> KeyRing:
    """A node's key ring; raises :class:`KeyFileError` naming the missing file and the fix."""
    _check_curve()
    base = Path(keys_dir)
    own = key_path(base, "nodes", node_id, secret=True)
    if not own.exists():
        raise KeyFileError(
            f"security.mode is 'curve' but {own} does not exist; "
            + missing_keys_hint(base, config_path)
        )
    own_public, own_secret = _load_pair(own)
    members = _publics(base / "nodes")
    absent = [n for n in node_ids if n not in members]
    if absent:
        raise KeyFileError(
            f"no public key for member(s) {absent} in {base / 'nodes'}; "
            + missing_keys_hint(base, config_path)
        )
    if members[node_id] != own_public:
        raise KeyFileError(f"{key_path(base, 'nodes', node_id)} does not match {own}")
    principals: dict[bytes, Principal] = {}
    for role in ROLES:
        names = _publics(base / role)
        for name, public in names.items():
            if role == "nodes" and name not in node_ids:
                continue  # a key of a node this cluster does not have grants nothing
            if public in principals:
                raise KeyFileError(
                    f"the same public key is {principals[public].user_id} and {role}/{name}"
                )
            principals[public] = Principal(role, name)
    return KeyRing(own_public, own_secret, {n: members[n] for n in node_ids}, principals)


class Credentials(msgspec.Struct, frozen=True):
    """What a client needs: its own pair and each node's public key, by endpoint."""

    public: bytes
    secret: bytes
    server_keys: dict[str, bytes]  # tcp://host:port -> that node's public key

    def server_key(self, endpoint: str) -> bytes:
        key = self.server_keys.get(endpoint)
        if key is None:
            raise ExapyteError(
                f"no server key known for {endpoint}: it is not a node of the cluster the "
                f"credentials were made for (known: {', '.join(sorted(self.server_keys))})"
            )
        return key

    def apply(self, sock: zmq.Socket, endpoint: str) -> None:  # type: ignore[type-arg]
        """Make ``sock`` a CURVE client of the node at ``endpoint`` (before connect)."""
        make_curve_client(sock, self.public, self.secret, self.server_key(endpoint))


def make_curve_client(sock: zmq.Socket, public: bytes, secret: bytes, server_key: bytes) -> None:  # type: ignore[type-arg]
    """The next ``connect`` of ``sock`` is a CURVE client, holding the pair (``public``,
    ``secret``), of the server holding ``server_key``."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


def load_credentials(keys_dir: str | Path, endpoints: dict[str, str], *, role: str = "clients",
                     name: str | None = None, config_path: str | None = None) -> Credentials:
    """A client's credentials: the pair ``KEYS_DIR/<role>/<name>`` and the public key of every
    node in ``endpoints`` (node id -> endpoint). ``role`` is ``clients`` or ``admins``."""
    _check_curve()
    if role not in ("clients", "admins", "nodes"):
        raise ValueError(f"role must be clients, admins or nodes, got {role!r}")
    base = Path(keys_dir)
    name = name or (DEFAULT_ADMIN if role == "admins" else DEFAULT_CLIENT)
    path = key_path(base, role, name, secret=True)
    if not path.exists():
        raise KeyFileError(f"no client key {path}; " + missing_keys_hint(base, config_path))
    public, secret = _load_pair(path)
    server_keys: dict[str, bytes] = {}
    for node_id, endpoint in endpoints.items():
        node_key = key_path(base, "nodes", node_id)
        if not node_key.exists():
            raise KeyFileError(
                f"no public key for node {node_id} ({node_key}); "
                + missing_keys_hint(base, config_path)
            )
        server_keys[endpoint] = _load_public(node_key)
    return Credentials(public, secret, server_keys)
