"""Hand-made harness histories for the level checkers: ops with session, group, index, replica."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.checker.level_history import LevelHistory, level_history

MS = 1_000_000


class LH:
    """``op(process, f, key, value, start_ms, end_ms, ...)`` appends an invocation and its completion."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def op(self, process: int, f: str, key: Any, value: Any, start: float, end: float | None, *,
           type: str = "ok", result: Any = None, session: str | None = None, level: str = "strong",
           group: Any = None, index: Any = None, replica: str | None = None, error: str | None = None) -> LH:
        reading = f in ("read", "get", "scan")
        invoke: dict[str, Any] = {"type": "invoke", "process": process, "f": f, "key": key,
                                  "value": value if not reading or f == "scan" else None, "time": int(start * MS),
                                  "node": None, "consistency": level, "session": session}
        self.events.append(invoke)
        if end is not None:
            done: dict[str, Any] = {"type": type, "process": process, "f": f, "key": key,
                                    "value": result if reading else value, "time": int(end * MS),
                                    "node": replica, "consistency": level, "session": session}
            if error is not None:
                done["error"] = error
            if group is not None:
                done["group"] = group
            if index is not None:
                done["index"] = index
            self.events.append(done)
        return self

    def heal(self, at: float) -> LH:
        self.events.append({"type": "invoke", "process": "nemesis", "f": "heal", "key": None, "value": None,
                            "time": int(at * MS), "node": None, "consistency": "", "session": None})
        self.events.append({"type": "info", "process": "nemesis", "f": "heal", "key": None, "value": None,
                            "time": int(at * MS), "node": None, "consistency": "", "session": None})
        return self

    def sorted_events(self) -> list[dict[str, Any]]:
        return sorted(self.events, key=lambda e: (e["time"], e["type"] == "invoke"))

    def history(self, initial: Any = None) -> LevelHistory:
        return level_history(self.sorted_events(), initial=initial)

    def write_jsonl(self, path: Path) -> Path:
        path.write_text("".join(json.dumps(e) + "\n" for e in self.sorted_events()), encoding="utf-8")
        return path
