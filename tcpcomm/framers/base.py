# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
What every framer is: the L{Framer} interface, L{FramingError}, and
L{BufferFramer}, the base that the binary and delimiter framers share.

Pure and synchronous: no Twisted, no I/O.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

__all__ = [
    "DEFAULT_MAX_FRAME_LENGTH",
    "BufferFramer",
    "Framer",
    "FramingError",
    "frameTooLong",
]

DEFAULT_MAX_FRAME_LENGTH = 65536
"""
The default C{max} of every framing that has one, in bytes.
"""


def checkMaxLength(maxLength: int) -> int:
    """
    Return C{maxLength}, a framing's C{max}, if it is one.

    @raise ValueError: If it is negative.
    """
    if maxLength < 0:
        raise ValueError(f"max must not be negative, not {maxLength}")
    return maxLength


class FramingError(ValueError):
    """
    The input cannot be cut into frames, or a reply cannot be framed.

    @ivar reason: What is wrong, in one line, for a log.
    @ivar frames: The complete frames that the failing L{Framer.feed} cut
        before the fault, in order: the caller handles them (and answers
        them) before it acts on the error. Empty when raised elsewhere.
    """

    reason: str
    frames: list[bytes]

    def __init__(self, reason: str, frames: list[bytes] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.frames = [] if frames is None else frames


class Framer(Protocol):
    """
    Cut a byte stream into frames, and frame replies.

    A framer is fed the bytes of one direction of one connection, in the
    chunks the transport read them in; it gives the same frames however the
    stream is chunked. Once it has raised L{FramingError} from L{feed} or
    L{end}, it is dead: every later L{feed} or L{end} raises again.
    """

    @property
    def buffered(self) -> int:
        """
        How many bytes are held now for an incomplete frame: never more than
        the framing's C{max} plus its header.
        """

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take the next bytes of the stream.

        @return: The payloads of the frames completed, in order.
        @raise FramingError: If the input is corrupt or a frame is over the
            framing's C{max}; its C{frames} holds the frames before the fault.
        """

    def end(self) -> list[bytes]:
        """
        End the input, as when the peer half-closes.

        @return: For framings that end frames with a delimiter, the
            unterminated last frame, if any bytes of it are held; else
            nothing.
        @raise FramingError: If the input ended inside a frame of a framing
            that cannot end one there (a length, netstring, STX/ETX, fixed or
            MODBUS frame).
        """

    def encode(self, payload: bytes) -> bytes:
        """
        Frame one reply.

        @return: The bytes to write, which this framing cuts back into
            C{payload} (or, where the framing hands on whole frames, into
            the same frame).
        @raise FramingError: If C{payload} cannot be framed: over C{max}, too
            long for the length field, containing the delimiter, or (where
            replies are whole frames) not a consistent frame.
        """

    def encodeAll(self, payloads: list[bytes]) -> bytes:
        """
        Frame several replies, in order, as one block of bytes: what
        L{encode} gives for each, joined.

        @raise FramingError: If one cannot be framed.
        @raise TypeError: If one is not bytes-like.
        """


class BufferFramer:
    """
    The bookkeeping every framer needs: one buffer, death after an error.

    Subclasses implement L{cut} and, if the end of input may end a frame,
    L{finish}.

    The held bytes are one C{bytearray}: appending is amortized O(bytes
    appended) and deleting the consumed front is O(1) in CPython, so the work
    is O(bytes fed) however the peer fragments its data. Each subclass's
    L{cut} consumes or rejects bytes as soon as they prove a frame complete,
    oversized or corrupt, so what stays held is bounded by C{max} plus a
    header.

    A subclass that sets L{cutsBytes} also implements L{cutBytes}: then the
    usual read, one that arrives while nothing is held, is cut straight from
    its C{bytes} (each payload one slice of it, not a copy into the buffer
    and a copy out again), and only its incomplete tail is copied into the
    buffer.
    """

    __slots__ = ("_buffer", "_failure")

    _buffer: bytearray
    _failure: str | None

    cutsBytes: ClassVar[bool] = False
    """
    Whether this class implements L{cutBytes}.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._failure = None

    @property
    def buffered(self) -> int:
        """
        See L{Framer.buffered}.
        """
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """
        See L{Framer.feed}.
        """
        if self._failure is not None:
            raise FramingError(self._failure)
        if not data:
            return []
        buffer = self._buffer
        frames: list[bytes] = []
        try:
            if buffer or not self.cutsBytes or data.__class__ is not bytes:
                buffer += data
                used = self.cut(buffer, frames)
                if used:
                    del buffer[:used]
            else:
                used = self.cutBytes(data, frames)
                if not used:
                    buffer += data
                elif used < len(data):
                    buffer += memoryview(data)[used:]
        except FramingError as error:
            self._fail(error.reason)
            error.frames = frames
            raise
        return frames

    def end(self) -> list[bytes]:
        """
        See L{Framer.end}.
        """
        if self._failure is not None:
            raise FramingError(self._failure)
        rest = bytes(self._buffer)
        self._fail("input already ended")
        try:
            return self.finish(rest)
        except FramingError as error:
            self._failure = error.reason
            raise

    def cut(self, buffer: bytearray, frames: list[bytes]) -> int:
        """
        Cut the complete frames at the front of the held bytes.

        @param buffer: Everything held, the newest bytes last; not empty.
        @param frames: Where to append the payloads cut, in order.
        @return: How many bytes at the front of C{buffer} to drop: the
            frames cut and anything discarded.
        @raise FramingError: If the held bytes prove the input corrupt or a
            frame over C{max}.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement cut")

    def cutBytes(self, data: bytes, frames: list[bytes]) -> int:
        """
        Cut the complete frames at the front of a read that arrived while
        nothing was held, as L{cut} would cut them from a buffer holding
        just C{data}; only called when L{cutsBytes} is set.

        @param data: The read; not empty.
        @param frames: Where to append the payloads cut, in order.
        @return: How many bytes at the front of C{data} were used up: the
            rest is held.
        @raise FramingError: As L{cut}.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement cutBytes")

    def finish(self, rest: bytes) -> list[bytes]:
        """
        End the input, with C{rest} still held.

        By default the end of input cannot end a frame.

        @return: The last frame, if the end of input ends one.
        @raise FramingError: If C{rest} is a partial frame.
        """
        if rest:
            held = len(rest)
            raise FramingError(
                f"input ended inside a frame ({held} byte{'' if held == 1 else 's'}"
                " held)"
            )
        return []

    def encodeAll(self, payloads: list[bytes]) -> bytes:
        """
        See L{Framer.encodeAll}: L{encode} for each, joined.
        """
        return b"".join(map(self.encode, payloads))

    def encode(self, payload: bytes) -> bytes:
        """
        See L{Framer.encode}; subclasses implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement encode")

    def _fail(self, reason: str) -> None:
        """
        Die: drop what is held, and refuse all input from now on.
        """
        self._failure = reason
        self._buffer = bytearray()


def frameTooLong(maxLength: int) -> FramingError:
    """
    @return: The error for a frame longer than C{maxLength} bytes.
    """
    return FramingError(f"frame longer than max {maxLength} bytes")
