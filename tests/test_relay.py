"""
Tests for L{tcpcomm.relay} and L{tcpcomm.relayqueue}: the pure queue, tag
and throttle helpers; the relay on in-memory transports with a fake upstream
endpoint and a fake clock; and relay and upstream on real loopback sockets.
"""

from __future__ import annotations

import ast
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

import tcpcomm.relayqueue
from tcpcomm.certificates import CertificateAuthority, makeCertificateAuthority
from tcpcomm.client import clientEndpoint
from tcpcomm.line import LineFactory
from tcpcomm.lineclient import LineClient
from tcpcomm.relay import (
    DEFAULT_QUEUE_BYTES,
    TOO_SLOW,
    UPSTREAM_CLOSE_TIMEOUT,
    UPSTREAM_UNAVAILABLE,
    RelayFactory,
    RelayProtocol,
)
from tcpcomm.relayqueue import (
    Disposition,
    LogThrottle,
    RelayQueue,
    RelayStats,
    addressTag,
    groupByTag,
    tagLine,
    untagLine,
)
from tcpcomm.tap import Options, makeFactory
from tcpcomm.testing import LoopbackServer, startServer
from tests.test_line import HalfCloseableStringTransport, LogCapture, waitUntil
from tests.test_timeouts import elapse

ERROR = UPSTREAM_UNAVAILABLE + b"\n"


class RelayQueueTests(SynchronousTestCase):
    """
    L{RelayQueue}: what goes upstream now, what waits, what is refused.
    """

    def test_openSendsAtOnce(self) -> None:
        """
        While open, every line is to be sent at once and counted forwarded.
        """
        queue = RelayQueue(2)
        queue.open()
        self.assertEqual(
            [queue.offer(b"a"), queue.offer(b"b"), queue.offer(b"c")],
            [Disposition.SEND] * 3,
        )
        self.assertEqual(len(queue), 0)
        self.assertEqual(queue.stats.forwarded, 3)

    def test_closedQueuesInOrder(self) -> None:
        """
        While closed, lines wait; opening hands them back oldest first and
        counts them forwarded.
        """
        queue = RelayQueue(10)
        for line in (b"1", b"2", b"3"):
            self.assertIs(queue.offer(line), Disposition.QUEUED)
        self.assertEqual(len(queue), 3)
        self.assertEqual(queue.open(), [b"1", b"2", b"3"])
        self.assertEqual(len(queue), 0)
        self.assertEqual((queue.stats.queued, queue.stats.forwarded), (3, 3))

    def test_fullRefuses(self) -> None:
        """
        Beyond the limit a line is refused and counted; the waiting lines
        are kept.
        """
        queue = RelayQueue(2)
        dispositions = [queue.offer(b"%d" % i) for i in range(4)]
        self.assertEqual(
            dispositions, [Disposition.QUEUED] * 2 + [Disposition.REFUSED] * 2
        )
        self.assertEqual(queue.stats.refused, 2)
        self.assertEqual(queue.open(), [b"0", b"1"])

    def test_closeQueuesAgain(self) -> None:
        """
        After C{close}, lines wait again.
        """
        queue = RelayQueue(5)
        queue.open()
        queue.close()
        self.assertIs(queue.offer(b"x"), Disposition.QUEUED)

    def test_zeroLimitRefusesWhileClosed(self) -> None:
        """
        With limit 0 nothing waits: every line is refused while closed.
        """
        queue = RelayQueue(0)
        self.assertIs(queue.offer(b"x"), Disposition.REFUSED)
        queue.open()
        self.assertIs(queue.offer(b"y"), Disposition.SEND)

    def test_dropCounts(self) -> None:
        """
        C{drop} empties the queue and counts what it threw away.
        """
        queue = RelayQueue(5)
        queue.offer(b"a")
        queue.offer(b"b")
        self.assertEqual(queue.drop(), 2)
        self.assertEqual((len(queue), queue.stats.dropped), (0, 2))

    def test_negativeLimitRejected(self) -> None:
        """
        A negative limit is refused at construction.
        """
        self.assertRaises(ValueError, RelayQueue, -1)

    def test_byteLimitRefuses(self) -> None:
        """
        A line that would take the waiting bytes past the byte limit is
        refused and counted, however few lines wait; a shorter one that
        fits still waits.
        """
        queue = RelayQueue(100, byteLimit=10)
        dispositions = [queue.offer(line) for line in (b"1234", b"567890", b"x", b"")]
        self.assertEqual(
            dispositions,
            [Disposition.QUEUED] * 2 + [Disposition.REFUSED] + [Disposition.QUEUED],
        )
        self.assertEqual((len(queue), queue.queuedBytes), (3, 10))
        self.assertEqual(queue.stats.refused, 1)

    def test_byteCountFollowsTheQueue(self) -> None:
        """
        The waiting bytes go back to 0 when the queue is handed back or
        dropped, so the byte bound applies afresh.
        """
        queue = RelayQueue(100, byteLimit=5)
        queue.offer(b"abcde")
        self.assertEqual(queue.open(), [b"abcde"])
        self.assertEqual(queue.queuedBytes, 0)
        queue.close()
        self.assertIs(queue.offer(b"fghij"), Disposition.QUEUED)
        self.assertEqual(queue.drop(), 1)
        self.assertEqual(queue.queuedBytes, 0)
        self.assertIs(queue.offer(b"klmno"), Disposition.QUEUED)

    def test_zeroByteLimitRefusesWhileClosed(self) -> None:
        """
        With byte limit 0 no line with content waits while closed, and
        every line goes while open.
        """
        queue = RelayQueue(100, byteLimit=0)
        self.assertIs(queue.offer(b"x"), Disposition.REFUSED)
        queue.open()
        self.assertIs(queue.offer(b"y" * 1000), Disposition.SEND)

    def test_negativeByteLimitRejected(self) -> None:
        """
        A negative byte limit is refused at construction.
        """
        self.assertRaises(ValueError, RelayQueue, 10, None, -1)


class OfferAllTests(SynchronousTestCase):
    """
    L{RelayQueue.offerAll}: a read's lines decided at once, as L{offer}
    would one by one.
    """

    def test_openSendsAll(self) -> None:
        """
        While open, every line is to be sent now, and all are counted
        forwarded.
        """
        queue = RelayQueue(1, byteLimit=1)
        queue.open()
        self.assertEqual(queue.offerAll([b"a", b"bb", b"c"]), [Disposition.SEND] * 3)
        self.assertEqual((len(queue), queue.stats.forwarded), (0, 3))

    def test_closedQueuesWhatFits(self) -> None:
        """
        While closed, lines that fit both bounds all wait, in order, their
        bytes counted; opening hands them back.
        """
        queue = RelayQueue(3, byteLimit=6)
        queue.offer(b"0")
        self.assertEqual(queue.offerAll([b"12", b"345"]), [Disposition.QUEUED] * 2)
        self.assertEqual((len(queue), queue.queuedBytes), (3, 6))
        self.assertEqual(queue.stats.queued, 3)
        self.assertEqual(queue.open(), [b"0", b"12", b"345"])

    def test_decidesAsOfferWould(self) -> None:
        """
        A batch that does not fit is decided line by line, exactly as
        C{offer} decides: a line over the byte bound is refused and a later,
        shorter one still waits, until the line bound refuses the rest.
        """
        lines = [b"a" * 100, b"b" * 200, b"c" * 30, b"d" * 120, b"e" * 10, b"", b"f"]
        expected = [Disposition.QUEUED, Disposition.REFUSED, Disposition.QUEUED]
        expected += [Disposition.QUEUED, Disposition.REFUSED, Disposition.QUEUED]
        expected += [Disposition.REFUSED]
        batch = RelayQueue(4, byteLimit=250)
        single = RelayQueue(4, byteLimit=250)
        self.assertEqual(batch.offerAll(lines), expected)
        self.assertEqual([single.offer(line) for line in lines], expected)
        self.assertEqual(batch.stats, single.stats)
        self.assertEqual(batch.queuedBytes, 250)
        self.assertEqual(batch.open(), [lines[0], lines[2], lines[3], lines[5]])

    def test_empty(self) -> None:
        """
        An empty batch decides nothing and counts nothing, open or closed.
        """
        queue = RelayQueue(0, byteLimit=0)
        self.assertEqual(queue.offerAll([]), [])
        queue.open()
        self.assertEqual(queue.offerAll([]), [])
        self.assertEqual(queue.stats, RelayStats())


class TagTests(SynchronousTestCase):
    """
    Putting a sender's address on a line and taking it off.
    """

    def test_tagLine(self) -> None:
        """
        A tagged line is the tag, one space, and the line.
        """
        self.assertEqual(
            tagLine(b"127.0.0.1:5555", b"hi there"), b"127.0.0.1:5555 hi there"
        )

    def test_untagLine(self) -> None:
        """
        The tag ends at the first space; the rest may hold more spaces or be
        empty.
        """
        self.assertEqual(untagLine(b"[::1]:5 a b"), (b"[::1]:5", b"a b"))
        self.assertEqual(untagLine(b"1.2.3.4:5 "), (b"1.2.3.4:5", b""))

    def test_noTag(self) -> None:
        """
        A line without a space, or starting with one, has no tag.
        """
        self.assertIsNone(untagLine(b"untagged"))
        self.assertIsNone(untagLine(b" leading space"))
        self.assertIsNone(untagLine(b""))

    def test_groupByTag(self) -> None:
        """
        C{groupByTag} gathers each tag's lines, without the tag, in order,
        tags in the order they first appear; lines without a tag are kept
        apart, whole and in order.
        """
        groups, untagged = groupByTag(
            [b"b x", b"a 1", b"notag", b"b y z", b"a ", b" lead", b"a 2"]
        )
        self.assertEqual(groups, {b"b": [b"x", b"y z"], b"a": [b"1", b"", b"2"]})
        self.assertEqual(list(groups), [b"b", b"a"])
        self.assertEqual(untagged, [b"notag", b" lead"])

    def test_addressTagOfIPAddresses(self) -> None:
        """
        IP addresses are tags as they are written.
        """
        self.assertEqual(addressTag("127.0.0.1:5555"), b"127.0.0.1:5555")
        self.assertEqual(addressTag("[::1]:5555"), b"[::1]:5555")

    def test_addressTagEscapes(self) -> None:
        """
        Spaces, control bytes and C{%} are escaped, so a tag never holds the
        separator or a line end, and different addresses keep different tags.
        """
        self.assertEqual(addressTag("unix:/run/my sock#3"), b"unix:/run/my%20sock#3")
        self.assertEqual(addressTag("unix:/a\nb%20#1"), b"unix:/a%0Ab%2520#1")
        self.assertNotEqual(addressTag("a b"), addressTag("a%20b"))

    def test_roundTrip(self) -> None:
        """
        A tagged line splits back into the tag and the line.
        """
        tag = addressTag("unix:/tmp/x y#2")
        self.assertEqual(untagLine(tagLine(tag, b"a b")), (tag, b"a b"))


class LogThrottleTests(SynchronousTestCase):
    """
    L{LogThrottle}: at most one log line per interval, with a count.
    """

    def test_firstEventLogged(self) -> None:
        """
        The first event is logged at once, standing for itself.
        """
        self.assertEqual(LogThrottle().note(100.0), 1)

    def test_heldBackEventsCounted(self) -> None:
        """
        Events within the interval are held back; the next log line counts
        them with itself.
        """
        throttle = LogThrottle(1.0)
        notes = [throttle.note(t) for t in (0.0, 0.2, 0.5, 0.9, 1.0, 1.5, 5.0)]
        self.assertEqual(notes, [1, 0, 0, 0, 4, 0, 2])


class PurityTests(SynchronousTestCase):
    """
    L{tcpcomm.relayqueue} stays free of Twisted and I/O.
    """

    def test_importsStandardLibraryOnly(self) -> None:
        """
        The module imports only from the standard library.
        """
        source = Path(tcpcomm.relayqueue.__file__).read_text(encoding="utf-8")
        imported: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        self.assertEqual(
            imported, {"__future__", "collections", "dataclasses", "enum", "re"}
        )


UPSTREAM_ADDRESS = IPv4Address("TCP", "192.0.2.99", 9000)


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    An upstream endpoint in memory: each connection attempt waits until the
    test accepts or refuses it.

    @ivar attempts: Connection attempts not yet answered.
    @ivar protocol: The protocol (as the connecting service wrapped it) on
        the last connection accepted.
    @ivar transport: The transport of the last connection accepted.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[IProtocolFactory, Deferred[IProtocol]]] = []
        self.protocol: IProtocol | None = None
        self.transport = HalfCloseableStringTransport()

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        def cancel(attempt: Deferred[IProtocol]) -> None:
            # As HostnameEndpoint does.
            attempt.errback(ConnectingCancelledError(UPSTREAM_ADDRESS))

        attempt: Deferred[IProtocol] = Deferred(cancel)
        self.attempts.append((protocolFactory, attempt))
        return attempt

    def accept(self) -> HalfCloseableStringTransport:
        """
        Connect the oldest attempt to a fresh in-memory transport.
        """
        factory, attempt = self.attempts.pop(0)
        protocol = factory.buildProtocol(UPSTREAM_ADDRESS)
        assert protocol is not None
        transport = HalfCloseableStringTransport(peerAddress=UPSTREAM_ADDRESS)
        protocol.makeConnection(transport)
        self.protocol, self.transport = protocol, transport
        attempt.callback(protocol)
        return transport

    def refuse(self) -> None:
        """
        Fail the oldest attempt as a refused connection.
        """
        _factory, attempt = self.attempts.pop(0)
        attempt.errback(ConnectionRefusedError())

    def drop(self) -> None:
        """
        Lose the last connection accepted, as a reset.
        """
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(ConnectionLost()))

    def send(self, data: bytes) -> None:
        """
        Deliver C{data} from the upstream on the last connection accepted.
        """
        assert self.protocol is not None
        self.protocol.dataReceived(data)


def startRelay(**kwargs: Any) -> tuple[RelayFactory, FakeEndpoint, Clock]:
    """
    A started L{RelayFactory} for a L{FakeEndpoint}, with a fake clock and a
    1 s retry delay.
    """
    endpoint = FakeEndpoint()
    clock = Clock()
    factory = RelayFactory(
        endpoint, clock=clock, retryPolicy=lambda attempt: 1.0, **kwargs
    )
    factory.doStart()
    return factory, endpoint, clock


def connectClient(
    factory: RelayFactory, peer: IAddress | int = 1001
) -> HalfCloseableStringTransport:
    """
    Connect a client to C{factory} on an in-memory transport; a number
    C{peer} means port C{peer} of 192.0.2.7.
    """
    if isinstance(peer, int):
        peer = IPv4Address("TCP", "192.0.2.7", peer)
    protocol = factory.buildProtocol(peer)
    assert isinstance(protocol, RelayProtocol)
    transport = HalfCloseableStringTransport(
        peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 8000)
    )
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


def lose(transport: HalfCloseableStringTransport) -> None:
    """
    Tell the protocol on an in-memory transport that its connection is gone.
    """
    transport.protocol.connectionLost(Failure(ConnectionLost()))


def logged(logs: LogCapture, text: str) -> list[str]:
    """
    The log lines captured so far that contain C{text}.
    """
    lines = [formatEvent(event) for event in logs.events]
    return [line for line in lines if text in line]


class RelayProtocolTests(SynchronousTestCase):
    """
    The relay on in-memory transports, with a fake upstream and clock.
    """

    def test_forwardsInArrivalOrder(self) -> None:
        """
        Lines from several clients go upstream untagged, in the order the
        relay read them, and the clients get no reply.
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        a, b, c = (connectClient(factory, port) for port in (1001, 1002, 1003))
        a.protocol.dataReceived(b"a1\n")
        b.protocol.dataReceived(b"b1\nb2\n")
        c.protocol.dataReceived(b"c1\n")
        a.protocol.dataReceived(b"a2\n")
        self.assertEqual(upstream.value(), b"a1\nb1\nb2\nc1\na2\n")
        self.assertEqual([t.value() for t in (a, b, c)], [b""] * 3)
        self.assertEqual(factory.relayStats.forwarded, 5)

    def test_tagsCarrySenderAddress(self) -> None:
        """
        With tagging, each line goes upstream as its sender's address
        (IPv4 or IPv6), a space, and the line.
        """
        factory, endpoint, _clock = startRelay(tag=True)
        upstream = endpoint.accept()
        v4 = connectClient(factory, IPv4Address("TCP", "127.0.0.1", 5555))
        v6 = connectClient(factory, IPv6Address("TCP", "::1", 5556))
        v4.protocol.dataReceived(b"hello\n")
        v6.protocol.dataReceived(b"hi there\r\n")
        self.assertEqual(
            upstream.value(), b"127.0.0.1:5555 hello\n[::1]:5556 hi there\n"
        )

    def test_unixPeerTag(self) -> None:
        """
        A UNIX socket client's tag is its connection's name, escaped, and
        replies to that tag reach it.
        """
        factory, endpoint, _clock = startRelay(tag=True)
        upstream = endpoint.accept()
        protocol = factory.buildProtocol(UNIXAddress(None))
        assert isinstance(protocol, RelayProtocol)
        client = HalfCloseableStringTransport(
            peerAddress=UNIXAddress(None), hostAddress=UNIXAddress(b"/run/my sock")
        )
        client.sessionno = 3  # type: ignore[attr-defined]
        protocol.makeConnection(client)
        protocol.dataReceived(b"x\n")
        self.assertEqual(upstream.value(), b"unix:/run/my%20sock#3 x\n")
        endpoint.send(b"unix:/run/my%20sock#3 back\n")
        self.assertEqual(client.value(), b"back\n")

    def test_queuedUntilConnectedThenSentFirst(self) -> None:
        """
        Lines read before the upstream connects wait, and go in order, before
        any newer line, once it connects.
        """
        factory, endpoint, _clock = startRelay()
        client = connectClient(factory)
        client.protocol.dataReceived(b"1\n2\n3\n")
        self.assertEqual(factory.queuedLines, 3)
        self.assertFalse(factory.upstreamConnected)
        upstream = endpoint.accept()
        self.assertTrue(factory.upstreamConnected)
        self.assertEqual(upstream.value(), b"1\n2\n3\n")
        client.protocol.dataReceived(b"4\n")
        self.assertEqual(upstream.value(), b"1\n2\n3\n4\n")
        self.assertEqual(factory.queuedLines, 0)
        self.assertEqual(client.value(), b"")
        stats = factory.relayStats
        self.assertEqual((stats.queued, stats.forwarded), (3, 4))

    def test_overflowRefusedInPlace(self) -> None:
        """
        A line that finds the queue full gets C{ERROR upstream unavailable}
        in its place among the client's replies; the queued lines go later,
        in order.
        """
        factory, endpoint, _clock = startRelay(queueLimit=2)
        client = connectClient(factory)
        client.protocol.dataReceived(b"1\n2\n3\n")
        self.assertEqual(client.value(), ERROR)
        upstream = endpoint.accept()
        self.assertEqual(upstream.value(), b"1\n2\n")
        endpoint.send(b"re 1\nre 2\n")
        endpoint.drop()
        client.protocol.dataReceived(b"4\n5\n6\n")
        self.assertEqual(client.value(), ERROR + b"re 1\nre 2\n" + ERROR)
        self.assertFalse(client.disconnecting)
        self.assertEqual(factory.relayStats.refused, 2)
        self.assertEqual(factory.queuedLines, 2)

    def test_byteOverflowRefusedInPlace(self) -> None:
        """
        With the upstream down, long lines fill the queue's byte bound long
        before its line bound: the next line gets C{ERROR upstream
        unavailable}, and the lines that fit go, in order, once it is up.
        """
        factory, endpoint, _clock = startRelay(queueBytes=250)
        self.assertEqual((factory.queueLimit, factory.queueBytes), (10000, 250))
        client = connectClient(factory)
        client.protocol.dataReceived(
            b"".join(b"%d" % i * 100 + b"\n" for i in range(4))
        )
        self.assertEqual(client.value(), ERROR * 2)
        self.assertEqual((factory.queuedLines, factory.queuedBytes), (2, 200))
        upstream = endpoint.accept()
        self.assertEqual(upstream.value(), b"0" * 100 + b"\n" + b"1" * 100 + b"\n")
        self.assertEqual(factory.queuedBytes, 0)

    def test_defaultQueueBytes(self) -> None:
        """
        By default at most 16 MiB of lines wait, and C{twistd tcpcomm}'s
        C{--queue-bytes} sets the bound.
        """
        factory, _endpoint, _clock = startRelay()
        self.assertEqual(factory.queueBytes, DEFAULT_QUEUE_BYTES)
        self.assertEqual(DEFAULT_QUEUE_BYTES, 16 * 1024 * 1024)
        options = Options()
        options.parseOptions(
            ["--protocol", "relay", "--upstream", "127.0.0.1:1", "--queue-bytes", "99"]
        )
        relay = makeFactory(options)
        assert isinstance(relay, RelayFactory)
        self.assertEqual(relay.queueBytes, 99)

    def test_negativeQueueBytesRejected(self) -> None:
        """
        A negative byte bound is refused at construction.
        """
        self.assertRaises(ValueError, RelayFactory, FakeEndpoint(), queueBytes=-1)

    def test_refusalsLoggedOncePerSecond(self) -> None:
        """
        Refusals are logged at most once a second, with how many there were.
        """
        logs = LogCapture(self)
        factory, _endpoint, clock = startRelay(queueLimit=0)
        client = connectClient(factory)
        client.protocol.dataReceived(b"x\n" * 100)
        self.assertEqual(client.value(), ERROR * 100)
        self.assertEqual(len(logged(logs, "refused")), 1)
        clock.advance(1)
        client.protocol.dataReceived(b"y\n")
        [_first, second] = logged(logs, "refused")
        self.assertIn("refused 100 line(s)", second)
        self.assertEqual(factory.relayStats.refused, 101)

    def test_repliesToEveryClientWithoutTag(self) -> None:
        """
        Without tagging, each line from the upstream goes to every client,
        whole.
        """
        factory, endpoint, _clock = startRelay()
        endpoint.accept()
        clients = [connectClient(factory, port) for port in (1001, 1002, 1003)]
        endpoint.send(b"news 1\n192.0.2.7:1001 not a tag here\n")
        for client in clients:
            self.assertEqual(client.value(), b"news 1\n192.0.2.7:1001 not a tag here\n")
        stats = factory.relayStats
        self.assertEqual((stats.received, stats.delivered), (2, 6))

    def test_repliesRoutedByTag(self) -> None:
        """
        With tagging, a line from the upstream goes to the client its tag
        names only, without the tag.
        """
        factory, endpoint, _clock = startRelay(tag=True)
        endpoint.accept()
        one, two = connectClient(factory, 1001), connectClient(factory, 1002)
        endpoint.send(b"192.0.2.7:1002 for two\n192.0.2.7:1001 for one\n")
        self.assertEqual(one.value(), b"for one\n")
        self.assertEqual(two.value(), b"for two\n")

    def test_strayRepliesDropped(self) -> None:
        """
        With tagging, a line from the upstream naming no connected client,
        or no client at all, is dropped, counted, and logged at most once a
        second.
        """
        logs = LogCapture(self)
        factory, endpoint, _clock = startRelay(tag=True)
        endpoint.accept()
        client = connectClient(factory, 1001)
        gone = connectClient(factory, 1002)
        lose(gone)
        endpoint.send(b"192.0.2.7:1002 gone\n10.0.0.1:1 unknown\nno-tag-at-all\n")
        self.assertEqual(client.value(), b"")
        self.assertEqual(factory.relayStats.undeliverable, 3)
        self.assertEqual(len(logged(logs, "naming no connected client")), 1)

    def test_reconnectsAfterLoss(self) -> None:
        """
        When the upstream connection drops, lines wait and the relay retries
        after the retry delay; the waiting lines go first on the new
        connection.
        """
        logs = LogCapture(self)
        factory, endpoint, clock = startRelay()
        first = endpoint.accept()
        client = connectClient(factory)
        client.protocol.dataReceived(b"1\n")
        endpoint.drop()
        self.assertFalse(factory.upstreamConnected)
        self.assertEqual(len(logged(logs, "Lost upstream")), 1)
        client.protocol.dataReceived(b"2\n3\n")
        self.assertEqual(endpoint.attempts, [])
        clock.advance(1.0)
        second = endpoint.accept()
        client.protocol.dataReceived(b"4\n")
        self.assertEqual(first.value(), b"1\n")
        self.assertEqual(second.value(), b"2\n3\n4\n")

    def test_connectFailureLogged(self) -> None:
        """
        A failed connection attempt is logged with what went wrong, and
        retried.
        """
        logs = LogCapture(self)
        _factory, endpoint, clock = startRelay()
        endpoint.refuse()
        self.assertEqual(
            len(logged(logs, "Cannot connect to upstream: connection refused")), 1
        )
        clock.advance(1.0)
        self.assertEqual(len(endpoint.attempts), 1)

    def test_upstreamHalfCloseStopsForwarding(self) -> None:
        """
        Once the upstream closes its side, no line goes to that connection:
        they wait for the next.
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        client = connectClient(factory)
        assert endpoint.protocol is not None
        endpoint.protocol.readConnectionLost()  # type: ignore[attr-defined]
        self.assertTrue(upstream.disconnecting)
        self.assertIsNone(upstream.producer)
        client.protocol.dataReceived(b"late\n")
        self.assertEqual(upstream.value(), b"")
        self.assertEqual(factory.queuedLines, 1)

    def test_overlongUpstreamLineDropsConnection(self) -> None:
        """
        A line from the upstream over the limit aborts that connection, and
        lines wait for the next.
        """
        factory, endpoint, _clock = startRelay(maxLineLength=8)
        upstream = endpoint.accept()
        client = connectClient(factory)
        endpoint.send(b"x" * 9)
        self.assertTrue(upstream.disconnecting)
        self.assertFalse(factory.upstreamConnected)
        client.protocol.dataReceived(b"a\n")
        self.assertEqual(factory.queuedLines, 1)

    def test_fullUpstreamQueuesAndHoldsClients(self) -> None:
        """
        While the upstream connection's buffer is full, lines wait and
        reading from every client (new ones too) pauses; when it drains, the
        waiting lines go first and reading resumes.
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        a = connectClient(factory, 1001)
        assert upstream.producer is not None
        upstream.producer.pauseProducing()
        self.assertTrue(factory.holdingClients)
        self.assertEqual(a.producerState, "paused")
        b = connectClient(factory, 1002)
        self.assertEqual(b.producerState, "paused")
        a.protocol.dataReceived(b"1\n2\n")
        self.assertEqual((upstream.value(), factory.queuedLines), (b"", 2))
        upstream.producer.resumeProducing()
        self.assertEqual(upstream.value(), b"1\n2\n")
        self.assertEqual([a.producerState, b.producerState], ["producing"] * 2)
        self.assertFalse(factory.holdingClients)

    def test_lostUpstreamReleasesClients(self) -> None:
        """
        If a full upstream connection drops, clients are read again (their
        lines wait in the queue).
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        client = connectClient(factory)
        assert upstream.producer is not None
        upstream.producer.pauseProducing()
        endpoint.drop()
        self.assertEqual(client.producerState, "producing")
        self.assertFalse(factory.holdingClients)

    def test_heldClientNotIdle(self) -> None:
        """
        A client held back for a full upstream connection is not timed out
        as idle; once released, the idle timeout applies again (timed out
        after 10 s, by 12.5 s).
        """
        factory, endpoint, clock = startRelay(idleTimeout=10)
        upstream = endpoint.accept()
        client = connectClient(factory)
        assert upstream.producer is not None
        upstream.producer.pauseProducing()
        elapse(clock, 25)
        self.assertEqual(client.value(), b"")
        upstream.producer.resumeProducing()
        elapse(clock, 10)
        self.assertEqual(client.value(), b"")
        elapse(clock, 2.5)
        self.assertEqual(client.value(), b"ERROR idle timeout\n")

    def test_slowClientClosed(self) -> None:
        """
        A client that does not read is closed with C{ERROR too slow} once
        more than C{maxPendingBytes} from the upstream wait for it; the
        others get every line.
        """
        factory, endpoint, _clock = startRelay(maxPendingBytes=12)
        endpoint.accept()
        slow, fast = connectClient(factory, 1001), connectClient(factory, 1002)
        slow.protocol.pauseProducing()  # its transport's buffer is full
        endpoint.send(b"12345\n12345\n")
        self.assertEqual(slow.value(), b"")
        self.assertFalse(slow.writeDisconnected)
        endpoint.send(b"x\n")
        self.assertEqual(slow.value(), TOO_SLOW + b"\n")
        self.assertTrue(slow.writeDisconnected)
        self.assertEqual(fast.value(), b"12345\n12345\nx\n")
        self.assertEqual(factory.stats.tooSlow, 1)

    def test_stopWaitsForLastClient(self) -> None:
        """
        Stopping the factory stops the upstream connection only once the last
        client has gone; C{whenUpstreamStopped} fires when it has closed.
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        client = connectClient(factory)
        factory.doStop()
        self.assertFalse(upstream.disconnecting)
        client.protocol.dataReceived(b"last\n")
        stopped = factory.whenUpstreamStopped()
        lose(client)
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(upstream.value(), b"last\n")
        self.assertNoResult(stopped)
        endpoint.drop()
        self.successResultOf(stopped)
        self.successResultOf(factory.whenUpstreamStopped())

    def test_stopDropsQueueWhenDown(self) -> None:
        """
        Stopping with lines queued and no upstream connection drops them,
        counted and logged with their number, and gives up connecting.
        """
        logs = LogCapture(self)
        factory, endpoint, _clock = startRelay()
        client = connectClient(factory)
        client.protocol.dataReceived(b"1\n2\n")
        lose(client)
        factory.doStop()
        self.successResultOf(factory.whenUpstreamStopped())
        self.assertEqual((factory.relayStats.dropped, factory.queuedLines), (2, 0))
        self.assertEqual(len(logged(logs, "dropped 2 queued line(s)")), 1)
        [(_factory, attempt)] = endpoint.attempts
        self.assertTrue(attempt.called)
        self.assertEqual(logged(logs, "Cannot connect"), [])

    def test_stopSendsQueueWhenConnected(self) -> None:
        """
        Stopping with lines queued behind a full upstream connection keeps
        them queued until it drains, then writes them and closes it.
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        client = connectClient(factory)
        assert upstream.producer is not None
        producer = upstream.producer
        producer.pauseProducing()
        client.protocol.dataReceived(b"1\n2\n")
        lose(client)
        factory.doStop()
        self.assertEqual((upstream.value(), factory.queuedLines), (b"", 2))
        self.assertFalse(upstream.disconnecting)
        producer.resumeProducing()
        self.assertEqual((upstream.value(), factory.queuedLines), (b"1\n2\n", 0))
        self.assertIsNone(upstream.producer)
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(factory.relayStats.dropped, 0)

    def test_shutdownTimeoutCoversUpstream(self) -> None:
        """
        The upstream connection gets what is left of the shutdown timeout
        after the clients have gone: it is aborted at the deadline, not
        C{UPSTREAM_CLOSE_TIMEOUT} after the last client went.
        """
        factory, endpoint, clock = startRelay()
        upstream = endpoint.accept()
        client = connectClient(factory)
        factory.doStop()
        done = factory.shutDown(10)
        clock.advance(8)
        lose(client)
        self.assertTrue(upstream.disconnecting)
        clock.advance(1.9)
        self.assertFalse(upstream.disconnected)
        self.assertNoResult(done)
        clock.advance(0.1)
        self.assertTrue(upstream.disconnected)
        endpoint.drop()
        self.successResultOf(done)

    def test_shutdownHurriesStopUnderWay(self) -> None:
        """
        A shutdown that starts after the upstream connection began to stop
        (no client was left when the port closed) shortens its time to the
        shutdown's timeout.
        """
        logs = LogCapture(self)
        factory, endpoint, clock = startRelay()
        upstream = endpoint.accept()
        factory.doStop()
        self.assertTrue(upstream.disconnecting)
        clock.advance(0.5)
        done = factory.shutDown(1)
        clock.advance(0.9)
        self.assertFalse(upstream.disconnected)
        clock.advance(0.1)
        self.assertTrue(upstream.disconnected)
        self.assertEqual(
            len(logged(logs, "did not take the last lines in time (1.5 s); aborting")),
            1,
        )
        endpoint.drop()
        self.successResultOf(done)

    def test_shutdownWhileListeningSetsNoLaterDeadline(self) -> None:
        """
        A shutdown while the relay still listens does not shorten a later
        stop: the upstream connection then gets C{UPSTREAM_CLOSE_TIMEOUT}.
        """
        factory, endpoint, clock = startRelay()
        upstream = endpoint.accept()
        self.successResultOf(factory.shutDown(1))
        clock.advance(10)
        factory.doStop()
        clock.advance(UPSTREAM_CLOSE_TIMEOUT - 0.1)
        self.assertFalse(upstream.disconnected)
        clock.advance(0.1)
        self.assertTrue(upstream.disconnected)
        endpoint.drop()

    def test_queuedLinesDroppedAtDeadline(self) -> None:
        """
        Lines still queued for a full upstream connection when the shutdown
        timeout runs out are dropped, counted and logged with their number,
        and the connection is aborted.
        """
        logs = LogCapture(self)
        factory, endpoint, clock = startRelay()
        upstream = endpoint.accept()
        client = connectClient(factory)
        assert upstream.producer is not None
        upstream.producer.pauseProducing()
        client.protocol.dataReceived(b"1\n2\n3\n")
        factory.doStop()
        done = factory.shutDown(2)
        clock.advance(0.5)
        lose(client)
        clock.advance(1.4)
        self.assertEqual((factory.queuedLines, upstream.disconnected), (3, False))
        clock.advance(0.1)
        self.assertEqual((factory.queuedLines, upstream.disconnected), (0, True))
        self.assertEqual(upstream.value(), b"")
        self.assertEqual(factory.relayStats.dropped, 3)
        self.assertEqual(
            len(logged(logs, "in time (1.5 s): dropped 3 queued line(s); aborting")), 1
        )
        endpoint.drop()
        self.successResultOf(done)

    def test_nothingLeftAfterClientsTimeout(self) -> None:
        """
        When the clients use up the whole shutdown timeout, the upstream
        connection is closed and aborted at once (on the next turn), not
        given more time.
        """
        factory, endpoint, clock = startRelay()
        upstream = endpoint.accept()
        client = connectClient(factory)
        factory.doStop()
        done = factory.shutDown(3)
        clock.advance(3)
        self.assertTrue(client.disconnected)
        lose(client)
        self.assertTrue(upstream.disconnecting)
        self.assertFalse(upstream.disconnected)
        clock.advance(0)
        self.assertTrue(upstream.disconnected)
        endpoint.drop()
        self.successResultOf(done)

    def test_upstreamLostWhileFlushing(self) -> None:
        """
        If the upstream connection drops while the stop waits for it to take
        the queued lines, they are dropped (counted and logged) and the
        relay stops without reconnecting.
        """
        logs = LogCapture(self)
        factory, endpoint, clock = startRelay()
        endpoint.accept()
        client = connectClient(factory)
        assert endpoint.transport.producer is not None
        endpoint.transport.producer.pauseProducing()
        client.protocol.dataReceived(b"1\n2\n")
        lose(client)
        factory.doStop()
        stopped = factory.whenUpstreamStopped()
        endpoint.drop()
        self.successResultOf(stopped)
        self.assertEqual(factory.relayStats.dropped, 2)
        self.assertEqual(len(logged(logs, "dropped 2 queued line(s)")), 1)
        clock.advance(UPSTREAM_CLOSE_TIMEOUT)
        self.assertEqual(endpoint.attempts, [])

    def test_restartWhileFlushing(self) -> None:
        """
        A relay started again while its upstream connection is still taking
        the last lines connects anew once that connection has closed.
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        client = connectClient(factory)
        assert upstream.producer is not None
        producer = upstream.producer
        producer.pauseProducing()
        client.protocol.dataReceived(b"1\n")
        lose(client)
        factory.doStop()
        factory.doStart()
        self.assertEqual(endpoint.attempts, [])
        producer.resumeProducing()
        self.assertEqual(upstream.value(), b"1\n")
        endpoint.drop()
        self.assertEqual(len(endpoint.attempts), 1)

    def test_silentUpstreamAborted(self) -> None:
        """
        An upstream connection that does not close within
        C{UPSTREAM_CLOSE_TIMEOUT} of stopping is aborted.
        """
        factory, endpoint, clock = startRelay()
        upstream = endpoint.accept()
        factory.doStop()
        stopped = factory.whenUpstreamStopped()
        clock.advance(UPSTREAM_CLOSE_TIMEOUT - 0.1)
        self.assertFalse(upstream.disconnected)
        clock.advance(0.1)
        self.assertTrue(upstream.disconnected)
        endpoint.drop()
        self.successResultOf(stopped)

    def test_shutDownWaitsForUpstream(self) -> None:
        """
        Shutting down finishes the clients, then waits for the upstream
        connection to close.
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        client = connectClient(factory)
        factory.doStop()
        done = factory.shutDown(10)
        self.assertTrue(client.writeDisconnected)
        lose(client)
        self.assertTrue(upstream.disconnecting)
        self.assertNoResult(done)
        endpoint.drop()
        self.successResultOf(done)

    def test_negativeQueueLimitRejected(self) -> None:
        """
        A negative queue limit is refused at construction.
        """
        self.assertRaises(ValueError, RelayFactory, FakeEndpoint(), queueLimit=-1)


def recordingUpstream(
    testCase: TestCase,
    received: list[bytes],
    reply: Callable[[bytes], bytes] | None = None,
    port: int = 0,
) -> LoopbackServer:
    """
    Start a line server that appends every line to C{received} and answers
    with C{reply(line)} (nothing by default).
    """

    def handler(line: bytes) -> bytes | None:
        received.append(line)
        return None if reply is None else reply(line)

    return startServer(testCase, LineFactory(handler), port=port)


def startRelayServer(
    testCase: TestCase, upstream: LoopbackServer, **kwargs: Any
) -> tuple[LoopbackServer, RelayFactory]:
    """
    Start a relay to C{upstream} on loopback, connecting to it as
    C{twistd tcpcomm --upstream 127.0.0.1:PORT} does and retrying every
    50 ms; at clean-up it is stopped and its upstream connection waited for.
    """
    endpoint = clientEndpoint(reactor, f"127.0.0.1:{upstream.port}")
    factory = RelayFactory(endpoint, retryPolicy=lambda attempt: 0.05, **kwargs)
    # Registered first, so run after the server is stopped.
    testCase.addCleanup(factory.whenUpstreamStopped)
    return startServer(testCase, factory), factory


async def connectLineClient(
    testCase: TestCase, server: LoopbackServer | IStreamClientEndpoint
) -> tuple[LineClient, list[bytes]]:
    """
    Connect a L{LineClient} to C{server}; return it and the list of lines it
    receives.  It is aborted at clean-up.
    """
    seen: list[bytes] = []
    endpoint = server.endpoint() if isinstance(server, LoopbackServer) else server
    client = await connectProtocol(endpoint, LineClient(onLine=seen.append))

    async def close() -> None:
        if not client.lost:
            client.transport.abortConnection()
        await waitUntil(lambda: client.lost)

    testCase.addCleanup(close)
    return client, seen


class DeafProtocol(Protocol):
    """
    A server that never reads what it is sent, with a small receive buffer
    (so that the kernel soon stops taking data for it).
    """

    def connectionMade(self) -> None:
        transport = cast(Any, self.transport)
        transport.pauseProducing()
        handle = cast(socket.socket, transport.getHandle())
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


@implementer(IStreamClientEndpoint)
class SmallSendBuffer:
    """
    A client endpoint whose connections have a small send buffer, so that
    the kernel soon stops taking data for a peer that does not read.
    """

    def __init__(self, wrapped: IStreamClientEndpoint) -> None:
        self._wrapped = wrapped

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        def shrink(protocol: IProtocol) -> IProtocol:
            transport = cast(Any, protocol).transport
            handle = cast(socket.socket, transport.getHandle())
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            return protocol

        return self._wrapped.connect(protocolFactory).addCallback(shrink)


class RelayServerTests(TestCase):
    """
    A relay and an upstream line server over real sockets on 127.0.0.1.
    """

    async def test_linesFromThreeClientsInOrder(self) -> None:
        """
        Lines from three clients arrive upstream untagged, in the order the
        relay got them.
        """
        received: list[bytes] = []
        upstream = recordingUpstream(self, received)
        relayServer, _relay = startRelayServer(self, upstream)
        clients = [(await connectLineClient(self, relayServer))[0] for _ in range(3)]
        expected: list[bytes] = []
        for round in range(3):
            for number, client in enumerate(clients):
                line = b"client %d line %d" % (number, round)
                client.sendLine(line)
                expected.append(line)
                await waitUntil(lambda: len(received) == len(expected))
        self.assertEqual(received, expected)

    async def test_framedRoundTrip(self) -> None:
        """
        Over real sockets, a C{length:4} relay carries its clients' frames
        to a C{length:4} upstream and the upstream's replies back to every
        client, payloads intact (LF and NUL included).
        """
        upstream = startServer(
            self, LineFactory(lambda payload: b"re:" + payload, framing="length:4")
        )
        relayServer, _relay = startRelayServer(self, upstream, framing="length:4")
        seen: list[bytes] = []
        client = await connectProtocol(
            relayServer.endpoint(), LineClient(framing="length:4", onLine=seen.append)
        )
        self.addCleanup(client.transport.abortConnection)
        client.sendFrame(b"a\nb\x00")
        client.sendFrame(b"")
        await waitUntil(lambda: len(seen) == 2)
        self.assertEqual(seen, [b"re:a\nb\x00", b"re:"])

    async def test_taggedLinesFromThreeClients(self) -> None:
        """
        With tagging, each line arrives upstream after its sender's address,
        in order.
        """
        received: list[bytes] = []
        upstream = recordingUpstream(self, received)
        relayServer, _relay = startRelayServer(self, upstream, tag=True)
        clients = [(await connectLineClient(self, relayServer))[0] for _ in range(3)]
        expected: list[bytes] = []
        for round in range(2):
            for client in clients:
                host = client.transport.getHost()
                assert isinstance(host, IPv4Address)
                client.sendLine(b"round %d" % round)
                expected.append(b"127.0.0.1:%d round %d" % (host.port, round))
                await waitUntil(lambda: len(received) == len(expected))
        self.assertEqual(received, expected)

    async def test_repliesToEveryClientWithoutTag(self) -> None:
        """
        Without tagging, every line the upstream sends back reaches every
        client.
        """
        upstream = recordingUpstream(self, [], reply=lambda line: b"re " + line)
        relayServer, relay = startRelayServer(self, upstream)
        (one, seenOne), (_two, seenTwo) = [
            await connectLineClient(self, relayServer) for _ in range(2)
        ]
        await waitUntil(lambda: relay.upstreamConnected)
        one.sendLine(b"hello")
        await waitUntil(lambda: seenOne and seenTwo)
        self.assertEqual((seenOne, seenTwo), ([b"re hello"], [b"re hello"]))

    async def test_repliesRoutedByTag(self) -> None:
        """
        With tagging, each client gets only the replies tagged with its
        address.
        """

        def reply(line: bytes) -> bytes:
            tag, _, rest = line.partition(b" ")
            return tag + b" re " + rest

        upstream = recordingUpstream(self, [], reply=reply)
        relayServer, _relay = startRelayServer(self, upstream, tag=True)
        (one, seenOne), (two, seenTwo) = [
            await connectLineClient(self, relayServer) for _ in range(2)
        ]
        one.sendLine(b"from one")
        two.sendLine(b"from two")
        one.sendLine(b"again one")
        await waitUntil(lambda: len(seenOne) == 2 and len(seenTwo) == 1)
        self.assertEqual(seenOne, [b"re from one", b"re again one"])
        self.assertEqual(seenTwo, [b"re from two"])

    async def test_upstreamRestartMidStream(self) -> None:
        """
        The upstream stops mid-stream and comes back on the same port: lines
        arrive in order and at most once, and every line sent while the relay
        knew it was down arrives exactly once.
        """
        received: list[bytes] = []
        upstream = recordingUpstream(self, received)
        relayServer, relay = startRelayServer(self, upstream)
        client, seen = await connectLineClient(self, relayServer)
        await waitUntil(lambda: relay.upstreamConnected)
        sent = 0

        def send(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                client.sendLine(b"%d" % sent)
                sent += 1

        send(50)
        await waitUntil(lambda: len(received) > 0)
        send(50)
        await upstream.stop()
        await waitUntil(lambda: not relay.upstreamConnected)
        whileDown = sent
        send(100)
        await waitUntil(lambda: relay.stats.linesHandled == sent)
        recordingUpstream(self, received, port=upstream.port)
        send(50)
        await waitUntil(lambda: received[-1:] == [b"%d" % (sent - 1)])
        numbers = [int(line) for line in received]
        self.assertEqual(numbers, sorted(set(numbers)))
        self.assertLessEqual(set(range(whileDown, sent)), set(numbers))
        self.assertEqual(seen, [])
        self.assertGreaterEqual(relay.relayStats.queued, 100)

    async def test_slowUpstreamHoldsClients(self) -> None:
        """
        An upstream that stops reading makes the relay stop reading from its
        clients, with nothing refused and little queued; once it reads
        again, every line arrives, in order.
        """
        received: list[bytes] = []
        gate: Deferred[None] = Deferred()

        def handler(line: bytes) -> Deferred[None] | None:
            received.append(line)
            return None if gate.called else gate

        upstream = startServer(self, LineFactory(handler, maxPending=1))
        relayServer, relay = startRelayServer(self, upstream)
        client, seen = await connectLineClient(self, relayServer)
        await waitUntil(lambda: relay.upstreamConnected)
        lines = [b"%05d " % i + b"x" * 994 for i in range(16 * 1024)]
        client.transport.write(b"".join(line + b"\n" for line in lines))
        lastBytesIn = -1

        def stalled() -> bool:
            nonlocal lastBytesIn
            previous, lastBytesIn = lastBytesIn, relay.stats.bytesIn
            return relay.holdingClients and lastBytesIn == previous

        await waitUntil(stalled)
        self.assertLess(relay.stats.bytesIn, len(lines) * 1000)
        self.assertLessEqual(relay.queuedLines, 100)
        self.assertEqual(relay.relayStats.refused, 0)
        gate.callback(None)
        await waitUntil(lambda: len(received) == len(lines))
        self.assertEqual(received, lines)
        self.assertEqual(seen, [])
        self.assertFalse(relay.holdingClients)

    async def test_queueOverflowErrors(self) -> None:
        """
        With the upstream down and a queue limit of 5, a client sending 8
        lines gets exactly 3 C{ERROR upstream unavailable} lines; the first 5
        reach the upstream in order once it is back, and their replies follow
        the errors.
        """
        received: list[bytes] = []
        upstream = recordingUpstream(self, [])
        relayServer, relay = startRelayServer(self, upstream, queueLimit=5)
        await waitUntil(lambda: relay.upstreamConnected)
        await upstream.stop()
        await waitUntil(lambda: not relay.upstreamConnected)
        client, seen = await connectLineClient(self, relayServer)
        client.transport.write(b"".join(b"%d\n" % i for i in range(8)))
        await waitUntil(lambda: len(seen) == 3)
        self.assertEqual(seen, [UPSTREAM_UNAVAILABLE] * 3)
        self.assertEqual(relay.queuedLines, 5)
        recordingUpstream(
            self, received, reply=lambda line: b"re " + line, port=upstream.port
        )
        await waitUntil(lambda: len(seen) == 8)
        client.sendLine(b"8")
        await waitUntil(lambda: len(seen) == 9)
        self.assertEqual(received, [b"%d" % i for i in (0, 1, 2, 3, 4, 8)])
        self.assertEqual(
            seen,
            [UPSTREAM_UNAVAILABLE] * 3 + [b"re %d" % i for i in (0, 1, 2, 3, 4, 8)],
        )
        stats = relay.relayStats
        self.assertEqual((stats.queued, stats.refused), (5, 3))

    async def test_longLineFloodStaysBounded(self) -> None:
        """
        With the upstream down, a client flooding 60,000-byte lines fills
        the queue only up to its byte bound (and nowhere near its line
        bound): every line beyond it is answered C{ERROR upstream
        unavailable}, and the lines that fit arrive, in order, once the
        upstream is back.
        """
        received: list[bytes] = []
        upstream = recordingUpstream(self, [])
        relayServer, relay = startRelayServer(self, upstream, queueBytes=1024 * 1024)
        await waitUntil(lambda: relay.upstreamConnected)
        await upstream.stop()
        await waitUntil(lambda: not relay.upstreamConnected)
        client, seen = await connectLineClient(self, relayServer)
        lines = [b"%03d" % i + b"x" * 59997 for i in range(100)]
        client.transport.write(b"".join(line + b"\n" for line in lines))
        fits = 1024 * 1024 // 60000
        await waitUntil(lambda: len(seen) == len(lines) - fits)
        self.assertEqual(seen, [UPSTREAM_UNAVAILABLE] * (len(lines) - fits))
        self.assertEqual(relay.queuedLines, fits)
        self.assertLessEqual(relay.queuedBytes, 1024 * 1024)
        recordingUpstream(self, received, port=upstream.port)
        await waitUntil(lambda: len(received) == fits)
        self.assertEqual(received, lines[:fits])
        stats = relay.relayStats
        self.assertEqual((stats.queued, stats.refused), (fits, len(lines) - fits))

    async def test_upstreamFollowsFactory(self) -> None:
        """
        The upstream connection opens when the relay starts listening and
        closes when it stops.
        """
        upstream = recordingUpstream(self, [])
        relay = RelayFactory(upstream.endpoint(), retryPolicy=lambda attempt: 0.05)
        self.addCleanup(relay.whenUpstreamStopped)
        self.assertEqual(upstream.openConnections, 0)
        relayServer = startServer(self, relay)
        await waitUntil(lambda: upstream.openConnections == 1)
        self.assertTrue(relay.upstreamConnected)
        await relayServer.stop()
        await relay.whenUpstreamStopped()
        self.assertFalse(relay.upstreamConnected)
        await waitUntil(lambda: upstream.openConnections == 0)

    async def test_gracefulShutdown(self) -> None:
        """
        Stopping listening and shutting down closes the clients, delivers
        every line the relay had read, and then closes the upstream
        connection.
        """
        received: list[bytes] = []
        upstream = recordingUpstream(self, received)
        relay = RelayFactory(upstream.endpoint(), retryPolicy=lambda attempt: 0.05)
        self.addCleanup(relay.whenUpstreamStopped)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(relay)
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        client, _seen = await connectLineClient(
            self, TCP4ClientEndpoint(reactor, address.host, address.port)
        )
        for i in range(10):
            client.sendLine(b"%d" % i)
        await waitUntil(lambda: relay.stats.linesHandled == 10)
        await maybeDeferred(port.stopListening)
        await relay.shutDown(5)
        self.assertEqual(received, [b"%d" % i for i in range(10)])
        self.assertFalse(relay.upstreamConnected)
        await waitUntil(lambda: client.lost and upstream.openConnections == 0)

    async def test_shutdownTimeoutHoldsWithStalledUpstream(self) -> None:
        """
        With an upstream that stopped reading, the whole relay shutdown
        (clients, queued lines, upstream connection) ends within its
        timeout, with what was still queued dropped and logged.
        """
        logs = LogCapture(self)
        upstream = startServer(self, Factory.forProtocol(DeafProtocol))
        relay = RelayFactory(
            SmallSendBuffer(upstream.endpoint()), retryPolicy=lambda attempt: 0.05
        )
        self.addCleanup(relay.whenUpstreamStopped)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(relay)
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        client, _seen = await connectLineClient(
            self, TCP4ClientEndpoint(reactor, address.host, address.port)
        )
        await waitUntil(lambda: relay.upstreamConnected)
        client.transport.write((b"x" * 1000 + b"\n") * 1024)
        lastBytesIn = -1

        def stalled() -> bool:
            nonlocal lastBytesIn
            previous, lastBytesIn = lastBytesIn, relay.stats.bytesIn
            return relay.holdingClients and lastBytesIn == previous

        await waitUntil(stalled)
        started = reactor.seconds()
        await maybeDeferred(port.stopListening)
        await relay.shutDown(0.5)
        self.assertLess(reactor.seconds() - started, 1.5)
        self.assertFalse(relay.upstreamConnected)
        dropped = relay.relayStats.dropped
        self.assertEqual(
            len(logged(logs, f"dropped {dropped} queued line(s); aborting")),
            1 if dropped else 0,
        )
        self.assertEqual(len(logged(logs, "did not take the last lines in time")), 1)


class RelayTLSTests(TestCase):
    """
    A relay whose upstream speaks TLS, over real sockets on 127.0.0.1.
    """

    def tlsUpstream(
        self, received: list[bytes]
    ) -> tuple[LoopbackServer, CertificateAuthority]:
        """
        Start a recording upstream line server behind TLS, with a certificate
        for C{localhost} from a new authority; return it and the authority.
        """
        authority = makeCertificateAuthority()
        issued = authority.issue(["localhost", "127.0.0.1"])

        def handler(line: bytes) -> bytes:
            received.append(line)
            return b"re " + line

        factory = TLSMemoryBIOFactory(
            issued.serverOptions(), False, LineFactory(handler)
        )
        return startServer(self, factory), authority

    def startRelay(
        self, upstream: LoopbackServer, trusted: CertificateAuthority
    ) -> tuple[LoopbackServer, RelayFactory]:
        """
        Start a relay to C{upstream} over TLS, trusting C{trusted} only.
        """
        endpoint = wrapClientTLS(
            trusted.clientOptions("localhost"), upstream.endpoint()
        )
        factory = RelayFactory(endpoint, retryPolicy=lambda attempt: 0.05)
        self.addCleanup(factory.whenUpstreamStopped)
        return startServer(self, factory), factory

    async def test_linesAfterHandshake(self) -> None:
        """
        Over TLS, lines go upstream once the handshake is done, and replies
        come back.
        """
        received: list[bytes] = []
        upstream, authority = self.tlsUpstream(received)
        relayServer, relay = self.startRelay(upstream, authority)
        client, seen = await connectLineClient(self, relayServer)
        client.sendLine(b"one")
        client.sendLine(b"two")
        await waitUntil(lambda: len(seen) == 2)
        self.assertEqual(received, [b"one", b"two"])
        self.assertEqual(seen, [b"re one", b"re two"])
        self.assertTrue(relay.upstreamConnected)

    async def test_untrustedUpstreamGetsNothing(self) -> None:
        """
        An upstream whose certificate fails verification gets no line: lines
        stay queued, and each failed attempt is logged with why.
        """
        logs = LogCapture(self)
        received: list[bytes] = []
        upstream, _authority = self.tlsUpstream(received)
        relayServer, relay = self.startRelay(upstream, makeCertificateAuthority())
        client, _seen = await connectLineClient(self, relayServer)
        client.sendLine(b"secret")
        await waitUntil(
            lambda: len(logged(logs, "Cannot connect to upstream: TLS failed")) >= 2
        )
        self.assertEqual(received, [])
        self.assertEqual(relay.queuedLines, 1)
        self.assertEqual(relay.relayStats.forwarded, 0)
        self.assertFalse(relay.upstreamConnected)


def recordWrites(
    case: SynchronousTestCase, transport: HalfCloseableStringTransport
) -> list[bytes]:
    """
    Record each write to C{transport} (which still takes it), for the rest
    of the test.
    """
    writes: list[bytes] = []
    write = transport.write

    def recording(data: bytes) -> None:
        writes.append(data)
        write(data)

    case.patch(transport, "write", recording)
    return writes


def modbusRequest(transaction: int, registers: int) -> bytes:
    """
    A MODBUS TCP "write multiple registers" request for unit 1 with
    transaction id C{transaction}: longer with more C{registers}.
    """
    pdu = (
        b"\x10\x00\x00"
        + bytes([0, registers, 2 * registers])
        + b"\x00" * (2 * registers)
    )
    return bytes([0, transaction, 0, 0, 0, len(pdu) + 1, 1]) + pdu


class BatchTests(SynchronousTestCase):
    """
    The relay takes a read's lines at once, both ways: one write upstream
    per client read, one write to each client per upstream read, and every
    line decided as it would be alone.
    """

    def test_oneUpstreamWritePerRead(self) -> None:
        """
        A client read's lines go upstream in one write, however many it
        holds (2,000 here), and each read in its own.
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        writes = recordWrites(self, upstream)
        a, b = connectClient(factory, 1001), connectClient(factory, 1002)
        many = b"".join(b"%d\n" % i for i in range(2000))
        a.protocol.dataReceived(b"a1\na2\r\na3\npart")
        b.protocol.dataReceived(many)
        a.protocol.dataReceived(b"ial\n")
        self.assertEqual(writes, [b"a1\na2\na3\n", many, b"partial\n"])
        self.assertEqual(factory.relayStats.forwarded, 2004)
        self.assertEqual((a.value(), b.value()), (b"", b""))

    def test_oneTaggedWritePerRead(self) -> None:
        """
        With tagging, each line of a read carries its sender's tag, and the
        read goes upstream in one write.
        """
        factory, endpoint, _clock = startRelay(tag=True, delimiter=b"\r\n")
        upstream = endpoint.accept()
        writes = recordWrites(self, upstream)
        client = connectClient(factory, IPv6Address("TCP", "::1", 5556))
        client.protocol.dataReceived(b"one\ntwo words\n\n")
        self.assertEqual(
            writes, [b"[::1]:5556 one\r\n[::1]:5556 two words\r\n[::1]:5556 \r\n"]
        )

    def test_oneFramedWritePerRead(self) -> None:
        """
        With another framing, a read's frames go upstream framed, in one
        write.
        """
        factory, endpoint, _clock = startRelay(framing="netstring")
        upstream = endpoint.accept()
        writes = recordWrites(self, upstream)
        client = connectClient(factory)
        client.protocol.dataReceived(b"3:one,0:,5:three,2:")
        self.assertEqual(writes, [b"3:one,0:,5:three,"])

    def test_refusedInPlaceWithinARead(self) -> None:
        """
        With the upstream down, each line of one read is queued or refused
        as it would be alone: a line past the byte bound is refused while a
        later, shorter one waits, until the line bound refuses the rest; the
        waiting lines go, in order, once it is up.
        """
        sizes = [100, 200, 30, 120, 10, 0, 1]
        lines = [b"%c" % (ord("a") + i) * size for i, size in enumerate(sizes)]
        read = b"".join(line + b"\n" for line in lines)
        batch, batchEndpoint, _clock = startRelay(queueLimit=4, queueBytes=250)
        single, singleEndpoint, _clock = startRelay(queueLimit=4, queueBytes=250)
        batchClient, singleClient = connectClient(batch), connectClient(single)
        batchClient.protocol.dataReceived(read)
        for line in lines:
            singleClient.protocol.dataReceived(line + b"\n")
        self.assertEqual(batchClient.value(), ERROR * 3)
        self.assertEqual(singleClient.value(), batchClient.value())
        self.assertEqual(batch.relayStats, single.relayStats)
        self.assertEqual((batch.queuedLines, batch.queuedBytes), (4, 250))
        expected = b"".join(lines[i] + b"\n" for i in (0, 2, 3, 5))
        self.assertEqual(batchEndpoint.accept().value(), expected)
        self.assertEqual(singleEndpoint.accept().value(), expected)

    def test_modbusRefusalsInPlace(self) -> None:
        """
        MODBUS requests of one read that the relay cannot take are answered
        with exception 0x0A each, in their requests' order, while one that
        fits between them waits and goes once the upstream is up.
        """
        factory, endpoint, _clock = startRelay(framing="modbus", queueBytes=16)
        client = connectClient(factory)
        long1, short, long3 = (
            modbusRequest(1, 2),
            modbusRequest(2, 0),
            modbusRequest(3, 2),
        )
        self.assertEqual((len(long1), len(short)), (17, 13))
        client.protocol.dataReceived(long1 + short + long3)
        self.assertEqual(
            client.value(),
            b"\x00\x01\x00\x00\x00\x03\x01\x90\x0a\x00\x03\x00\x00\x00\x03\x01\x90\x0a",
        )
        self.assertFalse(client.protocol.closing)
        self.assertEqual(endpoint.accept().value(), short)

    def test_binaryRefusalWithinARead(self) -> None:
        """
        In a framing with no way to say "refused", the frames of a read up to
        the refused one are relayed, and its sender is closed.
        """
        logs = LogCapture(self)
        factory, endpoint, _clock = startRelay(framing="stx-etx", queueLimit=1)
        client = connectClient(factory)
        client.protocol.dataReceived(b"\x02a\x03\x02b\x03")
        self.assertTrue(client.protocol.lingering)
        self.assertEqual(client.value(), b"")
        self.assertEqual(endpoint.accept().value(), b"\x02a\x03")
        self.assertTrue(logged(logs, "refused 1 message(s)"))

    def test_heldWhileFullQueuesARead(self) -> None:
        """
        While the upstream connection is full, a read's lines all wait, and
        go in one write, before newer lines, when it drains.
        """
        factory, endpoint, _clock = startRelay()
        upstream = endpoint.accept()
        writes = recordWrites(self, upstream)
        client = connectClient(factory)
        assert upstream.producer is not None
        upstream.producer.pauseProducing()
        client.protocol.dataReceived(b"1\n2\n3\n")
        self.assertEqual((writes, factory.queuedLines), ([], 3))
        upstream.producer.resumeProducing()
        client.protocol.dataReceived(b"4\n5\n")
        self.assertEqual(writes, [b"1\n2\n3\n", b"4\n5\n"])

    def test_oneClientWritePerUpstreamRead(self) -> None:
        """
        Without tagging, each client gets an upstream read's lines in one
        write, each line counted delivered once per client.
        """
        factory, endpoint, _clock = startRelay(delimiter=b"\r\n")
        endpoint.accept()
        clients = [connectClient(factory, port) for port in (1001, 1002, 1003)]
        writes = [recordWrites(self, client) for client in clients]
        endpoint.send(b"one\ntwo\r\nthr")
        endpoint.send(b"ee\n")
        self.assertEqual(writes, [[b"one\r\ntwo\r\n", b"three\r\n"]] * 3)
        stats = factory.relayStats
        self.assertEqual((stats.received, stats.delivered), (3, 9))

    def test_oneFramedClientWritePerUpstreamRead(self) -> None:
        """
        With another framing, each client gets an upstream read's frames in
        one write.
        """
        factory, endpoint, _clock = startRelay(framing="length:1")
        endpoint.accept()
        client = connectClient(factory)
        writes = recordWrites(self, client)
        endpoint.send(b"\x02hi\x00\x03you")
        self.assertEqual(writes, [b"\x02hi\x00\x03you"])

    def test_taggedWritePerClientPerUpstreamRead(self) -> None:
        """
        With tagging, each client gets its lines of an upstream read in one
        write, in order, without their tags; lines naming no connected
        client are dropped and counted.
        """
        factory, endpoint, _clock = startRelay(tag=True)
        endpoint.accept()
        one, two = connectClient(factory, 1001), connectClient(factory, 1002)
        oneWrites, twoWrites = recordWrites(self, one), recordWrites(self, two)
        endpoint.send(
            b"192.0.2.7:1002 b1\n192.0.2.7:1001 a1\nnobody x\n"
            b"192.0.2.7:1002 b2\nno-tag\n192.0.2.7:1001 a2\n"
        )
        self.assertEqual(oneWrites, [b"a1\na2\n"])
        self.assertEqual(twoWrites, [b"b1\nb2\n"])
        stats = factory.relayStats
        self.assertEqual((stats.received, stats.delivered), (6, 4))
        self.assertEqual(stats.undeliverable, 2)

    def test_slowClientClosedByABlock(self) -> None:
        """
        A client that does not read is closed with C{ERROR too slow} when an
        upstream read's block takes it past C{maxPendingBytes}; the others
        get the whole block.
        """
        factory, endpoint, _clock = startRelay(maxPendingBytes=12)
        endpoint.accept()
        slow, fast = connectClient(factory, 1001), connectClient(factory, 1002)
        slow.protocol.pauseProducing()
        endpoint.send(b"12345\n")
        endpoint.send(b"12345\nx\n")
        self.assertEqual(slow.value(), TOO_SLOW + b"\n")
        self.assertEqual(fast.value(), b"12345\n12345\nx\n")
        self.assertEqual(factory.relayStats.delivered, 6)

    def test_unframableUpstreamMessageDropped(self) -> None:
        """
        A message from the upstream that the framing cannot carry to clients
        (a last unterminated frame that holds the delimiter) is dropped,
        counted and logged; the messages before it were delivered.
        """
        logs = LogCapture(self)
        factory, endpoint, _clock = startRelay(framing="delimiter:0a0a")
        endpoint.accept()
        client = connectClient(factory)
        endpoint.send(b"a\n\nb\n\n\n")
        assert endpoint.protocol is not None
        endpoint.protocol.readConnectionLost()  # type: ignore[attr-defined]
        self.assertEqual(client.value(), b"a\n\nb\n\n")
        self.assertEqual(factory.relayStats.undeliverable, 1)
        self.assertTrue(logged(logs, "cannot carry"))


class FramedRelayTests(SynchronousTestCase):
    """
    The relay with a framing other than lines, in memory: frames both ways,
    and refusals in the framing's own terms.
    """

    def test_framesBothWays(self) -> None:
        """
        Clients' frames go upstream framed the same way, in order, and the
        upstream's frames reach every client, framed again.
        """
        factory, endpoint, _clock = startRelay(framing="length:2")
        upstream = endpoint.accept()
        a, b = connectClient(factory, 1001), connectClient(factory, 1002)
        a.protocol.dataReceived(b"\x00\x02a1\x00\x02a")
        b.protocol.dataReceived(b"\x00\x03b\n1")
        a.protocol.dataReceived(b"2")
        self.assertEqual(upstream.value(), b"\x00\x02a1\x00\x03b\n1\x00\x02a2")
        endpoint.send(b"\x00\x05hello\x00")
        self.assertEqual(a.value(), b"\x00\x05hello")
        self.assertEqual(b.value(), b"\x00\x05hello")

    def test_queuedFramesSentOnConnect(self) -> None:
        """
        Frames that arrive while the upstream is down are queued and sent,
        framed, once it connects.
        """
        factory, endpoint, _clock = startRelay(framing="netstring")
        client = connectClient(factory)
        client.protocol.dataReceived(b"3:one,3:two,")
        upstream = endpoint.accept()
        self.assertEqual(upstream.value(), b"3:one,3:two,")

    def test_modbusRefusedWithException0A(self) -> None:
        """
        A MODBUS request the relay cannot take (upstream down, queue full)
        is answered with exception code 0x0A, gateway path unavailable.
        """
        factory, _endpoint, _clock = startRelay(framing="modbus", queueLimit=0)
        client = connectClient(factory)
        request = b"\x00\x07\x00\x00\x00\x06\x01\x03\x00\x00\x00\x02"
        client.protocol.dataReceived(request)
        self.assertEqual(client.value(), b"\x00\x07\x00\x00\x00\x03\x01\x83\x0a")
        self.assertFalse(client.protocol.closing)

    def test_binaryRefusalCloses(self) -> None:
        """
        A frame of a framing with no way to say "refused" closes its sender
        after the replies before it, logged; other clients are unaffected.
        """
        logs = LogCapture(self)
        factory, _endpoint, _clock = startRelay(framing="stx-etx", queueLimit=0)
        refused, other = connectClient(factory, 1001), connectClient(factory, 1002)
        refused.protocol.dataReceived(b"\x02x\x03")
        self.assertTrue(refused.protocol.lingering)
        self.assertFalse(other.protocol.closing)
        self.assertTrue(logged(logs, "No stx-etx reply"))
        self.assertTrue(logged(logs, "refused 1 message(s)"))

    def test_badFrameFromUpstream(self) -> None:
        """
        A bad frame from the upstream drops that connection, saying why;
        the frames before it are delivered.
        """
        logs = LogCapture(self)
        factory, endpoint, _clock = startRelay(framing="length:1:max=8")
        endpoint.accept()
        client = connectClient(factory)
        endpoint.send(b"\x02ok\x20")
        self.assertEqual(client.value(), b"\x02ok")
        self.assertFalse(factory.upstreamConnected)
        self.assertTrue(logged(logs, "bad frame from"))

    def test_tagNeedsLines(self) -> None:
        """
        Tagging needs line framing: any other is a C{ValueError} naming it.
        """
        error = self.assertRaises(
            ValueError, RelayFactory, FakeEndpoint(), tag=True, framing="length:4"
        )
        self.assertIn("length:4", str(error))
