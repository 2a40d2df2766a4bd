"""
Tests for L{tcpcomm.transport}: TCP connections that send at once when
nothing is buffered, over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import socket
from typing import Any

from twisted.internet import reactor as globalReactor
from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.python.runtime import platform
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm.transport import (
    WriteThroughPort,
    WriteThroughServer,
    adoptStreamPort,
    listenTCP,
    writeThroughReactor,
)

TIMEOUT = 10.0
reactor: Any = globalReactor

INSTANCE_DEFAULTS = (
    "dataBuffer",
    "disconnecting",
    "_writeDisconnecting",
    "_aborting",
    "TLS",
    "producer",
    "producerPaused",
    "streamingProducer",
    "bufferSize",
)
"""
The class attributes of Twisted's TCP transport that L{WriteThroughServer}
keeps in slots of each connection.
"""


def bounded(d: Deferred[Any]) -> Deferred[Any]:
    """
    Fail C{d} if it has not fired in L{TIMEOUT} seconds.
    """
    return d.addTimeout(TIMEOUT, reactor)


async def readToEnd(client: socket.socket) -> bytes:
    """
    Read what C{client} (a plain socket) receives until the server closes,
    letting the reactor run meanwhile; fail after L{TIMEOUT} seconds.
    """
    client.setblocking(False)
    received = b""
    for _ in range(int(TIMEOUT / 0.01)):
        try:
            chunk = client.recv(65536)
        except BlockingIOError:
            await deferLater(reactor, 0.01)
            continue
        if not chunk:
            return received
        received += chunk
    raise TimeoutError(f"no end of stream after {TIMEOUT} s; got {received!r}")


class Collector(Protocol):
    """
    A client that sends C{toSend}, half-closes if asked, and collects every
    byte until the server closes.
    """

    def __init__(self, toSend: bytes = b"", halfClose: bool = False) -> None:
        self.toSend = toSend
        self.halfClose = halfClose
        self.received: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        if self.toSend:
            self.transport.write(self.toSend)  # type: ignore[union-attr]
        if self.halfClose:
            self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(b"".join(self.received))


class ServerSide(Protocol):
    """
    A server protocol that hands itself to the test when connected.
    """

    made: Deferred[ServerSide]

    def connectionMade(self) -> None:
        self.factory.made.callback(self)


class Replier(Protocol):
    """
    Answer each read with one write, and note whether the transport then
    waits for writability (that is, buffered the reply).
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[union-attr]
        self.factory.watching.append(self.transport in reactor.getWriters())
        self.transport.loseConnection()  # type: ignore[union-attr]


class ListeningMixin:
    """
    Listen on 127.0.0.1 for one test.
    """

    def listen(
        self: Any, factory: Factory[Any], listener: Any = listenTCP
    ) -> tuple[IListeningPort, int]:
        if listener is listenTCP:
            port = listenTCP(reactor, 0, factory, interface="127.0.0.1")
        else:
            port = listener(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port, port.getHost().port

    async def serverAndClient(
        self: Any,
    ) -> tuple[ServerSide, Collector, Deferred[Collector], int]:
        """
        Listen with L{listenTCP}, connect a L{Collector} that sends nothing,
        and wait for the server side.

        @return: The server's protocol, the client, the client's connection
            (fires once connected) and the port number.
        """
        factory = Factory.forProtocol(ServerSide)
        factory.made = Deferred()  # type: ignore[attr-defined]
        _, portNumber = self.listen(factory)
        client = Collector()
        connecting = self.connect(portNumber, client)
        server: ServerSide = await bounded(factory.made)  # type: ignore[attr-defined]
        return server, client, connecting, portNumber

    def connect(self: Any, portNumber: int, client: Collector) -> Deferred[Collector]:
        """
        Connect C{client} to 127.0.0.1:C{portNumber}, starting at once.
        """
        connecting = connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", portNumber), client
        )
        return bounded(connecting).addCallback(lambda _: client)


class WriteThroughTests(ListeningMixin, TestCase):
    """
    L{WriteThroughServer} over real sockets.
    """

    async def assertWatching(self, listener: Any, expected: bool) -> None:
        factory = Factory.forProtocol(Replier)
        factory.watching = []  # type: ignore[attr-defined]
        _, portNumber = self.listen(factory, listener)
        client = await self.connect(portNumber, Collector(b"hello"))
        self.assertEqual(await bounded(client.done), b"HELLO")
        self.assertEqual(factory.watching, [expected])  # type: ignore[attr-defined]

    async def test_replySentAtOnce(self) -> None:
        """
        A write with nothing buffered is sent from C{write} itself: the
        socket is never watched for writability.
        """
        await self.assertWatching(listenTCP, False)

    async def test_stockTransportBuffers(self) -> None:
        """
        The same server on Twisted's own transport buffers the reply and
        watches the socket: what L{test_replySentAtOnce} tells apart.
        """
        await self.assertWatching(reactor.listenTCP, True)

    async def test_orderKeptBehindBufferedBytes(self) -> None:
        """
        Once the kernel's buffer is full, later writes queue behind what is
        buffered, and the client gets every byte in order.
        """
        server, client, connecting, _ = await self.serverAndClient()
        transport = server.transport
        big = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than loopback holds
        transport.write(big)  # type: ignore[union-attr]
        buffered = transport in reactor.getWriters()
        for n in range(100):
            transport.write(b"%d," % n)  # type: ignore[union-attr]
        transport.loseConnection()  # type: ignore[union-attr]
        await connecting
        received = await bounded(client.done)
        self.assertTrue(buffered)
        expected = big + b"".join(b"%d," % n for n in range(100))
        self.assertEqual(len(received), len(expected))
        self.assertEqual(
            hashlib.sha256(received).hexdigest(), hashlib.sha256(expected).hexdigest()
        )

    async def test_pullProducerFinishes(self) -> None:
        """
        A pull producer (C{FileSender}) is resumed to the end: write-through
        stays out of the way while one is registered.
        """
        import io

        payload = bytes(range(251)) * 4096  # about 1 MiB
        server, client, connecting, _ = await self.serverAndClient()
        sent = FileSender().beginFileTransfer(io.BytesIO(payload), server.transport)
        await bounded(sent)
        server.transport.loseConnection()  # type: ignore[union-attr]
        await connecting
        self.assertEqual(await bounded(client.done), payload)

    async def test_resetSurfacesLater(self) -> None:
        """
        A write to a peer that has reset does not raise and does not call
        C{connectionLost} from inside C{write}; the reactor finds the error
        and the connection is lost afterwards.
        """
        lost: Deferred[None] = Deferred()
        reasons: list[Failure] = []

        class Quiet(ServerSide):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                reasons.append(reason)
                lost.callback(None)

        factory = Factory.forProtocol(Quiet)
        factory.made = Deferred()  # type: ignore[attr-defined]
        _, portNumber = self.listen(factory)
        client = socket.create_connection(("127.0.0.1", portNumber), timeout=TIMEOUT)
        server: Quiet = await bounded(factory.made)  # type: ignore[attr-defined]
        server.transport.pauseProducing()  # type: ignore[union-attr]
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        client.close()  # a reset
        await deferLater(reactor, 0.1)
        server.transport.write(b"x" * 1000)  # type: ignore[union-attr]
        server.transport.write(b"y")  # type: ignore[union-attr]
        self.assertFalse(lost.called)
        await bounded(lost)
        self.assertTrue(reasons[0].check(ConnectionLost))

    async def test_writeSequenceSentAtOnce(self) -> None:
        """
        C{writeSequence} of bytes is one write-through send.
        """
        server, client, connecting, _ = await self.serverAndClient()
        server.transport.writeSequence([b"one ", b"two ", b"three"])  # type: ignore[union-attr]
        watching = server.transport in reactor.getWriters()
        server.transport.loseConnection()  # type: ignore[union-attr]
        await connecting
        self.assertEqual(await bounded(client.done), b"one two three")
        self.assertFalse(watching)

    async def test_twistedDefaultsOnTheInstance(self) -> None:
        """
        A connection holds the class defaults of Twisted's transport that
        C{write} and C{doRead} read in slots of its own, with the same
        values.
        """
        server, client, connecting, _ = await self.serverAndClient()
        transport = server.transport
        for name in INSTANCE_DEFAULTS:
            self.assertIn(name, WriteThroughServer.__slots__)
            self.assertEqual(
                (name, getattr(transport, name)), (name, getattr(tcp.Server, name))
            )
        server.transport.loseConnection()  # type: ignore[union-attr]
        await connecting
        self.assertEqual(await bounded(client.done), b"")

    async def test_nothingSentAfterAbort(self) -> None:
        """
        After C{abortConnection}, a write sends nothing, as with Twisted's
        own transport: the client gets none of its bytes.
        """
        server, client, connecting, _ = await self.serverAndClient()
        server.transport.abortConnection()  # type: ignore[union-attr]
        server.transport.write(b"too late")  # type: ignore[union-attr]
        await connecting
        self.assertEqual(await bounded(client.done), b"")

    async def test_lostConnectionWritesNowhere(self) -> None:
        """
        A write on a connection already lost goes nowhere, not even to a
        newer connection given the same file descriptor.
        """
        factory = Factory.forProtocol(ServerSide)
        _, portNumber = self.listen(factory)
        factory.made = Deferred()  # type: ignore[attr-defined]
        first = socket.create_connection(("127.0.0.1", portNumber), timeout=TIMEOUT)
        self.addCleanup(first.close)
        old: ServerSide = await bounded(factory.made)  # type: ignore[attr-defined]
        oldTransport: Any = old.transport
        descriptor = oldTransport._descriptor
        second = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(second.close)
        first.shutdown(socket.SHUT_WR)  # the client ends it: not disconnecting
        while oldTransport.connected:
            await deferLater(reactor, 0.01)
        factory.made = Deferred()  # type: ignore[attr-defined]
        second.connect(("127.0.0.1", portNumber))
        new: ServerSide = await bounded(factory.made)  # type: ignore[attr-defined]
        self.assertEqual(new.transport._descriptor, descriptor)  # type: ignore[union-attr]
        oldTransport.write(b"stale")
        new.transport.write(b"fresh")  # type: ignore[union-attr]
        new.transport.loseConnection()  # type: ignore[union-attr]
        self.assertEqual(await readToEnd(second), b"fresh")

    async def test_logStringsOnDemand(self) -> None:
        """
        The log prefix and repr are Twisted's, made only when asked for (an
        idle connection stores neither), and still work after the
        connection is lost.
        """
        server, client, connecting, portNumber = await self.serverAndClient()
        transport: Any = server.transport
        stored = dict(vars(transport))
        session = transport.sessionno
        self.assertEqual(transport.logPrefix(), f"ServerSide,{session},127.0.0.1")
        self.assertEqual(repr(transport), f"<ServerSide #{session} on {portNumber}>")
        self.assertFalse(
            any(isinstance(v, str) and "ServerSide" in v for v in stored.values())
        )
        transport.loseConnection()
        await connecting
        await bounded(client.done)
        self.assertEqual(repr(transport), f"<- #{session} on {portNumber}>")
        self.assertEqual(transport.logPrefix(), f"ServerSide,{session},127.0.0.1")

    async def test_startTLSStillEncrypts(self) -> None:
        """
        After C{startTLS}, writes go through TLS, not straight to the socket.
        """
        try:
            from tcpcomm.certificates import makeCertificateAuthority
        except ImportError:  # pragma: no cover - the test extra has it
            self.skipTest("needs the tls extra")
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        authority = makeCertificateAuthority()
        issued = authority.issue(["localhost"])

        class StartTLSServer(Protocol):
            started = False

            def dataReceived(self, data: bytes) -> None:
                if not self.started:
                    self.started = True
                    self.transport.write(b"OK")  # type: ignore[union-attr]
                    self.transport.startTLS(issued.serverOptions())  # type: ignore[union-attr]
                    return
                self.transport.write(data.upper())  # type: ignore[union-attr]

        class StartTLSClient(Collector):
            started = False

            def connectionMade(self) -> None:
                self.transport.write(b"STARTTLS")  # type: ignore[union-attr]

            def dataReceived(self, data: bytes) -> None:
                if not self.started:
                    self.started = True
                    self.received.append(data)
                    self.transport.startTLS(  # type: ignore[union-attr]
                        optionsForClientTLS(
                            "localhost",
                            Certificate.loadPEM(authority.certificatePEM),
                        )
                    )
                    self.transport.write(b"secret")  # type: ignore[union-attr]
                    return
                self.received.append(data)
                if b"".join(self.received) == b"OKSECRET":
                    self.transport.loseConnection()  # type: ignore[union-attr]

        _, portNumber = self.listen(Factory.forProtocol(StartTLSServer))
        client = await self.connect(portNumber, StartTLSClient())
        self.assertEqual(await bounded(client.done), b"OKSECRET")


class ListeningTests(ListeningMixin, TestCase):
    """
    The ways to get write-through connections.
    """

    async def test_serverFromStringThroughWrapper(self) -> None:
        """
        Endpoints built on L{writeThroughReactor} listen with
        L{WriteThroughPort}; everything else is the real reactor's.
        """
        wrapped = writeThroughReactor(reactor)
        self.assertIs(writeThroughReactor(wrapped), wrapped)
        self.assertEqual(wrapped.seconds.__self__, reactor.seconds.__self__)
        endpoint = serverFromString(wrapped, "tcp:0:interface=127.0.0.1")
        port = await endpoint.listen(Factory.forProtocol(Replier))
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, WriteThroughPort)

    async def test_adoptStreamPort(self) -> None:
        """
        An inherited TCP listening socket serves write-through connections.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        factory = Factory.forProtocol(ServerSide)
        factory.made = Deferred()  # type: ignore[attr-defined]
        port = adoptStreamPort(reactor, listener.fileno(), socket.AF_INET, factory)
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, WriteThroughPort)
        client = Collector()
        connecting = self.connect(listener.getsockname()[1], client)
        server: ServerSide = await bounded(factory.made)  # type: ignore[attr-defined]
        self.assertIsInstance(server.transport, WriteThroughServer)
        server.transport.write(b"adopted")  # type: ignore[union-attr]
        server.transport.loseConnection()  # type: ignore[union-attr]
        await connecting
        self.assertEqual(await bounded(client.done), b"adopted")


class FallbackTests(SynchronousTestCase):
    """
    Reactors without file descriptors get their own ports.
    """

    def test_listenTCPOnOtherReactors(self) -> None:
        """
        On a reactor that is not file-descriptor based, L{listenTCP} is the
        reactor's own C{listenTCP}, with the same arguments.
        """
        memory = MemoryReactor()
        factory = Factory.forProtocol(Protocol)
        listenTCP(memory, 1234, factory, backlog=7, interface="::1")
        self.assertEqual(memory.tcpServers, [(1234, factory, 7, "::1")])

    def test_twistedTransportOnWindows(self) -> None:
        """
        On Windows, where a socket is not a file descriptor, even a POSIX
        reactor (select) gets Twisted's own ports, listening and adopted.
        """
        self.patch(platform, "isWindows", lambda: True)
        port = listenTCP(
            reactor, 0, Factory.forProtocol(Protocol), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.assertIs(type(port), tcp.Port)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        adopted = adoptStreamPort(
            reactor, listener.fileno(), socket.AF_INET, Factory.forProtocol(Protocol)
        )
        self.addCleanup(adopted.stopListening)
        self.assertIs(type(adopted), tcp.Port)


class TwistedInternalsTests(SynchronousTestCase):
    """
    Pin the parts of Twisted's transport that write-through reads; if one
    changes, this fails loudly instead of write-through misbehaving.
    """

    def test_bufferAttributes(self) -> None:
        """
        A fresh connection has an empty C{dataBuffer}, zero C{_tempDataLen},
        no producer, and the flags write-through checks.
        """
        descriptor = FileDescriptor()
        self.assertEqual(descriptor.dataBuffer, b"")
        self.assertEqual(descriptor._tempDataLen, 0)
        self.assertIsNone(descriptor.producer)
        self.assertFalse(descriptor.producerPaused)
        self.assertFalse(descriptor.streamingProducer)
        self.assertFalse(descriptor._writeDisconnecting)
        self.assertFalse(descriptor.disconnecting)
        self.assertFalse(tcp.Server.TLS)
        self.assertFalse(tcp.Server._aborting)
        self.assertEqual(tcp.Server.bufferSize, 65536)

    def test_portTransportHook(self) -> None:
        """
        C{tcp.Port} builds its connections from its C{transport} attribute,
        and can adopt a listening descriptor.
        """
        self.assertIs(tcp.Port.transport, tcp.Server)
        self.assertIs(WriteThroughPort.transport, WriteThroughServer)
        self.assertTrue(callable(tcp.Port._fromListeningDescriptor))
