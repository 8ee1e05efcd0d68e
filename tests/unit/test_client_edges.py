"""The client refuses impossible calls at once, before anything reaches the network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exapyte import config, limits
from exapyte.client import Client
from exapyte.errors import ExapyteError
from exapyte.security import Credentials

ENDPOINT = "tcp://127.0.0.1:1"  # nothing listens there: a call that reached the network would time out


@pytest.fixture
def client():
    c = Client(ENDPOINT, timeout_s=0.2)
    yield c
    assert not c._sockets, "the refused call opened a connection"
    c.close()


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda c: c.cas(1, "a", "b"), TypeError, "key must be str, not int"),
        (lambda c: c.cas("k", 5, "b"), TypeError, "expected must be str or bytes or None, not int"),
        (lambda c: c.cas("k", "a", ["b"]), TypeError, "new must be str or bytes or None, not list"),
        (lambda c: c.put("k", None), TypeError, "value must be str or bytes, not None"),
        (lambda c: c.put(b"k", "v"), TypeError, "key must be str, not bytes"),
        (lambda c: c.put("", "v"), ValueError, "key must not be empty"),
        (lambda c: c.put("k" * (limits.KEY_BYTES_MAX + 1), "v"), ValueError, f"limit is {limits.KEY_BYTES_MAX} bytes"),
        (lambda c: c.put("\ud800", "v"), ValueError, "surrogate"),
        (lambda c: c.put("k", b"x" * (limits.VALUE_BYTES_MAX + 1)), ValueError, f"limit is {limits.VALUE_BYTES_MAX} bytes"),
        (lambda c: c.put("k", b"x" * 20_000_000), ValueError, "VALUE_BYTES_MAX"),
        (lambda c: c.get("k", timeout_s=-1), ValueError, "timeout_s must be within"),
        (lambda c: c.get("k", timeout_s=0), ValueError, "timeout_s must be within"),
        (lambda c: c.get("k", timeout_s="soon"), TypeError, "timeout_s must be a number"),
        (lambda c: c.get("k", consistency="psychic"), ValueError, "unknown consistency level"),
        (lambda c: c.scan(limit=0), ValueError, f"1..{limits.SCAN_LIMIT_MAX}"),
        (lambda c: c.scan(limit="all"), TypeError, "limit must be int"),
        (lambda c: c.scan(start=3), TypeError, "start must be str"),
        (lambda c: c.change_membership("promote", "n1"), ValueError, "unknown membership change"),
        (lambda c: c.transfer_leader(7), TypeError, "to must be str"),
    ],
)
def test_impossible_calls_raise_at_once(client: Client, call, error, fragment: str) -> None:
    with pytest.raises(error) as info:
        call(client)
    assert fragment in str(info.value)


def test_impossible_construction_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Client(ENDPOINT, timeout_s=-5)
    with pytest.raises(ValueError, match="consistency"):
        Client(ENDPOINT, consistency="linearish")
    with pytest.raises(ValueError, match="session_index"):
        Client(ENDPOINT, session_index=-1)
    with pytest.raises(TypeError, match="client_id"):
        Client(ENDPOINT, client_id=42)  # type: ignore[arg-type]


def test_from_config_reads_timeout_and_default_level(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({
        "cluster": {"nodes": [{"id": "n1", "port": 7000}]},
        "network": {"request_timeout_ms": 750},
        "data_plane": {"default_consistency": "eventual"},
        "security": {"mode": "off"},
    }))
    with Client.from_config(config.load(path)) as c:
        assert c.timeout_s == 0.75
        assert c.consistency == "eventual"
        assert c.credentials is None


def test_from_config_with_curve_needs_the_client_key(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({
        "cluster": {"nodes": [{"id": "n1", "port": 7000}]},
        "security": {"keys_dir": str(tmp_path / "keys")},
    }))
    with pytest.raises(ExapyteError, match="--keygen"):
        Client.from_config(config.load(path))


def test_a_node_the_credentials_do_not_know_is_refused_clearly() -> None:
    creds = Credentials(b"p" * 40, b"s" * 40, {"tcp://127.0.0.1:7000": b"k" * 40})
    with Client("tcp://127.0.0.1:7999", timeout_s=0.2, credentials=creds) as c:
        with pytest.raises(ExapyteError, match="no server key known for tcp://127.0.0.1:7999"):
            c.get("k")
