"""
Tests for L{tcpcomm.connection}: counting, logging, the flow-control
bookkeeping every tcpcomm protocol shares, the set of open connections, and
what an idle connection costs.
"""

from __future__ import annotations

import tracemalloc
from typing import cast

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import tcpcomm.connection
import tcpcomm.flags
import tcpcomm.line
from tcpcomm.chat import ChatFactory
from tcpcomm.connection import (
    IDLE_SWEEPS,
    ConnectionFactory,
    ConnectionProtocol,
    OpenConnections,
    describePeer,
)
from tcpcomm.echo import EchoFactory
from tcpcomm.line import LineFactory
from tests.test_line import LogCapture


def connect(
    factory: ConnectionFactory,
) -> tuple[ConnectionProtocol, StringTransport]:
    """
    Connect a protocol from C{factory} to a fresh L{StringTransport}.
    """
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.4", 99))
    protocol.makeConnection(transport)
    return protocol, transport


class ConnectionProtocolTests(SynchronousTestCase):
    """
    L{ConnectionProtocol} through L{EchoProtocol}, its simplest subclass.
    """

    def test_registersAsProducer(self) -> None:
        """
        A new connection registers the protocol as its transport's streaming
        producer, so a full write buffer pauses reading.
        """
        protocol, transport = connect(EchoFactory())
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)

    def test_counts(self) -> None:
        """
        Bytes in and out are counted on the connection and on the factory.
        """
        factory = EchoFactory()
        protocol, transport = connect(factory)
        protocol.dataReceived(b"abc")
        self.assertEqual((protocol.bytesIn, protocol.bytesOut), (3, 3))
        self.assertEqual((factory.stats.bytesIn, factory.stats.bytesOut), (3, 3))
        self.assertEqual(transport.value(), b"abc")

    def test_logsOpenAndClose(self) -> None:
        """
        Opening and closing are logged with the peer; the close names the
        byte counts and the reason.
        """
        logs = LogCapture(self)
        protocol, _ = connect(EchoFactory())
        protocol.dataReceived(b"12345")
        protocol.connectionLost(Failure(ConnectionResetError("reset by peer")))
        [opened, closed] = [e for e in logs.events if e.get("peer")]
        self.assertEqual(opened["log_format"], "{peer} connected")
        self.assertEqual(opened["peer"], "198.51.100.4:99")
        self.assertEqual(closed["summary"], "5 bytes in, 5 bytes out")
        self.assertEqual(closed["reason"], "reset by peer")

    def test_connectionsTracked(self) -> None:
        """
        The factory's set of open connections and its open/total counters
        follow connections as they come and go; a second connectionLost
        changes nothing.
        """
        factory = EchoFactory()
        first, _ = connect(factory)
        second, _ = connect(factory)
        self.assertEqual(factory.connections, {first, second})
        first.connectionLost(Failure(ConnectionError()))
        first.connectionLost(Failure(ConnectionError()))
        self.assertEqual(factory.connections, {second})
        self.assertEqual(factory.stats.connectionsOpen, 1)
        self.assertEqual(factory.stats.connectionsTotal, 2)

    def test_halfCloseClosesAfterFlush(self) -> None:
        """
        When the peer half-closes, the echo server unregisters its producer
        and then closes (after the transport flushes what was written).
        """
        protocol, transport = connect(EchoFactory())
        protocol.dataReceived(b"last words")
        protocol.readConnectionLost()
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"last words")

    def test_closeUnregistersWhilePaused(self) -> None:
        """
        Closing while the transport has paused the protocol still unregisters
        the producer first, so the connection can finish closing.
        """
        protocol, transport = connect(EchoFactory())
        protocol.pauseProducing()
        protocol.closeWhenFlushed()
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)

    def test_holdsNest(self) -> None:
        """
        Reading stays paused until every hold is released and the write
        buffer has drained.
        """
        protocol, transport = connect(EchoFactory())
        protocol.holdReading()
        protocol.holdReading()
        protocol.pauseProducing()
        protocol.releaseReading()
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.releaseReading()
        self.assertEqual(transport.producerState, "producing")
        self.assertFalse(protocol.readingPaused)

    def test_neverReadsAfterHalfClose(self) -> None:
        """
        Once the peer has half-closed, a drained write buffer does not
        resume reading: the socket would only report end of input again.
        """
        protocol, transport = connect(LineFactory(lambda line: Deferred()))
        protocol.dataReceived(b"pending\n")
        protocol.pauseProducing()
        protocol.readConnectionLost()
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(transport.disconnecting)


class PeerTests(SynchronousTestCase):
    """
    A connection's C{peer} and C{host}, made from its transport when needed.
    """

    def test_tcpPeerAndHost(self) -> None:
        """
        A TCP peer is named by its address, and its IP is its host.
        """
        protocol, _ = connect(EchoFactory())
        self.assertEqual(
            (protocol.peer, protocol.host), ("198.51.100.4:99", "198.51.100.4")
        )

    def test_notConnected(self) -> None:
        """
        Before it is connected, a protocol has no peer and no host.
        """
        protocol = EchoFactory().buildProtocol(None)
        self.assertEqual((protocol.peer, protocol.host), ("(not connected)", None))

    def test_unnamedUnixPeerNamedAfterClose(self) -> None:
        """
        An unnamed UNIX socket peer, named after the server's socket (which
        is gone once the connection closes), keeps its name in the log line
        of the close.
        """
        logs = LogCapture(self)
        protocol = EchoFactory().buildProtocol(None)
        transport = ClosingUNIXTransport(
            hostAddress=UNIXAddress(b"/run/s.sock"), peerAddress=UNIXAddress(None)
        )
        transport.sessionno = 7  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        transport.closed = True
        protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(
            [e["peer"] for e in logs.events if e.get("peer")],
            ["unix:/run/s.sock#7", "unix:/run/s.sock#7"],
        )
        self.assertIsNone(protocol.host)


class ClosingUNIXTransport(StringTransport):
    """
    Like Twisted's UNIX server transport, it cannot tell its own address once
    the connection has closed (its socket is gone).

    @ivar closed: Whether the connection has closed.
    """

    closed = False

    def getHost(self) -> IAddress:
        if self.closed:
            raise AttributeError("'Server' object has no attribute 'socket'")
        address: IAddress = super().getHost()
        return address


class DescribePeerTests(SynchronousTestCase):
    """
    L{describePeer} names peers for log lines.
    """

    def test_tcpPeer(self) -> None:
        """
        A TCP peer is named by its address.
        """
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 5))
        self.assertEqual(describePeer(transport), "10.0.0.1:5")

    def test_unnamedUnixPeer(self) -> None:
        """
        An unnamed UNIX socket peer is named by the server's socket and the
        connection's number, so two clients can be told apart.
        """
        transport = StringTransport(
            hostAddress=UNIXAddress(b"/run/s.sock"), peerAddress=UNIXAddress(None)
        )
        transport.sessionno = 7  # type: ignore[attr-defined]
        self.assertEqual(describePeer(transport), "unix:/run/s.sock#7")


def linked(count: int) -> tuple[OpenConnections, list[ConnectionProtocol]]:
    """
    An L{OpenConnections} holding C{count} new protocols, in order.
    """
    connections = OpenConnections()
    protocols = [ConnectionProtocol() for _ in range(count)]
    for protocol in protocols:
        connections.add(protocol)
    return connections, protocols


class OpenConnectionsTests(SynchronousTestCase):
    """
    L{OpenConnections}, the set of a factory's open connections, linked
    through the connections themselves.
    """

    def test_addAndRemoveInOrder(self) -> None:
        """
        Connections iterate in the order they were added; removing any of
        them (first, middle, last) keeps the others in order and counted.
        """
        connections, [a, b, c, d] = linked(4)
        self.assertEqual(list(connections), [a, b, c, d])
        for gone, left in ((b, [a, c, d]), (a, [c, d]), (d, [c]), (c, [])):
            connections.remove(gone)
            self.assertEqual((list(connections), len(connections)), (left, len(left)))
            self.assertNotIn(gone, connections)
        connections.add(a)
        self.assertEqual(list(connections), [a])

    def test_setLike(self) -> None:
        """
        It compares equal to a C{set} of the same connections (either way
        round), answers C{in}, and is false when empty.
        """
        connections, [a, b] = linked(2)
        self.assertEqual(connections, {a, b})
        self.assertEqual({b, a}, connections)
        self.assertNotEqual(connections, {a})
        self.assertIn(a, connections)
        self.assertNotIn(ConnectionProtocol(), connections)
        self.assertNotIn("a", connections)
        connections.remove(a)
        connections.remove(b)
        self.assertFalse(connections)
        self.assertEqual(connections, set())

    def test_removeCurrentWhileIterating(self) -> None:
        """
        Removing the connection an iteration stands on (as closing it may)
        does not stop the iteration.
        """
        connections, protocols = linked(5)
        seen = []
        for protocol in connections:
            seen.append(protocol)
            connections.remove(protocol)
        self.assertEqual(seen, protocols)
        self.assertEqual(len(connections), 0)

    def test_removeOthersWhileIterating(self) -> None:
        """
        Connections removed while an iteration runs are not yielded
        afterwards, and the iteration still reaches the rest.
        """
        connections, [a, b, c, d, e] = linked(5)
        seen = []
        for protocol in connections:
            seen.append(protocol)
            if protocol is a:
                connections.remove(b)
                connections.remove(c)
        self.assertEqual(seen, [a, d, e])

    def test_anotherFactorysConnection(self) -> None:
        """
        A connection open in one factory is not in another's set.
        """
        mine, theirs = EchoFactory(), EchoFactory()
        protocol, _ = connect(theirs)
        connect(theirs)
        self.assertIn(protocol, theirs.connections)
        self.assertNotIn(protocol, mine.connections)


class FlagsTests(SynchronousTestCase):
    """
    The bits of a connection's state int.
    """

    def test_distinctBits(self) -> None:
        """
        Every flag of L{tcpcomm.flags} is one bit of its own (masks aside),
        none inside the idle count, which has room for C{IDLE_SWEEPS}.
        """
        masks = ("IDLE", "ACTIVE", "NOT_HANDLING", "SUBCLASS_FLAGS")
        named = {
            name: getattr(tcpcomm.flags, name)
            for name in tcpcomm.flags.__all__
            if name not in masks and name != "LINE_SUBCLASS_FLAGS"
        }
        flags = list(named.values())
        idle = tcpcomm.flags.IDLE
        self.assertGreaterEqual(len(flags), 16)
        for flag in flags:
            self.assertEqual(flag & (flag - 1), 0, f"{flag:#x} is not one bit")
            self.assertEqual(flag & idle, 0, f"{flag:#x} is in the idle count")
            self.assertLess(flag, tcpcomm.flags.LINE_SUBCLASS_FLAGS)
        self.assertEqual(len(set(flags)), len(flags))
        self.assertGreaterEqual(idle, IDLE_SWEEPS)

    def test_idleWorkingConnectionSharesSmallInts(self) -> None:
        """
        An idle line connection's state, and one handling lines, stays below
        256: a small int CPython shares, not an object per connection.
        """
        factory = LineFactory(idleTimeout=10, clock=Clock())
        protocol, _ = connect(factory)
        states = [protocol._flags]

        def handler(line: bytes) -> bytes:
            states.append(protocol._flags)
            return line

        factory.handler = handler
        protocol.dataReceived(b"x\n")
        protocol.pauseProducing()
        states.append(protocol._flags)
        self.assertTrue(all(0 <= state < 256 for state in states), states)


def allocatedPerConnection(factory: ConnectionFactory, count: int = 2000) -> float:
    """
    Connect C{count} protocols from C{factory} to transports made
    beforehand, and return the bytes that tcpcomm's code allocated (and that
    stay allocated) per connection; logging and the test transports' own
    bookkeeping are left out.
    """
    factory.clock = Clock()
    # Log events are made and dropped, as by a deployed server's observer.
    factory._log = Logger(observer=cast(ILogObserver, lambda event: None))  # type: ignore[misc]
    transports = [
        StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 1000 + n))
        for n in range(count)
    ]
    protocols = []
    filters = [
        tracemalloc.Filter(True, "*/tcpcomm/*", all_frames=True),
        tracemalloc.Filter(False, "*/twisted/logger/*", all_frames=True),
        tracemalloc.Filter(False, "*/twisted/internet/testing.py"),
    ]
    tracemalloc.start(30)
    try:
        before = tracemalloc.take_snapshot().filter_traces(filters)
        for transport in transports:
            protocol = factory.buildProtocol(None)
            protocol.makeConnection(transport)
            protocols.append(protocol)
        after = tracemalloc.take_snapshot().filter_traces(filters)
    finally:
        tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / count


class IdleMemoryTests(SynchronousTestCase):
    """
    What an idle connection costs in tcpcomm's own objects, with the idle
    timeout on: its protocol object and nothing else (no timer, no framer,
    no text).  The budgets are the size of the protocol object on CPython
    3.11 (Twisted's own protocol objects cost 96 bytes for C{wire.Echo} and
    112 for C{LineOnlyReceiver}); see benchmarks/idle_memory.py for a whole
    connection.
    """

    def test_echo(self) -> None:
        """
        An idle echo connection costs at most 100 bytes of tcpcomm's.
        """
        self.assertLessEqual(allocatedPerConnection(EchoFactory(idleTimeout=300)), 100)

    def test_line(self) -> None:
        """
        An idle line connection costs at most 116 bytes of tcpcomm's.
        """
        self.assertLessEqual(allocatedPerConnection(LineFactory(idleTimeout=300)), 116)

    def test_noInstanceDictionary(self) -> None:
        """
        tcpcomm's protocols keep their state in slots: none has a
        per-instance dictionary.
        """
        for factory in (EchoFactory(), LineFactory(), ChatFactory()):
            protocol = factory.buildProtocol(None)
            self.assertFalse(hasattr(protocol, "__dict__"), type(protocol))
