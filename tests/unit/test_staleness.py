"""Bounded staleness against the leader's stamps: K versions and T ms, on the clock of the read."""

from __future__ import annotations

from exapyte.data.staleness import LeaderStamps, StalenessBound

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


def test_a_newer_commit_under_the_same_confirmed_round_counts_for_k_but_not_for_t() -> None:
    """Stamps are timed by the leader's last quorum-confirmed round, so several carry one
    as_of while the commit index rises: K must see the newest commit, T the strongest claim."""
    b = StalenessBound()
    b.on_stamp(10, 1_000.0)
    b.on_stamp(30, 1_000.0)  # committed 20 more, no newer round confirmed yet
    assert b.leader_commit == 30
    assert not b.within(10, 1_100.0, K, T, SKEW)  # 20 behind the newest commit
    assert b.fresh_as_of(10) == 1_000.0  # "commit <= 10 as of 1,000" still holds
    assert b.fresh_as_of(9) is None


# --- the leader's side: stamps timed by quorum-confirmed heartbeat rounds ----------------------


def test_a_leader_stamps_nothing_until_a_round_it_timed_is_confirmed() -> None:
    s = LeaderStamps()
    assert s.stamp(term=3, commit=7, rounds=(4, 4), now_ms=100.0) is None  # rounds of before: no time
    assert s.stamp(3, 7, (5, 4), 200.0) is None  # round 5 sent at 200, unconfirmed
    assert s.stamp(3, 8, (6, 4), 300.0) is None
    assert s.stamp(3, 9, (6, 5), 350.0) == (9, 200.0)  # round 5 confirmed: as of its send time
    assert s.stamp(3, 9, (6, 5), 900.0) == (9, 200.0)  # no newer confirmation: as_of stays
    assert s.stamp(3, 10, (7, 6), 950.0) == (10, 300.0)


def test_a_leader_cut_off_from_its_quorum_keeps_its_last_confirmed_time() -> None:
    """Seed 179's shape: the old leader goes on sending (and stamping) while nobody confirms
    its rounds; its stamps must not get fresher, whatever its clock says."""
    s = LeaderStamps()
    s.stamp(7, 40, (10, 0), 5_000.0)
    s.stamp(7, 40, (11, 10), 5_050.0)
    confirmed_at = s.stamp(7, 44, (11, 11), 5_100.0)
    assert confirmed_at == (44, 5_050.0)
    for i, now in enumerate(range(5_150, 6_100, 50)):
        assert s.stamp(7, 44, (12 + i, 11), float(now)) == (44, 5_050.0)


def test_a_new_leadership_forgets_the_rounds_of_the_last() -> None:
    s = LeaderStamps()
    s.stamp(1, 5, (0, 0), 5.0)
    s.stamp(1, 5, (1, 0), 10.0)
    assert s.stamp(1, 5, (1, 1), 20.0) == (5, 10.0)
    assert s.stamp(2, 9, (3, 1), 30.0) is None  # a new term: round 3 may have left before now
    assert s.stamp(2, 9, (3, 3), 40.0) is None  # its time is unknown, so it gives no stamp
    assert s.stamp(2, 9, (4, 3), 50.0) is None
    assert s.stamp(2, 9, (4, 4), 60.0) == (9, 50.0)
