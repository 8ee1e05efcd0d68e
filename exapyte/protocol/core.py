"""The interface every consensus core implements (Raft, Multi-Paxos, ZAB).

Theory of operation
-------------------
A core is a deterministic, sans-IO state machine. It never reads a clock, never touches a
socket or a disk and never draws its own random numbers: time arrives as :meth:`tick` calls,
randomness as an injected ``random.Random``-like object, peers' messages through :meth:`step`,
and client work through :meth:`propose`, :meth:`propose_conf_change` and :meth:`read`.

Everything the core wants done leaves through one value, :class:`~exapyte.protocol.types.Ready`,
taken with :meth:`ready` when :meth:`has_ready` is true and applied by
:func:`exapyte.protocol.drive.drive` in the fixed order persist -> send -> install snapshot /
apply -> answer reads -> :meth:`advance`. Between :meth:`ready` and :meth:`advance` the host
must not call any other method of the core (drive() does the whole cycle in one call); a core
raises :class:`~exapyte.errors.ProtocolMisuse` if it is.

Errors follow the project's two kinds:

- local misuse (proposing on a follower, a malformed config, calling ready() twice) raises:
  :class:`~exapyte.errors.NotLeader` carries a hint of who the leader may be,
  :class:`~exapyte.errors.ProposalDropped` means "refused now, retry later" (for example during
  a leadership transfer), :class:`~exapyte.errors.ProtocolMisuse` is a programming error;
- bad remote input (stale terms, unknown peers, impossible indexes) is dropped and counted in
  ``status().dropped``, never raised;
- a broken safety invariant raises :class:`~exapyte.errors.InvariantViolation`.

Membership changes (a ``CONF_CHANGE`` entry) take effect in the core when the entry is
*applied*, i.e. inside :meth:`advance` for the entries of that Ready's ``committed_entries``: the
host passes them to its state machine only so that its applied index stays exact (and it may
decode them with :func:`exapyte.protocol.types.decode_conf_change` to update routing); the host
does not have to call anything else.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from typing import Any, Protocol

from exapyte.protocol.invariants import NodeView
from exapyte.protocol.types import ConfChange, HardState, Ready, Role, Snapshot, Status


def misaddressed(message: Any, handled: Collection[type], me: str) -> str | None:
    """Why a peer message never reaches a core's handlers (the drop counter to bump), or None:
    a type the core does not handle, addressed to another node, or from no sender or itself."""
    if type(message) not in handled:
        return "unknown_message"
    if message.to != me:
        return "misrouted"
    frm = message.frm
    if not isinstance(frm, str) or not frm or frm == me:
        return "bad_sender"
    return None


class RandomSource(Protocol):
    """The part of ``random.Random`` a core uses (inject a seeded instance)."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1, /) -> int: ...

    def random(self) -> float: ...


class ConsensusCore(abc.ABC):
    """One replica of one replica group. See the module docstring for the contract."""

    # --- identity and state ----------------------------------------------------------------

    @property
    @abc.abstractmethod
    def node_id(self) -> str: ...

    @property
    @abc.abstractmethod
    def leader(self) -> str | None:
        """The leader this replica believes in, or None."""

    @property
    @abc.abstractmethod
    def term(self) -> int:
        """Raft's term (Multi-Paxos: ballot round; ZAB: epoch)."""

    @property
    @abc.abstractmethod
    def role(self) -> Role: ...

    @abc.abstractmethod
    def status(self) -> Status: ...

    @property
    def dropped(self) -> dict[str, int]:
        """Remote input dropped so far, by cause (a copy)."""
        return dict(self.status().dropped)

    @abc.abstractmethod
    def observe(self) -> NodeView:
        """What an invariant checker may see of this replica (the simulator's judge reads only
        this). ``NodeView.term`` names a leadership at most one replica ever holds: Raft's term,
        ZAB's epoch, the round of a Multi-Paxos ballot."""

    def quiescent(self) -> bool:
        """Whether this replica may stop ticking until its next input (a *quiesced* group
        costs no timer work and no heartbeats).

        True only when nothing is in flight: a leader whose every member holds its whole log
        and whose commit and applied index have reached its end, with no read, transfer or
        Ready pending; a follower or learner that knows its leader and has committed and applied
        everything it holds. The host quiesces a group only while every member it depends on
        is alive (its node liveness) and wakes it on any input for the group; stopping ticks
        costs liveness only, never safety. A protocol that does not support it returns False.
        """
        return False

    @property
    @abc.abstractmethod
    def standby(self) -> bool:
        """Whether this replica holds nothing: no log entry and no snapshot.

        A founding member never is (it starts with the founding configuration as committed
        entries ``1..n``), so a replica in standby was created empty on a node that joins the
        group, or that lost or dropped its replica and was sent a message for the group again.
        Such a replica may be listed as a voter by a configuration that some member still holds
        while it has forgotten everything it promised and accepted (*amnesia*). Until a leader's
        append or snapshot gives it a log, it grants no vote, makes no promise, counts in no
        discovery quorum and confirms no read round; it does accept that first append or
        snapshot, which is how it joins (and it then persists it before acknowledging, as every
        acknowledgement of the log is)."""

    @abc.abstractmethod
    def tombstone(self) -> HardState:
        """The hard state a replica of this group re-created empty on this node starts from:
        this core's promises (Raft's term and vote, the promised ballot of Multi-Paxos, ZAB's
        accepted epoch and the leader it came from), without the log and without anything that
        describes the log (commit index, accepted slots, current epoch). The host keeps it when
        it drops the replica, so that a later replica of the group on this node never gives a
        term, ballot or epoch it already gave to another candidate, nor takes a stale leader's
        entries in a term it had already left."""

    @abc.abstractmethod
    def is_from_leader(self, message: object) -> bool:
        """Whether ``message`` comes from a leader this replica accepts now (in its current
        term, ballot or epoch, or a newer one). The host times its staleness bound with it."""

    # --- inputs ----------------------------------------------------------------------------

    @abc.abstractmethod
    def step(self, message: object) -> None:
        """Handle one message from a peer. Bad input is dropped and counted, never raised."""

    @abc.abstractmethod
    def tick(self) -> None:
        """One unit of logical time elapsed."""

    @abc.abstractmethod
    def propose(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` to the log; returns its (index, term).

        The proposal is committed when an entry with this index *and this term* is applied;
        an entry with the same index and another term means the proposal was lost.
        Raises NotLeader(leader_hint) on a non-leader, ProposalDropped when refused.
        """

    @abc.abstractmethod
    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        """Propose one membership change; same contract as :meth:`propose`."""

    @abc.abstractmethod
    def read(self, request_id: bytes) -> None:
        """Ask for a linearizable read; a ``ReadState`` with this id appears in a later Ready,
        or the id appears in a later Ready's ``failed_reads`` (every read ends in one of them).

        Raises NotLeader(leader_hint) on a non-leader, ProtocolMisuse for an id still pending.
        """

    @abc.abstractmethod
    def leadership_rounds(self) -> tuple[int, int]:
        """(the newest heartbeat round this replica sent as leader, the newest round a quorum
        of voters has acknowledged), the rounds of read-index confirmation
        (exapyte/protocol/readindex.py). A quorum that acknowledged round ``r`` had not moved
        to a newer term, ballot or epoch when ``r`` reached it, so no other leader was chosen
        before ``r`` was sent: the host times its bounded-staleness stamps by it. ``(0, 0)``
        when this replica never led."""

    @abc.abstractmethod
    def campaign(self) -> None:
        """Try to become leader now, as if the election timeout fired (a group's founding voter,
        tests, operator tools)."""

    @abc.abstractmethod
    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to`` (raises NotLeader on a non-leader)."""

    @abc.abstractmethod
    def compact(self, snapshot: Snapshot) -> Snapshot:
        """The host snapshotted its state machine at an applied index.

        The core drops its log up to ``snapshot.meta.index`` and keeps the snapshot to send to
        lagging followers. A zero ``meta.term`` and an empty ``meta.conf`` are filled in from
        the log; the completed snapshot is returned and is what the host must persist.
        """

    # --- output ----------------------------------------------------------------------------

    @abc.abstractmethod
    def has_ready(self) -> bool: ...

    @abc.abstractmethod
    def ready(self) -> Ready: ...

    @abc.abstractmethod
    def advance(self, ready: Ready) -> None:
        """The host persisted, sent and applied everything in ``ready``."""
