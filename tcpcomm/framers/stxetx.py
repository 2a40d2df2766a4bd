# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
C{stx-etx}: frames between STX (0x02) and ETX (0x03), as serial bridges send.
"""

from __future__ import annotations

from tcpcomm.framers.base import (
    DEFAULT_MAX_FRAME_LENGTH,
    BufferFramer,
    FramingError,
    checkMaxLength,
    frameTooLong,
)

__all__ = ["ETX", "STX", "StxEtxFramer"]

STX = 0x02
ETX = 0x03


class StxEtxFramer(BufferFramer):
    """
    Frames that are C{0x02 payload 0x03}.

    Bytes outside a frame (before its STX) are line noise: they are
    discarded and counted in L{discarded}. Inside a frame every byte but ETX
    is payload, STX included. Replies are wrapped the same way.

    @ivar maxLength: The longest payload, in bytes, without STX and ETX.
    @ivar discarded: How many bytes outside frames were discarded so far.
    """

    __slots__ = ("_scanned", "discarded", "maxLength")

    maxLength: int
    discarded: int
    _scanned: int

    def __init__(self, maxLength: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        """
        @raise ValueError: If C{maxLength} is negative.
        """
        super().__init__()
        self.maxLength = checkMaxLength(maxLength)
        self.discarded = 0
        # How far the held partial frame is known to hold no ETX.
        self._scanned = 1

    def cut(self, buffer: bytearray, frames: list[bytes]) -> int:
        """
        See L{BufferFramer.cut}. What is held is always a partial frame,
        from its STX on.
        """
        limit = self.maxLength
        size = len(buffer)
        position = 0
        scanFrom = self._scanned
        while position < size:
            if buffer[position] != STX:
                start = buffer.find(STX, position)
                if start == -1:
                    self.discarded += size - position
                    position = size
                    break
                self.discarded += start - position
                position = start
                scanFrom = position + 1
            stop = buffer.find(ETX, scanFrom)
            if stop == -1:
                if size - position - 1 > limit:
                    raise frameTooLong(self.maxLength)
                self._scanned = size - position
                return position
            if stop - position - 1 > limit:
                raise frameTooLong(self.maxLength)
            frames.append(bytes(buffer[position + 1 : stop]))
            position = stop + 1
            scanFrom = position + 1
        self._scanned = 1
        return position

    def encode(self, payload: bytes) -> bytes:
        """
        See L{Framer.encode}: STX, the payload, ETX.

        @raise FramingError: If C{payload} is over C{maxLength} or holds ETX.
        """
        if len(payload) > self.maxLength:
            raise frameTooLong(self.maxLength)
        if ETX in payload:
            raise FramingError("payload holds ETX (0x03)")
        return b"\x02" + payload + b"\x03"
