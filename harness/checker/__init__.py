"""exapyte's linearizability checker (Porcupine's algorithm, in Python).

Public API::

    from harness.checker import check, check_file, read_history, get_model

    result = check_file("history.jsonl")            # format detected, default model for it
    result = check_file("h.jsonl", model="kv", timeout_s=10.0)
    result.valid        # True | False | "unknown"
    result.cause        # why, in words
    write_html(result, "report/timeline.html")      # evidence for a failing history

The per-level consistency checkers (docs/consistency-checkers.md)::

    from harness.checker import check_level_file, read_level_history, check_level

    report = check_level_file("history.jsonl", "session")          # every op judged at session
    report = check_level_file("history.jsonl", None, staleness_versions=5, staleness_ms=2000)
    report.valid, report.cause, report.violations                   # each names its operations
    report.table(), report.markdown(), report.rich_table()          # requested vs delivered
    report.staleness.distribution(), report.convergence.converged_within_ms

See docs/checker.md for the algorithm, the models and the formats.
"""

from __future__ import annotations

from pathlib import Path

from typing import Any

from harness.checker.convergence import ConvergenceReport, check_convergence
from harness.checker.formats import (
    DEFAULT_MODEL_BY_FORMAT,
    FORMATS,
    HistoryFormatError,
    detect_format,
    parse_history,
    parse_initial,
    read_history,
)
from harness.checker.level_history import (
    LEVELS,
    LevelHistory,
    LevelOp,
    Seen,
    Violation,
    level_history,
    read_level_history,
)
from harness.checker.levels import DELIVERED, LevelReport, OpRating, check_level, check_level_file, rate_operations
from harness.checker.history import RETURN_NEVER, Call, Event, History, Operation, Output, pair_events
from harness.checker.linearizability import CheckResult, PartitionResult, Verdict, check, check_operations
from harness.checker.models import (
    MODELS,
    CasRegister,
    Kv,
    Model,
    MultiRegister,
    Mutex,
    Register,
    SetModel,
    get_model,
    infer_model,
    model_names,
    with_initial,
)
from harness.checker.prefix import check_consistent_prefix, phantom_violations
from harness.checker.session import SESSION_CHECKS, check_session
from harness.checker.staleness import Staleness, StalenessReport, check_staleness, check_write_order
from harness.checker.visualize import render_html, write_html

__all__ = [
    "DEFAULT_MODEL_BY_FORMAT",
    "DELIVERED",
    "FORMATS",
    "LEVELS",
    "MODELS",
    "RETURN_NEVER",
    "SESSION_CHECKS",
    "Call",
    "CasRegister",
    "CheckResult",
    "ConvergenceReport",
    "Event",
    "History",
    "HistoryFormatError",
    "Kv",
    "LevelHistory",
    "LevelOp",
    "LevelReport",
    "Model",
    "MultiRegister",
    "Mutex",
    "OpRating",
    "Operation",
    "Output",
    "PartitionResult",
    "Register",
    "Seen",
    "SetModel",
    "Staleness",
    "StalenessReport",
    "Verdict",
    "Violation",
    "check",
    "check_consistent_prefix",
    "check_convergence",
    "check_file",
    "check_jsonl",
    "check_level",
    "check_level_file",
    "check_operations",
    "check_session",
    "check_staleness",
    "check_write_order",
    "choose_model",
    "detect_format",
    "get_model",
    "infer_model",
    "level_history",
    "model_names",
    "pair_events",
    "parse_history",
    "parse_initial",
    "phantom_violations",
    "rate_operations",
    "read_history",
    "read_level_history",
    "render_html",
    "with_initial",
    "write_html",
]


def choose_model(history: History, model: str | Model | None = None, initial: Any = None) -> tuple[Model, str]:
    """The model to check ``history`` against, and why: ``model`` when given, else the one its
    operations call for (:func:`infer_model`); started from ``initial`` when given."""
    if model is not None:
        chosen, why = get_model(model), "named"
    else:
        name, why = infer_model(history.operations, history.format)
        chosen, why = get_model(name), f"inferred from {why}"
    return with_initial(chosen, initial), why


def check_file(
    path: str | Path,
    model: str | Model | None = None,
    fmt: str | None = None,
    timeout_s: float | None = None,
    initial: Any = None,
) -> CheckResult:
    """Read the history in ``path`` and check it.

    ``fmt`` is one of :data:`FORMATS` (None: detected from the content); ``model`` is a model or
    a model name (None: inferred from the operations, see :func:`infer_model`); ``initial`` is
    the model's initial state (None: the model's own, see :func:`with_initial`).
    """
    history = read_history(path, fmt)
    chosen, _ = choose_model(history, model, initial)
    return check(chosen, history, timeout_s)


def check_jsonl(path: str | Path, model: str | Model = "kv", timeout_s: float | None = None) -> CheckResult:
    """Check an exapyte JSONL history file (nemesis records are skipped) against ``model``."""
    return check(model, read_history(path, "jsonl"), timeout_s)
