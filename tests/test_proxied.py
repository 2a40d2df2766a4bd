"""
Tests for L{tcpcomm.proxied}: the PROXY header glue on in-memory transports
(the real sockets and a real HAProxy are in C{tests.test_proxy}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.line import LineFactory, LineProtocol
from tcpcomm.proxied import (
    ProxiedTransport,
    ProxyHeaderFactory,
    ProxyHeaderProtocol,
    proxiedListening,
)
from tcpcomm.proxyheader import ProxyAddress, ProxyHeader, formatProxyHeader
from tests.test_line import HalfCloseableStringTransport, LogCapture
from tests.test_relay import startRelay

BALANCER = IPv4Address("TCP", "10.0.0.5", 40000)
LISTENING = IPv4Address("TCP", "10.0.0.9", 8000)


def header(client: str = "192.0.2.7", port: int = 51000, version: int = 1) -> bytes:
    """
    A PROXY header naming C{client}:C{port} as the client.
    """
    return formatProxyHeader(
        ProxyHeader(
            version,  # type: ignore[arg-type]
            ProxyAddress("inet", client, port),
            ProxyAddress("inet", "198.51.100.1", 8000),
        )
    )


class Connection:
    """
    One connection to a L{ProxyHeaderFactory} on an in-memory transport that
    delivers to whatever its C{protocol} is, as Twisted's sockets do.
    """

    def __init__(self, factory: ProxyHeaderFactory) -> None:
        self.transport = HalfCloseableStringTransport(
            hostAddress=LISTENING, peerAddress=BALANCER
        )
        wrapper = factory.buildProtocol(BALANCER)
        self.wrapper = wrapper
        self.transport.protocol = wrapper  # type: ignore[assignment]
        wrapper.makeConnection(self.transport)

    def receive(self, data: bytes) -> None:
        """
        The socket read C{data}.
        """
        self.transport.protocol.dataReceived(data)

    @property
    def served(self) -> LineProtocol:
        """
        The served protocol (a line protocol, as in most of these tests).
        """
        served = self.wrapper.wrappedProtocol
        assert isinstance(served, LineProtocol)
        return served


class GlueTests(SynchronousTestCase):
    """
    L{ProxyHeaderProtocol} connects the served protocol once the header is
    whole, as the client.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.served = LineFactory(clock=self.clock, maxConnectionsPerHost=1)
        self.factory = ProxyHeaderFactory(self.served, 3.0, clock=self.clock)
        self.log = LogCapture(self)

    def test_connectedAfterSplitHeader(self) -> None:
        """
        A header that comes in pieces (here a byte at a time) is collected;
        the served protocol is built and connected only once it is whole,
        with the client's address, and logged as the client.
        """
        connection = Connection(self.factory)
        for byte in header(version=2):
            self.assertIsNone(connection.wrapper.wrappedProtocol)
            self.assertEqual(self.served.stats.connectionsTotal, 0)
            connection.receive(bytes([byte]))
        served = connection.served
        self.assertEqual(
            served.transport.getPeer(), IPv4Address("TCP", "192.0.2.7", 51000)
        )
        self.assertEqual(
            served.transport.getHost(), IPv4Address("TCP", "198.51.100.1", 8000)
        )
        self.assertEqual(list(self.served.connections), [served])
        connected = [
            e["peer"] for e in self.log.events if "connected" in e.get("log_format", "")
        ]
        self.assertEqual(connected, ["192.0.2.7:51000"])

    def test_restDeliveredAtOnce(self) -> None:
        """
        What follows the header in the same read is handled in that read.
        """
        connection = Connection(self.factory)
        connection.receive(header() + b"one\ntwo\n")
        self.assertEqual(connection.transport.value(), b"one\ntwo\n")

    def test_handedOver(self) -> None:
        """
        After the header, the socket delivers straight to the served
        protocol, and its writes go straight to the socket's transport.
        """
        connection = Connection(self.factory)
        connection.receive(header())
        served = connection.served
        self.assertIs(connection.transport.protocol, served)
        self.assertIsInstance(served.transport, ProxiedTransport)
        self.assertEqual(served.transport.write, connection.transport.write)
        # Flow control: the served protocol is the socket's producer.
        self.assertIs(connection.transport.producer, served)

    def test_halfClosePassedOn(self) -> None:
        """
        A FIN reaching the wrapper after the header (a transport that
        cannot deliver to the served protocol directly) is the served
        protocol's, which finishes its replies and closes.
        """
        connection = Connection(self.factory)
        connection.receive(header() + b"last\n")
        connection.wrapper.readConnectionLost()
        self.assertTrue(connection.served.inputClosed)
        self.assertTrue(connection.transport.disconnecting)
        self.assertEqual(connection.transport.value(), b"last\n")

    def test_perHostLimitCountsClients(self) -> None:
        """
        The per-IP limit counts the clients the headers name, not the
        balancer: two clients through one balancer are both admitted, a
        second connection of one client is refused, and a closed one frees
        its client's place (no error).
        """
        first, second, third = (Connection(self.factory) for _ in range(3))
        first.receive(header("192.0.2.7"))
        second.receive(header("192.0.2.8"))
        third.receive(header("192.0.2.7", 51001))
        self.assertEqual(
            [c.served.refused for c in (first, second, third)], [False, False, True]
        )
        first.served.connectionLost()
        fourth = Connection(self.factory)
        fourth.receive(header("192.0.2.7", 51002))
        self.assertFalse(fourth.served.refused)
        self.assertEqual(self.log.failures(), [])

    def test_localKeepsBalancer(self) -> None:
        """
        A v2 C{LOCAL} header (a health check) and a v1 C{UNKNOWN} one are
        accepted, and the connection is the balancer's own, on the socket's
        own transport.
        """
        for data in (
            formatProxyHeader(ProxyHeader(2, None, None)),
            formatProxyHeader(ProxyHeader(1, None, None)),
        ):
            connection = Connection(self.factory)
            connection.receive(data + b"ping\n")
            self.assertIs(connection.served.transport, connection.transport)
            self.assertEqual(connection.served.transport.getPeer(), BALANCER)
            self.assertEqual(connection.transport.value(), b"ping\n")
            connection.served.connectionLost()
        self.assertEqual(self.served.stats.proxyHeaderErrors, 0)

    def test_badHeaderCloses(self) -> None:
        """
        A bad header closes the connection with one log line naming the
        balancer and the reason, and counts a header error; nothing is
        built or counted for the served factory, and later bytes are
        ignored.
        """
        connection = Connection(self.factory)
        connection.receive(b"GET / HTTP/1.1\r\n")
        connection.receive(b"Host: x\r\n")
        self.assertTrue(connection.transport.disconnecting)
        self.assertIsNone(connection.wrapper.wrappedProtocol)
        self.assertEqual(self.served.stats.proxyHeaderErrors, 1)
        self.assertEqual(self.served.stats.connectionsTotal, 0)
        [event] = [e for e in self.log.events if e.get("event") == "proxy_header_error"]
        self.assertEqual(event["peer"], "10.0.0.5:40000")
        self.assertIn("bad PROXY header: not a PROXY protocol header", event["reason"])

    def test_timeout(self) -> None:
        """
        A header not complete within the timeout aborts the connection,
        logged and counted once.
        """
        connection = Connection(self.factory)
        connection.receive(b"PROXY TCP4 1.2.")
        self.clock.advance(2.9)
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(self.served.stats.proxyHeaderErrors, 1)
        [event] = [e for e in self.log.events if e.get("event") == "proxy_header_error"]
        self.assertEqual(event["reason"], "no complete PROXY header in 3 s")

    def test_timerStops(self) -> None:
        """
        The header timeout stops once the header is in, or the connection
        is lost before it.
        """
        done = Connection(self.factory)
        done.receive(header())
        lost = Connection(self.factory)
        lost.wrapper.connectionLost()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noTimeout(self) -> None:
        """
        A timeout of 0 or C{None} sets no timer.
        """
        for timeout in (0, None):
            factory = ProxyHeaderFactory(self.served, timeout, clock=self.clock)
            Connection(factory)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeBeforeHeader(self) -> None:
        """
        A FIN before any byte (a port probe) closes quietly; one inside a
        header is a header error.
        """
        probe = Connection(self.factory)
        probe.wrapper.readConnectionLost()
        self.assertTrue(probe.transport.disconnecting)
        self.assertEqual(self.served.stats.proxyHeaderErrors, 0)
        cut = Connection(self.factory)
        cut.receive(b"PROXY TCP4")
        cut.wrapper.readConnectionLost()
        self.assertTrue(cut.transport.disconnecting)
        self.assertEqual(self.served.stats.proxyHeaderErrors, 1)

    def test_ipv6Client(self) -> None:
        """
        An IPv6 client gets an L{IPv6Address}.
        """
        connection = Connection(self.factory)
        connection.receive(
            formatProxyHeader(
                ProxyHeader(
                    2,
                    ProxyAddress("inet6", "2001:db8::7", 5),
                    ProxyAddress("inet6", "2001:db8::1", 8000),
                )
            )
        )
        self.assertEqual(
            connection.served.transport.getPeer(),
            IPv6Address("TCP", "2001:db8::7", 5),
        )
        self.assertEqual(connection.served.host, "2001:db8::7")


class ProxiedTransportTests(SynchronousTestCase):
    """
    L{ProxiedTransport} is the socket's transport but for its addresses.
    """

    def test_everythingElsePassesThrough(self) -> None:
        """
        Closing, half-closing, producers and any other attribute are the
        wrapped transport's.
        """
        real = HalfCloseableStringTransport()
        proxied = ProxiedTransport(real, BALANCER, LISTENING)
        producer = Protocol()
        proxied.registerProducer(producer, True)
        self.assertIs(real.producer, producer)
        proxied.pauseProducing()
        self.assertEqual(real.producerState, "paused")
        proxied.resumeProducing()
        proxied.unregisterProducer()
        self.assertIsNone(real.producer)
        proxied.loseWriteConnection()
        self.assertTrue(real.writeDisconnected)
        self.assertEqual(proxied.producerState, real.producerState)
        proxied.loseConnection()
        self.assertTrue(real.disconnecting)
        proxied.write(b"x")
        proxied.writeSequence([b"y", b"z"])
        self.assertEqual(real.value(), b"xyz")
        self.assertEqual((proxied.getPeer(), proxied.getHost()), (BALANCER, LISTENING))


class StatsAndListeningTests(SynchronousTestCase):
    """
    Where errors are counted, and how C{haproxy:} ports listen.
    """

    def test_statsUnderTLS(self) -> None:
        """
        Under a wrapping factory (TLS), errors are counted on the served
        factory's stats.
        """
        served = LineFactory()
        tls: Any = Factory()
        tls.wrappedFactory = served
        self.assertIs(ProxyHeaderFactory(tls).stats, served.stats)
        self.assertIsNone(ProxyHeaderFactory(Factory()).stats)

    def test_proxiedListening(self) -> None:
        """
        A C{haproxy:} description listens as the description under it, with
        every factory wrapped; any other is left alone.
        """
        listened: list[Any] = []

        class Reactor:
            def listenTCP(self, port: int, factory: Any, **kwargs: Any) -> None:
                listened.append(factory)

            def listenUNIX(self, path: str, factory: Any, **kwargs: Any) -> None:
                listened.append(factory)

            def adoptStreamPort(self, fd: int, family: Any, factory: Any) -> None:
                listened.append(factory)

        reactor = Reactor()
        self.assertEqual(proxiedListening("tcp:1", reactor), ("tcp:1", reactor))
        inner, proxying = proxiedListening("haproxy:tcp:1", reactor, 7.0)
        self.assertEqual(inner, "tcp:1")
        served = LineFactory()
        proxying.listenTCP(1, served, backlog=5)
        proxying.listenUNIX("/x", served)
        proxying.adoptStreamPort(3, None, served)
        self.assertEqual(
            [(f.wrappedFactory, f.headerTimeout) for f in listened],
            [(served, 7.0)] * 3,
        )
        self.assertRaises(ValueError, proxying.listenSSL, 1, served, None)

    def test_wrapperSlots(self) -> None:
        """
        A connection waiting for its header holds a small slotted object and
        nothing of the served factory's.
        """
        self.assertFalse(hasattr(ProxyHeaderProtocol(), "__dict__"))


class ModesTests(SynchronousTestCase):
    """
    Every mode sees the client the header names.
    """

    def test_relayTagsClient(self) -> None:
        """
        Relay C{--tag} tags each line with the client the header names, and
        replies to that tag reach it.
        """
        relay, endpoint, _clock = startRelay(tag=True)
        upstream = endpoint.accept()
        connection = Connection(ProxyHeaderFactory(relay, None))
        connection.receive(header("192.0.2.66", 6666) + b"reading 7\n")
        self.assertEqual(upstream.value(), b"192.0.2.66:6666 reading 7\n")
        endpoint.send(b"192.0.2.66:6666 ack\n")
        self.assertEqual(connection.transport.value(), b"ack\n")
