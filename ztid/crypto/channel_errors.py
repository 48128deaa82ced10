"""The encrypted channel's errors, re-exported here; they live in the one tree of :mod:`ztid.errors`."""

from __future__ import annotations

from ztid.errors import ChannelClosed, FrameOrderError, TruncatedError

__all__ = ["ChannelClosed", "FrameOrderError", "TruncatedError"]
