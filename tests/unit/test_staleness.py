"""Bounded staleness against the leader's stamps: K versions and T ms, on the clock of the read."""

from __future__ import annotations

from exapyte.data.staleness import StalenessBound

K, T, SKEW = 10, 5_000, 250


def test_nothing_stamped_is_never_fresh() -> None:
    assert not StalenessBound().within(0, 0.0, K, T, SKEW)


def test_k_counts_entries_behind_the_leaders_stamped_commit() -> None:
    b = StalenessBound()
    b.on_stamp(100, 1_000.0)
    assert not b.within(89, 1_100.0, K, T, SKEW)  # 11 behind
    assert not b.within(95, 1_100.0, K, T, SKEW)  # 5 behind, but nothing it applied was stamped
    b.on_stamp(100, 1_200.0)
    assert b.leader_commit == 100
    b.on_stamp(90, 900.0)  # older than what was taken: ignored
    assert b.fresh_as_of(100) == 1_200.0 and b.within(100, 1_300.0, K, T, SKEW)


def test_t_is_the_age_of_the_newest_stamp_the_applied_state_covers_plus_the_skew_bound() -> None:
    b = StalenessBound()
    b.on_stamp(10, 1_000.0)
    b.on_stamp(20, 2_000.0)
    assert b.fresh_as_of(10) == 1_000.0 and b.fresh_as_of(25) == 2_000.0 and b.fresh_as_of(5) is None
    assert not b.within(10, 6_000.0, K, T, SKEW)  # 5,000 + 250 > 5,000
    assert b.within(20, 6_000.0, K, T, SKEW)  # 4,000 + 250
    assert not b.within(20, 7_000.0, K, T, SKEW)  # the leader was not heard for too long


def test_a_follower_resumed_after_a_pause_judges_its_state_by_the_time_that_passed() -> None:
    """What a SIGSTOP did: stamps up to the pause, then the messages queued during it arrive
    together (their stamps are from the pause), then the read, before anything was applied."""
    b = StalenessBound()
    for t in range(0, 1_000, 100):
        b.on_stamp(5, float(t))  # idle before the pause: commit 5, applied 5
    for t in range(1_000, 20_000, 500):
        b.on_stamp(5 + t // 1_000, float(t))  # a write a second while it was stopped: 24 in all
    applied = 5
    assert b.leader_commit == 24 and 24 - applied <= 100  # K alone would let it serve
    assert not b.within(applied, 20_050.0, 100, T, SKEW)  # 19 s stale under a 5 s bound
    assert b.within(24, 20_050.0, 100, T, SKEW)  # once it applied what the leader had committed


def test_a_new_leaders_stamps_start_afresh() -> None:
    b = StalenessBound()
    b.on_stamp(50, 10_000.0)
    b.clear()
    assert b.leader_commit is None and not b.within(50, 10_001.0, K, T, SKEW)
