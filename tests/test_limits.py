"""
Tests for connection limits: the pure bookkeeping in L{tcpcomm.limits}, and
what over-limit clients get from the line and echo servers.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tcpcomm.client import exchange
from tcpcomm.connection import LINGER_SECONDS, ConnectionFactory
from tcpcomm.echo import EchoFactory
from tcpcomm.limits import TOO_MANY, ConnectionLimits, hostKey
from tcpcomm.line import LineFactory
from tcpcomm.testing import startServer
from tests.test_line import HalfCloseableStringTransport, LogCapture, waitUntil


class ConnectionLimitsTests(SynchronousTestCase):
    """
    L{ConnectionLimits} counts connections and refuses those over a limit.
    """

    def test_noLimits(self) -> None:
        """
        Without limits every connection is admitted and counted.
        """
        limits = ConnectionLimits()
        for _ in range(100):
            self.assertIsNone(limits.admit("10.0.0.1"))
        self.assertEqual((limits.open, limits.openFrom("10.0.0.1")), (100, 100))

    def test_totalLimit(self) -> None:
        """
        Over the total limit a connection is refused and not counted; after a
        release there is room again.
        """
        limits = ConnectionLimits(maxConnections=2)
        self.assertIsNone(limits.admit("a"))
        self.assertIsNone(limits.admit("b"))
        self.assertEqual(limits.admit("c"), TOO_MANY)
        self.assertEqual(limits.open, 2)
        limits.release("a")
        self.assertIsNone(limits.admit("c"))

    def test_perHostLimit(self) -> None:
        """
        The per-host limit refuses a host over it while others still get in.
        """
        limits = ConnectionLimits(maxPerHost=1)
        self.assertIsNone(limits.admit("a"))
        self.assertEqual(limits.admit("a"), TOO_MANY)
        self.assertIsNone(limits.admit("b"))
        limits.release("a")
        self.assertEqual(limits.openFrom("a"), 0)
        self.assertIsNone(limits.admit("a"))

    def test_hostlessPeersOnlyCountTowardsTotal(self) -> None:
        """
        Peers without a host (UNIX sockets) are not limited per host but do
        count towards the total.
        """
        limits = ConnectionLimits(maxConnections=2, maxPerHost=1)
        self.assertIsNone(limits.admit(None))
        self.assertIsNone(limits.admit(None))
        self.assertEqual(limits.admit(None), TOO_MANY)
        limits.release(None)
        self.assertEqual(limits.open, 1)

    def test_badLimitsRejected(self) -> None:
        """
        Limits below 1 are refused at construction.
        """
        self.assertRaises(ValueError, ConnectionLimits, maxConnections=0)
        self.assertRaises(ValueError, ConnectionLimits, maxPerHost=-1)


def connectFrom(
    factory: ConnectionFactory, host: str = "192.0.2.7"
) -> HalfCloseableStringTransport:
    """
    Connect a protocol from C{factory} to an in-memory transport whose peer
    is C{host}; the protocol is left on the transport as C{protocol}.
    """
    if not isinstance(factory.clock, Clock):
        factory.clock = Clock()
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = HalfCloseableStringTransport(peerAddress=IPv4Address("TCP", host, 4321))
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


class RefusalTests(SynchronousTestCase):
    """
    What a client over a limit gets, on an in-memory transport.
    """

    def test_lineRefusal(self) -> None:
        """
        Line mode: an over-limit client gets C{ERROR too many connections},
        a lingering close, no handler call; it is counted and logged.
        """
        logs = LogCapture(self)
        calls: list[bytes] = []
        factory = LineFactory(calls.append, maxConnections=1)
        connectFrom(factory)
        refused = connectFrom(factory)
        self.assertEqual(refused.value(), b"ERROR too many connections\n")
        self.assertTrue(refused.writeDisconnected)
        self.assertEqual(factory.stats.connectionsRefused, 1)
        self.assertEqual(factory.stats.connectionsOpen, 1)
        self.assertEqual(len(factory.connections), 1)
        self.assertEqual(
            [
                e["reason"]
                for e in logs.events
                if e.get("log_format", "").endswith("refused: {reason}")
            ],
            [TOO_MANY],
        )
        refused.protocol.dataReceived(b"ignored\n")
        self.assertEqual(calls, [])

    def test_lineRefusalUsesDelimiter(self) -> None:
        """
        The refusal ends with the configured delimiter.
        """
        factory = LineFactory(delimiter=b"\r\n", maxConnections=1)
        connectFrom(factory)
        self.assertEqual(
            connectFrom(factory).value(), b"ERROR too many connections\r\n"
        )

    def test_refusedLingerEndsInAbort(self) -> None:
        """
        A refused client that never closes is aborted after the linger time.
        """
        factory = LineFactory(maxConnections=1)
        connectFrom(factory)
        refused = connectFrom(factory)
        assert isinstance(factory.clock, Clock)
        factory.clock.advance(LINGER_SECONDS)
        self.assertTrue(refused.disconnected)

    def test_perHostRefusal(self) -> None:
        """
        Over the per-host limit only that host is refused.
        """
        factory = LineFactory(maxConnectionsPerHost=1)
        connectFrom(factory, "10.0.0.1")
        self.assertEqual(
            connectFrom(factory, "10.0.0.1").value(), b"ERROR too many connections\n"
        )
        self.assertEqual(connectFrom(factory, "10.0.0.2").value(), b"")

    def test_echoRefusalCloses(self) -> None:
        """
        Echo mode: an over-limit client is closed without a word.
        """
        factory = EchoFactory(maxConnections=1)
        connectFrom(factory)
        refused = connectFrom(factory)
        self.assertEqual(refused.value(), b"")
        self.assertTrue(refused.disconnecting)

    def test_closedConnectionsFreeTheirPlace(self) -> None:
        """
        When an admitted connection closes, its place is free again.
        """
        from twisted.python.failure import Failure

        factory = LineFactory(maxConnections=1)
        first = connectFrom(factory)
        first.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(connectFrom(factory).value(), b"")


class LimitsOverSocketsTests(TestCase):
    """
    Connection limits over real sockets on 127.0.0.1.
    """

    async def test_overLimitClientReadsTheRefusal(self) -> None:
        """
        With two connections held, a third client reads C{ERROR too many
        connections} (even while it is still sending) and the server closes;
        once one leaves, a new client is served.
        """
        from twisted.internet.endpoints import connectProtocol

        from tests.test_testing import Holder

        factory = LineFactory(maxConnections=2)
        server = startServer(self, factory)
        holders = [Holder(), Holder()]
        for holder in holders:
            await connectProtocol(server.endpoint(), holder)
        await waitUntil(lambda: factory.stats.connectionsOpen == 2)
        reply = await exchange(reactor, server.endpoint(), b"x\n" * 100_000)
        self.assertEqual(reply, b"ERROR too many connections\n")
        holders[0].transport.loseConnection()  # type: ignore[union-attr]
        await waitUntil(lambda: factory.stats.connectionsOpen == 1)
        self.assertEqual(await exchange(reactor, server.endpoint(), b"in\n"), b"in\n")
        self.assertEqual(factory.stats.connectionsRefused, 1)


class HostKeyTests(SynchronousTestCase):
    """
    L{hostKey} counts an IPv4-mapped IPv6 address as its IPv4 address.
    """

    def test_mappedIsIPv4(self) -> None:
        """
        C{::ffff:a.b.c.d}, in any spelling, is C{a.b.c.d}.
        """
        for mapped in (
            "::ffff:127.0.0.1",
            "::FFFF:127.0.0.1",
            "0:0:0:0:0:ffff:127.0.0.1",
            "::ffff:7f00:1",
        ):
            self.assertEqual(hostKey(mapped), "127.0.0.1", mapped)

    def test_othersUnchanged(self) -> None:
        """
        IPv4, plain IPv6, IPv4-compatible and NAT64 addresses, and text that
        is no address, are themselves.
        """
        for host in (
            "127.0.0.1",
            "::1",
            "2001:db8::1",
            "fe80::1%lo",
            "::1.2.3.4",
            "64:ff9b::1.2.3.4",
            "x:y.z",
            "",
        ):
            self.assertEqual(hostKey(host), host)

    def test_limitsCountMappedAsIPv4(self) -> None:
        """
        L{ConnectionLimits} counts C{127.0.0.1} and C{::ffff:127.0.0.1} as one
        host, and releases them as one.
        """
        limits = ConnectionLimits(maxPerHost=1)
        self.assertIsNone(limits.admit("::ffff:127.0.0.1"))
        self.assertEqual(limits.admit("127.0.0.1"), TOO_MANY)
        self.assertEqual(limits.openFrom("127.0.0.1"), 1)
        limits.release("::ffff:127.0.0.1")
        self.assertEqual(limits.openFrom("::ffff:127.0.0.1"), 0)
        self.assertIsNone(limits.admit("127.0.0.1"))


class MappedAddressOverSocketsTests(TestCase):
    """
    The per-IP limit over a C{tcp} port and a C{tcp6} port that an IPv4
    client reaches as C{::ffff:127.0.0.1}.
    """

    async def test_oneClientOverTwoFamilies(self) -> None:
        """
        With C{maxConnectionsPerHost=1}, a client of 127.0.0.1 holding a
        connection to a tcp port is refused by a tcp6 port of the same
        factory, which sees it as C{::ffff:127.0.0.1}.
        """
        from twisted.internet.endpoints import (
            TCP4ClientEndpoint,
            TCP6ServerEndpoint,
            connectProtocol,
        )

        from tests.test_testing import Holder, hasIPv6Loopback

        if not hasIPv6Loopback():
            raise SkipTest("no IPv6 on this machine")
        factory = LineFactory(maxConnectionsPerHost=1)
        server = startServer(self, factory)
        # An IPv6 socket bound to the IPv4-mapped loopback address: it accepts
        # IPv4 clients of 127.0.0.1 only, each seen as ::ffff:127.0.0.1.
        port6 = await TCP6ServerEndpoint(
            reactor, 0, interface="::ffff:127.0.0.1"
        ).listen(factory)
        self.addCleanup(port6.stopListening)
        address6 = port6.getHost()
        assert isinstance(address6, IPv6Address)
        await connectProtocol(server.endpoint(), Holder())
        await waitUntil(lambda: factory.stats.connectionsOpen == 1)
        endpoint6 = TCP4ClientEndpoint(reactor, "127.0.0.1", address6.port)
        reply = await exchange(reactor, endpoint6, b"in\n")
        self.assertEqual(reply, b"ERROR too many connections\n")
        self.assertEqual(factory.stats.connectionsRefused, 1)
