"""The HTML timeline and the ``python -m harness check`` command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from checker_build import ops_from
from harness.checker import check, render_html, write_html
from harness.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]

BAD_ROWS = [
    (0, "invoke", "write", 1), (0, "ok", "write", 1),
    (1, "invoke", "write", 2), (1, "info", "write", None),
    (0, "invoke", "write", 3), (0, "ok", "write", 3),
    (2, "invoke", "read", None), (2, "ok", "read", 1),
]


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_timeline_for_a_bad_history(tmp_path: Path) -> None:
    result = check("cas-register-etcd", ops_from(BAD_ROWS))
    assert result.valid is False
    path = write_html(result, tmp_path / "out" / "timeline.html", title="bad <history>")
    assert path is not None and path.exists()
    page = path.read_text(encoding="utf-8")
    assert "read() -&gt; 1" in page  # the failing op, escaped
    assert "could not be linearized" in page
    assert "bad &lt;history&gt;" in page
    collector = _Collector()
    collector.feed(page)
    tags = collector.tags
    failing = [a for t, a in tags if t == "g" and "fail" in (a.get("class") or "").split()]
    assert len(failing) == 1 and "read() -> 1" in (failing[0].get("data-tip") or "")
    linearized = [a for t, a in tags if t == "g" and "lin" in (a.get("class") or "").split()]
    assert linearized and all("state after:" in (a.get("data-tip") or "") for a in linearized)
    assert sum(t == "g" for t, _ in tags) == 4  # one bar per operation
    # Self-contained: nothing is fetched.
    assert not any(("src" in a or "href" in a) for _, a in tags)
    assert not re.search(r"@import|url\(", page)


def test_no_html_for_a_valid_history(tmp_path: Path) -> None:
    result = check("cas-register-etcd", ops_from(BAD_ROWS[:6]))
    assert result.valid is True
    assert write_html(result, tmp_path / "t.html") is None
    assert not (tmp_path / "t.html").exists()


def test_html_is_bounded_for_a_large_partition() -> None:
    rows = []
    for v in range(400):
        rows += [(0, "invoke", "write", v), (0, "ok", "write", v)]
    rows += [(1, "invoke", "read", None), (1, "ok", "read", 5)]
    result = check("register", ops_from(rows))
    assert result.valid is False
    page = render_html(result, ops_max=100)
    assert "Showing 101 of 401 operations" in page or "Showing 100 of 401 operations" in page
    assert "read() -&gt; 5" in page


# --- command line ----------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[tuple[object, ...]]) -> Path:
    with path.open("w") as out:
        for t, (process, kind, f, key, value) in enumerate(rows):
            out.write(json.dumps({"type": kind, "process": process, "f": f, "key": key, "value": value,
                                  "time": t * 10, "node": None, "consistency": None, "session": None}) + "\n")
    return path


GOOD = [(0, "invoke", "put", "k", "a"), (0, "ok", "put", "k", "a"),
        (1, "invoke", "get", "k", None), (1, "ok", "get", "k", "a")]
BAD = [(0, "invoke", "put", "k", "a"), (0, "ok", "put", "k", "a"),
       (1, "invoke", "get", "k", None), (1, "ok", "get", "k", "b")]


def slow_rows(writers: int = 24) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = [(p, "invoke", "put", "k", str(p)) for p in range(writers)]
    rows += [(99, "invoke", "get", "k", None), (99, "ok", "get", "k", "never")]
    rows += [(p, "info", "put", "k", None) for p in range(writers)]
    return rows


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", GOOD)
    bad = write_jsonl(tmp_path / "bad.jsonl", BAD)
    slow = write_jsonl(tmp_path / "slow.jsonl", slow_rows())
    assert main(["check", str(good)]) == 0
    assert main(["check", str(good), str(bad)]) == 1
    assert main(["check", "--timeout", "0.2", str(good), str(slow)]) == 2
    assert main(["check", "--timeout", "0.2", str(slow), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and "unknown" in out and "valid" in out


def test_cli_json_lines_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", GOOD)
    bad = write_jsonl(tmp_path / "bad.jsonl", BAD)
    status = main(["check", "--json", "--html", str(tmp_path / "html"), str(good), str(bad)])
    assert status == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["valid"] for r in lines] == [True, False]
    assert lines[0]["model"] == "kv" and lines[0]["format"] == "jsonl" and lines[0]["ops"] == 2
    assert lines[1]["html"] and Path(lines[1]["html"]).exists()
    assert "get[k]() -&gt; b" in Path(lines[1]["html"]).read_text()
    assert "elapsed_s" in lines[0]


def test_cli_unreadable_file_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json", str(tmp_path / "missing.jsonl")]) == 2
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["valid"] == "unknown" and "cannot read history" in record["cause"]


def test_cli_model_and_format_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.txt"
    path.write_text("INFO jepsen.util - 0 :invoke :read nil\nINFO jepsen.util - 0 :ok :read 0\n")
    assert main(["check", str(path)]) == 1  # etcd semantics: the register starts absent
    assert main(["check", "--model", "cas-register-knossos", "--format", "etcd", str(path)]) == 0
    capsys.readouterr()


def test_parser_lists_check_and_module_help_works() -> None:
    assert "check" in build_parser().format_help()
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "check" in done.stdout


def test_cli_history_the_model_cannot_read_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "scan.jsonl", [(0, "invoke", "scan", "k", None), (0, "ok", "scan", "k", ("a",))])
    assert main(["check", "--json", str(path)]) == 2
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["valid"] == "unknown" and "unknown operation 'scan'" in record["cause"]
