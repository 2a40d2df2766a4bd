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
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, ClassVar, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpcomm.endpoints import formatAddress
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


@implementer(IHalfCloseableProtocol, IPushProducer)
class ConnectionProtocol(Protocol):
    """
    Base class for tcpcomm's server protocols.

    Subclasses implement C{dataReceived}, call L{countIn} and L{send} so the
    counters stay right, call L{touch} on activity that sends nothing, and
    override L{inputEnded}, L{refuse}, L{idleTimedOut} and L{shutDown} where
    they have something to say.

    Every way of closing has a backstop: a connection that is closing and
    makes no progress for the idle timeout (or, when lingering,
    L{LINGER_SECONDS}) is aborted, so none hangs on a peer that never reads.

    @ivar factory: The L{ConnectionFactory} that built this protocol.
    @ivar peer: The peer's address as text, set when the connection is made.
    @ivar host: The peer's IP address, or C{None} (UNIX sockets).
    @ivar bytesIn: Bytes received on this connection.
    @ivar bytesOut: Bytes sent (handed to the transport) on this connection.
    @ivar readingPaused: Whether reading from the socket is paused now.
    @ivar inputClosed: Whether the peer has half-closed (sent FIN).
    @ivar refused: Whether this connection was over a limit and refused.
    @ivar closing: Whether this side has decided to close.
    @ivar lingering: Whether this side has sent its last words and now
        discards input until the peer closes (see L{lingeringClose}).
    @ivar disconnected: Whether the connection is gone.
    """

    factory: ConnectionFactory
    transport: IFlowControlledTransport
    _log: ClassVar[Logger] = Logger()

    peer: str = "(not connected)"
    host: str | None = None
    bytesIn: int = 0
    bytesOut: int = 0
    readingPaused: bool = False
    inputClosed: bool = False
    refused: bool = False
    closing: bool = False
    lingering: bool = False
    disconnected: bool = False
    _lingerTimer: IDelayedCall | None = None
    _idleTimer: IDelayedCall | None = None
    _lastActivity: float = 0.0
    _timedOut: bool = False
    _writeBlocked: bool = False
    _holds: int = 0
    _queued: deque[bytes] | tuple[()] = ()
    _queuedBytes: int = 0

    def connectionMade(self) -> None:
        """
        Ask the factory to admit the connection; if it does, register as
        our transport's producer and start the idle clock, else refuse.
        """
        self.peer = describePeer(self.transport)
        address = self.transport.getPeer()
        if isinstance(address, (IPv4Address, IPv6Address)):
            self.host = address.host
        refusal = self.factory.connectionOpened(self)
        if refusal is not None:
            self.refused = True
            self.refuse(refusal)
            return
        self.transport.registerProducer(self, True)
        timeout = self.factory.idleTimeout
        if timeout:
            clock = self.factory.clock
            self._lastActivity = clock.seconds()
            self._idleTimer = clock.callLater(timeout, self._checkIdle)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop the timers and tell the factory, which logs the connection's
        totals.
        """
        self.closing = True
        self.disconnected = True
        for timer in (self._lingerTimer, self._idleTimer):
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
        if self._idleTimer is not None:
            self._lastActivity = self.factory.clock.seconds()

    def sendUnasked(self, data: bytes) -> None:
        """
        Send C{data} the peer did not ask for (a chat message, a notice), in
        a way that never makes anyone wait for this peer: if its transport's
        buffer is full, C{data} waits in a queue of this connection's own,
        sent as the buffer drains.  When that queue would pass the factory's
        C{maxPendingBytes}, the peer is too slow: L{tooSlow}.
        """
        if (
            not (self._writeBlocked or self._queued)
            or self.factory.maxPendingBytes is None
        ):
            self.send(data)
            return
        if self.closing:
            return
        if not self._queued:
            self._queued = deque()
        self._queued.append(data)
        self._queuedBytes += len(data)
        if self._queuedBytes > self.factory.maxPendingBytes:
            self._queued = ()
            self._queuedBytes = 0
            self.factory.stats.tooSlow += 1
            self._log.info(
                "{peer} is too slow: over {limit} bytes waiting; closing",
                peer=self.peer,
                limit=self.factory.maxPendingBytes,
            )
            self.tooSlow()

    def _sendQueued(self) -> None:
        """
        Send what L{sendUnasked} queued, until the transport is full again.
        """
        queued = self._queued
        while queued and not self._writeBlocked and not self.closing:
            data = queued.popleft()
            self._queuedBytes -= len(data)
            self.send(data)

    def touch(self) -> None:
        """
        Note activity that sends nothing (a line handled without a reply),
        putting off the idle timeout.
        """
        if self._idleTimer is not None:
            self._lastActivity = self.factory.clock.seconds()

    def _checkIdle(self) -> None:
        """
        The idle timer fired: time out if nothing happened for the idle
        timeout, else wait for the rest of it.
        """
        clock = self.factory.clock
        timeout = self.factory.idleTimeout
        assert timeout
        idle = clock.seconds() - self._lastActivity
        if idle < timeout:
            self._idleTimer = clock.callLater(timeout - idle, self._checkIdle)
            return
        if self.isBusy() and not self.closing:
            self._lastActivity = clock.seconds()
            self._idleTimer = clock.callLater(timeout, self._checkIdle)
            return
        self._idleTimer = None
        if self.closing or self._timedOut:
            # Closing, or timed out already, and no progress for a whole
            # timeout since: give up on it.
            self._log.info(
                "{peer} made no progress while closing; aborting", peer=self.peer
            )
            self.transport.abortConnection()
            return
        self._timedOut = True
        self.factory.stats.idleTimeouts += 1
        self._log.info(
            "{peer} idle for {timeout} s; closing", peer=self.peer, timeout=timeout
        )
        self._idleTimer = clock.callLater(timeout, self._checkIdle)
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
        self.inputClosed = True
        if self.lingering or self.refused:
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
        if self.closing:
            return
        self.closing = True
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
        if self.closing:
            return
        if self.inputClosed:
            self.closeWhenFlushed()
            return
        self.closing = True
        self.lingering = True
        if not self.refused:
            self.transport.unregisterProducer()
        self.transport.resumeProducing()
        self.transport.loseWriteConnection()
        self._lingerTimer = self.factory.clock.callLater(
            LINGER_SECONDS, self.transport.abortConnection
        )

    # Flow control (IPushProducer, registered on our own transport).

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full: stop reading until it drains.
        """
        self._writeBlocked = True
        self._updateReading()

    def resumeProducing(self) -> None:
        """
        The transport's write buffer has drained: read again unless held.
        """
        self._writeBlocked = False
        if self._queued:
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
        self._holds += 1
        self._updateReading()

    def releaseReading(self) -> None:
        """
        Drop one hold taken with L{holdReading}.
        """
        self._holds -= 1
        self._updateReading()

    def summary(self) -> str:
        """
        Describe this connection's traffic for the log line at its close.
        """
        return f"{self.bytesIn} bytes in, {self.bytesOut} bytes out"

    def _updateReading(self) -> None:
        pause = self._writeBlocked or self._holds > 0
        if pause == self.readingPaused or self.inputClosed or self.closing:
            return
        self.readingPaused = pause
        if pause:
            self.transport.pauseProducing()
        else:
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


if TYPE_CHECKING:
    _FactoryBase = Factory[ConnectionProtocol]
else:
    # Factory is generic only from Twisted 25.5 on.
    _FactoryBase = Factory


class ConnectionFactory(_FactoryBase):
    """
    Base class for tcpcomm's server factories: keeps L{ServerStats}, the set
    of open connections and their limits, and logs each connection's opening
    and closing.

    @ivar stats: Counters for every connection this factory built.
    @ivar connections: The connections open now (refused ones not counted).
    @ivar limits: The connection limits, in all and per client host.
    @ivar idleTimeout: Seconds without activity after which a connection is
        closed, or C{None}.
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
        self.connections: set[ConnectionProtocol] = set()
        self.limits = ConnectionLimits(maxConnections, maxConnectionsPerHost)
        self.idleTimeout = idleTimeout or None
        if maxPendingBytes is not None and maxPendingBytes < 1:
            raise ValueError(
                f"maxPendingBytes must be at least 1, not {maxPendingBytes}"
            )
        self.maxPendingBytes = maxPendingBytes
        self._clock = clock
        self._drained: list[Deferred[None]] = []

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
        Admit, count and log a new connection.

        @return: C{None} if it is admitted, else why it is refused.
        """
        refusal = self.limits.admit(protocol.host)
        if refusal is not None:
            self.stats.connectionsRefused += 1
            self._log.warn(
                "{peer} refused: {reason}", peer=protocol.peer, reason=refusal
            )
            return refusal
        self.connections.add(protocol)
        self.stats.connectionsOpen += 1
        self.stats.connectionsTotal += 1
        self._log.info("{peer} connected", peer=protocol.peer)
        return None

    def connectionClosed(self, protocol: ConnectionProtocol, reason: Failure) -> None:
        """
        Count and log a closed connection with its byte counts.
        """
        if protocol not in self.connections:
            return
        self.connections.discard(protocol)
        self.limits.release(protocol.host)
        self.stats.connectionsOpen -= 1
        self._log.info(
            "{peer} disconnected: {summary} ({reason})",
            peer=protocol.peer,
            summary=protocol.summary(),
            bytesIn=protocol.bytesIn,
            bytesOut=protocol.bytesOut,
            reason=reason.getErrorMessage(),
        )
        if not self.connections:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def shutDown(self, timeout: float) -> Deferred[None]:
        """
        Ask every open connection to finish (L{ConnectionProtocol.shutDown}):
        pending replies are sent, then each closes.  Connections still open
        after C{timeout} seconds are aborted.

        Stop listening first, or new connections keep coming.

        @return: A Deferred that fires once no connection is left.
        """
        if not self.connections:
            return succeed(None)
        self._log.info(
            "Shutting down: finishing {count} connections (at most {timeout} s)",
            count=len(self.connections),
            timeout=timeout,
        )
        done: Deferred[None] = Deferred()
        self._drained.append(done)
        for protocol in list(self.connections):
            protocol.shutDown()

        def abortTheRest() -> None:
            self._log.warn(
                "Shutdown timeout: aborting {count} connections",
                count=len(self.connections),
            )
            for protocol in list(self.connections):
                protocol.transport.abortConnection()

        backstop = self.clock.callLater(timeout, abortTheRest)

        def stopBackstop(result: None) -> None:
            if backstop.active():
                backstop.cancel()

        return done.addCallback(stopBackstop)
