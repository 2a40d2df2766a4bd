# -*- test-case-name: tests.test_proxied -*-
"""
Serving behind a load balancer that speaks the PROXY protocol
(C{--port haproxy:tcp:8000}): the client's address comes from the header
the balancer sends first, parsed by L{tcpcomm.proxyheader}.

L{ProxyHeaderFactory} wraps the factory a port serves.  Each connection
starts as a L{ProxyHeaderProtocol}, which only collects the header: the
served protocol is not built until the header is whole, so it is connected
once, with the client's address as C{getPeer()} and the address the client
reached as C{getHost()} -- limits, logs, chat names and relay tags see the
client, never the balancer.  The bytes that came after the header are
delivered in the same turn.  A header that is malformed or not complete
within the header timeout closes the connection with one log line naming
the balancer and counts C{stats.proxyHeaderErrors}; nothing else was built,
so nothing else is counted, and shutdown does not wait for it.  C{LOCAL}
(health checks) and version 1 C{UNKNOWN} keep the balancer's own address.

Once the header is parsed the wrapper steps out of the way: the socket's
transport delivers straight to the served protocol
(L{tcpcomm.twistedprivate.replaceProtocol}), and the served protocol gets
a L{ProxiedTransport}, whose C{write} I{is} the socket transport's
C{write}, and which differs only in C{getPeer} and C{getHost}.  So reads,
writes, half-close (C{readConnectionLost}) and flow control
(C{registerProducer}, pause and resume) are Twisted's own, at no cost per
read.

Where the header goes: a C{haproxy:} port lists a wrapped factory at the
bottom of the stack, under TLS for C{haproxy:ssl:}, because balancers send
the header before the TLS handshake.  L{proxiedListening} does it by
handing the endpoint a reactor whose C{listenTCP}, C{listenUNIX} and
C{adoptStreamPort} wrap the factory they are given (L{proxiedReactor}), so
every endpoint kind (C{tcp}, C{tcp6}, C{unix}, C{ssl}, C{systemd}), plain
or as a C{--workers} worker, gets the header first.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ISystemHandle,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpcomm.connection import describePeer
from tcpcomm.endpoints import splitProxied
from tcpcomm.proxyheader import (
    DEFAULT_MAX_V2_LENGTH,
    ProxyAddress,
    ProxyHeaderError,
    parseProxyHeader,
)
from tcpcomm.stats import ServerStats
from tcpcomm.twistedprivate import replaceProtocol

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "ProxiedTransport",
    "ProxyHeaderFactory",
    "ProxyHeaderProtocol",
    "proxiedListening",
    "proxiedReactor",
    "twistedAddress",
]

DEFAULT_HEADER_TIMEOUT = 3.0
"""
Seconds a connection to a C{haproxy:} port has to send its whole PROXY
header (the specification suggests receivers wait at least 3 s).
"""


def twistedAddress(address: ProxyAddress) -> IAddress:
    """
    The Twisted address of one end named in a PROXY header.
    """
    if address.family == "inet":
        return IPv4Address("TCP", address.host, address.port)
    if address.family == "inet6":
        return IPv6Address("TCP", address.host, address.port)
    return UNIXAddress(address.host)


@implementer(ITCPTransport, ISystemHandle, IConsumer, IPushProducer)
class ProxiedTransport:
    """
    The socket's transport as the served protocol sees it behind a balancer:
    the same in every way but C{getPeer} (the client the header names) and
    C{getHost} (the address that client reached).

    C{write} and C{writeSequence} are the socket transport's own bound
    methods, not calls through this object, so writing costs nothing more.
    """

    __slots__ = ("_host", "_peer", "_transport", "write", "writeSequence")

    def __init__(self, transport: ITransport, peer: IAddress, host: IAddress) -> None:
        self._transport: Any = transport
        self._peer = peer
        self._host = host
        self.write = transport.write
        self.writeSequence = transport.writeSequence

    # A UNIX address where the header names UNIX sockets, as UNIX
    # transports (which also provide ITCPTransport's methods) have.
    def getPeer(self) -> IAddress:  # type: ignore[override]
        return self._peer

    def getHost(self) -> IAddress:  # type: ignore[override]
        return self._host

    def loseConnection(self) -> None:
        self._transport.loseConnection()

    def abortConnection(self) -> None:
        self._transport.abortConnection()

    def loseWriteConnection(self) -> None:
        self._transport.loseWriteConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        self._transport.stopProducing()

    def getTcpNoDelay(self) -> bool:
        return bool(self._transport.getTcpNoDelay())

    def setTcpNoDelay(self, enabled: bool) -> None:
        self._transport.setTcpNoDelay(enabled)

    def getTcpKeepAlive(self) -> bool:
        return bool(self._transport.getTcpKeepAlive())

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self._transport.setTcpKeepAlive(enabled)

    def getHandle(self) -> Any:
        return self._transport.getHandle()

    def __getattr__(self, name: str) -> Any:
        # Everything else (connected, disconnecting, sessionno, logstr...)
        # is the socket transport's.
        if name == "_transport":
            raise AttributeError(name)
        return getattr(self._transport, name)

    def __repr__(self) -> str:
        return f"<ProxiedTransport for {self._peer} over {self._transport!r}>"


@implementer(IProtocol, IHalfCloseableProtocol, ILoggingContext)
class ProxyHeaderProtocol:
    """
    A connection to a C{haproxy:} port until its PROXY header is parsed;
    then the served protocol's, which this one hands the connection to.

    @ivar factory: The L{ProxyHeaderFactory} that built it.
    @ivar transport: The socket's transport.
    @ivar wrappedProtocol: The served protocol, once the header is in.
    """

    __slots__ = (
        "_buffer",
        "_done",
        "_timer",
        "factory",
        "transport",
        "wrappedProtocol",
    )

    factory: ProxyHeaderFactory
    transport: ITransport
    _log: ClassVar[Logger] = Logger()

    def __init__(self) -> None:
        self._buffer = b""
        self._done = False
        self._timer: IDelayedCall | None = None
        self.wrappedProtocol: IProtocol | None = None

    def logPrefix(self) -> str:
        return f"{self.factory.logPrefix()}"

    def makeConnection(self, transport: ITransport) -> None:
        self.transport = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        """
        Start the header timeout.
        """
        timeout = self.factory.headerTimeout
        if timeout:
            self._timer = self.factory.clock.callLater(timeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        """
        Collect the header; once it is whole, connect the served protocol
        and give it the rest.  After that, pass everything on (only reached
        when the transport could not be told to deliver to it directly).
        """
        wrapped = self.wrappedProtocol
        if wrapped is not None:
            wrapped.dataReceived(data)
            return
        if self._done:
            return
        buffered = self._buffer + data if self._buffer else data
        try:
            parsed = parseProxyHeader(buffered, self.factory.maxV2Length)
        except ProxyHeaderError as e:
            self._buffer = b""
            self._fail(f"bad PROXY header: {e}")
            return
        if parsed is None:
            self._buffer = buffered
            return
        self._buffer = b""
        self._done = True
        self._stopTimer()
        header, rest = parsed
        transport: ITransport = self.transport
        if header.source is not None and header.destination is not None:
            peer = twistedAddress(header.source)
            transport = cast(
                ITransport,
                ProxiedTransport(
                    self.transport, peer, twistedAddress(header.destination)
                ),
            )
        else:
            # LOCAL (a health check) or UNKNOWN: the balancer's own.
            peer = self.transport.getPeer()
        wrapped = self.factory.wrappedFactory.buildProtocol(peer)
        if wrapped is None:
            self.transport.loseConnection()
            return
        self.wrappedProtocol = wrapped
        replaceProtocol(self.transport, self, wrapped)
        wrapped.makeConnection(transport)
        if rest:
            wrapped.dataReceived(rest)

    def readConnectionLost(self) -> None:
        """
        The peer half-closed: pass it on, or, still in the header, close
        (and count an error if part of a header had come).
        """
        wrapped = self.wrappedProtocol
        if wrapped is not None:
            halfCloseable = IHalfCloseableProtocol(wrapped, None)
            if halfCloseable is not None:
                halfCloseable.readConnectionLost()
            else:
                self.transport.loseConnection()
            return
        if self._done:
            return
        if self._buffer:
            self._fail("connection closed inside its PROXY header")
            return
        self._done = True
        self._stopTimer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        wrapped = self.wrappedProtocol
        halfCloseable = IHalfCloseableProtocol(wrapped, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopTimer()
        wrapped = self.wrappedProtocol
        if wrapped is not None:
            wrapped.connectionLost(reason)

    def _stopTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _timedOut(self) -> None:
        self._timer = None
        self._fail(
            f"no complete PROXY header in {self.factory.headerTimeout:g} s",
            abort=True,
        )

    def _fail(self, reason: str, abort: bool = False) -> None:
        """
        Close for C{reason}, in one log line, and count it.
        """
        self._done = True
        self._stopTimer()
        stats = self.factory.stats
        if stats is not None:
            stats.proxyHeaderErrors += 1
        # The peer here is the balancer (or whoever else connected).
        self._log.warn(
            "{peer} {reason}; closing",
            peer=describePeer(self.transport),
            reason=reason,
            event="proxy_header_error",
        )
        if abort:
            cast(ITCPTransport, self.transport).abortConnection()
        else:
            self.transport.loseConnection()


class ProxyHeaderFactory(Factory):
    """
    Wrap C{wrappedFactory} so that each connection's PROXY header is read
    before a protocol of C{wrappedFactory}'s is built (L{ProxyHeaderProtocol}).

    @ivar wrappedFactory: The factory served.
    @ivar headerTimeout: Seconds a connection gets to send its whole header,
        or C{None} (or 0) for no limit.
    @ivar stats: Where C{proxyHeaderErrors} is counted: by default the
        L{ServerStats} of the first factory down the C{wrappedFactory} chain
        that has one (under TLS, the served factory's).
    @ivar maxV2Length: The most bytes of addresses and TLVs accepted in a
        version 2 header.
    """

    noisy = False

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        headerTimeout: float | None = DEFAULT_HEADER_TIMEOUT,
        stats: ServerStats | None = None,
        clock: IReactorTime | None = None,
        maxV2Length: int = DEFAULT_MAX_V2_LENGTH,
    ) -> None:
        self.wrappedFactory = wrappedFactory
        self.headerTimeout = headerTimeout or None
        self.stats = stats if stats is not None else _statsOf(wrappedFactory)
        self.maxV2Length = maxV2Length
        self._clock = clock

    @property
    def clock(self) -> IReactorTime:
        """
        The clock of header timeouts: the global reactor unless given.
        """
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = cast(IReactorTime, reactor)
        return self._clock

    def logPrefix(self) -> str:
        wrapped = self.wrappedFactory
        prefix = (
            wrapped.logPrefix()
            if ILoggingContext.providedBy(wrapped)
            else type(wrapped).__name__
        )
        return f"{prefix} (PROXY)"

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def buildProtocol(self, addr: IAddress) -> ProxyHeaderProtocol:  # type: ignore[override]
        protocol = ProxyHeaderProtocol()
        protocol.factory = self
        return protocol


def _statsOf(factory: object) -> ServerStats | None:
    """
    The L{ServerStats} of C{factory} or of the factory it wraps, and so on.
    """
    for _ in range(8):
        stats = getattr(factory, "stats", None)
        if isinstance(stats, ServerStats):
            return stats
        factory = getattr(factory, "wrappedFactory", None)
        if factory is None:
            return None
    return None


class _ProxiedReactor:
    """
    A reactor as Twisted's server endpoints see it: everything is the real
    one's, except that what listens wraps its factory in a
    L{ProxyHeaderFactory}.
    """

    def __init__(self, reactor: Any, headerTimeout: float | None) -> None:
        self._reactor = reactor
        self._headerTimeout = headerTimeout

    def _wrap(self, factory: IProtocolFactory) -> ProxyHeaderFactory:
        return ProxyHeaderFactory(factory, self._headerTimeout)

    def listenTCP(
        self, port: int, factory: IProtocolFactory, *args: Any, **kwargs: Any
    ) -> Any:
        return self._reactor.listenTCP(port, self._wrap(factory), *args, **kwargs)

    def listenUNIX(
        self, address: Any, factory: IProtocolFactory, *args: Any, **kwargs: Any
    ) -> Any:
        return self._reactor.listenUNIX(address, self._wrap(factory), *args, **kwargs)

    def adoptStreamPort(
        self, fileDescriptor: int, addressFamily: Any, factory: IProtocolFactory
    ) -> Any:
        return self._reactor.adoptStreamPort(
            fileDescriptor, addressFamily, self._wrap(factory)
        )

    def listenSSL(self, *args: Any, **kwargs: Any) -> Any:
        # Twisted's TLS port would read the header inside TLS (its #9041):
        # ssl: ports are listened on with tcpcomm.tls over listenTCP.
        raise ValueError("haproxy:ssl: needs tcpcomm's TLS (tcpcomm.tls.keepHalfClose)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def proxiedReactor(
    reactor: Any, headerTimeout: float | None = DEFAULT_HEADER_TIMEOUT
) -> Any:
    """
    Wrap C{reactor} so that endpoints built on it listen for connections
    that start with a PROXY header (L{ProxyHeaderFactory}), below any TLS.
    """
    return _ProxiedReactor(reactor, headerTimeout)


def proxiedListening(
    description: str,
    reactor: Any,
    headerTimeout: float | None = DEFAULT_HEADER_TIMEOUT,
) -> tuple[str, Any]:
    """
    What to build a port's endpoint from: for C{haproxy:DESCRIPTION}, the
    inner C{DESCRIPTION} and a L{proxiedReactor}; for anything else, both
    unchanged.
    """
    inner, proxied = splitProxied(description)
    if not proxied:
        return description, reactor
    return inner, proxiedReactor(reactor, headerTimeout)
