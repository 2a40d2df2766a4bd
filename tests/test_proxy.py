"""
C{twistd tcpcomm --port haproxy:…} as users run it: behind a real HAProxy
(L{tests.balancer}, the README's C{tests/haproxy.cfg}), and over raw
sockets that send PROXY headers themselves (short first chunks, timeouts,
bad headers, TLS, UNIX sockets, workers).

The clients are blocking sockets with timeouts; clients bound to 127.0.0.2
and 127.0.0.3 stand for different hosts.
"""

from __future__ import annotations

import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Sequence

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.certificates import makeCertificateAuthority, writeServerFiles
from tcpcomm.line import LineFactory
from tcpcomm.proxied import ProxyHeaderFactory
from tcpcomm.proxyheader import ProxyAddress, ProxyHeader, formatProxyHeader
from tcpcomm.tap import makeService
from tests.balancer import startHAProxy
from tests.test_plugin import (
    EXIT_TIMEOUT,
    IO_TIMEOUT,
    Child,
    freePort,
    temporaryDirectory,
    twistdCommand,
    waitUntilAccepting,
)
from tests.test_tap import parse, usageError

MiB = 1024 * 1024


def startProxied(
    testCase: SynchronousTestCase,
    args: Sequence[str] = (),
    kind: str = "tcp",
    parameters: str = "",
    handler: str | None = None,
) -> tuple[Child, int]:
    """
    Run C{twistd -n tcpcomm --port
    haproxy:KIND:PORT:interface=127.0.0.1PARAMETERS} with C{args} on a free
    port until C{testCase} ends; wait until it accepts connections.

    @param handler: The source of C{handler.py}, written where twistd runs
        (C{--handler handler:answer} uses it).
    """
    cwd = temporaryDirectory(testCase)
    if handler is not None:
        (cwd / "handler.py").write_text(handler, encoding="utf-8")
    for _ in range(5):
        port = freePort()
        child = Child(
            testCase,
            [
                *twistdCommand(),
                "-n",
                "--pidfile=",
                "tcpcomm",
                "--port",
                f"haproxy:{kind}:{port}:interface=127.0.0.1{parameters}",
                *args,
            ],
            cwd,
        )
        if waitUntilAccepting(child, port):
            return child, port
        if "already in use" not in child.output():
            testCase.fail(f"twistd exited with {child.wait()}:\n{child.output()}")
    testCase.fail("twistd found no free port in 5 tries")


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """
    A blocking connection to 127.0.0.1:C{port} from the address C{source}.
    """
    return socket.create_connection(
        ("127.0.0.1", port), timeout=IO_TIMEOUT, source_address=(source, 0)
    )


def readToEnd(client: socket.socket) -> bytes:
    """
    Read until the server closes (bounded by the socket's timeout).
    """
    received = []
    while chunk := client.recv(65536):
        received.append(chunk)
    return b"".join(received)


def exchange(client: socket.socket, data: bytes) -> bytes:
    """
    Send C{data} (from another thread, so that large replies cannot stall
    it), half-close, and read every reply until the server closes.
    """

    def send() -> None:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        return readToEnd(client)
    finally:
        sender.join(IO_TIMEOUT)
        client.close()


def header(source: str = "192.0.2.7", port: int = 51000) -> bytes:
    """
    A v1 PROXY header naming C{source}:C{port} as the client.
    """
    return formatProxyHeader(
        ProxyHeader(
            1,
            ProxyAddress("inet", source, port),
            ProxyAddress("inet", "198.51.100.1", 8000),
        )
    )


def waitForOutput(child: Child, pattern: str) -> str:
    """
    Wait (bounded) until C{child}'s output matches C{pattern}; return it.
    """
    deadline = time.monotonic() + IO_TIMEOUT
    while not re.search(pattern, output := child.output()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in:\n{output}")
        time.sleep(0.05)
    return output


LATER_HANDLER = """
from twisted.internet import reactor, task

def answer(line):
    return task.deferLater(reactor, 0.001, lambda: line)
"""
"""
A handler that answers each line a moment later.
"""


class BehindHAProxyTests(SynchronousTestCase):
    """
    tcpcomm behind the real HAProxy, configured as the README shows.
    """

    def behindHAProxy(
        self,
        args: Sequence[str] = (),
        changes: dict[str, str] | None = None,
        handler: str | None = None,
    ) -> tuple[Child, Child, int]:
        """
        Start tcpcomm with C{args} (and C{handler}, see L{startProxied}),
        and HAProxy in front of it.

        @return: twistd, HAProxy and HAProxy's port.
        """
        server, port = startProxied(self, args, handler=handler)
        balancer, frontend = startHAProxy(self, port, changes)
        return server, balancer, frontend

    def assertClientSeen(self, version: str) -> None:
        """
        Through HAProxy sending PROXY headers of C{version}, lines are
        answered and the log names the real client, both when it connects
        and when it disconnects.
        """
        changes = {" send-proxy-v2 check ": f" {version} check "}
        server, _, frontend = self.behindHAProxy(changes=changes)
        client = connect(frontend, "127.0.0.2")
        clientPort = client.getsockname()[1]
        self.assertEqual(exchange(client, b"hello\n"), b"hello\n")
        peer = re.escape(f"127.0.0.2:{clientPort}")
        output = waitForOutput(server, f"{peer} disconnected")
        self.assertRegex(output, f"{peer} connected")
        self.assertNotIn("Traceback", output)

    def test_version1(self) -> None:
        """
        C{send-proxy}: the client is seen (see L{assertClientSeen}).
        """
        self.assertClientSeen("send-proxy")

    def test_version2(self) -> None:
        """
        C{send-proxy-v2}: the client is seen (see L{assertClientSeen}).
        """
        self.assertClientSeen("send-proxy-v2")

    def test_perIPLimitCountsClients(self) -> None:
        """
        C{--max-connections-per-ip 1} counts real clients: a second
        connection from 127.0.0.2 is refused while one is open, one from
        127.0.0.3 is served meanwhile, and 127.0.0.2 is served again once
        its first connection closes.
        """
        server, _, frontend = self.behindHAProxy(["--max-connections-per-ip", "1"])
        first = connect(frontend, "127.0.0.2")
        first.sendall(b"one\n")
        self.assertEqual(first.recv(100), b"one\n")
        self.assertEqual(
            exchange(connect(frontend, "127.0.0.2"), b"two\n"),
            b"ERROR too many connections\n",
        )
        self.assertEqual(
            exchange(connect(frontend, "127.0.0.3"), b"three\n"), b"three\n"
        )
        self.assertEqual(exchange(first, b"four\n"), b"four\n")
        waitForOutput(server, "127.0.0.2:[0-9]+ disconnected: 9 bytes in")
        self.assertEqual(exchange(connect(frontend, "127.0.0.2"), b"five\n"), b"five\n")
        self.assertNotIn("Traceback", server.output())

    def test_halfClose(self) -> None:
        """
        A client that sends every line and then half-closes (as C{nc -N}
        does) through HAProxy gets every reply, even from a handler that
        answers a moment later.
        """
        _, _, frontend = self.behindHAProxy(
            ["--handler", "handler:answer"], handler=LATER_HANDLER
        )
        lines = b"".join(b"line %d\n" % n for n in range(20000))
        self.assertEqual(exchange(connect(frontend), lines), lines)

    def test_echoMegabytes(self) -> None:
        """
        Echo mode through HAProxy: 8 MiB sent and half-closed come back
        whole (flow control and half-close pass through the PROXY layer).
        """
        _, _, frontend = self.behindHAProxy(["--protocol", "echo"])
        data = bytes(range(256)) * (8 * MiB // 256)
        self.assertEqual(exchange(connect(frontend), data), data)

    def test_sigtermWithProxiedConnections(self) -> None:
        """
        SIGTERM with proxied connections open: they are closed, and twistd
        exits within the shutdown timeout.
        """
        server, _, frontend = self.behindHAProxy(["--shutdown-timeout", "2"])
        clients = [connect(frontend, f"127.0.0.{n}") for n in (2, 3)]
        for client in clients:
            client.sendall(b"hi\n")
            self.assertEqual(client.recv(100), b"hi\n")
        started = time.monotonic()
        server.sendTerminate()
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("Shutting down: finishing 2 connections", server.output())
        for client in clients:
            self.assertEqual(readToEnd(client), b"")
            client.close()

    def test_healthChecks(self) -> None:
        """
        HAProxy's health checks (C{check check-send-proxy}, here every
        100 ms) send C{LOCAL} headers: accepted as HAProxy's own
        connections, never a header error, and the server stays up.
        """
        server, balancer, frontend = self.behindHAProxy(
            changes={"inter 2s": "inter 100ms"}
        )
        checked = r"127\.0\.0\.1:[0-9]+ disconnected: 0 bytes in"
        output = waitForOutput(server, f"({checked}(.|\n)*){{3}}")
        self.assertNotIn("PROXY header", output)
        self.assertNotIn("DOWN", balancer.output())
        self.assertEqual(exchange(connect(frontend), b"up\n"), b"up\n")


class RawHeaderTests(SynchronousTestCase):
    """
    Clients that write PROXY headers themselves, as a balancer would (or
    would not).
    """

    def test_shortFirstChunk(self) -> None:
        """
        A header that arrives in pieces, a while apart, is waited for; the
        line after it is answered and the client the header names is
        logged.
        """
        server, port = startProxied(self)
        client = connect(port)
        data = header("192.0.2.9", 4242) + b"after\n"
        for piece in (data[:5], data[5:20], data[20:]):
            client.sendall(piece)
            time.sleep(0.1)
        self.assertEqual(exchange(client, b""), b"after\n")
        waitForOutput(server, re.escape("192.0.2.9:4242 disconnected"))

    def test_headerTimeout(self) -> None:
        """
        A connection that sends no complete header within
        C{--proxy-header-timeout} is closed, with a log line naming it;
        other clients are unaffected.
        """
        server, port = startProxied(self, ["--proxy-header-timeout", "0.5"])
        silent = connect(port)
        silentPort = silent.getsockname()[1]
        silent.sendall(b"PROXY TCP4 ")
        started = time.monotonic()
        self.assertEqual(exchange(connect(port), header() + b"ok\n"), b"ok\n")
        self.assertRaises(ConnectionResetError, readToEnd, silent)
        self.assertLess(time.monotonic() - started, 3)
        waitForOutput(
            server,
            re.escape(
                f"127.0.0.1:{silentPort} no complete PROXY header in 0.5 s; closing"
            ),
        )
        silent.close()

    def test_badHeader(self) -> None:
        """
        A connection that starts with anything but a PROXY header is closed
        with a log line giving the reason; other clients are unaffected.
        """
        server, port = startProxied(self)
        bad = connect(port)
        badPort = bad.getsockname()[1]
        self.assertEqual(exchange(bad, b"hello\n"), b"")
        self.assertEqual(exchange(connect(port), header() + b"ok\n"), b"ok\n")
        waitForOutput(
            server,
            re.escape(f"127.0.0.1:{badPort} bad PROXY header: not a PROXY protocol"),
        )

    def test_chatNamesClients(self) -> None:
        """
        Chat mode names members after the clients the headers name.
        """
        _, port = startProxied(self, ["--protocol", "chat"])
        listener = connect(port)
        listener.sendall(header("192.0.2.1", 1111))
        speaker = connect(port)
        speaker.sendall(header("192.0.2.2", 2222) + b"hi all\n")
        seen = b""
        while b"hi all" not in seen:
            seen += listener.recv(4096)
        self.assertIn(b"192.0.2.2:2222", seen)
        self.assertNotIn(b"127.0.0.1", seen)
        listener.close()
        speaker.close()

    def test_tls(self) -> None:
        """
        C{haproxy:ssl:}: the header comes before the TLS handshake, as
        balancers send it; lines are answered over TLS, half-close
        included, and the client is the header's.
        """
        directory = temporaryDirectory(self)
        files = writeServerFiles(directory, makeCertificateAuthority())
        server, port = startProxied(
            self,
            kind="ssl",
            parameters=f":privateKey={files.keyPath}:certKey={files.certificatePath}",
        )
        context = ssl.create_default_context(cafile=files.authorityPath)
        raw = connect(port)
        raw.sendall(header("192.0.2.5", 5555))
        with context.wrap_socket(raw, server_hostname="localhost") as client:
            client.sendall(b"secret\n")
            self.assertEqual(client.recv(100), b"secret\n")
        waitForOutput(server, re.escape("192.0.2.5:5555 disconnected"))

    def test_unixSocket(self) -> None:
        """
        C{haproxy:unix:}: a UNIX socket port reads the header too.
        """
        directory = temporaryDirectory(self)
        path = directory / "tcpcomm.sock"
        server = Child(
            self,
            [
                *twistdCommand(),
                "-n",
                "--pidfile=",
                "tcpcomm",
                "--port",
                f"haproxy:unix:{path}",
            ],
            directory,
        )
        deadline = time.monotonic() + EXIT_TIMEOUT
        while not path.exists():
            self.assertLess(time.monotonic(), deadline, server.output())
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(IO_TIMEOUT)
            client.connect(str(path))
            client.sendall(header("192.0.2.6", 6666) + b"unix\n")
            client.shutdown(socket.SHUT_WR)
            self.assertEqual(readToEnd(client), b"unix\n")
        waitForOutput(server, re.escape("192.0.2.6:6666 disconnected"))

    def test_workers(self) -> None:
        """
        C{--workers 2} on a C{haproxy:} port: every worker reads headers.
        """
        server, port = startProxied(self, ["--workers", "2"])
        for n in range(6):
            reply = exchange(connect(port), header("192.0.2.8", 8000 + n) + b"w\n")
            self.assertEqual(reply, b"w\n")
        waitForOutput(server, re.escape("192.0.2.8:8005 disconnected"))
        self.assertNotIn("Traceback", server.output())


class ProxyOptionsTests(SynchronousTestCase):
    """
    C{haproxy:} ports and C{--proxy-header-timeout} on the command line.
    """

    def test_normalized(self) -> None:
        """
        The description under C{haproxy:} is normalized as any other port's
        (a backlog for TCP, a mode for UNIX sockets), and the header timeout
        defaults to 3 s.
        """
        options = parse(self, ["-p", "haproxy:tcp:8001", "-p", "HAProxy:unix:/x"])
        self.assertEqual(
            options["ports"],
            ["haproxy:tcp:8001:backlog=1024", "haproxy:unix:/x:mode=660"],
        )
        self.assertEqual(options["proxy-header-timeout"], 3.0)

    def test_badInnerDescription(self) -> None:
        """
        A bad description under C{haproxy:} gets the one-line error it would
        get alone.
        """
        self.assertEqual(
            usageError(self, ["-p", "haproxy:tcp:99999"]),
            "bad endpoint 'haproxy:tcp:99999': port must be a number from 0"
            " to 65535, not '99999'",
        )
        self.assertIn(
            "unknown parameter 'colour'",
            usageError(self, ["-p", "haproxy:tcp:1:colour=red"]),
        )
        self.assertEqual(
            usageError(self, ["-p", "haproxy:"]),
            "--port: haproxy: needs the endpoint to listen on after it",
        )
        self.assertEqual(
            usageError(self, ["-p", "haproxy:haproxy:tcp:1"]),
            "--port: haproxy: is given twice",
        )

    def test_timeoutNeedsProxiedPort(self) -> None:
        """
        C{--proxy-header-timeout} without a C{haproxy:} port is refused, and
        a bad value is refused with the option's name.
        """
        self.assertEqual(
            usageError(self, ["--proxy-header-timeout", "5"]),
            "--proxy-header-timeout applies to haproxy: ports only"
            " (--port haproxy:tcp:8000)",
        )
        self.assertIn(
            "--proxy-header-timeout: expected 0 or seconds",
            usageError(self, ["-p", "haproxy:tcp:1", "--proxy-header-timeout", "x"]),
        )
        options = parse(self, ["-p", "haproxy:tcp:1", "--proxy-header-timeout", "0.5"])
        self.assertEqual(options["proxy-header-timeout"], 0.5)

    def test_serviceListensBehindHeader(self) -> None:
        """
        L{makeService} listens on the port under C{haproxy:} with the served
        factory behind a L{ProxyHeaderFactory} with the timeout asked for.
        """
        memory = MemoryReactor()
        options = parse(
            self, ["-p", "haproxy:tcp:8001", "--proxy-header-timeout", "1.5"]
        )
        service = makeService(options, reactor=memory)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        [(port, factory, backlog, _)] = memory.tcpServers
        self.assertEqual((port, backlog), (8001, 1024))
        assert isinstance(factory, ProxyHeaderFactory)
        served = factory.wrappedFactory
        assert isinstance(served, LineFactory)
        self.assertEqual(factory.headerTimeout, 1.5)
        self.assertIs(factory.stats, served.stats)

    def test_workersShareProxiedPorts(self) -> None:
        """
        C{--workers} accepts C{haproxy:} ports of the kinds it shares.
        """
        options = parse(self, ["-p", "haproxy:tcp:8001", "--workers", "2"])
        self.assertEqual(options["workers"], 2)
