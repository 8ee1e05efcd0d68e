"""The Multi-Paxos mutants of ``tests/mutants`` really change behaviour: for each one, the exact
situation it breaks, built by hand on one core, with the unmodified core's choice and the
mutant's wrong one side by side. (Whether the simulator *catches* them is ``tests/mutants``'s job;
this shows there is something to catch.)

Section numbers: Lamport, "Paxos Made Simple" (PMS) §2.2 (P2c: the highest-numbered proposal's
value), §3 (one phase 1 for every instance, no-ops for the gaps).
"""

from __future__ import annotations

from exapyte.protocol.multipaxos.core import MultiPaxos
from exapyte.protocol.multipaxos.messages import Accept, AcceptedSlot, Prepare, Promise
from exapyte.protocol.types import Entry, EntryKind, Role
from tests.mutants.mutants import MUTANTS_BY_NAME
from tests.protocol.helpers import RecordingHost
from tests.protocol.paxos_helpers import drive, paxos_core, start_phase1

FIVE = ("n1", "n2", "n3", "n4", "n5")
START = 6  # five bootstrap entries (1..5) are chosen: phase 1 starts at slot 6


def _round_of(sent: list[object]) -> int:
    return [m for m in sent if isinstance(m, Prepare)][0].round


# --- paxos-own-value ---------------------------------------------------------------------------


def _candidate_holding_an_older_value() -> tuple[MultiPaxos, RecordingHost, int]:
    """n1 accepted slot 6 in ballot (1, n4), then promised round 2 to n5, and now runs phase 1."""
    core, host = paxos_core("n1", voters=FIVE)
    core.step(Accept("n4", "n1", 1, (Entry(1, START, EntryKind.NORMAL, b"x=own"),), START - 1))
    core.step(Prepare("n5", "n1", 2, START, START - 1, transfer=True))  # past any lease
    drive(core, host)
    return core, host, _round_of(start_phase1(core, host))


def _own_value_phase1(core: MultiPaxos, host: RecordingHost, rnd: int) -> Entry:
    # n2 reports slot 6 accepted in ballot (2, n5), higher than n1's own (1, n4); n3 reports
    # nothing. With n1 itself that is a quorum of the five.
    newer = Entry(2, START, EntryKind.NORMAL, b"x=chosen")
    core.step(Promise("n2", "n1", rnd, START, START - 1, (AcceptedSlot(2, "n5", newer),)))
    core.step(Promise("n3", "n1", rnd, START, START - 1))
    drive(core, host)
    assert core.role is Role.LEADER
    return core.accepted[START].entry


def test_pms_2_2_the_unmodified_leader_takes_the_reported_higher_ballot_over_its_own() -> None:
    core, host, rnd = _candidate_holding_an_older_value()
    assert rnd == 3
    assert core.accepted[START].entry.data == b"x=own"  # what n1 holds before phase 1
    assert _own_value_phase1(core, host, rnd).data == b"x=chosen"


def test_paxos_own_value_mutant_keeps_its_own_lower_ballot_value() -> None:
    with MUTANTS_BY_NAME["paxos-own-value"].patches():
        core, host, rnd = _candidate_holding_an_older_value()
        chosen = _own_value_phase1(core, host, rnd)
    # (2, n5)'s value may have been chosen by a quorum n1 never heard from; the mutant overwrites
    # it with the value of ballot (1, n4)
    assert chosen == Entry(1, START, EntryKind.NORMAL, b"x=own")


# --- paxos-skip-hole ---------------------------------------------------------------------------


def _phase1_with_a_hole() -> list[Entry]:
    """Phase 1 where slot 6 is reported by nobody and slot 7 by n2: the slots n1 proposes."""
    core, host = paxos_core("n1", voters=FIVE)
    rnd = _round_of(start_phase1(core, host))
    above = Entry(1, START + 1, EntryKind.NORMAL, b"y=1")
    core.step(Promise("n2", "n1", rnd, START, START - 1, (AcceptedSlot(1, "n4", above),)))
    core.step(Promise("n3", "n1", rnd, START, START - 1))
    drive(core, host)
    assert core.role is Role.LEADER
    acc = core.accepted
    return [acc[s].entry for s in sorted(acc)]


def test_pms_3_the_unmodified_leader_fills_the_hole_with_a_noop() -> None:
    rnd = 1
    assert _phase1_with_a_hole() == [
        Entry(rnd, START, EntryKind.NOOP, b""),
        Entry(1, START + 1, EntryKind.NORMAL, b"y=1"),  # stays in its slot, keeps its identity
        Entry(rnd, START + 2, EntryKind.NOOP, b""),  # the leader's own no-op
    ]


def test_paxos_skip_hole_mutant_moves_the_value_above_into_the_hole() -> None:
    with MUTANTS_BY_NAME["paxos-skip-hole"].patches():
        slots = _phase1_with_a_hole()
    # y=1 (slot 7, possibly chosen there) now sits in slot 6 under the identity (6, 1), which
    # round 1's leader gave to another value; slot 7 gets the leader's no-op.
    assert slots[0] == Entry(1, START, EntryKind.NORMAL, b"y=1")
    assert slots[1].kind == EntryKind.NOOP and slots[1].index == START + 1
    assert len(slots) == 2


# --- paxos-stale-promise -----------------------------------------------------------------------


def _stale_promise_phase1() -> MultiPaxos:
    """n1 asked for round r, then for a higher round r'; n2's promise of round r arrives late."""
    core, host = paxos_core("n1", voters=("n1", "n2", "n3"))
    first = _round_of(start_phase1(core, host))
    second = _round_of(start_phase1(core, host))
    assert second > first
    # n2 promised r before it accepted anything; it may have promised and accepted in a round
    # between r and r' since (a Promise of r' would report that)
    core.step(Promise("n2", "n1", first, 4, 3))
    drive(core, host)
    return core


def test_pms_2_2_the_unmodified_candidate_ignores_a_promise_of_an_older_round() -> None:
    core = _stale_promise_phase1()
    assert core.role is Role.CANDIDATE
    assert core.status().dropped["stale_promise"] == 1


def test_paxos_stale_promise_mutant_counts_it_and_leads_without_a_quorum_for_its_round() -> None:
    with MUTANTS_BY_NAME["paxos-stale-promise"].patches():
        core = _stale_promise_phase1()
        assert core.role is Role.LEADER  # with n1 alone promised round r'
        assert "stale_promise" not in core.status().dropped
