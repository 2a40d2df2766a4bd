# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
C{fixed:N}: every N bytes is a frame, as loggers send fixed-size records.
"""

from __future__ import annotations

from tcpcomm.framers.base import BufferFramer

__all__ = ["FixedFramer"]


class FixedFramer(BufferFramer):
    """
    Frames of exactly C{length} bytes, one after another.

    Replies are sent as they are, whatever their length.

    @ivar length: Every frame's length, in bytes.
    """

    __slots__ = ("length",)

    length: int

    def __init__(self, length: int) -> None:
        """
        @raise ValueError: If C{length} is less than 1.
        """
        if length < 1:
            raise ValueError(f"the frame length must be at least 1, not {length}")
        super().__init__()
        self.length = length

    def cut(self, buffer: bytearray, frames: list[bytes]) -> int:
        """
        See L{BufferFramer.cut}.
        """
        length = self.length
        end = len(buffer) - len(buffer) % length
        frames.extend(
            bytes(buffer[start : start + length]) for start in range(0, end, length)
        )
        return end

    def encode(self, payload: bytes) -> bytes:
        """
        See L{Framer.encode}: C{payload} as it is.
        """
        return bytes(payload)
