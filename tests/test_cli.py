"""
Tests for the C{tcpcomm} command (L{tcpcomm.cli}), run as users run it: a
real C{python -m tcpcomm} (or the installed console script) in a subprocess,
talking over loopback to a server in this process.

Servers built with Twisted run in the test's reactor (L{startServer}), so the
command runs through C{reactor.spawnProcess} (L{runCli}) and the reactor
keeps turning while it talks.  Servers that are I{not} tcpcomm's are plain
blocking sockets in a thread, and the command runs with C{subprocess.run}
(L{runCliBlocking}).  Every process is bounded by L{CLI_TIMEOUT}, killed by
its PID when it runs past it or when its test ends first, and reaped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IProcessTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from tcpcomm._version import __version__
from tcpcomm.certificates import ServerFiles, makeCertificateAuthority, writeServerFiles
from tcpcomm.cli import CrlfTranslator
from tcpcomm.echo import EchoFactory
from tcpcomm.line import LineFactory
from tcpcomm.testing import LoopbackServer, startServer
from tcpcomm.tls import keepHalfClose

SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""
The checkout these tests belong to; C{python -m tcpcomm} runs there, so it
runs this checkout's code.
"""

CLI_TIMEOUT = 30.0
"""
Seconds one run of the command may take before it is killed.
"""

IO_TIMEOUT = 10.0
"""
Seconds any one blocking socket operation of a plain server may take.
"""

SHORT_TIMEOUT = "0.5"
"""
The C{--timeout} the timeout tests give the command.
"""

ERROR_PREFIX = "tcpcomm: error: "

MiB = 1024 * 1024


# Running the command.


@dataclass(frozen=True)
class CliResult:
    """
    How one run of the command ended.

    @ivar stdout: Everything it wrote to standard output.
    @ivar stderr: Everything it wrote to standard error.
    @ivar code: Its exit status, or C{None} if a signal ended it.
    @ivar signal: The signal that ended it, or C{None}.
    """

    stdout: bytes
    stderr: bytes
    code: int | None
    signal: int | None = None

    def errorLines(self) -> list[str]:
        """
        Standard error, decoded, as lines.
        """
        return self.stderr.decode("utf-8", "replace").splitlines()

    def describe(self) -> str:
        """
        A summary for assertion messages.
        """
        return (
            f"exit status {self.code}, signal {self.signal}\n"
            f"stdout ({len(self.stdout)} bytes): {self.stdout[:1000]!r}\n"
            f"stderr: {self.stderr[:2000]!r}"
        )


def cliEnvironment() -> dict[str, str]:
    """
    The command's environment: C{PATH}, and a fixed terminal width so that
    help text wraps the same everywhere.  No C{PYTHON*} variable can change
    which code runs.
    """
    return {"PATH": os.environ.get("PATH", os.defpath), "COLUMNS": "80"}


def moduleCommand() -> list[str]:
    """
    The command run as C{python -m tcpcomm} with this Python.
    """
    return [sys.executable, "-m", "tcpcomm"]


def consoleScript() -> str:
    """
    The C{tcpcomm} console script installed next to C{sys.executable}.
    """
    return os.path.join(os.path.dirname(sys.executable), "tcpcomm")


class CliProcess(ProcessProtocol):
    """
    One run of the command under the test's reactor: collects its output
    and fires L{ended} when it has exited and been reaped.

    @ivar ended: Fires with the L{CliResult}, or fails if the process had
        to be killed after L{CLI_TIMEOUT}.
    @ivar running: Whether the process has not ended yet.
    """

    transport: IProcessTransport | None

    def __init__(self, description: str) -> None:
        self.description = description
        self.ended: Deferred[CliResult] = Deferred()
        self.running = True
        self._stdout: list[bytes] = []
        self._stderr: list[bytes] = []
        self._outputWaiters: list[Deferred[None]] = []
        self._reaped: list[Deferred[None]] = []
        self._deadline: IDelayedCall | None = None
        self._timedOut = False
        self._limit = CLI_TIMEOUT

    def startDeadline(self) -> None:
        """
        Kill the process if it is still running after L{CLI_TIMEOUT}.
        """
        self._limit = CLI_TIMEOUT
        self._deadline = reactor.callLater(self._limit, self._overtime)

    def _overtime(self) -> None:
        self._deadline = None
        self._timedOut = True
        self.kill()

    def kill(self) -> None:
        """
        Send SIGKILL to the process by its PID, if it is still running.
        """
        if self.running and self.transport is not None:
            try:
                self.transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass

    def stop(self) -> Deferred[None]:
        """
        Kill the process if it still runs, and fire once it is reaped (or
        fail after L{CLI_TIMEOUT}).  For the test's clean-up.
        """
        if not self.running:
            return succeed(None)
        # Nobody awaits the result any more: its failure is not an error.
        self.ended.addErrback(lambda _: None)
        reaped: Deferred[None] = Deferred()
        self._reaped.append(reaped)
        self.kill()
        return reaped.addTimeout(CLI_TIMEOUT, reactor)

    def write(self, data: bytes) -> None:
        """
        Write C{data} to the process's standard input.
        """
        assert self.transport is not None
        self.transport.write(data)

    def closeStdin(self) -> None:
        """
        Close the process's standard input (after what was written).
        """
        assert self.transport is not None
        self.transport.closeStdin()

    def signal(self, name: str) -> None:
        """
        Send the process the signal C{name} (C{"INT"} for Ctrl-C) by its PID.
        """
        assert self.transport is not None
        self.transport.signalProcess(name)

    def closeStdout(self) -> None:
        """
        Stop reading the process's standard output, closing the pipe's
        reading end, as C{| head} does when it has had enough.
        """
        assert self.transport is not None
        self.transport.closeChildFD(1)

    def someOutput(self) -> Deferred[None]:
        """
        Fire once the process has written something to standard output;
        fail if it ends first.
        """
        if self._stdout:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._outputWaiters.append(d)
        return d

    def outReceived(self, data: bytes) -> None:
        self._stdout.append(data)
        waiters, self._outputWaiters = self._outputWaiters, []
        for d in waiters:
            d.callback(None)

    def errReceived(self, data: bytes) -> None:
        self._stderr.append(data)

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        status: Any = reason.value
        result = CliResult(
            stdout=b"".join(self._stdout),
            stderr=b"".join(self._stderr),
            code=status.exitCode,
            signal=status.signal,
        )
        waiters, self._outputWaiters = self._outputWaiters, []
        for waiter in waiters:
            waiter.errback(
                AssertionError(
                    f"{self.description} ended with no output\n{result.describe()}"
                )
            )
        if self._timedOut:
            self.ended.errback(
                AssertionError(
                    f"{self.description} was still running after"
                    f" {self._limit:g} s and was killed\n{result.describe()}"
                )
            )
        else:
            self.ended.callback(result)
        reaped, self._reaped = self._reaped, []
        for d in reaped:
            d.callback(None)


def startCli(
    testCase: SynchronousTestCase,
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> CliProcess:
    """
    Start the command with C{args} under the global reactor, in the
    checkout, with L{cliEnvironment} (plus C{env}).  It is killed if it runs
    past L{CLI_TIMEOUT}, and at C{testCase}'s clean-up if it still runs.

    @param command: What to run instead of C{python -m tcpcomm}.
    """
    argv = [*(command or moduleCommand()), *args]
    process = CliProcess(f"tcpcomm {' '.join(args)}")
    environment = {**cliEnvironment(), **(env or {})}
    reactor.spawnProcess(process, argv[0], argv, env=environment, path=str(SOURCE_ROOT))
    process.startDeadline()
    testCase.addCleanup(process.stop)
    return process


def runCli(
    testCase: SynchronousTestCase,
    args: Sequence[str],
    stdin: bytes = b"",
    *,
    env: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Deferred[CliResult]:
    """
    Run the command with C{args}, C{stdin} on its standard input (which is
    then closed), without blocking the reactor.

    @return: Fires with how it ended.
    """
    process = startCli(testCase, args, env=env, command=command)
    if stdin:
        process.write(stdin)
    process.closeStdin()
    return process.ended


def runCliBlocking(
    args: Sequence[str],
    stdin: bytes = b"",
    *,
    command: Sequence[str] | None = None,
) -> CliResult:
    """
    Run the command with C{args} and C{stdin} and wait (bounded) for it to
    exit, blocking.  For servers that do not need the reactor.  On timeout
    C{subprocess.run} kills the process by its PID, reaps it, and raises.
    """
    completed = subprocess.run(
        [*(command or moduleCommand()), *args],
        input=stdin,
        capture_output=True,
        cwd=SOURCE_ROOT,
        env=cliEnvironment(),
        timeout=CLI_TIMEOUT,
        check=False,
    )
    code: int | None = completed.returncode
    killedBy = None
    if completed.returncode < 0:
        code, killedBy = None, -completed.returncode
    return CliResult(completed.stdout, completed.stderr, code, killedBy)


# Checking how it ended.


def assertSucceeded(
    testCase: SynchronousTestCase, result: CliResult, stdout: bytes
) -> None:
    """
    Assert that the command exited with status 0, wrote exactly C{stdout}
    and nothing to standard error.
    """
    testCase.assertEqual(result.code, 0, result.describe())
    testCase.assertEqual(result.stderr, b"", result.describe())
    testCase.assertEqual(result.stdout, stdout, result.describe())


def assertOneError(
    testCase: SynchronousTestCase, result: CliResult, *fragments: str
) -> str:
    """
    Assert that the command exited with status 1 and wrote exactly one line
    to standard error, starting with C{tcpcomm: error:} and containing each
    of C{fragments}, and no traceback.

    @return: The line.
    """
    testCase.assertEqual(result.code, 1, result.describe())
    testCase.assertNotIn(b"Traceback", result.stderr, result.describe())
    lines = result.errorLines()
    testCase.assertEqual(len(lines), 1, result.describe())
    [line] = lines
    testCase.assertTrue(line.startswith(ERROR_PREFIX), result.describe())
    for fragment in fragments:
        testCase.assertIn(fragment, line)
    return line


def assertUsageError(
    testCase: SynchronousTestCase, result: CliResult, *fragments: str
) -> None:
    """
    Assert that the command rejected its command line the argparse way:
    exit status 2, a usage line, and an error naming each of C{fragments},
    and no traceback.
    """
    testCase.assertEqual(result.code, 2, result.describe())
    stderr = result.stderr.decode("utf-8", "replace")
    testCase.assertNotIn("Traceback", stderr)
    testCase.assertTrue(stderr.startswith("usage: tcpcomm"), result.describe())
    testCase.assertIn("error:", stderr)
    for fragment in fragments:
        testCase.assertIn(fragment, stderr)
    testCase.assertEqual(result.stdout, b"")


# Servers.


def address(server: LoopbackServer) -> str:
    """
    C{server} as the command's C{HOST:PORT} argument.
    """
    if ":" in server.host:
        return f"[{server.host}]:{server.port}"
    return f"{server.host}:{server.port}"


def unusedPort() -> int:
    """
    A 127.0.0.1 port with nothing listening on it (just released).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def hasIPv6Loopback() -> bool:
    """
    Whether this host can listen on C{::1}.
    """
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@implementer(IHalfCloseableProtocol)
class Silent(Protocol):
    """
    A server that accepts, then never answers nor closes, even when the
    client half-closes.
    """

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass


class Resetter(Protocol):
    """
    A server that resets the connection as soon as any data arrives.
    """

    transport: ITCPTransport

    def dataReceived(self, data: bytes) -> None:
        self.transport.abortConnection()


class Banner(Protocol):
    """
    A server that sends a banner and closes at once, reading nothing.
    """

    transport: ITCPTransport

    def connectionMade(self) -> None:
        self.transport.write(b"banner\n")
        self.transport.loseConnection()


def startPlainServer(
    testCase: SynchronousTestCase, serve: Callable[[socket.socket], None]
) -> int:
    """
    Listen on an ephemeral port of 127.0.0.1 with a plain blocking socket in
    a thread, accept one connection and hand it to C{serve}, then close it.
    Every socket operation times out after L{IO_TIMEOUT}, so the thread ends
    by itself; the clean-up joins it (bounded) and re-raises what C{serve}
    raised.

    @return: The port.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(IO_TIMEOUT)
    port: int = listener.getsockname()[1]
    problems: list[BaseException] = []
    stopping = threading.Event()

    def run() -> None:
        try:
            connection, _ = listener.accept()
        except OSError as e:
            if not stopping.is_set():
                problems.append(e)
            return
        finally:
            listener.close()
        with connection:
            connection.settimeout(IO_TIMEOUT)
            try:
                serve(connection)
            except BaseException as e:
                problems.append(e)

    thread = threading.Thread(target=run, name=f"plain server {port}", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        try:
            # Wakes a thread still waiting in accept().
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        thread.join(IO_TIMEOUT * 2)
        listener.close()
        if thread.is_alive():
            raise AssertionError(f"the plain server on port {port} did not end")
        if problems:
            raise problems[0]

    testCase.addCleanup(stop)
    return port


def readToEnd(connection: socket.socket) -> bytes:
    """
    Read from C{connection} until the peer half-closes.
    """
    chunks: list[bytes] = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def answerAfterEndOfInput(connection: socket.socket) -> None:
    """
    Serve a connection by reading until the client half-closes, and only
    then answering with a count of what arrived.
    """
    received = readToEnd(connection)
    connection.sendall(b"got %d bytes\n" % (len(received),))


def bannerThenClose(connection: socket.socket) -> None:
    """
    Serve a connection by sending a banner and closing its side at once,
    before the client's FIN; what the client sends is read only to be
    thrown away.  (Closing with the client's bytes unread would make the
    kernel send a reset, which can reach the client before it has read the
    banner and make it lose it: a race, not what these tests pin.)
    """
    connection.sendall(b"hello from plain\n")
    connection.shutdown(socket.SHUT_WR)
    readToEnd(connection)


@implementer(IHalfCloseableProtocol)
class EchoRecorder(Protocol):
    """
    A server that echoes and stays open after the client's half-close.
    L{ended} fires with C{None} when the client sends a FIN, or with the
    failure if the connection ends otherwise first.
    """

    transport: ITCPTransport

    def __init__(self, ended: Deferred[Failure | None]) -> None:
        self.ended = ended

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        if not self.ended.called:
            self.ended.callback(None)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.ended.called:
            self.ended.callback(reason)


class EchoRecorderFactory(Factory):
    """
    Makes L{EchoRecorder}s; L{ended} holds their C{ended}, in order.
    """

    def __init__(self) -> None:
        self.ended: list[Deferred[Failure | None]] = []

    def buildProtocol(self, addr: object) -> EchoRecorder:
        self.ended.append(Deferred())
        return EchoRecorder(self.ended[-1])


def tlsFiles(testCase: SynchronousTestCase) -> ServerFiles:
    """
    A new authority's server certificate for localhost, 127.0.0.1 and ::1,
    in a directory removed at clean-up.
    """
    directory = tempfile.mkdtemp(prefix="tcpcomm-test-")
    testCase.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return writeServerFiles(directory, makeCertificateAuthority())


async def listenTLS(
    testCase: SynchronousTestCase, files: ServerFiles, interface: str = "127.0.0.1"
) -> int:
    """
    Serve tcpcomm's line protocol over TLS on C{interface}, as C{twistd
    tcpcomm --port ssl:…} does, until clean-up.

    @return: The port.
    """
    endpoint = keepHalfClose(
        serverFromString(reactor, files.serverDescription(0, interface))
    )
    factory = LineFactory()
    listening = await endpoint.listen(factory)
    testCase.addCleanup(lambda: factory.shutDown(5))
    testCase.addCleanup(listening.stopListening)
    host = listening.getHost()
    assert isinstance(host, IPv4Address | IPv6Address)
    return host.port


STREAMED = 128 * MiB
"""
What the streaming tests send the command: far more than L{PEAK_MEMORY}.
"""

PEAK_MEMORY = 96 * MiB
"""
The most memory (peak resident set) the command may use while it copies
L{STREAMED} bytes to a reader that pauses (about 50 MiB on CPython 3.11).
"""


def streamBlock(index: int) -> bytes:
    """
    The C{index}th MiB the streaming server sends: its number, then bytes
    that repeat every 251, so a lost, repeated or reordered chunk changes
    the digest.
    """
    body = bytes((index + i) % 251 for i in range(251)) * (MiB // 251 + 1)
    return (index.to_bytes(8, "big") + body)[:MiB]


def peakMemory(pid: int) -> int:
    """
    The peak resident set size of process C{pid} so far, in bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


# The tests.


class SendTests(TestCase):
    """
    C{tcpcomm send ENDPOINT TEXT...} against tcpcomm's own servers.
    """

    async def test_linesAnswered(self) -> None:
        """
        Each TEXT goes out as a line ending in LF, and the line server's
        whole reply is printed; exit status 0.
        """
        server = startServer(self, LineFactory())
        result = await runCli(self, ["send", address(server), "one", "two three"])
        assertSucceeded(self, result, b"one\ntwo three\n")

    async def test_crlf(self) -> None:
        """
        With C{--crlf} each TEXT goes out ending in CRLF (the echo server
        sends back the exact bytes).
        """
        server = startServer(self, EchoFactory())
        result = await runCli(
            self, ["send", "--crlf", address(server), "one", "two three"]
        )
        assertSucceeded(self, result, b"one\r\ntwo three\r\n")

    async def test_textIsUtf8(self) -> None:
        """
        TEXT goes out encoded as UTF-8.
        """
        server = startServer(self, EchoFactory())
        result = await runCli(self, ["send", address(server), "h\u00e9llo \u2603"])
        assertSucceeded(self, result, "h\u00e9llo \u2603\n".encode())

    async def test_endpointDescription(self) -> None:
        """
        ENDPOINT may be a Twisted client endpoint description.
        """
        server = startServer(self, LineFactory())
        result = await runCli(self, ["send", server.clientDescription(), "hi"])
        assertSucceeded(self, result, b"hi\n")

    async def test_refused(self) -> None:
        """
        A port nobody listens on: status 1, one error line saying refused
        and naming the address.
        """
        where = f"127.0.0.1:{unusedPort()}"
        result = await runCli(self, ["send", where, "hi"])
        assertOneError(self, result, "refused", where)
        self.assertEqual(result.stdout, b"")

    async def test_timeout(self) -> None:
        """
        A server that never answers: after C{--timeout}, status 1 and one
        error line saying timed out and naming the address.
        """
        server = startServer(self, Factory.forProtocol(Silent))
        where = address(server)
        result = await runCli(self, ["send", "--timeout", SHORT_TIMEOUT, where, "hi"])
        assertOneError(self, result, "timed out", where)

    async def test_reset(self) -> None:
        """
        A server that resets the connection: status 1, one error line
        saying reset and naming the address.
        """
        server = startServer(self, Factory.forProtocol(Resetter))
        where = address(server)
        result = await runCli(self, ["send", where, "hi"])
        assertOneError(self, result, "reset", where)


class ConnectTests(TestCase):
    """
    C{tcpcomm connect ENDPOINT} with standard input piped, against tcpcomm's
    own servers.
    """

    async def test_halfCloseThenReadToEnd(self) -> None:
        """
        At the end of standard input the command half-closes and goes on
        printing until the server closes: the line server answers the last
        line, which had no newline, and only then closes; exit status 0.
        """
        server = startServer(self, LineFactory())
        result = await runCli(self, ["connect", address(server)], b"hello\nworld")
        assertSucceeded(self, result, b"hello\nworld\n")

    async def test_binarySafe(self) -> None:
        """
        Two MiB of random bytes, NUL, CR and LF included, come back from the
        echo server byte for byte.
        """
        server = startServer(self, EchoFactory())
        data = b"\x00\r\n\r\r\n\n\x00" + os.urandom(2 * MiB)
        result = await runCli(self, ["connect", address(server)], data)
        self.assertEqual(result.code, 0, result.describe())
        self.assertEqual(result.stderr, b"")
        self.assertEqual(len(result.stdout), len(data))
        self.assertTrue(result.stdout == data, "the echoed bytes differ")

    async def test_crlf(self) -> None:
        """
        With C{--crlf} each LF of standard input goes out as CRLF, and a
        CRLF already there stays one CRLF.
        """
        server = startServer(self, EchoFactory())
        result = await runCli(
            self, ["connect", "--crlf", address(server)], b"a\nb\r\nc\n"
        )
        assertSucceeded(self, result, b"a\r\nb\r\nc\r\n")

    async def test_serverClosesWhileStdinOpen(self) -> None:
        """
        When the server sends a banner and closes, the command prints it
        and exits with status 0 even though standard input is still open.
        """
        server = startServer(self, Factory.forProtocol(Banner))
        process = startCli(self, ["connect", address(server)])
        result = await process.ended
        assertSucceeded(self, result, b"banner\n")

    async def test_ipv6Literal(self) -> None:
        """
        ENDPOINT may be an IPv6 literal in brackets, C{[::1]:PORT}.
        """
        if not hasIPv6Loopback():
            raise SkipTest("this host has no IPv6 loopback")
        server = startServer(self, LineFactory(), interface="::1")
        where = f"[::1]:{server.port}"
        result = await runCli(self, ["connect", where], b"six\n")
        assertSucceeded(self, result, b"six\n")

    async def test_refused(self) -> None:
        """
        A port nobody listens on: status 1, one error line saying refused
        and naming the address.
        """
        where = f"127.0.0.1:{unusedPort()}"
        result = await runCli(self, ["connect", where], b"hi\n")
        assertOneError(self, result, "refused", where)
        self.assertEqual(result.stdout, b"")

    async def test_timeout(self) -> None:
        """
        A server that stays silent after standard input ended: after
        C{--timeout}, status 1 and exactly one error line that says timed
        out and names the address, not a second one blaming the server for
        the reset the command itself caused.
        """
        server = startServer(self, Factory.forProtocol(Silent))
        where = address(server)
        for stdin in (b"hi\n", b""):
            result = await runCli(
                self, ["connect", "--timeout", SHORT_TIMEOUT, where], stdin
            )
            assertOneError(self, result, "timed out", where)

    async def test_reset(self) -> None:
        """
        A server that resets the connection: status 1, one error line
        saying reset and naming the address.
        """
        server = startServer(self, Factory.forProtocol(Resetter))
        where = address(server)
        result = await runCli(self, ["connect", where], b"hello\n")
        assertOneError(self, result, "reset", where)

    async def test_stdoutClosed(self) -> None:
        """
        When the reader of standard output goes away (C{| head}), the
        command stops by itself and quietly, with standard input still open,
        instead of going on forever, dying of SIGPIPE or blaming the server.
        """
        server = startServer(self, EchoFactory())
        process = startCli(self, ["connect", address(server)])
        process.write(b"ping\n")
        await process.someOutput()
        process.closeStdout()
        result = await process.ended
        self.assertIsNone(result.signal, result.describe())
        self.assertEqual(result.code, 0, result.describe())
        self.assertEqual(result.stderr, b"", result.describe())


class InterruptTests(TestCase):
    """
    Ctrl-C (SIGINT) stops C{connect} and C{send} with one line saying
    C{interrupted} and status 130, the way shells report it, and closes the
    connection cleanly.
    """

    def assertInterrupted(self, result: CliResult, stdout: bytes) -> None:
        """
        Assert that the command said only that it was interrupted, exited
        with status 130, and had written C{stdout}.
        """
        self.assertEqual(result.code, 130, result.describe())
        self.assertEqual(result.stderr, b"tcpcomm: error: interrupted\n")
        self.assertEqual(result.stdout, stdout, result.describe())

    async def test_connect(self) -> None:
        """
        C{connect}, with standard input open and after its end (waiting for
        a server that stays open): the interrupted line and 130 each time,
        no "connection reset" and no traceback; the server sees a clean
        close (a FIN), not a reset.
        """
        factory = EchoRecorderFactory()
        server = startServer(self, factory)
        for stdinOpen in (True, False, True, False):
            process = startCli(self, ["connect", address(server)])
            process.write(b"hello\n")
            if not stdinOpen:
                process.closeStdin()
            await process.someOutput()
            process.signal("INT")
            self.assertInterrupted(await process.ended, b"hello\n")
            if stdinOpen:
                # A FIN, not a reset.
                self.assertIsNone(await factory.ended[-1])

    async def test_send(self) -> None:
        """
        C{send} waiting for a server that never closes: the reply so far,
        the interrupted line and 130.
        """
        factory = EchoRecorderFactory()
        server = startServer(self, factory)
        process = startCli(self, ["send", address(server), "hello"])
        process.closeStdin()
        await process.someOutput()
        process.signal("INT")
        self.assertInterrupted(await process.ended, b"hello\n")

    async def test_whileConnecting(self) -> None:
        """
        C{send} interrupted before the connection is up (a listener that
        never accepts, its backlog full): interrupted and 130.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Fill the backlog so that the command's connection waits.
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            self.addCleanup(filler.close)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        process = startCli(self, ["send", f"127.0.0.1:{port}", "hello"])
        process.closeStdin()
        await deferLater(reactor, 1.0)
        process.signal("INT")
        self.assertInterrupted(await process.ended, b"")


class ConnectionProblemTests(TestCase):
    """
    Connection failures end C{send} and C{connect} with status 1 and one
    line that names the endpoint and gives the reason in words.
    """

    async def test_unixSocketMissing(self) -> None:
        """
        A UNIX socket that is not there: "cannot connect to …: no such
        file or directory".
        """
        where = f"unix:path={tempfile.gettempdir()}/tcpcomm-no-such-dir/sock"
        for args in (["send", where, "x"], ["connect", where]):
            result = await runCli(self, args, b"x\n")
            assertOneError(
                self, result, f"cannot connect to {where}: no such file or directory"
            )

    async def test_plainClientToTLSPort(self) -> None:
        """
        Plain TCP to a TLS port: the server closes without a reply, and the
        command says so and hints at C{tls:} (status 1), rather than
        printing nothing and exiting 0.
        """
        port = await listenTLS(self, tlsFiles(self))
        where = f"127.0.0.1:{port}"
        for args in (["send", where, "hello"], ["connect", where]):
            result = await runCli(self, args, b"hello\n")
            assertOneError(
                self,
                result,
                f"connection closed by {where} with no reply",
                "use tls:HOST:PORT",
            )
            self.assertEqual(result.stdout, b"")

    async def test_tlsHandshakeNeverEnds(self) -> None:
        """
        C{tls:} to a server that accepts and never answers (a plain port
        waiting for a line end): C{send} and C{connect} end after
        C{--timeout}, saying the TLS handshake never finished and hinting at
        a plain C{HOST:PORT}; C{connect} used to wait for the server forever.
        """
        server = startServer(self, Factory.forProtocol(Protocol))
        where = f"tls:{address(server)}"
        for command in ("connect", "send"):
            args = [command, "--timeout", SHORT_TIMEOUT, where]
            if command == "send":
                args.append("hello")
            result = await runCli(self, args, b"hello\n")
            assertOneError(
                self,
                result,
                f"timed out after {SHORT_TIMEOUT} s waiting for the TLS handshake"
                f" with {where} (not a TLS port? use HOST:PORT)",
            )

    test_tlsHandshakeNeverEnds.timeout = 20  # type: ignore[attr-defined]

    async def test_nothingSentNothingAnswered(self) -> None:
        """
        C{connect} with empty standard input to a server that closes
        without a reply is no error: nothing was asked.
        """
        server = startServer(self, LineFactory())
        result = await runCli(self, ["connect", address(server)], b"")
        assertSucceeded(self, result, b"")

    async def test_tlsIPv6Literal(self) -> None:
        """
        C{tls:[::1]:PORT} connects to ::1, checks the certificate for ::1
        and exchanges lines.
        """
        if not hasIPv6Loopback():
            raise SkipTest("this host has no IPv6 loopback")
        files = tlsFiles(self)
        port = await listenTLS(self, files, "::1")
        trust = files.trustDirectory.replace("\\", "\\\\").replace(":", "\\:")
        where = f"tls:[::1]:{port}:trustRoots={trust}"
        result = await runCli(self, ["send", where, "one", "two"])
        assertSucceeded(self, result, b"one\ntwo\n")


class StreamingTests(SynchronousTestCase):
    """
    C{send} and C{connect} copy the reply to standard output as it arrives:
    memory stays bounded however much the server sends, and when standard
    output is slow they stop reading the socket instead of buffering.
    """

    def setUp(self) -> None:
        if not os.path.exists("/proc/self/status"):
            raise SkipTest("peak memory is read from /proc")

    def streamTo(self, args: list[str]) -> None:
        """
        Run the command with C{args} (ENDPOINT appended where C{{}} is)
        against a server that reads to the end of input, then streams
        L{STREAMED} bytes; read its output only after a pause, and check
        that it came whole and in order, the status is 0 and the peak
        memory stayed under L{PEAK_MEMORY}.
        """
        sent = hashlib.sha256()
        release = threading.Event()

        def serve(connection: socket.socket) -> None:
            readToEnd(connection)
            for index in range(STREAMED // MiB):
                block = streamBlock(index)
                sent.update(block)
                connection.sendall(block)
            release.wait(IO_TIMEOUT)

        port = startPlainServer(self, serve)
        argv = [a.format(f"127.0.0.1:{port}") for a in args]
        process = subprocess.Popen(
            [*moduleCommand(), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=SOURCE_ROOT,
            env=cliEnvironment(),
        )

        def stop() -> None:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=CLI_TIMEOUT)

        self.addCleanup(stop)
        assert process.stdout is not None
        # Nobody reads standard output for a while: the command must stop
        # reading the socket rather than take in the whole stream.
        time.sleep(1.0)
        whilePaused = peakMemory(process.pid)
        received = hashlib.sha256()
        length = 0
        deadline = time.monotonic() + CLI_TIMEOUT
        while length < STREAMED and time.monotonic() < deadline:
            chunk = os.read(process.stdout.fileno(), MiB)
            if not chunk:
                break
            received.update(chunk)
            length += len(chunk)
        peak = peakMemory(process.pid) if process.poll() is None else None
        release.set()
        rest, errors = process.communicate(timeout=CLI_TIMEOUT)
        self.assertEqual(process.returncode, 0, errors)
        self.assertEqual(errors, b"")
        self.assertEqual(length + len(rest), STREAMED)
        self.assertEqual(received.hexdigest(), sent.hexdigest(), "the bytes differ")
        self.assertLess(whilePaused, PEAK_MEMORY, "memory grew while output waited")
        self.assertIsNotNone(peak, "the command ended before the server closed")
        assert peak is not None
        self.assertLess(peak, PEAK_MEMORY, f"peak memory {peak / MiB:.0f} MiB")

    def test_send(self) -> None:
        """
        C{send}: 128 MiB streamed by the server after the lines arrive.
        """
        self.streamTo(["send", "--timeout", "20", "{}", "go"])

    def test_connect(self) -> None:
        """
        C{connect} with empty standard input: 128 MiB streamed after the
        half-close.
        """
        self.streamTo(["connect", "--timeout", "20", "{}"])


class StandardDescriptorTests(SynchronousTestCase):
    """
    The command with standard input or output closed, and what it leaves
    behind on them.
    """

    def test_closedStandardDescriptors(self) -> None:
        """
        With standard output closed (C{>&-}), C{send} talks to the server
        and exits 0 as if output went to C{/dev/null}; so does C{connect}
        with standard input closed (C{<&-}), as if it were empty.  Neither
        hangs nor prints a traceback.
        """
        for args, redirect, expected in (
            (["send", "{}", "hello"], ">&-", b""),
            (["connect", "{}"], "<&-", b"got 0 bytes\n"),
        ):
            port = startPlainServer(self, answerAfterEndOfInput)
            argv = [a.format(f"127.0.0.1:{port}") for a in args]
            completed = subprocess.run(
                ["sh", "-c", f'exec "$@" {redirect}', "sh", *moduleCommand(), *argv],
                capture_output=True,
                cwd=SOURCE_ROOT,
                env=cliEnvironment(),
                timeout=CLI_TIMEOUT,
                check=False,
            )
            self.assertEqual(completed.returncode, 0, completed.stderr)
            self.assertEqual(completed.stderr, b"")
            self.assertEqual(completed.stdout, expected)

    def test_stdinLeftBlocking(self) -> None:
        """
        After C{connect}, its standard input (a pipe shared with whoever
        reads it next, or a terminal) is blocking again, as it was.
        """
        import fcntl

        port = startPlainServer(self, answerAfterEndOfInput)
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        os.write(writeEnd, b"hello\n")
        os.close(writeEnd)
        completed = subprocess.run(
            [*moduleCommand(), "connect", f"127.0.0.1:{port}"],
            stdin=readEnd,
            capture_output=True,
            cwd=SOURCE_ROOT,
            env=cliEnvironment(),
            timeout=CLI_TIMEOUT,
            check=False,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout, b"got 6 bytes\n")
        self.assertFalse(fcntl.fcntl(readEnd, fcntl.F_GETFL) & os.O_NONBLOCK)


class PlainServerTests(SynchronousTestCase):
    """
    The command against servers that are not tcpcomm's: plain blocking
    sockets in a thread.
    """

    def test_connectServerAnswersAfterEndOfInput(self) -> None:
        """
        C{connect}: a server that answers only after the client's
        half-close gets everything, and its answer is printed; status 0.
        """
        port = startPlainServer(self, answerAfterEndOfInput)
        result = runCliBlocking(["connect", f"127.0.0.1:{port}"], b"hello\nworld")
        assertSucceeded(self, result, b"got 11 bytes\n")

    def test_sendServerAnswersAfterEndOfInput(self) -> None:
        """
        C{send}: a server that answers only after the client's half-close
        gets every line, and its answer is printed; status 0.
        """
        port = startPlainServer(self, answerAfterEndOfInput)
        result = runCliBlocking(["send", f"127.0.0.1:{port}", "one", "two three"])
        assertSucceeded(self, result, b"got 14 bytes\n")

    def test_connectServerClosesFirst(self) -> None:
        """
        C{connect} with empty standard input: a server that sends a banner
        and closes without reading has it printed; status 0.
        """
        port = startPlainServer(self, bannerThenClose)
        result = runCliBlocking(["connect", f"127.0.0.1:{port}"])
        assertSucceeded(self, result, b"hello from plain\n")

    def test_sendServerClosesFirst(self) -> None:
        """
        C{send}: a server that sends a banner and closes without reading
        what was sent has it printed; status 0.
        """
        port = startPlainServer(self, bannerThenClose)
        result = runCliBlocking(["send", f"127.0.0.1:{port}", "hi"])
        assertSucceeded(self, result, b"hello from plain\n")


class BadCommandLineTests(SynchronousTestCase):
    """
    A bad command line, a malformed ENDPOINT included, ends the command
    with the usage and a readable error line, no traceback, status 2.
    """

    def test_noArguments(self) -> None:
        """
        No arguments at all: status 2, asking for a COMMAND.
        """
        assertUsageError(self, runCliBlocking([]), "COMMAND")

    def test_unknownCommand(self) -> None:
        """
        A command that does not exist: status 2, naming it.
        """
        assertUsageError(self, runCliBlocking(["frobnicate"]), "'frobnicate'")

    def test_connectWithoutEndpoint(self) -> None:
        """
        C{connect} without ENDPOINT: status 2, asking for it.
        """
        assertUsageError(self, runCliBlocking(["connect"]), "ENDPOINT")

    def test_sendWithoutText(self) -> None:
        """
        C{send} with an ENDPOINT but no TEXT: status 2, asking for it.
        """
        assertUsageError(self, runCliBlocking(["send", "127.0.0.1:1"]), "TEXT")

    def test_zeroTimeout(self) -> None:
        """
        C{--timeout 0}: status 2, naming the option and the value.
        """
        result = runCliBlocking(["connect", "--timeout", "0", "127.0.0.1:1"])
        assertUsageError(self, result, "--timeout", "'0'")

    def test_textTimeout(self) -> None:
        """
        C{--timeout abc}: status 2, naming the option and the value.
        """
        result = runCliBlocking(["send", "--timeout", "abc", "127.0.0.1:1", "x"])
        assertUsageError(self, result, "--timeout", "'abc'")

    def test_unknownEndpointType(self) -> None:
        """
        An endpoint of an unknown type: status 2, the usage and one error
        line naming it, before any connection is tried.
        """
        result = runCliBlocking(["connect", "bogus:thing"])
        assertUsageError(self, result, "'bogus:thing'", "Unknown endpoint type")

    def test_malformedEndpoints(self) -> None:
        """
        A malformed ENDPOINT (no port, a port out of range, a trust
        directory that is not there), for C{send} and C{connect}: status 2
        and an error line that names it and says what is wrong, before any
        connection is tried.  (Every reason: C{test_client}.)
        """
        cases = [
            (["send", "localhost", "x"], "'localhost'", "no port given"),
            (["connect", "localhost:99999"], "'localhost:99999'", "not within 1-65535"),
            (
                ["send", "tls:localhost:1:trustRoots=nodir", "x"],
                "trustRoots=nodir'",
                "nodir: no such file or directory",
            ),
        ]
        for args, endpoint, reason in cases:
            result = runCliBlocking(args)
            assertUsageError(self, result, endpoint, reason)
            # The usage (however argparse wraps it), then one error line.
            errors = [line for line in result.errorLines() if "error:" in line]
            self.assertEqual(len(errors), 1, result.describe())
            self.assertIn(": error: ", result.errorLines()[-1])


class HelpTests(SynchronousTestCase):
    """
    C{--help}, C{--version} and the installed console script.
    """

    def assertHelp(self, args: Sequence[str], *fragments: str) -> str:
        """
        Assert that the command with C{args} exits with status 0, writing
        help to standard output that contains each of C{fragments} and
        nothing to standard error.

        @return: The help, with its whitespace runs made single spaces.
        """
        result = runCliBlocking(args)
        self.assertEqual(result.code, 0, result.describe())
        self.assertEqual(result.stderr, b"")
        text = " ".join(result.stdout.decode("utf-8").split())
        for fragment in fragments:
            self.assertIn(fragment, text)
        return text

    def test_help(self) -> None:
        """
        C{tcpcomm --help} explains the half-close and ENDPOINT and lists
        the commands.
        """
        self.assertHelp(
            ["--help"],
            "usage: tcpcomm",
            "half-close",
            "ENDPOINT",
            "connect",
            "send",
            "bench",
        )

    def test_connectHelp(self) -> None:
        """
        C{tcpcomm connect --help} explains the half-close, ENDPOINT and the
        options.
        """
        self.assertHelp(
            ["connect", "--help"],
            "usage: tcpcomm connect",
            "half-close",
            "ENDPOINT",
            "--timeout",
            "--crlf",
        )

    def test_sendHelp(self) -> None:
        """
        C{tcpcomm send --help} explains the half-close, ENDPOINT and TEXT.
        """
        self.assertHelp(
            ["send", "--help"], "usage: tcpcomm send", "half-close", "ENDPOINT", "TEXT"
        )

    def test_version(self) -> None:
        """
        C{tcpcomm --version} prints the package's version.
        """
        result = runCliBlocking(["--version"])
        assertSucceeded(self, result, f"{__version__}\n".encode())

    def test_consoleScript(self) -> None:
        """
        The installed C{tcpcomm} console script, next to C{sys.executable},
        runs the same command as C{python -m tcpcomm}.
        """
        script = consoleScript()
        if not (os.path.isfile(script) and os.access(script, os.X_OK)):
            self.fail(
                f"no tcpcomm console script at {script}: install the package"
                f" into this Python ({sys.executable} -m pip install -e"
                f" {SOURCE_ROOT})"
            )
        viaScript = runCliBlocking(["--help"], command=[script])
        viaModule = runCliBlocking(["--help"])
        self.assertEqual(viaScript.code, 0, viaScript.describe())
        self.assertEqual(viaScript.stdout, viaModule.stdout)


class CrlfTranslatorTests(SynchronousTestCase):
    """
    The C{--crlf} translation of C{connect}, chunk by chunk as standard
    input arrives.
    """

    def test_crlfSplitAcrossChunks(self) -> None:
        """
        A CRLF split between two reads stays one CRLF.
        """
        translate = CrlfTranslator()
        self.assertEqual(translate(b"a\r") + translate(b"\nb\n"), b"a\r\nb\r\n")

    def test_loneCarriageReturnKept(self) -> None:
        """
        A CR not followed by LF is sent as it is, also at a chunk's end.
        """
        translate = CrlfTranslator()
        self.assertEqual(translate(b"a\rb\r") + translate(b"c\n"), b"a\rb\rc\r\n")


def answering(reply: bytes, received: list[bytes]) -> Callable[[socket.socket], None]:
    """
    A plain server that reads until the client half-closes, keeps what
    arrived in C{received}, and answers with C{reply}.
    """

    def serve(connection: socket.socket) -> None:
        received.append(readToEnd(connection))
        connection.sendall(reply)

    return serve


class FramedSendTests(SynchronousTestCase):
    """
    C{tcpcomm send --framing}: each TEXT a frame, each reply frame's payload
    a line.
    """

    def send(self, reply: bytes, *args: str) -> tuple[CliResult, bytes]:
        """
        Run C{send} with C{args} against a plain server answering C{reply};
        return how it ended and what the server received.
        """
        received: list[bytes] = []
        port = startPlainServer(self, answering(reply, received))
        result = runCliBlocking(["send", f"127.0.0.1:{port}", *args])
        return result, b"".join(received)

    def test_lengthFrames(self) -> None:
        """
        With C{length:2}, each TEXT goes as a big-endian length and payload
        (Java's writeShort and write), and each reply payload is printed on a
        line of its own.
        """
        result, received = self.send(
            b"\x00\x05HELLO\x00\x05WORLD", "--framing", "length:2", "hello", "world"
        )
        self.assertEqual(received, b"\x00\x05hello\x00\x05world")
        self.assertEqual((result.code, result.stderr), (0, b""))
        self.assertEqual(result.stdout, b"HELLO\nWORLD\n")

    def test_hex(self) -> None:
        """
        With C{--hex}, each TEXT is a payload in hex, and each reply payload
        is printed in hex.
        """
        result, received = self.send(
            b"\xab\xcd\x00", "--framing", "delimiter:00", "--hex", "0102", "ff"
        )
        self.assertEqual(received, b"\x01\x02\x00\xff\x00")
        self.assertEqual((result.code, result.stdout), (0, b"abcd\n"))

    def test_badFrameFromServer(self) -> None:
        """
        A reply the framing refuses: the frames before it are printed, then
        one error line naming the server, and status 1.
        """
        result, _ = self.send(
            b"\x02ok\x09too long!", "--framing", "length:1:max=4", "x"
        )
        self.assertEqual(result.code, 1)
        self.assertEqual(result.stdout, b"ok\n")
        [line] = result.errorLines()
        self.assertIn("bad frame from 127.0.0.1:", line)

    def test_closedInsideFrame(self) -> None:
        """
        A server that closes in the middle of a frame: status 1 and one line
        saying so.
        """
        result, _ = self.send(b"\x00\x05he", "--framing", "length:2", "x")
        self.assertEqual((result.code, result.stdout), (1, b""))
        [line] = result.errorLines()
        self.assertIn("closed inside a frame", line)

    def test_closedWithNoReply(self) -> None:
        """
        A server that closes without a reply (as one of another binary
        framing does): status 1 and one line hinting at another framing as
        well as at TLS.
        """
        result, received = self.send(b"", "--framing", "length:4", "x")
        self.assertEqual(received, b"\x00\x00\x00\x01x")
        self.assertEqual((result.code, result.stdout), (1, b""))
        [line] = result.errorLines()
        self.assertIn("with no reply (a server of another framing?", line)
        self.assertIn("tls:HOST:PORT", line)

    def test_badCommandLines(self) -> None:
        """
        A bad spec, C{--hex} without C{--framing}, TEXT that is not hex, and
        a payload the framing cannot frame are each a bad command line:
        status 2 and one error line, and nothing is sent.
        """
        for args, detail in (
            (["--framing", "length:5", "x"], "length"),
            (["--hex", "00"], "--hex applies to --framing only"),
            (["--framing", "netstring", "--hex", "zz"], "is not hex"),
            (["--framing", "length:1", "x" * 300], "cannot send"),
        ):
            result = runCliBlocking(["send", "127.0.0.1:9", *args])
            self.assertEqual(result.code, 2, (args, result))
            self.assertIn(detail, result.stderr.decode())
