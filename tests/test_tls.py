"""
Tests for TLS: L{tcpcomm.certificates}, tcpcomm's servers behind Twisted's
TLS (C{startServer} with L{TLSMemoryBIOFactory}, the C{ssl:} endpoint, and
C{twistd tcpcomm --port ssl:…}), certificate verification on the client
side, tcpcomm's own client over C{tls:}, and half-close over TLS.

Clients that must control exactly how they end (C{close_notify}, a bare TCP
FIN, both) are blocking L{ssl} clients over memory BIOs, run in a thread
(L{deferToThread}) so the server keeps running in the test's reactor; every
socket operation they make is bounded by L{IO_TIMEOUT}.

Twisted's own TLS layer drops half-close (see L{tcpcomm.tls}); the
half-close tests pin that tcpcomm's does not: a client's C{close_notify} or
FIN ends its input as a FIN does over TCP, and every pending reply is sent.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.application.service import IService, MultiService
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    clientFromString,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm import tap
from tcpcomm.certificates import (
    CertificateAuthority,
    ServerFiles,
    escapeDescription,
    makeCertificateAuthority,
    writeServerFiles,
)
from tcpcomm.client import ConnectionFailed, exchange
from tcpcomm.connection import ConnectionFactory
from tcpcomm.endpoints import TLS_INSTALL_HINT
from tcpcomm.line import LineFactory
from tcpcomm.lineclient import LineClient
from tcpcomm.testing import startServer
from tcpcomm.tls import keepHalfClose
from tests.test_cli import ERROR_PREFIX, runCli

T = TypeVar("T")

IO_TIMEOUT = 10.0
"""
Seconds any one wait may take: a blocking socket operation, a Deferred.
"""

HOSTNAMES = ("localhost", "127.0.0.1", "::1")


def bounded(d: Deferred[T]) -> Deferred[T]:
    """
    Fail C{d} with a timeout if it has not fired after L{IO_TIMEOUT}.
    """
    return d.addTimeout(IO_TIMEOUT, cast(IReactorTime, reactor))


def portNumber(port: IListeningPort) -> int:
    """
    The TCP port number C{port} listens on.
    """
    address = port.getHost()
    assert isinstance(address, (IPv4Address, IPv6Address))
    return address.port


def laterUpper(line: bytes) -> Deferred[bytes]:
    """
    A line handler that answers in a later reactor turn, in upper case.
    Loaded by C{twistd tcpcomm --handler tests.test_tls:laterUpper}.
    """
    return deferLater(cast(IReactorTime, reactor), 0, line.upper)


def validityOf(
    certificate: x509.Certificate,
) -> tuple[datetime.datetime, datetime.datetime]:
    """
    When C{certificate} starts and stops being valid, as aware datetimes
    (C{not_valid_before_utc} is new in cryptography 42; 41 has the naive
    C{not_valid_before}).
    """
    if hasattr(certificate, "not_valid_before_utc"):
        return certificate.not_valid_before_utc, certificate.not_valid_after_utc
    utc = datetime.timezone.utc
    return (
        certificate.not_valid_before.replace(tzinfo=utc),
        certificate.not_valid_after.replace(tzinfo=utc),
    )


def assertCryptographyOptions(testCase: SynchronousTestCase, options: Any) -> None:
    """
    Assert that TLS C{options} hold the certificate and key as
    C{cryptography} objects, and that making their context warns of nothing
    (pyOpenSSL deprecates its own X509 and PKey there).
    """
    testCase.assertIsInstance(options.certificate, x509.Certificate)
    testCase.assertIsInstance(options.privateKey, ec.EllipticCurvePrivateKey)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options.getContext()
    testCase.assertEqual([str(w.message) for w in caught], [])


# A TLS client that ends the way it is told.


@dataclass(frozen=True)
class Ending:
    """
    What a L{converse} client received and how the server ended.

    @ivar received: Every application byte received.
    @ivar how: C{"close_notify"} (the server closed TLS properly),
        C{"eof"} (TCP closed without C{close_notify}), C{"reset"},
        C{"timeout"}, or C{"error: …"} for another TLS error.
    """

    received: bytes
    how: str


def converse(
    port: int,
    authorityPEM: bytes,
    data: bytes,
    *,
    closeNotify: bool,
    fin: bool,
    waitFor: bytes = b"",
    serverName: str = "localhost",
) -> Ending:
    """
    Blocking: connect to 127.0.0.1:C{port} over TLS, trusting
    C{authorityPEM} and checking for C{serverName}; send C{data} (in one TCP
    segment with the C{close_notify}, if any); read until C{waitFor} has
    arrived; end with a C{close_notify}, a TCP FIN (C{shutdown(SHUT_WR)})
    or both; then read until the server closes.
    """
    context = ssl.create_default_context(cadata=authorityPEM.decode("ascii"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=serverName)
    received: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:

        def fill() -> None:
            chunk = sock.recv(65536)
            if chunk:
                incoming.write(chunk)
            else:
                incoming.write_eof()

        def read() -> str | None:
            """
            Read what has arrived; say how the server ended, if it has.
            """
            try:
                chunk = tls.read(65536)
            except ssl.SSLWantReadError:
                try:
                    fill()
                except TimeoutError:
                    return "timeout"
                except ConnectionResetError:
                    return "reset"
                return None
            except ssl.SSLZeroReturnError:
                return "close_notify"
            except ssl.SSLEOFError:
                return "eof"
            except ssl.SSLError as e:
                return f"error: {e}"
            if not chunk:
                # SSLObject.read gives b"" for a close_notify it has not
                # answered yet.
                return "close_notify"
            received.append(chunk)
            return None

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                fill()
        sock.sendall(outgoing.read())
        tls.write(data)
        while len(b"".join(received)) < len(waitFor):
            sock.sendall(outgoing.read())
            ended = read()
            if ended is not None:
                return Ending(b"".join(received), ended)
        if closeNotify:
            try:
                tls.unwrap()
            except ssl.SSLWantReadError:
                pass
        sock.sendall(outgoing.read())
        if fin:
            sock.shutdown(socket.SHUT_WR)
        while True:
            ended = read()
            if ended is not None:
                return Ending(b"".join(received), ended)


def converseLater(
    port: int, authorityPEM: bytes, data: bytes, **kw: Any
) -> Deferred[Ending]:
    """
    L{converse} in a thread, so the reactor keeps serving.
    """
    return bounded(deferToThread(converse, port, authorityPEM, data, **kw))


# Servers.


class ClosingLineClient(LineClient):
    """
    A L{LineClient} that says when its connection is gone, and why.

    @ivar closed: Fires when the connection is lost.
    @ivar reason: Why it was lost, once it is.
    """

    reason: Failure | None = None

    def __init__(self) -> None:
        super().__init__()
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        super().connectionLost(reason)
        self.closed.callback(None)

    async def close(self) -> None:
        """
        Close (over TLS: send C{close_notify}) and wait until the connection
        is gone.
        """
        if not self.lost:
            self.transport.loseConnection()
        await bounded(self.closed)


async def connectLineClient(description: str) -> ClosingLineClient:
    """
    Connect a L{ClosingLineClient} to a client endpoint description.
    """
    client = ClosingLineClient()
    await bounded(connectProtocol(clientFromString(reactor, description), client))
    return client


def temporaryDirectory(testCase: SynchronousTestCase) -> str:
    """
    A fresh, empty directory outside the checkout, removed at clean-up
    (C{TestCase.mktemp} makes one under the current directory, which under
    pytest is the checkout).
    """
    path = tempfile.mkdtemp(prefix="tcpcomm-test-")
    testCase.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def serverFiles(
    testCase: SynchronousTestCase,
    hostnames: Sequence[str] = HOSTNAMES,
    authority: CertificateAuthority | None = None,
) -> tuple[CertificateAuthority, ServerFiles]:
    """
    A certificate authority (new unless given) and server files for
    C{hostnames} in a fresh directory of C{testCase}.
    """
    if authority is None:
        authority = makeCertificateAuthority()
    return authority, writeServerFiles(
        os.path.join(temporaryDirectory(testCase), "server"), authority, hostnames
    )


@dataclass(frozen=True)
class TwistdServer:
    """
    A running C{twistd tcpcomm} service.

    @ivar port: The port number it listens on.
    @ivar factory: Its factory.
    @ivar service: The service.
    """

    port: int
    factory: ConnectionFactory
    service: IService

    def stop(self) -> Deferred[None] | None:
        """
        Stop the service, as C{twistd} does on exit, unless it is stopped:
        stop listening and wait for the connections to finish.
        """
        if not self.service.running:
            return None
        return cast("Deferred[None]", self.service.stopService())


async def serveTwistd(
    testCase: SynchronousTestCase, files: ServerFiles, *options: str
) -> TwistdServer:
    """
    Start what C{twistd tcpcomm --port ssl:0:…} starts, on 127.0.0.1, for
    the length of C{testCase}; stop it at clean-up.
    """
    config = tap.Options()
    config.parseOptions(
        ["--port", files.serverDescription(), "--shutdown-timeout", "5", *options]
    )
    service = tap.makeService(config)
    service.privilegedStartService()
    service.startService()
    (listening,) = list(cast(MultiService, service))
    server = TwistdServer(0, cast(Any, service).factory, service)
    testCase.addCleanup(server.stop)
    # StreamServerEndpointService keeps the port it listens on here.
    port: IListeningPort = await bounded(cast(Any, listening)._waitingForPort)
    return TwistdServer(portNumber(port), server.factory, service)


def dropTwistedSSLWarnings(testCase: SynchronousTestCase) -> None:
    """
    At C{testCase}'s clean-up, drop the pyOpenSSL deprecation warnings that
    Twisted's own C{ssl:} endpoint causes (its parser loads the certificate
    and key as pyOpenSSL C{X509} and C{PKey}), for tests that listen on it
    directly; any other warning stays.  tcpcomm's own servers convert them
    (L{tcpcomm.tls.keepHalfClose}) and are not excused.
    """

    def drop() -> None:
        for w in testCase.flushWarnings():
            if not str(w["message"]).startswith("Passing pyOpenSSL"):
                warnings.warn_explicit(
                    w["message"], w["category"], w["filename"], w["lineno"]
                )

    testCase.addCleanup(drop)


async def listenSSL(
    testCase: SynchronousTestCase, files: ServerFiles, factory: ConnectionFactory
) -> int:
    """
    Listen with C{factory} on Twisted's C{ssl:} server endpoint; at
    clean-up stop listening and close its connections.
    """
    dropTwistedSSLWarnings(testCase)
    endpoint = serverFromString(reactor, files.serverDescription())
    port: IListeningPort = await bounded(endpoint.listen(factory))

    async def stop() -> None:
        await maybeDeferred(port.stopListening)
        await bounded(factory.shutDown(5))

    testCase.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return portNumber(port)


# The tests.


class CertificateTests(SynchronousTestCase):
    """
    L{tcpcomm.certificates} makes an authority, server certificates with
    C{subjectAltName}, and the files and descriptions Twisted's endpoints
    read.
    """

    def test_authorityIsSelfSignedCA(self) -> None:
        """
        The authority's certificate is self-signed, named as asked, and may
        sign certificates (C{basicConstraints CA:TRUE}).
        """
        authority = makeCertificateAuthority("my CA")
        certificate = x509.load_pem_x509_certificate(authority.certificatePEM)
        self.assertEqual(certificate.subject, certificate.issuer)
        self.assertEqual(certificate.subject.rfc4514_string(), "CN=my CA")
        constraints = certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        )
        self.assertTrue(constraints.value.ca)
        certificate.verify_directly_issued_by(certificate)

    def test_subjectAltNames(self) -> None:
        """
        Each host name becomes a C{subjectAltName} entry: an IP address
        where it parses as one (IPv4 and IPv6), a DNS name otherwise.
        """
        issued = makeCertificateAuthority().issue(
            ["localhost", "127.0.0.1", "::1", "*.example.com"]
        )
        certificate = x509.load_pem_x509_certificate(issued.certificatePEM)
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(
            names.get_values_for_type(x509.DNSName), ["localhost", "*.example.com"]
        )
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )
        self.assertEqual(
            issued.hostnames, ("localhost", "127.0.0.1", "::1", "*.example.com")
        )

    def test_issuedBySigner(self) -> None:
        """
        A server certificate is signed by its authority, is no authority
        itself, is for server authentication, and has an EC P-256 key.
        """
        authority = makeCertificateAuthority()
        issued = authority.issue(["localhost"])
        certificate = x509.load_pem_x509_certificate(issued.certificatePEM)
        signer = x509.load_pem_x509_certificate(authority.certificatePEM)
        certificate.verify_directly_issued_by(signer)
        self.assertEqual(issued.authorityPEM, authority.certificatePEM)
        constraints = certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        )
        self.assertFalse(constraints.value.ca)
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        self.assertEqual(list(usage.value), [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
        key = certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        self.assertEqual(key.curve.name, "secp256r1")

    def test_shortValidity(self) -> None:
        """
        Certificates are valid from a minute ago for C{validFor} (one day by
        default).
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        authority = makeCertificateAuthority()
        for certificatePEM, validFor in [
            (authority.certificatePEM, datetime.timedelta(days=1)),
            (authority.issue(["localhost"]).certificatePEM, datetime.timedelta(days=1)),
            (
                authority.issue(
                    ["localhost"], validFor=datetime.timedelta(hours=2)
                ).certificatePEM,
                datetime.timedelta(hours=2),
            ),
        ]:
            certificate = x509.load_pem_x509_certificate(certificatePEM)
            start, end = validityOf(certificate)
            self.assertLess(start, now)
            self.assertLess(now, end)
            self.assertEqual(end - start, validFor + datetime.timedelta(minutes=1))

    def test_badArguments(self) -> None:
        """
        No host names, one string instead of a list, or a validity that is
        not positive are refused with C{ValueError}.
        """
        authority = makeCertificateAuthority()
        self.assertRaises(ValueError, authority.issue, [])
        self.assertRaises(ValueError, authority.issue, "localhost")
        self.assertRaises(
            ValueError, authority.issue, ["localhost"], validFor=datetime.timedelta(0)
        )
        self.assertRaises(
            ValueError, makeCertificateAuthority, validFor=datetime.timedelta(-1)
        )

    def test_escapeDescription(self) -> None:
        """
        Backslash, colon and equals sign are escaped with a backslash for
        endpoint descriptions; other characters are left alone.
        """
        self.assertEqual(escapeDescription("/a b/c.pem"), "/a b/c.pem")
        self.assertEqual(escapeDescription("::1"), "\\:\\:1")
        self.assertEqual(escapeDescription("a\\b=c:d"), "a\\\\b\\=c\\:d")

    def test_writeServerFiles(self) -> None:
        """
        C{key.pem} (readable by its owner only), C{cert.pem}, C{ca.pem} and
        C{trust/ca.pem} are written, and C{trust/} holds nothing else.
        """
        authority, files = serverFiles(self)
        self.assertEqual(
            sorted(os.listdir(files.directory)),
            ["ca.pem", "cert.pem", "key.pem", "trust"],
        )
        self.assertEqual(os.listdir(files.trustDirectory), ["ca.pem"])
        with open(files.keyPath, "rb") as f:
            self.assertEqual(f.read(), files.certificate.keyPEM)
        with open(files.certificatePath, "rb") as f:
            self.assertEqual(f.read(), files.certificate.certificatePEM)
        for path in (files.authorityPath, os.path.join(files.trustDirectory, "ca.pem")):
            with open(path, "rb") as f:
                self.assertEqual(f.read(), authority.certificatePEM)
        self.assertEqual(stat.S_IMODE(os.stat(files.keyPath).st_mode), 0o600)

    def test_descriptionsWithAwkwardPaths(self) -> None:
        """
        The server and client descriptions load their files even from a
        directory whose path holds C{:}, C{=} and C{\\}.
        """
        directory = os.path.join(temporaryDirectory(self), "a:b=c\\d")
        files = writeServerFiles(directory, makeCertificateAuthority())
        self.assertIn("\\:", files.serverDescription())
        server = serverFromString(reactor, files.serverDescription())
        self.assertIsInstance(server, SSL4ServerEndpoint)
        clientFromString(reactor, files.clientDescription(8443))

    def test_descriptions(self) -> None:
        """
        The server description names port, interface, key and certificate;
        the client description names host, port and the trust directory,
        and for an IPv6 address the TCP endpoint to reach it.
        """
        _, files = serverFiles(self)
        key, cert = files.keyPath, files.certificatePath
        self.assertEqual(
            files.serverDescription(),
            f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        )
        self.assertEqual(
            files.serverDescription(8443, "::1"),
            f"ssl:8443:interface=\\:\\:1:privateKey={key}:certKey={cert}",
        )
        trust = files.trustDirectory
        self.assertEqual(
            files.clientDescription(8443), f"tls:localhost:8443:trustRoots={trust}"
        )
        self.assertEqual(
            files.clientDescription(8443, "::1"),
            f"tls:\\:\\:1:8443:trustRoots={trust}"
            ":endpoint=tcp\\:host\\=\\\\\\:\\\\\\:1\\:port\\=8443",
        )

    def test_serverOptionsWithoutDeprecatedObjects(self) -> None:
        """
        L{IssuedCertificate.serverOptions} holds the certificate and key as
        C{cryptography} objects, and making its TLS context warns of
        nothing (pyOpenSSL deprecates its own X509 and PKey there).
        """
        options = makeCertificateAuthority().issue(["localhost"]).serverOptions()
        assertCryptographyOptions(self, options)

    def test_importNeedsNoCryptography(self) -> None:
        """
        Without C{cryptography}, C{tcpcomm.certificates} still imports, and
        making an authority raises C{ImportError} saying what to install.
        """
        script = (
            "import sys\n"
            "sys.modules['cryptography'] = None\n"
            "import tcpcomm, tcpcomm.certificates\n"
            "try:\n"
            "    tcpcomm.certificates.makeCertificateAuthority()\n"
            "except ImportError as e:\n"
            "    print(e)\n"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(tap.__file__)))
        completed = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            cwd=root,
            timeout=60,
            check=False,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertIn(TLS_INSTALL_HINT.encode(), completed.stdout)


class TLSServerTests(TestCase):
    """
    tcpcomm's line server behind Twisted's TLS, started the three ways.
    """

    async def test_startServerWithTLSFactory(self) -> None:
        """
        C{startServer} with a L{TLSMemoryBIOFactory} serves TLS, counts the
        open connection, and its C{stop} closes it.
        """
        authority = makeCertificateAuthority()
        issued = authority.issue(HOSTNAMES)
        factory = LineFactory()
        server = startServer(
            self, TLSMemoryBIOFactory(issued.serverOptions(), False, factory)
        )
        client = ClosingLineClient()
        endpoint = wrapClientTLS(
            authority.clientOptions("localhost"), server.endpoint()
        )
        await bounded(connectProtocol(endpoint, client))
        self.assertEqual(await bounded(client.request(b"hello")), b"hello")
        self.assertEqual(server.openConnections, 1)
        self.assertEqual(len(factory.connections), 1)
        await bounded(server.stop())
        await bounded(client.closed)
        self.assertEqual(server.openConnections, 0)
        self.assertEqual(factory.connections, set())

    async def test_sslEndpoint(self) -> None:
        """
        A L{LineFactory} on Twisted's C{ssl:} endpoint (L{ServerFiles}'s
        description) answers a C{tls:} client that trusts its authority.
        """
        _, files = serverFiles(self)
        port = await listenSSL(self, files, LineFactory())
        client = await connectLineClient(files.clientDescription(port))
        self.assertEqual(await bounded(client.request(b"hello")), b"hello")
        await client.close()

    async def test_twistdService(self) -> None:
        """
        C{twistd tcpcomm --port ssl:…} serves its line protocol over TLS.
        """
        _, files = serverFiles(self)
        server = await serveTwistd(self, files)
        client = await connectLineClient(files.clientDescription(server.port))
        self.assertEqual(await bounded(client.request(b"hello")), b"hello")
        self.assertEqual(server.factory.stats.linesHandled, 1)
        await client.close()

    def test_sslPortWithoutDeprecatedObjects(self) -> None:
        """
        The endpoint L{keepHalfClose} makes from an C{ssl:} description
        (what C{twistd tcpcomm --port ssl:…} listens on) holds the
        certificate and key as C{cryptography} objects, and making its TLS
        context warns of nothing.
        """
        _, files = serverFiles(self)
        endpoint = keepHalfClose(serverFromString(reactor, files.serverDescription()))
        options = cast(Any, endpoint)._contextFactory
        assertCryptographyOptions(self, options)

    async def test_ipAddressInCertificate(self) -> None:
        """
        A client that connects to C{127.0.0.1} accepts a certificate whose
        C{subjectAltName} has that IP address.
        """
        _, files = serverFiles(self, ["127.0.0.1"])
        port = await listenSSL(self, files, LineFactory())
        client = await connectLineClient(files.clientDescription(port, "127.0.0.1"))
        self.assertEqual(await bounded(client.request(b"hello")), b"hello")
        await client.close()

    async def test_ipv6(self) -> None:
        """
        Over C{::1}: C{ssl:0:interface=\\:\\:1} serves, and the client
        description for C{::1} connects and accepts the IPv6 address in
        the certificate.
        """
        _, files = serverFiles(self, ["::1"])
        factory = LineFactory()
        dropTwistedSSLWarnings(self)
        endpoint = serverFromString(reactor, files.serverDescription(0, "::1"))
        port: IListeningPort = await bounded(endpoint.listen(factory))
        self.addCleanup(port.stopListening)
        self.addCleanup(factory.shutDown, 5)
        client = await connectLineClient(
            files.clientDescription(portNumber(port), "::1")
        )
        self.assertEqual(await bounded(client.request(b"hello")), b"hello")
        self.assertEqual(client.peer, f"[::1]:{portNumber(port)}")
        await client.close()


class VerificationTests(TestCase):
    """
    A client refuses a server whose certificate is not for the name it
    asked for, or not from an authority it trusts, before any line is sent.
    """

    async def assertRefused(self, files: ServerFiles) -> str:
        """
        Connect a L{LineClient} to a tcpcomm server with C{files}; check
        that its request fails and the server handles no line.

        @return: The failure's message.
        """
        factory = LineFactory()
        port = await listenSSL(self, files, factory)
        client = await connectLineClient(files.clientDescription(port))
        try:
            reply = await bounded(client.request(b"hello"))
        except ConnectionFailed as e:
            message = str(e)
        else:
            self.fail(f"the request succeeded: {reply!r}")
        await bounded(client.closed)
        self.assertEqual(factory.stats.linesHandled, 0)
        return message

    async def test_wrongNameRefused(self) -> None:
        """
        A certificate (from a trusted authority) for another name is
        refused, and the message names the name asked for.
        """
        _, files = serverFiles(self, ["other.example"])
        message = await self.assertRefused(files)
        self.assertIn("localhost", message)

    async def test_untrustedAuthorityRefused(self) -> None:
        """
        A certificate for the right name from an authority the client does
        not trust is refused: C{certificate verify failed}.
        """
        _, files = serverFiles(self)
        _, untrusted = serverFiles(self)
        factory = LineFactory()
        port = await listenSSL(self, untrusted, factory)
        client = await connectLineClient(files.clientDescription(port))
        with self.assertRaises(ConnectionFailed) as caught:
            await bounded(client.request(b"hello"))
        await bounded(client.closed)
        self.assertIn("certificate verify failed", str(caught.exception))
        self.assertEqual(factory.stats.linesHandled, 0)


class ClientsOverTLSTests(TestCase):
    """
    tcpcomm's own clients, L{exchange}, C{tcpcomm send} and
    L{LineClient.finish}, over C{tls:}.

    Today they half-close with C{loseWriteConnection}, which over TLS sends
    a bare TCP FIN (#5341); L{exchange} sends it right after the
    C{ClientHello}, so the handshake never finishes, and every exchange
    fails as "connection reset".
    """

    async def test_exchange(self) -> None:
        """
        C{exchange} over C{tls:} returns the server's whole reply.
        """
        _, files = serverFiles(self)
        server = await serveTwistd(self, files)
        reply = await exchange(
            reactor, files.clientDescription(server.port), b"hello\n", 10
        )
        self.assertEqual(reply, b"hello\n")

    async def test_exchangeWrongNameRefused(self) -> None:
        """
        C{exchange} with a server whose certificate is for another name
        fails with L{ConnectionFailed} and no reply; the server handles no
        line.
        """
        _, files = serverFiles(self, ["other.example"])
        server = await serveTwistd(self, files)
        with self.assertRaises(ConnectionFailed) as caught:
            await exchange(
                reactor, files.clientDescription(server.port), b"hello\n", 10
            )
        self.assertEqual(caught.exception.received, b"")
        self.assertEqual(server.factory.stats.linesHandled, 0)

    async def test_exchangeWrongNameMessage(self) -> None:
        """
        C{exchange}'s failure with a certificate for another name says that
        certificate verification failed and for which name.
        """
        _, files = serverFiles(self, ["other.example"])
        server = await serveTwistd(self, files)
        with self.assertRaises(ConnectionFailed) as caught:
            await exchange(
                reactor, files.clientDescription(server.port), b"hello\n", 10
            )
        message = str(caught.exception)
        self.assertIn("certificate", message)
        self.assertIn("localhost", message)

    async def test_exchangeUntrustedRefused(self) -> None:
        """
        C{exchange} with a server whose authority is not trusted fails with
        L{ConnectionFailed} and no reply.
        """
        _, files = serverFiles(self)
        _, untrusted = serverFiles(self)
        server = await serveTwistd(self, untrusted)
        with self.assertRaises(ConnectionFailed) as caught:
            await exchange(
                reactor, files.clientDescription(server.port), b"hello\n", 10
            )
        self.assertEqual(caught.exception.received, b"")
        self.assertEqual(server.factory.stats.linesHandled, 0)

    async def test_lineClientFinish(self) -> None:
        """
        L{LineClient.finish} right after pipelined requests: every reply
        arrives, and C{finish} fires once the server has closed cleanly.
        """
        _, files = serverFiles(self)
        server = await serveTwistd(self, files)
        client = await connectLineClient(files.clientDescription(server.port))
        replies = [client.request(b"one"), client.request(b"two")]
        await bounded(client.finish())
        self.assertEqual([await reply for reply in replies], [b"one", b"two"])

    async def test_cliSend(self) -> None:
        """
        C{tcpcomm send tls:localhost:PORT:trustRoots=DIR hello} prints the
        reply and exits 0.
        """
        _, files = serverFiles(self)
        server = await serveTwistd(self, files)
        result = await runCli(
            self,
            ["send", "--timeout", "10", files.clientDescription(server.port), "hello"],
        )
        self.assertEqual(
            (result.code, result.stdout), (0, b"hello\n"), result.describe()
        )

    async def test_cliSendWrongName(self) -> None:
        """
        C{tcpcomm send} to a server whose certificate is for another name
        prints nothing, one error line, and exits 1.
        """
        _, files = serverFiles(self, ["other.example"])
        server = await serveTwistd(self, files)
        result = await runCli(
            self,
            ["send", "--timeout", "10", files.clientDescription(server.port), "hello"],
        )
        self.assertEqual((result.code, result.stdout), (1, b""), result.describe())
        (line,) = result.errorLines()
        self.assertTrue(line.startswith(ERROR_PREFIX), line)


class HalfCloseOverTLSTests(TestCase):
    """
    How a tcpcomm server (as C{twistd tcpcomm} runs it) ends a TLS
    connection that the client ends: with C{close_notify} (TLS's own "I am
    done sending"), with a bare TCP FIN, or both.  It never hangs and loses
    no reply.
    """

    async def converseWith(
        self, data: bytes, *options: str, **kw: Any
    ) -> tuple[Ending, ConnectionFactory]:
        """
        Start a tcpcomm TLS server with C{options}; run L{converse} with it.
        """
        authority, files = serverFiles(self)
        server = await serveTwistd(self, files, *options)
        ending = await converseLater(server.port, authority.certificatePEM, data, **kw)
        return ending, server.factory

    async def test_closeNotifyAnswered(self) -> None:
        """
        A client's C{close_notify} is answered with the server's and the
        server closes: the client sees a clean TLS close, not a hang.
        """
        ending, _ = await self.converseWith(b"a\nb\n", closeNotify=True, fin=False)
        self.assertEqual(ending.how, "close_notify")

    async def test_finClosed(self) -> None:
        """
        A bare TCP FIN (no C{close_notify}, what C{shutdown(SHUT_WR)} on a
        TLS socket sends) makes the server close, not hang.
        """
        ending, _ = await self.converseWith(b"a\nb\n", closeNotify=False, fin=True)
        self.assertIn(ending.how, ("eof", "close_notify"))

    async def test_repliesBeforeCloseNotify(self) -> None:
        """
        Replies the client has read before it sends C{close_notify} are
        whole, and the server then closes cleanly.
        """
        ending, factory = await self.converseWith(
            b"a\nb\n", closeNotify=True, fin=True, waitFor=b"a\nb\n"
        )
        self.assertEqual(ending, Ending(b"a\nb\n", "close_notify"))
        self.assertEqual(factory.stats.linesHandled, 2)

    async def test_lineTooLongOverTLS(self) -> None:
        """
        A line over the limit gets its C{ERROR} line over TLS before the
        server closes.
        """
        ending, _ = await self.converseWith(
            b"x" * 100, "--max-line-length", "10", closeNotify=False, fin=False
        )
        self.assertEqual(ending.received, b"ERROR line too long (limit 10 bytes)\n")
        self.assertIn(ending.how, ("eof", "close_notify"))

    async def test_shutdownClosesCleanly(self) -> None:
        """
        Stopping the service (as C{twistd} does on exit) ends a client's
        TLS connection cleanly, with C{close_notify}, not as a lost
        connection.
        """
        _, files = serverFiles(self)
        server = await serveTwistd(self, files)
        client = await connectLineClient(files.clientDescription(server.port))
        self.assertEqual(await bounded(client.request(b"hello")), b"hello")
        stopping = server.stop()
        assert stopping is not None
        await bounded(stopping)
        await bounded(client.closed)
        assert client.reason is not None
        self.assertTrue(client.reason.check(ConnectionDone), client.reason)

    async def test_closeNotifyEndsInput(self) -> None:
        """
        Lines sent with C{close_notify} right after them all get their
        replies, the last unterminated one too, then the server's
        C{close_notify}.
        """
        ending, _ = await self.converseWith(b"a\nb\nlast", closeNotify=True, fin=False)
        self.assertEqual(ending, Ending(b"a\nb\nlast\n", "close_notify"))

    async def test_closeNotifyWaitsForSlowReplies(self) -> None:
        """
        Replies that handlers give in a later reactor turn still go out
        after the client's C{close_notify}, before the server's.
        """
        ending, _ = await self.converseWith(
            b"a\nb\nlast",
            "--handler",
            "tests.test_tls:laterUpper",
            closeNotify=True,
            fin=True,
        )
        self.assertEqual(ending, Ending(b"A\nB\nLAST\n", "close_notify"))

    async def test_finEndsInput(self) -> None:
        """
        A bare TCP FIN ends input as over plain TCP: every reply goes out,
        the last unterminated line's too, then the server closes.
        """
        ending, _ = await self.converseWith(
            b"a\nb\nlast",
            "--handler",
            "tests.test_tls:laterUpper",
            closeNotify=False,
            fin=True,
        )
        self.assertEqual(ending.received, b"A\nB\nLAST\n")


class TwistedInternalsTests(SynchronousTestCase):
    """
    L{tcpcomm.tls} builds on private parts of Twisted's TLS layer; this pins
    them, so that a Twisted release that changes them fails here, loudly,
    rather than in production.
    """

    def test_tlsProtocolInternals(self) -> None:
        """
        The private methods L{HalfCloseTLSProtocol} overrides or calls exist
        on Twisted's TLS transport, and it still parses received data in
        C{_flushReceiveBIO}.
        """
        import inspect

        from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol

        for name in (
            "_flushReceiveBIO",
            "_flushSendBIO",
            "_shutdownTLS",
            "_tlsShutdownFinished",
        ):
            self.assertTrue(callable(getattr(TLSMemoryBIOProtocol, name, None)), name)
        self.assertTrue(issubclass(BufferingTLSTransport, TLSMemoryBIOProtocol))
        source = inspect.getsource(TLSMemoryBIOProtocol._flushReceiveBIO)
        for used in ("_lostTLSConnection", "_tlsConnection.recv", "ZeroReturnError"):
            self.assertIn(used, source)
        for attribute in (
            "_handshakeDone",
            "_lostTLSConnection",
            "_aborted",
            "_producer",
            "_appSendBuffer",
        ):
            self.assertIn(attribute, inspect.getsource(TLSMemoryBIOProtocol))

    def test_sslEndpointInternals(self) -> None:
        """
        L{keepHalfClose} reads what an C{ssl:} endpoint listens with from
        attributes that Twisted's L{SSL4ServerEndpoint} still has.
        """
        from twisted.internet.endpoints import SSL4ServerEndpoint

        endpoint = SSL4ServerEndpoint(
            reactor, 0, object(), backlog=7, interface="127.0.0.1"
        )
        for attribute, value in (
            ("_port", 0),
            ("_backlog", 7),
            ("_interface", "127.0.0.1"),
        ):
            self.assertEqual(getattr(endpoint, attribute), value)
        self.assertIs(endpoint._reactor, reactor)
        self.assertIsNotNone(endpoint._sslContextFactory)
