# -*- test-case-name: tests.test_line,tests.test_framed -*-
"""
A message server: each message a client sends goes to a handler, and the
handler's reply goes back framed the same way.

Messages are lines by default; the factory's C{framing} makes them any of
L{tcpcomm.framers}' framings (length fields, MODBUS TCP, STX/ETX...).
Handlers are plain callables taking the message's payload as C{bytes} and
returning C{bytes} (or another bytes-like C{bytearray} or C{memoryview}),
C{str} (sent as UTF-8), C{None} (no reply), a L{Deferred} of one of those,
or a coroutine returning one of those.  Replies go out in the order the
messages came in, even when handlers finish out of order, so clients may
pipeline.

The protocol is glue: the framer (L{tcpcomm.framing}, L{tcpcomm.framers})
cuts messages and frames replies, the L{ReplyQueue} keeps replies in order
and decides when reading pauses and when a close may happen, and
L{LineProtocol} calls handlers and moves bytes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, ClassVar, TypeAlias, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tcpcomm.connection import ConnectionExtra, ConnectionFactory, ConnectionProtocol
from tcpcomm.flags import (
    ACTIVE,
    CLOSING,
    HANDLING,
    HELD_FOR_PENDING,
    LINE_SUBCLASS_FLAGS,
    LINGER,
    LINGERING,
    NOT_HANDLING,
    PACED,
    UNANSWERED,
    WANT_CLOSE,
)
from tcpcomm.framers.base import Framer, FramingError
from tcpcomm.framers.line import LineAdapter
from tcpcomm.framers.modbus import ModbusFramer
from tcpcomm.framers.spec import framerFactory
from tcpcomm.framing import DEFAULT_MAX_LINE_LENGTH, LineFramer
from tcpcomm.replies import (
    FAILED,
    HANDLER_TIMEOUT,
    INTERNAL_ERROR,
    TIMED_OUT,
    UNANSWERABLE,
    BadReply,
    CannotAnswer,
    Failed,
    ReplyFramer,
    Unanswerable,
)
from tcpcomm.replyqueue import ReplyQueue, Slot

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
    "DELIMITERS",
    "HANDLERS_PER_TURN",
    "HANDLER_TIMEOUT",
    "IDLE_TIMEOUT",
    "INTERNAL_ERROR",
    "LINE_SUBCLASS_FLAGS",
    "TOO_SLOW",
    "UNANSWERABLE",
    "Handler",
    "HandlerResult",
    "LineFactory",
    "LineProtocol",
    "Reply",
    "Unanswerable",
    "echoLine",
]

Reply: TypeAlias = "bytes | str | None"
HandlerResult: TypeAlias = (
    "bytes | str | Deferred[Any] | Coroutine[Any, Any, Any] | Unanswerable | None"
)
Handler: TypeAlias = Callable[[bytes], HandlerResult]

DELIMITERS = {"lf": b"\n", "crlf": b"\r\n"}
"""
The reply delimiters a L{LineFactory} accepts, by name.
"""

DEFAULT_MAX_PENDING = 1024
"""
How many replies may wait for slow handlers on one connection before the
server stops reading more messages from it.
"""

IDLE_TIMEOUT = b"ERROR idle timeout"
TOO_SLOW = b"ERROR too slow"

HANDLERS_PER_TURN = 16
"""
How many handlers that do not answer at once (Deferreds, coroutines) one
connection may start before it lets the reactor turn: the rest of its
messages wait, unhandled and with reading paused, for the next turn (or for
its pending replies to drain).  Without it, a connection keeps up to
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
The default handler: reply with the message itself.

C{bytes.__bytes__} returns the very bytes object it is given (a message is
always exactly C{bytes}), and being C it is called without a Python frame:
about 320 instructions less per line than C{def echoLine(line): return
line}, a sixth of a 16-line read.
"""


def _resume(
    coroutine: Coroutine[Any, Any, Any], yielded: object
) -> Generator[object, object, object]:
    """
    Go on running C{coroutine}, which yielded C{yielded} when first sent
    C{None}, as a generator that L{Deferred.fromCoroutine} drives as it would
    have driven the coroutine itself.

    The first step is run by the caller, so a coroutine that returns without
    awaiting costs no Deferred at all.
    """
    while True:
        try:
            sent = yield yielded
        except BaseException as error:
            try:
                yielded = coroutine.throw(error)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value


class _LineExtra(ConnectionExtra):
    """
    What a line connection keeps only once it needs it (see
    L{ConnectionExtra}).

    @ivar queue: Its L{ReplyQueue}, once a reply or a message has had to
        wait; C{None} again once nothing waits.
    @ivar nextTurn: The call that handles the messages left for the next
        turn.
    @ivar flush: The call that sends, a turn later, the replies that became
        ready while other handlers still ran.
    """

    __slots__ = ("flush", "nextTurn", "queue")

    def __init__(self) -> None:
        super().__init__()
        self.queue: ReplyQueue | None = None
        self.nextTurn: IDelayedCall | None = None
        self.flush: IDelayedCall | None = None


_NOT_PLAIN = HANDLING | WANT_CLOSE | HELD_FOR_PENDING | UNANSWERED
"""
Flags under which handling messages has more to do afterwards
(L{LineProtocol._afterHandling}).
"""


class LineProtocol(ConnectionProtocol):
    """
    Cut the client's bytes into messages (lines by default), answer each
    with the handler's reply, in order.

    A line ends at LF; a CR just before the LF is dropped.  Replies end with
    the factory's delimiter.  Other framings cut and frame as the factory's
    C{framing} says.  Subclasses may override L{lineReceived} instead of
    giving the factory a handler.

    Failures never cost a line client its connection: a handler that raises
    (or whose Deferred fails) is logged with its traceback and the client
    gets C{ERROR internal error} in that reply's place.  A line longer than
    the limit gets C{ERROR line too long (limit N bytes)} after the replies
    to the lines before it, and then the connection closes.  When the client
    half-closes, a last line without a delimiter is still handled, every
    pending reply is sent, and then the server closes.

    Binary framings have no room for an error text: a corrupt or oversized
    frame, a handler that fails or times out, or a reply that cannot be
    framed gets the replies to the messages before it, a log line, and a
    close.  MODBUS TCP is the exception for handlers: one that fails (or
    whose reply is no valid ADU for its request) is answered with exception
    code 0x04,
    "server device failure", one that times out with 0x0B, and the
    connection stays open.

    Memory: the framer is made when the first bytes arrive, and the
    L{ReplyQueue} when a reply first has to wait for a handler (it goes
    again once empty), so a connection that sends nothing costs two slots
    more than a L{ConnectionProtocol}.

    @ivar linesHandled: Complete messages handled on this connection.
    """

    __slots__ = ("_framer", "linesHandled")

    factory: LineFactory
    linesHandled: int
    # A LineFramer for lines (its fast path, and its overflowed flag), else
    # the factory's Framer.
    _framer: Any
    _extra: _LineExtra | None

    _plainLines: ClassVar[bool] = True
    """
    Whether this class answers messages with L{LineProtocol.lineReceived}
    and L{LineProtocol.answerLines} as they are, so that the factory's
    handler may be called directly; set for each subclass when it is
    defined.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._plainLines = (
            cls.lineReceived is LineProtocol.lineReceived
            and cls.answerLines is LineProtocol.answerLines
        )

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
        queue = self._queue()
        return 0 if queue is None else len(queue)

    @property
    def heldBytes(self) -> int:
        """
        How many bytes of an unfinished message are held: at most the
        framing's limit plus its header (for lines, the limit plus one).
        """
        framer = self._framer
        if framer is None:
            return 0
        if self.factory.makeFramer is None:
            length: int = framer.pendingLength()
            return length
        held: int = framer.buffered
        return held

    def _getExtra(self) -> _LineExtra:
        extra = self._extra
        if extra is None:
            extra = self._extra = _LineExtra()
        return extra

    def _queue(self) -> ReplyQueue | None:
        """
        This connection's L{ReplyQueue}, if it has one now.
        """
        extra = self._extra
        return None if extra is None else extra.queue

    def _getQueue(self) -> ReplyQueue:
        """
        This connection's L{ReplyQueue}, made if it has none.
        """
        extra = self._getExtra()
        queue = extra.queue
        if queue is None:
            queue = extra.queue = ReplyQueue(self.factory.maxPending, HANDLERS_PER_TURN)
        return queue

    def connectionMade(self) -> None:
        """
        As L{ConnectionProtocol.connectionMade}; if the factory is paced
        (L{LineFactory.paced}), every read of this connection goes the way
        that paces, its first included.
        """
        super().connectionMade()
        if self.factory.paced:
            self._flags |= PACED

    def lineReceived(self, line: bytes) -> HandlerResult:
        """
        Answer one message.  By default, call the factory's handler.

        @param line: The message's payload (a line without its delimiter).
        @return: The reply, in any form a handler may return.
        """
        return self.factory.handler(line)

    def dataReceived(self, data: bytes) -> None:
        """
        Cut C{data} into messages and answer them.
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
        encode = factory.encode
        if encode is None:
            lines = framer.feed(data)
        else:
            try:
                lines = framer.feed(data)
            except FramingError as error:
                self._framingFailed(error)
                return
        count = len(lines)
        if not count:
            pass
        elif self._extra is None and count <= factory.maxPending and self._plainLines:
            # No reply waiting and room for every message: the usual read.
            # _handleLines, cut down to it (no flag was set, so none to keep).
            self._flags = HANDLING
            if count == 1:
                # A client that waits for each reply: no map(), no join.
                reply: object
                try:
                    reply = factory.handler(lines[0])
                except Exception:
                    reply = self._handlerRaised()
                if type(reply) is CoroutineType:
                    reply = self._startCoroutine(reply)
                if type(reply) is bytes and encode is None:
                    reply += factory.delimiter
                    size = len(reply)
                    self.bytesOut += size
                    stats.bytesOut += size
                    self.transport.write(reply)
                else:
                    self._sendReplies([reply], lines)
            else:
                results = self._callHandlers(factory.handler, lines)
                self._sendReplies(results, lines)
            self.linesHandled += count
            stats.linesHandled += count
            if self._flags != HANDLING or self._extra is not None:
                # Handling left something to do: a reply to wait for, a
                # close, a hold (or only a paused write: then it is a no-op).
                self._flags &= NOT_HANDLING
                self._afterHandling()
            else:
                self._flags = 0
        else:
            self._handleLines(lines)
        if encode is None and framer.overflowed and not self._flags & WANT_CLOSE:
            self._lineTooLong()

    def _readInState(self, data: bytes) -> None:
        """
        L{dataReceived} the general way: discard C{data} if lingering (or
        after a framing error), else cut it and handle its messages.
        """
        if self._flags & LINGERING:
            return
        framer = self._framer or self._startFraming()
        if self.factory.makeFramer is not None:
            flags = self._flags
            if flags & UNANSWERED or (flags & WANT_CLOSE and flags & LINGER):
                # Closing for an error (or shutting down): no more messages,
                # and a framer that failed is dead.
                return
            try:
                frames = framer.feed(data)
            except FramingError as error:
                self._framingFailed(error)
                return
            if frames:
                self._handleLines(frames)
            return
        lines = framer.feed(data)
        if lines:
            self._handleLines(lines)
        if framer.overflowed and not self._flags & WANT_CLOSE:
            self._lineTooLong()

    def _startFraming(self) -> Any:
        """
        Make this connection's framer, when its first bytes arrive.
        """
        factory = self.factory
        makeFramer = factory.makeFramer
        framer: Any = (
            LineFramer(factory.maxLineLength) if makeFramer is None else makeFramer()
        )
        self._framer = framer
        return framer

    def inputEnded(self) -> None:
        """
        The client half-closed: handle a last unterminated message (a line,
        or a frame of a delimiter framing), then close once every pending
        reply is sent.  A binary frame cut short is an error, logged.
        """
        framer = self._framer
        flags = self._flags
        if framer is not None:
            if self.factory.makeFramer is None:
                last = framer.finish()
                if last is not None:
                    self._handleLines([last])
            elif not (flags & UNANSWERED or (flags & WANT_CLOSE and flags & LINGER)):
                try:
                    frames = framer.end()
                except FramingError as error:
                    self._framingFailed(error)
                else:
                    if frames:
                        self._handleLines(frames)
        self._flags |= WANT_CLOSE
        self._finishAfterPending()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Cancel handlers still running: nobody is left to answer.
        """
        extra = self._extra
        running: list[Slot] = []
        if extra is not None:
            queue, extra.queue = extra.queue, None
            if queue is not None:
                running = queue.drop()
            self._cancelCalls(extra)
        super().connectionLost(reason)
        self._cancelSlots(running)

    def summary(self) -> str:
        """
        Describe this connection's traffic, messages included.
        """
        count = self.linesHandled
        noun = "line" if self.factory.makeFramer is None else "message"
        text = f"{super().summary()}, {count} {noun}{'' if count == 1 else 's'}"
        discarded = getattr(self._framer, "discarded", 0)
        if discarded:
            text += f", {discarded} byte{'' if discarded == 1 else 's'} between frames"
        return text

    def _handleLines(self, lines: list[bytes]) -> None:
        """
        Answer C{lines} (messages) in order.  Synchronous replies to them go
        out in one write.  Once C{maxPending} replies wait on handlers, the
        remaining messages wait (unhandled, with reading paused) until some
        are sent, so one read full of them cannot start more than
        C{maxPending} handlers; once the factory's handler has answered
        later (L{LineFactory.paced}), they also wait when
        L{HANDLERS_PER_TURN} handlers that answer later have started this
        reactor turn.
        """
        factory = self.factory
        maxPending = factory.maxPending
        queue = self._queue()
        if self._flags & HANDLING or (
            queue is not None and (queue.backlog or len(queue) >= maxPending)
        ):
            self._getQueue().defer(lines)
            self._holdWhileFull()
            return
        # Handling messages is activity (touch).
        self._flags = (self._flags | HANDLING) & ACTIVE
        handle: Callable[[bytes], HandlerResult]
        if self._plainLines:
            handle = factory.handler  # the same call, one frame less
        else:
            handle = self.lineReceived
        count = len(lines)
        handled = 0
        # Start handlers a chunk at a time, each chunk no larger than the
        # room left among the pending replies: however many of them turn
        # out to be asynchronous, no more than maxPending ever wait.
        while handled < count:
            queue = self._queue()
            if queue is not None:
                room = queue.room(factory.paced)
            elif factory.paced:
                room = min(maxPending, HANDLERS_PER_TURN)
            else:
                room = maxPending
            if room <= 0:
                self._getQueue().putBack(lines[handled:])
                break
            chunk = (
                lines
                if not handled and count <= room
                else lines[handled : handled + room]
            )
            handled += len(chunk)
            self._sendReplies(self.answerLines(chunk, handle), chunk)
            if self._flags & UNANSWERED:
                # A binary framing could not answer one: no more.
                break
        self.linesHandled += handled
        factory.stats.linesHandled += handled
        flags = self._flags = self._flags & NOT_HANDLING
        if self._extra is not None or flags & _NOT_PLAIN:
            self._afterHandling()

    def _nextTurn(self) -> None:
        """
        The reactor turned: start handling the messages that waited for it.
        """
        extra = self._getExtra()
        extra.nextTurn = None
        queue = extra.queue
        if queue is None:
            return
        queue.newTurn()
        if queue.backlog and not self._flags & HANDLING:
            self._handleLines(queue.takeBacklog())

    def _cancelCalls(self, extra: _LineExtra) -> None:
        """
        Cancel the calls scheduled for a later turn.
        """
        for call in (extra.nextTurn, extra.flush):
            if call is not None and call.active():
                call.cancel()
        extra.nextTurn = extra.flush = None

    def answerLines(
        self, lines: list[bytes], handle: Callable[[bytes], HandlerResult]
    ) -> list[object]:
        """
        Answer consecutive messages that arrived together, in order.

        By default, C{handle} (L{lineReceived}, or the factory's handler)
        for each.  Subclasses that can do a batch's work at once (a chat
        room sending one block of a read's lines to each member) override
        this.

        @return: One result per message, in any form a handler may return.
        """
        return self._callHandlers(handle, lines)

    def _callHandlers(
        self, handle: Callable[[bytes], HandlerResult], lines: list[bytes]
    ) -> list[object]:
        """
        Call C{handle} on each of C{lines}, in order; a message whose
        handler raised is answered as the framing answers failures.

        @return: The results, one per message.
        """
        # map() runs the calls in C.  After one raises, the same iterator
        # goes on with the next message, and extend() keeps what it added.
        calls = map(handle, lines)
        results: list[object] = []
        while True:
            try:
                results.extend(calls)
            except Exception:
                results.append(self._handlerRaised())
            else:
                return results

    def _sendReplies(self, results: list[object], requests: list[bytes]) -> None:
        """
        Reply with the handlers' C{results} for the consecutive messages
        C{requests}, in order: in one write, joined in C, when every one is
        bytes and no reply waits before them; nothing, found in C, when every
        one is C{None} (a relay's lines); otherwise by L{_replyInOrder}.
        """
        queue = self._queue()
        if queue is None or not queue.waiting:
            join = self.factory.replies.join
            data = join(results)
            if data is None:
                if results.count(None) == len(results):
                    return
                if self._runCoroutines(results):
                    # Coroutines that returned without awaiting: join again.
                    data = join(results)
            if data is not None:
                self.send(data)
                return
        self._replyInOrder(results, requests)

    def _runCoroutines(self, results: list[object]) -> bool:
        """
        Run each coroutine among C{results} to its first wait, in order,
        putting what it gave (see L{_startCoroutine}) in its place.

        @return: Whether there was any coroutine.
        """
        found = False
        for index, result in enumerate(results):
            if type(result) is CoroutineType:
                results[index] = self._startCoroutine(result)
                found = True
        return found

    def _afterHandling(self) -> None:
        """
        After handling messages: handle those that arrived meanwhile if
        there is room for them, keep reading paused while there is none, and
        close if a close is wanted and nothing is pending.
        """
        queue = self._queue()
        if (
            queue is not None
            and queue.backlog
            and queue.room(self.factory.paced) > 0
            and not self._flags & UNANSWERED
        ):
            # Messages arrived while we were busy here, and there is room.
            self._handleLines(queue.takeBacklog())
            return
        self._holdWhileFull()
        self._finishAfterPending()

    def _handlerRaised(self) -> Failed:
        """
        Log the exception a handler just raised; its message is answered as
        the framing answers failures.
        """
        self.factory.stats.handlerErrors += 1
        self._log.failure(
            "Handler failed on a message from {peer}",
            peer=self.peer,
            event="handler_error",
        )
        return FAILED

    def _startCoroutine(self, coroutine: Coroutine[Any, Any, Any]) -> object:
        """
        Run a handler's coroutine to its first wait.

        @return: Its result if it returned without waiting; else a
            L{Deferred} of its result; L{FAILED} if it raised.
        """
        try:
            yielded = coroutine.send(None)
        except StopIteration as stop:
            return stop.value
        except Exception:
            return self._handlerRaised()
        steps = cast("Generator[Deferred[Any], Any, Any]", _resume(coroutine, yielded))
        return Deferred.fromCoroutine(steps)

    def _replyInOrder(self, results: list[object], requests: list[bytes]) -> None:
        """
        Send or queue the handlers' C{results} for the consecutive messages
        C{requests}, in order: replies that are ready go out in one write,
        unless a reply before them still waits for its handler; those that
        will come later wait.
        """
        queue = self._queue()
        ready: list[bytes] = []
        for index, result in enumerate(results):
            if inspect.iscoroutine(result):
                result = self._startCoroutine(result)
            if isinstance(result, Deferred):
                if ready:
                    self.send(b"".join(ready))
                    ready.clear()
                queue = self._await(result, requests[index])
                continue
            try:
                wire = self._frameReply(result, requests[index])
            except CannotAnswer:
                for later in results[index + 1 :]:
                    if isinstance(later, Deferred):
                        later.addErrback(self._abandonedFailed)
                        later.cancel()
                    elif inspect.iscoroutine(later):
                        later.close()
                if ready:
                    self.send(b"".join(ready))
                self._cannotAnswer(None)
                return
            if wire is None:
                continue
            if queue is not None and queue.waiting:
                queue.ready(wire)
            else:
                ready.append(wire)
        if ready:
            self.send(b"".join(ready))

    def _frameReply(self, result: object, request: bytes) -> bytes | None:
        """
        Frame a handler's C{result} for C{request} (see
        L{ReplyFramer.wire}); a bad reply is logged and answered as a
        failure.

        @raise CannotAnswer: If the framing has no answer for it.
        """
        replies = self.factory.replies
        try:
            return replies.wire(result, request)
        except BadReply as error:
            self.factory.stats.handlerErrors += 1
            self._log.error(
                "Bad reply to a message from {peer} ({framing}): {reason}",
                peer=self.peer,
                framing=self.factory.framing,
                reason=error.reason,
                event="bad_reply",
            )
            return replies.failure(request, False)

    def _cannotAnswer(self, slot: Slot | None) -> None:
        """
        A binary framing cannot answer a message (at C{slot}, if it had to
        wait): send the replies before it, then close.
        """
        queue = self._getQueue()
        if slot is not None:
            self._cancelSlots(queue.cut(slot))
        else:
            self._cancelSlots(queue.cut(queue.wait(b"")))
        self._log.warn(
            "No {framing} reply for a message from {peer}; closing",
            framing=self.factory.framing,
            peer=self.peer,
            event="no_reply",
        )
        self._flags |= UNANSWERED
        self._closeWith(None)
        self._flushPending()

    def _cancelSlots(self, slots: list[Slot]) -> None:
        """
        Stop the handlers of C{slots}, which nobody waits for any more.
        """
        for slot in slots:
            timer = slot.timer
            if timer is not None and timer.active():
                timer.cancel()
            if slot.waiting is not None:
                slot.waiting.cancel()

    def _holdWhileFull(self) -> None:
        """
        Keep reading paused exactly while C{maxPending} replies wait or
        messages wait to be handled (and have the next turn handle messages
        that wait for it).
        """
        queue = self._queue()
        full = queue is not None and queue.full()
        if full and queue is not None and queue.waitsForTurn(self.factory.paced):
            extra = self._getExtra()
            if extra.nextTurn is None:
                extra.nextTurn = self.factory.clock.callLater(0, self._nextTurn)
        flags = self._flags
        if full != bool(flags & HELD_FOR_PENDING):
            if full:
                self._flags = flags | HELD_FOR_PENDING
                self.holdReading()
            else:
                self._flags = flags & ~HELD_FOR_PENDING
                self.releaseReading()

    def _await(self, result: Deferred[Any], request: bytes) -> ReplyQueue:
        """
        Queue a reply slot for a handler that answers later.

        @return: This connection's L{ReplyQueue}.
        """
        extra = self._extra
        queue = None if extra is None else extra.queue
        if queue is None:
            queue = self._getQueue()
        slot = queue.wait(request)
        factory = self.factory
        factory.paced = True
        latency = factory.stats.handlerLatency
        if latency is not None:
            # Timed from here (the handler was called moments ago, in this
            # read): handlers that answer at once are never timed.
            slot.started = factory.clock.seconds()
            latency.started += 1
        slot.waiting = result
        result.addCallbacks(
            self._settle, self._handlerFailed, callbackArgs=(slot,), errbackArgs=(slot,)
        )
        timeout = factory.handlerTimeout
        if timeout and not slot.done:
            slot.timer = factory.clock.callLater(timeout, self._handlerTimedOut, slot)
        return queue

    def _handlerFailed(self, failure: Failure, slot: Slot) -> None:
        if not (self.disconnected or slot.done or failure.check(CancelledError)):
            self.factory.stats.handlerErrors += 1
            self._log.failure(
                "Handler failed on a message from {peer}",
                failure,
                peer=self.peer,
                event="handler_error",
            )
        self._settle(FAILED, slot)

    def _abandonedFailed(self, failure: Failure) -> None:
        """
        A handler whose message will never be answered (a message before it
        could not be) failed: its cancellation is expected, anything else is
        logged.
        """
        if not failure.check(CancelledError):
            self.factory.stats.handlerErrors += 1
            self._log.failure(
                "Handler failed on a message from {peer}",
                failure,
                peer=self.peer,
                event="handler_error",
            )

    def _handlerTimedOut(self, slot: Slot) -> None:
        """
        A handler took longer than the factory's C{handlerTimeout}: answer
        as the framing answers timeouts (C{ERROR handler timed out}) in its
        place, and cancel it.
        """
        slot.timer = None
        self.factory.stats.handlerTimeouts += 1
        self._log.warn(
            "Handler for a message from {peer} took over {timeout} s; cancelled",
            peer=self.peer,
            timeout=self.factory.handlerTimeout,
            event="handler_timeout",
        )
        self._settle(TIMED_OUT, slot)
        if slot.waiting is not None:
            slot.waiting.cancel()

    def _settle(self, result: object, slot: Slot) -> None:
        """
        A handler finished: record its reply.  Once no handler runs, send
        every reply now at the head of the queue; while others still run,
        send them a turn later, with those that become ready meanwhile, in
        one write.
        """
        if slot.done:
            # Already answered: the handler timed out before finishing, or
            # the connection is gone.
            return
        timer = slot.timer
        if timer is not None and timer.active():
            timer.cancel()
        extra = self._getExtra()
        queue = extra.queue
        assert queue is not None
        factory = self.factory
        latency = factory.stats.handlerLatency
        if latency is not None:
            latency.observe(factory.clock.seconds() - slot.started)
        if type(result) is bytes and factory.encode is None:
            wire: bytes | None = result + factory.delimiter
        else:
            try:
                wire = self._frameReply(result, slot.request)
            except CannotAnswer:
                self._cannotAnswer(slot)
                return
        queue.settle(slot, wire)
        if not queue.running:
            self._flushPending()
        elif extra.flush is None and queue.headReady:
            extra.flush = factory.clock.callLater(0, self._flushPending)

    def _flushPending(self) -> None:
        """
        Send every reply now at the head of the queue; then, with room in the
        queue again, handle messages that were waiting for it.
        """
        extra = self._extra
        if extra is None:
            return
        flush, extra.flush = extra.flush, None
        if flush is not None and flush.active():
            flush.cancel()
        queue = extra.queue
        if queue is None:
            return
        if queue.headReady:
            out = queue.takeReady()
            if out:
                self.send(b"".join(out))
        if (
            queue.backlog
            and not self._flags & HANDLING
            and queue.room(self.factory.paced) > 0
        ):
            self._handleLines(queue.takeBacklog())
        else:
            self._holdWhileFull()
        self._finishAfterPending()
        if (
            extra.queue is queue
            and queue.idle()
            and queue.lastWords is None
            and not self._flags & HANDLING
        ):
            # Nothing waits: the queue goes, as it came, so that a connection
            # at rest holds none.
            extra.queue = None

    def _lineTooLong(self) -> None:
        limit = self.factory.maxLineLength
        self._log.warn(
            "Line from {peer} longer than {limit} bytes; closing",
            peer=self.peer,
            limit=limit,
            event="line_too_long",
        )
        self._closeWith(b"ERROR line too long (limit %d bytes)" % (limit,))

    def _framingFailed(self, error: FramingError) -> None:
        """
        The client's bytes cannot be cut as the framing says: answer the
        messages before the fault, log, and close.
        """
        if error.frames:
            self._handleLines(error.frames)
        self.factory.stats.badFrames += 1
        self._log.warn(
            "Bad {framing} input from {peer}: {reason}; closing",
            framing=self.factory.framing,
            peer=self.peer,
            reason=error.reason,
            event="bad_frame",
        )
        self._closeWith(None)

    def isBusy(self) -> bool:
        """
        Busy while replies wait on handlers: a client waiting for a slow
        handler is not idle (the handler timeout covers handlers that hang).
        """
        queue = self._queue()
        return queue is not None and queue.waiting

    def refuse(self, reason: str) -> None:
        """
        Over a connection limit: say so in an C{ERROR} line (line framing)
        and close.
        """
        line = self.factory.replies.errorLine(b"ERROR " + reason.encode())
        if line is not None:
            self.send(line)
        self.lingeringClose()

    def tooSlow(self) -> None:
        """
        Too slow to read what L{sendUnasked} has for it: after the replies
        already due, say C{ERROR too slow} (line framing) and close.
        """
        self._closeWith(TOO_SLOW)

    def idleTimedOut(self) -> None:
        """
        Idle too long: say so in an C{ERROR} line (line framing) and close.
        """
        self._closeWith(IDLE_TIMEOUT)

    def _closeWith(self, lastWords: bytes | None) -> None:
        """
        Read no more; after the replies to the messages already read, send
        C{lastWords} (an C{ERROR} line, for line framing only) and close,
        lingering.
        """
        self.holdReading()
        queue = self._getQueue()
        if lastWords is not None and self.factory.encode is None:
            queue.lastWords = lastWords
        self._flags |= WANT_CLOSE | LINGER
        self._finishAfterPending()

    def shutDown(self) -> None:
        """
        The server is shutting down: read no more messages and start no
        more handlers (messages read but not yet handled get no reply), send
        the replies still pending, then close.
        """
        if self._flags & CLOSING:
            return
        extra = self._extra
        if extra is not None:
            if extra.queue is not None:
                extra.queue.backlog = []
            nextTurn, extra.nextTurn = extra.nextTurn, None
            if nextTurn is not None and nextTurn.active():
                nextTurn.cancel()
        self.holdReading()
        self._flags |= WANT_CLOSE | LINGER
        self._finishAfterPending()

    def _finishAfterPending(self) -> None:
        """
        Close if a close is wanted and no reply is pending any more.
        """
        flags = self._flags
        if flags & HANDLING or not flags & WANT_CLOSE:
            return
        queue = self._queue()
        if queue is not None:
            if not queue.idle():
                return
            if queue.lastWords is not None:
                self.send(queue.lastWords + self.factory.delimiter)
                queue.lastWords = None
        if flags & LINGER:
            self.lingeringClose()
        else:
            self.closeWhenFlushed()


class LineFactory(ConnectionFactory):
    """
    Build L{LineProtocol}s that share one handler, one framing and one set
    of limits.

    @ivar handler: Called with each message; see L{tcpcomm.line}.
    @ivar framing: The framing's specification (C{"line"}, C{"length:4"}...),
        for logs.
    @ivar makeFramer: Makes each connection's framer; C{None} for lines,
        which are cut by L{LineFramer} and framed with C{delimiter}.
    @ivar encode: Frames one reply; C{None} for lines (also
        C{replies.encode}, kept here for the hot path).
    @ivar replies: Frames the handler's results (L{ReplyFramer}): its
        C{encodeAll} frames several at once, and C{modbus} says whether
        they are MODBUS ADUs.
    @ivar delimiter: Appended to every reply (lines only): C{b"\\n"} or
        C{b"\\r\\n"}.
    @ivar maxLineLength: The longest line accepted, in bytes, delimiter not
        counted (lines only; other framings have their C{max}).
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
        framing: str | Callable[[], Framer] | None = None,
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
        self.maxPending = maxPending
        self.paced = False
        self.framing = "line"
        self.makeFramer: Callable[[], Framer] | None = None
        self.encode: Callable[[bytes], bytes] | None = None
        self.replies = ReplyFramer(delimiter)
        if framing is not None:
            makeFramer = framerFactory(framing)
            if isinstance(framing, str):
                self.framing = framing
            prototype = makeFramer()
            if isinstance(prototype, LineAdapter):
                # Lines: the fast path, with the framing's max if it has one.
                if prototype.framer.maxLineLength != DEFAULT_MAX_LINE_LENGTH:
                    maxLineLength = prototype.framer.maxLineLength
            else:
                if not isinstance(framing, str):
                    self.framing = type(prototype).__name__
                self.makeFramer = makeFramer
                self.encode = prototype.encode
                self.replies = ReplyFramer(
                    delimiter,
                    prototype.encode,
                    prototype.encodeAll,
                    isinstance(prototype, ModbusFramer),
                )
        self.maxLineLength = maxLineLength
