"""Exceptions raised by exapyte.

Two kinds of error are kept apart (see docs/architecture.md):

- *local misuse* (a bad config, an impossible request made by this process) raises a subclass of
  :class:`ExapyteError` with a message naming what was wrong and what is allowed;
- *bad remote input* (an undecodable frame, a stale term, an unknown peer) is never raised across
  the node: it is counted and dropped where it is received.

A broken internal invariant raises :class:`InvariantViolation` and is meant to crash loudly.
"""

from __future__ import annotations


class ExapyteError(Exception):
    """Base class of every error exapyte raises on purpose."""


class ConfigError(ExapyteError):
    """A configuration or topology file is invalid. The message names the field and the rule."""


class StorageError(ExapyteError):
    """The storage backend cannot do what was asked (bad key, closed store, corrupt file)."""


class ProtocolMisuse(ExapyteError):
    """A consensus core was called in a way its contract forbids (a local programming error)."""


class NotLeader(ExapyteError):
    """This replica cannot serve the request; ``leader_hint`` names the node that may."""

    def __init__(self, leader_hint: str | None = None, message: str | None = None) -> None:
        self.leader_hint = leader_hint
        super().__init__(message or f"not the leader (leader hint: {leader_hint or 'unknown'})")


class ProposalDropped(ExapyteError):
    """A proposal or read was refused by the core (for example a transfer is in progress)."""


class InvariantViolation(AssertionError):
    """An internal safety invariant does not hold. Never caught: the process must stop."""


class RequestTimeout(ExapyteError):
    """A client request got no reply in time. Its effect is unknown: it may or may not apply."""


class RequestFailed(ExapyteError):
    """A node answered a client request with an error. The request definitely did not apply."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


class SessionLost(RequestFailed):
    """A ``session`` read was refused: the entry the session token of ``group`` names was
    truncated (another entry holds its index), so writes this session made there may be lost.
    The read did not happen. Start a new session (``Client.new_session``) once the loss is dealt
    with."""

    def __init__(self, group: str, token: object, message: str) -> None:
        self.group = group
        self.token = token
        super().__init__("session_lost", message)
