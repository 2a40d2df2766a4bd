# -*- test-case-name: tests.test_replies -*-
"""
How a handler's results become bytes on the wire, framing by framing.

A handler answers a message with bytes, C{str}, C{None} or something that is
no reply at all; it may fail or time out.  L{ReplyFramer} turns each of
these into what the server sends: the reply framed (a line with its
delimiter, a length-prefixed frame...), or the framing's answer to a failure
(an C{ERROR} line, a MODBUS exception response), or, where the framing has
no such answer, L{CannotAnswer}, on which the server closes the connection.

Pure and synchronous: no Twisted, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from tcpcomm.framers.base import FramingError
from tcpcomm.framers.modbus import (
    GATEWAY_TARGET_FAILED,
    SERVER_DEVICE_FAILURE,
    exceptionResponse,
)

__all__ = [
    "FAILED",
    "HANDLER_TIMEOUT",
    "INTERNAL_ERROR",
    "TIMED_OUT",
    "UNANSWERABLE",
    "BadReply",
    "CannotAnswer",
    "Failed",
    "ReplyFramer",
    "Unanswerable",
    "toBytes",
]

INTERNAL_ERROR = b"ERROR internal error"
HANDLER_TIMEOUT = b"ERROR handler timed out"


class Failed:
    """
    The result of a handler that raised (or timed out): its message is
    answered with the framing's failure reply.

    @ivar timedOut: Whether it timed out, rather than failed.
    """

    __slots__ = ("timedOut",)

    def __init__(self, timedOut: bool) -> None:
        self.timedOut = timedOut

    def __repr__(self) -> str:
        return "TIMED_OUT" if self.timedOut else "FAILED"


FAILED = Failed(False)
TIMED_OUT = Failed(True)


class Unanswerable:
    """
    The type of L{UNANSWERABLE}.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNANSWERABLE"


UNANSWERABLE = Unanswerable()
"""
What a handler (or L{LineProtocol.lineReceived<tcpcomm.line.LineProtocol>})
returns for a message that the framing gives no way to answer (a relay
refusing a binary frame): the replies before it go out, then the connection
closes.
"""


class CannotAnswer(Exception):
    """
    The framing has no way to answer this message: the connection must close
    after the replies before it.
    """


class BadReply(Exception):
    """
    A handler's result is no reply the framing can send; the message is
    answered as a failure (L{ReplyFramer.failure}).

    @ivar reason: What is wrong, in one line, for a log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def toBytes(reply: object) -> bytes:
    """
    A reply as bytes: C{str} as UTF-8, other bytes-like objects as they are.

    @raise TypeError: If C{reply} is none of these.
    """
    if isinstance(reply, bytes):
        return reply
    if isinstance(reply, str):
        return reply.encode("utf-8")
    if isinstance(reply, (bytearray, memoryview)):
        return bytes(reply)
    raise TypeError(f"not a reply: {reply!r}")


class ReplyFramer:
    """
    Frame one factory's replies: lines (C{encode} is C{None}) get the
    delimiter; other framings their framer's C{encode}.

    @ivar delimiter: What ends a line reply.
    @ivar encode: Frames one reply payload; C{None} for lines.
    @ivar encodeAll: Frames several as one block; C{None} for lines.
    @ivar modbus: Whether replies are MODBUS ADUs, which must carry their
        request's transaction id, and whose failures have exception
        responses.
    """

    __slots__ = ("delimiter", "encode", "encodeAll", "modbus")

    def __init__(
        self,
        delimiter: bytes = b"\n",
        encode: Callable[[bytes], bytes] | None = None,
        encodeAll: Callable[[list[bytes]], bytes] | None = None,
        modbus: bool = False,
    ) -> None:
        self.delimiter = delimiter
        self.encode = encode
        self.encodeAll = encodeAll
        self.modbus = modbus

    @property
    def inBand(self) -> bool:
        """
        Whether errors can be told in band, as C{ERROR} lines (lines only).
        """
        return self.encode is None

    def join(self, results: list[object]) -> bytes | None:
        """
        Frame and join C{results}, all in C calls, if every one is bytes that
        the framing takes.

        @return: The bytes to send, or C{None} if one result is not (C{None},
            a Deferred, a coroutine, a reply too long...) or each must be
            checked against its request (MODBUS): then see L{wire}.
        """
        if self.modbus:
            return None
        if self.encode is None:
            results.append(b"")
            try:
                return self.delimiter.join(results)  # type: ignore[arg-type]
            except TypeError:
                return None
            finally:
                results.pop()
        assert self.encodeAll is not None
        try:
            return self.encodeAll(results)  # type: ignore[arg-type]
        except Exception:
            return None

    def wire(self, result: object, request: bytes) -> bytes | None:
        """
        Frame a handler's C{result} for C{request}.

        @return: The bytes to send; C{None} for no reply.
        @raise BadReply: If C{result} is no reply this framing can send.
        @raise CannotAnswer: If C{result} is L{UNANSWERABLE}, or a failure
            this framing has no answer for.
        """
        if result is None:
            return None
        if result is UNANSWERABLE:
            raise CannotAnswer()
        if isinstance(result, Failed):
            return self.failure(request, result.timedOut)
        try:
            payload = toBytes(result)
        except TypeError:
            raise BadReply(
                f"handler gave {result!r}; expected bytes, str, None,"
                " a Deferred or a coroutine"
            ) from None
        encode = self.encode
        if encode is None:
            return payload + self.delimiter
        try:
            wire = encode(payload)
        except FramingError as error:
            raise BadReply(error.reason) from None
        if self.modbus and wire[:2] != request[:2]:
            raise BadReply(
                f"transaction id {wire[:2].hex()} is not the request's"
                f" {request[:2].hex()}"
            )
        return wire

    def failure(self, request: bytes, timedOut: bool) -> bytes:
        """
        The framing's answer to C{request} when its handler failed (or gave
        a bad reply) or timed out: an C{ERROR} line, or a MODBUS exception
        response (0x04, server device failure; 0x0B, gateway target device
        failed to respond).

        @raise CannotAnswer: If the framing has none.
        """
        if self.encode is None:
            return (HANDLER_TIMEOUT if timedOut else INTERNAL_ERROR) + self.delimiter
        if self.modbus:
            code = GATEWAY_TARGET_FAILED if timedOut else SERVER_DEVICE_FAILURE
            try:
                return self.encode(exceptionResponse(request, code))
            except (ValueError, IndexError):
                pass
        raise CannotAnswer()

    def errorLine(self, text: bytes) -> bytes | None:
        """
        An C{ERROR} line, framed, if the framing can tell errors in band.

        @return: The line with its delimiter; C{None} for binary framings.
        """
        return text + self.delimiter if self.encode is None else None
