"""
Tests for L{tcpcomm.client}.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tcpcomm.client import (
    ConnectionFailed,
    clientEndpoint,
    describeEndpoint,
    exchange,
)
from tcpcomm.echo import EchoFactory
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


@implementer(IHalfCloseableProtocol)
class AfterEndOfInput(Protocol):
    """
    A server that is not tcpcomm's: it answers only once the client has
    half-closed, with a count of what it received, and then closes.
    """

    transport: ITCPTransport

    def connectionMade(self) -> None:
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def readConnectionLost(self) -> None:
        self.transport.write(b"got %d bytes\n" % (self.received,))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class ClosesFirst(Protocol):
    """
    A server that is not tcpcomm's and closes first: it sends a banner, and
    answers the first line and closes, without waiting for the client to
    finish.  A client that sends nothing gets the banner and the close.
    """

    transport: ITCPTransport

    def connectionMade(self) -> None:
        self.transport.write(b"banner\n")

    def dataReceived(self, data: bytes) -> None:
        line = data.split(b"\n", 1)[0]
        self.transport.write(b"answer to " + line + b"\n")
        self.transport.loseConnection()


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

    def test_badDescription(self) -> None:
        """
        A description Twisted cannot parse gives a C{ValueError} that names
        it and says what would work.
        """
        for text in ("tcp:8000", "bogus:thing", "localhost"):
            error = self.assertRaises(ValueError, clientEndpoint, reactor, text)
            self.assertIn(repr(text), str(error))
            self.assertIn("HOST:PORT", str(error))

    def test_malformedSaysWhy(self) -> None:
        """
        Each malformed description gives a C{ValueError} that names it and
        says in words what is wrong, not Python's text for it.
        """
        cases = [
            ("localhost", "no port given"),
            ("foo:bar", "Unknown endpoint type: 'foo'"),
            ("tls:localhost", "no port given"),
            ("tls:localhost:x", "'x' is not a number"),
            ("tcp:host=127.0.0.1:port=x", "'x' is not a number"),
            ("tls:localhost:1:foo=bar", "unknown parameter 'foo'"),
            ("tcp:host=localhost:port=1:foo=bar", "unknown parameter 'foo'"),
            (
                "tls:localhost:1:trustRoots=/no/dir",
                "/no/dir: no such file or directory",
            ),
        ]
        for text, reason in cases:
            error = self.assertRaises(ValueError, clientEndpoint, reactor, text)
            self.assertEqual(
                str(error),
                f"bad endpoint {text!r}: {reason}"
                " (use HOST:PORT or a Twisted client endpoint description)",
            )

    def test_portOutOfRange(self) -> None:
        """
        A port outside 1-65535, in C{HOST:PORT} or a description, is
        refused when the endpoint is read, not reported as a connection
        failure later.
        """
        for text, port in [
            ("localhost:99999", "99999"),
            ("127.0.0.1:0", "0"),
            ("[::1]:65536", "65536"),
            ("tcp:host=127.0.0.1:port=99999", "99999"),
            ("tls:localhost:70000", "70000"),
            ("unix:/x:timeout=5", None),
        ]:
            if port is None:
                clientEndpoint(reactor, text)
                continue
            error = self.assertRaises(ValueError, clientEndpoint, reactor, text)
            self.assertEqual(
                str(error), f"bad endpoint {text!r}: port {port} is not within 1-65535"
            )

    def test_tlsBracketedIPv6(self) -> None:
        """
        C{tls:[::1]:PORT} is read as TLS to ::1 (Twisted's parser alone
        fails on it); C{test_cli} connects with it.
        """
        endpoint = clientEndpoint(reactor, "tls:[::1]:8443:trustRoots=/")
        self.assertEqual(describeEndpoint(endpoint), "[::1]:8443")

    def test_describeEndpoint(self) -> None:
        """
        Endpoints are named as people type them, IPv6 hosts in brackets.
        """
        self.assertEqual(describeEndpoint("x:1"), "x:1")
        self.assertEqual(
            describeEndpoint(clientEndpoint(reactor, "example.com:80")),
            "example.com:80",
        )
        self.assertEqual(
            describeEndpoint(clientEndpoint(reactor, "[::1]:80")), "[::1]:80"
        )
        self.assertEqual(
            describeEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", 9)), "127.0.0.1:9"
        )


class ExchangeTests(TestCase):
    """
    L{exchange} sends, half-closes, and collects the reply, or fails clearly.
    """

    async def test_halfCloseRoundTrip(self) -> None:
        """
        Four MiB sent to an echo server come back whole: the half-close
        tells the server we are done without losing its replies.
        """
        server = startServer(self, EchoFactory())
        data = bytes(range(256)) * (16 * 1024)
        self.assertEqual(await exchange(reactor, server.endpoint(), data), data)

    async def test_serverAnswersAfterEndOfInput(self) -> None:
        """
        A server that answers only after the client's half-close is answered
        (a client that never half-closes would wait forever).
        """
        server = startServer(self, Factory.forProtocol(AfterEndOfInput))
        reply = await exchange(reactor, server.endpoint(), b"x" * 100_000)
        self.assertEqual(reply, b"got 100000 bytes\n")

    async def test_serverClosesFirst(self) -> None:
        """
        A server that answers and closes before the client half-closes: the
        client gets everything it sent, and a clean result.
        """
        server = startServer(self, Factory.forProtocol(ClosesFirst))
        reply = await exchange(reactor, server.endpoint(), b"question\n")
        self.assertEqual(reply, b"banner\nanswer to question\n")

    async def test_hostName(self) -> None:
        """
        C{localhost:PORT} resolves and connects.
        """
        server = startServer(self, EchoFactory())
        reply = await exchange(reactor, f"localhost:{server.port}", b"by name")
        self.assertEqual(reply, b"by name")

    async def test_nameNotFound(self) -> None:
        """
        A host name that does not resolve fails with "name not found".
        """
        with self.assertRaises(ConnectionFailed) as caught:
            await exchange(reactor, "no-such-host.invalid:80", b"x", timeout=10)
        self.assertEqual(
            str(caught.exception), "name not found: no-such-host.invalid:80"
        )

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
        self.assertIn(caught.exception.received, (b"", b"partial"))

    async def test_cancel(self) -> None:
        """
        Cancelling an exchange closes its connection and fails it with
        C{CancelledError}, not as a connection failure.
        """
        server = startServer(self, LineFactory(lambda line: Deferred()))
        exchanging = exchange(reactor, server.endpoint(), b"x\n", timeout=10)
        await deferLater(reactor, 0.2)
        exchanging.cancel()
        with self.assertRaises(CancelledError):
            await exchanging
