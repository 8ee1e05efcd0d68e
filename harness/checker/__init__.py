"""exapyte's linearizability checker (Porcupine's algorithm, in Python).

Public API::

    from harness.checker import check, check_file, read_history, get_model

    result = check_file("history.jsonl")            # format detected, default model for it
    result = check_file("h.jsonl", model="kv", timeout_s=10.0)
    result.valid        # True | False | "unknown"
    result.cause        # why, in words
    write_html(result, "report/timeline.html")      # evidence for a failing history

See docs/checker.md for the algorithm, the models and the formats.
"""

from __future__ import annotations

from pathlib import Path

from harness.checker.formats import (
    DEFAULT_MODEL_BY_FORMAT,
    FORMATS,
    HistoryFormatError,
    detect_format,
    parse_history,
    read_history,
)
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
    model_names,
)
from harness.checker.visualize import render_html, write_html

__all__ = [
    "DEFAULT_MODEL_BY_FORMAT",
    "FORMATS",
    "MODELS",
    "RETURN_NEVER",
    "Call",
    "CasRegister",
    "CheckResult",
    "Event",
    "History",
    "HistoryFormatError",
    "Kv",
    "Model",
    "MultiRegister",
    "Mutex",
    "Operation",
    "Output",
    "PartitionResult",
    "Register",
    "SetModel",
    "Verdict",
    "check",
    "check_file",
    "check_jsonl",
    "check_operations",
    "detect_format",
    "get_model",
    "model_names",
    "pair_events",
    "parse_history",
    "read_history",
    "render_html",
    "write_html",
]


def check_file(
    path: str | Path,
    model: str | Model | None = None,
    fmt: str | None = None,
    timeout_s: float | None = None,
) -> CheckResult:
    """Read the history in ``path`` and check it.

    ``fmt`` is one of :data:`FORMATS` (None: detected from the content); ``model`` is a model or
    a model name (None: the default for the format, see :data:`DEFAULT_MODEL_BY_FORMAT`).
    """
    history = read_history(path, fmt)
    chosen = model if model is not None else DEFAULT_MODEL_BY_FORMAT[history.format]
    return check(chosen, history, timeout_s)


def check_jsonl(path: str | Path, model: str | Model = "kv", timeout_s: float | None = None) -> CheckResult:
    """Check an exapyte JSONL history file (nemesis records are skipped) against ``model``."""
    return check(model, read_history(path, "jsonl"), timeout_s)
