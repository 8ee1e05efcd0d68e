"""``python -m harness check FILE...``: check history files for linearizability, or for a level.

Prints one verdict per file (rich text, or one JSON object per line with ``--json``) and exits
with 0 when every file is valid, 1 when any is not, and 2 when none is invalid but some could
not be decided (time budget exhausted, unreadable file).

Without ``--level`` each file is checked for linearizability against ``--model`` (default: the
run's model from the ``results.json`` beside it, else inferred from the operations) started
from ``--initial``. With ``--level L`` an exapyte JSONL history is judged by the per-level
checkers (:mod:`harness.checker.levels`): every op at level L, or each at the level it asked for
with ``--level requested``; ``--staleness-versions``/``--staleness-ms`` are the bounds K and T.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from time import perf_counter
from typing import Any

from rich.console import Console
from rich.markup import escape

from harness.checker.formats import (
    DEFAULT_MODEL_BY_FORMAT,
    FORMATS,
    HistoryFormatError,
    parse_initial,
    read_history,
)
from harness.checker.level_history import LEVELS, read_level_history
from harness.checker.levels import check_level
from harness.checker.limits import CHECK_TIMEOUT_S_DEFAULT
from harness.checker.linearizability import check
from harness.checker.models import get_model, infer_model, model_names, with_initial
from harness.checker.visualize import write_html
from harness.cli import Subcommand

__all__ = ["SUBCOMMAND", "EXIT_INVALID", "EXIT_UNKNOWN", "EXIT_VALID", "exit_status"]

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_UNKNOWN = 2

_EPILOG = (
    "formats: "
    + ", ".join(f"{f} (default model {DEFAULT_MODEL_BY_FORMAT[f]})" for f in FORMATS)
    + "\nwithout --model, the model is inferred from the operations (mutex, multi-register, set, kv, register)"
    + "\nexit status: 0 all valid, 1 some invalid, 2 some undecided"
)
LEVEL_CHOICES = (*LEVELS, "requested")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EPILOG
    parser.add_argument("files", metavar="FILE", nargs="+", type=Path, help="history files")
    parser.add_argument("--model", choices=model_names(), help="model to check against (default: by format)")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, help="history format (default: detected)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=CHECK_TIMEOUT_S_DEFAULT,
        metavar="S",
        help=f"time budget per file in seconds; 0 for none (default {CHECK_TIMEOUT_S_DEFAULT:g})",
    )
    parser.add_argument(
        "--initial", metavar="STATE",
        help="the model's initial state, JSON or EDN (e.g. '{x 0, y 0}' or '{\"x\": 0}'), or a file holding it",
    )
    parser.add_argument(
        "--level", choices=LEVEL_CHOICES,
        help="judge an exapyte JSONL history at this consistency level (requested: each op at its own)",
    )
    parser.add_argument("--staleness-versions", type=int, metavar="K", help="bounded staleness: at most K versions behind")
    parser.add_argument("--staleness-ms", type=float, metavar="T", help="bounded staleness: at most T ms behind")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--html", type=Path, metavar="DIR", help="write a timeline page per invalid file here")


def exit_status(verdicts: list[Any]) -> int:
    """0 when all are True, 1 when any is False, else 2."""
    if any(v is False for v in verdicts):
        return EXIT_INVALID
    if all(v is True for v in verdicts):
        return EXIT_VALID
    return EXIT_UNKNOWN


def _run_model(file: Path, fmt: str) -> Any:
    """The model the harness checked this run with, for a ``history.jsonl`` with the run's
    ``results.json`` beside it (register: cas-register; kv: kv with a failed cas as a compare
    that did not match); None otherwise, so the format's default applies."""
    if fmt != "jsonl":
        return None
    try:
        workload = json.loads((file.parent / "results.json").read_text(encoding="utf-8"))["options"]["workload"]
        from harness.checker.invariants import model_for
        from harness.workloads import get_workload

        name = get_workload(workload).model
        return model_for(name) if name else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _html_path(directory: Path, file: Path, used: set[Path]) -> Path:
    candidate = directory / f"{file.stem}.html"
    n = 1
    while candidate in used:
        n += 1
        candidate = directory / f"{file.stem}-{n}.html"
    used.add(candidate)
    return candidate


def _run(args: argparse.Namespace) -> int:
    console = Console(soft_wrap=True, highlight=False)
    timeout_s = args.timeout if args.timeout and args.timeout > 0 else None
    if args.level is None and (args.staleness_versions is not None or args.staleness_ms is not None):
        console.print("[red]--staleness-versions and --staleness-ms need --level[/]")
        return EXIT_UNKNOWN
    try:
        initial = None if args.initial is None else parse_initial(args.initial)
    except HistoryFormatError as exc:
        console.print(f"[red]--initial: {escape(str(exc))}[/]")
        return EXIT_UNKNOWN
    verdicts: list[Any] = []
    used_html: set[Path] = set()
    for file in args.files:
        if args.level is not None:
            level_record = _run_level(args, file, initial, timeout_s)
            verdicts.append(level_record["valid"])
            if args.json:
                level_record.pop("_report", None)
                print(json.dumps(level_record, default=str), flush=True)
            else:
                _print_level(console, level_record)
            continue
        record: dict[str, Any] = {"file": str(file)}
        started = perf_counter()
        try:
            history = read_history(file, args.fmt)
        except (OSError, UnicodeDecodeError, HistoryFormatError) as exc:
            record.update(valid="unknown", cause=f"cannot read history: {exc}", elapsed_s=0.0, ops=0)
        else:
            model: Any = args.model or _run_model(file, history.format)
            if model is None:
                name, why = infer_model(history.operations, history.format)
                model = get_model(name)
                record["model_inferred_from"] = why
            try:
                model = with_initial(model, initial)
                result = check(model, history, timeout_s)
            except (ValueError, TypeError) as exc:
                # The history does not fit the model (an operation it does not know): undecided.
                record.update(
                    format=history.format, model=getattr(model, "name", model), valid="unknown", ops=len(history),
                    cause=f"checker error: {exc}", elapsed_s=round(perf_counter() - started, 6),
                )
            else:
                record.update(format=history.format, **result.to_dict())
                record["elapsed_s"] = round(perf_counter() - started, 6)
                if args.html is not None and result.valid is False:
                    path = write_html(result, _html_path(args.html, file, used_html), title=str(file))
                    record["html"] = str(path) if path else None
        verdicts.append(record["valid"])
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            _print(console, record)
    return exit_status(verdicts)


def _run_level(args: argparse.Namespace, file: Path, initial: Any, timeout_s: float | None) -> dict[str, Any]:
    record: dict[str, Any] = {"file": str(file), "level": args.level}
    started = perf_counter()
    if args.fmt not in (None, "jsonl"):
        record.update(valid="unknown", cause="the level checkers read exapyte JSONL histories only", ops=0,
                      elapsed_s=0.0)
        return record
    level = None if args.level == "requested" else args.level
    try:
        history = read_level_history(file, initial=initial)
        report = check_level(history, level, staleness_versions=args.staleness_versions,
                             staleness_ms=args.staleness_ms, linearizability_timeout_s=timeout_s)
    except (OSError, UnicodeDecodeError) as exc:
        record.update(valid="unknown", cause=f"cannot read history: {exc}", ops=0, elapsed_s=0.0)
        return record
    except (ValueError, TypeError, KeyError) as exc:
        record.update(valid="unknown", cause=f"checker error: {exc}", ops=0,
                      elapsed_s=round(perf_counter() - started, 6))
        return record
    record.update(report.to_dict())
    record["level"] = args.level
    record["elapsed_s"] = round(perf_counter() - started, 6)
    record["_report"] = report
    return record


def _print_level(console: Console, record: dict[str, Any]) -> None:
    report = record.pop("_report", None)
    _print(console, record)
    if report is None:
        return
    console.print(report.rich_table())
    served = report.staleness.distribution()
    console.print(f"           staleness served: versions p50 {served['versions_p50']} p99 {served['versions_p99']} "
                  f"max {served['versions_max']}; ms p50 {served['ms_p50']} p99 {served['ms_p99']} "
                  f"max {served['ms_max']} ({served['stale_reads']} of {served['reads']} reads stale)")
    conv = report.convergence
    console.print(f"           convergence: {conv.valid}"
                  + (f", within {conv.converged_within_ms} ms of the final phase" if conv.valid is True else "")
                  + (f" ({escape(conv.cause)})" if conv.cause else ""))
    for v in report.violations[:5]:
        console.print(f"           [red]{escape(v.check)}[/] ({escape(v.level)}): {escape(v.cause)}")
    for note in report.notes:
        console.print(f"           [dim]{escape(note)}[/]")


def _print(console: Console, record: dict[str, Any]) -> None:
    valid = record["valid"]
    mark = {True: "[green]valid[/]", False: "[bold red]INVALID[/]"}.get(valid, "[yellow]unknown[/]")
    details = f"{record.get('ops', 0)} ops, {record['elapsed_s']:.3f} s"
    if record.get("model"):
        details += f", {record['format']} / {record['model']}"
    if record.get("level"):
        details += f", level {record['level']}"
    console.print(f"{mark:>24}  {escape(record['file'])}  [dim]{escape(details)}[/]")
    if record.get("cause"):
        console.print(f"           {escape(record['cause'])}")
    if record.get("html"):
        console.print(f"           timeline: {escape(record['html'])}")


SUBCOMMAND = Subcommand(
    name="check",
    help="check history files for linearizability (Porcupine's algorithm) or a consistency level",
    description=(
        "Check each history FILE for linearizability against a model and print its verdict,\n"
        "or, with --level, judge an exapyte JSONL history at a consistency level.\n"
        "Formats: exapyte JSONL, Jepsen etcd logs, Jepsen/Knossos EDN, Porcupine kv logs."
    ),
    add_arguments=_add_arguments,
    run=_run,
)
