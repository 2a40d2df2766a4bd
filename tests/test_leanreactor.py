"""
Tests for L{tcpcomm.leanreactor}: Twisted's epoll reactor without a logging
context per event, run as its own reactor (not trial's) over real sockets on
127.0.0.1, and chosen by C{twistd tcpcomm}.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

from twisted.application.reactors import getReactorTypes
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer

from tcpcomm.transport import listenTCP
from tests.test_plugin import (
    Child,
    freePort,
    temporaryDirectory,
    twistdCommand,
    waitUntilAccepting,
)

TIMEOUT = 10.0


def runLean(testCase: SynchronousTestCase, start: Callable[[Any], None]) -> None:
    """
    Run a fresh L{LeanEPollReactor}: call C{start(reactor)}, and run until
    something stops it or L{TIMEOUT} passes (which fails the test).
    """
    if not hasattr(select, "epoll"):
        raise SkipTest("epoll is Linux only")
    from tcpcomm.leanreactor import LeanEPollReactor

    reactor = LeanEPollReactor()
    timedOut: list[bool] = []

    def timeout() -> None:
        timedOut.append(True)
        reactor.stop()

    reactor.callLater(TIMEOUT, timeout)
    reactor.callWhenRunning(start, reactor)
    reactor.run(installSignalHandlers=False)
    for selectable in reactor.removeAll():
        selectable.connectionLost(Failure(connectionDone.value))
    reactor._poller.close()
    if timedOut:
        testCase.fail(f"the lean reactor ran for {TIMEOUT} s without finishing")


@implementer(IHalfCloseableProtocol)
class HalfCloseEcho(Protocol):
    """
    Echo, and when the client half-closes, say so and close.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.transport.write(b"<end>")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


class Sender(Protocol):
    """
    Send C{payload} and half-close; collect the reply; stop the reactor
    when the server closes.
    """

    def __init__(self, reactor: Any, payload: bytes) -> None:
        self.reactor = reactor
        self.payload = payload
        self.received: list[bytes] = []
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]
        self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.reactor.stop()


class LeanReactorTests(SynchronousTestCase):
    """
    L{LeanEPollReactor} serves connections as Twisted's epoll reactor does.
    """

    def converse(self, server: Factory[Any], payload: bytes) -> Sender:
        """
        Serve C{server} and send C{payload} to it from a client on the same
        lean reactor.
        """
        clients: list[Sender] = []

        def start(reactor: Any) -> None:
            port = listenTCP(reactor, 0, server, interface="127.0.0.1")
            client = Sender(reactor, payload)
            clients.append(client)
            factory = ClientFactory.forProtocol(lambda: client)
            portNumber: int = port.getHost().port  # type: ignore[attr-defined]
            reactor.connectTCP("127.0.0.1", portNumber, factory)

        runLean(self, start)
        return clients[0]

    def test_echoWithHalfClose(self) -> None:
        """
        4 MiB echoed with a half-close come back whole, followed by what the
        server wrote after the client's FIN: reads, writes and half-close
        all work.
        """
        payload = bytes(range(256)) * 16384
        client = self.converse(Factory.forProtocol(HalfCloseEcho), payload)
        self.assertEqual(b"".join(client.received), payload + b"<end>")

    def test_readErrorLoggedAndDisconnects(self) -> None:
        """
        An exception from C{dataReceived} is logged and loses that
        connection, as in Twisted's reactor.
        """

        class Broken(Protocol):
            def dataReceived(self, data: bytes) -> None:
                raise RuntimeError("broken handler")

        client = self.converse(Factory.forProtocol(Broken), b"hello")
        self.assertEqual(client.received, [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ReactorPluginTests(SynchronousTestCase):
    """
    The reactor is a Twisted reactor plugin, and twistd tcpcomm picks it.
    """

    def test_pluginListed(self) -> None:
        """
        C{twistd --reactor tcpcomm} names L{tcpcomm.leanreactor}.
        """
        found = {r.shortName: getattr(r, "moduleName", None) for r in getReactorTypes()}
        self.assertEqual(found.get("tcpcomm"), "tcpcomm.leanreactor")

    def reactorClassOf(self, before: list[str]) -> str:
        """
        Start twistd with C{before} ahead of C{tcpcomm}, and return the
        reactor class it logs.
        """
        cwd = temporaryDirectory(self)
        port = freePort()
        child = Child(
            self,
            [
                *twistdCommand(),
                "-n",
                "--pidfile=",
                *before,
                "tcpcomm",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd,
        )
        self.assertTrue(waitUntilAccepting(child, port))
        child.terminate()
        for line in child.output().splitlines():
            if "reactor class:" in line:
                return line.split("reactor class:")[1].strip().rstrip(".")
        self.fail(f"no reactor class logged:\n{child.output()}")

    def test_twistdTcpcommInstallsLean(self) -> None:
        """
        C{twistd tcpcomm} runs on the lean reactor when none is chosen.
        """
        if not hasattr(select, "epoll"):
            raise SkipTest("epoll is Linux only")
        self.assertEqual(
            self.reactorClassOf([]), "tcpcomm.leanreactor.LeanEPollReactor"
        )

    def test_chosenReactorKept(self) -> None:
        """
        A reactor chosen with C{twistd --reactor} is the one that runs.
        """
        self.assertEqual(
            self.reactorClassOf(["--reactor", "poll"]),
            "twisted.internet.pollreactor.PollReactor",
        )
