"""The encrypted channel's errors: all CryptoErrors; the frame checks are DecryptionErrors."""

from __future__ import annotations

from ztid.errors import CryptoError, DecryptionError

__all__ = ["ChannelClosed", "FrameOrderError", "TruncatedError"]


class ChannelClosed(CryptoError):
    """The channel was closed, or failed earlier (``__cause__`` is the failure); nothing more passes."""


class FrameOrderError(DecryptionError):
    """A frame arrived out of order: replayed, reordered, dropped, or from an unknown epoch."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"decryption failed: {detail}")


class TruncatedError(DecryptionError):
    """The stream ended inside a frame."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"decryption failed: {detail}")
