"""Multi-Paxos: a sans-IO consensus core (see :mod:`exapyte.protocol.multipaxos.core`)."""

from exapyte.protocol.multipaxos.core import MultiPaxos, PaxosRecord, build
from exapyte.protocol.multipaxos.messages import PAXOS_MESSAGE_TYPES

__all__ = ["PAXOS_MESSAGE_TYPES", "MultiPaxos", "PaxosRecord", "build"]
