"""
Tests that independent, real clients speak the real server's framings:
C{twistd -n tcpcomm --protocol line --framing SPEC} in a subprocess on a
free loopback port (as L{tests.test_plugin} starts it), talked to by
Twisted's C{Int32StringReceiver} and C{NetstringReceiver}, a plain Java
C{DataOutputStream} client, pymodbus's TCP client and C{nc}.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pymodbus.client import ModbusTcpClient
from pymodbus.pdu import ExceptionResponse
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import Int32StringReceiver, NetstringReceiver
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tcpcomm.framers.modbus import GATEWAY_TARGET_FAILED, SERVER_DEVICE_FAILURE
from tests.test_plugin import (
    EXIT_TIMEOUT,
    IO_TIMEOUT,
    START_TIMEOUT,
    Child,
    startTwistd,
    temporaryDirectory,
)

TESTS = Path(__file__).resolve().parent
"""
This directory: the Java client's source and the MODBUS handler are here.
"""

PAYLOADS = [b"hello", b"", bytes(range(256)), b"x" * 50_000, b"last"]
"""
What the Twisted clients send, pipelined: text, empty, every byte value,
and one large payload.
"""


def serve(testCase: SynchronousTestCase, spec: str, *args: str) -> int:
    """
    Start C{twistd -n tcpcomm --protocol line --framing SPEC} with C{args}
    after it, in an empty directory of its own, for the length of the test.

    @return: The port it listens on, on 127.0.0.1.
    """
    return serveIn(testCase, temporaryDirectory(testCase), spec, *args)


def serveIn(testCase: SynchronousTestCase, cwd: Path, spec: str, *args: str) -> int:
    """
    As L{serve}, in C{cwd} (where C{--handler} finds its module).
    """
    for _ in range(5):
        server, port = startTwistd(
            testCase, ["--protocol", "line", "--framing", spec, *args], cwd
        )
        if listensOn(server, port):
            return port
    testCase.fail(f"twistd --framing {spec} found no free port in 5 tries")


def listensOn(server: Child, port: int) -> bool:
    """
    Wait (bounded) until C{server} logs that it listens on C{port}.

    L{startTwistd} returns once I{something} accepts on the port; on a
    machine where other tests listen on ports of their own, that can be
    another process that took the port first, while twistd is still on its
    way to failing to listen.

    @return: C{True} once it does; C{False} if it exits first.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while f"starting on {port}" not in server.output():
        if server.process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise AssertionError(f"twistd never listened on {port}:\n{server.output()}")
        time.sleep(0.05)
    return True


class Replies:
    """
    The replies a pipelining client collects: fires L{done} with them once
    it has as many as it sent strings.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received: list[bytes] = []
        self.done: defer.Deferred[list[bytes]] = defer.Deferred()

    def add(self, reply: bytes) -> None:
        self.received.append(reply)
        if len(self.received) == self.expected:
            self.done.callback(self.received)


class PipeliningClient:
    """
    Sends every payload at once on connecting; collects the replies.  Mixed
    into Twisted's receivers, whose C{sendString} and C{stringReceived} it
    uses.
    """

    def __init__(self, payloads: Sequence[bytes]) -> None:
        self.payloads = payloads
        self.replies = Replies(len(payloads))

    def connectionMade(self) -> None:
        for payload in self.payloads:
            self.sendString(payload)  # type: ignore[attr-defined]

    def stringReceived(self, string: bytes) -> None:
        self.replies.add(string)


class Int32Client(PipeliningClient, Int32StringReceiver):
    """
    A pipelining client of Twisted's C{Int32StringReceiver}.
    """


class NetstringClient(PipeliningClient, NetstringReceiver):
    """
    A pipelining client of Twisted's C{NetstringReceiver}.
    """


async def pipeline(port: int, client: Int32Client | NetstringClient) -> list[bytes]:
    """
    Connect C{client} to 127.0.0.1:C{port}; wait (bounded) for every reply,
    then close.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=IO_TIMEOUT)
    await connectProtocol(endpoint, client)
    replies = client.replies
    try:
        return await replies.done.addTimeout(IO_TIMEOUT, reactor)
    except defer.TimeoutError:
        raise AssertionError(
            f"{len(replies.received)} of {replies.expected} replies"
            f" in {IO_TIMEOUT:g} s: {[len(r) for r in replies.received]} bytes"
        ) from None
    finally:
        assert client.transport is not None
        client.transport.loseConnection()


class TwistedClientsTests(TestCase):
    """
    Twisted's own framed receivers against the real server.
    """

    async def test_int32StringReceiver(self) -> None:
        """
        C{Int32StringReceiver} pipelining five strings (empty, binary,
        50,000 bytes) to C{--framing length:4} gets each back exactly, in
        order.
        """
        port = serve(self, "length:4")
        replies = await pipeline(port, Int32Client(PAYLOADS))
        self.assertEqual(replies, PAYLOADS)

    async def test_netstringReceiver(self) -> None:
        """
        C{NetstringReceiver} pipelining five strings to C{--framing
        netstring} gets each back exactly, in order.
        """
        port = serve(self, "netstring")
        replies = await pipeline(port, NetstringClient(PAYLOADS))
        self.assertEqual(replies, PAYLOADS)


def requireTools(package: str, *tools: str) -> None:
    """
    Skip unless every one of C{tools} is on C{PATH}, naming the Debian
    C{package} that has them (under C{CI=true} a skip fails: C{.ci/run}
    must provide them).
    """
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise SkipTest(f"needs {' and '.join(missing)} on PATH (Debian: {package})")


class JavaClientTests(SynchronousTestCase):
    """
    A plain Java client, C{tests/java/LengthClient.java}, against C{--framing
    length:2}.
    """

    def test_dataOutputStream(self) -> None:
        """
        Strings sent with C{DataOutputStream.writeShort(n); write(bytes)},
        pipelined, then a half-close, come back one by one to
        C{DataInputStream.readUnsignedShort()} and C{readFully}, in order;
        the server then closes.
        """
        requireTools("default-jdk-headless", "javac", "java")
        classes = temporaryDirectory(self)
        subprocess.run(
            ["javac", "-d", str(classes), str(TESTS / "java" / "LengthClient.java")],
            check=True,
            timeout=120,
        )
        port = serve(self, "length:2")
        messages = ["hello", "wörld", "", "x" * 1000, "last"]
        client = subprocess.run(
            [
                *("java", "-cp", str(classes), "LengthClient"),
                *("127.0.0.1", str(port), *messages),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        self.assertEqual(client.returncode, 0, client.stderr)
        self.assertEqual(client.stdout.decode("utf-8").split("\n"), [*messages, ""])


BROKEN_REGISTER = 99
"""
The register whose handler raises, in L{ModbusClientTests}.
"""

DEAD_REGISTER = 98
"""
The register whose handler never answers, in L{ModbusClientTests}.
"""

HANDLER_TIMEOUT = 0.5
"""
The C{--handler-timeout} of L{ModbusClientTests}' server, in seconds.
"""


class ModbusClientTests(SynchronousTestCase):
    """
    pymodbus's TCP client against C{--framing modbus} with the README's
    handler, C{tests/modbus_registers.py}.
    """

    def setUp(self) -> None:
        cwd = temporaryDirectory(self)
        shutil.copy(TESTS / "modbus_registers.py", cwd)
        # The README's handler, but register 99 raises, as a failing
        # sensor, and register 98 never answers, as a dead one.
        (cwd / "failing.py").write_text(
            "from twisted.internet.defer import Deferred\n"
            "from modbus_registers import handle as registers\n"
            "\n"
            "def handle(request):\n"
            f"    if request[8:10] == b'\\x00\\x{BROKEN_REGISTER:02x}':\n"
            "        raise RuntimeError('register 99 is broken')\n"
            f"    if request[8:10] == b'\\x00\\x{DEAD_REGISTER:02x}':\n"
            "        return Deferred()\n"
            "    return registers(request)\n",
            encoding="utf-8",
        )
        port = serveIn(
            self,
            cwd,
            "modbus",
            "--handler",
            "failing:handle",
            "--handler-timeout",
            str(HANDLER_TIMEOUT),
        )
        self.client = ModbusTcpClient(
            "127.0.0.1", port=port, timeout=IO_TIMEOUT, retries=0
        )
        self.addCleanup(self.client.close)
        self.assertTrue(self.client.connect())

    def test_readHoldingRegisters(self) -> None:
        """
        Holding registers read through pymodbus are the handler's; an
        address past them is exception 0x02 from the handler itself.
        """
        first = self.client.read_holding_registers(0, count=3)
        self.assertEqual(first.registers, [0, 100, 200])
        last = self.client.read_holding_registers(7, count=3)
        self.assertEqual(last.registers, [700, 800, 900])
        beyond = self.client.read_holding_registers(8, count=5)
        assert isinstance(beyond, ExceptionResponse)
        self.assertEqual(beyond.exception_code, 0x02)

    def test_raisingHandlerIsServerDeviceFailure(self) -> None:
        """
        A request whose handler raises gets exception 0x04 (server device
        failure), and the same connection answers the next request.
        """
        failed = self.client.read_holding_registers(BROKEN_REGISTER, count=1)
        assert isinstance(failed, ExceptionResponse)
        self.assertEqual(failed.exception_code, SERVER_DEVICE_FAILURE)
        after = self.client.read_holding_registers(1, count=2)
        self.assertEqual(after.registers, [100, 200])

    def test_timedOutHandlerIsGatewayTargetFailure(self) -> None:
        """
        A request whose handler outlasts C{--handler-timeout} gets exception
        0x0B (gateway target device failed to respond), and the same
        connection answers the next request.
        """
        failed = self.client.read_holding_registers(DEAD_REGISTER, count=1)
        assert isinstance(failed, ExceptionResponse)
        self.assertEqual(failed.exception_code, GATEWAY_TARGET_FAILED)
        after = self.client.read_holding_registers(2, count=1)
        self.assertEqual(after.registers, [200])


def netcat(port: int, printfFormat: str) -> bytes:
    """
    Run C{printf FORMAT | nc -N 127.0.0.1 PORT}, as a user would, and return
    what C{nc} printed: every byte the server sent until it closed.
    """
    completed = subprocess.run(
        ["bash", "-c", f"printf '{printfFormat}' | nc -N 127.0.0.1 {port}"],
        capture_output=True,
        timeout=EXIT_TIMEOUT,
        check=False,
        env={"PATH": os.environ.get("PATH", os.defpath)},
        cwd=tempfile.gettempdir(),
    )
    if completed.returncode != 0:
        raise AssertionError(f"nc exited with {completed.returncode}: {completed}")
    return completed.stdout


class NetcatTests(SynchronousTestCase):
    """
    C{printf ... | nc -N} against the byte framings.
    """

    def setUp(self) -> None:
        requireTools("netcat-openbsd", "nc")

    def test_stxEtx(self) -> None:
        """
        Frames between STX and ETX, with noise between them, are echoed as
        frames; the noise is dropped.
        """
        port = serve(self, "stx-etx")
        reply = netcat(port, r"\002hello\003noise\002world\003")
        self.assertEqual(reply, b"\x02hello\x03\x02world\x03")

    def test_nulDelimited(self) -> None:
        """
        NUL-terminated frames are echoed NUL-terminated; a last frame
        without its NUL is answered at the half-close.
        """
        port = serve(self, "delimiter:00")
        reply = netcat(port, r"one\000two\000three")
        self.assertEqual(reply, b"one\x00two\x00three\x00")

    def test_fixed(self) -> None:
        """
        Every 8 bytes is a frame and is echoed; 3 trailing bytes, not a
        frame, get no reply.
        """
        port = serve(self, "fixed:8")
        reply = netcat(port, "ABCDEFGH12345678xyz")
        self.assertEqual(reply, b"ABCDEFGH12345678")
