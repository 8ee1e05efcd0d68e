"""Regression tests for the checker fixes: an initial state per model (``--initial``), the model
inferred from the operations, and availability that counts compare mismatches as answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from level_build import LH
from harness.checker import (
    HistoryFormatError,
    check,
    check_file,
    choose_model,
    get_model,
    infer_model,
    parse_history,
    parse_initial,
    with_initial,
)
from harness.checker.stats import check_stats
from harness.cli import main
from harness.history import pair_ops

MULTI = """
[{:process 0, :type :invoke, :f :txn, :value [[:read :x nil] [:read :y nil]]}
 {:process 0, :type :ok, :f :txn, :value [[:read :x 0] [:read :y 0]]}
 {:process 1, :type :invoke, :f :txn, :value [[:write :x 1] [:write :y 2]]}
 {:process 1, :type :ok, :f :txn, :value [[:write :x 1] [:write :y 2]]}
 {:process 0, :type :invoke, :f :txn, :value [[:read :x nil] [:read :y nil]]}
 {:process 0, :type :ok, :f :txn, :value [[:read :x 1] [:read :y %s]]}]
"""

MUTEX = """
{:process 0, :type :invoke, :f :acquire, :value nil}
{:process 0, :type :ok, :f :acquire, :value nil}
{:process 1, :type :invoke, :f :acquire, :value nil}
{:process 1, :type :ok, :f :acquire, :value nil}
"""


def test_parse_initial_reads_json_edn_and_files(tmp_path: Path) -> None:
    assert parse_initial('{"x": 0, "y": 0}') == {"x": 0, "y": 0}
    assert parse_initial("{x 0, y 0}") == {"x": 0, "y": 0}
    assert parse_initial("{:x 0 :y 0}") == {"x": 0, "y": 0}
    assert parse_initial("0") == 0
    path = tmp_path / "init.edn"
    path.write_text("{:x 5}", encoding="utf-8")
    assert parse_initial(str(path)) == {"x": 5}
    with pytest.raises(HistoryFormatError):
        parse_initial("{:x")


def test_a_multi_register_history_from_x0_y0() -> None:
    good = parse_history(MULTI % 2, "edn")
    assert infer_model(good.operations, "edn")[0] == "multi-register"
    # Without its initial state the first read of 0 cannot be explained: registers start nil.
    assert check("multi-register", good).valid is False
    model = with_initial("multi-register", parse_initial("{x 0, y 0}"))
    assert check(model, good).valid is True
    # The initial state does not make everything pass: y=0 after the txn wrote 2 is a violation.
    bad = parse_history(MULTI % 0, "edn")
    result = check(model, bad)
    assert result.valid is False and "[r x 1, r y 0]" in (result.cause or "")


def test_a_per_key_initial_for_the_single_key_models() -> None:
    rows = parse_history('{"type":"invoke","process":0,"f":"read","key":"a","value":null,"time":1}\n'
                         '{"type":"ok","process":0,"f":"read","key":"a","value":"7","time":2}\n'
                         '{"type":"invoke","process":0,"f":"read","key":"b","value":null,"time":3}\n'
                         '{"type":"ok","process":0,"f":"read","key":"b","value":"","time":4}\n', "jsonl")
    assert check("kv", rows).valid is False
    assert check(with_initial("kv", {"a": "7"}), rows).valid is True
    reg = with_initial("cas-register-etcd", {"a": "7", "b": ""})
    assert check(reg, rows).valid is True
    assert check(with_initial("register", 3), parse_history(MULTI_FREE_READ, "edn")).valid is True
    assert with_initial("mutex", True).init() is True
    assert with_initial("set", [1, 2]).init() == frozenset({1, 2})
    with pytest.raises(ValueError):
        with_initial("mutex", 3)


MULTI_FREE_READ = "{:process 0 :type :invoke :f :read} {:process 0 :type :ok :f :read :value 3}"


def test_the_model_is_inferred_from_the_operations(tmp_path: Path) -> None:
    mutex = tmp_path / "mutex.edn"
    mutex.write_text(MUTEX, encoding="utf-8")
    history = parse_history(MUTEX, "kv")
    assert infer_model(history.operations, "edn")[0] == "mutex"
    assert choose_model(history)[0].name == "mutex"
    # Two acquires without a release: the lock was held twice.
    assert check_file(mutex).valid is False
    assert infer_model(parse_history("{:process 0 :type :invoke :f :add :value 1}", "edn").operations)[0] == "set"
    assert infer_model(parse_history("{:process 0 :type :invoke :f :cas :value [0 1]}", "edn").operations)[0] == \
        "cas-register-knossos"
    assert infer_model(parse_history("INFO jepsen.util - 0 :invoke :cas [0 1]", "etcd").operations, "etcd")[0] == \
        "cas-register-etcd"
    assert choose_model(history, "mutex")[1] == "named"


def test_check_command_takes_initial_and_infers_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    multi = tmp_path / "multi.edn"
    multi.write_text(MULTI % 2, encoding="utf-8")
    assert main(["check", str(multi), "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == "multi-register" and "transactions" in record["model_inferred_from"]
    assert main(["check", str(multi), "--json", "--initial", "{x 0, y 0}"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
    assert main(["check", str(multi), "--initial", "{x"]) == 2


def test_availability_counts_a_compare_mismatch_as_an_answer() -> None:
    h = (LH().op(0, "cas", "x", [1, 2], 0, 5, type="fail", error="cas-mismatch")
         .op(0, "cas", "x", [1, 2], 10, 15, type="fail", error="cas-mismatch")
         .op(0, "write", "x", 1, 20, 25)
         .op(0, "write", "x", 3, 30, 35, type="fail", error="not_leader")
         .op(0, "read", "x", None, 200, 205, result=1))
    verdict = check_stats(pair_ops(h.sorted_events()), final_start_ns=100 * 1_000_000)
    ev = verdict.evidence
    assert ev["ops"] == 4 and ev["cas_mismatches"] == 2
    assert ev["availability"] == 0.75  # three answers (two mismatches, one write) of four; the refusal is not one
    assert ev["by_f"]["cas"]["fail"] == 2  # the per-op counts still show them as fails


def test_the_corpus_defaults_are_unchanged() -> None:
    assert get_model(infer_model([], "etcd")[0]).name == "cas-register-etcd"
    assert infer_model([], "edn")[0] == "cas-register-knossos"
    assert infer_model([], "kv")[0] == "kv"
