"""kill -9 a writer in the middle of its work: every acknowledged write must survive.

The writer (crash_writer.py) prints a batch number only after ``apply(sync=True)`` (or
``persist``) returned. The test reads some acknowledgements, SIGKILLs the process at an arbitrary
point of its loop, reopens the file and checks that every acknowledged batch is there and that
batches are all-or-nothing (the one in flight at the kill is either complete or absent). Each
round resumes on the same file, so later rounds also check recovery after earlier kills.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from exapyte.protocol.raft.core import raft_hard_state
from exapyte.protocol.types import Entry
from exapyte.storage import open_storage

WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_writer.py")
KEYS_PER_BATCH = 10
PAYLOAD = bytes(range(256)) * 2
HOT_KEYS = 20  # the tiered writer's hot tier is far smaller than what it writes


def run_and_kill(args: list[str], acks_before_kill: int) -> int:
    """Start the writer, wait for some acknowledgements, SIGKILL it; return the last ack."""
    process = subprocess.Popen(
        [sys.executable, WRITER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    last = 0
    try:
        for _ in range(acks_before_kill):
            line = process.stdout.readline()
            if not line:
                raise AssertionError(f"writer exited early: {process.stderr.read()}")
            last = int(line)
    finally:
        process.kill()  # SIGKILL: no cleanup, no close(), nothing flushed on the way out
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == -9
    for line in rest.splitlines():  # acknowledged between our last read and the kill
        last = int(line)
    return last


def writer_args(backend: str, path: str, mode: str) -> list[str]:
    return [backend, path, mode, *([str(HOT_KEYS)] if backend == "tiered" else [])]


@pytest.mark.parametrize("backend", ["sqlite", "tiered"])
def test_acknowledged_batches_survive_kill_9_and_are_all_or_nothing(
    backend: str, tmp_path: object
) -> None:
    path = f"{tmp_path}/crash/{backend}.db"
    for acks in (40, 7, 25):
        last_ack = run_and_kill(writer_args(backend, path, "kv"), acks)
        with open_storage(backend, path) as store:
            counter = store.get("counter")
            assert counter is not None
            applied = int(counter.value)
            assert applied >= last_ack, f"acknowledged batch {last_ack} lost; store has {applied}"
            # The counter, the meta and the batch's keys moved together or not at all.
            assert counter.version == applied
            assert store.meta_get("last_batch") == counter.value
            assert store.count() == applied * KEYS_PER_BATCH + 1
            for n in range(1, applied + 1):
                rows = store.scan(f"b{n:06d}/", f"b{n:06d}0", limit=100)
                assert len(rows) == KEYS_PER_BATCH, f"batch {n} is torn: {len(rows)} keys"
                assert all(record.value == PAYLOAD for _, record in rows)
            assert store.scan(f"b{applied + 1:06d}/", f"b{applied + 1:06d}0") == []


@pytest.mark.parametrize("backend", ["sqlite", "tiered"])
def test_acknowledged_log_entries_and_hard_state_survive_kill_9(
    backend: str, tmp_path: object
) -> None:
    path = f"{tmp_path}/crash/{backend}-log.db"
    for acks in (40, 15):
        last_ack = run_and_kill(writer_args(backend, path, "log"), acks)
        with open_storage(backend, path) as store:
            last = store.last_index()
            assert last >= last_ack, f"acknowledged entry {last_ack} lost; log ends at {last}"
            state = store.load_persisted()
            assert state.hard_state == raft_hard_state(last, "n1", last - 1)
            assert state.entries == tuple(Entry(n, n, 0, PAYLOAD) for n in range(1, last + 1))
