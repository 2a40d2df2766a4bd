# -*- test-case-name: tests.test_line -*-
"""
A line server: each line a client sends goes to a handler, and the handler's
reply goes back as a line.

Handlers are plain callables taking the line as C{bytes} and returning
C{bytes} (or another bytes-like C{bytearray} or C{memoryview}), C{str} (sent
as UTF-8), C{None} (no reply), a L{Deferred} of one of those, or a coroutine
returning one of those.  Replies go out in the order
the lines came in, even when handlers finish out of order, so clients may
pipeline.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeAlias

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tcpcomm.connection import (
    _ACTIVE,
    _CLOSING,
    _HANDLING,
    _LINGERING,
    SUBCLASS_FLAGS,
    ConnectionFactory,
    ConnectionProtocol,
    _Extra,
)
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

HANDLERS_PER_TURN = 16
"""
How many handlers that do not answer at once (Deferreds, coroutines) one
connection may start before it lets the reactor turn: the rest of its lines
wait, unhandled and with reading paused, for the next turn (or for its
pending replies to drain).  Without it, a connection keeps up to
C{maxPending} such handlers going, each finishing handler starting the next
in the same reactor turn, and a few hundred busy clients make one turn last
seconds: timers, signals (SIGTERM) and other clients wait that long.
"""

DEFAULT_MAX_PENDING_BYTES = 1024 * 1024
"""
How many bytes of unasked lines (L{ConnectionProtocol.sendUnasked}) the
chat and relay modes let wait for a slow client by default.
"""


echoLine: Callable[[bytes], bytes] = bytes.__bytes__
"""
The default handler: reply with the line itself.

C{bytes.__bytes__} returns the very bytes object it is given (a line is
always exactly C{bytes}), and being C it is called without a Python frame:
about 320 instructions less per line than C{def echoLine(line): return
line}, a sixth of a 16-line read.
"""


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


_NO_PENDING: deque[_PendingReply] = deque(maxlen=0)
"""
Stands for an empty reply queue in the hot loop: empty, so never appended
to (and with C{maxlen=0} it would keep nothing if it were).
"""


class _LineExtra(_Extra):
    """
    What a line connection keeps only once it needs it (see L{_Extra}).

    @ivar pending: Replies waiting, in request order, while one waits for a
        handler; C{()} when none waits.
    @ivar backlog: Lines read but not yet handled, waiting for room among
        the pending replies.
    @ivar lastWords: The C{ERROR} line to send before closing.
    @ivar started: How many handlers that did not answer at once it started
        since its pending replies last drained or the reactor last turned.
    @ivar nextTurn: The call that handles the lines left for the next turn.
    """

    __slots__ = ("backlog", "lastWords", "nextTurn", "pending", "started")

    def __init__(self) -> None:
        super().__init__()
        self.pending: deque[_PendingReply] | tuple[()] = ()
        self.backlog: list[bytes] | tuple[()] = ()
        self.lastWords: bytes | None = None
        self.started = 0
        self.nextTurn: IDelayedCall | None = None


# LineProtocol's own flags (see tcpcomm.connection._flags).
_WANT_CLOSE = SUBCLASS_FLAGS
_LINGER = SUBCLASS_FLAGS << 1
_HELD_FOR_PENDING = SUBCLASS_FLAGS << 2
_PACED = SUBCLASS_FLAGS << 3
"""
Set on each connection a paced factory makes: a flag set keeps its reads off
L{LineProtocol.dataReceived}'s fast path, which would start a whole read's
handlers at once; nothing tests it.
"""
LINE_SUBCLASS_FLAGS = SUBCLASS_FLAGS << 4
"""
The lowest bit of the flags that subclasses of L{LineProtocol} may use.
"""
_NOT_PLAIN = _HANDLING | _WANT_CLOSE | _HELD_FOR_PENDING
"""
Flags under which handling lines has more to do afterwards
(L{LineProtocol._afterHandling}).
"""
_NOT_HANDLING = ~_HANDLING


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

    Memory: the framer is made when the first bytes arrive, and the queue of
    pending replies when a reply first has to wait for a handler (it goes
    again once empty), so a connection that sends nothing costs two slots
    more than a L{ConnectionProtocol}.

    @ivar linesHandled: Complete lines handled on this connection.
    """

    __slots__ = ("_framer", "linesHandled")

    factory: LineFactory
    linesHandled: int
    _framer: LineFramer | None
    _extra: _LineExtra | None

    _plainLines: ClassVar[bool] = True
    """
    Whether this class answers lines with L{LineProtocol.lineReceived}
    itself, so that the factory's handler may be called directly; set for
    each subclass when it is defined.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._plainLines = cls.lineReceived is LineProtocol.lineReceived

    def __init__(self) -> None:
        super().__init__()
        self.linesHandled = 0
        self._framer = None

    @property
    def pendingReplies(self) -> int:
        """
        How many replies wait to be sent, for their handler or behind one
        whose handler is still running.
        """
        extra = self._extra
        return 0 if extra is None else len(extra.pending)

    @property
    def heldBytes(self) -> int:
        """
        How many bytes of an unfinished line are held: at most the line
        length limit plus one.
        """
        framer = self._framer
        return 0 if framer is None else framer.pendingLength()

    def _getExtra(self) -> _LineExtra:
        extra = self._extra
        if extra is None:
            extra = self._extra = _LineExtra()
        return extra

    def connectionMade(self) -> None:
        """
        As L{ConnectionProtocol.connectionMade}; if the factory is paced
        (L{LineFactory.paced}), every read of this connection goes the way
        that paces, its first included.
        """
        super().connectionMade()
        if self.factory.paced:
            self._flags |= _PACED

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
        # countIn (and send, for one line) inlined: this runs once per read.
        size = len(data)
        self.bytesIn += size
        factory = self.factory
        stats = factory.stats
        stats.bytesIn += size
        if self._flags:
            # In some state (handling, held, closing, seen idle by a sweep,
            # ...): the general way.  A connection at work has no flag set.
            self._readInState(data)
            return
        framer = self._framer or self._startFraming()
        lines = framer.feed(data)
        count = len(lines)
        if not count:
            pass
        elif self._extra is None and count <= factory.maxPending and self._plainLines:
            # No reply waiting and room for every line: the usual read.
            # _handleLines, cut down to it (no flag was set, so none to keep).
            self._flags = _HANDLING
            if count == 1:
                # A client that waits for each reply: no map(), no join.
                try:
                    reply = factory.handler(lines[0])
                except Exception:
                    reply = self._handlerRaised()
                if type(reply) is bytes:
                    reply += factory.delimiter
                    size = len(reply)
                    self.bytesOut += size
                    stats.bytesOut += size
                    self.transport.write(reply)
                else:
                    self._sendReplies([reply], factory.delimiter)
            else:
                results = self._callHandlers(factory.handler, lines)
                self._sendReplies(results, factory.delimiter)
            self.linesHandled += count
            stats.linesHandled += count
            if self._flags != _HANDLING or self._extra is not None:
                # Handling left something to do: a reply to wait for, a
                # close, a hold (or only a paused write: then it is a no-op).
                self._flags &= _NOT_HANDLING
                self._afterHandling()
            else:
                self._flags = 0
        else:
            self._handleLines(lines)
        if framer.overflowed and not self._flags & _WANT_CLOSE:
            self._lineTooLong()

    def _readInState(self, data: bytes) -> None:
        """
        L{dataReceived} for a connection with any flag set: discard C{data}
        if lingering, else frame it and handle its lines the general way.
        """
        if self._flags & _LINGERING:
            return
        framer = self._framer or self._startFraming()
        lines = framer.feed(data)
        if lines:
            self._handleLines(lines)
        if framer.overflowed and not self._flags & _WANT_CLOSE:
            self._lineTooLong()

    def _startFraming(self) -> LineFramer:
        """
        Make this connection's framer, when its first bytes arrive.
        """
        framer = self._framer = LineFramer(self.factory.maxLineLength)
        return framer

    def inputEnded(self) -> None:
        """
        The client half-closed: handle a last unterminated line, then close
        once every pending reply is sent.
        """
        framer = self._framer
        last = None if framer is None else framer.finish()
        if last is not None:
            self._handleLines([last])
        self._flags |= _WANT_CLOSE
        self._finishAfterPending()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Cancel handlers still running: nobody is left to answer.
        """
        extra = self._extra
        pending: deque[_PendingReply] | tuple[()] = ()
        if extra is not None:
            pending, extra.pending = extra.pending, ()
            extra.backlog = ()
            self._cancelNextTurn(extra)
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
        one read full of lines cannot start more than C{maxPending} handlers;
        once the factory's handler has answered later (L{LineFactory.paced}),
        they also wait when L{HANDLERS_PER_TURN} handlers that answer later
        have started this reactor turn.
        """
        factory = self.factory
        maxPending = factory.maxPending
        extra = self._extra
        if self._flags & _HANDLING or (
            extra is not None and (extra.backlog or len(extra.pending) >= maxPending)
        ):
            extra = self._getExtra()
            extra.backlog = [*extra.backlog, *lines]
            self._holdWhileFull()
            return
        # Handling lines is activity (touch).
        self._flags = (self._flags | _HANDLING) & _ACTIVE
        handle: Callable[[bytes], HandlerResult]
        if self._plainLines:
            handle = factory.handler  # the same call, one frame less
        else:
            handle = self.lineReceived
        delimiter = factory.delimiter
        count = len(lines)
        handled = 0
        # Start handlers a chunk at a time, each chunk no larger than the
        # room left among the pending replies: however many of them turn
        # out to be asynchronous, no more than maxPending ever wait.
        while handled < count:
            extra = self._extra
            if extra is not None:
                room = self._room(extra)
            elif factory.paced:
                room = min(maxPending, HANDLERS_PER_TURN)
            else:
                room = maxPending
            if room <= 0:
                extra = self._getExtra()
                extra.backlog = [*lines[handled:], *extra.backlog]
                break
            chunk = (
                lines
                if not handled and count <= room
                else lines[handled : handled + room]
            )
            handled += len(chunk)
            self._sendReplies(self._callHandlers(handle, chunk), delimiter)
        self.linesHandled += handled
        factory.stats.linesHandled += handled
        flags = self._flags = self._flags & _NOT_HANDLING
        if self._extra is not None or flags & _NOT_PLAIN:
            self._afterHandling()

    def _room(self, extra: _LineExtra) -> int:
        """
        How many more lines may be handled now: room among the pending
        replies and, once paced, in this turn's L{HANDLERS_PER_TURN}.
        """
        factory = self.factory
        room = factory.maxPending - len(extra.pending)
        if factory.paced:
            room = min(room, HANDLERS_PER_TURN - extra.started)
        return room

    def _waitForRoom(self, extra: _LineExtra) -> None:
        """
        Lines wait in the backlog: if they wait for the next turn rather
        than for pending replies, make sure it handles them.
        """
        if (
            extra.nextTurn is None
            and self.factory.paced
            and extra.started >= HANDLERS_PER_TURN
            and len(extra.pending) < self.factory.maxPending
        ):
            extra.nextTurn = self.factory.clock.callLater(0, self._nextTurn)

    def _nextTurn(self) -> None:
        """
        The reactor turned: start handling the lines that waited for it.
        """
        extra = self._getExtra()
        extra.nextTurn = None
        extra.started = 0
        if extra.backlog and not self._flags & _HANDLING:
            waiting, extra.backlog = extra.backlog, ()
            self._handleLines(list(waiting))

    def _cancelNextTurn(self, extra: _LineExtra) -> None:
        nextTurn, extra.nextTurn = extra.nextTurn, None
        if nextTurn is not None and nextTurn.active():
            nextTurn.cancel()

    def _callHandlers(
        self, handle: Callable[[bytes], HandlerResult], lines: list[bytes]
    ) -> list[object]:
        """
        Call C{handle} on each of C{lines}, in order; a line whose handler
        raised is answered with L{INTERNAL_ERROR}.

        @return: The results, one per line.
        """
        # map() runs the calls in C.  After one raises, the same iterator
        # goes on with the next line, and extend() keeps what it had added.
        calls = map(handle, lines)
        results: list[object] = []
        while True:
            try:
                results.extend(calls)
            except Exception:
                results.append(self._handlerRaised())
            else:
                return results

    def _sendReplies(self, results: list[object], delimiter: bytes) -> None:
        """
        Reply with the handlers' C{results} for consecutive lines, in order:
        in one write, joined in C, when every one is bytes and no reply
        waits before them; otherwise by L{_replyInOrder}.
        """
        extra = self._extra
        if extra is None or not extra.pending:
            results.append(b"")
            try:
                data = delimiter.join(results)  # type: ignore[arg-type]
            except TypeError:
                results.pop()
            else:
                self.send(data)
                return
        self._replyInOrder(results, delimiter)

    def _afterHandling(self) -> None:
        """
        After handling lines: handle lines that arrived meanwhile if there
        is room for them, keep reading paused while there is none, and
        close if a close is wanted and nothing is pending.
        """
        extra = self._extra
        if extra is not None and extra.backlog and self._room(extra) > 0:
            # Lines arrived while we were busy here, and there is room.
            waiting, extra.backlog = extra.backlog, ()
            self._handleLines(list(waiting))
            return
        self._holdWhileFull()
        self._finishAfterPending()

    def _handlerRaised(self) -> bytes:
        """
        Log the exception a handler just raised; it answers its line with
        L{INTERNAL_ERROR}.
        """
        self._log.failure("Handler failed on a line from {peer}", peer=self.peer)
        return INTERNAL_ERROR

    def _replyInOrder(self, results: list[object], delimiter: bytes) -> None:
        """
        Send or queue the handlers' C{results} for consecutive lines, in
        order: replies that are ready go out in one write, unless a reply
        before them still waits for its handler; asynchronous results wait.
        """
        extra = self._extra
        pending: deque[_PendingReply] = _NO_PENDING if extra is None else extra.pending  # type: ignore[assignment]
        ready: list[bytes] = []
        append = ready.append
        for result in results:
            if type(result) is not bytes:
                if result is None:
                    continue
                if isinstance(result, _REPLY_TYPES):
                    result = _toBytes(result)
                else:
                    if ready:
                        self.send(b"".join(ready))
                        ready.clear()
                    pending = self._await(result).pending  # type: ignore[assignment]
                    continue
            if pending:
                pending.append(_PendingReply(result))
            else:
                append(result)
                append(delimiter)
        if ready:
            self.send(b"".join(ready))

    def _holdWhileFull(self) -> None:
        """
        Keep reading paused exactly while C{maxPending} replies wait or lines
        wait to be handled (and have the next turn handle lines that wait
        for it).
        """
        extra = self._extra
        full = extra is not None and (
            bool(extra.backlog) or len(extra.pending) >= self.factory.maxPending
        )
        if full and extra is not None and extra.backlog:
            self._waitForRoom(extra)
        flags = self._flags
        if full != bool(flags & _HELD_FOR_PENDING):
            if full:
                self._flags = flags | _HELD_FOR_PENDING
                self.holdReading()
            else:
                self._flags = flags & ~_HELD_FOR_PENDING
                self.releaseReading()

    def _await(self, result: object) -> _LineExtra:
        """
        Queue a reply slot for an asynchronous (or malformed) handler result.

        @return: This connection's L{_LineExtra}, which holds the queue.
        """
        slot = _PendingReply(done=False)
        extra = self._getExtra()
        if not extra.pending:
            # Made on first use, and dropped once empty: most connections
            # never wait on a handler, and a deque is big.
            extra.pending = deque()
        extra.pending.append(slot)
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
            return extra
        extra.started += 1
        self.factory.paced = True
        slot.deferred = result
        result.addCallbacks(
            self._settle, self._handlerFailed, callbackArgs=(slot,), errbackArgs=(slot,)
        )
        timeout = self.factory.handlerTimeout
        if timeout and not slot.done:
            slot.timer = self.factory.clock.callLater(
                timeout, self._handlerTimedOut, slot
            )
        return extra

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
        extra = self._extra
        if extra is None:
            return
        pending = extra.pending
        if not pending or not pending[0].done:
            return
        assert isinstance(pending, deque)
        delimiter = self.factory.delimiter
        out: list[bytes] = []
        while pending and pending[0].done:
            reply = pending.popleft().reply
            if reply is not None:
                out.append(reply)
                out.append(delimiter)
        if not pending:
            extra.pending = ()
            # Every handler started has answered: start afresh.
            extra.started = 0
        if out:
            self.send(b"".join(out))
        if extra.backlog and not self._flags & _HANDLING and self._room(extra) > 0:
            waiting, extra.backlog = extra.backlog, ()
            self._handleLines(list(waiting))
        else:
            self._holdWhileFull()
        self._finishAfterPending()

    def _lineTooLong(self) -> None:
        limit = self.factory.maxLineLength
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
        extra = self._extra
        return extra is not None and bool(extra.pending)

    def refuse(self, reason: str) -> None:
        """
        Over a connection limit: say so in an C{ERROR} line and close.
        """
        self.send(b"ERROR " + reason.encode() + self.factory.delimiter)
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
        self._getExtra().lastWords = lastWords
        self._flags |= _WANT_CLOSE | _LINGER
        self._finishAfterPending()

    def shutDown(self) -> None:
        """
        The server is shutting down: read no more lines and start no more
        handlers (lines read but not yet handled get no reply), send the
        replies still pending, then close.
        """
        if self._flags & _CLOSING:
            return
        extra = self._extra
        if extra is not None:
            extra.backlog = ()
            self._cancelNextTurn(extra)
        self.holdReading()
        self._flags |= _WANT_CLOSE | _LINGER
        self._finishAfterPending()

    def _finishAfterPending(self) -> None:
        """
        Close if a close is wanted and no reply is pending any more.
        """
        flags = self._flags
        if flags & _HANDLING or not flags & _WANT_CLOSE:
            return
        extra = self._extra
        if extra is not None:
            if extra.pending or extra.backlog:
                return
            if extra.lastWords is not None:
                self.send(extra.lastWords + self.factory.delimiter)
                extra.lastWords = None
        if flags & _LINGER:
            self.lingeringClose()
        else:
            self.closeWhenFlushed()


_REPLY_TYPES = (bytes, str, bytearray, memoryview)
"""
What a handler may return as a reply: C{str} is sent as UTF-8, the others
as they are.
"""


def _toBytes(reply: object) -> bytes:
    if isinstance(reply, bytes):
        return reply
    if isinstance(reply, str):
        return reply.encode("utf-8")
    if isinstance(reply, (bytearray, memoryview)):
        return bytes(reply)
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
    @ivar paced: Whether the handler has answered a line later (with a
        Deferred or coroutine): from then on each connection starts at most
        L{HANDLERS_PER_TURN} such handlers per reactor turn, so that no turn
        runs long.

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
        self.paced = False
