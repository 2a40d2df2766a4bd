"""
Tests for L{tcpcomm.echo}, over real sockets on 127.0.0.1: Twisted's
in-memory transports model neither half-close nor flow control.
"""

from __future__ import annotations

import hashlib
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tcpcomm.client import exchange
from tcpcomm.connection import ConnectionProtocol, IFlowControlledTransport
from tcpcomm.echo import EchoFactory
from tcpcomm.testing import startServer
from tests.test_line import waitUntil

MiB = 1024 * 1024


def serverBuffered(protocol: ConnectionProtocol) -> int:
    """
    Bytes the server holds in its transport's write buffer for C{protocol}.

    This reads Twisted's private buffer attributes (C{tcp.Connection} via
    C{abstract.FileDescriptor}); if Twisted renames them this helper fails
    loudly rather than passing.
    """
    transport = protocol.transport
    buffered: int = (
        len(transport.dataBuffer)  # type: ignore[attr-defined]
        - transport.offset  # type: ignore[attr-defined]
        + transport._tempDataLen  # type: ignore[attr-defined]
    )
    return buffered


@implementer(IHalfCloseableProtocol)
class StubbornClient(Protocol):
    """
    Send everything at once and do not read until told to; then read all,
    half-closing once sent.
    """

    transport: IFlowControlledTransport

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.transport.write(self.data)

    def startReading(self) -> None:
        self.transport.resumeProducing()
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(b"".join(self.received))


class EchoServerTests(TestCase):
    """
    L{EchoFactory} serving real TCP clients.
    """

    async def test_eightMiBWithHalfClose(self) -> None:
        """
        A client that sends 8 MiB and half-closes gets exactly those 8 MiB
        back, and then the server closes.
        """
        server = startServer(self, EchoFactory())
        data = os.urandom(8 * MiB)
        reply = await exchange(reactor, server.endpoint(), data)
        self.assertEqual(len(reply), len(data))
        self.assertEqual(hashlib.sha256(reply).digest(), hashlib.sha256(data).digest())

    async def test_binarySafe(self) -> None:
        """
        Every byte value, NUL, CR and LF included, comes back unchanged.
        """
        server = startServer(self, EchoFactory())
        data = bytes(range(256)) * 4
        self.assertEqual(await exchange(reactor, server.endpoint(), data), data)

    async def test_emptyExchange(self) -> None:
        """
        A client that half-closes at once gets nothing back and a clean close.
        """
        server = startServer(self, EchoFactory())
        self.assertEqual(await exchange(reactor, server.endpoint(), b""), b"")

    async def test_nonReadingClientBoundsServerBuffer(self) -> None:
        """
        A client that sends 48 MiB without reading makes the server pause
        reading with well under 1 MiB buffered; once it reads, every byte
        comes back intact.
        """
        factory = EchoFactory()
        server = startServer(self, factory)
        data = os.urandom(48 * MiB)
        client = StubbornClient(data)
        await connectProtocol(server.endpoint(), client)
        await waitUntil(lambda: len(factory.connections) == 1)
        [protocol] = factory.connections

        # Wait until the server stops reading: bytesIn steady for 0.3 s.
        last = -1
        for _ in range(200):
            await waitUntil(lambda: protocol.readingPaused)
            if protocol.bytesIn == last:
                break
            last = protocol.bytesIn
            await deferLater(reactor, 0.3)
        self.assertTrue(protocol.readingPaused)
        self.assertLess(protocol.bytesIn, len(data))
        self.assertLess(serverBuffered(protocol), 1 * MiB)

        client.startReading()
        reply = await client.done
        self.assertEqual(len(reply), len(data))
        self.assertEqual(hashlib.sha256(reply).digest(), hashlib.sha256(data).digest())
        self.assertEqual(factory.stats.bytesIn, len(data))
        self.assertEqual(factory.stats.bytesOut, len(data))
