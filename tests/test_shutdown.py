"""
Tests for graceful shutdown: L{ConnectionFactory.shutDown} in memory, and
the real C{twistd tcpcomm} stopped by SIGTERM with a reply in flight.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.connection import LINGER_SECONDS
from tcpcomm.echo import EchoFactory
from tcpcomm.line import LineFactory
from tests.test_limits import connectFrom
from tests.test_line import HalfCloseableStringTransport
from tests.test_plugin import IO_TIMEOUT, Child, startTwistd, temporaryDirectory
from tests.test_timeouts import clockOf


def lose(transport: HalfCloseableStringTransport) -> None:
    """
    Tell the protocol on an in-memory transport that its connection is gone.
    """
    transport.protocol.connectionLost(Failure(ConnectionError()))


class FactoryShutDownTests(SynchronousTestCase):
    """
    L{ConnectionFactory.shutDown}, with a fake clock.
    """

    def test_nothingOpen(self) -> None:
        """
        With no connection open, shutting down is done at once.
        """
        self.assertIsNone(self.successResultOf(LineFactory().shutDown(10)))

    def test_pendingReplyFinishesFirst(self) -> None:
        """
        A connection waiting on a handler reads no more lines, gets its reply,
        and then closes; shutting down is done when it is gone.
        """
        d: Deferred[bytes] = Deferred()
        calls: list[bytes] = []

        def handler(line: bytes) -> Deferred[bytes]:
            calls.append(line)
            return d

        factory = LineFactory(handler)
        transport = connectFrom(factory)
        transport.protocol.dataReceived(b"work\n")
        done = factory.shutDown(10)
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(transport.writeDisconnected)
        d.callback(b"done")
        self.assertEqual(transport.value(), b"done\n")
        self.assertTrue(transport.writeDisconnected)
        self.assertNoResult(done)
        lose(transport)
        self.successResultOf(done)
        self.assertEqual(calls, [b"work"])

    def test_unhandledLinesDropped(self) -> None:
        """
        Lines read but still waiting for room among the pending replies get
        no handler once shutdown begins: the pending replies are sent and
        the connection closes, with no timer left behind.
        """
        waiting: list[Deferred[bytes]] = []

        def handler(line: bytes) -> Deferred[bytes]:
            waiting.append(Deferred())
            return waiting[-1]

        factory = LineFactory(handler, maxPending=2)
        transport = connectFrom(factory)
        transport.protocol.dataReceived(b"1\n2\n3\n4\n5\n")
        self.assertEqual(len(waiting), 2)
        done = factory.shutDown(10)
        waiting[0].callback(b"one")
        waiting[1].callback(b"two")
        self.assertEqual(len(waiting), 2)
        self.assertEqual(transport.value(), b"one\ntwo\n")
        self.assertTrue(transport.writeDisconnected)
        lose(transport)
        self.successResultOf(done)
        clockOf(factory).advance(LINGER_SECONDS)
        self.assertEqual(clockOf(factory).getDelayedCalls(), [])

    def test_idleConnectionsCloseAtOnce(self) -> None:
        """
        Idle connections, line and echo, start closing at once.
        """
        for factory in (LineFactory(), EchoFactory()):
            transport = connectFrom(factory)
            factory.shutDown(10)
            self.assertTrue(transport.writeDisconnected)
            self.assertEqual(transport.value(), b"")

    def test_timeoutAbortsTheRest(self) -> None:
        """
        Connections still open after the shutdown timeout are aborted, and
        the backstop timer is gone once they are.
        """
        factory = LineFactory(lambda line: Deferred())
        transport = connectFrom(factory)
        transport.protocol.dataReceived(b"never answered\n")
        done = factory.shutDown(5)
        clockOf(factory).advance(5)
        self.assertTrue(transport.disconnected)
        lose(transport)
        self.successResultOf(done)
        self.assertEqual(clockOf(factory).getDelayedCalls(), [])


def connect(port: int) -> socket.socket:
    """
    A blocking client socket connected to 127.0.0.1:C{port}.
    """
    return socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)


def readToEnd(client: socket.socket) -> bytes:
    """
    Read until the server closes (bounded by the socket's timeout); a reset
    ends the reading too.
    """
    received = b""
    try:
        while chunk := client.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


SLOW_HANDLER = """\
import os
from twisted.internet import reactor, task

def slow(line):
    open("called", "w").close()
    if line == b"forever":
        return task.Deferred()
    return task.deferLater(reactor, 1.0, lambda: b"done " + line)
"""


PROMPT_HANDLER = """\
from twisted.internet import reactor, task

def prompt(line):
    return task.deferLater(reactor, 0, lambda: line)
"""

FLOOD_CLIENTS = 100
FLOOD_LINES = 2000


class TwistdShutdownTests(SynchronousTestCase):
    """
    The real C{twistd tcpcomm} on SIGTERM.
    """

    def startSlowServer(self, *args: str) -> tuple[Child, int, Path]:
        """
        Start twistd with a handler that takes a second (or forever, for the
        line C{forever}) and marks in its working directory that it was
        called.
        """
        cwd = temporaryDirectory(self)
        (cwd / "slowhandler.py").write_text(SLOW_HANDLER, encoding="utf-8")
        server, port = startTwistd(self, ["--handler", "slowhandler:slow", *args], cwd)
        return server, port, cwd

    def waitForHandler(self, cwd: Path) -> None:
        """
        Wait (bounded) until the handler has been called.
        """
        marker = cwd / "called"
        deadline = time.monotonic() + IO_TIMEOUT
        while not marker.exists():
            self.assertLess(time.monotonic(), deadline, "the handler was never called")
            time.sleep(0.02)

    def test_replyInFlightIsDelivered(self) -> None:
        """
        SIGTERM while a reply is in flight: the reply still arrives, an idle
        client is closed, new clients are refused, and twistd ends an
        orderly shutdown (re-raising SIGTERM).
        """
        server, port, cwd = self.startSlowServer()
        idle = connect(port)
        busy = connect(port)
        busy.sendall(b"work\n")
        self.waitForHandler(cwd)
        started = time.monotonic()
        server.sendTerminate()
        self.assertEqual(readToEnd(busy), b"done work\n")
        self.assertEqual(readToEnd(idle), b"")
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertRaises(ConnectionRefusedError, connect, port)
        output = server.output()
        self.assertIn("Shutting down: finishing 2 connections", output)
        self.assertIn("Server Shut Down.", output)
        self.assertNotIn("Traceback", output)
        self.assertLess(time.monotonic() - started, 10)
        busy.close()
        idle.close()

    def test_shutdownTimeoutAbortsStragglers(self) -> None:
        """
        A handler that never finishes does not hold shutdown past
        C{--shutdown-timeout}: the connection is aborted and twistd ends.
        """
        server, port, cwd = self.startSlowServer("--shutdown-timeout", "0.5")
        client = connect(port)
        client.sendall(b"forever\n")
        self.waitForHandler(cwd)
        server.sendTerminate()
        self.assertEqual(readToEnd(client), b"")
        self.assertEqual(server.wait(), -signal.SIGTERM)
        output = server.output()
        self.assertIn("Shutdown timeout: aborting 1 connections", output)
        self.assertIn("Server Shut Down.", output)
        client.close()

    def test_secondSignalHarmless(self) -> None:
        """
        A second SIGTERM while the server is stopping (as C{timeout} or
        systemd send) is logged and ignored: no C{ReactorNotRunning}
        traceback, and the stop under way ends as the first one asked.
        """
        server, port, cwd = self.startSlowServer("--shutdown-timeout", "1")
        client = connect(port)
        client.sendall(b"forever\n")
        self.waitForHandler(cwd)
        server.sendTerminate()
        deadline = time.monotonic() + IO_TIMEOUT
        while "Shutting down" not in server.output():
            self.assertLess(time.monotonic(), deadline, server.output())
            time.sleep(0.02)
        server.sendTerminate()
        self.assertEqual(readToEnd(client), b"")
        self.assertEqual(server.wait(), -signal.SIGTERM)
        output = server.output()
        self.assertIn("Received SIGTERM while stopping already: ignored", output)
        self.assertNotIn("Traceback", output)
        self.assertIn("Server Shut Down.", output)
        client.close()

    def test_floodDoesNotDelayTimeout(self) -> None:
        """
        With 100 clients pipelining 2,000 lines each to a handler that
        answers a turn later, and reading nothing back, twistd still ends
        within C{--shutdown-timeout} of SIGTERM (1 s here; asserted with a
        margin of 2 s for a loaded machine): the flood neither delays the
        signal nor keeps the shutdown busy past its deadline.
        """
        cwd = temporaryDirectory(self)
        (cwd / "prompthandler.py").write_text(PROMPT_HANDLER, encoding="utf-8")
        server, port = startTwistd(
            self, ["--handler", "prompthandler:prompt", "--shutdown-timeout", "1"], cwd
        )
        payload = b"".join(
            b"line %06d of a pipelined flood\n" % i for i in range(FLOOD_LINES)
        )
        clients = [connect(port) for _ in range(FLOOD_CLIENTS)]
        for client in clients:
            self.addCleanup(client.close)
            client.sendall(payload)
        # Let the server get busy with them.
        time.sleep(0.5)
        started = time.monotonic()
        server.sendTerminate()
        self.assertEqual(server.wait(), -signal.SIGTERM)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 3.0, server.output())
        self.assertIn("Server Shut Down.", server.output())
        self.assertNotIn("Traceback", server.output())
