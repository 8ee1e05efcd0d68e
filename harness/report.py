"""``report.html``: one readable, self-contained page per run.

Sections: the verdict and a one-line summary (with the protocol, the distribution and the shard
count); every checker's verdict with its cause; the cluster (its shape and, from the final
status, the groups each node leads); the failing key's counterexample (the checker's own timeline, ``linearizability.html``, embedded in a frame
and linked, plus the evidence of the other checkers); the consistency levels (per requested
level, how many ops delivered each level, the staleness served, convergence, and the operations
of each violation); a timeline of ops per process with the
fault intervals; the latency, throughput and topology plots (embedded as data URIs); the faults;
the options and the seed; the node logs. A run in the simulator (``results["db"] == "sim"``)
says so in its header and has a *Simulator* section instead of node logs: the ``python -m
exapyte.sim`` command that replays it exactly, its trace hash and the simulator's counters. The
page loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.history import Op, pair_ops, read_events
from harness.plots import FAULT_COLOURS, TYPE_COLOURS

__all__ = ["render_report", "write_report"]

TIMELINE_OPS_MAX = 8000  # a 60 s run at 100 ops/s fits whole
TIMELINE_WIDTH = 1240
ROW_PX = 14

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;background:#f4f6fa}
header{padding:22px 32px;color:#fff}
header.valid{background:#1f7a3f}header.invalid{background:#b42318}header.unknown{background:#a15c07}
header h1{margin:0;font-size:26px}header p{margin:6px 0 0;opacity:.92}
main{padding:8px 32px 40px;max-width:1320px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:14px 20px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e9ef;vertical-align:top}
th{background:#f0f2f6;font-weight:600}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-weight:600;font-size:12px;color:#fff}
.b-valid{background:#1f7a3f}.b-invalid{background:#b42318}.b-unknown{background:#a15c07}
pre{background:#f6f8fa;padding:10px;border-radius:6px;overflow:auto;max-height:340px;font-size:12px}
img{max-width:100%;border:1px solid #e6e9ef;border-radius:6px}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.kv td:first-child{width:220px;color:#566074}
iframe{width:100%;height:520px;border:1px solid #e6e9ef;border-radius:6px}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.muted{color:#6b7385}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _word(valid: Any) -> str:
    return "valid" if valid is True else "invalid" if valid is False else "unknown"


def _badge(valid: Any) -> str:
    word = _word(valid)
    return f'<span class="badge b-{word}">{word.upper()}</span>'


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return f'<p class="muted">({_esc(path.name)} was not produced)</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _timeline(ops: Sequence[Op], faults: Sequence[dict[str, Any]], end_ns: int) -> str:
    """SVG: one row per process, one bar per op from invoke to completion, faults shaded."""
    shown = list(ops)[:TIMELINE_OPS_MAX]
    if not shown:
        return '<p class="muted">no operations</p>'
    processes = sorted({op.process for op in shown})
    row = {p: i for i, p in enumerate(processes)}
    left = 56
    width = TIMELINE_WIDTH - left - 10
    span = max(1, end_ns)
    height = len(processes) * ROW_PX + 34

    def x(t: int) -> float:
        return left + width * min(max(t, 0), span) / span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{TIMELINE_WIDTH}" height="{height}" '
             f'font-family="system-ui,sans-serif" font-size="10">']
    for fault in faults:
        colour = FAULT_COLOURS.get(fault["fault"], "#7f7f7f")
        x1, x2 = x(fault["start_ns"]), x(fault["end_ns"])
        parts.append(f'<rect x="{x1:.1f}" y="0" width="{max(1.0, x2 - x1):.1f}" height="{height - 22}" '
                     f'fill="{colour}" fill-opacity="0.14"><title>{_esc(fault["fault"])}: '
                     f'{_esc(fault.get("description") or "")}</title></rect>')
    for p in processes:
        y = row[p] * ROW_PX + 4
        parts.append(f'<text x="{left - 6}" y="{y + 9}" text-anchor="end" fill="#566074">{_esc(p)}</text>')
    for op in shown:
        y = row[op.process] * ROW_PX + 4
        end = op.end_ns if op.end_ns is not None else end_ns
        x1, x2 = x(op.call_ns), x(end)
        colour = TYPE_COLOURS[op.type]
        dash = ' stroke-dasharray="2,2" stroke="#d62728" fill-opacity="0.35"' if op.type == "info" else ""
        value = op.value if op.type == "ok" else op.invoke.value
        tip = (f"process {op.process}: {op.f} {op.key or ''} {json.dumps(value)[:80]} -> {op.type}"
               f"{' (' + op.error + ')' if op.error else ''}; {op.call_ns / 1e6:.1f}–"
               f"{'?' if op.end_ns is None else f'{op.end_ns / 1e6:.1f}'} ms; node {op.node or '?'}")
        parts.append(f'<rect x="{x1:.1f}" y="{y}" width="{max(1.5, x2 - x1):.1f}" height="{ROW_PX - 4}" '
                     f'fill="{colour}"{dash}><title>{_esc(tip)}</title></rect>')
    axis_y = height - 16
    seconds = span / 1e9
    step = max(1, int(seconds / 12) or 1)
    for s in range(0, int(seconds) + 1, step):
        xs = x(int(s * 1e9))
        parts.append(f'<line x1="{xs:.1f}" x2="{xs:.1f}" y1="{axis_y - 4}" y2="{axis_y}" stroke="#888"/>'
                     f'<text x="{xs:.1f}" y="{axis_y + 11}" text-anchor="middle" fill="#566074">{s}s</text>')
    parts.append("</svg>")
    note = "" if len(ops) <= TIMELINE_OPS_MAX else (
        f'<p class="muted">showing the first {TIMELINE_OPS_MAX} of {len(ops)} operations</p>')
    legend = '<p class="legend">' + "".join(
        f'<span><i class="sw" style="background:{c}"></i>{k}</span>' for k, c in TYPE_COLOURS.items()
    ) + "".join(
        f'<span><i class="sw" style="background:{FAULT_COLOURS.get(f, "#7f7f7f")};opacity:.4"></i>{_esc(f)}</span>'
        for f in sorted({fault["fault"] for fault in faults})
    ) + "</p>"
    return legend + '<div style="overflow-x:auto">' + "".join(parts) + "</div>" + note


def _summary_line(results: dict[str, Any]) -> str:
    counts = results.get("counts", {})
    opts = results.get("options", {})
    failing = [n for n, v in results.get("checkers", {}).items() if v["valid"] is False]
    cluster = results.get("cluster") or {}
    shape = ""
    if cluster:
        shape = f"{cluster.get('protocol')}, {cluster.get('distribution')}"
        if cluster.get("distribution") != "centralized":
            shape += f" ({cluster.get('shards')} shards{' per region' if cluster.get('distribution') == 'hierarchical' else ''})"
        shape = f" ({shape})"
    text = (f"{results.get('ops', 0)} ops (ok {counts.get('ok', 0)}, fail {counts.get('fail', 0)}, info "
            f"{counts.get('info', 0)}) in {opts.get('time_s', '?')} s on {Path(str(opts.get('topology', '?'))).stem}"
            f"{shape}, "
            f"faults: {', '.join(opts.get('nemesis') or []) or 'none'}, bugs: {', '.join(opts.get('bugs') or []) or 'none'}")
    if failing:
        text += f". Failed: {', '.join(failing)}."
    return text


def _verdicts(results: dict[str, Any]) -> str:
    rows = []
    for name, v in results.get("checkers", {}).items():
        rows.append(f"<tr><td><b>{_esc(name)}</b></td><td>{_badge(v['valid'])}</td><td>{_esc(v.get('cause') or '')}</td></tr>")
    if not rows:
        rows.append('<tr><td colspan="3" class="muted">no checker ran (see the notes)</td></tr>')
    return "<table><tr><th>checker</th><th>verdict</th><th>cause</th></tr>" + "".join(rows) + "</table>"


def _counterexample(run_dir: Path, results: dict[str, Any]) -> str:
    out = []
    checkers = results.get("checkers", {})
    lin = checkers.get("linearizable")
    if lin and lin["valid"] is False:
        failing = lin["evidence"].get("failing", [])
        for part in failing[:3]:
            out.append(f"<p><b>{_esc(part['partition'])}</b>: {_esc(part['failing_op'])} cannot be linearized after "
                       f"the longest partial linearization of {part['longest_linearization']} of {part['ops']} ops.</p>")
        page = lin["evidence"].get("html")
        if page and (run_dir / page).exists():
            out.append(f'<p><a href="{_esc(page)}">Open the checker\'s timeline of the failing key</a> '
                       '(green: the partial linearization in order; red: the operation that cannot follow it).</p>')
            out.append(f'<iframe src="{_esc(page)}" title="linearizability counterexample"></iframe>')
    for name, v in checkers.items():
        if v["valid"] is False and name not in ("linearizable", "levels"):
            out.append(f"<h3>{_esc(name)}</h3><pre>{_esc(json.dumps(v['evidence'], indent=2)[:6000])}</pre>")
    if not out:
        return ""
    return "<section><h2>Counterexample</h2>" + "".join(out) + "</section>"


LEVEL_COLUMNS = ("strong", "bounded_staleness", "session", "consistent_prefix", "eventual", "none")


def _levels(results: dict[str, Any]) -> str:
    """The per-level checker's evidence: requested vs delivered, staleness, convergence and,
    when a level was broken, the operations that show it."""
    verdict = results.get("checkers", {}).get("levels")
    if not verdict:
        return ""
    ev = verdict.get("evidence") or {}
    table = ev.get("table") or {}
    if not table:
        return (f"<section><h2>Consistency levels</h2>{_badge(verdict['valid'])} "
                f"<span>{_esc(verdict.get('cause') or 'no rated operation')}</span></section>")
    head = "".join(f"<th>{_esc(c)}</th>" for c in ("requested", "ops", *LEVEL_COLUMNS, "below requested"))
    rows = []
    for requested, row in table.items():
        cells = [f"<td><b>{_esc(requested)}</b></td>", f"<td>{row['ops']}</td>"]
        for c in LEVEL_COLUMNS:
            n = row.get(c, 0)
            strong = ' style="color:#b42318;font-weight:600"' if n and _rank(c) < _rank(requested) else ""
            cells.append(f"<td{strong}>{n}</td>")
        below = row.get("below_requested", 0)
        cells.append(f'<td style="{"color:#b42318;font-weight:700" if below else ""}">{below}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    out = [f"<p>{_badge(verdict['valid'])} {_esc(verdict.get('cause') or 'every op delivered the level it requested')}</p>",
           "<h3>Requested vs delivered (ops; a row per requested level, columns: the strongest level each op "
           "satisfied)</h3>", f"<table><tr>{head}</tr>{''.join(rows)}</table>"]
    staleness = ev.get("staleness") or {}
    by_level = ev.get("staleness_by_level") or {}
    if by_level:
        bounds = staleness.get("bounds") or {}
        cols = ("reads", "stale_reads", "versions_p50", "versions_p99", "versions_max", "ms_p50", "ms_p99", "ms_max")
        srows = "".join(
            "<tr><td><b>" + _esc(level) + "</b></td>" + "".join(f"<td>{_esc(d.get(c))}</td>" for c in cols) + "</tr>"
            for level, d in by_level.items())
        out.append(f"<h3>Staleness served (bound: K = {_esc(bounds.get('versions'))} versions, T = "
                   f"{_esc(bounds.get('ms'))} ms)</h3><table><tr><th>requested</th>"
                   + "".join(f"<th>{_esc(c)}</th>" for c in cols) + f"</tr>{srows}</table>")
    conv = ev.get("convergence") or {}
    if conv:
        out.append(f"<p><b>Convergence</b>: {_esc(_word(conv.get('valid')))}"
                   f"{' (' + _esc(conv.get('cause')) + ')' if conv.get('cause') else ''}; {_esc(conv.get('keys'))} keys, "
                   f"replicas {_esc(', '.join(conv.get('replicas') or []))}, converged within "
                   f"{_esc(conv.get('converged_within_ms'))} ms of the final phase</p>")
    counts = ev.get("violation_counts") or {}
    if counts:
        out.append("<p><b>Violations</b>: " + _esc(", ".join(f"{k} {v}" for k, v in counts.items())) + "</p>")
    for cx in ev.get("counterexample") or []:
        ops = "".join(f"<li><code>{_esc(o)}</code></li>" for o in cx.get("ops", []))
        out.append(f"<h3>Counterexample: {_esc(cx['check'])} (rules out {_esc(cx['level'])})</h3>"
                   f"<p>{_esc(cx['cause'])}</p><ol>{ops}</ol>")
    for note in ev.get("notes") or []:
        out.append(f'<p class="muted">{_esc(note)}</p>')
    return "<section><h2>Consistency levels</h2>" + "".join(out) + "</section>"


def _rank(level: str) -> int:
    order = ("none", "eventual", "consistent_prefix", "session", "bounded_staleness", "strong")
    return order.index(level) if level in order else len(order)


def _cluster(results: dict[str, Any]) -> str:
    """The cluster's shape (protocol, distribution, shards, groups) and, from the final status,
    how many groups each node leads and each group's leader, term and voters."""
    cluster = results.get("cluster") or {}
    if not cluster:
        return ""
    shape = {k: cluster[k] for k in ("protocol", "distribution", "shards", "groups", "replication_factor",
                                            "voters_per_group", "ops_per_key")
             if k in cluster}
    out = [_kv_table(shape)]
    final = cluster.get("final_status")
    if final:
        counts = final.get("leaders_per_node", {})
        out.append("<h3>Leaders at the end (groups led per node)</h3><table><tr>"
                   + "".join(f"<th>{_esc(n)}</th>" for n in counts) + "</tr><tr>"
                   + "".join(f"<td>{_esc(k)}</td>" for k in counts.values()) + "</tr></table>")
        if final.get("without_leader"):
            out.append(f"<p><b>Groups without a leader:</b> {_esc(', '.join(final['without_leader']))}</p>")
        if final.get("unanswered"):
            out.append(f"<p><b>Nodes that did not answer:</b> {_esc(', '.join(final['unanswered']))}</p>")
        rows = "".join(
            f"<tr><td>{_esc(g)}</td><td>{_esc(v.get('leader') or '-')}</td><td>{_esc(v.get('term') if v.get('term') is not None else '-')}</td>"
            f"<td>{_esc(', '.join(v.get('voters') or []))}</td></tr>" for g, v in final.get("groups", {}).items())
        out.append(f"<table><tr><th>group</th><th>leader</th><th>term</th><th>voters</th></tr>{rows}</table>")
    return "<section><h2>Cluster</h2>" + "".join(out) + "</section>"


def _simulator(results: dict[str, Any]) -> str:
    """Where a simulated run came from: the replay command, the trace hash, what it cost."""
    sim = results.get("simulator")
    if not sim:
        return ""
    counters = sim.get("counters") or {}
    shown = {k: counters[k] for k in ("events", "invariant_checks", "leader_terms", "restarts", "fault_partition",
                                      "fault_crash", "fault_pause", "fault_drift", "fault_rebalance",
                                      "net_delivered", "net_dropped_partition") if k in counters}
    return (f"<section><h2>Simulator</h2><p>This run did not start node processes: it ran in exapyte's "
            f"deterministic simulator (the product's replicas and consensus cores on a simulated network, disk and "
            f"clock), {sim.get('sim_s', 0):.1f} s simulated in {sim.get('wall_s', 0):.1f} s. The same seed and "
            f"options give the same run, message for message: replay it with</p><pre>{_esc(sim.get('replay', ''))}"
            f"</pre><p>trace hash <code>{_esc(sim.get('trace_hash', ''))}</code> · simulator verdict "
            f"<b>{_esc(sim.get('verdict', ''))}</b></p>{_kv_table(shown)}</section>")


def _kv_table(items: dict[str, Any]) -> str:
    return '<table class="kv">' + "".join(
        f"<tr><td>{_esc(k)}</td><td>{_esc(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
        for k, v in items.items()) + "</table>"


def _fault_what(fault: dict[str, Any]) -> str:
    """The fault's description, and for a partition what the fault layer held (e.g. the rules)."""
    applied = (fault.get("applied") or {}).get("text")
    description = str(fault.get("description") or "")
    return f"{description} ({applied})" if applied else description


def render_report(run_dir: Path, results: dict[str, Any]) -> str:
    valid = results.get("valid")
    history = run_dir / "history.jsonl"
    events = read_events(history) if history.exists() else []
    ops = pair_ops(events)
    end_ns = int(results.get("end_ns") or max((int(e.time or 0) for e in events), default=1))
    faults = results.get("faults", [])
    stats = results.get("checkers", {}).get("availability", {}).get("evidence", {})
    stats_rows = "".join(
        f"<tr><td>{_esc(f)}</td><td>{e['ok']}</td><td>{e['fail']}</td><td>{e['info']}</td><td>{e['p50_ms']}</td>"
        f"<td>{e['p95_ms']}</td><td>{e['p99_ms']}</td><td>{e['max_ms']}</td></tr>"
        for f, e in stats.get("by_f", {}).items())
    stats_html = ("<table><tr><th>op</th><th>ok</th><th>fail</th><th>info</th><th>p50 ms</th><th>p95 ms</th>"
                  f"<th>p99 ms</th><th>max ms</th></tr>{stats_rows}</table>"
                  f"<p>availability {stats.get('availability')} (healthy {stats.get('availability_healthy')}, "
                  f"during faults {stats.get('availability_during_faults')}); "
                  f"{stats.get('throughput_ok_per_s')} ok ops/s; final reads: {(stats.get('final_reads') or {}).get('ok')} ok of "
                  f"{(stats.get('final_reads') or {}).get('attempted')}</p>") if stats else ""
    fault_rows = "".join(
        f"<tr><td>{_esc(f['fault'])}</td><td>{f['start_ns'] / 1e9:.2f} s</td><td>{f['end_ns'] / 1e9:.2f} s</td>"
        f"<td>{_esc(_fault_what(f))}</td></tr>" for f in faults)
    logs = sorted((run_dir / "nodes").glob("*.log")) if (run_dir / "nodes").exists() else []
    log_links = " · ".join(f'<a href="nodes/{_esc(p.name)}">{_esc(p.stem)}</a>' for p in logs) or (
        "none (simulated nodes)" if results.get("db") == "sim" else "none")
    notes = "".join(f"<li>{_esc(n)}</li>" for n in results.get("notes", []))
    options = dict(results.get("options", {}))
    body = f"""
<header class="{_word(valid)}"><h1>{_esc(results.get('test', 'exapyte test'))} — {_word(valid).upper()}</h1>
<p>{_esc(_summary_line(results))}</p><p>seed {_esc(results.get('seed'))} · started {_esc(results.get('started', ''))}{
    ' · ran in the simulator' if results.get('db') == 'sim' else ''}</p></header>
<main>
<section><h2>Verdicts</h2>{_verdicts(results)}{('<ul>' + notes + '</ul>') if notes else ''}</section>
{_counterexample(run_dir, results)}
{_levels(results)}
{_simulator(results)}
{_cluster(results)}
<section><h2>Operations over time</h2><p class="muted">One row per client process; a bar runs from invocation to
completion (info: until the client gave up). Shaded: fault intervals. Hover for details.</p>{_timeline(ops, faults, end_ns)}</section>
<section><h2>Latency and throughput</h2>{_img(run_dir / 'latency.png', 'latency')}<br><br>{_img(run_dir / 'rate.png', 'throughput')}
{stats_html}</section>
<section class="grid"><div><h2>Topology</h2>{_img(run_dir / 'topology.png', 'topology')}</div>
<div><h2>Faults</h2><table><tr><th>fault</th><th>from</th><th>to</th><th>what</th></tr>{fault_rows or '<tr><td colspan="4" class="muted">none</td></tr>'}</table></div></section>
<section><h2>Options</h2>{_kv_table(options)}</section>
<section><h2>Files</h2><p><a href="history.jsonl">history.jsonl</a> · <a href="results.json">results.json</a> ·
node logs: {log_links}</p></section>
</main>"""
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(results.get('test', 'run'))}: "
            f"{_word(valid)}</title><style>{CSS}</style></head><body>{body}</body></html>\n")


def write_report(run_dir: Path, results: dict[str, Any]) -> Path:
    path = run_dir / "report.html"
    path.write_text(render_report(run_dir, results), encoding="utf-8")
    return path
