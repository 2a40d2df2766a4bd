"""
Tests for L{tcpcomm.lineclient}: the protocol's logic in memory, and
pipelining, finishing, dropped connections and reconnection over real
loopback sockets.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm.client import ConnectionFailed
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
        from twisted.internet.endpoints import TCP4ClientEndpoint

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
