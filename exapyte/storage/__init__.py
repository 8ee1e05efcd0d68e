"""Storage backends behind one contract (see :mod:`exapyte.storage.base` and docs/storage.md).

``open_storage("memory" | "sqlite" | "tiered", path, **options)`` returns a :class:`Storage`.
"""

from __future__ import annotations

import os
from typing import Any

from exapyte.errors import StorageError
from exapyte.storage.base import (
    Cas,
    Delete,
    KVOp,
    LogCompacted,
    LogUnavailable,
    OpResult,
    Put,
    Record,
    Storage,
)

BACKENDS = ("memory", "sqlite", "tiered")
# Every backend accepts the tiered options so one storage config can name any backend; only
# the tiered backend uses them (the others still check them, so a typo never passes silently).
_OPTIONS = ("hot_keys", "policy")


def open_storage(backend: str, path: str | os.PathLike[str] | None, **options: Any) -> Storage:
    """Open a store.

    - ``memory``: not durable; ``path`` is ignored.
    - ``sqlite``: the SQLite file at ``path`` (its directory is created).
    - ``tiered``: the SQLite file at ``path`` under a memory hot tier; options ``hot_keys``
      (records kept in memory, default ``limits.TIERED_HOT_KEYS_DEFAULT``) and ``policy``
      (``"lru"`` or ``"lfu"``, default ``"lru"``).

    ``memory`` and ``sqlite`` accept and validate the tiered options but do not use them.
    Raises StorageError naming the allowed values for an unknown backend, an unknown or invalid
    option, or a missing path.
    """
    if backend not in BACKENDS:
        raise StorageError(
            f"unknown storage backend {backend!r}; allowed: {', '.join(BACKENDS)}"
        )
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise StorageError(
            f"unknown storage option(s) {', '.join(unknown)}; allowed: {', '.join(_OPTIONS)}"
        )
    from exapyte.storage.tiered import check_tier_options

    check_tier_options(**options)
    if backend == "memory":
        from exapyte.storage.memory import MemoryStorage

        return MemoryStorage()
    if path is None or not os.fspath(path):
        raise StorageError(f"storage backend {backend!r} needs a file path")
    if backend == "sqlite":
        from exapyte.storage.sqlite import SqliteStorage

        return SqliteStorage(path)
    from exapyte.storage.tiered import TieredStorage

    return TieredStorage(path, **options)


__all__ = [
    "BACKENDS",
    "DEFAULT_GROUP",
    "Cas",
    "Delete",
    "KVOp",
    "LogCompacted",
    "LogUnavailable",
    "OpResult",
    "Put",
    "Record",
    "Storage",
    "group_path",
    "open_storage",
]


DEFAULT_GROUP = "default"
_GROUP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")


def group_path(path: str, group: str) -> str:
    """Where the storage of replica group ``group`` lives, for a node whose storage path is
    ``path``: the ``default`` group keeps ``path`` itself (a single-group node's file); any
    other group gets a file of its own in ``<path without suffix>.groups/``, named after the
    group (``/`` in a hierarchical shard id becomes ``~``), so a group is created, moved and
    dropped with its own file. Raises StorageError for a group id that cannot name a file.
    """
    if group == DEFAULT_GROUP:
        return path
    if not group or not set(group) <= _GROUP_CHARS or group.startswith(".") or "~" in group:
        raise StorageError(
            f"group id {group!r} cannot name a storage file: use letters, digits, '.', '_', "
            "'-' and '/', not starting with '.'"
        )
    root, ext = os.path.splitext(path)
    return os.path.join(f"{root}.groups", group.replace("/", "~") + ext)
