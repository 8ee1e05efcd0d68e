"""The Toxiproxy 2.x HTTP API of exapyte's server: exact status codes, bodies and headers
(raw ``requests`` / ``http.client``), and the flows of the ``toxiproxy-python`` client."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import pytest
import requests
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from harness.toxiproxy import API_VERSION, ToxiproxyServer

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
UPSTREAM = "127.0.0.1:9"  # never dialled in these tests


@pytest.fixture()
def api() -> Iterator[str]:
    with ToxiproxyServer("127.0.0.1", 0).run_in_thread() as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture()
def session() -> Iterator[requests.Session]:
    with requests.Session() as opened:
        yield opened


def create(session: requests.Session, api: str, name: str = "p", **fields: object) -> dict:
    body = {"name": name, "upstream": UPSTREAM, "listen": "127.0.0.1:0", **fields}
    reply = session.post(f"{api}/proxies", json=body, timeout=5)
    assert reply.status_code == 201, reply.text
    return reply.json()


def error_body(message: str, status: int) -> str:
    return json.dumps({"error": message, "status": status}, separators=(",", ":")) + "\n"


def assert_error(reply: requests.Response, status: int, message: str) -> None:
    assert reply.status_code == status
    assert reply.headers["Content-Type"] == TEXT
    assert reply.text == error_body(message, status)


# --- cross-cutting ------------------------------------------------------------------------------


def test_version(api: str, session: requests.Session) -> None:
    reply = session.get(f"{api}/version", timeout=5)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json;charset=utf-8"
    assert reply.text == f'{{"version": "{API_VERSION}"}}\n'


def test_every_reply_has_a_request_id(api: str, session: requests.Session) -> None:
    ids = set()
    for method, path in [("GET", "/version"), ("GET", "/nowhere"), ("DELETE", "/reset")]:
        reply = session.request(method, f"{api}{path}", timeout=5)
        ids.add(reply.headers["X-Toxiproxy-Request-Id"])
    assert len(ids) == 3 and all(len(value) == 20 for value in ids)


def test_unknown_path_is_404_and_wrong_method_is_405(api: str, session: requests.Session) -> None:
    missing = session.get(f"{api}/nowhere", timeout=5)
    assert (missing.status_code, missing.text) == (404, "404 page not found\n")
    assert missing.headers["Content-Type"] == TEXT
    for method, path in [("DELETE", "/reset"), ("PUT", "/proxies"), ("GET", "/populate")]:
        reply = session.request(method, f"{api}{path}", timeout=5)
        assert (reply.status_code, reply.content) == (405, b"")


def test_unclean_paths_redirect(api: str) -> None:
    host, port = api.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "//proxies")
        response = connection.getresponse()
        response.read()
        assert (response.status, response.getheader("Location")) == (301, "/proxies")
    finally:
        connection.close()


def test_browsers_are_refused(api: str, session: requests.Session) -> None:
    reply = session.get(f"{api}/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"}, timeout=5)
    assert (reply.status_code, reply.text) == (403, "User agent not allowed\n")


def test_keep_alive_serves_several_requests_on_one_connection(api: str) -> None:
    host, port = api.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/proxies")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"{}")
        connection.request("POST", "/reset")
        response = connection.getresponse()
        assert (response.status, response.read()) == (204, b"")
    finally:
        connection.close()


# --- proxies ------------------------------------------------------------------------------------


def test_create_resolves_port_zero_and_lists(api: str, session: requests.Session) -> None:
    created = create(session, api, "alpha")
    host, port = created["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert created == {
        "name": "alpha",
        "listen": created["listen"],
        "upstream": UPSTREAM,
        "enabled": True,
        "Logger": {},
        "toxics": [],
    }
    with socket.create_connection((host, int(port)), timeout=5):
        pass  # it listens
    assert session.get(f"{api}/proxies", timeout=5).json() == {"alpha": created}
    assert session.get(f"{api}/proxies/alpha", timeout=5).json() == created


def test_localhost_port_zero_resolves_to_ipv4(api: str, session: requests.Session) -> None:
    created = create(session, api, listen="localhost:0")
    assert created["listen"].startswith("127.0.0.1:")


def test_create_errors(api: str, session: requests.Session) -> None:
    url = f"{api}/proxies"
    create(session, api, "dup")
    assert_error(
        session.post(url, json={"name": "dup", "upstream": UPSTREAM}, timeout=5),
        409,
        "proxy already exists",
    )
    assert_error(
        session.post(url, json={"upstream": UPSTREAM}, timeout=5), 400, "missing required field: name"
    )
    assert_error(
        session.post(url, json={"name": "x"}, timeout=5), 400, "missing required field: upstream"
    )
    assert_error(session.post(url, data=b"", timeout=5), 400, "bad request body: EOF")
    bad_json = session.post(url, data=b"{nope", timeout=5)
    assert bad_json.status_code == 400
    assert bad_json.json()["error"].startswith("bad request body: invalid character")
    assert_error(
        session.post(url, json={"name": "x", "upstream": UPSTREAM, "enabled": "yes"}, timeout=5),
        400,
        "bad request body: json: cannot unmarshal string into Go struct field Proxy.enabled "
        "of type bool",
    )
    assert_error(
        session.post(url, json={"name": "x", "upstream": UPSTREAM, "listen": "bad"}, timeout=5),
        500,
        "address bad: missing port in address",
    )


def test_create_on_a_busy_port_is_500_with_the_os_error(api: str, session: requests.Session) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        reply = session.post(
            f"{api}/proxies",
            json={"name": "x", "upstream": UPSTREAM, "listen": f"127.0.0.1:{port}"},
            timeout=5,
        )
    assert_error(reply, 500, f"listen tcp 127.0.0.1:{port}: bind: address already in use")
    assert session.get(f"{api}/proxies", timeout=5).json() == {}


def test_disabled_proxy_keeps_listen_as_given(api: str, session: requests.Session) -> None:
    created = create(session, api, enabled=False)
    assert (created["listen"], created["enabled"]) == ("127.0.0.1:0", False)


def test_update_semantics(api: str, session: requests.Session) -> None:
    created = create(session, api, "u")
    url = f"{api}/proxies/u"
    first_port = int(created["listen"].rsplit(":", 1)[1])

    same = session.patch(url, json={"name": "renamed"}, timeout=5).json()
    assert same == created  # renaming is impossible; nothing else changed

    disabled = session.post(url, json={"enabled": False}, timeout=5).json()
    assert disabled["enabled"] is False and disabled["listen"] == created["listen"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", first_port), timeout=5).close()

    enabled = session.patch(url, json={"enabled": True}, timeout=5).json()
    assert enabled["listen"] == created["listen"]  # the same address again

    moved = session.patch(url, json={"listen": "127.0.0.1:0"}, timeout=5).json()
    assert moved["enabled"] is True and moved["listen"] != created["listen"]

    upstream = session.patch(url, json={"upstream": "127.0.0.1:10"}, timeout=5).json()
    assert upstream["upstream"] == "127.0.0.1:10"

    assert_error(session.patch(f"{api}/proxies/none", json={}, timeout=5), 404, "proxy not found")
    assert_error(session.patch(url, data=b"", timeout=5), 400, "bad request body: EOF")
    assert_error(session.patch(url, json={"listen": "bad"}, timeout=5), 500, "address bad: missing port in address")


def test_delete(api: str, session: requests.Session) -> None:
    create(session, api, "d")
    reply = session.delete(f"{api}/proxies/d", timeout=5)
    assert (reply.status_code, reply.content) == (204, b"")
    assert "Content-Length" not in reply.headers
    assert_error(session.delete(f"{api}/proxies/d", timeout=5), 404, "proxy not found")
    assert_error(session.get(f"{api}/proxies/d", timeout=5), 404, "proxy not found")


def test_populate(api: str, session: requests.Session) -> None:
    url = f"{api}/populate"
    empty = session.post(url, json=[], timeout=5)
    assert (empty.status_code, empty.text) == (201, '{"proxies":null}')

    fixed = {"name": "fixed", "upstream": UPSTREAM, "listen": "127.0.0.1:0"}
    first = session.post(url, json=[fixed], timeout=5)
    assert first.status_code == 201 and first.headers["Content-Type"] == JSON
    fixed_listen = first.json()["proxies"][0]["listen"]

    # the same resolved listen and upstream: kept; port 0 never matches: replaced
    kept = session.post(url, json=[{**fixed, "listen": fixed_listen}], timeout=5).json()
    assert kept["proxies"][0]["listen"] == fixed_listen
    replaced = session.post(url, json=[fixed], timeout=5).json()
    assert replaced["proxies"][0]["listen"] != fixed_listen

    failed = session.post(url, json=[{"name": "ok", "upstream": UPSTREAM, "listen": "127.0.0.1:0"}, {"upstream": UPSTREAM}], timeout=5)
    assert failed.status_code == 400 and failed.headers["Content-Type"] == JSON
    body = failed.json()
    assert (body["error"], body["status"]) == ("missing required field: name at proxy 2", 400)
    assert [proxy["name"] for proxy in body["proxies"]] == ["ok"]
    assert "ok" in session.get(f"{api}/proxies", timeout=5).json()  # stays created

    none_created = session.post(url, json=[{"name": "x"}], timeout=5).json()
    assert none_created == {
        "error": "missing required field: upstream at proxy 1",
        "status": 400,
        "proxies": None,
    }


# --- toxics -------------------------------------------------------------------------------------

ZERO_ATTRIBUTES = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
    "noop": {},
}


@pytest.mark.parametrize("toxic_type", sorted(ZERO_ATTRIBUTES))
def test_toxic_defaults_and_zero_filled_attributes(
    api: str, session: requests.Session, toxic_type: str
) -> None:
    create(session, api)
    reply = session.post(f"{api}/proxies/p/toxics", json={"type": toxic_type}, timeout=5)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == JSON
    assert reply.json() == {
        "attributes": ZERO_ATTRIBUTES[toxic_type],
        "name": f"{toxic_type}_downstream",
        "type": toxic_type,
        "stream": "downstream",
        "toxicity": 1,
    }
    assert '"toxicity":1}' in reply.text


def test_toxic_create_rules(api: str, session: requests.Session) -> None:
    create(session, api)
    url = f"{api}/proxies/p/toxics"
    upper = session.post(url, json={"type": "timeout", "stream": "UPSTREAM", "toxicity": 0.5}, timeout=5)
    assert upper.json()["name"] == "timeout_UPSTREAM" and upper.json()["stream"] == "UPSTREAM"
    assert '"toxicity":0.5' in upper.text
    assert_error(
        session.post(url, json={"type": "latency", "name": "timeout_UPSTREAM"}, timeout=5),
        409,
        "toxic already exists",
    )
    assert_error(
        session.post(url, json={"type": "latency", "stream": "sideways"}, timeout=5),
        400,
        "stream was invalid, can be either upstream or downstream",
    )
    assert_error(session.post(url, json={"type": "down"}, timeout=5), 400, "invalid toxic type")
    assert_error(
        session.post(url, json={"type": "latency", "attributes": {"latency": "slow"}}, timeout=5),
        400,
        "bad request body: json: cannot unmarshal string into Go struct field "
        "LatencyToxic.attributes.latency of type int64",
    )
    extra = session.post(
        url, json={"type": "latency", "attributes": {"latency": 5, "colour": "red"}}, timeout=5
    )
    assert extra.json()["attributes"] == {"latency": 5, "jitter": 0}
    assert_error(session.post(f"{api}/proxies/none/toxics", json={"type": "noop"}, timeout=5), 404, "proxy not found")


def test_toxic_list_is_upstream_first(api: str, session: requests.Session) -> None:
    create(session, api)
    url = f"{api}/proxies/p/toxics"
    for name, stream in [("d1", "downstream"), ("u1", "upstream"), ("d2", "downstream"), ("u2", "upstream")]:
        session.post(url, json={"type": "noop", "name": name, "stream": stream}, timeout=5)
    assert [toxic["name"] for toxic in session.get(url, timeout=5).json()] == ["u1", "u2", "d1", "d2"]
    shown = session.get(f"{api}/proxies/p", timeout=5).json()["toxics"]
    assert [toxic["name"] for toxic in shown] == ["u1", "u2", "d1", "d2"]


def test_toxic_update_merges_and_ignores_identity(api: str, session: requests.Session) -> None:
    create(session, api)
    session.post(
        f"{api}/proxies/p/toxics",
        json={"type": "latency", "name": "lat", "toxicity": 0.25, "attributes": {"latency": 100}},
        timeout=5,
    )
    url = f"{api}/proxies/p/toxics/lat"
    updated = session.patch(
        url,
        json={"attributes": {"jitter": 5}, "type": "timeout", "stream": "upstream", "name": "z"},
        timeout=5,
    ).json()
    assert updated == {
        "attributes": {"latency": 100, "jitter": 5},
        "name": "lat",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 0.25,
    }
    posted = session.post(url, json={"toxicity": 1}, timeout=5).json()
    assert posted["toxicity"] == 1 and posted["attributes"]["jitter"] == 5
    assert session.get(url, timeout=5).json() == posted
    assert_error(session.patch(f"{api}/proxies/p/toxics/none", json={}, timeout=5), 404, "toxic not found")
    assert_error(
        session.patch(url, json={"toxicity": "high"}, timeout=5),
        400,
        "bad request body: json: cannot unmarshal string into Go struct field .toxicity of type float32",
    )


def test_toxic_delete_and_reset(api: str, session: requests.Session) -> None:
    create(session, api)
    create(session, api, "q", enabled=False)
    session.post(f"{api}/proxies/p/toxics", json={"type": "noop", "name": "n"}, timeout=5)
    deleted = session.delete(f"{api}/proxies/p/toxics/n", timeout=5)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert_error(session.delete(f"{api}/proxies/p/toxics/n", timeout=5), 404, "toxic not found")
    assert_error(session.get(f"{api}/proxies/p/toxics/n", timeout=5), 404, "toxic not found")
    session.post(f"{api}/proxies/p/toxics", json={"type": "latency"}, timeout=5)
    reset = session.post(f"{api}/reset", timeout=5)
    assert (reset.status_code, reset.content) == (204, b"")
    proxies = session.get(f"{api}/proxies", timeout=5).json()
    assert proxies["p"]["toxics"] == [] and proxies["q"]["enabled"] is True


# --- the toxiproxy-python client ----------------------------------------------------------------


def test_toxiproxy_python_client_flows(api: str) -> None:
    host, port = api.removeprefix("http://").rsplit(":", 1)
    client = Toxiproxy()
    client.update_api_consumer(host, int(port))
    assert client.running()
    assert json.loads(client.version()) == {"version": API_VERSION}

    proxy = client.create(upstream=UPSTREAM, name="py")
    assert proxy.listen.startswith("127.0.0.1:") and proxy.enabled is True
    with pytest.raises(ProxyExists):
        client.create(upstream=UPSTREAM, name="py")
    assert set(client.proxies()) == {"py"}
    assert client.get_proxy("py").upstream == UPSTREAM

    proxy.add_toxic(type="latency", attributes={"latency": 10})
    proxy.add_toxic(type="timeout", stream="upstream", name="cut", toxicity=0.5)
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "cut"}
    assert toxics["cut"].stream == "upstream" and toxics["cut"].toxicity == 0.5
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="noop", name="cut")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="nonsense")
    assert proxy.destroy_toxic("cut") is True
    with pytest.raises(NotFound):
        proxy.destroy_toxic("cut")

    with proxy.down():
        assert client.get_proxy("py").enabled is False
    assert client.get_proxy("py").enabled is True
    assert client.reset() is True
    assert proxy.toxics() == {}

    populated = client.populate([{"name": "pop", "upstream": UPSTREAM, "listen": "127.0.0.1:0"}])
    assert [created.name for created in populated] == ["pop"]
    client.destroy_all()
    assert client.proxies() == {}
