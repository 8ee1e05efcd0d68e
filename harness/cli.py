"""Command line of the harness: ``python -m harness <subcommand> ...``.

Each subcommand lives in its own module, which defines ``SUBCOMMAND``, a :class:`Subcommand`
(its name, one line of help, a function adding its arguments, and a function running it and
returning the exit status). :data:`SUBCOMMAND_MODULES` lists those modules; they are imported
only when the parser is built, so adding a subcommand (``test``, ``serve``, ...) is one new
module and one line here.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["SUBCOMMAND_MODULES", "Subcommand", "build_parser", "main", "subcommands"]


@dataclass(frozen=True)
class Subcommand:
    """One ``python -m harness <name>`` command."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


#: Modules defining a ``SUBCOMMAND``, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = ("harness.checker.command", "harness.test_cmd", "harness.serve")


def subcommands() -> list[Subcommand]:
    """The subcommands of every module in :data:`SUBCOMMAND_MODULES`."""
    found = []
    for module_name in SUBCOMMAND_MODULES:
        command = getattr(importlib.import_module(module_name), "SUBCOMMAND")
        if not isinstance(command, Subcommand):
            raise TypeError(f"{module_name}.SUBCOMMAND is not a harness.cli.Subcommand")
        found.append(command)
    return found


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="exapyte's Jepsen-style harness: run tests against a cluster and check their histories.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in subcommands():
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process arguments), run the subcommand, return its exit status."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args._run
    return run(args)
