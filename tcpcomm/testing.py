# -*- test-case-name: tests.test_testing -*-
"""
Helpers for trial tests that talk to a real server over loopback.

    from twisted.trial.unittest import TestCase
    from tcpcomm import LineFactory
    from tcpcomm.client import exchange
    from tcpcomm.testing import startServer

    class MyHandlerTests(TestCase):
        async def test_upper(self) -> None:
            server = startServer(self, LineFactory(lambda line: line.upper()))
            reply = await exchange(server.reactor, server.endpoint(), b"hi\\n")
            self.assertEqual(reply, b"HI\\n")

L{startServer} listens on an ephemeral port of 127.0.0.1 (or C{::1}) with any
protocol factory, and registers a clean-up with the test that stops
listening, closes every connection still open and waits for them to go, so
trial's reactor stays clean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure

from tcpcomm.endpoints import DEFAULT_BACKLOG
from tcpcomm.transport import WriteThroughPort, WriteThroughServer

if TYPE_CHECKING:
    from twisted.trial.unittest import SynchronousTestCase

__all__ = ["LoopbackServer", "startServer"]


class _TrackedServer(WriteThroughServer):
    """
    A server-side TCP connection that its port keeps track of.
    """

    server: _TrackingPort

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server.openConnections.add(self)

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.server.connectionGone(self)


class _TrackingPort(WriteThroughPort):
    """
    A listening TCP port that knows its open connections: write-through
    connections (L{tcpcomm.transport}), as C{twistd tcpcomm} serves.

    C{tcp.Port.transport} is the documented way to choose the connection
    class; the protocols themselves are not wrapped, so half-close and flow
    control behave as in production.
    """

    transport = _TrackedServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.openConnections: set[_TrackedServer] = set()
        self._drained: list[Deferred[None]] = []

    def connectionGone(self, connection: _TrackedServer) -> None:
        self.openConnections.discard(connection)
        if not self.openConnections:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def closeConnections(self) -> Deferred[None]:
        """
        Abort every open connection; fire when all are gone.
        """
        if not self.openConnections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        for connection in list(self.openConnections):
            connection.abortConnection()
        return d


class LoopbackServer:
    """
    A server listening on loopback for one test.

    @ivar factory: The protocol factory serving connections.
    @ivar reactor: The reactor it listens with.
    @ivar address: The address it listens on.
    @ivar host: The address's host, C{"127.0.0.1"} or C{"::1"}.
    @ivar port: The ephemeral port number the kernel chose.
    """

    def __init__(self, factory: IProtocolFactory, port: _TrackingPort, reactor: Any):
        self.factory = factory
        self.reactor = reactor
        self._port = port
        address = port.getHost()
        assert isinstance(address, (IPv4Address, IPv6Address))
        self.address = address
        self.host: str = address.host
        self.port: int = address.port

    @property
    def openConnections(self) -> int:
        """
        How many server-side connections are open now.
        """
        return len(self._port.openConnections)

    def endpoint(self) -> IStreamClientEndpoint:
        """
        A client endpoint that connects to this server.
        """
        if isinstance(self.address, IPv6Address):
            return TCP6ClientEndpoint(self.reactor, self.host, self.port)
        return TCP4ClientEndpoint(self.reactor, self.host, self.port)

    def clientDescription(self) -> str:
        """
        This server as a client endpoint description string.
        """
        host = self.host.replace(":", "\\:")
        return f"tcp:host={host}:port={self.port}"

    def stop(self) -> Deferred[None]:
        """
        Stop listening, abort the connections still open and wait for them
        to close.  Safe to call more than once.
        """
        stopped = maybeDeferred(self._port.stopListening)
        closed = self._port.closeConnections()
        return DeferredList([stopped, closed], fireOnOneErrback=True).addCallback(
            lambda _: None
        )


def startServer(
    testCase: SynchronousTestCase,
    factory: IProtocolFactory,
    *,
    interface: str = "127.0.0.1",
    port: int = 0,
    reactor: Any = None,
) -> LoopbackServer:
    """
    Listen with C{factory} on an ephemeral loopback port for the length of
    C{testCase}.

    @param testCase: The running test; the server is stopped, and its
        connections closed, at the test's clean-up.
    @param factory: Any protocol factory.
    @param interface: C{"127.0.0.1"} or C{"::1"}.
    @param port: The port to listen on; by default one the kernel picks.
        Give a port a stopped server had, to test clients that reconnect.
    @param reactor: The reactor to listen with (the global one by default);
        it must provide C{IReactorFDSet}, as every reactor on POSIX does.
    @return: The running server, with its address.
    """
    if interface not in ("127.0.0.1", "::1"):
        raise ValueError(f"test servers listen on loopback only, not {interface!r}")
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    listening = _TrackingPort(port, factory, DEFAULT_BACKLOG, interface, reactor)
    listening.startListening()
    server = LoopbackServer(factory, listening, reactor)
    testCase.addCleanup(server.stop)
    return server
