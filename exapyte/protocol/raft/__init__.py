"""Raft: the sans-IO core (:class:`Raft`), its config and its peer messages."""

from exapyte.protocol.membership import apply_change
from exapyte.protocol.raft.core import Raft, RaftConfig
from exapyte.protocol.raft.messages import RAFT_MESSAGE_TYPES, RaftMessage

__all__ = ["RAFT_MESSAGE_TYPES", "Raft", "RaftConfig", "RaftMessage", "apply_change"]
