"""A self-contained HTML page showing why a history is not linearizable.

Theory of operation
-------------------
Drawn only after a check has failed, from the evidence the search kept: for each failing
partition, its operations as a timeline with one row per process and one bar per operation
from its call to its return (an operation with an unknown outcome runs to the right edge,
hatched). The longest partial linearization is highlighted: each of its operations carries its
position in that order, and hovering it shows the model state before and after it. The operation
that could not be linearized after that prefix is drawn in red.

The horizontal axis is the *rank* of call and return times, not the times themselves, so the
page reads the same whether times are event positions or nanoseconds, and short operations
next to long pauses stay visible.

The page is one file with inline CSS, SVG and a few lines of JavaScript (the tooltip); it loads
nothing from the network. Its cost is bounded: a partition larger than
:data:`~harness.checker.limits.VISUALIZE_OPS_MAX` is drawn as a window of operations around the
failing one, building stops after :data:`~harness.checker.limits.VISUALIZE_TIME_S_MAX`, and the
window shrinks until the file fits :data:`~harness.checker.limits.VISUALIZE_HTML_BYTES_MAX`.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from time import perf_counter
from typing import Any

from harness.checker.history import Operation
from harness.checker.limits import VISUALIZE_HTML_BYTES_MAX, VISUALIZE_OPS_MAX, VISUALIZE_TIME_S_MAX
from harness.checker.linearizability import CheckResult, PartitionResult
from harness.checker.models import Model

__all__ = ["render_html", "write_html"]

_FAILING_PARTITIONS_DRAWN_MAX = 5
_ROW_PX = 34
_BAR_PX = 22
_LEFT_PX = 110
_RANK_PX_WIDE = 48  # per distinct call/return time, for small timelines
_RANK_PX_NARROW = 24
_WIDE_RANKS_MAX = 400
_LABEL_CHARS_MAX = 60

_CSS = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 20px; color: #1d2330; background: #fafbfc; }
h1 { font-size: 20px; margin: 0 0 6px; } h2 { font-size: 16px; margin: 26px 0 6px; }
.verdict-false { color: #b3261e; } .verdict-unknown { color: #8a6d00; } .verdict-true { color: #1b7a36; }
.meta { color: #4b5565; margin: 2px 0; } code { background: #eef1f5; padding: 0 3px; border-radius: 3px; }
.scroll { overflow-x: auto; border: 1px solid #d5dae1; background: #fff; border-radius: 4px; }
svg text { font: 11px ui-monospace, monospace; pointer-events: none; }
svg .proc { font: 12px system-ui, sans-serif; fill: #4b5565; }
.op rect { fill: #dfe3e8; stroke: #9aa4b1; }
.op.lin rect { fill: #cfe8d6; stroke: #2e8b57; }
.op.fail rect { fill: #f6cbc7; stroke: #b3261e; stroke-width: 2; }
.op.pending rect { stroke-dasharray: 4 3; }
.op:hover rect { stroke: #1d2330; stroke-width: 2; }
.op .n { fill: #1b5e34; font-weight: bold; }
#tip { position: fixed; display: none; max-width: 520px; background: #1d2330; color: #fff; padding: 8px 10px;
       border-radius: 4px; font: 12px ui-monospace, monospace; white-space: pre-wrap; pointer-events: none; z-index: 9; }
ol.lin { font: 12px ui-monospace, monospace; columns: 2; } ol.lin li.fail { color: #b3261e; font-weight: bold; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 8px; border: 1px solid; border-radius: 3px; }
"""

_JS = """
(function () {
  var tip = document.getElementById('tip');
  document.querySelectorAll('g.op').forEach(function (g) {
    g.addEventListener('mousemove', function (e) {
      tip.textContent = g.getAttribute('data-tip');
      tip.style.display = 'block';
      tip.style.left = Math.min(e.clientX + 14, window.innerWidth - 540) + 'px';
      tip.style.top = (e.clientY + 14) + 'px';
    });
    g.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
  });
})();
"""


class _OutOfTime(Exception):
    pass


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 0)] + "…"


def _fmt_time(t: float) -> str:
    if t == math.inf:
        return "never (outcome unknown)"
    return str(int(t)) if float(t).is_integer() else f"{t:g}"


def _window(part: PartitionResult, ops_max: int) -> list[int]:
    """Positions (in ``part.operations``) to draw: all, or ``ops_max`` around the failing op."""
    n = len(part.operations)
    if n <= ops_max:
        return list(range(n))
    by_call = sorted(range(n), key=lambda i: part.operations[i].call)
    centre = by_call.index(part.failing_op) if part.failing_op is not None else n // 2
    start = max(0, min(centre - ops_max // 2, n - ops_max))
    chosen = set(by_call[start : start + ops_max])
    if part.failing_op is not None:
        chosen.add(part.failing_op)
    return sorted(chosen)


def _partition_section(
    model: Model, part: PartitionResult, ops_max: int, deadline: float, number: int
) -> str:
    ops = part.operations
    shown = _window(part, ops_max)
    states = part.states(model)
    order = {op_index: k for k, op_index in enumerate(part.linearization)}
    times = sorted({t for i in shown for t in (ops[i].call, ops[i].ret) if t != math.inf})
    rank = {t: k for k, t in enumerate(times)}
    right = len(times) + 1
    processes = sorted({ops[i].process for i in shown})
    row = {p: k for k, p in enumerate(processes)}
    rank_px = _RANK_PX_WIDE if right <= _WIDE_RANKS_MAX else _RANK_PX_NARROW
    width = _LEFT_PX + (right + 1) * rank_px
    height = len(processes) * _ROW_PX + 30

    parts: list[str] = []
    for p in processes:
        y = 24 + row[p] * _ROW_PX
        parts.append(f'<text class="proc" x="8" y="{y + _BAR_PX // 2 + 4}">process {_esc(str(p))}</text>')
        parts.append(f'<line x1="{_LEFT_PX}" x2="{width}" y1="{y + _BAR_PX + 5}" y2="{y + _BAR_PX + 5}" stroke="#eef1f5"/>')
    for count, i in enumerate(shown):
        if count % 256 == 0 and perf_counter() > deadline:
            raise _OutOfTime
        op: Operation = ops[i]
        x1 = _LEFT_PX + rank[op.call] * rank_px + 2
        x2 = _LEFT_PX + (rank[op.ret] if op.ret != math.inf else right) * rank_px + rank_px - 2
        y = 24 + row[op.process] * _ROW_PX
        text = model.describe_op(op.input, op.output)
        classes = ["op"]
        tip = [f"op #{op.id}  process {op.process}", text, f"call {_fmt_time(op.call)}  return {_fmt_time(op.ret)}"]
        number_label = ""
        if i in order:
            k = order[i]
            classes.append("lin")
            number_label = f'<text class="n" x="{x1 + 3}" y="{y - 2}">{k + 1}</text>'
            tip.append(f"linearized {k + 1} of {len(part.linearization)}")
            tip.append(f"state before: {model.describe_state(states[k])}")
            tip.append(f"state after:  {model.describe_state(states[k + 1])}")
        if i == part.failing_op:
            classes.append("fail")
            tip.append("could not be linearized after the highlighted prefix")
            tip.append(f"state at that point: {model.describe_state(states[-1])}")
        if op.ret == math.inf:
            classes.append("pending")
        label = _clip(text, max(int((x2 - x1) / 7) - 1, 0))
        parts.append(
            f'<g class="{" ".join(classes)}" data-tip="{_esc(chr(10).join(tip))}">'
            f'<rect x="{x1}" y="{y}" width="{max(x2 - x1, 4)}" height="{_BAR_PX}" rx="3"/>'
            f'<text x="{x1 + 4}" y="{y + 15}">{_esc(label)}</text>{number_label}</g>'
        )
    svg = (
        f'<div class="scroll"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        + "".join(parts)
        + "</svg></div>"
    )

    items = []
    for k, i in enumerate(part.linearization):
        op = ops[i]
        items.append(
            f"<li>process {_esc(str(op.process))}: {_esc(model.describe_op(op.input, op.output))}"
            f" &rarr; {_esc(_clip(model.describe_state(states[k + 1]), _LABEL_CHARS_MAX))}</li>"
        )
    if part.failing_op is not None:
        op = ops[part.failing_op]
        items.append(
            f'<li class="fail">process {_esc(str(op.process))}: {_esc(model.describe_op(op.input, op.output))}'
            f" &mdash; cannot be linearized here</li>"
        )
    window_note = ""
    if len(shown) < len(ops):
        window_note = (
            f'<p class="meta">Showing {len(shown)} of {len(ops)} operations of this partition '
            f"(the ones around the failing operation).</p>"
        )
    failure = part.describe_failure(model) or ""
    return (
        f"<h2>Partition {number}: {_esc(part.label)}</h2>"
        f'<p class="meta">{len(ops)} operations; longest partial linearization: '
        f"{len(part.linearization)} operations; could not linearize <code>{_esc(failure)}</code></p>"
        f"{window_note}{svg}"
        f"<h3>Longest partial linearization, then the operation that does not fit</h3>"
        f'<ol class="lin">{"".join(items)}</ol>'
    )


def render_html(
    result: CheckResult,
    title: str = "",
    *,
    ops_max: int = VISUALIZE_OPS_MAX,
    time_limit_s: float = VISUALIZE_TIME_S_MAX,
    bytes_max: int = VISUALIZE_HTML_BYTES_MAX,
) -> str:
    """The HTML page for ``result``: its verdict and, for each failing partition, the timeline."""
    deadline = perf_counter() + time_limit_s
    model = result.model
    failing = result.failing_partitions[:_FAILING_PARTITIONS_DRAWN_MAX]
    verdict = json.dumps(result.valid) if result.valid != "unknown" else "unknown"
    while True:
        sections: list[str] = []
        note = ""
        try:
            for number, part in enumerate(failing, start=1):
                sections.append(_partition_section(model, part, ops_max, deadline, number))
        except _OutOfTime:
            note = f'<p class="meta">Drawing stopped after {time_limit_s:g} s; later partitions are left out.</p>'
        if len(result.failing_partitions) > len(failing):
            note += (
                f'<p class="meta">{len(result.failing_partitions) - len(failing)} more failing partitions '
                f"are not drawn.</p>"
            )
        page = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{_esc(title or 'linearizability check')}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title or 'Linearizability check')}: "
            f'<span class="verdict-{_esc(str(verdict).lower())}">valid = {_esc(str(verdict))}</span></h1>'
            f'<p class="meta">model <code>{_esc(model.name)}</code>; {result.ops_count} operations in '
            f"{len(result.partitions)} partitions; checked in {result.elapsed_s:.3f} s</p>"
            f'<p class="meta">{_esc(result.cause or "")}</p>'
            '<p class="legend"><span style="background:#cfe8d6;border-color:#2e8b57">linearized (numbered in order)</span>'
            '<span style="background:#f6cbc7;border-color:#b3261e">could not be linearized</span>'
            '<span style="background:#dfe3e8;border-color:#9aa4b1">not reached</span>'
            '<span style="border-style:dashed">outcome unknown</span> hover a bar for the states</p>'
            + "".join(sections)
            + note
            + f'<div id="tip"></div><script>{_JS}</script></body></html>'
        )
        if len(page.encode("utf-8")) <= bytes_max or ops_max <= 50:
            return page
        ops_max //= 2


def write_html(result: CheckResult, path: str | Path, title: str = "", **limits: Any) -> Path | None:
    """Write the page for a failing ``result`` to ``path``; returns the path, or None if nothing failed."""
    if not result.failing_partitions:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result, title, **limits), encoding="utf-8")
    return path
