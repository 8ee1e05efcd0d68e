"""The history record: one type, one writer, one reader, for the harness and the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from exapyte.history import (
    Event,
    HistoryError,
    HistoryWriter,
    decode_event,
    encode_event,
    iter_jsonl,
    read_jsonl,
    to_event,
)
from exapyte.sim.workload import History, Op
from harness.history import HistoryRecorder, pair_ops, read_events

COMMITTED = Path(__file__).resolve().parents[1] / "checker" / "histories" / "levels"


def test_a_record_round_trips_through_its_line() -> None:
    event = Event("ok", 3, "read", key="k1", value=["a", 1], time=12_000, node="n2",
                  consistency="session", session="s3", group="s1", index=(2, 14), replica="n3")
    line = encode_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_event(line) == event
    with pytest.raises(AttributeError):
        event.value = None  # type: ignore[misc]  # frozen


def test_unknown_fields_are_left_out_and_missing_ones_read_as_unknown() -> None:
    line = encode_event(Event("invoke", 0, "read", key="k", time=5, consistency="strong"))
    assert set(json.loads(line)) == {"type", "process", "f", "key", "time", "consistency"}
    # a line of the older shape (every field, nulls included) and one with a field this version
    # does not know read as the same record
    old = b'{"type":"invoke","process":0,"f":"read","key":"k","value":null,"time":5,"node":null,' \
          b'"consistency":"strong","session":null,"future_field":{"x":1}}'
    assert decode_event(old) == decode_event(line)


def test_every_committed_history_still_reads() -> None:
    files = sorted(COMMITTED.glob("*.jsonl"))
    assert files
    for path in files:
        as_dicts = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        events = read_events(path)
        assert len(events) == len(as_dicts)
        # the same ops whether the events come from the reader or as the dicts of the file
        assert pair_ops(events) == pair_ops(as_dicts)
        for event, raw in zip(events, as_dicts):
            assert event.index == (tuple(raw["index"]) if isinstance(raw.get("index"), list) else raw.get("index"))
            assert event.level == (raw.get("consistency") or "strong")


def test_a_torn_last_line_is_ignored_and_any_other_bad_line_named(tmp_path: Path) -> None:
    good = encode_event(Event("invoke", 1, "write", key="x", value="v", time=1))
    assert [e.f for _, e in iter_jsonl(good + b'{"type":"ok","proc')] == ["write"]
    with pytest.raises(HistoryError, match=r"h:2: not JSON"):
        list(iter_jsonl(good + b"garbage\n" + good, "h"))
    with pytest.raises(HistoryError, match=r"h:1: type must be one of"):
        list(iter_jsonl(b'{"type":"started","process":1,"f":"read"}\n', "h"))
    with pytest.raises(HistoryError, match=r"h:1: process must be an int or 'nemesis'"):
        list(iter_jsonl(b'{"type":"ok","process":"p1","f":"read"}\n', "h"))
    with pytest.raises(HistoryError):
        to_event({"type": "ok", "process": 1})  # no f


def test_the_harness_and_the_simulator_write_the_same_lines(tmp_path: Path) -> None:
    ticks = iter([0, 40, 90])
    path = tmp_path / "history.jsonl"
    with HistoryRecorder(path, clock=lambda: next(ticks)) as rec:
        rec.record("invoke", 2, "cas", "k0", ("v1", "v2"), consistency="strong", session="s2", group="default")
        rec.record("ok", 2, "cas", "k0", ["v1", "v2"], node="n1", consistency="strong", session="s2",
                   group="default", index=[3, 7], replica="n1")
    sim = History()
    op = Op("cas", "k0", ["v1", "v2"])
    sim.op("invoke", 2, op, ["v1", "v2"], 40, None, session="s2", group="default")
    sim.op("ok", 2, op, ["v1", "v2"], 90, "n1", session="s2", group="default", index=(3, 7), replica="n1")
    assert path.read_text() == sim.to_jsonl()
    assert read_jsonl(path) == sim.records


def test_values_are_written_as_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryRecorder(path) as rec:
        rec.record("ok", 0, "read", "s", {b"x", b"y"})
        rec.record("ok", 0, "read", "s", (b"caf\xc3\xa9",))
    assert [e.value for e in read_events(path)] == [["x", "y"], ["café"]]


def test_the_writer_checks_what_it_writes() -> None:
    lines: list[bytes] = []
    writer = HistoryWriter(lines.append)
    with pytest.raises(HistoryError, match="process"):
        writer.write(Event("ok", True, "read"))
    with pytest.raises(HistoryError, match="not JSON-serializable"):
        writer.write(Event("ok", 1, "read", value=object()))
    writer.write(Event("info", "nemesis", "heal", time=3))
    assert lines == [b'{"type":"info","process":"nemesis","f":"heal","time":3}\n']
    assert writer.nemesis_events == 1 and writer.counts["info"] == 0
    assert isinstance(msgspec.json.decode(lines[0]), dict)
