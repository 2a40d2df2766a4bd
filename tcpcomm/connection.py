# -*- test-case-name: tests.test_connection -*-
"""
What every tcpcomm connection does, whatever it speaks: count its bytes, log
its opening and closing, keep the peer's half-close, and bound the memory the
server spends on a client that does not read.

Flow control works like this: the protocol registers itself as a streaming
producer on its own transport.  When the transport's write buffer fills, it
pauses the protocol, which stops reading from the socket; when the buffer
drains, reading resumes.  A subclass can hold reading paused for reasons of
its own with L{ConnectionProtocol.holdReading}.  Reading never resumes once the
peer has half-closed, and the producer is unregistered before the connection
is closed, so a paused connection still closes.

Idle connections are cheap: a connection that has sent nothing holds its
protocol object (a few slots), its place in the factory's L{OpenConnections}
(two pointers) and nothing else of tcpcomm's -- no timer (one sweeper per
factory times idle connections out), no buffer, no text.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, ClassVar, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    ILoggingContext,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpcomm.endpoints import formatAddress
from tcpcomm.flags import (
    ACTIVE,
    CLOSING,
    DISCONNECTED,
    HELD,
    IDLE,
    INPUT_CLOSED,
    LINGERING,
    QUEUED,
    READING_PAUSED,
    REFUSED,
    TIMED_OUT,
    WRITE_BLOCKED,
)
from tcpcomm.limits import ConnectionLimits
from tcpcomm.stats import ServerStats

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress


class IFlowControlledTransport(ITCPTransport, IConsumer, IPushProducer):
    """
    What tcpcomm needs of a transport: a stream that half-closes, takes a
    producer and can be paused.  Twisted's TCP, UNIX and TLS transports all
    provide these.
    """


LINGER_SECONDS = 2.0
"""
How long a connection closing after an C{ERROR} line goes on reading (and
discarding) what the peer still sends, so the peer gets the line and not a
reset; after that it is aborted.
"""


IDLE_SWEEPS = 4
"""
How many times per idle timeout a factory sweeps its connections for idle
ones: a connection with no activity for the idle timeout T is told (or, when
closing, aborted) by the first sweep after T, between T and T + T/4 after its
last activity.
"""


class ConnectionExtra:
    """
    What a connection keeps only once it needs it: an idle connection has
    none of it.

    @ivar holds: Holds taken with L{ConnectionProtocol.holdReading}.
    @ivar lingerTimer: The abort backstop of a lingering close.
    @ivar queued: Unasked data waiting for the peer to read.
    @ivar queuedBytes: How many bytes C{queued} holds.
    @ivar peer: The peer's description, kept for peers whose description
        cannot be made again once the connection has closed.
    """

    __slots__ = ("holds", "lingerTimer", "peer", "queued", "queuedBytes")

    def __init__(self) -> None:
        self.peer: str | None = None
        self.holds = 0
        self.lingerTimer: IDelayedCall | None = None
        self.queued: deque[bytes] | tuple[()] = ()
        self.queuedBytes = 0


@implementer(IProtocol, ILoggingContext, IHalfCloseableProtocol, IPushProducer)
class ConnectionProtocol:
    """
    Base class for tcpcomm's server protocols.

    Subclasses implement C{dataReceived}, call L{countIn} and L{send} so the
    counters stay right, call L{touch} on activity that sends nothing, and
    override L{inputEnded}, L{refuse}, L{idleTimedOut} and L{shutDown} where
    they have something to say.

    Every way of closing has a backstop: a connection that is closing and
    makes no progress for the idle timeout (or, when lingering,
    L{LINGER_SECONDS}) is aborted, so none hangs on a peer that never reads.

    Memory: a server may hold tens of thousands of idle connections, so this
    is a slotted class of its own rather than a subclass of Twisted's
    C{Protocol} (whose instances carry a dictionary), its state flags are bits
    of one small int, what only a busy or closing connection needs is made
    when first needed (L{ConnectionExtra}), and the peer's address is formatted when a
    log line needs it.  Subclasses that add state should declare
    C{__slots__} too, and call C{super().__init__()} from an C{__init__} of
    their own.

    @ivar factory: The L{ConnectionFactory} that built this protocol.
    @ivar transport: The connection's transport, once connected.
    @ivar bytesIn: Bytes received on this connection.
    @ivar bytesOut: Bytes sent (handed to the transport) on this connection.
    """

    __slots__ = (
        "_extra",
        "_flags",
        "_next",
        "_prev",
        "bytesIn",
        "bytesOut",
        "factory",
        "transport",
    )

    factory: ConnectionFactory
    transport: IFlowControlledTransport
    bytesIn: int
    bytesOut: int
    _flags: int
    _extra: ConnectionExtra | None
    # Neighbours in the factory's OpenConnections.
    _prev: ConnectionProtocol | None
    _next: ConnectionProtocol | None
    _log: ClassVar[Logger] = Logger()

    def __init__(self) -> None:
        self.bytesIn = 0
        self.bytesOut = 0
        self._flags = 0
        self._extra = None
        self._prev = None
        self._next = None

    # IProtocol and ILoggingContext, as Twisted's Protocol has them.

    def makeConnection(self, transport: ITransport) -> None:
        """
        Take C{transport} as this connection's and call L{connectionMade}.
        """
        self.transport = cast(IFlowControlledTransport, transport)
        self.connectionMade()

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes arrived; subclasses handle them.  By default: ignore them.
        """

    def logPrefix(self) -> str:
        """
        Name this connection's class in Twisted's log context.
        """
        return self.__class__.__name__

    @property
    def connected(self) -> bool:
        """
        Whether the connection is made and not lost.
        """
        return hasattr(self, "transport") and not self._flags & DISCONNECTED

    # State, as seen from outside.

    @property
    def peer(self) -> str:
        """
        The peer's address as text (see L{describePeer}), or
        C{"(not connected)"}.
        """
        extra = self._extra
        if extra is not None and extra.peer is not None:
            return extra.peer
        transport: ITransport | None = getattr(self, "transport", None)
        if transport is None:
            return "(not connected)"
        address = transport.getPeer()
        if isinstance(address, (IPv4Address, IPv6Address)):
            # Made again each time it is needed (when logging): a TCP
            # transport keeps its peer's address after the close.
            return formatAddress(address)
        # Others (a UNIX socket client is named after the server's socket,
        # which is gone after the close): kept from the first time.
        text = describePeer(transport)
        self._getExtra().peer = text
        return text

    @property
    def host(self) -> str | None:
        """
        The peer's IP address, or C{None} (UNIX sockets, or not connected).
        """
        transport: ITransport | None = getattr(self, "transport", None)
        if transport is None:
            return None
        address = transport.getPeer()
        if isinstance(address, (IPv4Address, IPv6Address)):
            return address.host
        return None

    @property
    def readingPaused(self) -> bool:
        """
        Whether reading from the socket is paused now.
        """
        return bool(self._flags & READING_PAUSED)

    @property
    def inputClosed(self) -> bool:
        """
        Whether the peer has half-closed (sent FIN).
        """
        return bool(self._flags & INPUT_CLOSED)

    @property
    def refused(self) -> bool:
        """
        Whether this connection was over a limit and refused.
        """
        return bool(self._flags & REFUSED)

    @property
    def closing(self) -> bool:
        """
        Whether this side has decided to close.
        """
        return bool(self._flags & CLOSING)

    @property
    def lingering(self) -> bool:
        """
        Whether this side has sent its last words and now discards input
        until the peer closes (see L{lingeringClose}).
        """
        return bool(self._flags & LINGERING)

    @property
    def disconnected(self) -> bool:
        """
        Whether the connection is gone.
        """
        return bool(self._flags & DISCONNECTED)

    @property
    def queuedBytes(self) -> int:
        """
        How many bytes of unasked data (L{sendUnasked}) wait for the peer.
        """
        extra = self._extra
        return 0 if extra is None else extra.queuedBytes

    def _getExtra(self) -> ConnectionExtra:
        """
        This connection's L{ConnectionExtra}, made on first use.
        """
        extra = self._extra
        if extra is None:
            extra = self._extra = ConnectionExtra()
        return extra

    # Opening and closing.

    def connectionMade(self) -> None:
        """
        Ask the factory to admit the connection (which starts watching it for
        idleness); if it does, register as our transport's producer, else
        refuse.
        """
        refusal = self.factory.connectionOpened(self)
        if refusal is not None:
            self._flags |= REFUSED
            self.refuse(refusal)
            return
        self.transport.registerProducer(self, True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop the timers and tell the factory, which logs the connection's
        totals.
        """
        self._flags |= CLOSING | DISCONNECTED
        extra = self._extra
        if extra is not None:
            timer = extra.lingerTimer
            if timer is not None and timer.active():
                timer.cancel()
        self.factory.connectionClosed(self, reason)

    # Counting, sending and activity.

    def countIn(self, size: int) -> None:
        """
        Count C{size} bytes received; call once per C{dataReceived}.
        """
        self.bytesIn += size
        self.factory.stats.bytesIn += size

    def send(self, data: bytes) -> None:
        """
        Write C{data} to the peer, count it, and count it as activity.
        """
        size = len(data)
        self.bytesOut += size
        self.factory.stats.bytesOut += size
        self.transport.write(data)
        self._flags &= ACTIVE

    def sendUnasked(self, data: bytes) -> None:
        """
        Send C{data} the peer did not ask for (a chat message, a notice), in
        a way that never makes anyone wait for this peer: if its transport's
        buffer is full, C{data} waits in a queue of this connection's own,
        sent as the buffer drains.  When that queue would pass the factory's
        C{maxPendingBytes}, the peer is too slow: L{tooSlow}.
        """
        flags = self._flags
        limit = self.factory.maxPendingBytes
        if not flags & (WRITE_BLOCKED | QUEUED) or limit is None:
            self.send(data)
            return
        if flags & CLOSING:
            return
        extra = self._getExtra()
        if not extra.queued:
            extra.queued = deque()
            self._flags = flags | QUEUED
        extra.queued.append(data)
        extra.queuedBytes += len(data)
        if extra.queuedBytes > limit:
            extra.queued = ()
            extra.queuedBytes = 0
            self._flags &= ~QUEUED
            self.factory.stats.tooSlow += 1
            self._log.info(
                "{peer} is too slow: over {limit} bytes waiting; closing",
                peer=self.peer,
                limit=limit,
                event="too_slow",
            )
            self.tooSlow()

    def _sendQueued(self) -> None:
        """
        Send what L{sendUnasked} queued, until the transport is full again.
        """
        extra = self._getExtra()
        queued = extra.queued
        while queued and not self._flags & (WRITE_BLOCKED | CLOSING):
            assert isinstance(queued, deque)
            data = queued.popleft()
            extra.queuedBytes -= len(data)
            self.send(data)
        if not queued:
            self._flags &= ~QUEUED

    def touch(self) -> None:
        """
        Note activity that sends nothing (a line handled without a reply),
        putting off the idle timeout.
        """
        self._flags &= ACTIVE

    def idleSweep(self) -> None:
        """
        The factory's idle sweep: count one more sweep that found this
        connection idle, or, idle for a whole timeout, time it out.
        """
        flags = self._flags
        if (flags & IDLE) < IDLE_SWEEPS:
            self._flags = flags + 1
        else:
            self._idleTimeoutPassed()

    def _idleTimeoutPassed(self) -> None:
        """
        The factory's sweeps found this connection idle for a whole idle
        timeout: time out, or abort if it was closing (or timed out already)
        and made no progress since.
        """
        flags = self._flags & ACTIVE
        self._flags = flags
        if not flags & CLOSING and self.isBusy():
            return
        if flags & (CLOSING | TIMED_OUT):
            self._log.info(
                "{peer} made no progress while closing; aborting",
                peer=self.peer,
                event="close_stalled",
            )
            self.transport.abortConnection()
            return
        self._flags = flags | TIMED_OUT
        self.factory.stats.idleTimeouts += 1
        self._log.info(
            "{peer} idle for {timeout} s; closing",
            peer=self.peer,
            timeout=self.factory.idleTimeout,
            event="idle_timeout",
        )
        self.idleTimedOut()

    # Hooks for what subclasses have to say.

    def isBusy(self) -> bool:
        """
        Whether the server is working for the peer (so the connection is not
        idle, however quiet).  By default: never.
        """
        return False

    def tooSlow(self) -> None:
        """
        The peer reads too slowly for what L{sendUnasked} has for it.  By
        default: close.
        """
        self.lingeringClose()

    def refuse(self, reason: str) -> None:
        """
        The connection is over a limit (C{reason} says which).  By default:
        close it.
        """
        self.transport.loseConnection()

    def idleTimedOut(self) -> None:
        """
        Nothing happened for the idle timeout.  By default: close.
        """
        self.lingeringClose()

    def shutDown(self) -> None:
        """
        The server is shutting down: finish what was asked and close.  By
        default: close once what was written has been sent.
        """
        self.lingeringClose()

    # Half-close (IHalfCloseableProtocol).

    def readConnectionLost(self) -> None:
        """
        The peer half-closed: it will send nothing more.  Never read again,
        then hand over to L{inputEnded}.
        """
        flags = self._flags
        self._flags = flags | INPUT_CLOSED
        if flags & (LINGERING | REFUSED):
            self.transport.loseConnection()
            return
        self.inputEnded()

    def writeConnectionLost(self) -> None:
        """
        Our sending side was closed (L{lingeringClose}): nothing to do.
        """

    def inputEnded(self) -> None:
        """
        Called once when the peer has half-closed.  By default: close once
        everything written so far has been sent.
        """
        self.closeWhenFlushed()

    def closeWhenFlushed(self) -> None:
        """
        Close the connection once every byte already written has been sent.

        The producer is unregistered first: a transport with a paused
        producer never finishes closing.
        """
        if self._flags & CLOSING:
            return
        self._flags |= CLOSING
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def lingeringClose(self) -> None:
        """
        Close after last words (an C{ERROR} line) in a way that lets the peer
        read them even while it is still sending.

        Closing a socket that has unread input makes the kernel send a reset,
        which can destroy our last words before the peer reads them.  So:
        send what is written and then FIN, read and discard whatever the peer
        still sends, and close once it closes too.  After L{LINGER_SECONDS}
        the connection is aborted, sent or not.
        """
        flags = self._flags
        if flags & CLOSING:
            return
        if flags & INPUT_CLOSED:
            self.closeWhenFlushed()
            return
        self._flags = flags | CLOSING | LINGERING
        if not flags & REFUSED:
            self.transport.unregisterProducer()
        self.transport.resumeProducing()
        self.transport.loseWriteConnection()
        self._getExtra().lingerTimer = self.factory.clock.callLater(
            LINGER_SECONDS, self.transport.abortConnection
        )

    # Flow control (IPushProducer, registered on our own transport).

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full: stop reading until it drains.
        """
        self._flags |= WRITE_BLOCKED
        self._updateReading()

    def resumeProducing(self) -> None:
        """
        The transport's write buffer has drained: read again unless held.
        """
        self._flags &= ~WRITE_BLOCKED
        if self._flags & QUEUED:
            self._sendQueued()
        self._updateReading()

    def stopProducing(self) -> None:
        """
        The connection is going away; L{connectionLost} follows.
        """

    def holdReading(self) -> None:
        """
        Keep reading paused, for a reason of the subclass's own, until a
        matching L{releaseReading}.  Holds nest.
        """
        extra = self._getExtra()
        extra.holds += 1
        if extra.holds > 0:
            self._flags |= HELD
        self._updateReading()

    def releaseReading(self) -> None:
        """
        Drop one hold taken with L{holdReading}.
        """
        extra = self._getExtra()
        extra.holds -= 1
        if extra.holds <= 0:
            self._flags &= ~HELD
        self._updateReading()

    def summary(self) -> str:
        """
        Describe this connection's traffic for the log line at its close.
        """
        return f"{self.bytesIn} bytes in, {self.bytesOut} bytes out"

    def _updateReading(self) -> None:
        flags = self._flags
        pause = bool(flags & (WRITE_BLOCKED | HELD))
        if pause == bool(flags & READING_PAUSED) or flags & (INPUT_CLOSED | CLOSING):
            return
        if pause:
            self._flags = flags | READING_PAUSED
            self.factory.stats.readPauses += 1
            self.transport.pauseProducing()
        else:
            self._flags = flags & ~READING_PAUSED
            self.transport.resumeProducing()


def describePeer(transport: ITransport) -> str:
    """
    Name a connection's peer for log lines: its address, or for a UNIX
    socket client (which has no name of its own) the socket it connected to
    and the connection's number.
    """
    peer = transport.getPeer()
    if isinstance(peer, UNIXAddress) and not peer.name:
        number = getattr(transport, "sessionno", "?")
        return f"{formatAddress(transport.getHost())}#{number}"
    return formatAddress(peer)


class OpenConnections(AbstractSet[ConnectionProtocol]):
    """
    The connections a factory has open, in the order they opened: a
    read-only set (it compares equal to a C{set} of the same connections).

    The connections themselves are the links of a doubly linked list, which
    costs each of them two pointers and nothing more: less than a C{set} or
    C{dict} entry, and no table to grow.  Adding and removing are O(1).
    Iterating tolerates connections closing meanwhile (the current one
    included); connections that open meanwhile may or may not be seen.
    """

    __slots__ = ("_count", "_first", "_last")

    def __init__(self) -> None:
        self._first: ConnectionProtocol | None = None
        self._last: ConnectionProtocol | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, ConnectionProtocol):
            return False
        if item._prev is None and item is not self._first:
            return False
        # Linked: in this set, unless another factory's.
        owner = getattr(item, "factory", None)
        return getattr(owner, "connections", self) is self

    def __iter__(self) -> Iterator[ConnectionProtocol]:
        node = self._first
        while node is not None:
            if node._prev is not None or node is self._first:
                yield node
            # A connection removed meanwhile keeps its link forward.
            node = node._next

    def __repr__(self) -> str:
        return f"<OpenConnections: {self._count}>"

    def add(self, protocol: ConnectionProtocol) -> None:
        """
        Add C{protocol}, which must not be in any L{OpenConnections}.
        """
        last = self._last
        protocol._prev = last
        protocol._next = None
        if last is None:
            self._first = protocol
        else:
            last._next = protocol
        self._last = protocol
        self._count += 1

    def remove(self, protocol: ConnectionProtocol) -> None:
        """
        Remove C{protocol}, which must be in this set.
        """
        before, after = protocol._prev, protocol._next
        if before is None:
            self._first = after
        else:
            before._next = after
        if after is None:
            self._last = before
        else:
            after._prev = before
        # Its forward link stays, for an iteration standing on it.
        protocol._prev = None
        self._count -= 1


if TYPE_CHECKING:
    _FactoryBase = Factory[ConnectionProtocol]
else:
    # Factory is generic only from Twisted 25.5 on.
    _FactoryBase = Factory


class ConnectionFactory(_FactoryBase):
    """
    Base class for tcpcomm's server factories: keeps L{ServerStats}, the set
    of open connections and their limits, logs each connection's opening
    and closing, and closes idle connections.

    The idle timeout costs one timer per factory, not one per connection:
    while connections are open, the factory sweeps them L{IDLE_SWEEPS} times
    per timeout, and a connection that no sweep has seen active for a whole
    timeout is timed out.  So a connection idle for the timeout T is told
    between T and T + T/4 after its last activity, and one that is closing
    and makes no progress is aborted within the same margin.

    @ivar stats: Counters for every connection this factory built.
    @ivar limits: The connection limits, in all and per client host.
    @ivar idleTimeout: Seconds without activity after which a connection is
        closed, or C{None}.  Read at each sweep; a change applies from the
        next sweep, or from the next connection when none are open.
    @ivar maxPendingBytes: How many bytes of unasked data (see
        L{ConnectionProtocol.sendUnasked}) may wait for a slow peer before it
        is dropped as too slow, or C{None} for no limit (and no queue: data
        goes straight to the transport).
    """

    protocol: type[ConnectionProtocol] = ConnectionProtocol
    _log: ClassVar[Logger] = Logger()

    def __init__(
        self,
        *,
        clock: IReactorTime | None = None,
        idleTimeout: float | None = None,
        maxConnections: int | None = None,
        maxConnectionsPerHost: int | None = None,
        maxPendingBytes: int | None = None,
    ) -> None:
        """
        @param clock: The clock for timers (the global reactor by default,
            looked up when first needed).
        @param maxPendingBytes: See L{maxPendingBytes}.
        @param idleTimeout: See L{idleTimeout}; C{None} or 0 to never time
            out.
        @param maxConnections: The most connections open at once, or C{None}.
        @param maxConnectionsPerHost: The most connections open at once from
            one IP address, or C{None}.
        """
        if idleTimeout is not None and idleTimeout < 0:
            raise ValueError(f"idleTimeout must not be negative, not {idleTimeout}")
        self.stats = ServerStats()
        self._open = OpenConnections()
        self.limits = ConnectionLimits(maxConnections, maxConnectionsPerHost)
        self.idleTimeout = idleTimeout or None
        if maxPendingBytes is not None and maxPendingBytes < 1:
            raise ValueError(
                f"maxPendingBytes must be at least 1, not {maxPendingBytes}"
            )
        self.maxPendingBytes = maxPendingBytes
        self._clock = clock
        self._sweeper: IDelayedCall | None = None
        self._sweepDue = 0.0
        self._drained: list[Deferred[None]] = []

    @property
    def connections(self) -> OpenConnections:
        """
        The connections open now (refused ones not counted), in the order
        they opened.
        """
        return self._open

    @property
    def clock(self) -> IReactorTime:
        """
        The clock this factory's connections schedule their timers with.
        """
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = cast(IReactorTime, reactor)
        return self._clock

    @clock.setter
    def clock(self, clock: IReactorTime) -> None:
        self._clock = clock

    def buildProtocol(self, addr: IAddress | None) -> ConnectionProtocol:
        """
        Build a protocol of this factory's C{protocol} class.
        """
        protocol = self.protocol()
        protocol.factory = self
        return protocol

    def connectionOpened(self, protocol: ConnectionProtocol) -> str | None:
        """
        Admit, count and log a new connection, and watch it for idleness.

        @return: C{None} if it is admitted, else why it is refused.
        """
        refusal = self.limits.admit(protocol.host)
        if refusal is not None:
            self.stats.connectionsRefused += 1
            self._log.warn(
                "{peer} refused: {reason}",
                peer=protocol.peer,
                reason=refusal,
                event="refused",
            )
            return refusal
        self._open.add(protocol)
        self.stats.connectionsOpen += 1
        self.stats.connectionsTotal += 1
        self._log.info("{peer} connected", peer=protocol.peer, event="connected")
        if self._sweeper is None and self.idleTimeout:
            self._scheduleSweep(self.clock.seconds() + self.idleTimeout / IDLE_SWEEPS)
        return None

    def connectionClosed(self, protocol: ConnectionProtocol, reason: Failure) -> None:
        """
        Count and log a closed connection with its byte counts.
        """
        if protocol not in self._open:
            return
        self._open.remove(protocol)
        self.limits.release(protocol.host)
        self.stats.connectionsOpen -= 1
        self._log.info(
            "{peer} disconnected: {summary} ({reason})",
            peer=protocol.peer,
            summary=protocol.summary(),
            bytesIn=protocol.bytesIn,
            bytesOut=protocol.bytesOut,
            reason=reason.getErrorMessage(),
            event="disconnected",
        )
        if not self._open:
            sweeper, self._sweeper = self._sweeper, None
            if sweeper is not None and sweeper.active():
                sweeper.cancel()
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def _sweep(self) -> None:
        """
        Count one more idle sweep for every open connection that was not
        active since the last one; time out those idle for a whole timeout.
        """
        self._sweeper = None
        timeout = self.idleTimeout
        if not timeout:
            return
        for protocol in self._open:
            protocol.idleSweep()
        if self._open and self._sweeper is None:
            # On the schedule, not an interval after this sweep ran, so that
            # lateness does not add up; but never sooner than an interval
            # from now after a stall, so that sweeps do not come in a burst
            # (which would time connections out early).
            interval = timeout / IDLE_SWEEPS
            now = self.clock.seconds()
            due = self._sweepDue + interval
            self._scheduleSweep(due if due > now else now + interval)

    def _scheduleSweep(self, due: float) -> None:
        self._sweepDue = due
        # The clock moves on while this runs: a sweep due a tiny interval
        # from "now" may be due already (a reactor refuses a negative delay).
        delay = due - self.clock.seconds()
        self._sweeper = self.clock.callLater(delay if delay > 0 else 0, self._sweep)

    def shutDown(self, timeout: float) -> Deferred[None]:
        """
        Ask every open connection to finish (L{ConnectionProtocol.shutDown}):
        pending replies are sent, then each closes.  Connections still open
        after C{timeout} seconds are aborted.

        Stop listening first, or new connections keep coming.

        @return: A Deferred that fires once no connection is left.
        """
        if not self._open:
            return succeed(None)
        self._log.info(
            "Shutting down: finishing {count} connections (at most {timeout} s)",
            count=len(self._open),
            timeout=timeout,
            event="shutdown",
        )
        done: Deferred[None] = Deferred()
        self._drained.append(done)
        for protocol in list(self._open):
            protocol.shutDown()

        def abortTheRest() -> None:
            self._log.warn(
                "Shutdown timeout: aborting {count} connections",
                count=len(self._open),
                event="shutdown_timeout",
            )
            for protocol in list(self._open):
                protocol.transport.abortConnection()

        backstop = self.clock.callLater(timeout, abortTheRest)

        def stopBackstop(result: None) -> None:
            if backstop.active():
                backstop.cancel()

        return done.addCallback(stopBackstop)
