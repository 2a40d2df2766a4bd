"""
Tests for L{tcpcomm.client}.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm.client import ConnectionFailed, clientEndpoint, exchange
from tcpcomm.line import LineFactory
from tcpcomm.testing import startServer


class Resetter(Protocol):
    """
    Reset the connection as soon as any data arrives.
    """

    transport: ITCPTransport

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"partial")
        self.transport.abortConnection()


def closedPort() -> int:
    """
    A 127.0.0.1 port with nothing listening on it (just released).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class ClientEndpointTests(SynchronousTestCase):
    """
    L{clientEndpoint} reads HOST:PORT and endpoint descriptions.
    """

    def test_hostPort(self) -> None:
        """
        C{HOST:PORT} becomes a L{HostnameEndpoint}.
        """
        endpoint = clientEndpoint(reactor, "localhost:8000")
        self.assertIsInstance(endpoint, HostnameEndpoint)

    def test_ipv6Brackets(self) -> None:
        """
        C{[::1]:8000} becomes a L{HostnameEndpoint} for ::1.
        """
        endpoint = clientEndpoint(reactor, "[::1]:8000")
        self.assertIsInstance(endpoint, HostnameEndpoint)

    def test_description(self) -> None:
        """
        A Twisted endpoint description is parsed as such, even one that
        looks like C{KIND:NUMBER}.
        """
        endpoint = clientEndpoint(reactor, "tcp:host=127.0.0.1:port=8000")
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)
        self.assertRaises(ValueError, clientEndpoint, reactor, "tcp:8000")


class ExchangeTests(TestCase):
    """
    L{exchange} sends, half-closes, and collects the reply, or fails clearly.
    """

    async def test_refused(self) -> None:
        """
        A refused connection fails with a message naming the address.
        """
        where = f"127.0.0.1:{closedPort()}"
        with self.assertRaises(ConnectionFailed) as caught:
            await exchange(reactor, where, b"x", timeout=5)
        self.assertEqual(str(caught.exception), f"connection refused by {where}")

    async def test_timeout(self) -> None:
        """
        A server that never answers makes the exchange fail after C{timeout},
        naming the address.
        """
        server = startServer(self, LineFactory(lambda line: Deferred()))
        where = f"127.0.0.1:{server.port}"
        with self.assertRaises(ConnectionFailed) as caught:
            await exchange(reactor, where, b"x\n", timeout=0.2)
        self.assertEqual(
            str(caught.exception), f"timed out after 0.2 s waiting for {where}"
        )

    async def test_reset(self) -> None:
        """
        A server that resets the connection makes the exchange fail as reset.
        """
        server = startServer(self, Factory.forProtocol(Resetter))
        where = f"127.0.0.1:{server.port}"
        with self.assertRaises(ConnectionFailed) as caught:
            await exchange(reactor, where, b"x", timeout=5)
        self.assertEqual(str(caught.exception), f"connection reset by {where}")
