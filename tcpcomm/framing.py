# -*- test-case-name: tests.test_framing -*-
"""
Line framing for a byte stream, with a bound on line length.

Pure and synchronous: no Twisted, no I/O. A protocol feeds it whatever
C{dataReceived} got and hands on the complete lines it returns.
"""

DEFAULT_MAX_LINE_LENGTH = 65536
"""
The default longest line, in bytes, not counting the line ending.
"""


# Cost and denial-of-service behaviour of the buffering:
#
# - Nothing is held, not even an empty buffer, until a chunk ends in an
#   incomplete line: most reads of a line protocol end at a line end, and an
#   idle connection's framer should cost no more than its own few fields.
# - The bytes of an incomplete line are held in one bytearray. Appending to it
#   is amortized O(bytes appended) (CPython over-allocates), and the held
#   bytes are copied out once, when the LF that ends their line arrives. So
#   the total work is O(bytes fed) however the peer fragments its data: a long
#   line that arrives one byte at a time costs the same as one that arrives
#   whole, unlike C{buffer += data} on bytes, which is quadratic.
# - A bytearray, not a list of chunks: a list holds one object per chunk, so a
#   peer sending one byte per TCP segment would make it hold ~50 bytes of
#   memory per byte of line; the bytearray holds ~1 (measured, CPython 3.11).
# - Bytes are looked for as ints (C{0x0D in data}): a memchr, where
#   C{b"\r" in data} goes through the buffer protocol first, five times the
#   instructions for a 64-byte read.
# - A chunk with LFs in it is scanned a constant number of times, in C
#   (C{replace} of CRLF, C{split}, C{len} of each part): no per-byte or
#   per-line Python loop unless a part is over the limit.
# - Held data never exceeds maxLineLength + 1 bytes (the + 1 being a CR that
#   may yet start a CRLF): once the held bytes prove the line too long, they
#   are dropped and the framer discards everything after. A chunk handed to
#   feed() is split whole, so its cost is bounded by the transport's read
#   size, not by maxLineLength.


class LineFramer:
    """
    Split a byte stream into lines.

    A line ends at LF (C{b"\\n"}); one CR immediately before that LF is
    dropped, so CRLF and LF peers both work. Lone CRs elsewhere are data, and
    so are any other bytes (NUL, invalid UTF-8).

    @ivar maxLineLength: The longest line accepted, in bytes, not counting
        the LF nor the CR dropped before it.
    @ivar overflowed: C{True} once a line longer than C{maxLineLength} was
        seen. From then on every input is discarded: L{feed} returns C{[]}
        and L{finish} returns C{None}.
    """

    __slots__ = ("_buffer", "maxLineLength", "overflowed")

    maxLineLength: int
    overflowed: bool
    _buffer: bytearray | bytes

    def __init__(self, maxLineLength: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        """
        @param maxLineLength: See L{maxLineLength}.
        @raise ValueError: If C{maxLineLength} is less than 1.
        """
        if maxLineLength < 1:
            raise ValueError(f"maxLineLength must be at least 1, not {maxLineLength}")
        self.maxLineLength = maxLineLength
        self.overflowed = False
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take the next bytes of the stream.

        Bytes after the last LF are held for the next call. If a line is too
        long, L{overflowed} becomes C{True}, the lines before it are returned,
        and it and everything after it are discarded. A line with no LF yet
        counts as too long as soon as the bytes held for it prove that it
        must be.

        @param data: The next bytes of the stream, of any length.
        @return: The complete lines, in order, without their LF nor the CR
            dropped before it.
        """
        if self.overflowed or not data:
            return []
        if (
            data[-1] == 0x0A
            and not self._buffer
            and len(data) <= self.maxLineLength
            and 0x0D not in data
        ):
            # The usual read: whole lines, LF only, none of them too long.
            lines = data.split(b"\n")
            lines.pop()
            return lines
        if 0x0A not in data:
            self._hold(data)
            return []
        # Dropping one CR before each LF is one C-level pass: each CRLF holds
        # its own LF, so the occurrences cannot overlap, and CR CR LF keeps
        # one CR. A CR at the very end is left alone: it is in the tail.
        startsWithLF = data[0] == 0x0A
        if 0x0D in data:  # a scan, cheaper than a copy when there is none
            data = data.replace(b"\r\n", b"\n")
        lines = data.split(b"\n")
        tail = lines.pop()
        buffer = self._buffer
        size = len(data) + len(buffer)
        if buffer:
            # A held CR directly before this LF ends a CRLF split across calls.
            if startsWithLF and buffer[-1] == 0x0D:
                buffer = buffer[:-1]
            lines[0] = b"".join((buffer, lines[0]))
            self._buffer = b""
        limit = self.maxLineLength
        # No line can be longer than everything there is.
        if size > limit and max(map(len, lines)) > limit:
            for index, line in enumerate(lines):
                if len(line) > limit:
                    self._overflow()
                    return lines[:index]
        if tail:
            self._hold(tail)
        return lines

    def finish(self) -> bytes | None:
        """
        End the stream, as when the peer half-closes the connection.

        The end of the stream ends the held line as an LF would, so one CR at
        its end is dropped. The framer is empty afterwards.

        @return: The held line, if at least one byte is held and the framer
            has not overflowed; else C{None}. A held lone CR gives C{b""}.
        """
        buffer = self._buffer
        if self.overflowed or not buffer:
            return None
        self._buffer = b""
        line = bytes(buffer)
        if line[-1] == 0x0D:
            line = line[:-1]
        if len(line) > self.maxLineLength:
            # Only reachable if maxLineLength was lowered while bytes were held.
            self._overflow()
            return None
        return line

    def pendingLength(self) -> int:
        """
        @return: How many bytes are held for the incomplete line: at most
            C{maxLineLength + 1}.
        """
        return len(self._buffer)

    def _hold(self, data: bytes) -> None:
        """
        Hold bytes of an incomplete line, or overflow if they prove it too long.

        @param data: Bytes with no LF in them; not empty.
        """
        length = len(self._buffer) + len(data)
        limit = self.maxLineLength
        # limit + 1 bytes ending in CR are within the limit if an LF follows.
        if length > limit and (length > limit + 1 or data[-1] != 0x0D):
            self._overflow()
        elif self._buffer:
            self._buffer += data
        else:
            self._buffer = bytearray(data)

    def _overflow(self) -> None:
        """
        Note that a line was too long, and drop what is held.
        """
        self.overflowed = True
        self._buffer = b""
