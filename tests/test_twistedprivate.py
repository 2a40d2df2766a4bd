"""
Tests for L{tcpcomm.twistedprivate}: the private names of Twisted's that
tcpcomm relies on still behave as it expects.
"""

from __future__ import annotations

import socket
from typing import Any, ClassVar

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tcpcomm.transport import WriteThroughPort
from tcpcomm.twistedprivate import replaceProtocol, wrapOptionHandlers


class _Example(usage.Options):
    optFlags: ClassVar[list[list[Any]]] = [["verbose", "v", "Say more."]]
    optParameters: ClassVar[list[list[Any]]] = [
        ["count", "c", 1, "How many.", int],
    ]

    def opt_name(self, value: str) -> None:
        self["name"] = value


class WrapOptionHandlersTests(SynchronousTestCase):
    """
    L{wrapOptionHandlers} sees every option given, whatever its kind.
    """

    def test_everyKindSeen(self) -> None:
        """
        Flags, coerced parameters and C{opt_} methods, given long, short or
        abbreviated, each reach the wrapper under their own name, and are
        still handled as before.
        """
        options = _Example()
        seen: list[str] = []

        def wrap(name: str, handler: Any) -> Any:
            if isinstance(handler, usage.CoerceParameter):

                class RecordedParameter(usage.CoerceParameter):
                    def dispatch(self, parameterName: str, value: str) -> None:
                        seen.append(name)
                        super().dispatch(parameterName, value)

                return RecordedParameter(options, handler.coerce)

            def recorded(*args: Any) -> None:
                seen.append(name)
                handler(*args)

            return recorded

        wrapOptionHandlers(options, wrap)
        options.parseOptions(["-v", "--cou=3", "--name", "x"])
        self.assertEqual(
            (options["verbose"], options["count"], options["name"]), (1, 3, "x")
        )
        self.assertEqual(seen, ["verbose", "count", "name"])


@implementer(IHalfCloseableProtocol)
class _Recorder(Protocol):
    """
    Record what a transport delivers, half-close included.
    """

    def __init__(self) -> None:
        self.received = b""
        self.events: list[str] = []
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.events.append("readConnectionLost")
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.events.append("writeConnectionLost")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.events.append("connectionLost")
        self.lost.callback(None)


class _Handing(Protocol):
    """
    Hand the connection to C{successor} as soon as it is made.
    """

    def __init__(self, successor: Protocol) -> None:
        self.successor = successor
        self.handed = False

    def connectionMade(self) -> None:
        self.handed = replaceProtocol(self.transport, self, self.successor)
        self.successor.makeConnection(self.transport)

    def dataReceived(self, data: bytes) -> None:
        raise AssertionError("delivered to the old protocol")


class ReplaceProtocolTests(TestCase):
    """
    L{replaceProtocol} makes Twisted's socket transports deliver to another
    protocol.
    """

    async def test_tcpServerDeliversToNewProtocol(self) -> None:
        """
        A TCP server connection (Twisted's and tcpcomm's write-through one)
        delivers data, the peer's half-close and the close to the protocol
        it was handed to.
        """
        for port in (tcp.Port, WriteThroughPort):
            recorder = _Recorder()
            handing = _Handing(recorder)
            factory = Factory.forProtocol(lambda: handing)  # noqa: B023
            listening = port(0, factory, 50, "127.0.0.1", reactor)
            listening.startListening()
            self.addCleanup(listening.stopListening)
            with socket.create_connection(
                ("127.0.0.1", listening.getHost().port), timeout=5
            ) as client:
                client.sendall(b"hello")
                client.shutdown(socket.SHUT_WR)
                await recorder.lost
            self.assertTrue(handing.handed)
            self.assertEqual(recorder.received, b"hello")
            self.assertEqual(recorder.events, ["readConnectionLost", "connectionLost"])

    def test_otherTransportsRefused(self) -> None:
        """
        A transport that does not deliver through C{protocol} is left alone.
        """
        transport = StringTransport()
        self.assertFalse(replaceProtocol(transport, Protocol(), Protocol()))
        self.assertFalse(hasattr(transport, "protocol"))
