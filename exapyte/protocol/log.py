"""The replicated log, shared by every consensus core.

Theory of operation
-------------------
The log is the sequence of entries after the latest snapshot, held in memory as one Python list
indexed by offset: the entry with index ``i`` sits at ``_entries[i - offset - 1]`` where
``offset`` is the snapshot's index (0 when there is none). Looking an entry up, slicing a batch
for a follower and appending a proposal are O(1) or O(batch); nothing copies the whole log on a
hot path. Compaction (:meth:`compact`) is the one place that rebuilds the list, once per
snapshot.

Marks, always ordered ``offset <= applied <= committed <= last_index`` and
``offset <= stable <= last_index``::

    offset      applied        committed          stable              last_index
    |-snapshot-|---applied----|--committed, not--|--persisted, not---|--unstable: not yet
                                applied             committed           persisted--|

- *stable*: every entry up to ``stable`` has been persisted (fsynced) by the host;
  :meth:`unstable_entries` is what the next ``Ready`` asks the host to persist.
- *committed*: durable on a quorum (the protocol decides when; the log only stores the mark
  and refuses to move it backwards or to truncate below it).
- *applied*: handed to the host's state machine.

A snapshot arriving from a leader replaces the log (``pending_snapshot``) until the host has
persisted it. Terms along the log never decrease, so "first index of term t" and "last index of
term t" are binary searches; the fast-backtracking hint of Raft §5.3 uses them.

The log knows nothing of roles or messages. Raft uses it directly; Multi-Paxos and ZAB use it
with their ballot/epoch in ``Entry.term``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from exapyte.errors import InvariantViolation, ProtocolMisuse
from exapyte.protocol.types import Entry, Snapshot

ENTRY_OVERHEAD_BYTES = 24  # rough per-entry framing cost used by byte-bounded slicing


def entry_size(entry: Entry) -> int:
    """Approximate encoded size of ``entry``, for batching limits."""
    return len(entry.data) + ENTRY_OVERHEAD_BYTES


def _term_of(entry: Entry) -> int:
    return entry.term


class ReplicatedLog:
    """Entries after the last snapshot plus the stable/committed/applied marks."""

    __slots__ = (
        "_entries",
        "offset",
        "offset_term",
        "snapshot",
        "pending_snapshot",
        "stable",
        "committed",
        "applied",
    )

    def __init__(
        self,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        committed: int = 0,
        applied: int | None = None,
    ) -> None:
        self.snapshot: Snapshot | None = snapshot
        self.offset = snapshot.meta.index if snapshot is not None else 0
        self.offset_term = snapshot.meta.term if snapshot is not None else 0
        # entries may start before the snapshot (storage compacts lazily): drop those
        kept = [e for e in entries if e.index > self.offset] if entries else []
        for position, entry in enumerate(kept):
            if entry.index != self.offset + 1 + position:
                raise ProtocolMisuse(
                    f"persisted entries are not contiguous after index {self.offset}: "
                    f"found index {entry.index} at position {position}"
                )
        self._entries: list[Entry] = kept
        self.pending_snapshot: Snapshot | None = None
        self.stable = self.last_index
        self.committed = min(max(committed, self.offset), self.last_index)
        start = self.offset if applied is None else applied
        if not self.offset <= start <= self.committed:
            raise ProtocolMisuse(
                f"applied={start} must lie between the snapshot index {self.offset} "
                f"and the committed index {self.committed}"
            )
        self.applied = start

    # --- positions -------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.offset + 1

    @property
    def last_index(self) -> int:
        return self.offset + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.offset_term

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> Sequence[Entry]:
        """The entries after the snapshot, in index order: the log's own list, to read only
        (the invariant checkers compare it without copying)."""
        return self._entries

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        position = index - self.offset - 1
        if position < 0 or position >= len(self._entries):
            return None
        return self._entries[position].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        position = index - self.offset - 1
        if position < 0 or position >= len(self._entries):
            raise ProtocolMisuse(
                f"entry {index} is not held (log spans {self.first_index}..{self.last_index})"
            )
        return self._entries[position]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as new as ours?"""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def first_index_of_term(self, term: int, at_or_below: int) -> int:
        """Smallest index ``<= at_or_below`` holding ``term``, searching back from ``at_or_below``.

        Terms never decrease along the log, so this is a binary search. Returns
        ``first_index`` when the run of ``term`` reaches back into the snapshot.
        """
        hi = min(at_or_below, self.last_index) - self.offset  # positions [0, hi)
        position = bisect_left(self._entries, term, 0, max(hi, 0), key=_term_of)
        return self.offset + 1 + position

    def last_index_of_term(self, term: int) -> int | None:
        """Largest index holding ``term`` (the snapshot position counts), or None."""
        position = bisect_right(self._entries, term, key=_term_of)
        if position > 0 and self._entries[position - 1].term == term:
            return self.offset + position
        if self.offset_term == term and self.offset > 0:
            return self.offset
        return None

    # --- reading ---------------------------------------------------------------------------

    def slice(
        self, lo: int, hi: int, max_count: int | None = None, max_bytes: int | None = None
    ) -> list[Entry]:
        """Entries ``lo <= index < hi``, at most ``max_count`` of them and about ``max_bytes``.

        At least one entry is returned when the range is not empty, even if it alone exceeds
        ``max_bytes`` (otherwise a large entry could never be sent).
        """
        if lo < self.first_index or hi > self.last_index + 1:
            raise ProtocolMisuse(
                f"slice [{lo}, {hi}) outside the log ({self.first_index}..{self.last_index})"
            )
        if lo >= hi:
            return []
        start = lo - self.offset - 1
        stop = hi - self.offset - 1
        if max_count is not None and stop - start > max_count:
            stop = start + max(max_count, 1)
        batch = self._entries[start:stop]
        if max_bytes is not None:
            total = 0
            for count, entry in enumerate(batch):
                total += len(entry.data) + ENTRY_OVERHEAD_BYTES
                if total > max_bytes and count > 0:
                    return batch[:count]
        return batch

    def unstable_entries(self) -> tuple[Entry, ...]:
        """Entries not yet persisted, in index order."""
        if self.stable >= self.last_index:
            return ()
        return tuple(self._entries[self.stable - self.offset :])

    def has_unstable(self) -> bool:
        return self.stable < self.last_index

    def committed_unapplied(self) -> list[Entry]:
        """Entries ``applied < index <= committed``: the next batch for the state machine.

        While a received snapshot is pending, only entries after the snapshot are returned.
        """
        start = self.applied if self.applied > self.offset else self.offset
        if self.committed <= start:
            return []
        return self._entries[start - self.offset : self.committed - self.offset]

    # --- writing ---------------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """Append one entry at the end (a leader's proposal)."""
        if entry.index != self.last_index + 1:
            raise InvariantViolation(
                f"append of index {entry.index} after last index {self.last_index}"
            )
        if entry.term < self.last_term:
            raise InvariantViolation(
                f"append of term {entry.term} after last term {self.last_term}"
            )
        self._entries.append(entry)

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first of ``entries`` that is new or disagrees with ours; 0 if none.

        Entries below our first index are compacted, hence committed, hence matching.
        """
        for entry in entries:
            held = self.term(entry.index)
            if held is None:
                if entry.index <= self.offset:
                    continue
                return entry.index
            if held != entry.term:
                return entry.index
        return 0

    def maybe_append(
        self, prev_index: int, prev_term: int, entries: Sequence[Entry]
    ) -> int | None:
        """Append ``entries`` after (prev_index, prev_term) if the log matches there (§5.3).

        Returns the index of the last new entry, or None when the log does not match.
        A conflicting suffix is truncated; truncating a committed entry is an invariant
        violation.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise InvariantViolation(
                    f"entry {conflict} conflicts with a committed entry "
                    f"(committed={self.committed})"
                )
            self.truncate_and_append(entries[conflict - prev_index - 1 :])
        return last_new

    def truncate_and_append(self, entries: Sequence[Entry]) -> None:
        """Drop everything from ``entries[0].index`` on and append ``entries``."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.offset or first > self.last_index + 1:
            raise InvariantViolation(
                f"cannot splice at index {first} (log spans {self.first_index}..{self.last_index})"
            )
        if first <= self.committed:
            raise InvariantViolation(
                f"truncation at {first} would drop committed entries (committed={self.committed})"
            )
        del self._entries[first - self.offset - 1 :]
        self._entries.extend(entries)
        if self.stable >= first:
            self.stable = first - 1

    def commit_to(self, index: int) -> bool:
        """Move the committed mark forward to ``index``; returns whether it moved."""
        if index <= self.committed:
            return False
        if index > self.last_index:
            raise InvariantViolation(
                f"commit to {index} beyond the last index {self.last_index}"
            )
        self.committed = index
        return True

    def applied_to(self, index: int) -> None:
        if index < self.applied or index > self.committed:
            raise InvariantViolation(
                f"applied mark {index} outside [{self.applied}, {self.committed}]"
            )
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        """The host persisted entries up to ``index`` (whose term was ``term``)."""
        if self.term(index) == term and index > self.stable:
            self.stable = index

    # --- snapshots -------------------------------------------------------------------------

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (a follower's InstallSnapshot, Raft §7)."""
        meta = snapshot.meta
        if meta.index <= self.committed:
            raise InvariantViolation(
                f"restore of snapshot at {meta.index} not beyond committed {self.committed}"
            )
        self._entries = []
        self.offset = meta.index
        self.offset_term = meta.term
        self.snapshot = snapshot
        self.pending_snapshot = snapshot
        self.stable = meta.index
        self.committed = meta.index

    def snapshot_persisted(self, snapshot: Snapshot) -> None:
        """The host persisted and installed ``pending_snapshot``."""
        if self.pending_snapshot is snapshot:
            self.pending_snapshot = None
            if self.applied < snapshot.meta.index:
                self.applied = snapshot.meta.index

    def compact(self, snapshot: Snapshot) -> None:
        """The host snapshotted its state machine at ``snapshot.meta.index``; drop entries up to it."""
        index = snapshot.meta.index
        if index > self.applied:
            raise ProtocolMisuse(
                f"cannot compact to {index}: only {self.applied} has been applied"
            )
        if index <= self.offset:
            raise ProtocolMisuse(
                f"cannot compact to {index}: the log is already compacted to {self.offset}"
            )
        held = self.term(index)
        if held != snapshot.meta.term:
            raise ProtocolMisuse(
                f"snapshot term {snapshot.meta.term} at index {index} does not match "
                f"the log's term {held}"
            )
        del self._entries[: index - self.offset]
        self.offset = index
        self.offset_term = snapshot.meta.term
        self.snapshot = snapshot
