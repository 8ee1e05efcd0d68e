"""History readers: EDN, Jepsen etcd logs, Porcupine kv logs, exapyte JSONL, and detection."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.checker import HistoryFormatError, check_file, check_jsonl, detect_format, parse_history, read_history
from harness.checker.edn import EdnError, Keyword, Symbol, loads, loads_all

# --- EDN --------------------------------------------------------------------------------------


def test_edn_scalars() -> None:
    assert loads_all('nil true false 42 -7 12N 1.5 2.5M "a\\"b\\n" :ok foo') == [
        None, True, False, 42, -7, 12, 1.5, 2.5, 'a"b\n', "ok", "foo"
    ]
    assert isinstance(loads(":timed-out"), Keyword) and loads(":timed-out") == "timed-out"
    assert isinstance(loads("foo/bar"), Symbol)
    assert repr(loads(":ok")) == ":ok"


def test_edn_collections_are_hashable() -> None:
    value = loads('{:a [1 2 (3 4)], :b #{1 2}, "k" {:nested nil}}')
    assert value == {"a": (1, 2, (3, 4)), "b": frozenset({1, 2}), "k": {"nested": None}}
    assert hash(value["a"]) == hash((1, 2, (3, 4)))


def test_edn_comments_commas_tags_and_discard() -> None:
    text = """
    ; a comment
    [{:process 0, :type :invoke, :time #inst "2017-01-01", :f :read}
     #_ {:ignored true}
     {:process :nemesis :type :info :f :start :value #{"n1" "n2"}}]
    """
    (ops,) = loads_all(text)
    assert len(ops) == 2
    assert ops[0]["time"] == "2017-01-01"
    assert ops[1]["process"] == "nemesis"


@pytest.mark.parametrize("bad", ["[1 2", "{:a}", "(1 2]", ")", "#_"])
def test_edn_errors_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(EdnError):
        loads_all(bad)


# --- formats ----------------------------------------------------------------------------------

ETCD_LOG = (
    "2017-01-01 INFO  jepsen.core - some other log line\n"
    "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
    "INFO jepsen.util - 1 :invoke :cas [0 3]\n"
    "INFO  jepsen.util - 0\t:ok\t:read\tnil\n"
    "INFO  jepsen.util - 1\t:fail\t:cas\t[0 3]\n"
    "INFO  jepsen.util - 2\t:invoke\t:write\t4\n"
    "INFO  jepsen.util - 2\t:info\t:write\t:timed-out\n"
    "INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n"
)


def test_etcd_log_with_tabs_and_spaces() -> None:
    history = parse_history(ETCD_LOG)
    assert history.format == "etcd"
    read, cas, write = history.operations
    assert (read.input.f, read.output, read.process) == ("read", ("ok", None), 0)
    assert cas.input.value == (0, 3) and cas.status == "fail"
    assert write.status == "info" and write.ret == math.inf
    assert history.skipped_events_count == 1


def test_kv_lines() -> None:
    text = (
        '{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}\n'
        '{:process 0, :type :ok, :f :append, :key "0", :value "x 0 0 y"}\n'
        '{:process 1, :type :invoke, :f :get, :key "0", :value nil}\n'
    )
    history = parse_history(text)
    assert history.format == "kv"
    append, get = history.operations
    assert append.input == ("append", "0", "x 0 0 y")
    assert get.pending


def test_knossos_vector_of_maps() -> None:
    text = "[{:process 0, :type :invoke, :f :write, :value 3}\n {:process 0, :type :ok, :f :write, :value 3}]"
    history = parse_history(text)
    assert history.format == "edn"
    assert history.operations[0].input == ("write", None, 3)


def jsonl(records: list[dict[str, object]]) -> str:
    base = {"key": None, "value": None, "node": None, "consistency": None, "session": None}
    return "\n".join(json.dumps({**base, **r}) for r in records) + "\n"


JSONL_GOOD = [
    {"type": "invoke", "process": 0, "f": "write", "key": "x", "value": "1", "time": 100},
    {"type": "info", "process": "nemesis", "f": "partition", "value": {"cut": ["n1", "n2"]}, "time": 150},
    {"type": "ok", "process": 0, "f": "write", "key": "x", "value": "1", "time": 200, "node": "n1"},
    {"type": "invoke", "process": 1, "f": "cas", "key": "x", "value": ["1", "2"], "time": 300},
    {"type": "invoke", "process": 2, "f": "read", "key": "x", "value": None, "time": 310},
    {"type": "ok", "process": 2, "f": "read", "key": "x", "value": "2", "time": 320},
    {"type": "ok", "process": 1, "f": "cas", "key": "x", "value": ["1", "2"], "time": 330},
    {"type": "invoke", "process": 2, "f": "read", "key": "y", "value": None, "time": 400},
    {"type": "ok", "process": 2, "f": "read", "key": "y", "value": None, "time": 410},
]


def test_jsonl_reader_skips_nemesis_and_uses_times(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text(jsonl(JSONL_GOOD))
    history = read_history(path)
    assert history.format == "jsonl"
    assert len(history.operations) == 4
    assert history.skipped_events_count == 1
    cas = history.operations[1]
    assert cas.input == ("cas", "x", ("1", "2")) and (cas.call, cas.ret) == (300, 330)
    assert check_jsonl(path).valid is True
    assert check_file(path).model.name == "kv"


def test_jsonl_stale_read_is_invalid(tmp_path: Path) -> None:
    records = JSONL_GOOD + [
        {"type": "invoke", "process": 3, "f": "read", "key": "x", "value": None, "time": 500},
        {"type": "ok", "process": 3, "f": "read", "key": "x", "value": "1", "time": 510},
    ]
    path = tmp_path / "history.jsonl"
    path.write_text(jsonl(records))
    result = check_jsonl(path)
    assert result.valid is False
    assert "key=x" in (result.cause or "")


def test_jsonl_timed_out_write_may_apply_later(tmp_path: Path) -> None:
    records = [
        {"type": "invoke", "process": 0, "f": "put", "key": "k", "value": "a", "time": 1},
        {"type": "info", "process": 0, "f": "put", "key": "k", "value": None, "time": 5},
        {"type": "invoke", "process": 1, "f": "get", "key": "k", "value": None, "time": 10},
        {"type": "ok", "process": 1, "f": "get", "key": "k", "value": "", "time": 11},
        {"type": "invoke", "process": 1, "f": "get", "key": "k", "value": None, "time": 20},
        {"type": "ok", "process": 1, "f": "get", "key": "k", "value": "a", "time": 21},
    ]
    path = tmp_path / "h.jsonl"
    path.write_text(jsonl(records))
    assert check_jsonl(path).valid is True


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('{"type": "started", "process": 0, "f": "read"}', "type must be one of"),
        ('{"type": "ok", "process": 0, "f": "read", "time": "soon"}', "time must be a number"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(HistoryFormatError, match=message) as excinfo:
        read_history(path)
    assert ":1:" in str(excinfo.value)


def test_detect_format() -> None:
    assert detect_format(ETCD_LOG) == "etcd"
    assert detect_format('{"type": "invoke"}') == "jsonl"
    assert detect_format('{:process 0, :type :invoke, :f :get, :key "1"}') == "kv"
    assert detect_format("[{:process 0 :type :invoke}]") == "edn"
    assert detect_format("", "x.log") == "etcd"
    with pytest.raises(HistoryFormatError):
        detect_format("hello world")
