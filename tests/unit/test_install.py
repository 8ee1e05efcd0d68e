"""The checkout is installed (editable) into the interpreter that runs the tests: ``exapyte`` and
``harness`` import from any directory, without the repository on ``sys.path``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_packages_import_from_outside_the_checkout(tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(REPO)
    # pytest's `pythonpath` setting and a caller's PYTHONPATH would hide a missing install.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import exapyte, harness; print(exapyte.__file__); print(harness.__file__)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode == 0, (
        f"{sys.executable} cannot import the package from {tmp_path} "
        f"(make venv installs it; by hand: {sys.executable} -m pip install -e {REPO}):\n"
        f"{proc.stderr}"
    )
    exapyte_file, harness_file = (Path(line).resolve() for line in proc.stdout.splitlines())
    assert exapyte_file == REPO / "exapyte" / "__init__.py"
    assert harness_file == REPO / "harness" / "__init__.py"
