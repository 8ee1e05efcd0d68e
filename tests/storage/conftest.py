"""Fixtures shared by the storage tests: a fresh store of each backend in ``tmp_path``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

# `pytest tests/storage` from the repo root must import the package even when it is not
# installed into the virtualenv.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from exapyte.storage import Storage, open_storage  # noqa: E402

BACKENDS = ("memory", "sqlite", "tiered")
DURABLE_BACKENDS = ("sqlite", "tiered")

# A small hot tier so that the contract suite exercises promotion and demotion too.
TIERED_TEST_OPTIONS = {"hot_keys": 3, "policy": "lru"}


def open_backend(backend: str, directory: str | os.PathLike[str], **options: object) -> Storage:
    path = os.path.join(os.fspath(directory), "store", f"{backend}.db")
    if backend == "tiered":
        options = {**TIERED_TEST_OPTIONS, **options}
    return open_storage(backend, path, **options)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(tmp_path: os.PathLike[str]) -> Iterator[Callable[..., Storage]]:
    """Open (or reopen) a store of a given backend in this test's directory."""
    opened: list[Storage] = []

    def make(backend: str, **options: object) -> Storage:
        store = open_backend(backend, tmp_path, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(backend: str, make_store: Callable[..., Storage]) -> Storage:
    return make_store(backend)
