# -*- test-case-name: tests.test_relay -*-
"""
Relay mode: many local clients, one persistent connection upstream.

Each line a client sends is forwarded to the upstream server over one
connection (Twisted's L{ClientService}: reconnecting with backoff), as
C{TAG SP line} when tagging, C{TAG} being the sender's address
(C{127.0.0.1:5555}, C{[::1]:5555}; see L{addressTag}).  Each line the
upstream sends goes to every connected client or, when tagging, to the
client its tag names, without the tag.

The relay works a read at a time, not a line at a time: a client read's
lines go upstream in one write (each line queued or refused just as it would
be alone), and an upstream read's lines go to each client in one
L{sendUnasked<ConnectionProtocol.sendUnasked>}.

What the relay promises:

  - Lines go upstream in the order the relay read them, all clients
    together.
  - While the upstream is down, or not reading fast enough, lines wait in
    one queue, in order, up to C{queueLimit} lines and C{queueBytes}
    bytes; they go, before any newer line, as soon as it can take them.  A
    line that finds the queue full (by either bound) gets C{ERROR upstream
    unavailable} in its place among its sender's replies; it is counted, and
    logged at most once a second: no refused line goes unnoticed.
  - At most once for lines in flight: a line handed to a connection that
    then drops may be lost (in Twisted's buffer or the kernel's); it is not
    sent again, since the upstream may have acted on it.  A line queued while
    the upstream was down is sent once, in order, on the next connection
    (and so is lost only if that one drops too).  Over TLS, nothing is sent
    before the handshake has checked the server's certificate.
  - Tagging: a line from the upstream whose tag names no connected client,
    or that has no tag, is dropped, counted (C{undeliverable}) and logged at
    most once a second: it is not sent to everyone, as it may be meant for
    one client only.
  - Memory is bounded.  Towards the upstream: the queue (C{queueBytes},
    however long the lines), plus the upstream connection's buffer (about
    64 KiB, plus one flush of the queue or one client read's lines with
    their tags); while that buffer is full, reading from every client
    pauses, so lines wait in the clients' sockets, not here.  Towards a
    client: lines from the upstream are sent with
    L{ConnectionProtocol.sendUnasked}, so a client that does not read is
    closed with C{ERROR too slow} once more than C{maxPendingBytes} wait
    for it beyond its socket buffer, and neither the relay nor the other
    clients ever wait for it.
  - Stopping: the upstream connection starts with the factory (first port
    listening) and stops once the factory has stopped (last port closed) and
    its last client has gone.  Lines still queued then are dropped, counted
    and logged if the upstream is not connected; if it is, they are sent as
    soon as it takes them, and then its connection is closed.  Whatever is
    left when time runs out -- the rest of L{RelayFactory.shutDown}'s
    timeout, which holds for the whole stop (clients, queued lines,
    upstream), or else L{UPSTREAM_CLOSE_TIMEOUT} -- is dropped: lines still
    queued are counted and logged with their number, and the connection is
    aborted (losing what it had not sent yet, as any lost connection does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, cast

from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpcomm.client import describeEndpoint, describeFailure, isTLS
from tcpcomm.connection import ConnectionProtocol, IFlowControlledTransport
from tcpcomm.framers.base import Framer, FramingError
from tcpcomm.framers.modbus import GATEWAY_PATH_UNAVAILABLE, exceptionResponse
from tcpcomm.framing import DEFAULT_MAX_LINE_LENGTH
from tcpcomm.line import (
    DEFAULT_MAX_PENDING_BYTES,
    TOO_SLOW,
    UNANSWERABLE,
    HandlerResult,
    LineFactory,
    LineProtocol,
)
from tcpcomm.lineclient import LineClient
from tcpcomm.relayqueue import (
    Disposition,
    LogThrottle,
    RelayQueue,
    RelayStats,
    addressTag,
    groupByTag,
    tagLine,
)

__all__ = [
    "DEFAULT_MAX_PENDING_BYTES",
    "DEFAULT_QUEUE_BYTES",
    "DEFAULT_QUEUE_LIMIT",
    "TOO_SLOW",
    "UPSTREAM_CLOSE_TIMEOUT",
    "UPSTREAM_UNAVAILABLE",
    "RelayFactory",
    "RelayProtocol",
]

DEFAULT_QUEUE_LIMIT = 10000
"""
How many lines may wait for the upstream by default.
"""

DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024
"""
How many bytes of lines may wait for the upstream by default: 16 MiB, so
that long lines cannot make the relay's memory grow with C{queueLimit}
times the line length limit.
"""

UPSTREAM_CLOSE_TIMEOUT = 5.0
"""
Seconds a relay that stops without L{RelayFactory.shutDown} (its ports
stopped, its last client gone) gives its upstream connection to take the
queued lines and close before aborting it.  A shutdown gives it what is
left of the shutdown's timeout instead.
"""

TAG_ROOM = 512
"""
How much longer than C{maxLineLength} a line from the upstream may be when
tagging, for its tag.
"""

UPSTREAM_UNAVAILABLE = b"ERROR upstream unavailable"

_LINES_AT_ONCE = 65536
"""
How many of a client's lines the relay takes at once (the line engine's
C{maxPending}): more than a read of 64 KiB can hold, so that each read's
lines go upstream in one write.  The relay answers every line as it takes
it, so no reply ever waits, however many this allows.
"""


class RelayProtocol(LineProtocol):
    """
    A local client of the relay: its lines go upstream, and it gets
    C{ERROR upstream unavailable} for each line the relay cannot take.
    """

    __slots__ = ("_tag",)

    factory: RelayFactory

    def __init__(self) -> None:
        super().__init__()
        self._tag: bytes | None = None

    @property
    def tag(self) -> bytes:
        """
        This client's tag: its address (see L{addressTag}).
        """
        if self._tag is None:
            self._tag = addressTag(self.peer)
        return self._tag

    def lineReceived(self, line: bytes) -> HandlerResult:
        """
        Hand C{line} (a frame's payload) to the relay, as L{answerLines}
        does.
        """
        [result] = self._relay([line])
        return cast("HandlerResult", result)

    def answerLines(
        self, lines: list[bytes], handle: Callable[[bytes], HandlerResult]
    ) -> list[object]:
        """
        Hand a read's C{lines} (frames' payloads) to the relay at once: they
        go upstream in one write, or wait in the queue, or are refused, each
        as L{RelayFactory.relayLines} decides.

        @param handle: Not used: the relay answers the lines itself.
        @return: For each line: C{None}, or if it was refused: C{ERROR
            upstream unavailable} (lines), a MODBUS exception response with
            code 0x0A, "gateway path unavailable" (C{modbus}), or
            L{UNANSWERABLE} (other framings, which have no way to say so: the
            client is closed).
        """
        return self._relay(lines)

    def _relay(self, lines: list[bytes]) -> list[object]:
        """
        See L{answerLines}.
        """
        factory = self.factory
        refusals = cast("list[object]", factory.relayLines(self, lines))
        if factory.encode is None or refusals.count(None) == len(refusals):
            return refusals
        results: list[object] = []
        for line, refusal in zip(lines, refusals, strict=True):
            if refusal is None:
                results.append(None)
            elif factory.replies.modbus:
                try:
                    results.append(exceptionResponse(line, GATEWAY_PATH_UNAVAILABLE))
                except ValueError:
                    results.append(UNANSWERABLE)
            else:
                results.append(UNANSWERABLE)
        return results

    def isBusy(self) -> bool:
        """
        Also busy while the relay holds reading for a slow upstream: a client
        held back is not idle.
        """
        return super().isBusy() or self.factory.holdingClients


@implementer(IPushProducer, IHandshakeListener)
class _UpstreamClient(LineClient):
    """
    The relay's side of one upstream connection: tells the relay when the
    connection is ready (over TLS: once the handshake is done, so that no
    line goes to a server whose certificate fails), when it goes, and when
    it cannot take more (as a producer registered on its own transport).
    """

    transport: IFlowControlledTransport

    def __init__(self, relay: RelayFactory) -> None:
        extra = TAG_ROOM if relay.tag else 0
        super().__init__(
            delimiter=relay.delimiter,
            maxLineLength=relay.maxLineLength + extra,
            framing=relay.makeFramer,
        )
        self._relay = relay
        self._producing = False
        self._ready = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.registerProducer(self, True)
        self._producing = True
        if not isTLS(self.transport):
            self._becomeReady()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done and the certificate checked.
        """
        self._becomeReady()

    def _becomeReady(self) -> None:
        if not self._ready and not self.lost:
            self._ready = True
            self._relay._upstreamUp(self)

    def linesReceived(self, lines: list[bytes]) -> None:
        """
        A read's lines (frames' payloads) from the upstream: to the clients,
        all at once.
        """
        self._relay._fromUpstream(lines)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self.lost:
            # A line over the limit, or a bad frame: LineClient aborted the
            # connection.
            self._relay._upstreamDown(self, str(self.problem))

    def readConnectionLost(self) -> None:
        """
        The upstream closed its side: take no more lines on this connection.
        """
        self._relay._upstreamDown(self, f"{self._relay._where} closed the connection")
        self.unregister()
        super().readConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._ready:
            problem = describeFailure(reason, self._relay._where, None, True)
            self._relay._upstreamDown(self, str(problem))
        else:
            # Lost before it was ready: a failed TLS handshake.
            self._relay._cannotConnect(reason)
        super().connectionLost(reason)

    def unregister(self) -> None:
        """
        Stop being the transport's producer, so that it can close even with
        its buffer full (Twisted #5344).
        """
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self._relay._upstreamFull(self, True)

    def resumeProducing(self) -> None:
        self._relay._upstreamFull(self, False)

    def stopProducing(self) -> None:
        pass


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """
    An endpoint that tells the relay why each connection attempt failed
    (the L{ClientService} only says when it retries).
    """

    def __init__(self, relay: RelayFactory) -> None:
        self._wrappedEndpoint = relay.upstream
        self._relay = relay

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        def failed(failure: Failure) -> Failure:
            self._relay._cannotConnect(failure)
            return failure

        connecting: Deferred[IProtocol] = self._wrappedEndpoint.connect(protocolFactory)
        return connecting.addErrback(failed)

    def __repr__(self) -> str:
        return f"<upstream {self._relay._where}>"


class RelayFactory(LineFactory):
    """
    Build L{RelayProtocol}s that share one upstream connection.

    The connection starts with the factory (L{startFactory}, when Twisted
    starts its first port) and stops once the factory has stopped and its
    last client has gone, so embedding needs nothing more.  See
    L{tcpcomm.relay} for what the relay promises.

    @ivar upstream: Where the upstream server is.
    @ivar tag: Whether lines carry their sender's address both ways.
    @ivar relayStats: The relay's counters (forwarded, queued, refused,
        dropped, received, delivered, undeliverable); C{stats} has the
        usual server counters.
    """

    protocol = RelayProtocol
    _log: ClassVar[Logger] = Logger()

    def __init__(
        self,
        upstream: IStreamClientEndpoint,
        *,
        tag: bool = False,
        queueLimit: int = DEFAULT_QUEUE_LIMIT,
        queueBytes: int = DEFAULT_QUEUE_BYTES,
        retryPolicy: Callable[[int], float] | None = None,
        clock: IReactorTime | None = None,
        framing: str | Callable[[], Framer] | None = None,
        delimiter: bytes = b"\n",
        maxLineLength: int = DEFAULT_MAX_LINE_LENGTH,
        maxPendingBytes: int = DEFAULT_MAX_PENDING_BYTES,
        idleTimeout: float | None = None,
        maxConnections: int | None = None,
        maxConnectionsPerHost: int | None = None,
    ) -> None:
        """
        @param upstream: See L{upstream}.
        @param tag: See L{tag}.
        @param queueLimit: The most lines that may wait for the upstream
            (0: refuse every line while it is unavailable).
        @param queueBytes: The most bytes of lines (without their
            delimiters; with their tags when tagging) that may wait for the
            upstream (0: refuse every line while it is unavailable).
        @param retryPolicy: Seconds to wait before the Nth reconnection
            attempt (default: 1 s growing to 60 s, with jitter; see
            L{twisted.application.internet.backoffPolicy}).
        @param clock: The clock for timers and retries (the reactor by
            default).
        @param framing: How messages are cut and framed, both ways (see
            L{LineFactory}); by default, lines.  Tagging needs lines.
        @param delimiter: What lines end with, both ways: C{b"\\n"} or
            C{b"\\r\\n"}.
        @param maxLineLength: The longest line accepted from a client; lines
            from the upstream may be L{TAG_ROOM} bytes longer when tagging.
        @param maxPendingBytes: How many bytes from the upstream may wait
            for a slow client before it is closed with C{ERROR too slow}.
        @raise ValueError: If C{queueLimit} or C{queueBytes} is negative, if
            C{tag} is given with a framing other than lines, or as
            L{LineFactory} says.
        """
        super().__init__(
            framing=framing,
            delimiter=delimiter,
            maxLineLength=maxLineLength,
            clock=clock,
            idleTimeout=idleTimeout,
            maxConnections=maxConnections,
            maxConnectionsPerHost=maxConnectionsPerHost,
            maxPendingBytes=maxPendingBytes,
            maxPending=_LINES_AT_ONCE,
        )
        if tag and self.encode is not None:
            raise ValueError(f"tagging needs line framing, not {self.framing}")
        self.upstream = upstream
        self.tag = tag
        self._noun = "line" if self.encode is None else "message"
        self.relayStats = RelayStats()
        self._queue = RelayQueue(queueLimit, self.relayStats, queueBytes)
        self._retryPolicy = retryPolicy
        self._where = describeEndpoint(upstream)
        self._byTag: dict[bytes, RelayProtocol] = {}
        self._service: ClientService | None = None
        self._client: _UpstreamClient | None = None
        self._holding = False
        self._stopWanted = False
        self._stopping = False
        self._stopWaiters: list[Deferred[None]] = []
        self._deadline: float | None = None
        self._backstop: IDelayedCall | None = None
        self._stopStarted = 0.0
        self._refusals = LogThrottle()
        self._strays = LogThrottle()

    # What there is to observe.

    @property
    def upstreamConnected(self) -> bool:
        """
        Whether the relay is connected to the upstream now.
        """
        return self._client is not None

    @property
    def queuedLines(self) -> int:
        """
        How many lines wait for the upstream now.
        """
        return len(self._queue)

    @property
    def queueLimit(self) -> int:
        """
        The most lines that may wait for the upstream.
        """
        return self._queue.limit

    @property
    def queuedBytes(self) -> int:
        """
        How many bytes of lines wait for the upstream now.
        """
        return self._queue.queuedBytes

    @property
    def queueBytes(self) -> int:
        """
        The most bytes of lines that may wait for the upstream.
        """
        byteLimit = self._queue.byteLimit
        assert byteLimit is not None
        return byteLimit

    @property
    def holdingClients(self) -> bool:
        """
        Whether reading from clients is paused because the upstream
        connection's buffer is full.
        """
        return self._holding

    # Lines from clients to the upstream.

    def relayLine(self, sender: RelayProtocol, line: bytes) -> bytes | None:
        """
        Forward, queue or refuse a line from C{sender}.

        @return: C{None}, or the C{ERROR} line for C{sender} if refused.
        """
        [refusal] = self.relayLines(sender, [line])
        return refusal

    def relayLines(
        self, sender: RelayProtocol, lines: list[bytes]
    ) -> list[bytes | None]:
        """
        Forward, queue or refuse consecutive lines from C{sender}, each as
        L{relayLine} would in turn: those forwarded go upstream in one write.

        @return: For each line, C{None}, or the C{ERROR} line for C{sender}
            if it was refused.
        """
        queue = self._queue
        count = len(lines)
        if queue.isOpen:
            # The usual case: every line goes now (an open queue only counts
            # them), tagged or framed and joined in C calls, in one write.
            queue.offerAll(lines)
            if count:
                assert self._client is not None
                self._client.transport.write(self._block(sender, lines))
            return [None] * count
        if self.tag:
            prefix = tagLine(sender.tag, b"")
            lines = list(map(prefix.__add__, lines))
        elif self.encode is not None:
            # Kept as the framed bytes (the payloads came through the same
            # framing, so they fit).
            lines = list(map(self.encode, lines))
        dispositions = queue.offerAll(lines)
        refused = dispositions.count(Disposition.REFUSED)
        if not refused:
            return [None] * count
        self._noteRefusals(refused)
        return [
            UPSTREAM_UNAVAILABLE if disposition is Disposition.REFUSED else None
            for disposition in dispositions
        ]

    def _noteRefusals(self, refused: int) -> None:
        """
        Count C{refused} lines toward the log, which says so at most once a
        second.
        """
        now = self.clock.seconds()
        for _ in range(refused):
            count = self._refusals.note(now)
            if count:
                self._log.warn(
                    "Upstream {upstream} unavailable and its queue full"
                    " ({lines} {noun}s, {bytes} bytes queued; limits {limit}"
                    " {noun}s, {byteLimit} bytes): refused {count} {noun}(s)",
                    noun=self._noun,
                    upstream=self._where,
                    lines=len(self._queue),
                    bytes=self._queue.queuedBytes,
                    limit=self._queue.limit,
                    byteLimit=self._queue.byteLimit,
                    count=count,
                    event="relay_queue_full",
                )

    def _block(self, sender: RelayProtocol, lines: list[bytes]) -> bytes:
        """
        C{lines} from C{sender} as they go upstream together: tagged when
        tagging, framed for other framings.
        """
        if self.tag:
            prefix = tagLine(sender.tag, b"")
            delimiter = self.delimiter
            return prefix + (delimiter + prefix).join(lines) + delimiter
        if self.replies.encodeAll is None:
            return self.delimiter.join(lines) + self.delimiter
        # The payloads came through the same framing, so they fit.
        return self.replies.encodeAll(lines)

    def _send(self, client: _UpstreamClient, lines: list[bytes]) -> None:
        """
        Write C{lines} to the upstream in one write.
        """
        if lines:
            self._write(client, lines)

    def _write(self, client: _UpstreamClient, lines: list[bytes]) -> None:
        """
        Write C{lines} (lines without their delimiters, or framed messages)
        to the upstream in one write.
        """
        if self.encode is None:
            client.sendLine(self.delimiter.join(lines))
        else:
            client.transport.write(b"".join(lines))

    # Lines from the upstream to clients.

    def _fromUpstream(self, lines: list[bytes]) -> None:
        """
        Send a read's lines from the upstream to every client, in one
        L{sendUnasked<ConnectionProtocol.sendUnasked>} each; or, when
        tagging, each client's lines to it in one.
        """
        stats = self.relayStats
        stats.received += len(lines)
        if self.tag:
            self._routeByTag(lines)
            return
        if self.encode is None:
            data = self.delimiter.join(lines) + self.delimiter
            count = len(lines)
        else:
            data, count = self._frameAll(lines)
            if not count:
                return
        for protocol in list(self.connections):
            if not protocol.closing:
                protocol.sendUnasked(data)
                stats.delivered += count

    def _frameAll(self, payloads: list[bytes]) -> tuple[bytes, int]:
        """
        Frame the payloads of a read from the upstream as one block; those
        that the framing cannot carry are dropped, counted and logged.

        @return: The block, and how many messages it holds.
        """
        assert self.encode is not None and self.replies.encodeAll is not None
        try:
            return self.replies.encodeAll(payloads), len(payloads)
        except FramingError:
            pass
        framed = []
        for payload in payloads:
            try:
                framed.append(self.encode(payload))
            except FramingError as error:
                self.relayStats.undeliverable += 1
                self._log.warn(
                    "Dropped a message from upstream {upstream} that"
                    " {framing} cannot carry: {reason}",
                    upstream=self._where,
                    framing=self.framing,
                    reason=error.reason,
                    event="relay_unframeable",
                )
        return b"".join(framed), len(framed)

    def _routeByTag(self, lines: list[bytes]) -> None:
        """
        Send each client the lines its tag names, in one
        L{sendUnasked<ConnectionProtocol.sendUnasked>}; drop those naming no
        connected client (or none at all), counted and logged.
        """
        stats = self.relayStats
        groups, strays = groupByTag(lines)
        delimiter = self.delimiter
        for tag, rests in groups.items():
            target = self._byTag.get(tag)
            if target is None or target.closing:
                strays.extend(tagLine(tag, rest) for rest in rests)
                continue
            rests.append(b"")
            target.sendUnasked(delimiter.join(rests))
            stats.delivered += len(rests) - 1
        if not strays:
            return
        stats.undeliverable += len(strays)
        now = self.clock.seconds()
        for line in strays:
            count = self._strays.note(now)
            if count:
                self._log.warn(
                    "Dropped {count} line(s) from upstream {upstream} naming no"
                    " connected client, such as {line!r}",
                    count=count,
                    upstream=self._where,
                    line=line[:80],
                    event="relay_unrouted",
                )

    # The upstream connection's state.

    def _upstreamUp(self, client: _UpstreamClient) -> None:
        self._client = client
        self.relayStats.upstreamConnections += 1
        waiting = self._queue.open()
        self._log.info(
            "Connected to upstream {upstream}; sending {count} queued {noun}(s)",
            noun=self._noun,
            upstream=self._where,
            count=len(waiting),
            event="upstream_connected",
        )
        self._send(client, waiting)

    def _upstreamDown(self, client: _UpstreamClient, why: str) -> None:
        if client is not self._client:
            return
        self._client = None
        self._queue.close()
        self._holdClients(False)
        if self._stopping:
            self._log.warn(
                "Lost upstream while stopping: {why}", why=why, event="upstream_lost"
            )
            self._closeUpstream()
            return
        self._log.warn(
            "Lost upstream: {why}; queueing up to {limit} {noun}s and"
            " {byteLimit} bytes until it is back",
            noun=self._noun,
            upstream=self._where,
            why=why,
            limit=self._queue.limit,
            byteLimit=self._queue.byteLimit,
            event="upstream_lost",
        )

    def _cannotConnect(self, failure: Failure) -> None:
        """
        Log why a connection attempt failed, unless it was given up because
        the relay is stopping.
        """
        if self._service is None or failure.check(
            CancelledError, ConnectingCancelledError
        ):
            return
        self._log.warn(
            "Cannot connect to upstream: {problem}",
            problem=str(describeFailure(failure, self._where, None, False)),
            event="upstream_connect_failed",
        )

    def _upstreamFull(self, client: _UpstreamClient, full: bool) -> None:
        """
        The upstream connection's buffer filled (C{full}) or drained: queue
        lines and hold clients, or send the queue and let clients go on.
        """
        if client is not self._client:
            return
        if full:
            self._queue.close()
            self._holdClients(True)
            return
        self._send(client, self._queue.open())
        if self._stopping:
            # The queue was all that the stop waited for.
            self._closeUpstream()
        elif self._queue.isOpen:
            self._holdClients(False)

    def _holdClients(self, hold: bool) -> None:
        if hold == self._holding:
            return
        self._holding = hold
        for protocol in self.connections:
            if hold:
                protocol.holdReading()
            else:
                protocol.releaseReading()

    # Clients coming and going.

    def connectionOpened(self, protocol: ConnectionProtocol) -> str | None:
        """
        Admit a client as L{LineFactory} does; know it by its tag, and hold
        its reading if the upstream is not reading.
        """
        refusal = super().connectionOpened(protocol)
        if refusal is None:
            if isinstance(protocol, RelayProtocol):
                self._byTag[protocol.tag] = protocol
            if self._holding:
                protocol.holdReading()
        return refusal

    def connectionClosed(self, protocol: ConnectionProtocol, reason: Failure) -> None:
        """
        Forget a client; if it was the last and the factory has stopped,
        stop the upstream connection.
        """
        super().connectionClosed(protocol, reason)
        if isinstance(protocol, RelayProtocol):
            if self._byTag.get(protocol.tag) is protocol:
                del self._byTag[protocol.tag]
        self._stopWhenIdle()

    # The upstream connection's lifetime.

    def startFactory(self) -> None:
        """
        Start connecting to the upstream (Twisted calls this when the first
        port starts listening); if the last connection is still closing,
        once it has closed.
        """
        self._stopWanted = False
        self._deadline = None
        if self._service is None and not self._stopping:
            self._startUpstream()

    def _startUpstream(self) -> None:
        self._log.info(
            "Relaying to {upstream} (tags: {tag}, queue limits {limit} {noun}s,"
            " {byteLimit} bytes)",
            noun=self._noun,
            upstream=self._where,
            tag="on" if self.tag else "off",
            limit=self._queue.limit,
            byteLimit=self._queue.byteLimit,
            event="relay_started",
        )

        def build() -> _UpstreamClient:
            return _UpstreamClient(self)

        protocolFactory = Factory.forProtocol(build)
        protocolFactory.noisy = False
        self._service = ClientService(
            _ReportingEndpoint(self),
            protocolFactory,
            retryPolicy=self._retryPolicy,
            clock=self.clock,
        )
        self._service.startService()

    def stopFactory(self) -> None:
        """
        Stop the upstream connection once the last client has gone (Twisted
        calls this when the last port stops listening).
        """
        self._stopWanted = True
        self._stopWhenIdle()

    def shutDown(self, timeout: float) -> Deferred[None]:
        """
        Let the clients finish as L{LineFactory} does; then, if the factory
        has stopped, wait for the upstream connection to take the queued
        lines and close.  All of it takes at most C{timeout} seconds from
        now: what is left then is dropped (see L{tcpcomm.relay}).
        """
        deadline = self.clock.seconds() + timeout
        if self._deadline is None or deadline < self._deadline:
            self._deadline = deadline
            backstop = self._backstop
            if backstop is not None and backstop.getTime() > deadline:
                # The upstream started stopping before: hurry it up.
                backstop.reset(self._timeLeft())

        def upstream(_: None) -> Deferred[None] | None:
            if self._stopWanted:
                return self.whenUpstreamStopped()
            # Still listening: a later stop is not this shutdown's.
            self._deadline = None
            return None

        return super().shutDown(timeout).addCallback(upstream)

    def whenUpstreamStopped(self) -> Deferred[None]:
        """
        A Deferred that fires once the upstream connection has stopped: at
        once if it is not running.
        """
        if self._service is None and not self._stopping:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._stopWaiters.append(waiter)
        return waiter

    def _timeLeft(self) -> float:
        """
        Seconds the upstream connection has left to take the last lines and
        close: what is left of the shutdown's timeout (nothing once it has
        passed), or L{UPSTREAM_CLOSE_TIMEOUT} without a shutdown.
        """
        if self._deadline is None:
            return UPSTREAM_CLOSE_TIMEOUT
        # No floor: with nothing left, the abort runs on the next reactor
        # turn, and an upstream connection with nothing left to write has
        # closed cleanly (FIN) by then, in the same turn's I/O.
        return max(self._deadline - self.clock.seconds(), 0.0)

    def _stopWhenIdle(self) -> None:
        if (
            self._stopWanted
            and not self.connections
            and self._service is not None
            and not self._stopping
        ):
            self._stopUpstream()

    def _stopUpstream(self) -> None:
        """
        The factory has stopped and its last client has gone: once the
        upstream has taken the queued lines, close its connection; abort it
        when time runs out (see L{_timeLeft}).
        """
        self._stopping = True
        self._stopStarted = self.clock.seconds()
        client = self._client
        if client is not None:
            self._backstop = self.clock.callLater(
                self._timeLeft(), self._abortUpstream, client
            )
            if len(self._queue):
                # Its buffer is full: _upstreamFull sends the queue once it
                # drains, and closes.
                return
        self._closeUpstream()

    def _closeUpstream(self) -> None:
        """
        Drop the lines still queued (there are none while connected),
        counted and logged; close the upstream connection, and give up
        connecting.
        """
        service, self._service = self._service, None
        if service is None:
            return
        client, self._client = self._client, None
        self._holdClients(False)
        if client is not None:
            self._send(client, self._queue.open())
            client.unregister()
        self._queue.close()
        dropped = self._queue.drop()
        if dropped:
            self._log.warn(
                "Relay stopped with no connection to {upstream}: dropped"
                " {count} queued {noun}(s)",
                noun=self._noun,
                upstream=self._where,
                count=dropped,
                event="relay_queue_dropped",
            )
        service.stopService().addBoth(self._upstreamStopped)

    def _upstreamStopped(self, result: object) -> None:
        backstop, self._backstop = self._backstop, None
        if backstop is not None and backstop.active():
            backstop.cancel()
        self._stopping = False
        waiters, self._stopWaiters = self._stopWaiters, []
        for waiter in waiters:
            waiter.callback(None)
        if not self._stopWanted:
            # Started again meanwhile (startFactory).
            self._startUpstream()

    def _abortUpstream(self, client: _UpstreamClient) -> None:
        """
        Time is up: drop the lines still queued, counted and logged, and
        abort the upstream connection.
        """
        self._backstop = None
        # What it was given: 0 if the clients used up a shutdown's timeout.
        timeout = round(self.clock.seconds() - self._stopStarted, 2)
        dropped = self._queue.drop()
        if dropped:
            self._log.warn(
                "Upstream {upstream} did not take the last {noun}s in time"
                " ({timeout:g} s): dropped {count} queued {noun}(s); aborting",
                noun=self._noun,
                upstream=self._where,
                timeout=timeout,
                count=dropped,
                event="upstream_stop_timeout",
            )
        else:
            self._log.warn(
                "Upstream {upstream} did not take the last {noun}s in time"
                " ({timeout:g} s); aborting",
                noun=self._noun,
                upstream=self._where,
                timeout=timeout,
                event="upstream_stop_timeout",
            )
        self._closeUpstream()
        client.transport.abortConnection()
