"""Multi-Paxos phase 1, one core fed by hand: ballots, promises and what a new leader proposes.

Section numbers: Lamport, "Paxos Made Simple" (PMS) §2.2 (choosing a value), §2.3 (learning),
§3 (implementing a state machine: one phase 1 for all instances, no-op fill).
"""

from __future__ import annotations

from exapyte.protocol.multipaxos.core import MultiPaxos
from exapyte.protocol.multipaxos.messages import Accept, AcceptedSlot, Prepare, Promise, Reject
from exapyte.protocol.types import Entry, EntryKind, PersistedState, Role
from tests.protocol.helpers import RecordingHost
from tests.protocol.paxos_helpers import drive, paxos_core, record_of, start_phase1

FIVE = ("n1", "n2", "n3", "n4", "n5")


def _ready_with(host: RecordingHost, kind: type) -> tuple[object, ...]:
    """The persist call of the Ready whose send carried a ``kind`` message, and that send."""
    last_persist = None
    for name, args in host.calls:
        if name == "persist":
            last_persist = args
        if name == "send" and any(
            isinstance(m, kind) and not getattr(m, "probe", False) for m in args
        ):
            return last_persist, args
    raise AssertionError(f"no {kind.__name__} sent")


def test_pms_2_2_a_candidate_persists_its_ballot_before_sending_prepare() -> None:
    # A restart must never reuse a round: the Prepare leaves only after the promise to
    # ourselves is fsynced.
    core, host = paxos_core()
    host.calls.clear()
    sent = start_phase1(core, host)
    prepares = [m for m in sent if isinstance(m, Prepare)]
    assert sorted(m.to for m in prepares) == ["n2", "n3"]
    persist, _ = _ready_with(host, Prepare)
    assert persist is not None
    hard_state, _, _, sync = persist  # type: ignore[misc]
    assert sync is True
    assert record_of(host).promised_round == prepares[0].round
    assert record_of(host).promised_node == "n1"
    assert core.role is Role.CANDIDATE


def test_pms_2_2_a_restarted_candidate_picks_a_higher_round() -> None:
    core, host = paxos_core()
    first = [m for m in start_phase1(core, host) if isinstance(m, Prepare)][0].round
    again, host2 = paxos_core(persisted=PersistedState(hard_state=host.hard_state, entries=tuple(
        e for name, args in host.calls if name == "persist" for e in args[1])))
    second = [m for m in start_phase1(again, host2) if isinstance(m, Prepare)][0].round
    assert second > first


def test_a_probe_changes_no_promise() -> None:
    core, host = paxos_core("n2")
    core.step(Prepare("n1", "n2", 5, 4, 3, probe=True))
    (answer,) = drive(core, host)
    assert isinstance(answer, Promise) and answer.probe and not answer.reject
    assert core.promised == (0, "") and not core.accepted


def test_a_replica_cut_off_probes_without_raising_its_promise() -> None:
    core, host = paxos_core("n1")
    for _ in range(100):
        core.tick()
        drive(core, host)
    assert core.role is Role.PRE_CANDIDATE and core.promised == (0, "")


def test_pms_2_2_an_acceptor_promises_each_round_to_one_node_only() -> None:
    core, host = paxos_core("n2")
    core.step(Prepare("n1", "n2", 5, 4, 3))
    sent = drive(core, host)
    assert [type(m) for m in sent] == [Promise] and not sent[0].reject
    assert core.promised == (5, "n1")
    core.step(Prepare("n3", "n2", 5, 4, 3))  # same round, another node: refused
    sent = drive(core, host)
    assert [type(m) for m in sent] == [Reject]
    assert (sent[0].promised_round, sent[0].promised_node) == (5, "n1")
    assert core.promised == (5, "n1")
    core.step(Prepare("n3", "n2", 4, 4, 3))  # lower round: refused
    assert isinstance(drive(core, host)[0], Reject)
    core.step(Prepare("n3", "n2", 6, 4, 3))  # higher round: promised
    sent = drive(core, host)
    assert isinstance(sent[0], Promise) and core.promised == (6, "n3")
    assert core.dropped["stale_ballot"] == 2


def test_pms_2_2_a_promise_leaves_after_the_promise_is_persisted() -> None:
    core, host = paxos_core("n2")
    host.calls.clear()
    core.step(Prepare("n1", "n2", 7, 4, 3))
    drive(core, host)
    persist, _ = _ready_with(host, Promise)
    assert persist is not None and persist[3] is True  # type: ignore[index]
    assert record_of(host).promised_round == 7
    # and it went in Ready.messages (after the persist step), not in early_messages
    names = [name for name, _ in host.calls]
    assert names.index("persist") < names.index("send")


def test_pms_2_2_a_promise_reports_every_accepted_slot_from_start() -> None:
    core, host = paxos_core("n2")
    slots = [Entry(2, 4, EntryKind.NORMAL, b"a=1"), Entry(2, 5, EntryKind.NORMAL, b"b=2")]
    core.step(Accept("n1", "n2", 2, (slots[1],), 3))  # slot 5 only: slot 4 is a hole
    drive(core, host)
    assert sorted(core.accepted) == [5]
    core.step(Prepare("n3", "n2", 3, 4, 3))  # n2 hears n1: a competing phase 1 is ignored
    assert drive(core, host) == [] and core.dropped["prepare_in_lease"] == 1
    core.step(Prepare("n3", "n2", 3, 4, 3, transfer=True))
    promise = [m for m in drive(core, host) if isinstance(m, Promise)][0]
    assert [(s.round, s.node, s.entry) for s in promise.accepted] == [(2, "n1", slots[1])]


def test_pms_2_2_an_acceptor_refuses_a_candidate_that_knows_less_of_the_chosen_prefix() -> None:
    core, host = paxos_core("n2")  # three bootstrap entries are chosen here
    core.step(Prepare("n1", "n2", 9, 2, 1))
    promise = drive(core, host)[0]
    assert isinstance(promise, Promise) and promise.reject and promise.commit == 3
    assert core.promised[0] < 9  # nothing promised


def _candidate(voters: tuple[str, ...] = FIVE) -> tuple[MultiPaxos, RecordingHost, int]:
    core, host = paxos_core("n1", voters=voters)
    core.step(Prepare("n5", "n1", 5, len(voters) + 1, len(voters)))  # rounds 1..5 were used
    drive(core, host)
    prepare = [m for m in start_phase1(core, host) if isinstance(m, Prepare)][0]
    return core, host, prepare.round


def test_pms_2_2_the_leader_reproposes_the_highest_ballot_value_and_keeps_its_identity() -> None:
    core, host, rnd = _candidate()
    assert rnd == 6
    start = 6  # five bootstrap entries are chosen
    older = Entry(1, 6, EntryKind.NORMAL, b"x=old")
    newer = Entry(2, 6, EntryKind.NORMAL, b"x=new")
    far = Entry(2, 8, EntryKind.NORMAL, b"y=1")
    core.step(Promise("n2", "n1", rnd, start, 5, (AcceptedSlot(1, "n4", older),)))
    core.step(Promise("n3", "n1", rnd, start, 5, (AcceptedSlot(2, "n5", newer),
                                                  AcceptedSlot(2, "n5", far))))
    drive(core, host)
    assert core.role is Role.LEADER
    acc = core.accepted
    # slot 6: the value of ballot (2, n5), not of (1, n4); its term is the round it was first
    # proposed in, so (6, 2) still names it
    assert acc[6].entry == newer and (acc[6].round, acc[6].node) == (rnd, "n1")
    # slot 7: nobody reported a value: a no-op of our round fills the hole (PMS §3)
    assert acc[7].entry == Entry(rnd, 7, EntryKind.NOOP, b"")
    assert acc[8].entry == far
    # and the leader's own no-op follows
    assert acc[9].entry == Entry(rnd, 9, EntryKind.NOOP, b"")
    assert max(acc) == 9


def test_pms_2_2_a_promise_for_an_older_round_is_not_counted() -> None:
    core, host, first = _candidate(("n1", "n2", "n3"))
    second = [m for m in start_phase1(core, host) if isinstance(m, Prepare)][0].round
    assert second > first
    core.step(Promise("n2", "n1", first, 4, 3))
    drive(core, host)
    assert core.role is Role.CANDIDATE
    assert core.dropped["stale_promise"] == 1
    core.step(Promise("n2", "n1", second, 4, 3))
    drive(core, host)
    assert core.role is Role.LEADER


def test_pms_2_3_a_reject_of_a_higher_ballot_ends_the_candidacy() -> None:
    core, host, rnd = _candidate(("n1", "n2", "n3"))
    core.step(Reject("n2", "n1", rnd, rnd + 3, "n3"))
    drive(core, host)
    assert core.role is Role.FOLLOWER
    again = [m for m in start_phase1(core, host) if isinstance(m, Prepare)][0]
    assert again.round > rnd + 3


def test_pms_2_2_refusals_from_a_quorum_end_the_candidacy() -> None:
    core, host, rnd = _candidate(("n1", "n2", "n3"))
    core.step(Promise("n2", "n1", rnd, 4, 9, reject=True))
    assert core.role is Role.CANDIDATE
    core.step(Promise("n3", "n1", rnd, 4, 9, reject=True))
    assert core.role is Role.FOLLOWER
