"""A deposed leader's bounded-staleness stamps (docs/consistency.md): stamped with the send
time, a leader paused while the others elected and committed made its follower serve a state
beyond T; timed by its last quorum-confirmed heartbeat round, the same schedule is clean."""

from __future__ import annotations

import dataclasses

from exapyte.sim import run_seed
from tests.mutants.mutants import MUTANTS_BY_NAME
from tests.mutants.run import mutant_spec

SEED = 179  # the first seed of the default faults on 5 nodes that gives the interleaving
MUTANT = MUTANTS_BY_NAME["bounded-send-time"]


def test_send_time_stamps_serve_beyond_the_bound_on_the_seed_that_found_it() -> None:
    with MUTANT.patches():
        broken = run_seed(mutant_spec(MUTANT, SEED))
    assert not broken.ok and broken.check == "levels", (broken.check, broken.detail)
    assert "bounded-staleness" in broken.detail and "> T=500 ms" in broken.detail


def test_the_same_schedule_is_clean_with_stamps_timed_by_confirmed_rounds() -> None:
    fixed = run_seed(dataclasses.replace(mutant_spec(MUTANT, SEED), bugs=()))
    assert fixed.ok, (fixed.check, fixed.detail)
    assert fixed.counters["reads_bounded_staleness_follower"] > 0  # followers still serve them
