"""
Tests for L{tcpcomm.lineclient}: the protocol's logic in memory, and
pipelining, finishing, dropped connections and reconnection over real
loopback sockets.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm.client import ConnectionFailed
from tcpcomm.framers import FramingError, LengthFieldFramer, parseFraming
from tcpcomm.line import LineFactory
from tcpcomm.lineclient import LineClient, ReconnectingLineClient
from tcpcomm.testing import startServer
from tests.test_client import closedPort
from tests.test_line import HalfCloseableStringTransport, waitUntil


def connected(client: LineClient) -> HalfCloseableStringTransport:
    """
    Connect C{client} to an in-memory transport and return the transport.
    """
    transport = HalfCloseableStringTransport(
        peerAddress=IPv4Address("TCP", "192.0.2.1", 8000)
    )
    client.makeConnection(transport)
    return transport


class LineClientTests(SynchronousTestCase):
    """
    L{LineClient} on an in-memory transport.
    """

    def test_requestSendsLine(self) -> None:
        """
        A request sends its line with the delimiter; C{str} is sent as UTF-8.
        """
        client = LineClient(delimiter=b"\r\n")
        transport = connected(client)
        client.request("héllo")
        self.assertEqual(transport.value(), "héllo\r\n".encode())

    def test_repliesMatchedInOrder(self) -> None:
        """
        Pipelined requests get the reply lines in order, CR before LF
        dropped.
        """
        client = LineClient()
        connected(client)
        first, second = client.request(b"a"), client.request(b"b")
        self.assertEqual(client.pending, 2)
        client.dataReceived(b"reply a\r\nrep")
        self.assertEqual(self.successResultOf(first), b"reply a")
        self.assertNoResult(second)
        client.dataReceived(b"ly b\n")
        self.assertEqual(self.successResultOf(second), b"reply b")
        self.assertEqual(client.pending, 0)

    def test_unaskedLinesGoToOnLine(self) -> None:
        """
        Lines arriving while no request waits go to C{onLine}.
        """
        seen: list[bytes] = []
        client = LineClient(onLine=seen.append)
        connected(client)
        client.dataReceived(b"notice 1\nnotice 2\n")
        self.assertEqual(seen, [b"notice 1", b"notice 2"])

    def test_subclassHook(self) -> None:
        """
        A subclass may take unasked lines by overriding C{lineReceived}.
        """
        seen: list[bytes] = []

        class Chatty(LineClient):
            def lineReceived(self, line: bytes) -> None:
                seen.append(line.upper())

        client = Chatty()
        connected(client)
        client.dataReceived(b"hi\n")
        self.assertEqual(seen, [b"HI"])

    def test_linesReceivedGetsARead(self) -> None:
        """
        A subclass overriding C{linesReceived} gets each read's lines (or
        frames' payloads) in one call, in order, and a last unterminated
        line at half-close in one more.
        """
        seen: list[list[bytes]] = []

        class Batching(LineClient):
            def linesReceived(self, lines: list[bytes]) -> None:
                seen.append(lines)

        client = Batching()
        connected(client)
        client.dataReceived(b"a\nb\r\nc")
        client.dataReceived(b"\nd")
        client.readConnectionLost()
        framed = Batching(framing="netstring")
        connected(framed)
        framed.dataReceived(b"1:x,2:yz,")
        self.assertEqual(seen, [[b"a", b"b"], [b"c"], [b"d"], [b"x", b"yz"]])

    def test_cancelKeepsOrder(self) -> None:
        """
        A cancelled request fails with C{CancelledError}, and its reply, when
        it comes, is not given to the next request.
        """
        client = LineClient()
        connected(client)
        first, second = client.request(b"a"), client.request(b"b")
        first.cancel()
        self.failureResultOf(first, CancelledError)
        client.dataReceived(b"for a\nfor b\n")
        self.assertEqual(self.successResultOf(second), b"for b")

    def test_finishHalfCloses(self) -> None:
        """
        C{finish} half-closes and fires once the server has closed, after the
        replies arrived; a last reply without delimiter counts.
        """
        client = LineClient()
        transport = connected(client)
        reply = client.request(b"q")
        finished = client.finish()
        self.assertTrue(transport.writeDisconnected)
        self.assertNoResult(finished)
        client.dataReceived(b"answer")
        client.readConnectionLost()
        self.assertEqual(self.successResultOf(reply), b"answer")
        self.assertTrue(transport.disconnecting)
        client.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(finished))
        self.assertIsNone(self.successResultOf(client.finish()))

    def test_noSendingAfterFinish(self) -> None:
        """
        After C{finish}, sending fails with L{ConnectionFailed}.
        """
        client = LineClient()
        connected(client)
        client.finish()
        self.assertRaises(ConnectionFailed, client.sendLine, b"late")
        self.failureResultOf(client.request(b"late"), ConnectionFailed)

    def test_closeBeforeRepliesFailsThem(self) -> None:
        """
        A server that closes before answering fails the waiting requests and
        C{finish}, saying how many replies were missing.
        """
        client = LineClient()
        connected(client)
        requests = [client.request(b"a"), client.request(b"b")]
        finished = client.finish()
        client.connectionLost(Failure(ConnectionDone()))
        for request in requests:
            failure = self.failureResultOf(request, ConnectionFailed)
            self.assertEqual(
                failure.getErrorMessage(),
                "connection to 192.0.2.1:8000 closed before 2 replies arrived",
            )
        self.failureResultOf(finished, ConnectionFailed)

    def test_resetFailsRequests(self) -> None:
        """
        A reset fails waiting requests with a message naming the server.
        """
        client = LineClient()
        connected(client)
        request = client.request(b"a")
        client.connectionLost(Failure(ConnectionLost()))
        failure = self.failureResultOf(request, ConnectionFailed)
        self.assertEqual(
            failure.getErrorMessage(), "connection reset by 192.0.2.1:8000"
        )

    def test_finishFromAFailedRequest(self) -> None:
        """
        C{finish} called by a request's errback, while the connection's loss
        is being reported, fails too: the loss is no clean close.
        """
        client = LineClient()
        connected(client)
        finishes: list[Deferred[None]] = []
        client.request(b"a").addErrback(lambda _: finishes.append(client.finish()))
        client.connectionLost(Failure(ConnectionLost()))
        [finished] = finishes
        failure = self.failureResultOf(finished, ConnectionFailed)
        self.assertEqual(
            failure.getErrorMessage(), "connection reset by 192.0.2.1:8000"
        )

    def test_overlongLineFromServer(self) -> None:
        """
        A server line over the limit aborts the connection and fails waiting
        requests, saying why.
        """
        client = LineClient(maxLineLength=8)
        transport = connected(client)
        request = client.request(b"a")
        client.dataReceived(b"x" * 9)
        self.assertTrue(transport.disconnecting)
        client.connectionLost(Failure(ConnectionLost()))
        failure = self.failureResultOf(request, ConnectionFailed)
        self.assertIn("longer than 8 bytes", failure.getErrorMessage())


class FramedLineClientTests(SynchronousTestCase):
    """
    L{LineClient} with a C{framing}, on an in-memory transport.
    """

    def test_requestSendsFrame(self) -> None:
        """
        A request sends its payload framed, LF and all; C{str} as UTF-8.
        """
        client = LineClient(framing="length:2")
        transport = connected(client)
        client.request(b"a\nb")
        client.request("é")
        self.assertEqual(transport.value(), b"\x00\x03a\nb\x00\x02\xc3\xa9")

    def test_repliesMatchedInOrder(self) -> None:
        """
        Pipelined requests get the reply frames' payloads in order, however
        the frames are cut into reads; a frame nobody asked for goes to
        C{onLine}.
        """
        seen: list[bytes] = []
        client = LineClient(framing="netstring", onLine=seen.append)
        connected(client)
        first, second = client.request(b"a"), client.request(b"b")
        client.dataReceived(b"3:x\ny,2:")
        self.assertEqual(self.successResultOf(first), b"x\ny")
        self.assertNoResult(second)
        client.dataReceived(b"zz,6:notice,")
        self.assertEqual(self.successResultOf(second), b"zz")
        self.assertEqual(seen, [b"notice"])
        self.assertEqual(client.pending, 0)

    def test_framerFactory(self) -> None:
        """
        C{framing} may be a callable that makes framers, such as what
        L{parseFraming} returns.
        """
        for framing in (parseFraming("length:1"), lambda: LengthFieldFramer(1)):
            client = LineClient(framing=framing)
            transport = connected(client)
            reply = client.request(b"hi")
            self.assertEqual(transport.value(), b"\x02hi")
            client.dataReceived(b"\x02ok")
            self.assertEqual(self.successResultOf(reply), b"ok")

    def test_sendFrameOneWay(self) -> None:
        """
        C{sendFrame}, and its old name C{sendLine}, send a frame and wait
        for no reply.
        """
        client = LineClient(framing="stx-etx")
        transport = connected(client)
        client.sendFrame(b"one")
        client.sendLine("two")
        self.assertEqual(transport.value(), b"\x02one\x03\x02two\x03")
        self.assertEqual(client.pending, 0)

    def test_unframablePayloadNotSent(self) -> None:
        """
        A payload the framing cannot frame fails its request (and
        C{sendFrame} raises) with L{FramingError}; nothing is sent, and the
        next request still gets its own reply.
        """
        client = LineClient(framing="length:1")
        transport = connected(client)
        failure = self.failureResultOf(client.request(b"x" * 256), FramingError)
        self.assertIn("does not fit a 1-byte length field", failure.getErrorMessage())
        self.assertRaises(FramingError, client.sendFrame, b"x" * 256)
        modbus = LineClient(framing="modbus")
        connected(modbus)
        self.failureResultOf(modbus.request(b"not an ADU"), FramingError)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(client.pending, 0)
        reply = client.request(b"ok")
        client.dataReceived(b"\x03yes")
        self.assertEqual(self.successResultOf(reply), b"yes")

    def test_badFrameFailsEveryRequest(self) -> None:
        """
        A reply stream the framer cannot cut: the frames before the fault
        answer their requests, the connection is aborted, and every other
        waiting request, and C{finish}, fail saying what was wrong.
        """
        client = LineClient(framing="length:2:max=100")
        transport = connected(client)
        requests = [client.request(b"a"), client.request(b"b"), client.request(b"c")]
        finished = client.finish()
        client.dataReceived(b"\x00\x01A\xff\xff")
        self.assertEqual(self.successResultOf(requests[0]), b"A")
        self.assertTrue(transport.disconnecting)
        client.dataReceived(b"\x00\x01B")
        client.connectionLost(Failure(ConnectionLost()))
        expected = "bad frame from 192.0.2.1:8000: frame longer than max 100 bytes"
        for request in requests[1:]:
            failure = self.failureResultOf(request, ConnectionFailed)
            self.assertEqual(failure.getErrorMessage(), expected)
        self.assertEqual(
            self.failureResultOf(finished, ConnectionFailed).getErrorMessage(),
            expected,
        )

    def test_closeInsideFrame(self) -> None:
        """
        A server that closes inside a frame fails the waiting request and
        C{finish}, saying so.
        """
        client = LineClient(framing="length:2")
        transport = connected(client)
        request = client.request(b"a")
        finished = client.finish()
        client.dataReceived(b"\x00\x05abc")
        client.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        client.connectionLost(Failure(ConnectionDone()))
        expected = (
            "connection to 192.0.2.1:8000 closed inside a frame"
            " (input ended inside a frame (5 bytes held))"
        )
        failure = self.failureResultOf(request, ConnectionFailed)
        self.assertEqual(failure.getErrorMessage(), expected)
        self.assertEqual(
            self.failureResultOf(finished, ConnectionFailed).getErrorMessage(),
            expected,
        )

    def test_finishTakesLastDelimitedFrame(self) -> None:
        """
        C{finish} fires once the server has closed; with a delimiter framing,
        a last frame without its delimiter is the last reply.
        """
        client = LineClient(framing="delimiter:00")
        transport = connected(client)
        reply = client.request(b"q")
        finished = client.finish()
        self.assertTrue(transport.writeDisconnected)
        client.dataReceived(b"answer")
        client.readConnectionLost()
        self.assertEqual(self.successResultOf(reply), b"answer")
        client.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(finished))

    def test_lineFramingIsLines(self) -> None:
        """
        C{framing="line:max=N"} is the line client, with its C{max}: lines
        end with the delimiter, and a longer line aborts as ever.
        """
        client = LineClient(framing="line:max=8", delimiter=b"\r\n")
        transport = connected(client)
        request = client.request(b"a")
        self.assertEqual(transport.value(), b"a\r\n")
        client.dataReceived(b"x" * 9)
        self.assertTrue(transport.disconnecting)
        client.connectionLost(Failure(ConnectionLost()))
        failure = self.failureResultOf(request, ConnectionFailed)
        self.assertIn("longer than 8 bytes", failure.getErrorMessage())

    def test_badSpecification(self) -> None:
        """
        A bad C{framing} specification is refused when the client is made,
        with a one-line L{ValueError}.
        """
        for make in (
            lambda: LineClient(framing="length:5"),
            lambda: ReconnectingLineClient(
                closedEndpoint(), framing="nonsense", clock=reactor
            ),
        ):
            error = self.assertRaises(ValueError, make)
            self.assertNotIn("\n", str(error))
            self.assertIn("framing '", str(error))


def closedEndpoint() -> TCP4ClientEndpoint:
    """
    An endpoint on 127.0.0.1 where nothing listens.
    """
    return TCP4ClientEndpoint(reactor, "127.0.0.1", closedPort())


class ReversedInt32Echo(Int32StringReceiver):
    """
    Twisted's own length-prefixed strings (C{length:4}), answered reversed.
    """

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string[::-1])


class LineClientServerTests(TestCase):
    """
    L{LineClient} against a tcpcomm server over real sockets.
    """

    async def test_thousandPipelinedRequests(self) -> None:
        """
        1,000 requests in flight at once each get their own reply, in order.
        """
        server = startServer(self, LineFactory(lambda line: b"re " + line))
        client = await connectProtocol(server.endpoint(), LineClient())
        requests = [client.request(b"%d" % i) for i in range(1000)]
        self.assertEqual(client.pending, 1000)
        replies = [await request for request in requests]
        self.assertEqual(replies, [b"re %d" % i for i in range(1000)])
        await client.finish()

    async def test_finishAfterOutstandingRequests(self) -> None:
        """
        C{finish} right after slow requests fires only once every reply has
        arrived and the server has closed.
        """

        def slow(line: bytes) -> Deferred[bytes]:
            return deferLater(reactor, 0.05, lambda: line[::-1])

        server = startServer(self, LineFactory(slow))
        client = await connectProtocol(server.endpoint(), LineClient())
        requests = [client.request(b"abc"), client.request(b"xyz")]
        await client.finish()
        self.assertEqual([r.result for r in requests], [b"cba", b"zyx"])
        await waitUntil(lambda: server.openConnections == 0)

    async def test_framedAgainstInt32StringReceiver(self) -> None:
        """
        With C{framing="length:4"}, 200 pipelined requests, any bytes in
        them, each get their own reply from Twisted's C{Int32StringReceiver};
        C{finish} then fires.
        """
        server = startServer(self, Factory.forProtocol(ReversedInt32Echo))
        client = await connectProtocol(
            server.endpoint(), LineClient(framing="length:4")
        )
        payloads = [b"%d\n\x00\r" % i * (i % 7) for i in range(200)]
        replies = await gatherResults([client.request(p) for p in payloads])
        self.assertEqual(replies, [p[::-1] for p in payloads])
        await client.finish()

    async def test_framedAgainstLineFactory(self) -> None:
        """
        Framed clients against tcpcomm's own framed server: C{length:2}
        payloads, and MODBUS ADUs answered by a handler of whole frames.
        """

        def readRegisters(adu: bytes) -> bytes:
            return adu[:4] + b"\x00\x05" + adu[6:8] + b"\x02\x00\x2a"

        for framing, handler, payloads, expected in (
            ("length:2", lambda p: p.upper(), [b"a\nb", b""], [b"A\nB", b""]),
            (
                "modbus",
                readRegisters,
                [b"\x00\x07\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01"],
                [b"\x00\x07\x00\x00\x00\x05\x01\x03\x02\x00\x2a"],
            ),
        ):
            server = startServer(self, LineFactory(handler, framing=framing))
            client = await connectProtocol(
                server.endpoint(), LineClient(framing=framing)
            )
            replies = await gatherResults([client.request(p) for p in payloads])
            self.assertEqual(replies, expected, framing)
            await client.finish()

    async def test_droppedConnectionFailsPending(self) -> None:
        """
        Requests waiting when the server drops the connection fail with
        L{ConnectionFailed}, not a hang.
        """
        server = startServer(self, LineFactory(lambda line: Deferred()))
        client = await connectProtocol(server.endpoint(), LineClient())
        request = client.request(b"never answered")
        await waitUntil(lambda: server.openConnections == 1)
        await server.stop()
        with self.assertRaises(ConnectionFailed) as caught:
            await request
        self.assertIn(f"127.0.0.1:{server.port}", str(caught.exception))


class ReconnectingLineClientTests(TestCase):
    """
    L{ReconnectingLineClient} keeps a connection up across server restarts.
    """

    def client(self, port: int, **kwargs: object) -> ReconnectingLineClient:
        """
        A started client for 127.0.0.1:C{port} that retries every 50 ms,
        stopped at clean-up.
        """
        service = ReconnectingLineClient(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            retryPolicy=lambda attempt: 0.05,
            **kwargs,  # type: ignore[arg-type]
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    async def test_reconnectAfterServerRestart(self) -> None:
        """
        A request in flight when the server goes away fails cleanly; after
        the server comes back on the same port, requests work again.
        """

        def first(line: bytes) -> bytes | Deferred[bytes]:
            return Deferred() if line == b"hang" else b"one " + line

        server = startServer(self, LineFactory(first))
        client = self.client(server.port)
        self.assertEqual(await client.request(b"a"), b"one a")
        inFlight = client.request(b"hang")
        await server.stop()
        with self.assertRaises(ConnectionFailed):
            await inFlight
        again = startServer(
            self, LineFactory(lambda line: b"two " + line), port=server.port
        )
        self.assertEqual(await client.request(b"b"), b"two b")
        self.assertEqual(again.port, server.port)

    async def test_unaskedLinesAcrossConnections(self) -> None:
        """
        C{onLine} gets unasked lines on whichever connection is up.
        """
        seen: list[bytes] = []

        def greet(line: bytes) -> bytes:
            return b"reply"

        server = startServer(self, LineFactory(greet))
        client = self.client(server.port, onLine=seen.append)
        protocol = await client.whenConnected()
        assert isinstance(protocol, LineClient)
        protocol.sendLine(b"no request")
        await waitUntil(lambda: seen == [b"reply"])

    async def test_framingPassedOn(self) -> None:
        """
        Every connection of a framed L{ReconnectingLineClient} speaks its
        framing.
        """
        server = startServer(self, Factory.forProtocol(ReversedInt32Echo))
        client = self.client(server.port, framing="length:4")
        self.assertEqual(await client.request(b"a\nb"), b"b\na")

    async def test_refusedAfterFailures(self) -> None:
        """
        With C{failAfterFailures}, a server that refuses makes the request
        fail with a message naming it.
        """
        port = closedPort()
        client = self.client(port)
        with self.assertRaises(ConnectionFailed) as caught:
            await client.request(b"x", failAfterFailures=1)
        self.assertEqual(
            str(caught.exception), f"connection refused by 127.0.0.1:{port}"
        )

    async def test_stoppedClientFailsRequests(self) -> None:
        """
        Requests waiting for a connection fail when the client is stopped.
        """
        client = self.client(closedPort())
        request = client.request(b"x")
        await client.stopService()
        with self.assertRaises(ConnectionFailed) as caught:
            await request
        self.assertIn("stopped", str(caught.exception))
