"""
Tests for L{tcpcomm.testing}, the helpers users start servers with in their
own trial tests.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tcpcomm.client import exchange
from tcpcomm.echo import EchoFactory
from tcpcomm.testing import startServer
from tests.test_line import waitUntil


class Greeter(Protocol):
    """
    Say hello and close: a protocol that is not tcpcomm's.
    """

    transport: ITCPTransport

    def connectionMade(self) -> None:
        self.transport.write(b"hello")
        self.transport.loseConnection()


class Holder(Protocol):
    """
    A client that connects and waits, noting when it is disconnected.
    """

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


def hasIPv6Loopback() -> bool:
    """
    Whether this machine can listen on ::1.
    """
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class StartServerTests(TestCase):
    """
    L{startServer} runs a real server on loopback for one test.
    """

    async def test_anyFactory(self) -> None:
        """
        A factory that is not tcpcomm's is served on an ephemeral 127.0.0.1
        port.
        """
        server = startServer(self, Factory.forProtocol(Greeter))
        self.assertEqual(server.host, "127.0.0.1")
        self.assertNotEqual(server.port, 0)
        self.assertEqual(await exchange(reactor, server.endpoint(), b""), b"hello")

    async def test_clientDescription(self) -> None:
        """
        The server's client endpoint description connects to it.
        """
        server = startServer(self, EchoFactory())
        endpoint = clientFromString(reactor, server.clientDescription())
        self.assertEqual(await exchange(reactor, endpoint, b"x"), b"x")

    async def test_ipv6(self) -> None:
        """
        With C{interface="::1"} the server listens on IPv6 loopback.
        """
        if not hasIPv6Loopback():
            raise SkipTest("no IPv6 loopback here")
        server = startServer(self, EchoFactory(), interface="::1")
        self.assertEqual(server.host, "::1")
        self.assertEqual(await exchange(reactor, server.endpoint(), b"six"), b"six")
        endpoint = clientFromString(reactor, server.clientDescription())
        self.assertEqual(await exchange(reactor, endpoint, b"6"), b"6")

    async def test_stopClosesOpenConnections(self) -> None:
        """
        Stopping the server closes connections still open and waits for them,
        so the test's reactor is left clean.
        """
        server = startServer(self, EchoFactory())
        holders = [Holder(), Holder()]
        for holder in holders:
            await connectProtocol(server.endpoint(), holder)
        await waitUntil(lambda: server.openConnections == 2)
        await server.stop()
        self.assertEqual(server.openConnections, 0)
        for holder in holders:
            await holder.lost
        await server.stop()


class StartServerArgumentTests(SynchronousTestCase):
    """
    L{startServer} refuses what it must not do.
    """

    def test_loopbackOnly(self) -> None:
        """
        Listening on anything but loopback is refused.
        """
        self.assertRaises(
            ValueError, startServer, self, EchoFactory(), interface="0.0.0.0"
        )
