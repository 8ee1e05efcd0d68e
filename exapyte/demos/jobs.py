"""What the simulated demos share: running their variants (one job per strategy, in worker
processes when asked, with progress), their ``--param`` parsing and table cells.

A job is anything with a ``strategy`` name; ``run_job(job)`` measures it in the simulator and
returns its part of ``results.json``. A job reports the end of each of its phases with
:func:`report`; with workers, the reports cross a queue the pool's initializer hands each
worker, and the parent drains it while it waits, so ``on_phase(strategy, phase)`` is called in
the parent either way.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol, TypeVar

__all__ = ["num", "replace_from_pairs", "report", "run_jobs", "topology_summary"]


class _Job(Protocol):
    strategy: str


J = TypeVar("J", bound=_Job)

_progress: Any = None  # where this process's jobs report their phases (None: nowhere)


def _set_progress(q: Any) -> None:
    global _progress
    _progress = q


def report(strategy: str, phase: str) -> None:
    """A phase of ``strategy``'s job has ended."""
    if _progress is not None:
        _progress.put((strategy, phase))


class _Direct:
    def __init__(self, on_phase: Callable[[str, str], None] | None) -> None:
        self.on_phase = on_phase

    def put(self, item: tuple[str, str]) -> None:
        if self.on_phase is not None:
            self.on_phase(*item)


def _drain(progress: Any, on_phase: Callable[[str, str], None] | None) -> None:
    while True:
        try:
            item = progress.get_nowait()
        except queue.Empty:
            return
        if on_phase is not None:
            on_phase(*item)


def run_jobs(
    jobs: Sequence[J], run_job: Callable[[J], dict[str, Any]], workers: int,
    on_phase: Callable[[str, str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every job's result by its strategy; ``workers`` <= 1 runs them in this process."""
    results: dict[str, dict[str, Any]] = {}
    if workers <= 1:
        for job in jobs:
            _set_progress(_Direct(on_phase))
            try:
                results[job.strategy] = run_job(job)
            finally:
                _set_progress(None)
        return results
    ctx = multiprocessing.get_context()
    progress = ctx.Queue()  # handed to the workers as they start (initargs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                             initializer=_set_progress, initargs=(progress,)) as pool:
        futures: dict[Future[dict[str, Any]], J] = {pool.submit(run_job, j): j for j in jobs}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress, on_phase)
            for future in finished:
                results[futures[future].strategy] = future.result()
        _drain(progress, on_phase)
    return results


P = TypeVar("P")


def replace_from_pairs(defaults: P, pairs: Sequence[str]) -> P:
    """``defaults`` (a dataclass of a demo's parameters) with ``KEY=VALUE`` strings applied (the
    CLI's ``--param``): a tuple field takes a comma-separated list, any other field its own
    type; raises ValueError naming the key and the allowed ones."""
    fields = [f.name for f in dataclasses.fields(defaults)]  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"{pair!r}: want KEY=VALUE with KEY one of {', '.join(fields)}")
        current = getattr(defaults, key)
        try:
            if isinstance(current, tuple):
                value: Any = tuple(x.strip() for x in text.split(",") if x.strip())
            else:
                value = type(current)(text)
        except ValueError:
            raise ValueError(f"{key}: {text!r} is not a {type(current).__name__}") from None
        changes[key] = value
    return dataclasses.replace(defaults, **changes)  # type: ignore[type-var]


def num(value: float | None, digits: int) -> str:
    """A table cell: ``value`` to ``digits`` decimals, "-" when unknown."""
    return "-" if value is None else f"{value:.{digits}f}"


def topology_summary(path: str) -> dict[str, Any]:
    """The ``topology`` block of a demo's ``results.json``: nodes and regions, links, timers."""
    from exapyte.config import load as load_config
    from exapyte.control import topology as topo

    cfg = load_config(path)
    return {
        "nodes": {n.id: n.region for n in cfg.cluster.nodes},
        "links": [{"a": link.a, "b": link.b, "latency_ms": link.latency_ms}
                  for link in cfg.cluster.links],
        "regions": topo.regions(topo.from_config(cfg)),
        "election_timeout_ticks": cfg.consensus.election_timeout_ticks,
        "heartbeat_ticks": cfg.consensus.heartbeat_ticks,
        "protocol": cfg.consensus.protocol,
    }
