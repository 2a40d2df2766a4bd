# -*- test-case-name: tests.test_line -*-
"""
A line server: each line a client sends goes to a handler, and the handler's
reply goes back as a line.

Handlers are plain callables taking the line as C{bytes} and returning
C{bytes}, C{str} (sent as UTF-8), C{None} (no reply), a L{Deferred} of one of
those, or a coroutine returning one of those.  Replies go out in the order
the lines came in, even when handlers finish out of order, so clients may
pipeline.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeAlias

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tcpcomm.connection import ConnectionFactory, ConnectionProtocol
from tcpcomm.framing import DEFAULT_MAX_LINE_LENGTH, LineFramer

Reply: TypeAlias = "bytes | str | None"
HandlerResult: TypeAlias = (
    "bytes | str | Deferred[Any] | Coroutine[Any, Any, Any] | None"
)
Handler: TypeAlias = Callable[[bytes], HandlerResult]

DELIMITERS = {"lf": b"\n", "crlf": b"\r\n"}
"""
The reply delimiters a L{LineFactory} accepts, by name.
"""

DEFAULT_MAX_PENDING = 1024
"""
How many replies may wait for slow handlers on one connection before the
server stops reading more lines from it.
"""

INTERNAL_ERROR = b"ERROR internal error"
HANDLER_TIMEOUT = b"ERROR handler timed out"
IDLE_TIMEOUT = b"ERROR idle timeout"
TOO_SLOW = b"ERROR too slow"

DEFAULT_MAX_PENDING_BYTES = 1024 * 1024
"""
How many bytes of unasked lines (L{ConnectionProtocol.sendUnasked}) the
chat and relay modes let wait for a slow client by default.
"""


def echoLine(line: bytes) -> bytes:
    """
    The default handler: reply with the line itself.
    """
    return line


class _PendingReply:
    """
    A reply in the queue of replies waiting to go out in request order:
    either already known (C{done}) or waiting for a handler's Deferred.
    """

    __slots__ = ("deferred", "done", "reply", "timer")

    def __init__(self, reply: bytes | None = None, done: bool = True) -> None:
        self.done = done
        self.reply = reply
        self.deferred: Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None


class LineProtocol(ConnectionProtocol):
    """
    Split the client's bytes into lines, answer each with the handler's
    reply, in order.

    A line ends at LF; a CR just before the LF is dropped.  Replies end with
    the factory's delimiter.  Subclasses may override L{lineReceived}
    instead of giving the factory a handler.

    Failures never cost the client its connection: a handler that raises
    (or whose Deferred fails) is logged with its traceback and the client
    gets C{ERROR internal error} in that reply's place.  A line longer than
    the limit gets C{ERROR line too long (limit N bytes)} after the replies
    to the lines before it, and then the connection closes.  When the client
    half-closes, a last line without a delimiter is still handled, every
    pending reply is sent, and then the server closes.

    @ivar linesHandled: Complete lines handled on this connection.
    """

    factory: LineFactory
    linesHandled: int = 0

    # Per-connection state, as class defaults so that an idle connection
    # stores none of it (measured: this is most of a line connection's
    # memory).
    _pending: deque[_PendingReply] | tuple[()] = ()
    _backlog: list[bytes] | tuple[()] = ()
    _handling = False
    _heldForPending = False
    _wantClose = False
    _linger = False
    _lastWords: bytes | None = None

    def connectionMade(self) -> None:
        """
        Set up framing and the queue of pending replies.
        """
        factory = self.factory
        self._framer = LineFramer(factory.maxLineLength)
        self._delimiter = factory.delimiter
        self._maxPending = factory.maxPending
        super().connectionMade()

    def lineReceived(self, line: bytes) -> HandlerResult:
        """
        Answer one line.  By default, call the factory's handler.

        @param line: The line, without its delimiter.
        @return: The reply, in any form a handler may return.
        """
        return self.factory.handler(line)

    def dataReceived(self, data: bytes) -> None:
        """
        Frame C{data} into lines and answer them.
        """
        self.countIn(len(data))
        if self.lingering:
            return
        framer = self._framer
        lines = framer.feed(data)
        if lines:
            self._handleLines(lines)
        if framer.overflowed and not self._wantClose:
            self._lineTooLong()

    def inputEnded(self) -> None:
        """
        The client half-closed: handle a last unterminated line, then close
        once every pending reply is sent.
        """
        last = self._framer.finish()
        if last is not None:
            self._handleLines([last])
        self._wantClose = True
        self._finishAfterPending()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Cancel handlers still running: nobody is left to answer.
        """
        pending, self._pending = self._pending, ()
        self._backlog = ()
        super().connectionLost(reason)
        for slot in pending:
            if slot.timer is not None and slot.timer.active():
                slot.timer.cancel()
            if slot.deferred is not None and not slot.done:
                slot.deferred.cancel()

    def summary(self) -> str:
        """
        Describe this connection's traffic, lines included.
        """
        lines = self.linesHandled
        return f"{super().summary()}, {lines} line{'' if lines == 1 else 's'}"

    def _handleLines(self, lines: list[bytes]) -> None:
        """
        Answer C{lines} in order.  Synchronous replies to them go out in one
        write.  Once C{maxPending} replies wait on handlers, the remaining
        lines wait (unhandled, with reading paused) until some are sent, so
        one read full of lines cannot start more than C{maxPending} handlers.
        """
        if self._backlog or self._handling or len(self._pending) >= self._maxPending:
            self._backlog = [*self._backlog, *lines]
            self._holdWhileFull()
            return
        self._handling = True
        self.touch()
        delimiter = self._delimiter
        maxPending = self._maxPending
        ready: list[bytes] = []
        handled = 0
        for line in lines:
            handled += 1
            try:
                result = self.lineReceived(line)
            except Exception:
                self._log.failure(
                    "Handler failed on a line from {peer}", peer=self.peer
                )
                result = INTERNAL_ERROR
            reply: bytes
            if type(result) is bytes:
                reply = result
            elif result is None:
                continue
            elif isinstance(result, (bytes, str)):
                reply = _toBytes(result)
            else:
                if ready:
                    self.send(b"".join(ready))
                    ready = []
                self._await(result)
                if len(self._pending) >= maxPending:
                    self._backlog = [*lines[handled:], *self._backlog]
                    break
                continue
            if self._pending:
                self._pending.append(_PendingReply(reply))
            else:
                ready.append(reply)
                ready.append(delimiter)
        if ready:
            self.send(b"".join(ready))
        self.linesHandled += handled
        self.factory.stats.linesHandled += handled
        self._handling = False
        if self._backlog and len(self._pending) < maxPending:
            # Lines arrived while we were busy here, and there is room.
            waiting, self._backlog = self._backlog, ()
            self._handleLines(list(waiting))
            return
        self._holdWhileFull()
        self._finishAfterPending()

    def _holdWhileFull(self) -> None:
        """
        Keep reading paused exactly while C{maxPending} replies wait or lines
        wait to be handled.
        """
        full = bool(self._backlog) or len(self._pending) >= self._maxPending
        if full != self._heldForPending:
            self._heldForPending = full
            if full:
                self.holdReading()
            else:
                self.releaseReading()

    def _await(self, result: object) -> None:
        """
        Queue a reply slot for an asynchronous (or malformed) handler result.
        """
        slot = _PendingReply(done=False)
        if not self._pending:
            # Made on first use: most connections never wait on a handler.
            self._pending = deque()
        self._pending.append(slot)
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if not isinstance(result, Deferred):
            self._log.error(
                "Handler returned {result!r} for a line from {peer}; expected"
                " bytes, str, None, a Deferred or a coroutine",
                result=result,
                peer=self.peer,
            )
            self._settle(INTERNAL_ERROR, slot)
            return
        slot.deferred = result
        result.addCallbacks(
            self._settle, self._handlerFailed, callbackArgs=(slot,), errbackArgs=(slot,)
        )
        timeout = self.factory.handlerTimeout
        if timeout and not slot.done:
            slot.timer = self.factory.clock.callLater(
                timeout, self._handlerTimedOut, slot
            )

    def _handlerFailed(self, failure: Failure, slot: _PendingReply) -> None:
        if not (self.disconnected or slot.done or failure.check(CancelledError)):
            self._log.failure(
                "Handler failed on a line from {peer}", failure, peer=self.peer
            )
        self._settle(INTERNAL_ERROR, slot)

    def _handlerTimedOut(self, slot: _PendingReply) -> None:
        """
        A handler took longer than the factory's C{handlerTimeout}: answer
        C{ERROR handler timed out} in its place and cancel it.
        """
        slot.timer = None
        self.factory.stats.handlerTimeouts += 1
        self._log.warn(
            "Handler for a line from {peer} took over {timeout} s; cancelled",
            peer=self.peer,
            timeout=self.factory.handlerTimeout,
        )
        self._settle(HANDLER_TIMEOUT, slot)
        if slot.deferred is not None:
            slot.deferred.cancel()

    def _settle(self, result: object, slot: _PendingReply) -> None:
        """
        A handler finished: record its reply and send every reply that is now
        at the head of the queue.
        """
        if slot.done:
            # Already answered: the handler timed out before finishing.
            return
        if slot.timer is not None and slot.timer.active():
            slot.timer.cancel()
        try:
            slot.reply = None if result is None else _toBytes(result)
        except TypeError:
            self._log.error(
                "Handler gave {result!r} for a line from {peer}; expected"
                " bytes, str or None",
                result=result,
                peer=self.peer,
            )
            slot.reply = INTERNAL_ERROR
        slot.done = True
        self._flushPending()

    def _flushPending(self) -> None:
        """
        Send every reply now at the head of the queue; then, with room in the
        queue again, handle lines that were waiting for it.
        """
        pending = self._pending
        if not pending or not pending[0].done:
            return
        assert isinstance(pending, deque)
        delimiter = self._delimiter
        out: list[bytes] = []
        while pending and pending[0].done:
            reply = pending.popleft().reply
            if reply is not None:
                out.append(reply)
                out.append(delimiter)
        if out:
            self.send(b"".join(out))
        if self._backlog and not self._handling and len(pending) < self._maxPending:
            waiting, self._backlog = self._backlog, ()
            self._handleLines(list(waiting))
        else:
            self._holdWhileFull()
        self._finishAfterPending()

    def _lineTooLong(self) -> None:
        limit = self._framer.maxLineLength
        self._log.warn(
            "Line from {peer} longer than {limit} bytes; closing",
            peer=self.peer,
            limit=limit,
        )
        self._closeWith(b"ERROR line too long (limit %d bytes)" % (limit,))

    def isBusy(self) -> bool:
        """
        Busy while replies wait on handlers: a client waiting for a slow
        handler is not idle (the handler timeout covers handlers that hang).
        """
        return bool(self._pending)

    def refuse(self, reason: str) -> None:
        """
        Over a connection limit: say so in an C{ERROR} line and close.
        """
        self.send(b"ERROR " + reason.encode() + self._delimiter)
        self.lingeringClose()

    def tooSlow(self) -> None:
        """
        Too slow to read what L{sendUnasked} has for it: after the replies
        already due, say C{ERROR too slow} and close.
        """
        self._closeWith(TOO_SLOW)

    def idleTimedOut(self) -> None:
        """
        Idle too long: say so in an C{ERROR} line and close.
        """
        self._closeWith(IDLE_TIMEOUT)

    def _closeWith(self, lastWords: bytes) -> None:
        """
        Read no more; after the replies to the lines already read, send
        C{lastWords} (an C{ERROR} line) and close, lingering.
        """
        self.holdReading()
        self._lastWords = lastWords
        self._wantClose = True
        self._linger = True
        self._finishAfterPending()

    def shutDown(self) -> None:
        """
        The server is shutting down: read no more lines, send the replies
        still pending, then close.
        """
        if self.closing:
            return
        self.holdReading()
        self._wantClose = True
        self._linger = True
        self._finishAfterPending()

    def _finishAfterPending(self) -> None:
        """
        Close if a close is wanted and no reply is pending any more.
        """
        if self._handling:
            return
        if self._wantClose and not self._pending and not self._backlog:
            if self._lastWords is not None:
                self.send(self._lastWords + self._delimiter)
                self._lastWords = None
            if self._linger:
                self.lingeringClose()
            else:
                self.closeWhenFlushed()


def _toBytes(reply: object) -> bytes:
    if isinstance(reply, bytes):
        return reply
    if isinstance(reply, str):
        return reply.encode("utf-8")
    raise TypeError(f"not a reply: {reply!r}")


class LineFactory(ConnectionFactory):
    """
    Build L{LineProtocol}s that share one handler and one set of limits.

    @ivar handler: Called with each line; see L{tcpcomm.line}.
    @ivar delimiter: Appended to every reply: C{b"\\n"} or C{b"\\r\\n"}.
    @ivar maxLineLength: The longest line accepted, in bytes, delimiter not
        counted.
    @ivar maxPending: How many replies may wait for slow handlers on one
        connection before reading from it pauses.
    @ivar handlerTimeout: Seconds a handler may take before its reply is
        C{ERROR handler timed out} (and it is cancelled), or C{None}.

    Connection limits and the idle timeout are those of
    L{ConnectionFactory}; all are off unless given.
    """

    protocol = LineProtocol

    def __init__(
        self,
        handler: Handler = echoLine,
        *,
        delimiter: bytes = b"\n",
        maxLineLength: int = DEFAULT_MAX_LINE_LENGTH,
        maxPending: int = DEFAULT_MAX_PENDING,
        handlerTimeout: float | None = None,
        clock: IReactorTime | None = None,
        idleTimeout: float | None = None,
        maxConnections: int | None = None,
        maxConnectionsPerHost: int | None = None,
        maxPendingBytes: int | None = None,
    ) -> None:
        super().__init__(
            clock=clock,
            idleTimeout=idleTimeout,
            maxConnections=maxConnections,
            maxConnectionsPerHost=maxConnectionsPerHost,
            maxPendingBytes=maxPendingBytes,
        )
        if handlerTimeout is not None and handlerTimeout < 0:
            raise ValueError(
                f"handlerTimeout must not be negative, not {handlerTimeout}"
            )
        self.handlerTimeout = handlerTimeout or None
        if delimiter not in DELIMITERS.values():
            raise ValueError(
                f"delimiter must be b'\\n' or b'\\r\\n', not {delimiter!r}"
            )
        if maxLineLength < 1:
            raise ValueError(f"maxLineLength must be at least 1, not {maxLineLength}")
        if maxPending < 1:
            raise ValueError(f"maxPending must be at least 1, not {maxPending}")
        self.handler = handler
        self.delimiter = delimiter
        self.maxLineLength = maxLineLength
        self.maxPending = maxPending
