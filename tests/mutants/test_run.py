"""The runner behind ``make mutants``: what it prints, on a terminal and off one, and its exit
status."""

from __future__ import annotations

import io
import re

from rich.console import Console

from tests.mutants.mutants import MUTANTS_BY_NAME
from tests.mutants.run import hunt, main, shrink_catch

# Caught within its first three seeds (docs/simulator.md), so these runs take a few seconds.
QUICK = "no-truncate"
TABLE_TITLE = "exapyte mutants (deterministic simulator)"
FINAL_LINE = "unmodified core: 12 seeds (10 x 3 nodes, 2 x 5 nodes), 0 failed"
SHORT_RUN = ["--mutant", QUICK, "--seeds-max", "3", "--baseline-seeds", "10", "--workers", "1"]


def run(argv: list[str], *, interactive: bool) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=110, highlight=False, soft_wrap=True,
                      force_terminal=interactive, force_interactive=interactive)
    return main(argv, console=console), out.getvalue()


def test_hunt_reports_each_seed() -> None:
    seen: list[int] = []
    outcome = hunt(MUTANTS_BY_NAME["commit-no-majority"], 30, on_seed=seen.append)
    assert outcome.caught and outcome.seeds >= 1
    assert seen == list(range(1, outcome.seeds + 1))  # one report per seed tried, in order


def test_plain_lines_when_not_a_terminal() -> None:
    rc, out = run(SHORT_RUN, interactive=False)
    assert rc == 0, out
    assert "\x1b[" not in out  # no live display, no colours
    lines = out.splitlines()
    assert lines[0].startswith(f"mutant={QUICK} caught=True by=invariant:")
    assert re.fullmatch(f"  replay: python -m tests.mutants --mutant {QUICK} --first-seed [0-2] "
                        "--seeds-max 1 --baseline-seeds 0", lines[2]), lines[2]
    table = lines.index(TABLE_TITLE)
    progress = [i for i, line in enumerate(lines) if "/12 seeds," in line]
    assert [lines[i].split(",")[0] for i in progress] == [
        f"unmodified core: {n}/12 seeds" for n in range(1, 12)
    ]
    assert table < progress[0]
    assert lines[-1].startswith(FINAL_LINE)


def test_live_display_on_a_terminal_ends_with_the_same_summary() -> None:
    rc, out = run(SHORT_RUN, interactive=True)
    assert rc == 0, out
    assert "caught 1" in out and "seeds, 0 failed" in out  # the live rows
    assert "/12 seeds," not in out  # no plain progress lines
    assert f"mutant={QUICK} caught=True" in out
    assert out.index(TABLE_TITLE) < out.rindex(FINAL_LINE)


def test_a_surviving_mutant_fails_the_run() -> None:
    for interactive in (False, True):
        rc, out = run(["--mutant", QUICK, "--seeds-max", "0", "--baseline-seeds", "0"],
                      interactive=interactive)
        assert rc == 1, out
        assert f"mutant={QUICK} caught=False by=- seeds=0" in out
        assert "NO" in out
        assert out.rstrip().endswith(f"mutants that survived: {QUICK}")


def test_a_shrunk_catch_fails_the_same_check_and_its_replay_command_reruns_it() -> None:
    name = "paxos-stale-promise"
    outcome = hunt(MUTANTS_BY_NAME[name], 20)
    assert outcome.caught and outcome.failing is not None and outcome.seed is not None
    result = shrink_catch(outcome, runs_max=3)  # the first halvings of the budget only
    shrunk = result.shrunk
    assert not shrunk.ok and shrunk.check == outcome.check
    assert shrunk.spec.ops <= outcome.failing.spec.ops
    assert {f.kind for f in result.shrunk_faults()} == {"hold"}
    argv = ["--mutant", name, "--first-seed", str(outcome.seed), "--seeds-max", "1",
            "--baseline-seeds", "0", "--ops", str(shrunk.spec.ops), "--keep-faults", "none"]
    rc, out = run(argv, interactive=False)
    assert rc == 1, out  # no planned fault kept: the mutant survives, as it needs its holds
    assert f"mutant={name} caught=False" in out
    rc, out = run(argv[:-2], interactive=False)
    assert rc == 0, out
    assert f"mutant={name} caught=True by={outcome.check}" in out
    assert f"--ops {shrunk.spec.ops}" in out  # the replay line carries the overrides
