# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
C{line}: L{tcpcomm.framing.LineFramer} behind the L{Framer} interface.
"""

from __future__ import annotations

from tcpcomm.framers.base import FramingError
from tcpcomm.framing import DEFAULT_MAX_LINE_LENGTH, LineFramer

__all__ = ["LineAdapter"]


class LineAdapter:
    """
    Lines, as L{LineFramer} cuts them (LF or CRLF; one CR before the LF is
    dropped), as a L{Framer}: a line over C{maxLineLength} raises
    L{FramingError} instead of setting C{overflowed}.

    This is for code that takes any L{Framer}; the line protocol keeps
    using L{LineFramer} itself, with its C{ERROR line too long} reply.

    @ivar framer: The line framer.
    @ivar delimiter: What L{encode} appends: C{b"\\n"} or C{b"\\r\\n"}.
    """

    __slots__ = ("_ended", "delimiter", "framer")

    framer: LineFramer
    delimiter: bytes
    _ended: bool

    def __init__(
        self, maxLineLength: int = DEFAULT_MAX_LINE_LENGTH, delimiter: bytes = b"\n"
    ) -> None:
        """
        @raise ValueError: If C{maxLineLength} is less than 1 or
            C{delimiter} neither LF nor CRLF.
        """
        if delimiter not in (b"\n", b"\r\n"):
            raise ValueError(
                f"the line delimiter must be LF or CRLF, not {delimiter!r}"
            )
        if maxLineLength < 1:
            raise ValueError(f"max must be at least 1, not {maxLineLength}")
        self.framer = LineFramer(maxLineLength)
        self.delimiter = delimiter
        self._ended = False

    @property
    def buffered(self) -> int:
        """
        See L{Framer.buffered}: at most C{maxLineLength + 1}.
        """
        return self.framer.pendingLength()

    def feed(self, data: bytes) -> list[bytes]:
        """
        See L{Framer.feed}.
        """
        self._checkAlive()
        lines = self.framer.feed(data)
        if self.framer.overflowed:
            raise self._tooLong(lines)
        return lines

    def end(self) -> list[bytes]:
        """
        See L{Framer.end}: the unterminated last line, if any byte is held.
        """
        self._checkAlive()
        self._ended = True
        line = self.framer.finish()
        return [] if line is None else [line]

    def encode(self, payload: bytes) -> bytes:
        """
        See L{Framer.encode}: the line and the delimiter.

        @raise FramingError: If C{payload} holds an LF or is over
            C{maxLineLength}. (With an LF delimiter, a CR that ends
            C{payload} is dropped by the peer's line framer.)
        """
        if 0x0A in payload:
            raise FramingError("payload holds an LF")
        if len(payload) > self.framer.maxLineLength:
            raise self._tooLong([])
        return payload + self.delimiter

    def encodeAll(self, payloads: list[bytes]) -> bytes:
        """
        See L{Framer.encodeAll}.
        """
        return b"".join(map(self.encode, payloads))

    def _checkAlive(self) -> None:
        """
        @raise FramingError: If a line was too long or the input ended.
        """
        if self.framer.overflowed:
            raise self._tooLong([])
        if self._ended:
            raise FramingError("input already ended")

    def _tooLong(self, lines: list[bytes]) -> FramingError:
        """
        @return: The error for a line over C{maxLineLength}, after C{lines}.
        """
        return FramingError(
            f"line longer than max {self.framer.maxLineLength} bytes", lines
        )
