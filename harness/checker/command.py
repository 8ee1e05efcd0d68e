"""``python -m harness check FILE...``: check history files for linearizability.

Prints one verdict per file (rich text, or one JSON object per line with ``--json``) and exits
with 0 when every file is linearizable, 1 when any is not, and 2 when none is invalid but some
could not be decided (time budget exhausted, unreadable file).
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
    read_history,
)
from harness.checker.limits import CHECK_TIMEOUT_S_DEFAULT
from harness.checker.linearizability import check
from harness.checker.models import model_names
from harness.checker.visualize import write_html
from harness.cli import Subcommand

__all__ = ["SUBCOMMAND", "EXIT_INVALID", "EXIT_UNKNOWN", "EXIT_VALID", "exit_status"]

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_UNKNOWN = 2

_EPILOG = (
    "formats: "
    + ", ".join(f"{f} (default model {DEFAULT_MODEL_BY_FORMAT[f]})" for f in FORMATS)
    + "\nexit status: 0 all linearizable, 1 some not linearizable, 2 some undecided"
)


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
    verdicts: list[Any] = []
    used_html: set[Path] = set()
    for file in args.files:
        record: dict[str, Any] = {"file": str(file)}
        started = perf_counter()
        try:
            history = read_history(file, args.fmt)
        except (OSError, UnicodeDecodeError, HistoryFormatError) as exc:
            record.update(valid="unknown", cause=f"cannot read history: {exc}", elapsed_s=0.0, ops=0)
        else:
            model = args.model or _run_model(file, history.format) or DEFAULT_MODEL_BY_FORMAT[history.format]
            try:
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


def _print(console: Console, record: dict[str, Any]) -> None:
    valid = record["valid"]
    mark = {True: "[green]valid[/]", False: "[bold red]INVALID[/]"}.get(valid, "[yellow]unknown[/]")
    details = f"{record.get('ops', 0)} ops, {record['elapsed_s']:.3f} s"
    if "model" in record:
        details += f", {record['format']} / {record['model']}"
    console.print(f"{mark:>24}  {escape(record['file'])}  [dim]{escape(details)}[/]")
    if record.get("cause"):
        console.print(f"           {escape(record['cause'])}")
    if record.get("html"):
        console.print(f"           timeline: {escape(record['html'])}")


SUBCOMMAND = Subcommand(
    name="check",
    help="check history files for linearizability (Porcupine's algorithm)",
    description=(
        "Check each history FILE for linearizability against a model and print its verdict.\n"
        "Formats: exapyte JSONL, Jepsen etcd logs, Jepsen/Knossos EDN, Porcupine kv logs."
    ),
    add_arguments=_add_arguments,
    run=_run,
)
