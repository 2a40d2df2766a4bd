"""
Tests for the idle timeout and the handler timeout: in memory with a fake
clock, and over real sockets (including a slow-loris client).
"""

from __future__ import annotations

import socket
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm.client import exchange
from tcpcomm.connection import IDLE_SWEEPS, LINGER_SECONDS
from tcpcomm.echo import EchoFactory
from tcpcomm.line import HANDLER_TIMEOUT, LineFactory
from tcpcomm.testing import startServer
from tests.test_limits import connectFrom


def elapse(clock: Clock, seconds: float) -> None:
    """
    Let C{seconds} pass on C{clock} in steps of 1/8 s, as a running reactor
    does: a timer scheduled while C{Clock.advance} runs counts from the end
    of the advance, so one big step would run the repeating idle sweep only
    once.  (Eighths add up exactly in floating point.)
    """
    whole, part = divmod(seconds, 0.125)
    clock.pump([0.125] * int(whole) + ([part] if part else []))


def clockOf(factory: LineFactory | EchoFactory) -> Clock:
    """
    The fake clock L{connectFrom} gave C{factory}.
    """
    clock = factory.clock
    assert isinstance(clock, Clock)
    return clock


TIMEOUT = 10.0
"""
The idle timeout of the in-memory tests.
"""

LATEST = TIMEOUT + TIMEOUT / IDLE_SWEEPS
"""
The latest a connection idle for L{TIMEOUT} is timed out, after its last
activity: the sweeps that find idle connections come every
C{TIMEOUT / IDLE_SWEEPS} seconds.
"""


class IdleTimeoutTests(SynchronousTestCase):
    """
    The idle timeout, with a fake clock: a connection idle for the timeout T
    is timed out after T (never before) and by T + T/4.
    """

    def test_idleLineClientTold(self) -> None:
        """
        A line client idle for the timeout gets C{ERROR idle timeout}, then a
        lingering close; it is counted.
        """
        factory = LineFactory(idleTimeout=TIMEOUT)
        transport = connectFrom(factory)
        elapse(clockOf(factory), TIMEOUT)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(factory.stats.idleTimeouts, 0)
        elapse(clockOf(factory), LATEST - TIMEOUT)
        self.assertEqual(transport.value(), b"ERROR idle timeout\n")
        self.assertTrue(transport.writeDisconnected)
        self.assertEqual(factory.stats.idleTimeouts, 1)

    def test_linesAndRepliesAreActivity(self) -> None:
        """
        Each complete line, and each reply, puts the timeout off.
        """
        factory = LineFactory(
            lambda line: None if line == b"quiet" else line, idleTimeout=TIMEOUT
        )
        transport = connectFrom(factory)
        protocol = transport.protocol
        clock = clockOf(factory)
        for line in (b"loud\n", b"quiet\n"):
            elapse(clock, TIMEOUT - 2)
            protocol.dataReceived(line)
        elapse(clock, TIMEOUT)
        self.assertNotIn(b"ERROR", transport.value())
        elapse(clock, LATEST - TIMEOUT)
        self.assertTrue(transport.value().endswith(b"ERROR idle timeout\n"))

    def test_tricklingWithoutLineEndIsIdle(self) -> None:
        """
        Bytes that never complete a line (a slow-loris client) do not put
        the timeout off.
        """
        factory = LineFactory(idleTimeout=TIMEOUT)
        transport = connectFrom(factory)
        clock = clockOf(factory)
        for _ in range(int(LATEST * 2)):
            elapse(clock, 0.5)
            transport.protocol.dataReceived(b"x")
        self.assertEqual(transport.value(), b"ERROR idle timeout\n")

    def test_waitingForHandlerIsNotIdle(self) -> None:
        """
        A client waiting for a slow handler is not idle; once the reply is
        sent, the idle clock starts again.
        """
        d: Deferred[bytes] = Deferred()
        factory = LineFactory(lambda line: d, idleTimeout=TIMEOUT)
        transport = connectFrom(factory)
        clock = clockOf(factory)
        transport.protocol.dataReceived(b"slow\n")
        elapse(clock, TIMEOUT * 3)
        self.assertEqual(transport.value(), b"")
        d.callback(b"done")
        elapse(clock, TIMEOUT)
        self.assertEqual(transport.value(), b"done\n")
        elapse(clock, LATEST - TIMEOUT)
        self.assertEqual(transport.value(), b"done\nERROR idle timeout\n")

    def test_noProgressAfterTimeoutAborts(self) -> None:
        """
        A connection that stays stuck after being told (say its peer reads
        nothing) is aborted: nothing hangs on a paused producer.
        """
        factory = LineFactory(idleTimeout=TIMEOUT)
        transport = connectFrom(factory)
        transport.protocol.pauseProducing()
        clock = clockOf(factory)
        elapse(clock, LATEST)
        self.assertEqual(factory.stats.idleTimeouts, 1)
        self.assertFalse(transport.disconnected)
        elapse(clock, LINGER_SECONDS)
        self.assertTrue(transport.disconnected)

    def test_closeWhenFlushedBackstop(self) -> None:
        """
        A half-closed client that never reads its replies is aborted once a
        whole idle timeout passes without progress.
        """
        factory = LineFactory(idleTimeout=TIMEOUT)
        transport = connectFrom(factory)
        protocol = transport.protocol
        protocol.dataReceived(b"reply waits\n")
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        elapse(clockOf(factory), TIMEOUT)
        self.assertFalse(transport.disconnected)
        elapse(clockOf(factory), LATEST - TIMEOUT)
        self.assertTrue(transport.disconnected)

    def test_echoIdleCloses(self) -> None:
        """
        Echo mode: an idle client is closed without a word.
        """
        factory = EchoFactory(idleTimeout=TIMEOUT)
        transport = connectFrom(factory)
        elapse(clockOf(factory), TIMEOUT)
        self.assertFalse(transport.writeDisconnected)
        elapse(clockOf(factory), LATEST - TIMEOUT)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.writeDisconnected)

    def test_disabled(self) -> None:
        """
        Without an idle timeout (C{None} or 0) no timer is kept.
        """
        for timeout in (None, 0):
            factory = LineFactory(idleTimeout=timeout)
            transport = connectFrom(factory)
            self.assertEqual(clockOf(factory).getDelayedCalls(), [])
            self.assertFalse(transport.writeDisconnected)

    def test_lostConnectionStopsTimer(self) -> None:
        """
        A closed connection leaves no timer behind.
        """
        from twisted.python.failure import Failure

        factory = LineFactory(idleTimeout=5)
        transport = connectFrom(factory)
        transport.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(clockOf(factory).getDelayedCalls(), [])


class IdleSweeperTests(SynchronousTestCase):
    """
    The factory's idle sweeper: one timer for all of a factory's
    connections.
    """

    def test_oneTimerForManyConnections(self) -> None:
        """
        10,000 open connections with an idle timeout cost one timer.
        """
        factory = EchoFactory(idleTimeout=TIMEOUT)
        for _ in range(10_000):
            connectFrom(factory)
        self.assertEqual(len(factory.connections), 10_000)
        self.assertEqual(len(clockOf(factory).getDelayedCalls()), 1)

    def test_timedOutWithinPrecisionWhateverThePhase(self) -> None:
        """
        Connections whose last activity falls anywhere between two sweeps
        are all timed out after the timeout and by a quarter of it more.
        """
        factory = EchoFactory(idleTimeout=TIMEOUT)
        clock = Clock()
        factory.clock = clock
        step = TIMEOUT / IDLE_SWEEPS / 5
        transports = []
        for _ in range(10):
            transports.append(connectFrom(factory))
            elapse(clock, step)
        # The last activity of connection i was at i * step.
        closedAt: dict[int, float] = {}
        while len(closedAt) < len(transports) and clock.seconds() < 100:
            elapse(clock, step / 2)
            for index, transport in enumerate(transports):
                if transport.writeDisconnected and index not in closedAt:
                    closedAt[index] = clock.seconds()
        for index, closed in closedAt.items():
            idle = closed - index * step
            self.assertGreater(idle, TIMEOUT)
            self.assertLessEqual(idle, LATEST + step / 2)
        self.assertEqual(len(closedAt), len(transports))

    def test_activeConnectionNotTimedOut(self) -> None:
        """
        A connection active every half timeout is never timed out, while an
        idle one beside it is.
        """
        factory = EchoFactory(idleTimeout=TIMEOUT)
        active = connectFrom(factory)
        idle = connectFrom(factory)
        clock = clockOf(factory)
        for _ in range(20):
            elapse(clock, TIMEOUT / 2)
            active.protocol.dataReceived(b"ping")
        self.assertFalse(active.writeDisconnected)
        self.assertTrue(idle.writeDisconnected)
        self.assertEqual(factory.stats.idleTimeouts, 1)

    def test_stopsWithLastConnectionAndRestarts(self) -> None:
        """
        The sweeper stops when the last connection closes and starts again
        with the next one, which is then timed out as usual.
        """
        from twisted.python.failure import Failure

        factory = LineFactory(idleTimeout=TIMEOUT)
        first = connectFrom(factory)
        clock = clockOf(factory)
        elapse(clock, TIMEOUT / 3)
        first.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(clock.getDelayedCalls(), [])
        second = connectFrom(factory)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        elapse(clock, LATEST)
        self.assertEqual(second.value(), b"ERROR idle timeout\n")

    def test_refusedConnectionsNotSwept(self) -> None:
        """
        A refused connection is not watched for idleness (its lingering close
        has a backstop of its own) and starts no sweeper.
        """
        factory = LineFactory(idleTimeout=TIMEOUT, maxConnections=1)
        factory.clock = Clock()
        factory.limits.admit("203.0.113.1")
        refused = connectFrom(factory)
        self.assertEqual(refused.value(), b"ERROR too many connections\n")
        self.assertEqual(
            [call.getTime() for call in clockOf(factory).getDelayedCalls()],
            [LINGER_SECONDS],
        )


class HandlerTimeoutTests(SynchronousTestCase):
    """
    The handler timeout, with a fake clock.
    """

    def test_slowHandlerAnsweredInPlace(self) -> None:
        """
        A handler that does not finish in time gets C{ERROR handler timed
        out} in its reply's place, is cancelled, and later replies follow.
        """
        cancelled: list[Deferred[bytes]] = []
        hanging: Deferred[bytes] = Deferred(cancelled.append)

        def handler(line: bytes) -> bytes | Deferred[bytes]:
            return hanging if line == b"hang" else line

        factory = LineFactory(handler, handlerTimeout=3)
        transport = connectFrom(factory)
        transport.protocol.dataReceived(b"hang\nnext\n")
        self.assertEqual(transport.value(), b"")
        clockOf(factory).advance(3)
        self.assertEqual(transport.value(), HANDLER_TIMEOUT + b"\nnext\n")
        self.assertEqual(cancelled, [hanging])
        self.assertEqual(factory.stats.handlerTimeouts, 1)
        self.assertFalse(transport.writeDisconnected)

    def test_uncancellableLateResultIgnored(self) -> None:
        """
        A handler result that arrives after its timeout is dropped.
        """
        late: Deferred[bytes] = Deferred()
        factory = LineFactory(lambda line: late, handlerTimeout=1)
        transport = connectFrom(factory)
        transport.protocol.dataReceived(b"x\n")
        clockOf(factory).advance(1)
        late.callback(b"too late")
        self.assertEqual(transport.value(), HANDLER_TIMEOUT + b"\n")

    def test_fastHandlerLeavesNoTimer(self) -> None:
        """
        A handler that finishes in time leaves no timer behind.
        """
        d: Deferred[bytes] = Deferred()
        factory = LineFactory(lambda line: d, handlerTimeout=1)
        transport = connectFrom(factory)
        transport.protocol.dataReceived(b"x\n")
        d.callback(b"quick")
        self.assertEqual(clockOf(factory).getDelayedCalls(), [])
        self.assertEqual(transport.value(), b"quick\n")


def trickle(port: int, interval: float, limit: float) -> bytes:
    """
    A slow-loris client: send one byte every C{interval} seconds, never a
    line end, until the server closes (or C{limit} seconds pass); return
    what the server sent.
    """
    received = b""
    deadline = time.monotonic() + limit
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        s.settimeout(interval)
        while time.monotonic() < deadline:
            try:
                s.sendall(b"x")
            except OSError:
                break
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            received += data
    return received


class TimeoutsOverSocketsTests(TestCase):
    """
    Timeouts over real sockets on 127.0.0.1.
    """

    async def test_idleClientClosed(self) -> None:
        """
        A client that sends nothing gets C{ERROR idle timeout} and the close.
        """
        server = startServer(self, LineFactory(idleTimeout=0.3))
        reply = await exchange(reactor, server.endpoint(), b"", timeout=10)
        self.assertEqual(reply, b"")
        # exchange half-closes at once; a client that stays open is told.
        received = await deferToThread(trickle, server.port, 5.0, 10.0)
        self.assertEqual(received, b"ERROR idle timeout\n")

    async def test_slowLorisClosed(self) -> None:
        """
        A client trickling a byte every 0.1 s without ever ending its line
        is closed after the idle timeout, with the reason.
        """
        factory = LineFactory(idleTimeout=0.5)
        server = startServer(self, factory)
        received = await deferToThread(trickle, server.port, 0.1, 10.0)
        self.assertEqual(received, b"ERROR idle timeout\n")
        self.assertEqual(factory.stats.idleTimeouts, 1)

    async def test_handlerTimeout(self) -> None:
        """
        A hanging handler costs its client one C{ERROR handler timed out};
        the other lines on the connection are answered.
        """

        def handler(line: bytes) -> bytes | Deferred[bytes]:
            return Deferred() if line == b"hang" else line

        server = startServer(self, LineFactory(handler, handlerTimeout=0.2))
        reply = await exchange(reactor, server.endpoint(), b"a\nhang\nb\n", timeout=10)
        self.assertEqual(reply, b"a\n" + HANDLER_TIMEOUT + b"\nb\n")
