"""
Load tests over real sockets on 127.0.0.1: a thousand clients at once, ten
thousand idle connections, and a client that pipelines without reading.

These pin behaviour under load: every byte comes back right, nothing is
logged as an error, memory stays bounded and other clients are still
served.  How fast, and how much memory an idle connection costs, are
measured by C{benchmarks/idle_memory.py}, never asserted here.
"""

from __future__ import annotations

import errno
import hashlib
import random
import resource
import selectors
import socket
import struct
import sys
import time
from typing import cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.task import deferLater
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tcpcomm.client import exchange
from tcpcomm.echo import EchoFactory
from tcpcomm.line import LineFactory, LineProtocol
from tcpcomm.lineclient import LineClient
from tcpcomm.testing import startServer
from tests.test_echo import StubbornClient, serverBuffered
from tests.test_line import LogCapture, waitUntil
from tests.test_plugin import SOURCE_ROOT, Child

KiB = 1024
MiB = 1024 * KiB

SEED = 20240611
"""
Seed of every random payload here, so that a failure reproduces.
"""

SIMULTANEOUS_CLIENTS = 1000
"""
How many clients connect in the same reactor turn.
"""

ECHO_MAX_SIZE = 256 * KiB
"""
The largest payload one echo client sends (sizes are uniform from 0).
"""

LINES_PER_CLIENT = 500
MAX_LINE = 200

EXCHANGE_TIMEOUT = 90.0
"""
Seconds one of the simultaneous exchanges may take: a bound against hangs,
far above what they need.
"""

IDLE_CONNECTIONS = 10_000
"""
How many idle connections the server in a subprocess must hold.
"""

IDLE_BACKLOG = 4096
CONNECT_BATCH = 1000
"""
Idle connections opened before waiting for them to be established: fewer
than the backlog, so that the server's accept queue never overflows (which
would make the kernel drop SYNs, and clients retry only after a second).
"""

CONNECT_TIMEOUT = 60.0
"""
Seconds all the idle connections may take to be established.
"""

REPLY_TIMEOUT = 10.0
"""
Seconds the new client may wait for its reply beside the idle connections.
"""

START_TIMEOUT = 20.0
"""
Seconds the server subprocess may take to say which port it listens on.
"""

DESCRIPTOR_MARGIN = 256
"""
File descriptors this process needs beyond the sockets a test opens.
"""

PIPELINED_LINES = 20_000
ROUND_TRIPS = 100

SERVER_SEND_BUFFER = 16 * KiB
"""
The socket send buffer the slow-reader test locks on the server's side.
Left to autotuning, loopback grows it to 4 MiB, which swallows every reply
to 20,000 64-byte lines without the server ever having to stop reading.
"""

IDLE_SERVER = """\
import resource, sys
from twisted.internet import reactor
from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner,
    textFileLogObserver,
)
from tcpcomm import LineFactory

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard == resource.RLIM_INFINITY:
    hard = max(soft, int(sys.argv[2]))
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
globalLogBeginner.beginLoggingTo(
    [FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(LogLevel.warn)],
    )],
    redirectStandardIO=False,
)

def handler(line):
    if line == b"count":
        return b"%d" % len(factory.connections)
    return line

factory = LineFactory(handler)
port = reactor.listenTCP(
    0, factory, backlog=int(sys.argv[1]), interface="127.0.0.1"
)
print(port.getHost().port, flush=True)
reactor.run()
"""
"""
The server for L{IdleConnectionsTests}: a L{LineFactory} echoing lines and
answering C{count} with how many connections it holds, logging warnings and
worse to standard error.  Arguments: the backlog, and the descriptors
wanted if the hard limit is infinite.
"""


def raiseFileLimit(testCase: SynchronousTestCase, needed: int) -> None:
    """
    Make sure this process may open C{needed} file descriptors: raise the
    soft C{RLIMIT_NOFILE} up to the hard limit if it is lower, and restore
    it at C{testCase}'s clean-up.

    @raise SkipTest: If the hard limit is below C{needed}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SkipTest(
            f"needs {needed} file descriptors; the hard RLIMIT_NOFILE is {hard}"
        )
    raised = hard if hard != resource.RLIM_INFINITY else needed
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    testCase.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))


def requireManyDescriptorReactor() -> None:
    """
    Skip unless the reactor can watch thousands of descriptors.

    @raise SkipTest: Under the C{select()} reactor, limited to
        C{FD_SETSIZE} (1024).
    """
    if isinstance(reactor, SelectReactor):
        raise SkipTest("the select() reactor cannot watch over 1024 sockets")


def assertNoErrorLogged(testCase: SynchronousTestCase, log: LogCapture) -> None:
    """
    Fail if any captured event carries a failure or is logged at level
    error or critical.
    """
    bad = [
        event
        for event in log.events
        if "log_failure" in event
        or event.get("log_level") in (LogLevel.error, LogLevel.critical)
    ]
    if bad:
        testCase.fail(f"{len(bad)} error events logged; the first: {bad[0]!r}")


def digest(data: bytes) -> bytes:
    """
    The SHA-256 digest of C{data}.
    """
    return hashlib.sha256(data).digest()


async def exchangeAll(
    testCase: TestCase, factory: EchoFactory | LineFactory, requests: list[bytes]
) -> list[bytes]:
    """
    Serve C{factory} with L{startServer}, start one L{exchange} per request
    in the same reactor turn (so every client connects at the same moment),
    and wait for all of them.

    @return: Each client's reply, in the order of C{requests}.
    """
    server = startServer(testCase, factory)
    endpoint = server.endpoint()
    failures: list[tuple[int, Failure]] = []

    def failed(failure: Failure, index: int) -> bytes:
        failures.append((index, failure))
        return b""

    exchanges = [
        exchange(reactor, endpoint, request, timeout=EXCHANGE_TIMEOUT).addErrback(
            failed, index
        )
        for index, request in enumerate(requests)
    ]
    replies = await gatherResults(exchanges)
    if failures:
        index, failure = failures[0]
        testCase.fail(
            f"{len(failures)} of {len(requests)} exchanges failed; client"
            f" {index}: {failure.getErrorMessage()}"
        )
    await waitUntil(lambda: not factory.connections)
    return replies


def assertRepliesMatch(
    testCase: SynchronousTestCase, replies: list[bytes], expected: list[bytes]
) -> None:
    """
    Assert that every client's reply has the expected SHA-256, naming the
    first few clients that differ.
    """
    wrong = [
        f"client {index}: {len(reply)} bytes, {len(want)} expected"
        for index, (reply, want) in enumerate(zip(replies, expected, strict=True))
        if digest(reply) != digest(want)
    ]
    testCase.assertEqual(wrong[:5], [], f"{len(wrong)} clients got a wrong reply")


PRINTABLE = bytes(0x20 + value % 95 for value in range(256))
"""
A C{bytes.translate} table mapping every byte to printable ASCII (space to
tilde): no CR, no LF.
"""


def randomLines(rng: random.Random, count: int) -> tuple[bytes, bytes]:
    """
    C{count} lines of random printable bytes, 0 to L{MAX_LINE} long, each
    ending in CRLF or LF at random.

    @return: The request, and the reply a server reversing each line and
        ending it in LF sends back.
    """
    lengths = rng.choices(range(MAX_LINE + 1), k=count)
    endings = rng.choices((b"\n", b"\r\n"), k=count)
    text = rng.randbytes(sum(lengths)).translate(PRINTABLE)
    request: list[bytes] = []
    reply: list[bytes] = []
    offset = 0
    for length, ending in zip(lengths, endings, strict=True):
        line = text[offset : offset + length]
        offset += length
        request += (line, ending)
        reply += (line[::-1], b"\n")
    return b"".join(request), b"".join(reply)


class ManyClientsTests(TestCase):
    """
    A thousand clients connecting in the same reactor turn to one server in
    this process, each sending, half-closing and reading to the end.
    """

    def setUp(self) -> None:
        requireManyDescriptorReactor()
        raiseFileLimit(self, 2 * SIMULTANEOUS_CLIENTS + DESCRIPTOR_MARGIN)

    async def test_thousandEchoClientsAtOnce(self) -> None:
        """
        1,000 clients connecting at once, each sending 0 to 256 KiB of
        random bytes and half-closing, each get exactly their bytes back,
        and the server logs no error.
        """
        log = LogCapture(self)
        rng = random.Random(SEED)
        payloads = [
            rng.randbytes(rng.randint(0, ECHO_MAX_SIZE))
            for _ in range(SIMULTANEOUS_CLIENTS)
        ]
        factory = EchoFactory()
        replies = await exchangeAll(self, factory, payloads)
        assertRepliesMatch(self, replies, payloads)
        total = sum(map(len, payloads))
        self.assertEqual(
            (factory.stats.connectionsTotal, factory.stats.bytesIn),
            (SIMULTANEOUS_CLIENTS, total),
        )
        self.assertEqual(factory.stats.bytesOut, total)
        assertNoErrorLogged(self, log)

    async def test_thousandLineClientsAtOnce(self) -> None:
        """
        1,000 clients connecting at once, each sending 500 random printable
        lines (0 to 200 bytes, ending in CRLF or LF at random) and
        half-closing, each get every line back reversed and ending in LF, in
        order, and the server logs no error.
        """
        log = LogCapture(self)
        rng = random.Random(SEED)
        requests, expected = zip(
            *(randomLines(rng, LINES_PER_CLIENT) for _ in range(SIMULTANEOUS_CLIENTS)),
            strict=True,
        )
        factory = LineFactory(lambda line: line[::-1])
        replies = await exchangeAll(self, factory, list(requests))
        assertRepliesMatch(self, replies, list(expected))
        self.assertEqual(
            factory.stats.linesHandled, SIMULTANEOUS_CLIENTS * LINES_PER_CLIENT
        )
        assertNoErrorLogged(self, log)


def openConnections(
    port: int, count: int, sockets: list[socket.socket], deadline: float
) -> None:
    """
    Open C{count} plain non-blocking sockets to 127.0.0.1:C{port}, appending
    each to C{sockets} (for the caller to close), in batches of
    L{CONNECT_BATCH}, waiting for each batch to be established.

    @raise AssertionError: If a connection fails, or time passes
        C{deadline} (on the C{time.monotonic} clock).
    """
    with selectors.DefaultSelector() as selector:
        for start in range(0, count, CONNECT_BATCH):
            size = min(CONNECT_BATCH, count - start)
            for _ in range(size):
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(client)
                client.setblocking(False)
                status = client.connect_ex(("127.0.0.1", port))
                if status not in (0, errno.EINPROGRESS):
                    raise AssertionError(
                        f"connection {len(sockets)}: {errno.errorcode[status]}"
                    )
                selector.register(client, selectors.EVENT_WRITE)
            waiting = size
            for _ in range(size):
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise AssertionError(
                        f"{waiting} of {len(sockets)} connections not established"
                        " in time"
                    )
                for key, _events in selector.select(timeout):
                    connected = key.fileobj
                    assert isinstance(connected, socket.socket)
                    selector.unregister(connected)
                    waiting -= 1
                    status = connected.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if status:
                        raise AssertionError(f"connecting: {errno.errorcode[status]}")
                if not waiting:
                    break


def abortAll(sockets: list[socket.socket]) -> None:
    """
    Close every socket in C{sockets} with a reset (C{SO_LINGER} zero), which
    leaves nothing in C{TIME_WAIT}.
    """
    linger = struct.pack("ii", 1, 0)
    for client in sockets:
        try:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        client.close()
    sockets.clear()


def readLine(client: socket.socket, limit: int = 64 * KiB) -> bytes:
    """
    Read from the blocking socket C{client} up to and including the first
    LF.

    @raise AssertionError: If the server closes first, or sends more than
        C{limit} bytes without an LF.
    """
    received = b""
    for _ in range(limit):
        chunk = client.recv(limit)
        if not chunk:
            raise AssertionError(f"the server closed after {received!r}")
        received += chunk
        if b"\n" in received or len(received) > limit:
            break
    line, newline, rest = received.partition(b"\n")
    if not newline or rest:
        raise AssertionError(f"expected one line, got {received[:200]!r}")
    return line + newline


def startIdleServer(testCase: SynchronousTestCase) -> tuple[Child, int]:
    """
    Start L{IDLE_SERVER} in a subprocess, killed and reaped by its PID at
    C{testCase}'s clean-up.

    @return: The process and the port it listens on.
    """
    child = Child(
        testCase,
        [
            sys.executable,
            "-c",
            IDLE_SERVER,
            str(IDLE_BACKLOG),
            str(IDLE_CONNECTIONS + DESCRIPTOR_MARGIN),
        ],
        SOURCE_ROOT,
    )
    deadline = time.monotonic() + START_TIMEOUT
    for _ in range(int(START_TIMEOUT * 100)):
        output = child.stdout()
        if output.endswith("\n"):
            return child, int(output)
        if child.process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    testCase.fail(f"the server did not start:\n{child.output()}")


class IdleConnectionsTests(SynchronousTestCase):
    """
    A line server in a subprocess holding ten thousand idle connections.
    """

    def test_tenThousandIdleConnections(self) -> None:
        """
        With 10,000 idle connections open to it, the server still answers a
        new client's line (within a 10 s bound), holds all 10,001
        connections, and logs no warning or error.
        """
        raiseFileLimit(self, IDLE_CONNECTIONS + DESCRIPTOR_MARGIN)
        idle: list[socket.socket] = []
        # Clean-ups run last first: kill the server, then reset the sockets.
        self.addCleanup(abortAll, idle)
        server, port = startIdleServer(self)

        openConnections(
            port, IDLE_CONNECTIONS, idle, time.monotonic() + CONNECT_TIMEOUT
        )
        self.assertEqual(len(idle), IDLE_CONNECTIONS)

        with socket.create_connection(
            ("127.0.0.1", port), timeout=REPLY_TIMEOUT
        ) as client:
            client.sendall(b"hello\r\n")
            self.assertEqual(readLine(client), b"hello\n")
            # Every idle connection was queued before the new client's, so
            # all are accepted by now, barring a retried handshake; allow
            # for one, within the same bound.
            deadline = time.monotonic() + REPLY_TIMEOUT
            held = b""
            for _ in range(int(REPLY_TIMEOUT * 10)):
                client.sendall(b"count\n")
                held = readLine(client)
                if held == b"%d\n" % (IDLE_CONNECTIONS + 1,):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            self.assertEqual(held, b"%d\n" % (IDLE_CONNECTIONS + 1,))

        self.assertIsNone(server.process.poll(), "the server died")
        self.assertEqual(server.stderr(), "")


class SmallSendBufferLineProtocol(LineProtocol):
    """
    A L{LineProtocol} whose socket send buffer is locked at
    L{SERVER_SEND_BUFFER}, as a slow link would keep it small.
    """

    def connectionMade(self) -> None:
        handle = cast(socket.socket, ISystemHandle(self.transport).getHandle())
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SERVER_SEND_BUFFER)
        super().connectionMade()


class SmallSendBufferLineFactory(LineFactory):
    """
    A L{LineFactory} building L{SmallSendBufferLineProtocol}s.
    """

    protocol = SmallSendBufferLineProtocol


def laterReversed(line: bytes) -> Deferred[bytes]:
    """
    A handler answering on a later reactor turn, so replies wait in the
    server's pending queue: the line reversed.
    """
    return deferLater(reactor, 0, lambda: line[::-1])


class SlowReaderTests(TestCase):
    """
    A client that pipelines requests and never reads its replies, beside a
    client that behaves.
    """

    async def test_pipeliningNonReaderBoundedAndOthersServed(self) -> None:
        """
        A client pipelining 20,000 64-byte lines without reading (to a server
        whose socket send buffer is locked small) makes the server stop
        reading from it with under 1 MiB buffered and fewer than
        C{maxPending} replies pending, while another client completes 100
        round trips; once the first reads, it gets all 20,000 replies, in
        order.
        """
        factory = SmallSendBufferLineFactory(laterReversed)
        server = startServer(self, factory)
        lines = [b"%063d" % index for index in range(PIPELINED_LINES)]
        request = b"".join(line + b"\n" for line in lines)
        expected = b"".join(line[::-1] + b"\n" for line in lines)
        slow = StubbornClient(request)
        await connectProtocol(server.endpoint(), slow)
        await waitUntil(lambda: len(factory.connections) == 1)
        [protocol] = factory.connections
        assert isinstance(protocol, LineProtocol)

        def assertBounded() -> None:
            self.assertTrue(protocol.readingPaused)
            self.assertLess(protocol.bytesIn, len(request))
            self.assertLess(serverBuffered(protocol), 1 * MiB)
            # Sampled once reading has stopped: LineProtocol has no public
            # count of its pending replies, and none to sample between reads.
            self.assertLess(protocol.pendingReplies, factory.maxPending)

        # Wait until the server stops reading: bytesIn steady for 0.3 s.
        last = -1
        for _ in range(100):
            await waitUntil(lambda: protocol.readingPaused)
            if protocol.bytesIn == last:
                break
            last = protocol.bytesIn
            await deferLater(reactor, 0.3)
        assertBounded()
        stalled = protocol.bytesIn

        other = LineClient()
        await connectProtocol(server.endpoint(), other)
        for index in range(ROUND_TRIPS):
            line = b"request %d" % index
            self.assertEqual(await other.request(line), line[::-1])
        await other.finish()
        assertBounded()
        self.assertEqual(protocol.bytesIn, stalled)

        slow.startReading()
        reply = await slow.done
        self.assertEqual(reply.count(b"\n"), PIPELINED_LINES)
        self.assertTrue(reply == expected, "the replies differ from those expected")
