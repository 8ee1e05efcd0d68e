"""The consensus cores are sans-IO: no module under exapyte/protocol imports IO, clocks or rngs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = frozenset(
    {"asyncio", "zmq", "time", "random", "threading", "sqlalchemy", "socket", "os", "subprocess",
     "importlib"}
)
PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "exapyte" / "protocol"


def forbidden_imports(source: str) -> list[str]:
    """Names of forbidden top-level modules imported anywhere in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN:
                    found.append(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] in FORBIDDEN:
                found.append(node.module)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "__import__":
                found.append("__import__")
    return found


def protocol_modules() -> list[Path]:
    return sorted(PROTOCOL_DIR.rglob("*.py"))


def test_there_are_modules_to_check() -> None:
    names = {p.name for p in protocol_modules()}
    assert {"core.py", "drive.py", "log.py", "quorum.py", "progress.py", "readindex.py"} <= names


@pytest.mark.parametrize("path", protocol_modules(), ids=lambda p: str(p.relative_to(PROTOCOL_DIR)))
def test_protocol_module_is_sans_io(path: Path) -> None:
    assert forbidden_imports(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import time\n",
        "import os.path\n",
        "from random import Random\n",
        "from asyncio import sleep\n",
        "import zmq.asyncio as z\n",
        "def f():\n    import threading\n",
        "if True:\n    from sqlalchemy import select\n",
        "x = __import__('socket')\n",
        "try:\n    import subprocess\nexcept ImportError:\n    pass\n",
    ],
)
def test_check_flags_forbidden_imports(source: str) -> None:
    # Proves the check can fail: each of these sources must be flagged.
    assert forbidden_imports(source) != []


@pytest.mark.parametrize(
    "source",
    ["import msgspec\n", "from typing import Protocol\n", "from . import time_utils\n",
     "import timeit_like_name\n"],
)
def test_check_accepts_allowed_imports(source: str) -> None:
    assert forbidden_imports(source) == []


def test_the_zab_core_is_among_the_checked_modules() -> None:
    zab = {p.relative_to(PROTOCOL_DIR).as_posix() for p in protocol_modules()}
    assert {"zab/__init__.py", "zab/core.py", "zab/messages.py"} <= zab
