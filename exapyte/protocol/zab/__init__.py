"""ZAB: the sans-IO core (:class:`Zab`), its config and its peer messages."""

from exapyte.protocol.zab.core import Zab, ZabConfig, ZabRecord, build
from exapyte.protocol.zab.messages import ZAB_MESSAGE_TYPES, ZabMessage

__all__ = ["ZAB_MESSAGE_TYPES", "Zab", "ZabConfig", "ZabMessage", "ZabRecord", "build"]
