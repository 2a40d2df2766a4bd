"""
Tests for L{tcpcomm.line}: the protocol's logic on an in-memory transport,
and pipelining, limits, failures and half-close over real loopback sockets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm.client import exchange
from tcpcomm.connection import LINGER_SECONDS, ConnectionProtocol
from tcpcomm.line import (
    HANDLERS_PER_TURN,
    INTERNAL_ERROR,
    Handler,
    HandlerResult,
    LineFactory,
    LineProtocol,
    echoLine,
)
from tcpcomm.testing import startServer


class HalfCloseableStringTransport(StringTransport):
    """
    A L{StringTransport} that also records C{loseWriteConnection}, which
    the real TCP transport has and L{StringTransport} lacks.

    @ivar writeDisconnected: Whether C{loseWriteConnection} was called.
    @ivar protocol: The protocol connected to it, where a helper set it.
    """

    writeDisconnected = False
    protocol: ConnectionProtocol

    def loseWriteConnection(self) -> None:
        self.writeDisconnected = True


def connect(factory: LineFactory) -> tuple[LineProtocol, HalfCloseableStringTransport]:
    """
    Connect a protocol from C{factory} to a fresh in-memory transport, with
    a fake clock for the factory's timers.
    """
    factory.clock = Clock()
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(protocol, LineProtocol)
    transport = HalfCloseableStringTransport(
        peerAddress=IPv4Address("TCP", "192.0.2.7", 4321)
    )
    protocol.makeConnection(transport)
    return protocol, transport


class LogCapture:
    """
    Collect log events published while a test runs.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        testCase.addCleanup(globalLogPublisher.removeObserver, observer)

    def failures(self) -> list[Failure]:
        return [e["log_failure"] for e in self.events if "log_failure" in e]


class LineProtocolTests(SynchronousTestCase):
    """
    L{LineProtocol} on an in-memory transport.
    """

    def test_echoByDefault(self) -> None:
        """
        Without a handler, each line comes back as it was, ending in LF.
        """
        protocol, transport = connect(LineFactory())
        protocol.dataReceived(b"hello\nworld\n")
        self.assertEqual(transport.value(), b"hello\nworld\n")

    def test_echoLineIsIdentity(self) -> None:
        """
        The default handler returns the line it is given, any bytes at all,
        empty included.
        """
        for line in [b"", b"hello", bytes(range(256)), b"x" * 65536]:
            self.assertIs(echoLine(line), line)
        self.assertIs(LineFactory().handler, echoLine)

    def test_crlfInLfOut(self) -> None:
        """
        A CR before the LF is dropped from the line; replies use the factory's
        delimiter.
        """
        seen: list[bytes] = []

        def handler(line: bytes) -> bytes:
            seen.append(line)
            return line

        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"a\r\nb\n")
        self.assertEqual(seen, [b"a", b"b"])
        self.assertEqual(transport.value(), b"a\nb\n")

    def test_crlfDelimiter(self) -> None:
        """
        With C{delimiter=b"\\r\\n"} every reply ends in CRLF.
        """
        protocol, transport = connect(LineFactory(delimiter=b"\r\n"))
        protocol.dataReceived(b"a\nb\r\n")
        self.assertEqual(transport.value(), b"a\r\nb\r\n")

    def test_badDelimiterRejected(self) -> None:
        """
        A delimiter other than LF or CRLF is refused at construction.
        """
        self.assertRaises(ValueError, LineFactory, delimiter=b";")

    def test_strReplyIsUtf8(self) -> None:
        """
        A C{str} reply is sent encoded as UTF-8.
        """
        protocol, transport = connect(LineFactory(lambda line: "héllo"))
        protocol.dataReceived(b"x\n")
        self.assertEqual(transport.value(), "héllo\n".encode())

    def test_noneMeansNoReply(self) -> None:
        """
        A handler returning C{None} sends nothing for that line.
        """
        protocol, transport = connect(
            LineFactory(lambda line: None if line == b"quiet" else line)
        )
        protocol.dataReceived(b"quiet\nloud\n")
        self.assertEqual(transport.value(), b"loud\n")

    def test_emptyReplyIsEmptyLine(self) -> None:
        """
        A handler returning C{b""} sends an empty line.
        """
        protocol, transport = connect(LineFactory(lambda line: b""))
        protocol.dataReceived(b"x\n")
        self.assertEqual(transport.value(), b"\n")

    def test_oneWritePerRead(self) -> None:
        """
        All synchronous replies to one read go out in a single write.
        """
        protocol, transport = connect(LineFactory())
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        protocol.dataReceived(b"a\nb\nc\n")
        self.assertEqual(writes, [b"a\nb\nc\n"])

    def test_deferredReply(self) -> None:
        """
        A Deferred reply is sent when it fires.
        """
        d: Deferred[bytes] = Deferred()
        protocol, transport = connect(LineFactory(lambda line: d))
        protocol.dataReceived(b"x\n")
        self.assertEqual(transport.value(), b"")
        d.callback(b"done")
        self.assertEqual(transport.value(), b"done\n")

    def test_alreadyFiredDeferredKeepsOrder(self) -> None:
        """
        A Deferred that has already fired is sent after the replies to the
        lines before it, in the same read.
        """
        protocol, transport = connect(
            LineFactory(lambda line: succeed(line) if line == b"b" else line)
        )
        protocol.dataReceived(b"a\nb\nc\n")
        self.assertEqual(transport.value(), b"a\nb\nc\n")

    def test_coroutineReply(self) -> None:
        """
        A coroutine's return value is the reply.
        """
        d: Deferred[bytes] = Deferred()

        async def handler(line: bytes) -> bytes:
            return (await d) + line

        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"x\n")
        d.callback(b"got ")
        self.assertEqual(transport.value(), b"got x\n")

    def test_repliesInRequestOrder(self) -> None:
        """
        Replies go out in request order when handlers finish out of order,
        and synchronous replies wait behind slower ones before them.
        """
        waiting: dict[bytes, Deferred[bytes]] = {}

        def handler(line: bytes) -> HandlerResult:
            if line.startswith(b"slow"):
                waiting[line] = Deferred()
                return waiting[line]
            return line

        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"fast1\nslow1\nfast2\nslow2\nfast3\n")
        self.assertEqual(transport.value(), b"fast1\n")
        waiting[b"slow2"].callback(b"slow2")
        self.assertEqual(transport.value(), b"fast1\n")
        waiting[b"slow1"].callback(b"slow1")
        self.assertEqual(transport.value(), b"fast1\nslow1\nfast2\nslow2\nfast3\n")

    def test_handlerExceptionGivesErrorLine(self) -> None:
        """
        A handler that raises gives the client one ERROR line without
        details, logs the traceback, and the next line is still answered.
        """
        logs = LogCapture(self)

        def handler(line: bytes) -> bytes:
            if line == b"boom":
                raise RuntimeError("secret internals")
            return line

        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"boom\nok\n")
        self.assertEqual(transport.value(), INTERNAL_ERROR + b"\nok\n")
        self.assertNotIn(b"secret", transport.value())
        [failure] = logs.failures()
        self.assertTrue(failure.check(RuntimeError))
        self.assertFalse(transport.disconnecting)
        self.flushLoggedErrors(RuntimeError)

    def test_raisingHandlersAmongManyLinesOfOneRead(self) -> None:
        """
        Handlers raising on several lines of one read, the first and last
        among them, each give an ERROR line in place; every line's handler
        runs exactly once, in order.
        """
        logs = LogCapture(self)
        seen: list[bytes] = []

        def handler(line: bytes) -> bytes:
            seen.append(line)
            if line.startswith(b"boom"):
                raise RuntimeError(line.decode())
            return line

        protocol, transport = connect(LineFactory(handler))
        lines = [b"boom1", b"a", b"boom2", b"boom3", b"b", b"boom4"]
        protocol.dataReceived(b"".join(line + b"\n" for line in lines))
        error = INTERNAL_ERROR + b"\n"
        self.assertEqual(transport.value(), error + b"a\n" + error * 2 + b"b\n" + error)
        self.assertEqual(seen, lines)
        self.assertEqual(len(logs.failures()), 4)
        self.assertEqual(protocol.linesHandled, 6)
        self.flushLoggedErrors(RuntimeError)

    def test_mixedSynchronousRepliesInOneRead(self) -> None:
        """
        In one read, C{bytes}, C{str}, C{bytearray}, C{memoryview} and
        C{None} replies go out in order as one write, C{None} sending
        nothing.
        """
        replies: dict[bytes, Any] = {
            b"b": b"bytes",
            b"s": "str \N{SNOWMAN}",
            b"a": bytearray(b"array"),
            b"m": memoryview(b"view"),
            b"n": None,
        }
        handler: Handler = replies.__getitem__
        protocol, transport = connect(LineFactory(handler))
        writes: list[bytes] = []
        write = transport.write

        def recordingWrite(data: bytes) -> None:
            writes.append(data)
            write(data)

        transport.write = recordingWrite  # type: ignore[method-assign]
        protocol.dataReceived(b"b\nn\ns\na\nm\nn\n")
        self.assertEqual(
            writes, [b"bytes\n" + "str \N{SNOWMAN}".encode() + b"\narray\nview\n"]
        )

    def test_bytesLikeRepliesFromDeferreds(self) -> None:
        """
        A Deferred's C{bytearray} or C{memoryview} result is a reply like
        C{bytes}, also on a one-line read.
        """
        replies: dict[bytes, Any] = {
            b"a": succeed(bytearray(b"array")),
            b"m": memoryview(b"view"),
        }
        handler: Handler = replies.__getitem__
        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"a\n")
        protocol.dataReceived(b"m\n")
        self.assertEqual(transport.value(), b"array\nview\n")

    def test_failedDeferredGivesErrorLine(self) -> None:
        """
        A handler whose Deferred fails gives one ERROR line in that reply's
        place, logged, and later replies still follow.
        """
        logs = LogCapture(self)
        d: Deferred[bytes] = Deferred()
        protocol, transport = connect(
            LineFactory(lambda line: d if line == b"a" else line)
        )
        protocol.dataReceived(b"a\nb\n")
        d.errback(ValueError("hidden"))
        self.assertEqual(transport.value(), INTERNAL_ERROR + b"\nb\n")
        self.assertEqual(len(logs.failures()), 1)
        self.flushLoggedErrors(ValueError)

    def test_wrongReplyTypeGivesErrorLine(self) -> None:
        """
        A handler returning something that is not a reply (an int, or a
        Deferred of one) gets an ERROR line and a log entry.
        """
        logs = LogCapture(self)
        replies: dict[bytes, Any] = {b"int": 42, b"deferred": succeed(42)}
        handler: Handler = replies.__getitem__
        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"int\ndeferred\n")
        self.assertEqual(
            transport.value(), INTERNAL_ERROR + b"\n" + INTERNAL_ERROR + b"\n"
        )
        bad = [e for e in logs.events if "Bad reply" in e.get("log_format", "")]
        self.assertEqual([e["log_level"].name for e in bad], ["error", "error"])
        self.assertIn("handler gave 42", bad[0]["reason"])

    def test_overlongLine(self) -> None:
        """
        A line over the limit: earlier replies first, then the ERROR line,
        then the connection closes.
        """
        factory = LineFactory(maxLineLength=4)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"ok\n12345\nlost\n")
        self.assertEqual(
            transport.value(), b"ok\nERROR line too long (limit 4 bytes)\n"
        )
        self.assertTrue(transport.writeDisconnected)
        self.assertIsNone(transport.producer)
        self.assertFalse(transport.disconnecting)
        assert isinstance(factory.clock, Clock)
        factory.clock.advance(LINGER_SECONDS)
        self.assertTrue(transport.disconnecting)

    def test_overlongLineLingers(self) -> None:
        """
        After the ERROR for an overlong line the server half-closes, keeps
        reading and discarding (so the client reads the ERROR rather than a
        reset), and closes as soon as the client closes its side.
        """
        protocol, transport = connect(LineFactory(maxLineLength=4))
        protocol.dataReceived(b"12345")
        self.assertTrue(transport.writeDisconnected)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"more\n" * 100)
        self.assertEqual(transport.value(), b"ERROR line too long (limit 4 bytes)\n")
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)

    def test_overlongLineWaitsForPendingReplies(self) -> None:
        """
        The ERROR for an overlong line waits behind pending replies, and the
        connection closes only after they are sent.
        """
        d: Deferred[bytes] = Deferred()
        protocol, transport = connect(LineFactory(lambda line: d, maxLineLength=4))
        protocol.dataReceived(b"x\n12345")
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.writeDisconnected)
        d.callback(b"late")
        self.assertEqual(
            transport.value(), b"late\nERROR line too long (limit 4 bytes)\n"
        )
        self.assertTrue(transport.writeDisconnected)

    def test_overlongLineAnsweredOnce(self) -> None:
        """
        Data arriving after an overlong line, while replies are still
        pending, gets no second ERROR line.
        """
        d: Deferred[bytes] = Deferred()
        protocol, transport = connect(LineFactory(lambda line: d, maxLineLength=4))
        protocol.dataReceived(b"x\n12345")
        protocol.dataReceived(b"6789\nmore\n")
        d.callback(b"late")
        self.assertEqual(
            transport.value(), b"late\nERROR line too long (limit 4 bytes)\n"
        )

    def test_halfCloseHandlesLastLine(self) -> None:
        """
        At half-close a last line without delimiter is handled, and the
        server closes after replying.
        """
        protocol, transport = connect(LineFactory())
        protocol.dataReceived(b"one\ntwo")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"one\ntwo\n")
        self.assertTrue(transport.disconnecting)

    def test_halfCloseWaitsForPendingReplies(self) -> None:
        """
        After half-close the server closes only once every pending reply has
        been sent.
        """
        d: Deferred[bytes] = Deferred()
        protocol, transport = connect(LineFactory(lambda line: d))
        protocol.dataReceived(b"x\n")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        d.callback(b"reply")
        self.assertEqual(transport.value(), b"reply\n")
        self.assertTrue(transport.disconnecting)

    def test_lostConnectionCancelsHandlers(self) -> None:
        """
        Handlers still running when the connection is lost are cancelled,
        without logging an error.
        """
        logs = LogCapture(self)
        cancelled: list[Deferred[bytes]] = []
        d: Deferred[bytes] = Deferred(cancelled.append)
        protocol, _transport = connect(LineFactory(lambda line: d))
        protocol.dataReceived(b"x\n")
        protocol.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(cancelled, [d])
        self.assertEqual(logs.failures(), [])

    def test_tooManyPendingPausesReading(self) -> None:
        """
        Reading pauses while C{maxPending} replies wait on handlers, and
        resumes once they drain.
        """
        waiting: list[Deferred[bytes]] = []

        def handler(line: bytes) -> Deferred[bytes]:
            waiting.append(Deferred())
            return waiting[-1]

        protocol, transport = connect(LineFactory(handler, maxPending=2))
        clock = cast(Clock, protocol.factory.clock)
        protocol.dataReceived(b"a\n")
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"b\n")
        self.assertEqual(transport.producerState, "paused")
        waiting[0].callback(b"a")
        clock.advance(0)
        self.assertEqual(transport.value(), b"a\n")
        self.assertEqual(transport.producerState, "producing")

    def test_readThatFillsPendingPausesReading(self) -> None:
        """
        A single read whose lines leave exactly C{maxPending} replies
        waiting pauses reading at once.
        """
        for maxPending in (1, 3):
            waiting: list[Deferred[bytes]] = []

            def handler(
                line: bytes, waiting: list[Deferred[bytes]] = waiting
            ) -> Deferred[bytes]:
                waiting.append(Deferred())
                return waiting[-1]

            protocol, transport = connect(LineFactory(handler, maxPending=maxPending))
            protocol.dataReceived(b"x\n" * maxPending)
            self.assertEqual(len(waiting), maxPending)
            self.assertEqual(transport.producerState, "paused")
            for d in waiting:
                d.callback(b"y")
            self.assertEqual(transport.value(), b"y\n" * maxPending)
            self.assertEqual(transport.producerState, "producing")

    def test_oneReadStartsAtMostMaxPendingHandlers(self) -> None:
        """
        One read full of lines starts no more than C{maxPending} slow
        handlers; the other lines wait, unhandled, and are answered in order
        as room comes.
        """
        waiting: list[Deferred[None]] = []

        def handler(line: bytes) -> Deferred[bytes]:
            waiting.append(Deferred())
            return waiting[-1].addCallback(lambda _: line)

        protocol, transport = connect(LineFactory(handler, maxPending=8))
        protocol.dataReceived(b"".join(b"%d\n" % i for i in range(1000)))
        self.assertEqual(len(waiting), 8)
        self.assertEqual(transport.producerState, "paused")
        for i in range(1000):
            self.assertLessEqual(len([d for d in waiting if not d.called]), 8)
            waiting[i].callback(None)
        self.assertEqual(transport.value(), b"".join(b"%d\n" % i for i in range(1000)))
        self.assertEqual(transport.producerState, "producing")

    def test_writeBufferFullPausesReading(self) -> None:
        """
        When the transport reports its write buffer full, reading pauses
        until it drains.
        """
        protocol, transport = connect(LineFactory())
        self.assertIs(transport.producer, protocol)
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        self.assertTrue(protocol.readingPaused)
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_subclassHook(self) -> None:
        """
        A subclass can answer lines by overriding C{lineReceived}.
        """

        class Upper(LineProtocol):
            def lineReceived(self, line: bytes) -> HandlerResult:
                return line.upper()

        factory = LineFactory()
        factory.protocol = Upper
        protocol, transport = connect(factory)
        protocol.dataReceived(b"abc\n")
        self.assertEqual(transport.value(), b"ABC\n")

    def test_subclassHookInherited(self) -> None:
        """
        An override of C{lineReceived} answers for the subclasses of its
        class too, one line or many per read, and a subclass that overrides
        nothing calls the factory's handler.
        """

        class Upper(LineProtocol):
            def lineReceived(self, line: bytes) -> HandlerResult:
                return line.upper()

        class Louder(Upper):
            pass

        class Plain(LineProtocol):
            pass

        for protocolClass, expected in [
            (Louder, b"ABC\nX\nY\n"),
            (Plain, b"abc!\nx!\ny!\n"),
        ]:
            factory = LineFactory(lambda line: line + b"!")
            factory.protocol = protocolClass
            protocol, transport = connect(factory)
            protocol.dataReceived(b"abc\n")
            protocol.dataReceived(b"x\ny\n")
            self.assertEqual(transport.value(), expected)

    def test_countersAndLogLine(self) -> None:
        """
        The factory counts lines and bytes; the close log line names the peer
        and its byte and line counts.
        """
        logs = LogCapture(self)
        factory = LineFactory()
        protocol, _transport = connect(factory)
        protocol.dataReceived(b"ab\ncd\n")
        self.assertEqual(factory.stats.linesHandled, 2)
        self.assertEqual(factory.stats.bytesIn, 6)
        self.assertEqual(factory.stats.bytesOut, 6)
        self.assertEqual(factory.stats.connectionsOpen, 1)
        protocol.connectionLost(Failure(ConnectionError("bye")))
        self.assertEqual(factory.stats.connectionsOpen, 0)
        self.assertEqual(factory.stats.connectionsTotal, 1)
        closing = [e for e in logs.events if "summary" in e]
        self.assertEqual(len(closing), 1)
        self.assertEqual(closing[0]["peer"], "192.0.2.7:4321")
        self.assertEqual(closing[0]["summary"], "6 bytes in, 6 bytes out, 2 lines")


async def waitUntil(predicate: Any, timeout: float = 10.0) -> None:
    """
    Poll C{predicate} every 10 ms until it is true; fail after C{timeout}.
    """
    for _ in range(int(timeout * 100)):
        if predicate():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def reactorTurn(clock: Clock) -> None:
    """
    Run the calls due on C{clock} now, as one turn of a real reactor does:
    calls they schedule wait for the next turn (C{Clock.advance} would run
    those too).
    """
    due = [call for call in clock.calls if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


class PacingTests(SynchronousTestCase):
    """
    A connection starts at most L{HANDLERS_PER_TURN} handlers that answer
    later per reactor turn, so that no turn runs long; synchronous handlers
    are not paced.
    """

    def floodedConnection(
        self, lines: int
    ) -> tuple[LineProtocol, HalfCloseableStringTransport, list[Deferred[None]]]:
        """
        A connection whose handler answers each line with the line once its
        Deferred (appended to the returned list) fires, after it has been
        sent C{lines} lines in one read.
        """
        waiting: list[Deferred[None]] = []

        def handler(line: bytes) -> Deferred[bytes]:
            waiting.append(Deferred())
            return waiting[-1].addCallback(lambda _: line)

        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"".join(b"%d\n" % i for i in range(lines)))
        return protocol, transport, waiting

    def test_laterTurnsStartTheRest(self) -> None:
        """
        Once the handler has answered later, a connection holding more lines
        than L{HANDLERS_PER_TURN} starts that many per reactor turn, reading
        paused meanwhile, even though C{maxPending} leaves room for more;
        every line is still answered, in order.
        """
        protocol, transport, waiting = self.floodedConnection(1)
        self.assertTrue(protocol.factory.paced)
        waiting[0].callback(None)
        count = 3 * HANDLERS_PER_TURN + 5
        protocol.dataReceived(b"".join(b"%d\n" % i for i in range(1, count)))
        self.assertEqual(len(waiting), 1 + HANDLERS_PER_TURN)
        self.assertEqual(transport.producerState, "paused")
        clock = protocol.factory.clock
        assert isinstance(clock, Clock)
        reactorTurn(clock)
        self.assertEqual(len(waiting), 1 + 2 * HANDLERS_PER_TURN)
        reactorTurn(clock)
        reactorTurn(clock)
        self.assertEqual(len(waiting), count)
        self.assertEqual(clock.getDelayedCalls(), [])
        for d in waiting[1:]:
            d.callback(None)
        self.assertEqual(transport.value(), b"".join(b"%d\n" % i for i in range(count)))
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_drainedRepliesStartMore(self) -> None:
        """
        When every paced handler has answered, the next lines start at once,
        without waiting for the next turn.
        """
        protocol, _transport, waiting = self.floodedConnection(1)
        waiting[0].callback(None)
        protocol.dataReceived(b"x\n" * (HANDLERS_PER_TURN + 1))
        self.assertEqual(len(waiting), 1 + HANDLERS_PER_TURN)
        for d in waiting[1:]:
            d.callback(None)
        self.assertEqual(len(waiting), 2 + HANDLERS_PER_TURN)

    def test_newConnectionPacedFromItsFirstRead(self) -> None:
        """
        On a factory already paced, a new connection's first read starts at
        most L{HANDLERS_PER_TURN} handlers too.
        """
        first, _transport, waiting = self.floodedConnection(1)
        protocol = first.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2))
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"x\n" * (HANDLERS_PER_TURN + 10))
        self.assertEqual(len(waiting), 1 + HANDLERS_PER_TURN)

    def test_synchronousHandlersNotPaced(self) -> None:
        """
        A handler that answers at once handles a read of many lines in one
        go: no pacing, no timer.
        """
        protocol, transport = connect(LineFactory())
        protocol.dataReceived(b"x\n" * (10 * HANDLERS_PER_TURN))
        self.assertEqual(transport.value(), b"x\n" * (10 * HANDLERS_PER_TURN))
        self.assertFalse(protocol.factory.paced)
        clock = protocol.factory.clock
        assert isinstance(clock, Clock)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_shutDownStartsNoMore(self) -> None:
        """
        Lines waiting for the next turn when shutdown begins are never
        handled: the next turn starts no handler.
        """
        protocol, _transport, waiting = self.floodedConnection(1)
        protocol.dataReceived(b"x\n" * (2 * HANDLERS_PER_TURN))
        # The first line's handler counts in this turn too.
        self.assertEqual(len(waiting), HANDLERS_PER_TURN)
        protocol.shutDown()
        clock = protocol.factory.clock
        assert isinstance(clock, Clock)
        reactorTurn(clock)
        self.assertEqual(len(waiting), HANDLERS_PER_TURN)
        self.assertEqual(protocol.pendingReplies, HANDLERS_PER_TURN)

    def test_lostConnectionCancelsNextTurn(self) -> None:
        """
        A connection lost with lines waiting for the next turn leaves no
        timer behind.
        """
        protocol, _transport, _waiting = self.floodedConnection(1)
        protocol.dataReceived(b"x\n" * (2 * HANDLERS_PER_TURN))
        clock = protocol.factory.clock
        assert isinstance(clock, Clock)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(clock.getDelayedCalls(), [])


class LineServerTests(TestCase):
    """
    A line server over real sockets on 127.0.0.1.
    """

    async def test_pipelinedOutOfOrder(self) -> None:
        """
        100 pipelined lines whose handlers finish in reverse order come back
        in request order.
        """
        count = 100

        def handler(line: bytes) -> Deferred[bytes]:
            delay = (count - int(line)) / 2000
            return deferLater(reactor, delay, lambda: b"reply " + line)

        server = startServer(self, LineFactory(handler))
        request = b"".join(b"%d\n" % i for i in range(count))
        reply = await exchange(reactor, server.endpoint(), request)
        self.assertEqual(reply, b"".join(b"reply %d\n" % i for i in range(count)))

    async def test_overlongLine(self) -> None:
        """
        Over a socket: replies to earlier lines, then the ERROR line, then
        the server closes, without waiting for the client to finish.
        """
        server = startServer(self, LineFactory(maxLineLength=1000))
        reply = await exchange(
            reactor, server.endpoint(), b"first\n" + b"x" * 5000 + b"\nafter\n"
        )
        self.assertEqual(reply, b"first\nERROR line too long (limit 1000 bytes)\n")

    async def test_overlongLineWhileClientStillSends(self) -> None:
        """
        A client still sending megabytes after its overlong line gets the
        replies and the ERROR line, not a reset.
        """
        server = startServer(self, LineFactory(maxLineLength=1000))
        request = b"first\n" + b"x" * (8 * 1024 * 1024)
        reply = await exchange(reactor, server.endpoint(), request)
        self.assertEqual(reply, b"first\nERROR line too long (limit 1000 bytes)\n")

    async def test_handlerException(self) -> None:
        """
        Over a socket: a raising handler costs one ERROR line, and the lines
        after it are answered on the same connection.
        """

        def handler(line: bytes) -> bytes:
            if line == b"bad":
                raise ZeroDivisionError()
            return line

        server = startServer(self, LineFactory(handler))
        reply = await exchange(reactor, server.endpoint(), b"a\nbad\nb\n")
        self.assertEqual(reply, b"a\n" + INTERNAL_ERROR + b"\nb\n")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_lastLineAtHalfClose(self) -> None:
        """
        A last line with no delimiter is answered when the client half-closes.
        """
        server = startServer(self, LineFactory(lambda line: line[::-1]))
        reply = await exchange(reactor, server.endpoint(), b"abc\ndef")
        self.assertEqual(reply, b"cba\nfed\n")

    async def test_manyClientsGetTheirOwnReplies(self) -> None:
        """
        200 clients at once, 50 lines each, each get exactly the replies to
        their own lines.
        """
        server = startServer(self, LineFactory(lambda line: b"ack " + line))

        def request(client: int) -> bytes:
            return b"".join(b"client %d line %d\n" % (client, i) for i in range(50))

        replies = await gatherResults(
            [exchange(reactor, server.endpoint(), request(c)) for c in range(200)]
        )
        for client, reply in enumerate(replies):
            expected = request(client).replace(b"client", b"ack client")
            self.assertEqual(
                hashlib.sha256(reply).hexdigest(),
                hashlib.sha256(expected).hexdigest(),
                f"client {client}",
            )
        factory = server.factory
        assert isinstance(factory, LineFactory)
        await waitUntil(lambda: factory.stats.connectionsOpen == 0)
        self.assertEqual(factory.stats.connectionsTotal, 200)
        self.assertEqual(factory.stats.linesHandled, 200 * 50)


def recordWrites(transport: StringTransport) -> list[bytes]:
    """
    Record each write to C{transport}, as well as writing it.
    """
    writes: list[bytes] = []
    write = transport.write

    def recording(data: bytes) -> None:
        writes.append(data)
        write(data)

    transport.write = recording  # type: ignore[method-assign]
    return writes


class CoroutineHandlerTests(SynchronousTestCase):
    """
    C{async def} handlers: one that returns without awaiting is answered as
    a plain function is; one that awaits is answered when it returns.
    """

    def test_returnsWithoutAwaitingAnsweredAtOnce(self) -> None:
        """
        An C{async def} handler that returns without awaiting is answered in
        the same write as the read's other replies, with no reply queue and
        without pacing the factory.
        """

        async def handler(line: bytes) -> bytes:
            return line.upper()

        protocol, transport = connect(LineFactory(handler))
        writes = recordWrites(transport)
        protocol.dataReceived(b"a\nb\nc\n")
        self.assertEqual(writes, [b"A\nB\nC\n"])
        protocol.dataReceived(b"d\n")
        self.assertEqual(writes[-1], b"D\n")
        self.assertFalse(protocol.factory.paced)
        self.assertIsNone(protocol._extra)

    def test_awaitingAnsweredWhenDone(self) -> None:
        """
        An C{async def} handler that awaits a Deferred is answered with what
        it returns once that fires, in order with the others.
        """
        waiting: list[Deferred[bytes]] = []

        async def handler(line: bytes) -> bytes:
            if line == b"slow":
                d: Deferred[bytes] = Deferred()
                waiting.append(d)
                return (await d) + b"!"
            return line

        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"slow\nfast\n")
        self.assertEqual(transport.value(), b"")
        waiting[0].callback(b"done")
        self.assertEqual(transport.value(), b"done!\nfast\n")
        self.assertTrue(protocol.factory.paced)

    def test_raisingBeforeAwaitIsInternalError(self) -> None:
        """
        An C{async def} handler that raises before awaiting is logged and
        answered C{ERROR internal error}, like a plain one.
        """
        logs = LogCapture(self)

        async def handler(line: bytes) -> bytes:
            raise ValueError(line)

        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"x\n")
        self.assertEqual(transport.value(), INTERNAL_ERROR + b"\n")
        self.assertEqual(len(logs.failures()), 1)
        self.flushLoggedErrors(ValueError)

    def test_raisingAfterAwaitIsInternalError(self) -> None:
        """
        An C{async def} handler that raises after awaiting is logged and
        answered C{ERROR internal error}.
        """
        logs = LogCapture(self)
        waiting: list[Deferred[None]] = []

        async def handler(line: bytes) -> bytes:
            d: Deferred[None] = Deferred()
            waiting.append(d)
            await d
            raise ValueError(line)

        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"x\n")
        waiting[0].callback(None)
        self.assertEqual(transport.value(), INTERNAL_ERROR + b"\n")
        self.assertEqual(len(logs.failures()), 1)
        self.flushLoggedErrors(ValueError)

    def test_cancelledOnDisconnect(self) -> None:
        """
        A coroutine still awaiting when the client goes is cancelled: the
        Deferred it awaits is cancelled, and CancelledError reaches it.
        """
        seen: list[type[BaseException]] = []
        cancelled: list[Deferred[None]] = []

        async def handler(line: bytes) -> bytes:
            d: Deferred[None] = Deferred(cancelled.append)
            try:
                await d
            except BaseException as e:
                seen.append(type(e))
                raise
            return line

        protocol, _ = connect(LineFactory(handler))
        protocol.dataReceived(b"x\n")
        protocol.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(seen, [CancelledError])


class CoalescedRepliesTests(SynchronousTestCase):
    """
    Replies that become ready while other handlers still run leave together.
    """

    def test_readyInOneTurnLeaveInOneWrite(self) -> None:
        """
        Handlers answering in the same turn, out of order, have their
        replies sent in one write, in request order.
        """
        waiting: list[Deferred[bytes]] = []

        def handler(line: bytes) -> Deferred[bytes]:
            waiting.append(Deferred())
            return waiting[-1]

        protocol, transport = connect(LineFactory(handler))
        writes = recordWrites(transport)
        protocol.dataReceived(b"a\nb\nc\n")
        waiting[1].callback(b"B")
        waiting[0].callback(b"A")
        self.assertEqual(writes, [])
        waiting[2].callback(b"C")
        self.assertEqual(writes, [b"A\nB\nC\n"])

    def test_readyHeadLeavesNextTurn(self) -> None:
        """
        A reply at the head of the queue, ready while a later handler still
        runs, goes out on the next turn: it does not wait for the slow one.
        """
        waiting: list[Deferred[bytes]] = []

        def handler(line: bytes) -> Deferred[bytes]:
            waiting.append(Deferred())
            return waiting[-1]

        protocol, transport = connect(LineFactory(handler))
        clock = cast(Clock, protocol.factory.clock)
        protocol.dataReceived(b"a\nslow\n")
        waiting[0].callback(b"A")
        self.assertEqual(transport.value(), b"")
        clock.advance(0)
        self.assertEqual(transport.value(), b"A\n")
        waiting[1].callback(b"S")
        self.assertEqual(transport.value(), b"A\nS\n")
        self.assertEqual(clock.getDelayedCalls(), [])


def lengthFrames(*payloads: bytes) -> bytes:
    """
    C{payloads} framed as C{length:4} frames.
    """
    return b"".join(len(p).to_bytes(4, "big") + p for p in payloads)


def modbusRequest(transaction: int, function: int = 3) -> bytes:
    """
    A MODBUS TCP read-holding-registers request ADU (unit 1, 2 registers
    from 0), with transaction id C{transaction}.
    """
    pdu = bytes((function, 0, 0, 0, 2))
    return (
        transaction.to_bytes(2, "big")
        + b"\x00\x00"
        + (1 + len(pdu)).to_bytes(2, "big")
        + b"\x01"
        + pdu
    )


class BinaryFramingTests(SynchronousTestCase):
    """
    L{LineFactory} with a binary framing: payloads in, payloads framed out;
    what cannot be answered in the framing closes the connection after the
    replies before it.
    """

    def test_payloadsInFramedRepliesOut(self) -> None:
        """
        The handler gets each frame's payload, however the bytes are cut,
        and its replies are framed the same way, in one write per read.
        """
        protocol, transport = connect(LineFactory(bytes.upper, framing="length:4"))
        writes = recordWrites(transport)
        data = lengthFrames(b"ab", b"", b"cd\n")
        protocol.dataReceived(data[:3])
        protocol.dataReceived(data[3:])
        self.assertEqual(writes, [lengthFrames(b"AB", b"", b"CD\n")])
        self.assertEqual(protocol.linesHandled, 3)
        self.assertIn("3 messages", protocol.summary())

    def test_badFrameAfterRepliesThenClose(self) -> None:
        """
        A frame over C{max} gets the replies to the frames before it, a log
        line naming the peer and the reason, and a lingering close; the
        bytes after it are not handled, and nothing over C{max} is held.
        """
        logs = LogCapture(self)
        seen: list[bytes] = []

        def handler(payload: bytes) -> bytes:
            seen.append(payload)
            return payload

        protocol, transport = connect(LineFactory(handler, framing="length:2:max=10"))
        protocol.dataReceived(b"\x00\x02ok\x00\x20" + b"x" * 5)
        self.assertEqual(transport.value(), b"\x00\x02ok")
        self.assertEqual(seen, [b"ok"])
        self.assertTrue(protocol.lingering)
        self.assertEqual(protocol.heldBytes, 0)
        protocol.dataReceived(lengthFrames(b"more"))
        self.assertEqual(seen, [b"ok"])
        [warning] = [e for e in logs.events if "Bad" in e.get("log_format", "")]
        self.assertEqual(warning["peer"], "192.0.2.7:4321")
        self.assertIn("max 10", warning["reason"])
        self.assertEqual(protocol.factory.stats.badFrames, 1)

    def test_handlerFailureClosesAfterEarlierReplies(self) -> None:
        """
        A handler that raises, in a binary framing, gets no reply: the
        replies before it go, those after it never do (a client matching
        replies in order would take them for the wrong request), and the
        connection closes.
        """
        logs = LogCapture(self)

        def handler(payload: bytes) -> bytes:
            if payload == b"bad":
                raise ValueError(payload)
            return payload

        protocol, transport = connect(LineFactory(handler, framing="netstring"))
        protocol.dataReceived(b"2:ok,3:bad,5:after,")
        self.assertEqual(transport.value(), b"2:ok,")
        self.assertTrue(protocol.lingering)
        self.assertEqual(len(logs.failures()), 1)
        self.flushLoggedErrors(ValueError)

    def test_laterFailureCancelsTheRest(self) -> None:
        """
        A Deferred that fails, in a binary framing, lets the replies before
        it go and cancels the handlers after it; then the connection closes.
        """
        waiting: list[Deferred[bytes]] = []
        cancelled: list[Deferred[bytes]] = []

        def handler(payload: bytes) -> Deferred[bytes]:
            waiting.append(Deferred(cancelled.append))
            return waiting[-1]

        protocol, transport = connect(LineFactory(handler, framing="stx-etx"))
        protocol.dataReceived(b"\x02a\x03\x02b\x03\x02c\x03")
        waiting[0].callback(b"A")
        waiting[1].errback(Failure(ValueError("b")))
        self.assertEqual(transport.value(), b"\x02A\x03")
        self.assertEqual(cancelled, [waiting[2]])
        self.assertTrue(protocol.lingering)
        self.flushLoggedErrors(ValueError)

    def test_unframableReplyCloses(self) -> None:
        """
        A reply the framing cannot carry (one holding the delimiter) is
        logged and closes the connection after the replies before it.
        """
        logs = LogCapture(self)
        protocol, transport = connect(
            LineFactory(
                lambda p: p + b"\x00" if p == b"b" else p, framing="delimiter:00"
            )
        )
        protocol.dataReceived(b"a\x00b\x00c\x00")
        self.assertEqual(transport.value(), b"a\x00")
        self.assertTrue(protocol.lingering)
        self.assertTrue(any("delimiter" in str(e.get("reason")) for e in logs.events))

    def test_halfCloseInsideAFrame(self) -> None:
        """
        A half-close in the middle of a binary frame answers every whole
        frame, logs the cut frame, and closes.
        """
        logs = LogCapture(self)
        protocol, transport = connect(LineFactory(framing="length:4"))
        protocol.dataReceived(lengthFrames(b"whole") + b"\x00\x00\x00\x09cut")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), lengthFrames(b"whole"))
        self.assertTrue(transport.writeDisconnected or transport.disconnecting)
        self.assertTrue(
            any("inside a frame" in str(e.get("reason")) for e in logs.events)
        )

    def test_discardedBytesSummarized(self) -> None:
        """
        Bytes that STX/ETX framing discards between frames are counted in
        the connection's summary.
        """
        protocol, transport = connect(LineFactory(framing="stx-etx"))
        protocol.dataReceived(b"junk\x02a\x03x")
        self.assertEqual(transport.value(), b"\x02a\x03")
        self.assertIn("1 message, 5 bytes between frames", protocol.summary())

    def test_halfCloseEndsADelimitedFrame(self) -> None:
        """
        A half-close ends the last frame of a delimiter framing, which is
        answered before the close.
        """
        protocol, transport = connect(LineFactory(framing="delimiter:0d"))
        protocol.dataReceived(b"one\rtwo")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"one\rtwo\r")

    def test_idleTimeoutClosesWithoutText(self) -> None:
        """
        An idle timeout in a binary framing closes without an C{ERROR} line.
        """
        protocol, transport = connect(LineFactory(framing="fixed:4", idleTimeout=1))
        clock = cast(Clock, protocol.factory.clock)
        protocol.dataReceived(b"abcd")
        clock.pump([0.25] * 8)
        self.assertEqual(transport.value(), b"abcd")
        self.assertTrue(protocol.lingering)

    def test_refusalClosesWithoutText(self) -> None:
        """
        A connection over a limit, in a binary framing, is closed without an
        C{ERROR} line.
        """
        factory = LineFactory(framing="length:4", maxConnections=1)
        connect(factory)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2))
        transport = HalfCloseableStringTransport()
        protocol.makeConnection(transport)
        self.assertTrue(protocol.refused)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.writeDisconnected or transport.disconnecting)

    def test_lineSpecKeepsLines(self) -> None:
        """
        C{framing="line:max=N"} is line framing with that limit and the
        C{ERROR line too long} reply.
        """
        protocol, transport = connect(LineFactory(framing="line:max=4"))
        protocol.dataReceived(b"ok\ntoolong\n")
        self.assertEqual(
            transport.value(), b"ok\nERROR line too long (limit 4 bytes)\n"
        )

    def test_badSpecRefused(self) -> None:
        """
        A bad framing specification is a C{ValueError} naming it.
        """
        error = self.assertRaises(ValueError, LineFactory, framing="length:5")
        self.assertIn("length:5", str(error))


class ModbusTests(SynchronousTestCase):
    """
    L{LineFactory} with C{framing="modbus"}: whole ADUs both ways, and the
    exception responses of a MODBUS server for handlers that fail.
    """

    def test_adusInAndOut(self) -> None:
        """
        The handler gets whole ADUs and its whole-ADU replies go back as
        they are.
        """
        protocol, transport = connect(LineFactory(framing="modbus"))
        request = modbusRequest(7)
        protocol.dataReceived(request + modbusRequest(8)[:5])
        self.assertEqual(transport.value(), request)

    def test_failingHandlerAnsweredWithException04(self) -> None:
        """
        A handler that raises is answered with exception code 0x04 (server
        device failure) for that request's transaction, and the connection
        stays open for the next request.
        """

        def handler(adu: bytes) -> bytes:
            if adu[:2] == b"\x00\x01":
                raise ValueError("no such register")
            return adu

        protocol, transport = connect(LineFactory(handler, framing="modbus"))
        protocol.dataReceived(modbusRequest(1) + modbusRequest(2))
        self.assertEqual(
            transport.value(),
            b"\x00\x01\x00\x00\x00\x03\x01\x83\x04" + modbusRequest(2),
        )
        self.assertFalse(protocol.closing)
        self.flushLoggedErrors(ValueError)

    def test_invalidReplyAnsweredWithException04(self) -> None:
        """
        A reply that is no consistent ADU is logged and answered with
        exception code 0x04.
        """
        protocol, transport = connect(
            LineFactory(lambda adu: b"junk", framing="modbus")
        )
        protocol.dataReceived(modbusRequest(5))
        self.assertEqual(transport.value(), b"\x00\x05\x00\x00\x00\x03\x01\x83\x04")

    def test_wrongTransactionIdAnsweredWithException04(self) -> None:
        """
        A reply whose transaction id is not its request's (a client would
        match it to another request) is logged and answered with exception
        code 0x04 under the request's own id.
        """
        logs = LogCapture(self)
        protocol, transport = connect(
            LineFactory(lambda adu: modbusRequest(99), framing="modbus")
        )
        protocol.dataReceived(modbusRequest(5))
        self.assertEqual(transport.value(), b"\x00\x05\x00\x00\x00\x03\x01\x83\x04")
        self.assertTrue(
            any("transaction id" in str(e.get("reason")) for e in logs.events)
        )

    def test_timedOutAnsweredWithException0B(self) -> None:
        """
        A handler that times out is answered with exception code 0x0B
        (gateway target device failed to respond) and cancelled.
        """
        cancelled: list[Deferred[bytes]] = []
        factory = LineFactory(
            lambda adu: Deferred(cancelled.append), framing="modbus", handlerTimeout=1
        )
        protocol, transport = connect(factory)
        clock = cast(Clock, factory.clock)
        protocol.dataReceived(modbusRequest(9))
        clock.advance(1)
        self.assertEqual(transport.value(), b"\x00\x09\x00\x00\x00\x03\x01\x83\x0b")
        self.assertEqual(len(cancelled), 1)

    def test_wrongProtocolIdCloses(self) -> None:
        """
        An ADU whose protocol id is not 0 is bad input: the requests before
        it are answered, then the connection closes.
        """
        protocol, transport = connect(LineFactory(framing="modbus"))
        bad = bytearray(modbusRequest(2))
        bad[3] = 1
        protocol.dataReceived(modbusRequest(1) + bytes(bad))
        self.assertEqual(transport.value(), modbusRequest(1))
        self.assertTrue(protocol.lingering)


class ReplyQueueLifetimeTests(SynchronousTestCase):
    """
    A connection holds a reply queue only while something waits.
    """

    def test_queueGoesOnceDrained(self) -> None:
        """
        Once every reply that waited has been sent, the connection holds no
        reply queue.
        """
        waiting: list[Deferred[bytes]] = []

        def handler(line: bytes) -> Deferred[bytes]:
            waiting.append(Deferred())
            return waiting[-1]

        protocol, transport = connect(LineFactory(handler))
        protocol.dataReceived(b"a\nb\n")
        extra = protocol._extra
        assert extra is not None
        self.assertIsNotNone(extra.queue)
        waiting[0].callback(b"A")
        waiting[1].callback(b"B")
        self.assertEqual(transport.value(), b"A\nB\n")
        self.assertIsNone(extra.queue)


class AnswerLinesTests(SynchronousTestCase):
    """
    A subclass overriding C{answerLines} gets every read, fast path or not.
    """

    def test_overrideAloneIsCalled(self) -> None:
        """
        A subclass that overrides C{answerLines} but not C{lineReceived}
        answers a connection's first, flag-free read with it.
        """
        seen: list[list[bytes]] = []

        class Batched(LineProtocol):
            def answerLines(
                self, lines: list[bytes], handle: Callable[[bytes], HandlerResult]
            ) -> list[object]:
                seen.append(list(lines))
                return [line.upper() for line in lines]

        factory = LineFactory()
        factory.protocol = Batched
        protocol, transport = connect(factory)
        protocol.dataReceived(b"a\nb\n")
        self.assertEqual(seen, [[b"a", b"b"]])
        self.assertEqual(transport.value(), b"A\nB\n")
