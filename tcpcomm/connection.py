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

from typing import TYPE_CHECKING, ClassVar, cast

from twisted.internet.address import UNIXAddress
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
reset.
"""


@implementer(IHalfCloseableProtocol, IPushProducer)
class ConnectionProtocol(Protocol):
    """
    Base class for tcpcomm's server protocols.

    Subclasses implement C{dataReceived}, call L{countIn} and L{send} so the
    counters stay right, and override L{inputEnded} to act on the peer's
    half-close.

    @ivar factory: The L{ConnectionFactory} that built this protocol.
    @ivar peer: The peer's address as text, set when the connection is made.
    @ivar bytesIn: Bytes received on this connection.
    @ivar bytesOut: Bytes sent (handed to the transport) on this connection.
    @ivar readingPaused: Whether reading from the socket is paused now.
    @ivar inputClosed: Whether the peer has half-closed (sent FIN).
    @ivar closing: Whether this side has decided to close.
    @ivar lingering: Whether this side has sent its last words and now
        discards input until the peer closes (see L{lingeringClose}).
    @ivar disconnected: Whether the connection is gone.
    """

    factory: ConnectionFactory
    transport: IFlowControlledTransport
    _log: ClassVar[Logger] = Logger()

    peer: str = "(not connected)"
    bytesIn: int = 0
    bytesOut: int = 0
    readingPaused: bool = False
    inputClosed: bool = False
    closing: bool = False
    lingering: bool = False
    disconnected: bool = False
    _lingerTimer: IDelayedCall | None = None
    _writeBlocked: bool = False
    _holds: int = 0

    def connectionMade(self) -> None:
        """
        Register as our transport's producer and tell the factory.
        """
        self.peer = describePeer(self.transport)
        self.transport.registerProducer(self, True)
        self.factory.connectionOpened(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Tell the factory, which logs the connection's totals.
        """
        self.closing = True
        self.disconnected = True
        if self._lingerTimer is not None and self._lingerTimer.active():
            self._lingerTimer.cancel()
        self.factory.connectionClosed(self, reason)

    # Counting and sending.

    def countIn(self, size: int) -> None:
        """
        Count C{size} bytes received; call once per C{dataReceived}.
        """
        self.bytesIn += size
        self.factory.stats.bytesIn += size

    def send(self, data: bytes) -> None:
        """
        Write C{data} to the peer and count it.
        """
        size = len(data)
        self.bytesOut += size
        self.factory.stats.bytesOut += size
        self.transport.write(data)

    # Half-close (IHalfCloseableProtocol).

    def readConnectionLost(self) -> None:
        """
        The peer half-closed: it will send nothing more.  Never read again,
        then hand over to L{inputEnded}.
        """
        self.inputClosed = True
        if self.lingering:
            self.transport.loseConnection()
            return
        self.inputEnded()

    def writeConnectionLost(self) -> None:
        """
        Our sending side was closed; tcpcomm servers never half-close, so
        there is nothing to do.
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
        still sends, and close once it closes too, or after
        L{LINGER_SECONDS}.
        """
        if self.closing:
            return
        if self.inputClosed:
            self.closeWhenFlushed()
            return
        self.closing = True
        self.lingering = True
        self.transport.unregisterProducer()
        self.transport.resumeProducing()
        self.transport.loseWriteConnection()
        self._lingerTimer = self.factory.clock.callLater(
            LINGER_SECONDS, self.transport.loseConnection
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
    Base class for tcpcomm's server factories: keeps L{ServerStats} and the
    set of open connections, and logs each connection's opening and closing.

    @ivar stats: Counters for every connection this factory built.
    @ivar connections: The connections open now.
    """

    protocol: type[ConnectionProtocol] = ConnectionProtocol
    _log: ClassVar[Logger] = Logger()

    def __init__(self, *, clock: IReactorTime | None = None) -> None:
        """
        @param clock: The clock for timers (the global reactor by default,
            looked up when first needed).
        """
        self.stats = ServerStats()
        self.connections: set[ConnectionProtocol] = set()
        self._clock = clock

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

    def connectionOpened(self, protocol: ConnectionProtocol) -> None:
        """
        Count and log a new connection.
        """
        self.connections.add(protocol)
        self.stats.connectionsOpen += 1
        self.stats.connectionsTotal += 1
        self._log.info("{peer} connected", peer=protocol.peer)

    def connectionClosed(self, protocol: ConnectionProtocol, reason: Failure) -> None:
        """
        Count and log a closed connection with its byte counts.
        """
        if protocol not in self.connections:
            return
        self.connections.discard(protocol)
        self.stats.connectionsOpen -= 1
        self._log.info(
            "{peer} disconnected: {summary} ({reason})",
            peer=protocol.peer,
            summary=protocol.summary(),
            bytesIn=protocol.bytesIn,
            bytesOut=protocol.bytesOut,
            reason=reason.getErrorMessage(),
        )
