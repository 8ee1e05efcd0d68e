"""Keys, the ZAP answers and the admission rules, without sockets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
from zmq.utils import z85

from exapyte.runtime.auth import PUB_DOMAIN, ROUTER_DOMAIN, Gate, ZapHandler
from exapyte.security import (
    KeyFileError,
    generate,
    key_path,
    load_credentials,
    load_keyring,
)

NODES = ["n1", "n2", "n3"]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate(tmp_path / "keys", NODES, admins=("ops",), clients=("web", "batch"))
    return tmp_path / "keys"


def zap_request(public_z85: bytes, *, domain: bytes = ROUTER_DOMAIN, mechanism: bytes = b"CURVE") -> list[bytes]:
    return [b"1.0", b"7", domain, b"10.0.0.9", b"", mechanism, z85.decode(public_z85)]


class Answerer(ZapHandler):
    """The handler's decisions without its socket."""

    def __init__(self, keyring, gate, *, anonymous: bool) -> None:  # type: ignore[no-untyped-def]
        self.keyring, self.gate, self.anonymous = keyring, gate, anonymous


def answer(handler: Answerer, frames: list[bytes]) -> tuple[bytes, bytes]:
    reply = handler._answer(frames)
    assert reply[0] == b"1.0" and reply[1] == b"7"
    return reply[2], reply[4]


def public_of(keys: Path, role: str, name: str) -> bytes:
    return zmq.auth.load_certificate(str(key_path(keys, role, name)))[0]


def test_generate_creates_pairs_once_with_private_secrets(keys: Path) -> None:
    secret = key_path(keys, "nodes", "n1", secret=True)
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    before = secret.read_bytes()
    created = generate(keys, NODES + ["n4"], admins=("ops",), clients=("web",))
    assert created == [key_path(keys, "nodes", "n4")]  # only the missing one
    assert secret.read_bytes() == before
    key_path(keys, "clients", "web", secret=True).unlink()
    with pytest.raises(KeyFileError, match="without its pair"):
        generate(keys, NODES, clients=("web",))


def test_each_key_maps_to_its_principal(keys: Path) -> None:
    ring = load_keyring(keys, "n1", NODES)
    gate = Gate("n1", set(NODES), secure=True)
    zap = Answerer(ring, gate, anonymous=False)
    assert answer(zap, zap_request(public_of(keys, "nodes", "n2"))) == (b"200", b"node:n2")
    assert answer(zap, zap_request(public_of(keys, "admins", "ops"))) == (b"200", b"admin:ops")
    assert answer(zap, zap_request(public_of(keys, "clients", "batch"))) == (b"200", b"client:batch")
    assert answer(zap, zap_request(public_of(keys, "clients", "web"), domain=PUB_DOMAIN)) == (b"200", b"client:web")
    stranger, _ = zmq.curve_keypair()
    assert answer(zap, zap_request(stranger))[0] == b"400"
    assert answer(zap, zap_request(public_of(keys, "nodes", "n2"), mechanism=b"PLAIN"))[0] == b"400"
    assert answer(zap, zap_request(public_of(keys, "nodes", "n2"), domain=b"other"))[0] == b"400"
    assert gate.counters == {"auth_unknown_key": 1, "auth_mechanism": 1, "auth_domain": 1}


def test_anonymous_clients_get_no_more_than_a_client(keys: Path) -> None:
    ring = load_keyring(keys, "n1", NODES)
    gate = Gate("n1", set(NODES), secure=True)
    zap = Answerer(ring, gate, anonymous=True)
    stranger, _ = zmq.curve_keypair()
    assert answer(zap, zap_request(stranger)) == (b"200", b"anon")
    assert answer(zap, zap_request(stranger, domain=PUB_DOMAIN))[0] == b"400"
    assert not gate.may_admin("anon")
    assert not gate.admit_peer("anon", "n2", "n1")


def test_a_key_of_a_node_outside_the_cluster_grants_nothing(keys: Path) -> None:
    generate(keys, ["n9"])
    ring = load_keyring(keys, "n1", NODES)
    zap = Answerer(ring, Gate("n1", set(NODES), secure=True), anonymous=False)
    assert answer(zap, zap_request(public_of(keys, "nodes", "n9")))[0] == b"400"


def test_admission_rules() -> None:
    gate = Gate("n1", set(NODES), secure=True)
    assert gate.admit_peer("node:n2", "n2", "n1")
    assert not gate.admit_peer("node:n2", "n3", "n1")  # in another member's name
    assert not gate.admit_peer("node:n2", "n2", "n3")  # for another node
    assert not gate.admit_peer("client:web", "n2", "n1")
    assert not gate.admit_peer("admin:ops", "n2", "n1")
    assert not gate.admit_peer("node:n9", "n9", "n1")
    assert not gate.admit_peer(None, "n2", "n1")
    assert gate.may_admin("admin:ops") and not gate.may_admin("client:web") and not gate.may_admin("node:n2")
    assert gate.counters == {"peer_sender_mismatch": 1, "peer_wrong_receiver": 1, "peer_not_member": 4}
    open_gate = Gate("n1", set(NODES), secure=False)
    assert open_gate.admit_peer(None, "anyone", "n1") and open_gate.may_admin(None)


def test_missing_keys_are_named_with_the_fix(tmp_path: Path, keys: Path) -> None:
    with pytest.raises(KeyFileError, match=r"n7.key_secret does not exist.*--keygen"):
        load_keyring(keys, "n7", NODES + ["n7"])
    key_path(keys, "nodes", "n3").unlink()
    with pytest.raises(KeyFileError, match=r"no public key for member\(s\) \['n3'\]"):
        load_keyring(keys, "n1", NODES)
    with pytest.raises(KeyFileError, match="no public key for node n3"):
        load_credentials(keys, {"n3": "tcp://127.0.0.1:1"}, name="web")
    with pytest.raises(KeyFileError, match="no client key"):
        load_credentials(tmp_path / "nowhere", {})


def test_refusals_are_logged_at_a_rate_limit(caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate("n1", set(NODES), secure=True)
    with caplog.at_level("WARNING", logger="exapyte.runtime.auth"):
        for _ in range(50):
            gate.refuse("auth_unknown_key", "10.0.0.9: key abc...")
    assert gate.counters["auth_unknown_key"] == 50
    assert len(caplog.records) == 1 and "10.0.0.9" in caplog.records[0].getMessage()
