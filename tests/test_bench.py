"""
Tests for C{tcpcomm bench} (L{tcpcomm.bench}), the load generator.

The pure parts (the pattern, the latency histogram, endpoints, how results
add up) are tested on their own.  The generator runs for real over loopback:
in this process against L{ThreadedEchoServer}, a plain-socket server in a
thread whose faults the tests choose; and as C{python -m tcpcomm bench} in a
subprocess (L{runCli}) against tcpcomm's own servers in the test's reactor.
Runs last a fraction of a second; every thread and process is bounded and
stopped at the test's clean-up.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IAddress, IProtocolFactory, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver, NetstringReceiver
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tcpcomm import bench
from tcpcomm.bench import (
    HISTOGRAM_BUCKETS,
    MIN_PATTERN_BYTES,
    BenchConfig,
    BenchError,
    BenchResult,
    Progress,
    Target,
    WorkerResult,
    bucketMidpoint,
    combineResults,
    defaultPipeline,
    defaultSize,
    firstDifference,
    frameBytes,
    framedPattern,
    latencyBucket,
    makePattern,
    modbusRequest,
    parseEndpoint,
    patternLines,
    percentile,
    runBench,
    runCommand,
    splitConnections,
    startOffset,
)
from tcpcomm.echo import EchoFactory
from tcpcomm.framers import Framer, FramingError, parseFraming
from tcpcomm.line import LineFactory
from tcpcomm.testing import startServer
from tests.test_cli import (
    CliResult,
    address,
    assertOneError,
    assertUsageError,
    runCli,
    runCliBlocking,
    unusedPort,
)

JSON_KEYS = {
    "mode",
    "endpoint",
    "connections",
    "framing",
    "size",
    "frame_bytes",
    "pipeline",
    "in_flight_bytes",
    "write_bytes",
    "metric",
    "duration",
    "processes",
    "messages",
    "messages_per_s",
    "bytes_per_s",
    "latency_us",
    "cpu_percent",
    "errors",
    "verified",
}

SHORT = ["--warmup", "0.05", "--duration", "0.2"]
"""
Command-line options for a short run.
"""

JSON = ["--json", *SHORT]
"""
Command-line options for a short run reported as JSON.
"""

TOO_MANY_PROCESSES = ["--connections", "2", "--processes", "3"]

IO_TIMEOUT = 10.0
"""
Seconds the threaded server may go on after its test ends.
"""

CORRUPT_AT = 100
"""
The offset the corrupting servers change: not a line's LF.
"""


def lines(block: bytes, size: int) -> list[bytes]:
    """
    C{block} cut into lines of C{size} bytes.
    """
    return [block[i : i + size] for i in range(0, len(block), size)]


# A server in a thread, with faults.


@dataclass
class ServedConnection:
    """
    What L{ThreadedEchoServer} saw of one connection.

    @ivar pid: The client's process ID (UNIX sockets on Linux), or C{None}.
    @ivar received: Bytes received.
    @ivar echoed: Bytes sent back.
    @ivar mostWaiting: The most bytes received and not yet echoed at once.
    """

    sock: socket.socket
    pid: int | None = None
    received: int = 0
    echoed: int = 0
    mostWaiting: int = 0
    waiting: bytearray = field(default_factory=bytearray)


class ThreadedEchoServer:
    """
    A non-blocking echo server on plain sockets, in a thread, for one test.

    @param corruptAt: Change the byte at this offset of the first
        connection's echo.
    @param closeAfter: Once a connection has echoed this many bytes, echo
        no more and half-close it (its FIN goes out; it goes on reading).
    @param resetAfter: Once a connection has echoed this many bytes, reset
        it.
    @param silent: Read, but never echo.
    @param holdUntil: Echo only once this many bytes wait, all at once.
    @param unixPath: Listen on this UNIX socket instead of 127.0.0.1.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        *,
        corruptAt: int | None = None,
        closeAfter: int | None = None,
        resetAfter: int | None = None,
        silent: bool = False,
        holdUntil: int = 1,
        unixPath: str | None = None,
    ) -> None:
        self.corruptAt = corruptAt
        self.limit = closeAfter if resetAfter is None else resetAfter
        self.reset = resetAfter is not None
        self.silent = silent
        self.holdUntil = holdUntil
        self.connections: list[ServedConnection] = []
        if unixPath is None:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
            self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        else:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(unixPath)
            self.endpoint = f"unix:{unixPath}"
        self.listener.listen(128)
        self.listener.setblocking(False)
        self._stopping = threading.Event()
        self._problems: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        testCase.addCleanup(self.stop)

    def stop(self) -> None:
        """
        Stop the thread (bounded), close every socket, and re-raise what
        went wrong in the thread.
        """
        self._stopping.set()
        self._thread.join(IO_TIMEOUT)
        self.listener.close()
        for connection in self.connections:
            connection.sock.close()
        if self._thread.is_alive():
            raise AssertionError("the threaded echo server did not stop")
        if self._problems:
            raise self._problems[0]

    def _run(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.listener, selectors.EVENT_READ, None)
                while not self._stopping.is_set():
                    for key, events in selector.select(0.02):
                        if key.data is None:
                            self._accept(selector)
                        else:
                            self._serve(selector, key.data, events)
        except BaseException as e:
            self._problems.append(e)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        connection = ServedConnection(sock)
        if sock.family == socket.AF_UNIX and hasattr(socket, "SO_PEERCRED"):
            credentials = sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
            )
            connection.pid = struct.unpack("3i", credentials)[0]
        self.connections.append(connection)
        selector.register(sock, selectors.EVENT_READ, connection)

    def _serve(
        self,
        selector: selectors.BaseSelector,
        connection: ServedConnection,
        events: int,
    ) -> None:
        sock = connection.sock
        if events & selectors.EVENT_READ:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ConnectionError):
                data = b""
            if not data:
                selector.unregister(sock)
                return
            start = connection.received
            connection.received += len(data)
            if self.silent or connection.echoed == self.limit:
                return
            first = connection is self.connections[0]
            at = self.corruptAt
            if first and at is not None and start <= at < connection.received:
                changed = bytearray(data)
                changed[at - start] ^= 0x01
                data = bytes(changed)
            connection.waiting += data
            connection.mostWaiting = max(
                connection.mostWaiting, len(connection.waiting)
            )
        if len(connection.waiting) >= self.holdUntil:
            waiting = connection.waiting
            if self.limit is not None:
                del waiting[self.limit - connection.echoed :]
            try:
                sent = sock.send(waiting)
            except BlockingIOError:
                sent = 0
            del waiting[:sent]
            connection.echoed += sent
            if connection.echoed == self.limit:
                waiting.clear()
                if self.reset:
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    selector.unregister(sock)
                    sock.close()
                else:
                    sock.shutdown(socket.SHUT_WR)
                    selector.modify(sock, selectors.EVENT_READ, connection)
                return
        wanted = selectors.EVENT_READ
        if len(connection.waiting) >= self.holdUntil and connection.waiting:
            wanted |= selectors.EVENT_WRITE
        selector.modify(sock, wanted, connection)


# Servers in the reactor, for the command.


class Corrupter(Protocol):
    """
    Echo every byte, but change the one at offset L{CORRUPT_AT}.
    """

    transport: ITCPTransport
    offset = 0

    def dataReceived(self, data: bytes) -> None:
        start = self.offset
        self.offset += len(data)
        if start <= CORRUPT_AT < self.offset:
            changed = bytearray(data)
            changed[CORRUPT_AT - start] ^= 0x01
            data = bytes(changed)
        self.transport.write(data)


class Int32Echo(Int32StringReceiver):
    """
    Twisted's own length-prefixed strings (C{length:4}), echoed.
    """

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class NetstringEcho(NetstringReceiver):
    """
    Twisted's own netstrings, echoed.
    """

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class FramedEcho(Protocol):
    """
    Echo each frame's payload in a frame of the same framing, cut and made
    by tcpcomm's pure framers; close at a bad frame.

    @ivar reply: What to send for each payload: by default the framer's
        C{encode}.
    """

    transport: ITCPTransport

    def __init__(
        self, framing: str, reply: Callable[[Framer, bytes], bytes] | None = None
    ) -> None:
        self.framer = parseFraming(framing)()
        self.reply = reply or (lambda framer, payload: framer.encode(payload))

    def dataReceived(self, data: bytes) -> None:
        try:
            payloads = self.framer.feed(data)
        except FramingError:
            self.transport.loseConnection()
            return
        self.transport.write(b"".join(self.reply(self.framer, p) for p in payloads))


class FramedEchoFactory(Factory):
    """
    A factory of L{FramedEcho} for C{framing}.
    """

    def __init__(
        self, framing: str, reply: Callable[[Framer, bytes], bytes] | None = None
    ) -> None:
        self.framing = framing
        self.reply = reply

    def buildProtocol(self, addr: IAddress | None) -> FramedEcho:
        protocol = FramedEcho(self.framing, self.reply)
        protocol.factory = self
        return protocol


FRAMINGS = [
    "length:4",
    "length:2:order=little",
    "length:2:offset=1:adjust=-1:strip=1",
    "length:2:strip=0",
    "netstring",
    "stx-etx",
    "delimiter:0d0a",
    "delimiter:41",
    "fixed:16",
    "modbus",
]
"""
Specifications of every framing, several ways for C{length}.
"""


def quick(endpoint: str, mode: str, **options: int | float | str) -> BenchConfig:
    """
    A short run's configuration: 2 connections, 50 ms of warm-up, 200 ms
    measured, unless C{options} say otherwise.
    """
    settings: dict[str, int | float | str] = {
        "connections": 2,
        "warmup": 0.05,
        "duration": 0.2,
    }
    settings.update(options)
    return BenchConfig(endpoint=endpoint, mode=mode, **settings)  # type: ignore[arg-type]


# The tests.


class PatternTests(SynchronousTestCase):
    """
    What connections send: L{makePattern}, L{patternLines}, L{startOffset}.
    """

    def test_linesOfExactSize(self) -> None:
        """
        The block is C{lines} lines of exactly C{size} bytes, each ending in
        LF, with no other LF and no CR.
        """
        for size in (2, 3, 64, 1000):
            block = makePattern(size, 300)
            self.assertEqual(len(block), size * 300)
            for line in lines(block, size):
                self.assertEqual(line[-1:], b"\n", size)
                self.assertNotIn(b"\n", line[:-1])
                self.assertNotIn(b"\r", line)

    def test_nextLinesDiffer(self) -> None:
        """
        Each line differs from the next, around the cycle too, even when a
        line has a single byte before its LF.
        """
        for size in (2, 3, 64):
            cycle = lines(makePattern(size, 5000), size)
            for index, line in enumerate(cycle):
                self.assertNotEqual(line, cycle[(index + 1) % len(cycle)], size)

    def test_linesDistinct(self) -> None:
        """
        With room for their numbers, all lines of the block differ.
        """
        for size, count in ((4, 4096), (64, 10000)):
            self.assertEqual(len(set(lines(makePattern(size, count), size))), count)

    def test_deterministic(self) -> None:
        """
        The same size and count give the same block; another size gives
        other lines.
        """
        self.assertEqual(makePattern(64, 100), makePattern(64, 100))
        self.assertNotEqual(makePattern(64, 100)[:63], makePattern(65, 100)[:63])

    def test_tooSmall(self) -> None:
        """
        There is no line shorter than 2 bytes (one byte and the LF).
        """
        self.assertRaises(ValueError, makePattern, 1, 10)

    def test_patternHoldsAWindow(self) -> None:
        """
        The block has at least a window of lines and at least
        L{MIN_PATTERN_BYTES}.
        """
        self.assertEqual(patternLines(64, 16), MIN_PATTERN_BYTES // 64)
        self.assertEqual(patternLines(64, 100000), 100000)
        self.assertEqual(patternLines(MIN_PATTERN_BYTES, 1), 4)

    def test_connectionsStartApart(self) -> None:
        """
        Connections start at distinct lines of the block while there are
        enough lines.
        """
        offsets = [startOffset(i, 100, 4096, 64) for i in range(100)]
        self.assertEqual(len(set(offsets)), 100)
        for offset in offsets:
            self.assertEqual(offset % 64, 0)
            self.assertTrue(0 <= offset < 4096 * 64)
        self.assertEqual(startOffset(0, 1, 4096, 64), 0)

    def test_defaultPipeline(self) -> None:
        """
        Lines in flight by default: 1 for pingpong, 16 for lines, 256 KiB
        worth (at least 4) for stream.
        """
        self.assertEqual(defaultPipeline("pingpong", 64), 1)
        self.assertEqual(defaultPipeline("lines", 64), 16)
        self.assertEqual(defaultPipeline("stream", 64), 4096)
        self.assertEqual(defaultPipeline("stream", 1024 * 1024), 4)

    def test_firstDifference(self) -> None:
        """
        L{firstDifference} finds the first differing byte, or the shorter
        length.
        """
        self.assertEqual(firstDifference(b"abcdef", b"abXdeY"), 2)
        self.assertEqual(firstDifference(b"abc", b"abc"), 3)
        self.assertEqual(firstDifference(b"abc", memoryview(b"ab")), 2)

    def test_splitConnections(self) -> None:
        """
        Connections are split into contiguous shares differing by at most
        one.
        """
        self.assertEqual(splitConnections(10, 3), [(0, 4), (4, 3), (7, 3)])
        self.assertEqual(splitConnections(2, 2), [(0, 1), (1, 1)])


class FramedPatternTests(SynchronousTestCase):
    """
    What connections send with C{--framing}: L{framedPattern},
    L{frameBytes}, L{modbusRequest}, L{defaultSize}.
    """

    def test_framesCutBackIntoPayloads(self) -> None:
        """
        For every framing, a new framer cuts the block into as many distinct
        payloads of C{size} bytes as frames were asked for, every frame
        L{frameBytes} long.
        """
        for framing in FRAMINGS:
            size = defaultSize(framing)
            block = framedPattern(framing, size, 500)
            payloads = parseFraming(framing)().feed(block)
            self.assertEqual(len(payloads), 500, framing)
            self.assertEqual(len(set(payloads)), 500, framing)
            self.assertEqual({len(p) for p in payloads}, {size}, framing)
            self.assertEqual(len(block), 500 * frameBytes(framing, size), framing)

    def test_frameLengths(self) -> None:
        """
        A frame is its payload and its framing's overhead; C{line} keeps its
        LF-included size.
        """
        self.assertEqual(frameBytes("line", 64), 64)
        self.assertEqual(frameBytes("length:4", 64), 68)
        self.assertEqual(frameBytes("netstring", 64), 68)
        self.assertEqual(frameBytes("stx-etx", 64), 66)
        self.assertEqual(frameBytes("length:2:strip=0", 64), 64)
        self.assertEqual(frameBytes("modbus", 12), 12)

    def test_twistedReceiversAgree(self) -> None:
        """
        Twisted's own C{Int32StringReceiver} and C{NetstringReceiver} cut
        C{length:4} and C{netstring} blocks into the payloads sent.
        """
        for framing, receiver in (
            ("length:4", Int32StringReceiver()),
            ("netstring", NetstringReceiver()),
        ):
            received: list[bytes] = []
            receiver.stringReceived = received.append  # type: ignore[method-assign]
            receiver.makeConnection(StringTransport())
            block = framedPattern(framing, 10, 30)
            receiver.dataReceived(block)
            self.assertEqual(received, parseFraming(framing)().feed(block), framing)
            self.assertEqual(len(received), 30, framing)

    def test_modbusRequests(self) -> None:
        """
        C{modbus} sends well-formed requests with distinct transaction ids:
        read holding registers (12 bytes), or write multiple registers with
        a matching register count, byte count and length field.
        """
        block = framedPattern("modbus", 12, 300)
        adus = [block[i : i + 12] for i in range(0, len(block), 12)]
        self.assertEqual(
            [a[:2] for a in adus], [i.to_bytes(2, "big") for i in range(300)]
        )
        for adu in adus:
            self.assertEqual(adu[2:8], b"\x00\x00\x00\x06\x01\x03")
            self.assertTrue(1 <= int.from_bytes(adu[10:12], "big") <= 125)
        write = modbusRequest(7, 17, bytes(range(17)))
        self.assertEqual(
            write,
            b"\x00\x07\x00\x00\x00\x0b\x01\x10\x00\x01\x00\x02\x04"
            + bytes(range(2, 6)),
        )
        self.assertEqual(parseFraming("modbus")().feed(write), [write])

    def test_delimiterBytesAvoided(self) -> None:
        """
        Payloads hold no byte of the delimiter, even one of the pattern's
        own letters.
        """
        for delimiter in (b"A", b"0Z", b"\r\n"):
            framing = f"delimiter:{delimiter.hex()}"
            for payload in parseFraming(framing)().feed(
                framedPattern(framing, 64, 200)
            ):
                for byte in delimiter:
                    self.assertNotIn(byte, payload, framing)

    def test_defaultSize(self) -> None:
        """
        Without C{--size}: 64 bytes, a read-holding-registers request for
        C{modbus}, N bytes for C{fixed:N}.
        """
        self.assertEqual(defaultSize("line"), 64)
        self.assertEqual(defaultSize("length:2"), 64)
        self.assertEqual(defaultSize("modbus"), 12)
        self.assertEqual(defaultSize("fixed:5"), 5)

    def test_unframablePayloadsRefused(self) -> None:
        """
        A specification or a size the framing cannot carry is a
        L{BenchError} of one line that says what is wrong.
        """
        cases = [
            ("nonsense", 64, "unknown framing 'nonsense'"),
            ("fixed:8", 64, "not one 'fixed:8' frame"),
            ("modbus", 64, "MODBUS requests are 12"),
            ("modbus", 14, "not 14"),
            ("netstring:max=10", 64, "longer than max 10"),
            ("length:1", 300, "1-byte length field"),
            ("length:4:strip=0", 3, "at least 4 bytes"),
            ("line:max=10", 20, "longer than max 10"),
            ("line", 1, "at least 2 bytes"),
        ]
        for framing, size, fragment in cases:
            error = self.assertRaises(BenchError, frameBytes, framing, size)
            self.assertIn(fragment, str(error), framing)
            self.assertNotIn("\n", str(error))


class HistogramTests(SynchronousTestCase):
    """
    The latency histogram and how results add up.
    """

    def test_bucketPrecision(self) -> None:
        """
        A bucket's midpoint is within 1.6 % of every value in it; buckets
        grow with the value and every 63-bit value has one.
        """
        previous = 0
        for value in [*range(200), *(int(1.07**k) for k in range(200, 640))]:
            bucket = latencyBucket(value)
            self.assertGreaterEqual(bucket, previous)
            previous = bucket
            self.assertLessEqual(abs(bucketMidpoint(bucket) - value), value * 0.016)
        self.assertLess(latencyBucket(2**63 - 1), HISTOGRAM_BUCKETS)

    def test_percentile(self) -> None:
        """
        Percentiles are nearest-rank over the counts.
        """
        histogram = [0] * HISTOGRAM_BUCKETS
        histogram[latencyBucket(1000)] = 90
        histogram[latencyBucket(100_000)] = 10
        self.assertEqual(
            percentile(histogram, 0.5), bucketMidpoint(latencyBucket(1000))
        )
        self.assertEqual(
            percentile(histogram, 0.9), bucketMidpoint(latencyBucket(1000))
        )
        self.assertEqual(
            percentile(histogram, 0.91), bucketMidpoint(latencyBucket(100_000))
        )
        self.assertLessEqual(abs(percentile(histogram, 0.99) - 100_000), 1600)
        self.assertEqual(percentile([0] * 10, 0.5), 0.0)

    def test_combineResults(self) -> None:
        """
        Processes' rates and CPU use are summed, and latency percentiles come
        from their merged histograms.
        """
        fast = [0] * HISTOGRAM_BUCKETS
        fast[latencyBucket(10_000)] = 300
        slow = [0] * HISTOGRAM_BUCKETS
        slow[latencyBucket(1_000_000)] = 100
        result = combineResults(
            [
                WorkerResult(3000, 192_000, 2.0, 1.0, tuple(fast)),
                WorkerResult(1000, 64_000, 1.0, 0.25, tuple(slow)),
            ]
        )
        self.assertEqual(result.messages, 4000)
        self.assertEqual(result.messagesPerSecond, 1500 + 1000)
        self.assertEqual(result.bytesPerSecond, 96_000 + 64_000)
        self.assertEqual(result.cpuPercent, 75.0)
        self.assertEqual(result.seconds, 2.0)
        p50, p90, p99 = result.latency
        self.assertEqual(p50, bucketMidpoint(latencyBucket(10_000)) / 1000)
        self.assertEqual(p90, bucketMidpoint(latencyBucket(1_000_000)) / 1000)
        self.assertEqual(p99, p90)

    def test_resultRoundTrip(self) -> None:
        """
        A worker's result survives its trip through JSON.
        """
        histogram = [0] * HISTOGRAM_BUCKETS
        histogram[7], histogram[900] = 3, 5
        result = WorkerResult(8, 512, 1.5, 0.5, tuple(histogram))
        text = json.dumps(result.toJSON())
        self.assertEqual(WorkerResult.fromJSON(json.loads(text)), result)


class EndpointTests(SynchronousTestCase):
    """
    ENDPOINT, read as the other commands read it.
    """

    def test_shorthand(self) -> None:
        """
        C{HOST:PORT} and C{[IPV6]:PORT}.
        """
        self.assertEqual(
            parseEndpoint("localhost:8000"),
            Target("localhost:8000", host="localhost", port=8000),
        )
        self.assertEqual(parseEndpoint("[::1]:8000"), Target("[::1]:8000", "::1", 8000))

    def test_descriptions(self) -> None:
        """
        Twisted's C{tcp:} and C{unix:} client descriptions, positional or
        named, with escaped colons and a C{timeout}.
        """
        self.assertEqual(
            parseEndpoint(r"tcp:host=\:\:1:port=80:timeout=3"),
            Target(r"tcp:host=\:\:1:port=80:timeout=3", "::1", 80, timeout=3.0),
        )
        self.assertEqual(parseEndpoint("tcp:example.com:80").host, "example.com")
        self.assertEqual(parseEndpoint("unix:/run/x.sock").path, "/run/x.sock")
        self.assertEqual(parseEndpoint("unix:path=/run/y.sock").path, "/run/y.sock")

    def test_tlsRefused(self) -> None:
        """
        TLS endpoints are refused, saying so.
        """
        for text in ("tls:example.com:443", "ssl:host=example.com:port=443"):
            error = self.assertRaises(BenchError, parseEndpoint, text)
            self.assertIn("TLS", str(error))

    def test_malformed(self) -> None:
        """
        Other kinds, bad ports, missing or unknown arguments: a message
        naming the endpoint.
        """
        for text in (
            "bogus:thing",
            "localhost",
            "localhost:0",
            "localhost:99999",
            "tcp:host=x",
            "tcp:x:1:2",
            "tcp:host=x:port=1:bindAddress=y",
        ):
            error = self.assertRaises(BenchError, parseEndpoint, text)
            self.assertIn(repr(text), str(error))


class GeneratorTests(SynchronousTestCase):
    """
    L{runBench} in this process against L{ThreadedEchoServer}.
    """

    def assertApproximately(self, value: float, expected: float, error: float) -> None:
        """
        Assert that C{value} is within C{error} (a fraction) of C{expected}.
        """
        self.assertLessEqual(abs(value - expected), abs(expected) * error, value)

    def assertEveryByteEchoed(self, server: ThreadedEchoServer, count: int) -> None:
        """
        Assert that C{server} served C{count} connections and echoed every
        byte each sent.
        """
        self.assertEqual(len(server.connections), count)
        for connection in server.connections:
            self.assertGreater(connection.received, 0)
            self.assertEqual(connection.echoed, connection.received)

    def test_modesVerify(self) -> None:
        """
        Each mode measures lines and bytes, and ends only once every byte
        sent came back.
        """
        for mode in ("pingpong", "lines", "stream"):
            server = ThreadedEchoServer(self)
            result = runBench(quick(server.endpoint, mode, size=100))
            self.assertGreater(result.messages, 0, mode)
            # Bytes count the lines partly echoed when measuring began and
            # ended too.
            self.assertApproximately(
                result.bytesPerSecond, result.messagesPerSecond * 100, 0.01
            )
            self.assertGreater(result.cpuPercent, 0)
            self.assertGreater(result.latency[0], 0)
            self.assertLessEqual(result.latency[0], result.latency[2])
            server.stop()
            self.assertEveryByteEchoed(server, 2)
            self.assertLessEqual(
                result.messages * 100, sum(c.received for c in server.connections)
            )

    def test_selectorFallback(self) -> None:
        """
        Where there is no epoll, a L{selectors} selector does the same job.
        """
        self.patch(bench, "_makePoller", bench._SelectorPoller)
        server = ThreadedEchoServer(self)
        result = runBench(quick(server.endpoint, "stream", pipeline=65536))
        self.assertGreater(result.messages, 0)
        server.stop()
        self.assertEveryByteEchoed(server, 2)

    def test_slidingWindow(self) -> None:
        """
        C{lines}: each connection keeps exactly 16 lines in flight: a server
        that echoes only once 16 lines wait is answered, and never gets more
        than 16 ahead.
        """
        server = ThreadedEchoServer(self, holdUntil=16 * 64)
        result = runBench(quick(server.endpoint, "lines"))
        self.assertGreater(result.messages, 0)
        server.stop()
        self.assertEveryByteEchoed(server, 2)
        for connection in server.connections:
            self.assertEqual(connection.mostWaiting, 16 * 64)

    def test_pipeline(self) -> None:
        """
        C{pingpong} with C{pipeline} 3 keeps 3 lines in flight.
        """
        server = ThreadedEchoServer(self, holdUntil=3 * 64)
        runBench(quick(server.endpoint, "pingpong", pipeline=3))
        server.stop()
        for connection in server.connections:
            self.assertEqual(connection.mostWaiting, 3 * 64)

    def test_windowLargerThanSocketBuffers(self) -> None:
        """
        C{stream} with 16 MiB in flight per connection, more than a socket
        takes at once: the rest goes out as the socket drains, and every
        byte comes back.
        """
        server = ThreadedEchoServer(self)
        window = 16 * 1024 * 1024
        result = runBench(quick(server.endpoint, "stream", pipeline=window // 64))
        self.assertGreater(result.messages, 0)
        server.stop()
        self.assertEveryByteEchoed(server, 2)
        for connection in server.connections:
            self.assertGreaterEqual(connection.received, window)

    def test_corruptionNamesConnectionAndOffset(self) -> None:
        """
        One changed byte fails the run, naming the connection, the offset
        and the bytes.
        """
        server = ThreadedEchoServer(self, corruptAt=CORRUPT_AT)
        error = self.assertRaises(
            BenchError, runBench, quick(server.endpoint, "lines", connections=1)
        )
        message = str(error)
        self.assertIn("connection #1:", message)
        self.assertIn(f"offset {CORRUPT_AT} (line 2, byte 37 of 64)", message)
        self.assertIn("expected b'", message)

    def test_serverClosesEarly(self) -> None:
        """
        A server that closes while lines are in flight fails the run, saying
        where.
        """
        server = ThreadedEchoServer(self, closeAfter=640)
        error = self.assertRaises(
            BenchError, runBench, quick(server.endpoint, "pingpong", connections=1)
        )
        self.assertIn("connection #1: the server closed", str(error))
        self.assertIn("offset 640", str(error))

    def test_serverResets(self) -> None:
        """
        A server that resets a connection fails the run, saying so and
        naming the connection and endpoint.
        """
        server = ThreadedEchoServer(self, resetAfter=640)
        error = self.assertRaises(
            BenchError, runBench, quick(server.endpoint, "pingpong", connections=1)
        )
        self.assertIn(
            f"connection #1: connection reset by {server.endpoint}", str(error)
        )

    def test_serverStopsAnswering(self) -> None:
        """
        A server that stops echoing fails the run soon after the stall
        time, not never.
        """
        server = ThreadedEchoServer(self, silent=True)
        started = time.monotonic()
        error = self.assertRaises(
            BenchError,
            runBench,
            quick(server.endpoint, "pingpong", connections=1, warmup=0),
            stall=0.3,
        )
        self.assertLess(time.monotonic() - started, 3)
        self.assertIn("connection #1: ", str(error))
        self.assertIn("not echoed", str(error))

    def test_framedModesVerify(self) -> None:
        """
        With a framing, each mode counts frames, and traffic in frame bytes
        (payload and header).
        """
        for mode in ("pingpong", "stream"):
            server = ThreadedEchoServer(self)
            result = runBench(quick(server.endpoint, mode, framing="length:4"))
            self.assertGreater(result.messages, 0, mode)
            self.assertApproximately(
                result.bytesPerSecond, result.messagesPerSecond * 68, 0.01
            )
            server.stop()
            self.assertEveryByteEchoed(server, 2)

    def test_framedCorruptionDescribed(self) -> None:
        """
        A changed byte of a frame fails the run, naming the frame, and what
        a framer makes of the server's frame: a bad header, or another
        payload.
        """
        for at, fragments in (
            (
                1,
                (
                    "offset 1 (frame 1, byte 2 of 68)",
                    "the server sent a bad length:4 frame:"
                    " frame longer than max 65536 bytes",
                ),
            ),
            (
                CORRUPT_AT,
                (
                    f"offset {CORRUPT_AT} (frame 2, byte 33 of 68)",
                    "the server's frame 2 carries another payload",
                ),
            ),
        ):
            server = ThreadedEchoServer(self, corruptAt=at)
            error = self.assertRaises(
                BenchError,
                runBench,
                quick(server.endpoint, "pingpong", connections=1, framing="length:4"),
            )
            for fragment in fragments:
                self.assertIn(fragment, str(error))

    def test_refused(self) -> None:
        """
        A port nobody listens on: refused, naming the endpoint.
        """
        where = f"127.0.0.1:{unusedPort()}"
        error = self.assertRaises(BenchError, runBench, quick(where, "pingpong"))
        self.assertIn(f"connection refused by {where}", str(error))

    def test_processesAggregate(self) -> None:
        """
        With 2 processes, the connections come from 2 other processes, 2
        each, and the result adds up the lines both measured.
        """
        if not hasattr(socket, "SO_PEERCRED"):
            raise SkipTest("needs SO_PEERCRED to tell the clients' processes")
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "echo.sock")
        self.addCleanup(os.unlink, path)
        server = ThreadedEchoServer(self, unixPath=path)
        config = quick(
            server.endpoint, "pingpong", connections=4, processes=2, warmup=0
        )
        result = runBench(config)
        server.stop()
        self.assertEveryByteEchoed(server, 4)
        pids = [c.pid for c in server.connections]
        self.assertEqual(sorted(pids.count(pid) for pid in set(pids)), [2, 2])
        self.assertNotIn(os.getpid(), pids)
        # Without warm-up, every line echoed was measured except the last
        # line in flight on each connection.
        echoed = sum(c.echoed for c in server.connections) // 64
        self.assertTrue(echoed - 4 <= result.messages <= echoed, (result, echoed))
        self.assertGreater(result.cpuPercent, 0)

    def test_processErrorReported(self) -> None:
        """
        A worker process's failure fails the run with its message.
        """
        server = ThreadedEchoServer(self, corruptAt=CORRUPT_AT)
        error = self.assertRaises(
            BenchError,
            runBench,
            quick(server.endpoint, "lines", connections=2, processes=2),
        )
        self.assertIn(f"offset {CORRUPT_AT}", str(error))
        self.assertEqual(error.errors, 1)


def parseReport(testCase: SynchronousTestCase, result: CliResult) -> dict[str, object]:
    """
    Assert that the command printed exactly one JSON object, with exactly
    the documented keys, and return it.
    """
    text = result.stdout.decode("utf-8")
    testCase.assertEqual(len(text.splitlines()), 1, result.describe())
    report = json.loads(text)
    testCase.assertIsInstance(report, dict)
    testCase.assertEqual(set(report), JSON_KEYS)
    testCase.assertEqual(set(report["latency_us"]), {"p50", "p90", "p99"})
    return dict(report)


class Terminal(io.StringIO):
    """
    Text written to what says it is a terminal.
    """

    def isatty(self) -> bool:
        return True


RESULT = BenchResult(
    messages=4_000_000,
    seconds=2.0,
    messagesPerSecond=2_000_000.0,
    bytesPerSecond=128_000_000.0,
    latency=(100.0, 200.0, 300.0),
    cpuPercent=50.0,
)
"""
A result for the report tests: 2 s of 64-byte lines at 128 MB/s.
"""


class ReportTests(SynchronousTestCase):
    """
    What L{runCommand} reports for each mode, with the load itself replaced
    by a fixed result.
    """

    def report(
        self, mode: str, asJSON: bool = False, framing: str = "line"
    ) -> tuple[str, str]:
        """
        Run C{tcpcomm bench} in C{mode} on a terminal with L{RESULT} and one
        progress report.

        @return: What went to standard output and to standard error.
        """

        def fakeBench(
            config: BenchConfig, progress: Callable[[Progress], None] | None
        ) -> BenchResult:
            assert progress is not None
            progress(Progress("measuring", 1.0, 2_000_000.0, 128_000_000.0))
            return RESULT

        self.patch(bench, "runBench", fakeBench)
        out, err = io.StringIO(), Terminal()
        config = BenchConfig("127.0.0.1:1", mode, framing=framing)
        status = runCommand(config, asJSON=asJSON, stdout=out, stderr=err)
        self.assertEqual(status, 0, err.getvalue())
        return out.getvalue(), err.getvalue()

    def test_streamReportsBytes(self) -> None:
        """
        C{stream} says what it sends (64 KiB writes of 64-byte lines, 256
        KiB in flight) and reports MB/s, with no lines or messages per
        second, in the summary and on the progress line.
        """
        out, err = self.report("stream")
        self.assertIn("64 KiB writes of 64-byte lines, 256 KiB in flight each", out)
        self.assertIn("traffic    128.0 MB/s each way (256.0 MB echoed)", out)
        self.assertNotIn("messages", out)
        self.assertNotIn("4096", out)
        self.assertIn("128.0 MB/s each way", err)
        self.assertNotIn("lines/s", err)

    def test_streamJSON(self) -> None:
        """
        C{stream}'s JSON names its metric (C{bytes_per_s}), the write size
        and the bytes in flight.
        """
        out, _ = self.report("stream", asJSON=True)
        report = json.loads(out)
        self.assertEqual(report["metric"], "bytes_per_s")
        self.assertEqual(report["write_bytes"], 64 * 1024)
        self.assertEqual(report["in_flight_bytes"], 256 * 1024)
        self.assertEqual(report["bytes_per_s"], 128_000_000.0)

    def test_linesReportMessages(self) -> None:
        """
        C{lines} reports lines in flight and messages per second, and its
        JSON names C{messages_per_s} as its metric.
        """
        out, err = self.report("lines")
        self.assertIn("64-byte lines, 16 in flight each", out)
        self.assertIn("messages   2,000,000/s (4,000,000 in all)", out)
        self.assertIn("2,000,000 lines/s", err)
        report = json.loads(self.report("lines", asJSON=True)[0])
        self.assertEqual(report["metric"], "messages_per_s")
        self.assertEqual(report["in_flight_bytes"], 16 * 64)
        self.assertIsNone(report["write_bytes"])

    def test_framedReport(self) -> None:
        """
        With a framing, the summary names the frames (their size, framing
        and payload size) and the progress line counts frames per second.
        """
        out, err = self.report("lines", framing="length:4")
        self.assertIn(
            "68-byte length:4 frames of 64-byte payloads, 16 in flight each", out
        )
        self.assertIn("2,000,000 frames/s", err)
        out, _ = self.report("stream", framing="length:4")
        self.assertIn(
            # Whole frames: 963 of them, 3856 in flight (256 KiB's worth).
            "65,484 bytes writes of 68-byte length:4 frames of 64-byte payloads,"
            " 262,208 bytes in flight each",
            out,
        )

    def test_badFramingReported(self) -> None:
        """
        A framing that cannot carry the size, given to L{runCommand}
        directly: status 1, one error line, and the JSON says not verified.
        """
        out, err = io.StringIO(), io.StringIO()
        config = BenchConfig("127.0.0.1:1", "lines", framing="fixed:8")
        status = runCommand(config, asJSON=True, stdout=out, stderr=err)
        self.assertEqual(status, 1)
        self.assertEqual(
            err.getvalue(),
            "tcpcomm: error: --size 64: a 64-byte payload is not one 'fixed:8' frame\n",
        )
        report = json.loads(out.getvalue())
        self.assertIs(report["verified"], False)
        self.assertIsNone(report["frame_bytes"])

    def test_interrupted(self) -> None:
        """
        Ctrl-C during the load: one line saying C{interrupted}, status 130
        as shells report it.
        """

        def interrupted(config: BenchConfig, progress: object) -> BenchResult:
            raise KeyboardInterrupt()

        self.patch(bench, "runBench", interrupted)
        out, err = io.StringIO(), io.StringIO()
        status = runCommand(BenchConfig("127.0.0.1:1", "lines"), stdout=out, stderr=err)
        self.assertEqual(status, 130)
        self.assertEqual(err.getvalue(), "tcpcomm: error: interrupted\n")
        self.assertEqual(out.getvalue(), "")


class BenchCommandTests(TestCase):
    """
    C{tcpcomm bench} as users run it, against tcpcomm's servers.
    """

    async def test_modesReportJSON(self) -> None:
        """
        Each mode against an echo or line server exits 0 and prints one JSON
        object with the documented keys, every byte verified.
        """
        echo = address(startServer(self, EchoFactory()))
        line = address(startServer(self, LineFactory()))
        runs = [("pingpong", echo, "1"), ("lines", line, "16"), ("stream", echo, "")]
        results = await gatherResults(
            [
                runCli(
                    self,
                    ["bench", where, "--mode", mode, "--connections", "3", *JSON],
                )
                for mode, where, _ in runs
            ]
        )
        for (mode, where, pipeline), result in zip(runs, results, strict=True):
            self.assertEqual(result.code, 0, result.describe())
            self.assertEqual(result.stderr, b"", result.describe())
            report = parseReport(self, result)
            self.assertEqual(report["mode"], mode)
            self.assertEqual(report["endpoint"], where)
            self.assertEqual(report["connections"], 3)
            self.assertEqual(report["size"], 64)
            self.assertEqual(report["processes"], 1)
            self.assertEqual(report["errors"], 0)
            self.assertIs(report["verified"], True)
            for key in ("messages", "messages_per_s", "bytes_per_s", "cpu_percent"):
                value = report[key]
                assert isinstance(value, int | float), report
                self.assertGreater(value, 0, key)
            if pipeline:
                self.assertEqual(report["pipeline"], int(pipeline))

    async def test_summary(self) -> None:
        """
        Without C{--json}: a readable summary on standard output, nothing on
        standard error (it is no terminal, so no progress line).
        """
        server = startServer(self, LineFactory())
        result = await runCli(
            self, ["bench", address(server), "--mode", "lines", *SHORT]
        )
        self.assertEqual(result.code, 0, result.describe())
        self.assertEqual(result.stderr, b"")
        text = result.stdout.decode("utf-8")
        for fragment in ("every byte echoed and verified", "/s", "MB/s", "p99"):
            self.assertIn(fragment, text)
        self.assertIn("% of one core", text)

    async def test_corruption(self) -> None:
        """
        A server that changes one byte: status 1, one error line naming the
        connection and offset; the JSON says not verified.
        """
        server = startServer(self, Factory.forProtocol(Corrupter))
        result = await runCli(
            self,
            [
                "bench",
                address(server),
                "--mode",
                "pingpong",
                "--connections",
                "1",
                *JSON,
            ],
        )
        assertOneError(self, result, "connection #1:", f"offset {CORRUPT_AT}")
        report = parseReport(self, result)
        self.assertIs(report["verified"], False)
        self.assertEqual(report["errors"], 1)

    async def test_serverErrorLineQuoted(self) -> None:
        """
        A line server that answers an C{ERROR} line instead of the echo (a
        line over its limit): the error line quotes it.
        """
        server = startServer(self, LineFactory(maxLineLength=100))
        result = await runCli(
            self,
            ["bench", address(server), "--mode", "pingpong", "--size", "200"],
        )
        assertOneError(
            self,
            result,
            "connection #",
            "the server answered 'ERROR line too long (limit 100 bytes)'",
        )

    async def test_framingsVerified(self) -> None:
        """
        C{--framing} against Twisted's own C{Int32StringReceiver} and
        C{NetstringReceiver} echoes, tcpcomm's framed line server, and
        framed echoes: status 0, every frame verified, the JSON naming the
        framing, the payload size and the frame size.
        """
        runs: list[tuple[str, IProtocolFactory, int, int]] = [
            ("length:4", Factory.forProtocol(Int32Echo), 64, 68),
            ("netstring", Factory.forProtocol(NetstringEcho), 64, 68),
            ("modbus", LineFactory(framing="modbus"), 12, 12),
            ("length:2:strip=0", LineFactory(framing="length:2:strip=0"), 64, 64),
            ("delimiter:00", LineFactory(framing="delimiter:00"), 64, 65),
            ("stx-etx", FramedEchoFactory("stx-etx"), 64, 66),
            ("fixed:16", FramedEchoFactory("fixed:16"), 16, 16),
        ]
        results = await gatherResults(
            [
                runCli(
                    self,
                    [
                        "bench",
                        address(startServer(self, factory)),
                        "--mode",
                        "lines",
                        "--connections",
                        "2",
                        "--framing",
                        framing,
                        *JSON,
                    ],
                )
                for framing, factory, _, _ in runs
            ]
        )
        for (framing, _, size, frame), result in zip(runs, results, strict=True):
            self.assertEqual(result.code, 0, result.describe())
            self.assertEqual(result.stderr, b"", result.describe())
            report = parseReport(self, result)
            self.assertEqual(report["framing"], framing)
            self.assertEqual(report["size"], size)
            self.assertEqual(report["frame_bytes"], frame)
            self.assertEqual(report["in_flight_bytes"], 16 * frame)
            self.assertIs(report["verified"], True)
            messages = report["messages"]
            assert isinstance(messages, int), report
            self.assertGreater(messages, 0, framing)

    async def test_badFramesFromServer(self) -> None:
        """
        A server whose reply frames are corrupt, or carry another payload:
        status 1 and one error line naming the connection and saying what
        is wrong with the frame, soon (no waiting for the rest of a frame
        whose header is wrong).
        """
        runs = [
            (
                "length:4",
                lambda framer, payload: b"\xff\xff\xff\xff" + payload,
                "the server sent a bad length:4 frame: frame longer than max",
            ),
            (
                "modbus",
                lambda framer, payload: payload[:2] + b"\x00\x01" + payload[4:],
                "the server sent a bad modbus frame: MODBUS protocol id 1, not 0",
            ),
            (
                "netstring",
                lambda framer, payload: framer.encode(payload[:-1]),
                "the server's frame 1 carries a 63-byte payload, not 64 bytes",
            ),
        ]
        results = await gatherResults(
            [
                runCli(
                    self,
                    [
                        "bench",
                        address(startServer(self, FramedEchoFactory(framing, reply))),
                        "--mode",
                        "pingpong",
                        "--connections",
                        "1",
                        "--framing",
                        framing,
                        *SHORT,
                    ],
                )
                for framing, reply, _ in runs
            ]
        )
        for (_, _, fragment), result in zip(runs, results, strict=True):
            assertOneError(self, result, "connection #1:", "(frame 1, ", fragment)

    def test_badFraming(self) -> None:
        """
        A bad C{--framing}, or a C{--size} it cannot carry, is a bad command
        line: status 2 and an error saying what is wrong.
        """
        for options, fragments in (
            (["--framing", "length:5"], ("length:5", "size must be 1, 2, 3, 4 or 8")),
            (["--framing", "fixed:8", "--size", "64"], ("--size 64", "fixed:8")),
            (["--framing", "modbus", "--size", "64"], ("MODBUS requests are 12",)),
            (["--framing", "length:4", "--pipeline", "1000000"], ("--pipeline",)),
            (["--framing", "modbus", "--pipeline", "65537"], ("--pipeline", "65536")),
        ):
            result = runCliBlocking(
                ["bench", "127.0.0.1:1", "--mode", "lines", *options]
            )
            assertUsageError(self, result, *fragments)

    async def test_refused(self) -> None:
        """
        A port nobody listens on: status 1 and one error line saying refused
        and naming the endpoint.
        """
        where = f"127.0.0.1:{unusedPort()}"
        result = await runCli(self, ["bench", where, "--mode", "lines"])
        assertOneError(self, result, "refused", where)
        self.assertEqual(result.stdout, b"")

    def test_tls(self) -> None:
        """
        A TLS endpoint: status 2, the usage and an error line saying TLS is
        not supported.
        """
        result = runCliBlocking(["bench", "tls:localhost:1", "--mode", "lines"])
        assertUsageError(self, result, "TLS", "not supported")

    def test_malformedEndpoint(self) -> None:
        """
        A malformed ENDPOINT or a port out of range is a bad command line:
        status 2 and an error line naming it.
        """
        for endpoint in ("localhost", "localhost:99999"):
            result = runCliBlocking(["bench", endpoint, "--mode", "lines"])
            assertUsageError(self, result, repr(endpoint))

    def test_badArguments(self) -> None:
        """
        What argparse rejects ends with status 2 and a usage message: no
        C{--mode}, a size below 2, more processes than connections.
        """
        assertUsageError(self, runCliBlocking(["bench", "127.0.0.1:1"]), "--mode")
        assertUsageError(
            self,
            runCliBlocking(["bench", "127.0.0.1:1", "--mode", "lines", "--size", "1"]),
            "--size",
            "'1'",
        )
        assertUsageError(
            self,
            runCliBlocking(
                ["bench", "127.0.0.1:1", "--mode", "pingpong", *TOO_MANY_PROCESSES]
            ),
            "--processes",
        )

    def test_help(self) -> None:
        """
        C{tcpcomm bench --help} explains the modes, the options and the exit
        status.
        """
        result = runCliBlocking(["bench", "--help"])
        self.assertEqual(result.code, 0, result.describe())
        text = " ".join(result.stdout.decode("utf-8").split())
        for fragment in (
            "usage: tcpcomm bench",
            "pingpong",
            "stream",
            "--connections",
            "--pipeline",
            "--processes",
            "--json",
            "Exit status",
        ):
            self.assertIn(fragment, text)
