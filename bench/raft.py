"""Consensus benchmark: durable closed-loop puts against exapyte (Raft, Multi-Paxos, ZAB), etcd
and PySyncObj on one machine.

    python bench/raft.py [--seconds S] [--clients 1,16,64]
                         [--systems exapyte,exapyte+curve,exapyte-multipaxos,exapyte-zab,etcd,
                                    pysyncobj] [--workers auto|K]
                         [--rounds 2] [--side-by-side exapyte|all]
                         [--json bench/results/raft.json] [--profile DIR]

Theory of operation
-------------------
Every system runs as a three-member cluster on 127.0.0.1 with its data in a temporary directory
on the same (non-tmpfs) file system as ``--json``, started and stopped by this script:

- **exapyte**: ``LocalCluster`` over a copy of ``topologies/three-node.json`` with free ports and
  the sqlite backend (WAL, ``synchronous=FULL``): a put is acknowledged after the entry is fsynced
  on a majority and applied. It runs twice, as two systems: ``exapyte`` with ``security.mode:
  off`` (plain ZMTP) and ``exapyte+curve`` with ``security.mode: curve`` (every link, between the
  nodes and from each client, is CurveZMQ; LocalCluster makes the keys in the scratch directory).
  The two clusters run side by side and their points alternate (below), so that CURVE's cost is
  measured on the same machine within seconds. Two more systems run the same cluster with
  another ``consensus.protocol`` and ``security.mode: off``: ``exapyte-multipaxos`` and
  ``exapyte-zab``. Every exapyte system's leader is the node whose status says ``role:
  leader`` and names itself ``leader``; a cluster counts as started once an ordinary client's
  put has been acknowledged (a ZAB leader says ``leader`` from its discovery phase on, before it
  can commit), and the leader is looked up again after that put.
- **etcd** (Debian's ``etcd-server``): three members with their own data dirs, fsync on (no
  ``--unsafe-no-fsync``), driven through the JSON gateway, ``POST /v3/kv/put``.
- **PySyncObj**: three processes of this script (``--syncobj-node``), each a ``SyncObj`` with a
  ``ReplDict``, a ``journalFile`` and a ``fullDumpFile``, and a tiny length-prefixed TCP front
  that turns a request into ``ReplDict.set(key, value, callback=...)`` and answers when the
  callback reports the command applied. PySyncObj's journal is an ``mmap`` of the journal file
  that it never ``msync``s/``fsync``s while running: an acknowledged put survives a crash of the
  process (the page cache has it) but not a power loss or an OS crash. It offers no setting that
  syncs before acknowledging, so its figures are for a *weaker* durability than the other two.

**One load generator for all.** ``K`` worker processes each drive ``N/K`` clients from one
single-threaded poll loop (``zmq.Poller``, which polls ZeroMQ sockets and plain TCP sockets
alike). A client has its own connection and exactly one outstanding request (closed loop): when
its reply arrives, the latency is recorded and the next request leaves at once. A small adapter
per system speaks its protocol on that connection:

- exapyte: a TCP connection per client speaking ZMTP 3.0 as a DEALER (the greeting and the
  frames built by hand, like the etcd adapter's HTTP) and carrying ``exapyte.wire`` frames,
  exactly what ``exapyte.client.Client`` sends (own ``client_id``, growing ``seq``;
  ``not_leader`` is followed; a request without a reply for ``RESEND_S`` is re-sent with the
  same ``seq``, which the session table makes exactly-once). Against ``exapyte+curve`` the
  adapter speaks the CURVE mechanism itself (``CurveClient``: the CurveZMQ handshake, then each
  frame sealed with PyNaCl's crypto_box under the connection's short-term keys, the key
  agreement computed once per connection) with the cluster's client key, as
  ``exapyte.client.Client`` would through libzmq;
- etcd: a keep-alive HTTP/1.1 connection per client (request bytes built by hand, response
  parsed for status, ``Content-Length`` or chunked body);
- PySyncObj: a TCP connection per client to the front described above.

Clients talk to the leader of each system (found before the run), as a leader-aware client does.
Keys are 16 bytes drawn from ``KEY_SPACE`` keys, values 100 random bytes. Each point runs a
warm-up, then ``--seconds`` of measurement; only requests completed inside the window count.

**Rounds.** Every point is measured ``--rounds`` times (default 2) and its rounds pooled (all
their requests and latencies together; the JSON keeps each round's throughput). The systems run
one after the other, except the exapyte systems, which are all up together: for each point
each is measured in turn, in the order A B C D in one round and D C B A in the next (and
reversed from one point to the next). The machine is shared, and its load drifts; in that
order a steady drift weighs on all alike, and the idle clusters' ticks and heartbeats cost each
the same (their CPU is counted as ``neighbours``). Strong (linearizable, ReadIndex) exapyte
``get``s at the largest client count are measured after the writes, over the keys the writes
created, for Raft in both security modes (``READ_SYSTEMS``). With ``--side-by-side all`` etcd
and PySyncObj join that alternation too: every system is then measured with all the others idle
beside it, and seconds from each of them.

**CPU accounting.** At the start and the end of each measurement window the bench reads
``/proc``: the CPU time of the leader and of the followers, each split into libzmq's I/O threads
and the rest (for an exapyte node, its loop), the CPU time of the idle systems up beside the
measured one (``neighbours``), and how busy the machine was; the load generator's workers count
their own CPU time over the window. The load generator shares the two
cores with the systems it measures, so its own CPU (more of it with CURVE: it encrypts too) is
part of every figure.

The table, the ratios, each protocol's puts/s, p50 and p99 with their ratios to etcd and to
exapyte's Raft (``protocols`` in the JSON), CURVE's cost (put throughput: 1 - on/off, p50:
on/off - 1) and the targets go to the terminal; measured numbers, the CPU shares, the machine and the settings go
to ``--json``. The exit code is 0 whether or not targets are met (a benchmark, not a
test); a system that cannot be installed or started is reported as **missing**.

``--profile DIR`` starts the exapyte nodes with ``EXAPYTE_PROFILE=DIR/<system>`` (cProfile, one
pstats file per node, written when the node stops; see ``exapyte/runtime/node.py``).
"""

from __future__ import annotations

import abc
import argparse
import base64
import contextlib
import functools
import http.client
import json
import multiprocessing
import os
import platform
import queue
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

KEY_BYTES = 16
VALUE_BYTES = 100
KEY_SPACE = 100_000  # distinct keys the writes draw from
WARMUP_S = 1.0  # per point, before the measurement window
RESEND_S = 2.0  # a request without a reply for this long is re-sent (same seq for exapyte)
READY_TIMEOUT_S = 60.0
DEFAULT_CLIENTS = (1, 16, 64)
# Two rounds per point, in the order A B then B A: a steady drift of the shared machine's load
# during the pair weighs on both systems alike.
DEFAULT_ROUNDS = 2
EXAPYTE, EXAPYTE_CURVE = "exapyte", "exapyte+curve"  # Raft, security.mode off, and curve
EXAPYTE_MULTIPAXOS, EXAPYTE_ZAB = "exapyte-multipaxos", "exapyte-zab"  # security.mode off
# Every exapyte system as (consensus.protocol, security.mode). They are up together and their
# points alternate (run_group).
EXAPYTE_SYSTEMS: dict[str, tuple[str, str]] = {
    EXAPYTE: ("raft", "off"),
    EXAPYTE_CURVE: ("raft", "curve"),
    EXAPYTE_MULTIPAXOS: ("multipaxos", "off"),
    EXAPYTE_ZAB: ("zab", "off"),
}
# The consensus protocols compared with one another and with etcd, all with security.mode off;
# the first is the reference the others' ratios are taken to.
PROTOCOL_SYSTEMS = (EXAPYTE, EXAPYTE_MULTIPAXOS, EXAPYTE_ZAB)
READ_SYSTEMS = (EXAPYTE, EXAPYTE_CURVE)  # the systems whose strong gets are measured
SYSTEMS = (*EXAPYTE_SYSTEMS, "etcd", "pysyncobj")

# The performance targets exapyte holds itself to (2-core machine).
TARGET_ETCD_THROUGHPUT_64 = 1.5  # exapyte / etcd put throughput at 64 clients, at least
TARGET_SYNCOBJ_THROUGHPUT_64 = 1.0  # exapyte / PySyncObj put throughput at 64 clients, at least
TARGET_P50_1 = 1.5  # exapyte p50 / etcd p50 at 1 client, at most
TARGET_READ_WRITE_64 = 2.0  # exapyte strong reads / exapyte puts at 64 clients, at least

# What security.mode curve may cost against off, the same cluster in the same invocation:
TARGET_CURVE_COST_64 = 0.15  # 1 - (on / off) put throughput at 64 clients, at most

CONSOLE_COLUMNS_PIPED = 132  # the tables' width when stdout is not a terminal


def key_of(n: int) -> bytes:
    return b"k%015d" % n


# --- the load generator: connections (one per client) -----------------------------------------


class Conn(abc.ABC):
    """One client's connection with at most one request outstanding."""

    pollable: Any  # what zmq.Poller polls: a zmq socket or a plain socket

    @abc.abstractmethod
    def send(self, key: bytes, value: bytes | None) -> None: ...

    @abc.abstractmethod
    def resend(self) -> None: ...

    @abc.abstractmethod
    def on_readable(self) -> bool | None:
        """Consume input; True: the request completed, False: failed (counted, re-sent by the
        caller), None: nothing complete yet."""

    @abc.abstractmethod
    def close(self) -> None: ...


class TcpConn(Conn):
    """A plain TCP connection (etcd's gateway, the PySyncObj front): buffered request/reply."""

    peer_name = "the server"

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pollable = self.sock
        self._request = b""
        self._buf = b""

    def resend(self) -> None:
        self.sock.sendall(self._request)

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"{self.peer_name} closed the connection")
        self._buf += data

    def close(self) -> None:
        self.sock.close()


# ZMTP 3.0 (ZeroMQ's wire protocol, RFC 23) as a DEALER: what the exapyte adapter speaks on its
# plain TCP connection. The greeting is the signature (0xFF, 8 octets of padding, 0x7F), version
# 3.0, the mechanism name padded to 20 octets, as-server (0 from a client) and 31 octets of
# filler. A frame is a flags octet (MORE, LONG, COMMAND), its size (one octet, or eight with
# LONG) and its body. With the NULL mechanism each side then sends a READY command whose
# metadata names its socket type; CURVE's handshake is described below.
def zmtp_greeting(mechanism: bytes) -> bytes:
    return b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + mechanism.ljust(20, b"\x00") \
        + b"\x00" * 32


ZMTP_GREETING = zmtp_greeting(b"NULL")
ZMTP_GREETING_BYTES = len(ZMTP_GREETING)  # 64
ZMTP_METADATA = b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
ZMTP_READY = b"\x05READY" + ZMTP_METADATA
ZMTP_MORE, ZMTP_LONG, ZMTP_COMMAND = 0x01, 0x02, 0x04
_U64 = struct.Struct(">Q")


def zmtp_frame(body: bytes, flags: int = 0) -> bytes:
    if len(body) <= 255:
        return bytes((flags, len(body))) + body
    return bytes((flags | ZMTP_LONG,)) + _U64.pack(len(body)) + body


def zmtp_next(buf: bytes, pos: int) -> tuple[int, bytes, int] | None:
    """The frame at ``buf[pos:]`` as (flags, body, position after it); None if incomplete."""
    if len(buf) - pos < 2:
        return None
    flags = buf[pos]
    if flags & ZMTP_LONG:
        if len(buf) - pos < 9:
            return None
        (size,) = _U64.unpack_from(buf, pos + 1)
        start = pos + 9
    else:
        size = buf[pos + 1]
        start = pos + 2
    if len(buf) < start + size:
        return None
    return flags, buf[start : start + size], start + size


def zmtp_split(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete frames at the start of ``buf`` as (flags, body), and the bytes after them."""
    frames: list[tuple[int, bytes]] = []
    pos = 0
    while (got := zmtp_next(buf, pos)) is not None:
        flags, body, pos = got
        frames.append((flags, body))
    return frames, buf[pos:]


def zmtp_messages(frames: list[tuple[int, bytes]], command: int) -> list[bytes]:
    """The single-frame messages among ``frames``; commands (flag ``command``) and the frames
    of multi-frame messages, which an exapyte node never sends a client, are skipped."""
    out: list[bytes] = []
    parts = 0
    for flags, body in frames:
        if flags & command:
            continue
        parts += 1
        if not flags & ZMTP_MORE:
            if parts == 1:
                out.append(body)
            parts = 0
    return out


def zmtp_properties(data: bytes) -> dict[str, bytes]:
    """ZMTP metadata (name length, name, 4-octet value length, value, repeated) as a dict."""
    props: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        name_end = pos + 1 + data[pos]
        if name_end + 4 > len(data):
            raise ValueError(f"truncated metadata at octet {pos}")
        (size,) = struct.unpack_from(">I", data, name_end)
        value_end = name_end + 4 + size
        if value_end > len(data):
            raise ValueError(f"truncated metadata at octet {pos}")
        props[data[pos + 1 : name_end].decode("ascii", "replace")] = data[name_end + 4 : value_end]
        pos = value_end
    return props


# CurveZMQ (RFC 26) as ZMTP's CURVE mechanism (RFC 25), client side. C/c is the client's
# long-term key pair and S the server's long-term public key, both known before connecting;
# C'/c' and S'/s' are short-term pairs that each side makes for one connection. Box[x](A->B) is
# crypto_box (Curve25519 key agreement, XSalsa20-Poly1305) of x from A's secret key to B's public
# key: 16 octets of authenticator, then the ciphertext. Its 24-octet nonce is a 16-octet prefix
# naming the command and the sender's 8-octet counter, or an 8-octet prefix and 16 random octets.
#
#   greeting, mechanism CURVE, as-server 0   ->  <-  greeting, mechanism CURVE, as-server 1
#   HELLO     version 1.0, 72 zero octets, C', counter, Box[64 zero octets](C'->S)
#             (the padding makes HELLO larger than WELCOME: no traffic amplification)
#                                            <-  WELCOME  16 random octets, Box[S' + cookie](S->C')
#   INITIATE  cookie, counter, Box[C + vouch + metadata](C'->S')
#             vouch = 16 random octets + Box[C' + S](C->S'): C's holder made C' for this server
#                                            <-  READY    counter, Box[metadata](S'->C')
#                                                (or ERROR with a reason: the key was refused)
#   MESSAGE   counter, Box[flags + frame body](C'->S')   <->   MESSAGE ... (S'->C')
#
# HELLO, INITIATE and READY travel as ZMTP command frames. After READY each frame of a message
# becomes one MESSAGE, carried in a ZMTP frame without flags (as libzmq sends it): the MORE and
# COMMAND bits travel inside the box, in the flags octet. A counter starts at 1 and only grows;
# each side refuses a MESSAGE whose counter is not above the last one it accepted, so a request
# that is sent again is sealed again under a new counter. The C'/S' key is computed once per
# connection (crypto_box_beforenm, on WELCOME); each MESSAGE then costs one
# crypto_box_easy_afternm or crypto_box_open_easy_afternm.
CURVE_GREETING = zmtp_greeting(b"CURVE")
CURVE_HELLO_PREFIX = b"CurveZMQHELLO---"
CURVE_WELCOME_PREFIX = b"WELCOME-"
CURVE_INITIATE_PREFIX = b"CurveZMQINITIATE"
CURVE_VOUCH_PREFIX = b"VOUCH---"
CURVE_READY_PREFIX = b"CurveZMQREADY---"
CURVE_MESSAGE_C_PREFIX = b"CurveZMQMESSAGEC"  # client -> server
CURVE_MESSAGE_S_PREFIX = b"CurveZMQMESSAGES"  # server -> client
CURVE_WELCOME_BYTES = 168  # "\x07WELCOME", 16-octet nonce, 144-octet box
CURVE_MESSAGE_HEAD = b"\x07MESSAGE"
CURVE_MESSAGE_BYTES_MIN = 8 + 8 + 16 + 1  # name, counter, authenticator, flags
CURVE_MORE, CURVE_COMMAND = 0x01, 0x02  # the flags octet inside a MESSAGE box
CURVE_HANDSHAKE_S = 5.0  # a CURVE handshake not complete by then fails the connection


class CurveError(ConnectionError):
    """A CURVE handshake failed or a box did not open; the message names the step and why."""


def curve_refusal(command: bytes, step: str) -> None:
    """Raise if ``command`` is ZMTP's ERROR (a reason's length octet, then the reason)."""
    if command[:6] == b"\x05ERROR":
        reason = command[7 : 7 + command[6]] if len(command) > 6 else b""
        raise CurveError(f"the server refused {step}: ERROR {reason.decode('utf-8', 'replace')!r}")


class CurveClient:
    """The client half of one CurveZMQ connection, without IO: it makes HELLO and INITIATE,
    checks WELCOME and READY, and seals and opens MESSAGEs. Keys are 32 raw octets."""

    def __init__(self, public: bytes, secret: bytes, server_public: bytes) -> None:
        from nacl.bindings import crypto_box_easy_afternm, crypto_box_open_easy_afternm
        from nacl.exceptions import CryptoError
        from nacl.public import Box, PrivateKey, PublicKey

        self._secret = PrivateKey(secret)
        if bytes(self._secret.public_key) != public:
            raise ValueError("the client's public and secret keys are not one pair")
        self._public = public
        self._server_public = server_public
        self._short = PrivateKey.generate()  # c', C'
        self._hello_box = Box(self._short, PublicKey(server_public))  # C' -> S
        self._seal_box = crypto_box_easy_afternm
        self._open_box = crypto_box_open_easy_afternm
        self._crypto_error = CryptoError
        self._key = b""  # the C'/S' key, once WELCOME is in
        self._counter = 0
        self._peer_counter = 0

    def _next_counter(self) -> bytes:
        self._counter += 1
        return _U64.pack(self._counter)

    def hello(self) -> bytes:
        """The HELLO command (its body)."""
        counter = self._next_counter()
        signature = self._hello_box.encrypt(bytes(64), CURVE_HELLO_PREFIX + counter).ciphertext
        return b"\x05HELLO\x01\x00" + bytes(72) + bytes(self._short.public_key) + counter \
            + signature

    def initiate(self, welcome: bytes) -> bytes:
        """Check the WELCOME command's body; the INITIATE command that answers it."""
        from nacl.exceptions import CryptoError
        from nacl.public import Box, PublicKey
        from nacl.utils import random as random_bytes

        curve_refusal(welcome, "HELLO")
        if len(welcome) != CURVE_WELCOME_BYTES or welcome[:8] != b"\x07WELCOME":
            raise CurveError(f"expected WELCOME, got {welcome[:10]!r} ({len(welcome)} octets)")
        try:
            plain = self._hello_box.decrypt(welcome[24:], CURVE_WELCOME_PREFIX + welcome[8:24])
        except CryptoError:
            raise CurveError(
                "the WELCOME box does not open: the server does not hold the server key's secret"
            ) from None
        server_short = PublicKey(plain[:32])
        cookie = plain[32:]
        self._key = Box(self._short, server_short).shared_key()
        vouch_nonce = random_bytes(16)
        vouch = Box(self._secret, server_short).encrypt(
            bytes(self._short.public_key) + self._server_public, CURVE_VOUCH_PREFIX + vouch_nonce
        ).ciphertext
        counter = self._next_counter()
        box = self._seal_box(
            self._public + vouch_nonce + vouch + ZMTP_METADATA,
            CURVE_INITIATE_PREFIX + counter, self._key,
        )
        return b"\x08INITIATE" + cookie + counter + box

    def on_ready(self, command: bytes) -> dict[str, bytes]:
        """Check the server's answer to INITIATE; its metadata (``Socket-Type`` ...)."""
        curve_refusal(command, "INITIATE (the client key)")
        if command[:6] != b"\x05READY" or len(command) < 6 + 8 + 16:
            raise CurveError(f"expected READY, got {command[:10]!r} ({len(command)} octets)")
        return zmtp_properties(self._open(command[6:14], command[14:], CURVE_READY_PREFIX, "READY"))

    def seal(self, body: bytes, flags: int = 0) -> bytes:
        """One frame as a MESSAGE, framed for the wire."""
        counter = self._next_counter()
        box = self._seal_box(bytes((flags,)) + body, CURVE_MESSAGE_C_PREFIX + counter, self._key)
        return zmtp_frame(CURVE_MESSAGE_HEAD + counter + box)

    def open(self, message: bytes) -> tuple[int, bytes]:
        """A MESSAGE's body as (flags octet, frame body)."""
        if len(message) < CURVE_MESSAGE_BYTES_MIN or message[:8] != CURVE_MESSAGE_HEAD:
            raise CurveError(f"expected MESSAGE, got {message[:10]!r} ({len(message)} octets)")
        plain = self._open(message[8:16], message[16:], CURVE_MESSAGE_S_PREFIX, "MESSAGE")
        return plain[0], plain[1:]

    def _open(self, counter: bytes, box: bytes, prefix: bytes, what: str) -> bytes:
        (value,) = _U64.unpack(counter)
        if value <= self._peer_counter:
            raise CurveError(f"{what} counter {value} is not above {self._peer_counter}: a replay")
        try:
            plain = self._open_box(box, prefix + counter, self._key)
        except self._crypto_error:
            raise CurveError(f"a {what} box does not open: altered, or not from this server") \
                from None
        self._peer_counter = value
        return plain


class ExapyteConn(TcpConn):
    """One exapyte client: ZMTP over a plain TCP connection to the node's ROUTER, carrying
    exactly the frames ``exapyte.client.Client`` sends (own ``client_id``, growing ``seq``;
    ``not_leader`` is followed). Speaking the wire protocol directly, like the etcd adapter's
    hand-built HTTP, keeps libzmq's I/O thread and its two thread hand-offs per request out of
    the load generator, whose CPU the systems under test share. This class speaks the NULL
    mechanism; :class:`ExapyteCurveConn` speaks CURVE.

    With ``spec["routes"]`` (a sharded cluster: ``bench/groups.py``) client ``index`` is pinned
    to route ``index % len(routes)``: one shard's group, its configuration version, its leader's
    endpoint and keys that hash to that shard, from which it draws its keys instead of the
    generator's. Without it every request goes to group ``default``."""

    peer_name = "the exapyte node"

    def __init__(self, spec: dict[str, Any], index: int) -> None:
        from exapyte.wire import Codec

        self._codec = Codec()
        self.endpoints: dict[str, str] = spec["endpoints"]
        self.consistency: str = spec.get("consistency", "strong")
        self.client_id = f"bench-{index}-{uuid.uuid4().hex[:12]}"
        self._seq = int(time.time() * 1000) * 1000
        self.redirects = 0
        self._payload = b""
        routes = spec.get("routes")
        route = routes[index % len(routes)] if routes else None
        self._group = route["group"] if route else "default"
        self._config_version = route["config_version"] if route else 0
        self._keys: list[str] = route["keys"] if route else []
        self._connect(route["leader_endpoint"] if route else spec["leader_endpoint"])

    def _connect(self, endpoint: str) -> None:
        if getattr(self, "sock", None) is not None:
            self.sock.close()
        host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
        super().__init__((host, int(port)))
        self.endpoint = endpoint
        try:
            self._handshake(endpoint)
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self, endpoint: str) -> None:
        self.sock.sendall(ZMTP_GREETING + zmtp_frame(ZMTP_READY, ZMTP_COMMAND))
        while len(self._buf) < ZMTP_GREETING_BYTES:
            self._receive()
        if self._buf[:1] != b"\xff" or self._buf[10:11] != b"\x03":
            raise ConnectionError(f"{endpoint} does not speak ZMTP 3: {self._buf[:11]!r}")
        self._buf = self._buf[ZMTP_GREETING_BYTES:]  # the peer's READY is skipped as a command

    def send(self, key: bytes, value: bytes | None) -> None:
        from exapyte.wire import ClientRequest, GetOp, PutOp

        self._seq += 1
        # a shard's own keys, picked by the generator's draw (its key numbers are uniform)
        k = self._keys[int(key[1:]) % len(self._keys)] if self._keys else key.decode()
        op = GetOp(k) if value is None else PutOp(k, value)
        req = ClientRequest(self.client_id, self._seq, op, consistency=self.consistency,
                            group=self._group, config_version=self._config_version)
        self._payload = self._codec.encode(req)
        self.resend()

    def resend(self) -> None:
        # Framed again from the payload, which (unlike TcpConn's buffered request) survives the
        # new connection a redirect opens.
        self.sock.sendall(zmtp_frame(self._payload))

    def _messages(self) -> list[bytes]:
        """Complete single-frame messages in the buffer (commands and extra frames skipped)."""
        frames, self._buf = zmtp_split(self._buf)
        return zmtp_messages(frames, ZMTP_COMMAND)

    def on_readable(self) -> bool | None:
        from exapyte.wire import ClientReply, ReplyCode

        self._receive()
        done: bool | None = None
        for raw in self._messages():
            reply = self._codec.decode(raw)
            if not isinstance(reply, ClientReply) or reply.seq != self._seq:
                continue  # a late reply to an earlier attempt
            if reply.code in (ReplyCode.OK, ReplyCode.NOT_FOUND):
                return True
            if reply.code == ReplyCode.NOT_LEADER and reply.leader_endpoint:
                self.redirects += 1
                self._connect(reply.leader_endpoint)
                self.resend()
                return None  # the poller must learn the new socket (see worker_main)
            done = False
        return done


@functools.lru_cache(maxsize=8)
def _client_credentials(keys_dir: str, endpoints: tuple[tuple[str, str], ...]) -> Any:
    from exapyte.security import load_credentials

    return load_credentials(keys_dir, dict(endpoints), role="clients")


class ExapyteCurveConn(ExapyteConn):
    """An exapyte client over CURVE, the adapter's own CurveZMQ (:class:`CurveClient`) on the
    same plain TCP connection. Its key pair is the cluster's client key (``clients/client`` in
    ``spec["keys_dir"]``), the server key that of the node it connects to, so a redirect
    handshakes again with the leader's key."""

    def __init__(self, spec: dict[str, Any], index: int) -> None:
        self._credentials = _client_credentials(
            spec["keys_dir"], tuple(sorted(spec["endpoints"].items()))
        )
        super().__init__(spec, index)

    def _handshake(self, endpoint: str) -> None:
        from zmq.utils import z85

        creds = self._credentials
        self._curve = CurveClient(
            z85.decode(creds.public), z85.decode(creds.secret),
            z85.decode(creds.server_key(endpoint)),
        )
        # A libzmq server that cannot open HELLO (or that does not speak CURVE) closes the
        # connection at once, often before it has sent the rest of its greeting.
        refused_hello = (
            f"either the server key given for {endpoint} is not that server's, or the server "
            "does not speak CURVE (security.mode off?)"
        )
        deadline = time.monotonic() + CURVE_HANDSHAKE_S
        self.sock.sendall(CURVE_GREETING + zmtp_frame(self._curve.hello(), ZMTP_COMMAND))
        while len(self._buf) < ZMTP_GREETING_BYTES:
            self._receive_by(deadline, "the server's greeting", refused_hello)
        greeting, self._buf = self._buf[:ZMTP_GREETING_BYTES], self._buf[ZMTP_GREETING_BYTES:]
        if greeting[:1] != b"\xff" or greeting[10:11] != b"\x03":
            raise CurveError(f"{endpoint} does not speak ZMTP 3: {greeting[:11]!r}")
        mechanism = greeting[12:32].rstrip(b"\x00")
        if mechanism != b"CURVE":
            raise CurveError(
                f"{endpoint} speaks the {mechanism.decode('ascii', 'replace')} mechanism, not "
                "CURVE (is the cluster's security.mode off?)"
            )
        welcome = self._command_by(deadline, "WELCOME", refused_hello)
        try:
            initiate = self._curve.initiate(welcome)
        except CurveError as exc:
            raise CurveError(f"{endpoint}: {exc}") from None
        self.sock.sendall(zmtp_frame(initiate, ZMTP_COMMAND))
        ready = self._command_by(deadline, "READY", "the server did not accept the client key")
        try:
            self._curve.on_ready(ready)
        except CurveError as exc:
            raise CurveError(f"{endpoint}: {exc}") from None
        self.sock.settimeout(None)

    def _receive_by(self, deadline: float, what: str, hint: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CurveError(
                f"{self.endpoint}: no {what} within {CURVE_HANDSHAKE_S:g} s of connecting; {hint}"
            )
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise CurveError(
                f"{self.endpoint}: no {what} within {CURVE_HANDSHAKE_S:g} s of connecting; {hint}"
            ) from None
        except OSError as exc:
            raise CurveError(f"{self.endpoint}: {exc} while waiting for {what}; {hint}") from None
        if not data:
            raise CurveError(
                f"{self.endpoint} closed the connection while the CURVE handshake waited for "
                f"{what}: {hint}"
            )
        self._buf += data

    def _command_by(self, deadline: float, what: str, hint: str) -> bytes:
        while (got := zmtp_next(self._buf, 0)) is None:
            self._receive_by(deadline, what, hint)
        flags, body, end = got
        self._buf = self._buf[end:]
        if not flags & ZMTP_COMMAND:
            raise CurveError(f"{self.endpoint} sent a message frame where {what} was due")
        return body

    def resend(self) -> None:
        self.sock.sendall(self._curve.seal(self._payload))

    def _messages(self) -> list[bytes]:
        frames, self._buf = zmtp_split(self._buf)
        opened = [self._curve.open(body) for _flags, body in frames]
        return zmtp_messages(opened, CURVE_COMMAND)


class EtcdConn(TcpConn):
    """HTTP/1.1 keep-alive to etcd's JSON gateway."""

    peer_name = "etcd"

    def __init__(self, spec: dict[str, Any]) -> None:
        host, port = spec["leader"]
        super().__init__((host, port))
        self._head = f"POST /v3/kv/put HTTP/1.1\r\nHost: {host}:{port}\r\n" \
            "Content-Type: application/json\r\nContent-Length: "
        self._range_head = self._head.replace("/v3/kv/put", "/v3/kv/range")

    def send(self, key: bytes, value: bytes | None) -> None:
        k = base64.b64encode(key).decode()
        if value is None:
            body = f'{{"key":"{k}"}}'.encode()
            head = self._range_head
        else:
            body = f'{{"key":"{k}","value":"{base64.b64encode(value).decode()}"}}'.encode()
            head = self._head
        self._request = f"{head}{len(body)}\r\n\r\n".encode() + body
        self.sock.sendall(self._request)

    def on_readable(self) -> bool | None:
        self._receive()
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self._buf[:end].decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            name, _, val = line.partition(":")
            headers[name.strip().lower()] = val.strip()
        body_start = end + 4
        if "content-length" in headers:
            total = body_start + int(headers["content-length"])
            if len(self._buf) < total:
                return None
            self._buf = self._buf[total:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            pos = body_start
            while True:
                eol = self._buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(self._buf[pos:eol].split(b";")[0], 16)
                pos = eol + 2 + size + 2
                if len(self._buf) < pos:
                    return None
                if size == 0:
                    break
            self._buf = self._buf[pos:]
        else:
            raise ConnectionError(f"etcd reply without a length: {headers}")
        return status == 200


# The PySyncObj front: frames are a 4-byte big-endian length and a payload.
# request payload: b"P" + key length (1 byte) + key + value | b"L" (are you the leader?)
# reply payload:   b"K" (applied) | b"E" + reason | b"1"/b"0" (leader or not)


# PySyncObj's batching is time-based by default (appended commands leave every
# appendEntriesPeriod = 100 ms, so every put waits ~100 ms). Without batching a queued command
# wakes its loop through a pipe and is sent at once; this gives it its best figures here.
SYNCOBJ_TUNING: dict[str, Any] = json.loads(
    os.environ.get("BENCH_SYNCOBJ_TUNING", '{"appendEntriesUseBatch": false}')
)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class SyncObjConn(TcpConn):
    peer_name = "the PySyncObj front"

    def __init__(self, spec: dict[str, Any]) -> None:
        host, port = spec["leader"]
        super().__init__((host, port))

    def send(self, key: bytes, value: bytes | None) -> None:
        assert value is not None, "the PySyncObj front serves puts only"
        self._request = frame(b"P" + bytes([len(key)]) + key + value)
        self.sock.sendall(self._request)

    def on_readable(self) -> bool | None:
        self._receive()
        if len(self._buf) < 4:
            return None
        (size,) = struct.unpack(">I", self._buf[:4])
        if len(self._buf) < 4 + size:
            return None
        payload, self._buf = self._buf[4 : 4 + size], self._buf[4 + size :]
        return payload[:1] == b"K"


def open_conns(spec: dict[str, Any], first_index: int, count: int) -> tuple[list[Conn], Any]:
    kind = spec["kind"]
    if kind == "exapyte":
        conn_type = ExapyteCurveConn if spec.get("keys_dir") else ExapyteConn
        return [conn_type(spec, first_index + i) for i in range(count)], None
    if kind == "etcd":
        return [EtcdConn(spec) for _ in range(count)], None
    if kind == "pysyncobj":
        return [SyncObjConn(spec) for _ in range(count)], None
    raise ValueError(f"unknown system {kind!r}")


# --- the load generator: one worker process ---------------------------------------------------


def worker_main(
    spec: dict[str, Any],
    first_index: int,
    count: int,
    op: str,
    start_at: float,
    seconds: float,
    seed: int,
    out: Any,
) -> None:
    """Drive ``count`` closed-loop clients; put the measurement on ``out``."""
    import zmq

    rng = random.Random(seed)
    values = [rng.randbytes(VALUE_BYTES) for _ in range(64)]
    key_space = spec.get("key_space", KEY_SPACE)
    conns, ctx = open_conns(spec, first_index, count)
    poller = zmq.Poller()
    by_pollable: dict[Any, Conn] = {}

    def register(conn: Conn) -> None:
        poller.register(conn.pollable, zmq.POLLIN)
        by_pollable[conn.pollable] = conn
        if isinstance(conn.pollable, socket.socket):  # the poller reports plain sockets by fd
            by_pollable[conn.pollable.fileno()] = conn

    for conn in conns:
        register(conn)
    sent_at: dict[Conn, float] = {}
    latencies: list[float] = []
    failures = 0
    resends = 0

    def issue(conn: Conn) -> None:
        key = key_of(rng.randrange(key_space))
        value = None if op == "get" else values[rng.randrange(64)]
        sent_at[conn] = time.perf_counter()
        conn.send(key, value)

    while time.time() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.time())))
    t0 = time.perf_counter()
    window_start = t0 + WARMUP_S
    window_end = window_start + seconds
    for conn in conns:
        issue(conn)
    now = t0
    last_check = t0
    cpu_at_window_start: float | None = None
    while now < window_end:
        for pollable, _ in poller.poll(50):
            conn = by_pollable[pollable]
            before = conn.pollable
            done = conn.on_readable()
            if conn.pollable is not before:  # exapyte followed a redirect to a new socket
                poller.unregister(before)
                del by_pollable[before]
                register(conn)
            now = time.perf_counter()
            if done is None:
                continue
            if done:
                if window_start <= now < window_end:
                    latencies.append(now - sent_at[conn])
                issue(conn)
            else:
                failures += 1 if now >= window_start else 0
                conn.resend()
        now = time.perf_counter()
        if cpu_at_window_start is None and now >= window_start:
            cpu_at_window_start = time.process_time()
        if now - last_check > 0.5:
            last_check = now
            for conn, at in sent_at.items():
                if now - at > RESEND_S:
                    resends += 1
                    sent_at[conn] = now
                    conn.resend()
    cpu_s = time.process_time() - (cpu_at_window_start or 0.0)
    redirects = sum(getattr(c, "redirects", 0) for c in conns)
    for conn in conns:
        conn.close()
    if ctx is not None:
        ctx.term()
    out.put(
        {
            "latencies": latencies,
            "seconds": seconds,
            "failures": failures,
            "resends": resends,
            "redirects": redirects,
            "cpu_s": cpu_s,  # this worker's CPU time (all its threads) in the window
        }
    )


@dataclass
class Point:
    system: str
    op: str
    clients: int
    workers: int
    ops: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    failures: int = 0
    resends: int = 0
    redirects: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core (see cpu_shares)
    rounds: int = 1
    round_ops_per_s: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds, sorted

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "op": self.op,
            "clients": self.clients,
            "workers": self.workers,
            "ops": self.ops,
            "seconds": self.seconds,
            "ops_per_s": round(self.ops_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "failures": self.failures,
            "resends": self.resends,
            "redirects": self.redirects,
            "cpu_percent_of_one_core": self.cpu,
            "rounds": self.rounds,
            "ops_per_s_by_round": self.round_ops_per_s or [round(self.ops_per_s, 1)],
        }


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- CPU accounting ---------------------------------------------------------------------------
#
# At the start and the end of each measurement window the bench reads, from /proc, the CPU time
# of every thread of the systems' processes: libzmq's I/O threads (named ``ZMQbg/IO/<n>``) apart
# from all the others (for an exapyte node: its loop, plus the mostly idle scheduler and reaper
# threads), and how busy the machine's cores were. The load generator's workers count their own.


def thread_ticks(pid: int) -> tuple[int, int]:
    """CPU time (clock ticks, user + system) of a process's live threads: (libzmq I/O, other)."""
    io = other = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended
        close = stat.rindex(")")
        fields = stat[close + 2 :].split()  # from field 3 (state) on: utime is 14, stime 15
        ticks = int(fields[11]) + int(fields[12])
        if stat[stat.index("(") + 1 : close].startswith("ZMQbg/IO"):
            io += ticks
        else:
            other += ticks
    return io, other


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores so far, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass
class CpuSample:
    at: float
    threads: dict[str, tuple[int, int]]
    machine: tuple[int, int]

    @classmethod
    def take(cls, pids: dict[str, int]) -> CpuSample:
        return cls(time.monotonic(), {n: thread_ticks(p) for n, p in pids.items()}, machine_ticks())


def cpu_shares(
    before: CpuSample, after: CpuSample, leader: str | None,
    neighbours: set[str] | frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Percent of one core each part used between two samples: ``leader`` and ``followers``
    (all other members together) in total and in libzmq's I/O threads, ``neighbours`` (the
    processes named in ``neighbours``: the idle systems up beside the measured one), and
    ``machine`` (percent of all cores busy, anyone's work). The load generator's workers
    measure their own CPU time over the window (``load_generator``, added by
    :func:`run_point`)."""
    hz = os.sysconf("SC_CLK_TCK")
    wall = after.at - before.at
    if wall <= 0:
        return {}
    shares: dict[str, float] = {}

    def add(name: str, ticks: int) -> None:
        shares[name] = shares.get(name, 0.0) + 100.0 * ticks / hz / wall

    for name, (io, other) in after.threads.items():
        io0, other0 = before.threads.get(name, (0, 0))
        d_io, d_other = max(0, io - io0), max(0, other - other0)
        part = "neighbours" if name in neighbours else "leader" if name == leader else "followers"
        add(part, d_io + d_other)
        add(f"{part}_zmq_io", d_io)
    busy = after.machine[0] - before.machine[0]
    total = after.machine[1] - before.machine[1]
    if total > 0:
        shares["machine"] = 100.0 * busy / total
    return {k: round(v, 1) for k, v in shares.items()}


def run_point(
    system: str, spec: dict[str, Any], op: str, clients: int, workers: int, seconds: float
) -> Point:
    workers = max(1, min(workers, clients))
    mp = multiprocessing.get_context("spawn")
    out = mp.Queue()
    start_at = time.time() + 1.5  # time for the spawned workers to import and connect
    procs = []
    first = 0
    for w in range(workers):
        count = clients // workers + (1 if w < clients % workers else 0)
        proc = mp.Process(
            target=worker_main,
            args=(spec, first, count, op, start_at, seconds, 1000 * clients + w, out),
            daemon=True,
        )
        proc.start()
        procs.append(proc)
        first += count
    pids = spec.get("pids", {})
    neighbours = spec.get("neighbour_pids", {})
    pids = {**pids, **neighbours}
    window = (start_at + WARMUP_S, start_at + WARMUP_S + seconds)  # as the workers count it
    samples: list[CpuSample] = []
    parts: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds + WARMUP_S + 60
    while len(parts) < len(procs):
        if len(samples) < 2 and time.time() >= window[len(samples)]:
            samples.append(CpuSample.take(pids))
        wait = 1.0 if len(samples) == 2 else min(1.0, window[len(samples)] - time.time())
        try:
            parts.append(out.get(timeout=max(0.001, wait)))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"load generator failed (exit codes {dead})") from None
    if len(samples) == 1:  # the last worker finished just as the window closed
        samples.append(CpuSample.take(pids))
    for proc in procs:
        proc.join(timeout=10)
    latencies = sorted(x for part in parts for x in part["latencies"])
    point = Point(system, op, clients, workers, ops=len(latencies), seconds=seconds)
    point.latencies = latencies
    point.p50_ms = percentile(latencies, 0.50) * 1e3
    point.p99_ms = percentile(latencies, 0.99) * 1e3
    point.mean_ms = statistics.fmean(latencies) * 1e3 if latencies else 0.0
    point.failures = sum(p["failures"] for p in parts)
    point.resends = sum(p["resends"] for p in parts)
    point.redirects = sum(p["redirects"] for p in parts)
    if len(samples) == 2:
        point.cpu = cpu_shares(samples[0], samples[1], spec.get("leader_name"), set(neighbours))
    point.cpu["load_generator"] = round(100.0 * sum(p["cpu_s"] for p in parts) / seconds, 1)
    return point


# --- the systems under test -------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = READY_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - anything means "not yet"
            last = exc
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout_s:.0f} s (last error: {last})")


class Missing(Exception):
    """A system could not be installed or started; it is reported, not dropped."""


@contextlib.contextmanager
def exapyte_cluster(
    scratch: Path, profile_dir: str | None, *, curve: bool, protocol: str = "raft"
) -> Iterator[dict[str, Any]]:
    """A 3-node cluster running ``consensus.protocol`` ``protocol``, with ``security.mode``
    ``curve`` (keys made by LocalCluster under ``scratch/keys``; the load generator's CURVE
    adapter loads the client key from there) or ``off`` (plain ZMTP, the NULL mechanism).

    The leader is the node whose status says ``role: leader`` and names itself ``leader``; the
    cluster is ready once a put through an ordinary client has been acknowledged, since a
    protocol's leader may report its role before it can commit (a ZAB leader is ``leader``
    from its discovery phase on, a Multi-Paxos leader before its first slot is chosen)."""
    from exapyte.runtime.cluster import LocalCluster

    if curve:
        try:
            import nacl  # noqa: F401 - the load generator's CURVE adapter needs PyNaCl
        except ImportError as exc:
            raise Missing(f"pynacl not installed ({exc})") from None
    topo = json.loads((REPO_ROOT / "topologies" / "three-node.json").read_text())
    ports = free_ports(6)
    for i, node in enumerate(topo["cluster"]["nodes"]):
        node["port"], node["pub_port"] = ports[2 * i], ports[2 * i + 1]
    topo["storage"] = {"backend": "sqlite", "path": str(scratch / "{node_id}" / "store.db")}
    keys_dir = scratch / "keys"
    topo["security"] = {"mode": "curve", "keys_dir": str(keys_dir)} if curve else {"mode": "off"}
    topo["consensus"]["protocol"] = protocol
    config_path = scratch / "cluster.json"
    config_path.write_text(json.dumps(topo, indent=2))
    env = dict(os.environ)
    if profile_dir:
        env["EXAPYTE_PROFILE"] = profile_dir
    cluster = LocalCluster(config_path, scratch / "run", env=env)
    cluster.start()
    try:
        endpoints = cluster.endpoints()

        def leader() -> str | None:
            for node_id in endpoints:
                with cluster.node_client(node_id, timeout_s=1.0) as client:
                    status = client.status()
                if status.get("role") == "leader" and status.get("leader") == node_id:
                    return node_id
            return None

        leader_id = wait_for(f"exapyte ({protocol}) leader", leader)

        def acknowledged() -> bool:
            with cluster.client(timeout_s=2.0) as client:
                client.put("bench-ready", b"1")
            return True

        wait_for(f"exapyte ({protocol}) acknowledging a put", acknowledged)
        # The put may have gone to a new leader: find it again (it is then known at once).
        leader_id = wait_for(f"exapyte ({protocol}) leader", leader)
        spec = {
            "kind": "exapyte",
            "endpoints": endpoints,
            "leader_endpoint": endpoints[leader_id],
            "leader_name": leader_id,
            "pids": {n: proc.pid for n, proc in cluster.procs.items()},
            "version": "working tree",
            "security": topo["security"]["mode"],
            "protocol": protocol,
            "durability": "fsync (SQLite WAL, synchronous=FULL) on a majority before the ack",
        }
        if curve:
            spec["keys_dir"] = str(keys_dir)
        yield spec
    finally:
        cluster.stop()


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise Missing("etcd not installed (apt-get install etcd-server)")
    return path


@contextlib.contextmanager
def etcd_cluster(scratch: Path) -> Iterator[dict[str, Any]]:
    binary = etcd_binary()
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0].replace("etcd Version:", "").strip()
    ports = free_ports(6)
    names = ["m1", "m2", "m3"]
    client_ports = {n: ports[2 * i] for i, n in enumerate(names)}
    peer_ports = {n: ports[2 * i + 1] for i, n in enumerate(names)}
    initial = ",".join(f"{n}=http://127.0.0.1:{peer_ports[n]}" for n in names)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in names:
            log = open(scratch / f"etcd-{n}.log", "wb")  # noqa: SIM115 - lives with the process
            procs.append(
                subprocess.Popen(
                    [
                        binary, "--name", n, "--data-dir", str(scratch / f"etcd-{n}"),
                        "--listen-client-urls", f"http://127.0.0.1:{client_ports[n]}",
                        "--advertise-client-urls", f"http://127.0.0.1:{client_ports[n]}",
                        "--listen-peer-urls", f"http://127.0.0.1:{peer_ports[n]}",
                        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_ports[n]}",
                        "--initial-cluster", initial, "--initial-cluster-state", "new",
                        "--initial-cluster-token", "exapyte-bench", "--log-level", "warn",
                    ],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )

        def status(port: int) -> dict[str, Any]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("POST", "/v3/maintenance/status", body="{}")
                resp = conn.getresponse()
                return json.loads(resp.read())
            finally:
                conn.close()

        def leader() -> str | None:
            for n in names:
                st = status(client_ports[n])
                if st.get("leader") and st.get("leader") == st["header"].get("member_id"):
                    return n
            return None

        for proc in procs:
            if proc.poll() is not None:
                raise Missing(f"etcd exited with code {proc.returncode}; see {scratch}")
        leader_name = wait_for("etcd leader", leader)
        yield {
            "kind": "etcd",
            "leader": ["127.0.0.1", client_ports[leader_name]],
            "leader_name": leader_name,
            "pids": {n: proc.pid for n, proc in zip(names, procs, strict=True)},
            "version": version,
            "durability": "fsync of the WAL on a majority before the ack (default settings)",
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def syncobj_node_main(argv: list[str]) -> int:
    """``--syncobj-node SELF PARTNERS FRONT_PORT DIR``: one PySyncObj member and its front."""
    import selectors

    from pysyncobj import SyncObj, SyncObjConf  # type: ignore[import-untyped]
    from pysyncobj.batteries import ReplDict  # type: ignore[import-untyped]

    self_addr, partners, front_port, directory = argv
    os.makedirs(directory, exist_ok=True)
    store = ReplDict()
    conf = SyncObjConf(
        journalFile=os.path.join(directory, "journal.bin"),
        fullDumpFile=os.path.join(directory, "dump.bin"),
        dynamicMembershipChange=False,
        **SYNCOBJ_TUNING,
    )
    obj = SyncObj(self_addr, partners.split(","), consumers=[store], conf=conf)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    listener = socket.create_server(("127.0.0.1", int(front_port)))
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytes] = {}

    def reply(conn: socket.socket, payload: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(frame(payload))

    while not stop:
        for key, _ in sel.select(0.2):
            sock = key.fileobj
            if sock is listener:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffers[conn] = b""
                sel.register(conn, selectors.EVENT_READ)
                continue
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                buffers.pop(sock, None)
                sock.close()
                continue
            buf = buffers[sock] + data
            while len(buf) >= 4:
                (size,) = struct.unpack(">I", buf[:4])
                if len(buf) < 4 + size:
                    break
                payload, buf = buf[4 : 4 + size], buf[4 + size :]
                if payload[:1] == b"L":
                    reply(sock, b"1" if obj._isLeader() else b"0")
                elif payload[:1] == b"P":
                    klen = payload[1]
                    k, v = payload[2 : 2 + klen], payload[2 + klen :]

                    def done(result: Any, error: Any, conn: socket.socket = sock) -> None:
                        # Runs on SyncObj's thread once the command is applied (or failed).
                        reply(conn, b"K" if error == 0 else b"E%d" % error)

                    store.set(k, v, callback=done)
            buffers[sock] = buf
    obj.destroy()
    return 0


@contextlib.contextmanager
def syncobj_cluster(scratch: Path) -> Iterator[dict[str, Any]]:
    try:
        import pysyncobj  # type: ignore[import-untyped]
    except ImportError as exc:
        raise Missing(f"pysyncobj not installed ({exc})") from None
    ports = free_ports(6)
    raft_addrs = [f"127.0.0.1:{ports[i]}" for i in range(3)]
    front_ports = ports[3:]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(3):
            partners = ",".join(a for j, a in enumerate(raft_addrs) if j != i)
            log = open(scratch / f"syncobj-{i}.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable, str(Path(__file__).resolve()), "--syncobj-node",
                        raft_addrs[i], partners, str(front_ports[i]),
                        str(scratch / f"syncobj-{i}"),
                    ],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )

        def is_leader(port: int) -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(frame(b"L"))
                data = b""
                while len(data) < 5:
                    chunk = s.recv(16)
                    if not chunk:
                        break
                    data += chunk
                return data[4:5] == b"1"

        def leader() -> int | None:
            for proc in procs:
                if proc.poll() is not None:
                    raise Missing(f"a PySyncObj member exited; see {scratch}")
            for port in front_ports:
                if is_leader(port):
                    return port
            return None

        leader_port = wait_for("PySyncObj leader", leader)
        yield {
            "kind": "pysyncobj",
            "leader": ["127.0.0.1", leader_port],
            "leader_name": f"s{front_ports.index(leader_port) + 1}",
            "pids": {f"s{i + 1}": proc.pid for i, proc in enumerate(procs)},
            "version": getattr(pysyncobj, "__version__", None) or _dist_version("pysyncobj"),
            "durability": "journal written through mmap, never fsynced while running: survives "
            "a process crash, not a power loss",
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    points: list[Point] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    durability: dict[str, str] = field(default_factory=dict)


def workers_for(clients: int, setting: str) -> int:
    if setting != "auto":
        return int(setting)
    return 1 if clients < 8 else 2


def start_system(
    system: str, directory: Path, profile_dir: str | None
) -> contextlib.AbstractContextManager[dict[str, Any]]:
    if system in EXAPYTE_SYSTEMS:
        # One profile directory per system: both clusters' nodes are called n1, n2, n3.
        profile = os.path.join(profile_dir, system) if profile_dir else None
        protocol, security = EXAPYTE_SYSTEMS[system]
        return exapyte_cluster(directory, profile, curve=security == "curve", protocol=protocol)
    if system == "etcd":
        return etcd_cluster(directory)
    return syncobj_cluster(directory)


def run_all(args: argparse.Namespace, scratch: Path, console: Any) -> Outcome:
    """Each system in the order given; the exapyte systems side by side (see run_group), or,
    with ``--side-by-side all``, every system."""
    outcome = Outcome()
    if getattr(args, "side_by_side", "exapyte") == "all":
        run_group(list(args.systems), args, scratch, console, outcome)
        return outcome
    exapytes = [s for s in args.systems if s in EXAPYTE_SYSTEMS]
    for system in args.systems:
        if system in EXAPYTE_SYSTEMS:
            if system == exapytes[0]:
                run_group(exapytes, args, scratch, console, outcome)
            continue
        run_group([system], args, scratch, console, outcome)
    return outcome


def run_group(
    systems: list[str], args: argparse.Namespace, scratch: Path, console: Any, outcome: Outcome
) -> None:
    """Start every system of ``systems``, then measure their points alternately: for each round
    and each point, every system once, the order reversed from one point to the next (A B, B A,
    ...), so that two systems compared with each other are measured seconds apart and a drift
    of the shared machine's load weighs on both alike. A point's rounds are pooled."""
    plan = [("put", clients) for clients in args.clients]
    if args.reads and any(s in READ_SYSTEMS for s in systems):
        plan.append(("get", max(args.clients)))
    measured: dict[tuple[str, str, int], list[Point]] = {}

    def fail(system: str, exc: Exception) -> None:
        if isinstance(exc, Missing):
            outcome.missing[system] = str(exc)
            console.print(f"  [red]{system} missing: {exc}[/]")
        else:
            outcome.missing[system] = f"{type(exc).__name__}: {exc}"
            console.print(f"  [red]{system} failed: {type(exc).__name__}: {exc}[/]")

    with contextlib.ExitStack() as stack:
        specs: dict[str, dict[str, Any]] = {}
        for system in systems:
            sys_dir = scratch / system
            sys_dir.mkdir()
            try:
                spec = stack.enter_context(start_system(system, sys_dir, args.profile))
            except Exception as exc:  # noqa: BLE001 - any failure is reported as a missing system
                fail(system, exc)
                continue
            specs[system] = spec
            outcome.versions[system] = spec["version"]
            outcome.durability[system] = spec["durability"]
        for round_ in range(args.rounds):
            for i, (op, clients) in enumerate(plan):
                # A B in one round, B A in the next; the next point starts with the last system.
                order = list(specs) if (round_ + i) % 2 == 0 else list(reversed(specs))
                for system in order:
                    if system in outcome.missing or (op == "get" and system not in READ_SYSTEMS):
                        continue
                    workers = workers_for(clients, args.workers)
                    what = "put" if op == "put" else "strong get"
                    console.print(
                        f"  {system}: {what}, {clients} clients, {workers} workers"
                        + (f" (round {round_ + 1} of {args.rounds})" if args.rounds > 1 else "")
                        + " ..."
                    )
                    spec = dict(specs[system], neighbour_pids=neighbour_pids(specs, system))
                    if op == "get":
                        spec["consistency"] = "strong"
                    try:
                        point = run_point(system, spec, op, clients, workers, args.seconds)
                    except Exception as exc:  # noqa: BLE001 - reported as a missing system
                        fail(system, exc)
                        continue
                    measured.setdefault((system, op, clients), []).append(point)
    for system in systems:
        for op, clients in plan:
            rounds = measured.get((system, op, clients))
            if rounds:
                outcome.points.append(pool_rounds(rounds))


def neighbour_pids(specs: dict[str, dict[str, Any]], system: str) -> dict[str, int]:
    """The processes of the other systems that are up while ``system`` is measured (idle, but
    their ticks and heartbeats share the cores), named ``<system>/<member>``."""
    return {
        f"{other}/{name}": pid
        for other, spec in specs.items() if other != system
        for name, pid in spec.get("pids", {}).items()
    }


def pool_rounds(rounds: list[Point]) -> Point:
    """One point from its rounds: their requests and latencies together, CPU shares averaged."""
    if len(rounds) == 1:
        return rounds[0]
    first = rounds[0]
    latencies = sorted(x for p in rounds for x in p.latencies)
    pooled = Point(
        first.system, first.op, first.clients, first.workers, ops=len(latencies),
        seconds=sum(p.seconds for p in rounds), rounds=len(rounds),
        round_ops_per_s=[round(p.ops_per_s, 1) for p in rounds],
    )
    pooled.latencies = latencies
    pooled.p50_ms = percentile(latencies, 0.50) * 1e3
    pooled.p99_ms = percentile(latencies, 0.99) * 1e3
    pooled.mean_ms = statistics.fmean(latencies) * 1e3 if latencies else 0.0
    pooled.failures = sum(p.failures for p in rounds)
    pooled.resends = sum(p.resends for p in rounds)
    pooled.redirects = sum(p.redirects for p in rounds)
    shared = set.intersection(*(set(p.cpu) for p in rounds))
    pooled.cpu = {
        k: round(sum(p.cpu[k] * p.seconds for p in rounds) / pooled.seconds, 1)
        for k in sorted(shared)
    }
    return pooled


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if a and b else None


def cost(on: float, off: float) -> float | None:
    """The fraction of ``off`` that ``on`` loses: 1 - on/off."""
    return round(1.0 - on / off, 3) if off else None


def added(on: float, off: float) -> float | None:
    """The fraction ``on`` adds to ``off``: on/off - 1."""
    return round(on / off - 1.0, 3) if off and on else None


def percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.1f}%"


def report(outcome: Outcome, args: argparse.Namespace, console: Any) -> dict[str, Any]:
    from rich.table import Table

    table = Table(title="durable closed-loop puts, 3 members on loopback (16-byte keys, 100-byte values)")
    for col, justify in (("system", "left"), ("op", "left"), ("clients", "right"),
                         ("ops/s", "right"), ("p50 ms", "right"), ("p99 ms", "right"),
                         ("failed", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for system in args.systems:
        if system in outcome.missing:
            table.add_row(system, "put", "-", "[red]missing[/]", "-", "-", "-")
            continue
        for p in outcome.points:
            if p.system == system:
                table.add_row(
                    system, p.op, str(p.clients), f"{p.ops_per_s:,.0f}",
                    f"{p.p50_ms:.2f}", f"{p.p99_ms:.2f}", str(p.failures),
                )
    console.print(table)

    def point(system: str, clients: int, op: str = "put") -> Point | None:
        for p in outcome.points:
            if p.system == system and p.op == op and p.clients == clients:
                return p
        return None

    def put(system: str, clients: int) -> Point | None:
        return point(system, clients)

    ratios: dict[str, dict[str, float | None]] = {}
    rt = Table(title="ratios (exapyte / other)")
    for col in ("clients", "throughput vs etcd", "throughput vs PySyncObj", "p50 vs etcd"):
        rt.add_column(col, justify="right")
    for clients in args.clients:
        ex, et, so = put(EXAPYTE, clients), put("etcd", clients), put("pysyncobj", clients)
        row = {
            "throughput_vs_etcd": ratio(ex.ops_per_s, et.ops_per_s) if ex and et else None,
            "throughput_vs_pysyncobj": ratio(ex.ops_per_s, so.ops_per_s) if ex and so else None,
            "p50_vs_etcd": ratio(ex.p50_ms, et.p50_ms) if ex and et else None,
        }
        ratios[str(clients)] = row
        rt.add_row(str(clients), *(f"{v:.2f}x" if v is not None else "missing" for v in row.values()))
    console.print(rt)

    # Each consensus protocol (security.mode off) against etcd and against exapyte's Raft, the
    # same run's figures: throughput as a / b (above 1: faster), latency as a / b (above 1: slower).
    protocols: dict[str, dict[str, dict[str, float | None]]] = {}
    pt = Table(title="consensus protocols (exapyte, security.mode off): puts, and each as a ratio "
               "to etcd's and to exapyte-Raft's")
    for col in ("protocol", "clients", "puts/s", "p50 ms", "p99 ms", "puts/s etcd",
                "p50 etcd", "p99 etcd", "puts/s Raft", "p50 Raft", "p99 Raft"):
        pt.add_column(col, justify="left" if col == "protocol" else "right")
    raft_system = PROTOCOL_SYSTEMS[0]
    for system in (s for s in PROTOCOL_SYSTEMS if s in args.systems):
        by_clients: dict[str, dict[str, float | None]] = {}
        for clients in args.clients:
            p, et, rf = put(system, clients), put("etcd", clients), put(raft_system, clients)
            row: dict[str, float | None] = {
                "ops_per_s": round(p.ops_per_s, 1) if p else None,
                "p50_ms": round(p.p50_ms, 3) if p else None,
                "p99_ms": round(p.p99_ms, 3) if p else None,
            }
            for other, name in ((et, "etcd"), (rf, "raft")):
                row[f"throughput_vs_{name}"] = ratio(p.ops_per_s, other.ops_per_s) \
                    if p and other else None
                row[f"p50_vs_{name}"] = ratio(p.p50_ms, other.p50_ms) if p and other else None
                row[f"p99_vs_{name}"] = ratio(p.p99_ms, other.p99_ms) if p and other else None
            by_clients[str(clients)] = row
            shown = [
                "missing" if row["ops_per_s"] is None else f"{row['ops_per_s']:,.0f}",
                *("-" if row[k] is None else f"{row[k]:.2f}" for k in ("p50_ms", "p99_ms")),
                *("-" if row[k] is None else f"{row[k]:.2f}x" for k in (
                    "throughput_vs_etcd", "p50_vs_etcd", "p99_vs_etcd",
                    "throughput_vs_raft", "p50_vs_raft", "p99_vs_raft",
                )),
            ]
            pt.add_row(EXAPYTE_SYSTEMS[system][0], str(clients), *shown)
        protocols[system] = by_clients
    if protocols:
        console.print(pt)

    # CURVE's cost: how much put throughput it takes away (1 - on/off) and how much it adds to
    # the median latency (on/off - 1), at each client count, and for the strong reads.
    curve: dict[str, Any] = {"put_throughput_cost": {}, "put_p50_cost": {}}
    ct = Table(title="CURVE on / off (exapyte+curve vs exapyte)")
    for col in ("op", "clients", "ops/s off", "ops/s on", "throughput cost", "p50 ms off",
                "p50 ms on", "p50 cost"):
        ct.add_column(col, justify="right")
    reads_at = max(args.clients)
    rows = [("put", c) for c in args.clients] + ([("get", reads_at)] if args.reads else [])
    for op, clients in rows:
        off, on = point(EXAPYTE, clients, op), point(EXAPYTE_CURVE, clients, op)
        tput = cost(on.ops_per_s, off.ops_per_s) if off and on else None
        p50 = added(on.p50_ms, off.p50_ms) if off and on else None
        if op == "put":
            curve["put_throughput_cost"][str(clients)] = tput
            curve["put_p50_cost"][str(clients)] = p50
        else:
            curve["get_throughput_cost"] = {str(clients): tput}
            curve["get_p50_cost"] = {str(clients): p50}
        ct.add_row(
            op, str(clients),
            *(f"{p.ops_per_s:,.0f}" if p else "missing" for p in (off, on)),
            percent(tput),
            *(f"{p.p50_ms:.2f}" if p else "missing" for p in (off, on)),
            percent(p50),
        )
    console.print(ct)
    curve_64 = curve["put_throughput_cost"].get("64")
    curve_p50_1 = curve["put_p50_cost"].get("1")
    console.print(
        f"CURVE's cost: put throughput at 64 clients [bold]{percent(curve_64)}[/], "
        f"p50 at 1 client [bold]{percent(curve_p50_1)}[/] (throughput: 1 - on/off; "
        "p50: on/off - 1)"
    )

    busiest = [p for p in outcome.points if p.op == "put" and p.clients == max(args.clients)]
    if any(p.cpu for p in busiest):
        cpu_table = Table(
            title=f"CPU during the {max(args.clients)}-client puts (% of one core; "
            "zmq io: libzmq's I/O threads)"
        )
        columns = ("leader", "leader_zmq_io", "followers", "followers_zmq_io", "load_generator",
                   "neighbours", "machine")
        cpu_table.add_column("system")
        for col in columns:
            cpu_table.add_column(col.replace("_zmq_io", " zmq io").replace("_", " "),
                                 justify="right")
        for p in busiest:
            cpu_table.add_row(p.system, *(f"{p.cpu[c]:.0f}" if c in p.cpu else "-"
                                          for c in columns))
        console.print(cpu_table)
        console.print("(neighbours: the idle systems up beside it; machine: % of all cores "
                      "busy, with everyone's work on it)")

    reads = [p for p in outcome.points if p.system == EXAPYTE and p.op == "get"]
    top = max(args.clients)
    ex_top = put(EXAPYTE, top)
    read_write = ratio(reads[0].ops_per_s, ex_top.ops_per_s) if reads and ex_top else None
    if read_write is not None:
        console.print(f"exapyte strong reads / puts at {top} clients: [bold]{read_write:.2f}x[/]")

    def target(name: str, value: float | None, goal: float, at_least: bool,
               unit: str = "ratio") -> dict[str, Any]:
        met = None if value is None else (value >= goal if at_least else value <= goal)
        return {"target": name, "value": value, "goal": goal,
                "at_least": at_least, "met": met, "unit": unit}

    r64 = ratios.get("64", {})
    r1 = ratios.get("1", {})
    targets = [
        target("exapyte/etcd put throughput at 64 clients", r64.get("throughput_vs_etcd"),
               TARGET_ETCD_THROUGHPUT_64, True),
        target("exapyte/PySyncObj put throughput at 64 clients",
               r64.get("throughput_vs_pysyncobj"), TARGET_SYNCOBJ_THROUGHPUT_64, True),
        target("exapyte/etcd p50 at 1 client", r1.get("p50_vs_etcd"), TARGET_P50_1, False),
        target("exapyte strong reads/puts at 64 clients", read_write if top == 64 else None,
               TARGET_READ_WRITE_64, True),
        target("CURVE's cost in put throughput at 64 clients", curve_64,
               TARGET_CURVE_COST_64, False, unit="fraction"),
    ]
    for t in targets:
        sign = ">=" if t["at_least"] else "<="
        show = percent if t["unit"] == "fraction" else (lambda v: f"{v:.2f}x")
        shown = "n/a" if t["value"] is None else show(t["value"])
        verdict = {True: "[green]met[/]", False: "[red]missed[/]", None: "[yellow]not measured[/]"}
        console.print(f"target {t['target']} {sign} {show(t['goal'])}: {shown} "
                      f"{verdict[t['met']]}")
    return {"ratios": ratios, "protocols": protocols,
            "read_write_ratio_at_max_clients": read_write, "curve": curve, "targets": targets}


def machine_info(scratch: Path, versions: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "scratch_dir": str(scratch),
        "versions": versions,
    }
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as mounts:
        best = ""
        for line in mounts:
            _device, mount_point, fs_type, *_ = line.split()
            if str(scratch).startswith(mount_point) and len(mount_point) >= len(best):
                best, info["filesystem"] = mount_point, fs_type
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--syncobj-node"]:
        return syncobj_node_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement per point")
    parser.add_argument("--clients", default=",".join(map(str, DEFAULT_CLIENTS)))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--workers", default="auto", help="load-generator processes per point")
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS,
        help="measurements per point, alternating between systems measured side by side",
    )
    parser.add_argument(
        "--side-by-side", choices=("exapyte", "all"), default="exapyte",
        help="which systems are up together and alternate point by point: the exapyte systems "
        "(etcd and PySyncObj then run alone, one after the other), or all of them",
    )
    parser.add_argument("--json", default=str(REPO_ROOT / "bench" / "results" / "raft.json"))
    parser.add_argument("--dir", default=None, help="data directories (default: beside --json)")
    parser.add_argument("--profile", default=None, help="cProfile the exapyte nodes into DIR")
    parser.add_argument(
        "--no-reads", dest="reads", action="store_false", help="skip the exapyte strong reads"
    )
    args = parser.parse_args(argv)
    args.clients = sorted({int(c) for c in args.clients.split(",") if c})
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or not args.clients or min(args.clients) < 1 or args.seconds <= 0 \
            or args.rounds < 1:
        parser.error(
            f"bad --systems/--clients/--seconds/--rounds (systems: {', '.join(SYSTEMS)})"
        )
    if args.profile:
        args.profile = os.path.abspath(args.profile)
        os.makedirs(args.profile, exist_ok=True)

    from rich.console import Console

    # Wide enough for the protocols table when the output is a file or a pipe (rich's default
    # there is 80 columns); a terminal keeps its own width.
    console = Console() if sys.stdout.isatty() else Console(width=CONSOLE_COLUMNS_PIPED)
    results_dir = Path(args.json).resolve().parent
    results_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="raft-bench-", dir=args.dir or results_dir))
    console.print(
        f"raft benchmark: {', '.join(args.systems)}; clients {args.clients}; "
        f"{args.seconds:g} s per point; data in {scratch}"
    )
    try:
        outcome = run_all(args, scratch, console)
        info = machine_info(scratch, outcome.versions)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = report(outcome, args, console)
    document = {
        "benchmark": "raft",
        "workload": {
            "op": "put (closed loop, one outstanding request per client)",
            "key_bytes": KEY_BYTES,
            "value_bytes": VALUE_BYTES,
            "key_space": KEY_SPACE,
            "clients": args.clients,
            "seconds_per_point": args.seconds,
            "rounds": args.rounds,
            "side_by_side": args.side_by_side,
            "warmup_s": WARMUP_S,
            "workers": args.workers,
            "members": 3,
            "reads": f"exapyte get, consistency strong, {max(args.clients)} clients, "
            f"systems {', '.join(READ_SYSTEMS)}",
            "exapyte_security": {s: mode for s, (_p, mode) in EXAPYTE_SYSTEMS.items()},
            "exapyte_protocol": {s: proto for s, (proto, _m) in EXAPYTE_SYSTEMS.items()},
        },
        "machine": info,
        "durability": outcome.durability,
        "missing": outcome.missing,
        "results": [p.as_json() for p in outcome.points],
        **summary,
    }
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
