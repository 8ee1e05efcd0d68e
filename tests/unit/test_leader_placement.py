"""Where each replication strategy keeps a group's leader (exapyte/replication/leadership.py)."""

from __future__ import annotations

from exapyte.replication.leadership import MIN_WRITES, LeaderPlacement

REGION = {"e1": "us-east", "e2": "us-east", "w1": "us-west", "w2": "us-west", "t1": "ap-northeast"}
VOTERS = ("e1", "w1", "t1")


def run(p: LeaderPlacement, me: str, ticks: int, voters: tuple[str, ...] = VOTERS) -> list[str]:
    out = []
    for _ in range(ticks):
        to = p.tick(leader=True, me=me, voters=lambda: voters)
        if to is not None:
            out.append(to)
    return out


def test_optimized_moves_leadership_to_the_region_that_writes_most() -> None:
    p = LeaderPlacement("optimized", "us-east", REGION.get, check_ticks=10)
    assert run(p, "e1", 30) == []  # home region, nothing measured: stays
    for _ in range(40):
        p.on_write("us-west")
    for _ in range(5):
        p.on_write("us-east")
    assert p.target() == "us-west"
    assert run(p, "e1", 10) == ["w1"]
    assert p.transfers_asked == 1


def test_a_region_without_a_clear_majority_of_writes_leaves_the_leader_home() -> None:
    p = LeaderPlacement("optimized", "us-east", REGION.get, check_ticks=10)
    for region in ("us-west", "ap-northeast", "us-east") * 10:
        p.on_write(region)
    assert p.target() is None  # no region writes most: no move is clearly better
    assert run(p, "e1", 50) == []
    # too few writes to measure: the home region
    q = LeaderPlacement("optimized", "us-east", REGION.get, check_ticks=10)
    for _ in range(int(MIN_WRITES) - 1):
        q.on_write("us-west")
    assert q.target() == "us-east"


def test_the_counts_decay_so_leadership_follows_a_shift_in_load() -> None:
    p = LeaderPlacement("optimized", "us-east", REGION.get, check_ticks=10)
    for _ in range(100):
        p.on_write("us-west")
    run(p, "e1", 10)
    for _ in range(6):  # six checks later the old load weighs 100/64 < MIN_WRITES
        run(p, "w1", 10)
    assert p.target() is None  # measured before, quiet now: the leader stays (no bounce home)
    for _ in range(40):
        p.on_write("ap-northeast")
    assert p.target("us-west") == "ap-northeast"


def test_a_leader_keeps_its_region_unless_another_out_writes_it_by_the_margin() -> None:
    p = LeaderPlacement("optimized", "us-east", REGION.get, check_ticks=10)
    for _ in range(55):
        p.on_write("us-west")
    for _ in range(45):
        p.on_write("us-east")
    assert p.target("us-west") == "us-west" and p.target("us-east") is None  # 55 vs 45: < 20%
    assert run(p, "e1", 30) == []


def test_a_failed_transfer_is_retried_only_after_the_hold() -> None:
    p = LeaderPlacement("sync", "us-west", REGION.get, check_ticks=10, hold_ticks=100)
    asked = run(p, "e1", 300)
    assert asked == ["w1"] * len(asked) and 2 <= len(asked) <= 3  # never a storm


def test_a_newly_elected_leader_waits_a_check_before_moving() -> None:
    p = LeaderPlacement("sync", "us-west", REGION.get, check_ticks=10)
    assert run(p, "e1", 10) == []
    assert run(p, "e1", 10) == ["w1"]


def test_sync_without_a_home_and_followers_never_transfer() -> None:
    p = LeaderPlacement("sync", None, REGION.get, check_ticks=5)
    assert run(p, "e1", 100) == []
    q = LeaderPlacement("async", "us-west", REGION.get, check_ticks=5)
    assert all(q.tick(leader=False, me="e1", voters=lambda: VOTERS) is None for _ in range(100))


def test_no_voter_in_the_target_region_means_no_transfer() -> None:
    p = LeaderPlacement("sync", "us-west", REGION.get, check_ticks=5)
    assert run(p, "e1", 100, voters=("e1", "e2", "t1")) == []
