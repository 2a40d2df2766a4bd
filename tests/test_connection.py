"""
Tests for L{tcpcomm.connection}: counting, logging, and the flow-control
bookkeeping every tcpcomm protocol shares.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.connection import ConnectionFactory, ConnectionProtocol, describePeer
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
