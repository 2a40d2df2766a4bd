# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
C{netstring}: C{5:hello,}, as Twisted's C{NetstringReceiver} reads and
writes it.
"""

from __future__ import annotations

from tcpcomm.framers.base import (
    DEFAULT_MAX_FRAME_LENGTH,
    BufferFramer,
    FramingError,
    checkMaxLength,
    frameTooLong,
)

__all__ = ["NetstringFramer"]

COLON = 0x3A
COMMA = 0x2C
ZERO = 0x30


class NetstringFramer(BufferFramer):
    """
    Netstrings: the payload's length in decimal, C{:}, the payload, C{,}.

    As C{NetstringReceiver}: the length has no sign, no spaces and no
    leading zero (C{0:,} is the empty netstring, C{05:hello,} is an error);
    a length over C{maxLength} is an error as soon as its digits prove it,
    and so is anything but a comma after the payload.

    @ivar maxLength: The longest payload, in bytes.
    """

    __slots__ = ("_digits", "maxLength")

    maxLength: int
    _digits: int

    def __init__(self, maxLength: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        """
        @raise ValueError: If C{maxLength} is negative.
        """
        super().__init__()
        self.maxLength = checkMaxLength(maxLength)
        # The most digits a length within maxLength has.
        self._digits = len(str(maxLength))

    def cut(self, buffer: bytearray, frames: list[bytes]) -> int:
        """
        See L{BufferFramer.cut}.
        """
        size = len(buffer)
        position = 0
        while position < size:
            colon = buffer.find(COLON, position, position + self._digits + 1)
            end = position + self._digits + 1 if colon == -1 else colon
            digits = buffer[position:end]
            length = self._length(digits, complete=colon != -1)
            if colon == -1:
                break
            end = colon + 1 + length
            if end >= size:
                break
            if buffer[end] != COMMA:
                raise FramingError("netstring not terminated by a comma")
            frames.append(bytes(buffer[colon + 1 : end]))
            position = end + 1
        return position

    def _length(self, digits: bytearray, complete: bool) -> int:
        """
        Check a netstring's length, or what has come of it.

        @param digits: The bytes before the colon, or all there is yet.
        @param complete: Whether the colon followed C{digits}.
        @return: The length, or 0 for an incomplete one that may yet be good.
        @raise FramingError: If C{digits} are not (the start of) a length
            within C{maxLength}.
        """
        if not digits:
            if complete:
                raise FramingError("netstring does not start with a length")
            return 0
        if not (digits.isdigit()):
            raise FramingError("netstring does not start with a length")
        if digits[0] == ZERO and len(digits) > 1:
            raise FramingError("netstring length has a leading zero")
        if len(digits) > self._digits or int(digits) > self.maxLength:
            raise frameTooLong(self.maxLength)
        return int(digits)

    def encode(self, payload: bytes) -> bytes:
        """
        See L{Framer.encode}: C{LEN:payload,}.

        @raise FramingError: If C{payload} is over C{maxLength}.
        """
        if len(payload) > self.maxLength:
            raise frameTooLong(self.maxLength)
        return b"%d:%s," % (len(payload), payload)
