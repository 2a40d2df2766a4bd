# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
C{delimiter:HEX}: frames that end with a byte sequence (NUL, CR, CRLF...).
"""

from __future__ import annotations

from tcpcomm.framers.base import (
    DEFAULT_MAX_FRAME_LENGTH,
    BufferFramer,
    FramingError,
    checkMaxLength,
    frameTooLong,
)

__all__ = ["DelimiterFramer"]


class DelimiterFramer(BufferFramer):
    """
    Frames that end with a delimiter, which is not part of the payload.

    A frame ends at the first occurrence of the delimiter (as Netty's
    C{DelimiterBasedFrameDecoder} with one delimiter). The end of input ends
    the last frame, as it does a line. Replies get the delimiter appended.

    @ivar delimiter: The byte sequence that ends a frame.
    @ivar maxLength: The longest payload, in bytes, without the delimiter.
    """

    __slots__ = ("_scanned", "delimiter", "maxLength")

    delimiter: bytes
    maxLength: int
    _scanned: int

    def __init__(
        self, delimiter: bytes, maxLength: int = DEFAULT_MAX_FRAME_LENGTH
    ) -> None:
        """
        @raise ValueError: If C{delimiter} is empty or C{maxLength} is
            negative.
        """
        if not delimiter:
            raise ValueError("the delimiter must be at least one byte")
        super().__init__()
        self.delimiter = bytes(delimiter)
        self.maxLength = checkMaxLength(maxLength)
        # How many held bytes are known to start no delimiter.
        self._scanned = 0

    def cut(self, buffer: bytearray, frames: list[bytes]) -> int:
        """
        See L{BufferFramer.cut}.
        """
        delimiter = self.delimiter
        limit = self.maxLength
        if buffer.find(delimiter, self._scanned) == -1:
            self._checkTail(buffer)
            self._scanned = max(0, len(buffer) - len(delimiter) + 1)
            return 0
        # The held bytes hold no delimiter before the new ones, so splitting
        # them all from the start cuts at each first occurrence.
        parts = bytes(buffer).split(delimiter)
        tail = parts.pop()
        for index, part in enumerate(parts):
            if len(part) > limit:
                frames.extend(parts[:index])
                raise frameTooLong(self.maxLength)
        frames.extend(parts)
        self._checkTail(tail)
        self._scanned = max(0, len(tail) - len(delimiter) + 1)
        return len(buffer) - len(tail)

    def finish(self, rest: bytes) -> list[bytes]:
        """
        The end of input ends the last frame, if any bytes of it are held.
        """
        if len(rest) > self.maxLength:
            raise frameTooLong(self.maxLength)
        return [rest] if rest else []

    def encode(self, payload: bytes) -> bytes:
        """
        See L{Framer.encode}: the payload and the delimiter.

        @raise FramingError: If C{payload} is over C{maxLength}, or the
            delimiter would occur in the frame before its end (the payload
            holds it, or ends with the start of an overlapping one).
        """
        if len(payload) > self.maxLength:
            raise frameTooLong(self.maxLength)
        frame = payload + self.delimiter
        if frame.find(self.delimiter) != len(payload):
            raise FramingError(f"payload holds the delimiter 0x{self.delimiter.hex()}")
        return frame

    def _checkTail(self, tail: bytes | bytearray) -> None:
        """
        Raise if the unterminated bytes held prove their frame too long.

        They do unless a delimiter could still start within C{maxLength}
        bytes of the frame's start: at an offset whose rest of C{tail} is a
        proper prefix of the delimiter.
        """
        limit = self.maxLength
        if len(tail) <= limit:
            return
        delimiter = self.delimiter
        for start in range(max(0, len(tail) - len(delimiter) + 1), limit + 1):
            if delimiter.startswith(tail[start:]):
                return
        raise frameTooLong(self.maxLength)
