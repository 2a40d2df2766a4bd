# -*- test-case-name: tests.test_lineclient -*-
"""
Line clients: send lines, get reply lines, many requests in flight at once.

L{LineClient} is a Protocol for one connection; L{ReconnectingLineClient}
keeps one connection up, reconnecting with backoff, for devices and services
that must stay connected.  Both speak lines by default, and any framing of
L{tcpcomm.framers} when given one (C{framing="length:4"}, C{"modbus"}...):
requests and replies are then frames' payloads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpcomm.client import (
    ConnectionFailed,
    describeEndpoint,
    describeFailure,
    halfClose,
)
from tcpcomm.endpoints import formatAddress
from tcpcomm.framers import Framer, FramingError, LineAdapter, framerFactory
from tcpcomm.framing import DEFAULT_MAX_LINE_LENGTH, LineFramer

__all__ = ["LineClient", "ReconnectingLineClient"]


@implementer(IHalfCloseableProtocol)
class LineClient(Protocol):
    """
    A line client for one connection.

    Requests are pipelined: L{request} sends a line at once, and replies are
    matched to requests in order.  A line that arrives while no request is
    waiting (a chat message, a notice) goes to L{lineReceived}.  L{finish}
    half-closes and fires once the server has closed, after every reply
    arrived.  If the connection ends first, waiting requests fail with
    L{ConnectionFailed}.

    With a C{framing}, every "line" is a frame's payload: L{request} and
    L{sendFrame} send C{framer.encode(payload)}, and replies, and the frames
    L{lineReceived} gets, are the payloads the framer cuts.  A reply stream
    the framer cannot cut (a bad header, a frame over its C{max}, a close
    inside a frame) fails every waiting request with L{ConnectionFailed}
    saying why, and closes.

    @ivar peer: The server's address, as text, once connected.
    """

    transport: ITCPTransport
    _log = Logger()
    peer: str = "(not connected)"

    def __init__(
        self,
        *,
        delimiter: bytes = b"\n",
        maxLineLength: int = DEFAULT_MAX_LINE_LENGTH,
        onLine: Callable[[bytes], object] | None = None,
        framing: str | Callable[[], Framer] | None = None,
    ) -> None:
        """
        @param delimiter: What each line sent ends with: C{b"\\n"} or
            C{b"\\r\\n"}.  Lines received may end with either.  Not used
            with a C{framing}.
        @param maxLineLength: The longest line accepted from the server.  Not
            used with a C{framing} (whose C{max} applies).
        @param onLine: Called with each line (or frame's payload) nobody
            asked for, unless a subclass overrides L{lineReceived}.
        @param framing: Frames instead of lines: a specification such as
            C{"length:4"} or C{"modbus"} (see L{parseFraming}), or a
            callable that makes a L{Framer}.  By default, lines; C{line}
            framing (C{"line:max=N"}) is lines too, with its C{max}.
        @raise ValueError: If C{framing} is not a valid specification.
        """
        self.delimiter = delimiter
        # The framer of a framing; None for lines, which take the fast path.
        self._frames: Framer | None = None
        if framing is not None:
            framer = framerFactory(framing)()
            if not isinstance(framer, LineAdapter):
                self._frames = framer
            elif framer.framer.maxLineLength != DEFAULT_MAX_LINE_LENGTH:
                # Lines, with the framing's max.
                maxLineLength = framer.framer.maxLineLength
        self._framer = LineFramer(maxLineLength)
        self._truncated: str | None = None
        self._onLine = onLine
        self._waiting: deque[Deferred[bytes]] = deque()
        self._finishing = False
        self._lost: Failure | None = None
        self._closedWaiters: list[Deferred[None]] = []
        self._closedOutcome: Failure | None = None

    def connectionMade(self) -> None:
        self.peer = formatAddress(self.transport.getPeer())

    @property
    def lost(self) -> bool:
        """
        Whether the connection is gone.
        """
        return self._lost is not None

    @property
    def problem(self) -> str | None:
        """
        Why the connection is gone, in one line; C{None} while it is not.
        """
        lost = self._lost
        return None if lost is None else lost.getErrorMessage()

    @property
    def pending(self) -> int:
        """
        How many requests wait for their reply.
        """
        return len(self._waiting)

    def sendFrame(self, payload: bytes | str) -> None:
        """
        Send one line, or one frame of the C{framing}, expecting no reply.
        C{str} is sent as UTF-8.

        @raise ConnectionFailed: If the client has finished or the
            connection is gone.
        @raise FramingError: If the framing cannot frame C{payload} (over
            its C{max}, holding its delimiter, not a whole MODBUS ADU...);
            nothing is sent.
        """
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if self._lost is not None or self._finishing:
            state = "lost" if self._lost is not None else "finished sending"
            raise ConnectionFailed(f"connection to {self.peer} {state}")
        if self._frames is None:
            self.transport.write(payload + self.delimiter)
        else:
            self.transport.write(self._frames.encode(payload))

    def sendLine(self, line: bytes | str) -> None:
        """
        Another name for L{sendFrame}: send one line (or frame), expecting
        no reply.
        """
        self.sendFrame(line)

    def request(self, line: bytes | str) -> Deferred[bytes]:
        """
        Send one line (or frame) and get the server's reply line (without
        delimiter), or the reply frame's payload.

        Cancelling the Deferred cannot take the line back from the server:
        it fails with C{CancelledError} at once, and its reply, when it
        comes, is dropped, so later replies still match their requests.

        @return: A Deferred that fires with the reply, or fails with
            L{ConnectionFailed} if the connection ends first, or with
            L{FramingError} (nothing sent) if the framing cannot frame
            C{line}.
        """
        try:
            self.sendLine(line)
        except (ConnectionFailed, FramingError) as e:
            return fail(e)
        d: Deferred[bytes] = Deferred()
        self._waiting.append(d)
        return d

    def lineReceived(self, line: bytes) -> None:
        """
        A line arrived that answers no request.  By default, pass it to
        C{onLine}, or log and drop it.
        """
        if self._onLine is not None:
            self._onLine(line)
        else:
            self._log.debug(
                "Unasked line from {peer}: {line!r}",
                peer=self.peer,
                line=line,
                event="unasked_line",
            )

    def finish(self) -> Deferred[None]:
        """
        Say "I am done sending" (half-close), then wait for the server to
        send what it still has and close.

        @return: A Deferred that fires once the server has closed and every
            request has had its reply, or fails with L{ConnectionFailed}.
        """
        if not self._finishing and self._lost is None:
            self._finishing = True
            halfClose(self.transport)
        return self._whenClosed()

    def _whenClosed(self) -> Deferred[None]:
        if self._lost is not None:
            return fail(self._closedOutcome) if self._closedOutcome else succeed(None)
        d: Deferred[None] = Deferred()
        self._closedWaiters.append(d)
        return d

    def dataReceived(self, data: bytes) -> None:
        if self._frames is not None:
            self._framesReceived(data)
            return
        framer = self._framer
        lines = framer.feed(data)
        if lines:
            self.linesReceived(lines)
        if framer.overflowed:
            self._log.warn(
                "Line from {peer} longer than {limit} bytes; closing",
                peer=self.peer,
                limit=framer.maxLineLength,
                event="line_too_long",
            )
            self._lost = Failure(
                ConnectionFailed(
                    f"line from {self.peer} longer than {framer.maxLineLength} bytes"
                )
            )
            self.transport.abortConnection()

    def _framesReceived(self, data: bytes) -> None:
        """
        Hand on the payloads of the frames C{data} completes; at a bad
        frame, hand on those before it, then abort.
        """
        if self._lost is not None:
            return
        assert self._frames is not None
        try:
            payloads = self._frames.feed(data)
        except FramingError as e:
            if e.frames:
                self.linesReceived(e.frames)
            self._log.warn(
                "Bad frame from {peer}: {reason}; closing",
                peer=self.peer,
                reason=e.reason,
                event="bad_frame",
            )
            self._lost = Failure(
                ConnectionFailed(f"bad frame from {self.peer}: {e.reason}")
            )
            self.transport.abortConnection()
            return
        if payloads:
            self.linesReceived(payloads)

    def linesReceived(self, lines: list[bytes]) -> None:
        """
        Lines (or frames' payloads) that arrived together, in order: each
        answers the oldest waiting request, or goes to L{lineReceived}.
        Subclasses that take a read's lines at once override this.
        """
        for line in lines:
            self._dispatch(line)

    def _dispatch(self, line: bytes) -> None:
        if self._waiting:
            self._waiting.popleft().callback(line)
        else:
            self.lineReceived(line)

    def readConnectionLost(self) -> None:
        """
        The server has finished sending: take a last line without delimiter
        (or, for a framing, note a frame left incomplete), then close.
        """
        if self._frames is None:
            last = self._framer.finish()
            if last is not None:
                self.linesReceived([last])
        elif self._lost is None:
            try:
                payloads = self._frames.end()
            except FramingError as e:
                self._truncated = e.reason
            else:
                if payloads:
                    self.linesReceived(payloads)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fail the requests still waiting, and settle L{finish}.
        """
        if self._lost is None:
            self._lost = reason
        waiting, self._waiting = self._waiting, deque()
        clean = reason.check(error.ConnectionDone) is not None
        if clean:
            problem = ConnectionFailed(
                f"connection to {self.peer} closed before {len(waiting)}"
                f" repl{'y' if len(waiting) == 1 else 'ies'} arrived"
            )
            if self._truncated is not None:
                problem = ConnectionFailed(
                    f"connection to {self.peer} closed inside a frame"
                    f" ({self._truncated})"
                )
        else:
            problem = describeFailure(self._lost, self.peer, None, True)
        # Settled before the requests fail: their errbacks may call finish.
        if not (clean and not waiting and self._truncated is None):
            self._closedOutcome = Failure(problem)
        for d in waiting:
            d.errback(Failure(problem))
        closedWaiters, self._closedWaiters = self._closedWaiters, []
        for closed in closedWaiters:
            if self._closedOutcome is None:
                closed.callback(None)
            else:
                closed.errback(self._closedOutcome)


class ReconnectingLineClient(ClientService):
    """
    Keep one line connection up, reconnecting with backoff (Twisted's
    L{ClientService}: 1 s growing to 60 s, with jitter, by default).

    Start it with C{startService()} (or give it a parent service).  While
    disconnected, L{request} waits for the next connection.  Requests sent on
    a connection that drops fail with L{ConnectionFailed}; they are not sent
    again, since the server may have acted on them.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        *,
        delimiter: bytes = b"\n",
        maxLineLength: int = DEFAULT_MAX_LINE_LENGTH,
        onLine: Callable[[bytes], object] | None = None,
        retryPolicy: Callable[[int], float] | None = None,
        clock: Any = None,
        framing: str | Callable[[], Framer] | None = None,
    ) -> None:
        """
        @param endpoint: Where to connect.
        @param delimiter: See L{LineClient}.
        @param maxLineLength: See L{LineClient}.
        @param onLine: Called with every line nobody asked for, on any
            connection.
        @param retryPolicy: Seconds to wait before the Nth retry; see
            L{twisted.application.internet.backoffPolicy}.
        @param clock: The clock to schedule retries with (the reactor by
            default).
        @param framing: See L{LineClient}: every connection speaks it.
        @raise ValueError: If C{framing} is not a valid specification.
        """
        framers = None if framing is None else framerFactory(framing)

        def build() -> LineClient:
            return LineClient(
                delimiter=delimiter,
                maxLineLength=maxLineLength,
                onLine=onLine,
                framing=framers,
            )

        if clock is None:
            from twisted.internet import reactor as clock
        super().__init__(
            endpoint, Factory.forProtocol(build), retryPolicy=retryPolicy, clock=clock
        )
        self._clock: IReactorTime = clock
        self._where = describeEndpoint(endpoint)

    def connection(self, failAfterFailures: int | None = None) -> Deferred[LineClient]:
        """
        The live connection, or the next one.

        Unlike C{whenConnected}, this never gives a connection that has just
        dropped, and it fires in a later turn of the reactor, never from
        inside the service's state machine, so its callbacks may stop the
        service.

        @param failAfterFailures: See L{request}.
        """
        result: Deferred[LineClient] = Deferred()

        def deliver(outcome: object) -> None:
            if isinstance(outcome, Failure):
                if outcome.check(CancelledError):
                    outcome = Failure(
                        ConnectionFailed(f"client for {self._where} stopped")
                    )
                else:
                    outcome = Failure(
                        describeFailure(outcome, self._where, None, False)
                    )
                result.errback(outcome)
            elif isinstance(outcome, LineClient) and outcome.lost:
                # The service has not heard of the loss yet: ask again.
                attempt()
            else:
                result.callback(outcome)  # type: ignore[arg-type]

        def attempt() -> None:
            self.whenConnected(failAfterFailures).addBoth(
                lambda outcome: self._clock.callLater(0, deliver, outcome)
            )

        attempt()
        return result

    def request(
        self, line: bytes | str, failAfterFailures: int | None = None
    ) -> Deferred[bytes]:
        """
        Send C{line} on the current connection, or the next one, and get its
        reply.

        @param failAfterFailures: Fail (with L{ConnectionFailed}) after this
            many failed connection attempts in a row instead of waiting on.
        """

        def send(client: LineClient) -> Deferred[bytes]:
            return client.request(line)

        return self.connection(failAfterFailures).addCallback(send)
