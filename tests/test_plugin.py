"""
Tests for the C{twistd tcpcomm} plugin as users run it: the real twistd in a
subprocess, started from an empty temporary directory with a clean
environment, so that what is tested is the I{installed} package and plugin,
not the source tree these tests sit in.

The clients here are plain blocking sockets with timeouts: the server is
another process, so no reactor is needed in this one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""
The checkout these tests belong to.
"""

START_TIMEOUT = 20.0
"""
Seconds a server may take to accept connections.
"""

EXIT_TIMEOUT = 20.0
"""
Seconds a process may take to exit once it should.
"""

IO_TIMEOUT = 10.0
"""
Seconds any one socket operation may block.
"""

MiB = 1024 * 1024


def twistdCommand() -> list[str]:
    """
    The command that runs twistd with this Python: the C{twistd} script
    installed next to C{sys.executable}, or else the same entry point run
    through C{-c} (C{python -m twisted} is C{twist}, and
    C{twisted.scripts.twistd} has no C{__main__} block).
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [
        sys.executable,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
    ]


def cleanEnvironment() -> dict[str, str]:
    """
    An environment with nothing but C{PATH}: no C{PYTHONPATH} or other
    C{PYTHON*} variable can put the source tree on C{sys.path}.
    """
    return {"PATH": os.environ.get("PATH", os.defpath)}


def temporaryDirectory(testCase: SynchronousTestCase) -> Path:
    """
    A fresh, empty directory outside the checkout, removed at clean-up.

    (C{TestCase.mktemp} makes a path relative to the current directory,
    which under pytest is the checkout itself.)
    """
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="tcpcomm-test-"))
    testCase.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def endProcess(process: subprocess.Popen[bytes]) -> None:
    """
    Kill C{process} by its PID if it is still running, and reap it.
    """
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=EXIT_TIMEOUT)


class Child:
    """
    A subprocess whose output goes to files (so that no pipe can fill up
    and stall it), killed and reaped at its test's clean-up.

    @ivar process: The running process.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        args: Sequence[str],
        cwd: Path,
        environment: dict[str, str] | None = None,
    ) -> None:
        """
        Start C{args} in C{cwd} with a clean environment, plus
        C{environment}.
        """
        outputs = temporaryDirectory(testCase)
        self._stdout = outputs / "stdout"
        self._stderr = outputs / "stderr"
        with self._stdout.open("wb") as stdout, self._stderr.open("wb") as stderr:
            self.process = subprocess.Popen(
                list(args),
                cwd=cwd,
                env={**cleanEnvironment(), **(environment or {})},
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        testCase.addCleanup(endProcess, self.process)

    def wait(self) -> int:
        """
        Wait (bounded) for the process to exit; return its status.
        """
        return self.process.wait(timeout=EXIT_TIMEOUT)

    def sendTerminate(self) -> None:
        """
        Send SIGTERM to the process by its PID without waiting for it.
        """
        os.kill(self.process.pid, signal.SIGTERM)

    def terminate(self) -> int:
        """
        Send SIGTERM to the process by its PID, and wait (bounded) for it to
        exit; return its status.
        """
        os.kill(self.process.pid, signal.SIGTERM)
        return self.wait()

    def stdout(self) -> str:
        """
        What the process wrote to its standard output so far.
        """
        return self._stdout.read_text(errors="replace")

    def stderr(self) -> str:
        """
        What the process wrote to its standard error so far.
        """
        return self._stderr.read_text(errors="replace")

    def output(self) -> str:
        """
        Standard output, then standard error.
        """
        return self.stdout() + self.stderr()


def runToEnd(
    testCase: SynchronousTestCase,
    args: Sequence[str],
    cwd: Path,
    environment: dict[str, str] | None = None,
) -> Child:
    """
    Run C{args} in C{cwd} with a clean environment (plus C{environment})
    until it exits (bounded).
    """
    child = Child(testCase, args, cwd, environment)
    child.wait()
    return child


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def waitUntilAccepting(child: Child, port: int) -> bool:
    """
    Poll (bounded by L{START_TIMEOUT}) until something accepts connections
    on 127.0.0.1:C{port}.

    @return: C{True} once it does; C{False} if C{child} exits first.
    @raise AssertionError: If time runs out.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return True
    raise AssertionError(
        f"nothing accepted on port {port} in {START_TIMEOUT:g} s:\n{child.output()}"
    )


def startTwistd(
    testCase: SynchronousTestCase,
    args: Sequence[str],
    cwd: Path,
    environment: dict[str, str] | None = None,
    twistdArgs: Sequence[str] = ("--pidfile=",),
) -> tuple[Child, int]:
    """
    Run C{twistd -n --pidfile= tcpcomm --port tcp:PORT:interface=127.0.0.1}
    with C{args} after it, on a free port, and wait until it accepts
    connections.  A few ports are tried, in case another process takes one
    first.

    @param environment: Added to the clean environment.
    @param twistdArgs: twistd's options after C{-n}.
    @return: The running twistd and its port.
    """
    for _ in range(5):
        port = freePort()
        child = Child(
            testCase,
            [
                *twistdCommand(),
                "-n",
                *twistdArgs,
                "tcpcomm",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
                *args,
            ],
            cwd,
            environment,
        )
        if waitUntilAccepting(child, port):
            return child, port
        if "Couldn't listen" not in child.output():
            testCase.fail(f"twistd exited with {child.wait()}:\n{child.output()}")
    testCase.fail("twistd found no free port in 5 tries")


def talk(port: int, data: bytes) -> tuple[bytes, int]:
    """
    Connect to 127.0.0.1:C{port} with a blocking socket, send C{data},
    half-close, and read until the server closes.  A second thread sends
    while this one reads, so that a large echo cannot fill both directions'
    buffers and stall.

    @return: Every byte received, and the client's own port number (the
        peer port the server logs).
    """
    received: list[bytes] = []
    failures: list[BaseException] = []
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as client:
        clientPort: int = client.getsockname()[1]

        def send() -> None:
            try:
                client.sendall(data)
                client.shutdown(socket.SHUT_WR)
            except BaseException as e:
                failures.append(e)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            while chunk := client.recv(65536):
                received.append(chunk)
        finally:
            sender.join(IO_TIMEOUT * 2)
    if failures:
        raise failures[0]
    if sender.is_alive():
        raise AssertionError("sending did not finish")
    return b"".join(received), clientPort


def connectionLogLine(output: str, clientPort: int) -> str:
    """
    The one log line saying that the client from 127.0.0.1:C{clientPort}
    disconnected.
    """
    peer = f"127.0.0.1:{clientPort} "
    lines = [line for line in output.splitlines() if peer in line and "disconn" in line]
    if len(lines) != 1:
        raise AssertionError(f"not one disconnection line for {peer!r}:\n{output}")
    return lines[0]


class RealTwistdTests(SynchronousTestCase):
    """
    The installed plugin served by the real C{twistd}, talked to over
    127.0.0.1 and stopped with SIGTERM.
    """

    def test_lineMode(self) -> None:
        """
        In the default line mode each line comes back ending in LF (a CR
        before the LF dropped, the last unterminated line answered at
        half-close); on SIGTERM twistd logs the connection with its byte
        counts, shuts down, and exits by re-raising SIGTERM.
        """
        server, port = startTwistd(self, [], temporaryDirectory(self))
        reply, clientPort = talk(port, b"hello\r\nworld")
        self.assertEqual(reply, b"hello\nworld\n")
        self.assertEqual(server.terminate(), -signal.SIGTERM)
        output = server.output()
        self.assertIn("Server Shut Down.", output)
        self.assertNotIn("Traceback", output)
        line = connectionLogLine(output, clientPort)
        self.assertIn("12 bytes in", line)
        self.assertIn("12 bytes out", line)

    def test_echoModeMegabyte(self) -> None:
        """
        With C{--protocol echo} a 1 MiB random payload comes back unchanged,
        and the log counts it in and out.
        """
        server, port = startTwistd(
            self, ["--protocol", "echo"], temporaryDirectory(self)
        )
        data = os.urandom(MiB)
        reply, clientPort = talk(port, data)
        self.assertEqual(len(reply), len(data))
        self.assertTrue(reply == data, "the echoed bytes differ from those sent")
        self.assertEqual(server.terminate(), -signal.SIGTERM)
        output = server.output()
        self.assertIn("Server Shut Down.", output)
        line = connectionLogLine(output, clientPort)
        self.assertIn(f"{MiB} bytes in", line)
        self.assertIn(f"{MiB} bytes out", line)

    def test_handlerFromWorkingDirectory(self) -> None:
        """
        C{--handler MODULE:CALLABLE} finds MODULE in twistd's working
        directory, and C{--delimiter crlf} ends its replies in CRLF.
        """
        cwd = temporaryDirectory(self)
        (cwd / "shouty.py").write_text(
            "def shout(line):\n    return line.upper()\n", encoding="utf-8"
        )
        server, port = startTwistd(
            self, ["--handler", "shouty:shout", "--delimiter", "crlf"], cwd
        )
        reply, _ = talk(port, b"hello\nworld\r\n")
        self.assertEqual(reply, b"HELLO\r\nWORLD\r\n")
        self.assertEqual(server.terminate(), -signal.SIGTERM)


class PluginDiscoveryTests(SynchronousTestCase):
    """
    The installed package makes the plugin visible to twistd from anywhere.
    """

    def test_helpListsPlugin(self) -> None:
        """
        C{twistd --help} run outside the checkout lists C{tcpcomm} with its
        description.
        """
        child = runToEnd(self, [*twistdCommand(), "--help"], temporaryDirectory(self))
        self.assertEqual(child.process.returncode, 0, child.output())
        self.assertRegex(
            child.stdout(), re.compile(r"^\s+tcpcomm\s+A TCP server", re.MULTILINE)
        )

    def test_installedPluginFound(self) -> None:
        """
        Outside the checkout, C{getPlugins(IServiceMaker)} finds exactly one
        C{tcpcomm} plugin, in an existing file; the plugin file and the
        C{tcpcomm} package come from the checkout exactly when the install
        is editable (a virtualenv inside the checkout is an install, not
        the checkout); and the installed files include no C{dropin.cache}.
        """
        script = """\
import importlib.metadata, json, sys, sysconfig
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "tcpcomm"]
import twisted.plugins.tcpcomm_plugin as plugin
makers[0].options  # imports tcpcomm.tap, as twistd does
dist = importlib.metadata.distribution("tcpcomm")
direct = json.loads(dist.read_text("direct_url.json") or "{}")
print(json.dumps({
    "count": len(makers),
    "same": makers[0] is plugin.tcpcomm,
    "module": makers[0].module,
    "pluginFile": plugin.__file__,
    "packageFile": sys.modules["tcpcomm"].__file__,
    "editable": direct.get("dir_info", {}).get("editable", False),
    "installed": [str(f) for f in dist.files or []],
    "installDirs": [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")],
}))
"""
        child = runToEnd(self, [sys.executable, "-c", script], temporaryDirectory(self))
        self.assertEqual(child.process.returncode, 0, child.output())
        found = json.loads(child.stdout())
        self.assertEqual(found["count"], 1)
        self.assertTrue(found["same"])
        self.assertEqual(found["module"], "tcpcomm.tap")
        pluginFile = Path(found["pluginFile"]).resolve()
        packageFile = Path(found["packageFile"]).resolve()
        self.assertTrue(pluginFile.is_file(), pluginFile)
        self.assertEqual(pluginFile.name, "tcpcomm_plugin.py")
        self.assertEqual(pluginFile.parent.parts[-2:], ("twisted", "plugins"))
        installDirs = [Path(d).resolve() for d in found["installDirs"]]
        fromCheckout = [
            path.is_relative_to(SOURCE_ROOT)
            and not any(path.is_relative_to(d) for d in installDirs)
            for path in (pluginFile, packageFile)
        ]
        self.assertEqual(fromCheckout, [found["editable"]] * 2, found)
        self.assertEqual(
            [f for f in found["installed"] if f.endswith("dropin.cache")], []
        )

    def test_dropinCacheNotTracked(self) -> None:
        """
        The checkout's C{twisted/plugins/dropin.cache} (which twistd writes
        into an editable install) is git-ignored and not tracked.
        """
        git = shutil.which("git")
        if git is None or not (SOURCE_ROOT / ".git").exists():
            raise SkipTest("needs git and the git checkout")
        cache = "twisted/plugins/dropin.cache"
        tracked = subprocess.run(
            [git, "-C", str(SOURCE_ROOT), "ls-files", "--", cache],
            capture_output=True,
            timeout=EXIT_TIMEOUT,
            check=False,
        )
        if tracked.returncode != 0:
            raise SkipTest(f"git cannot read the checkout: {tracked.stderr!r}")
        self.assertEqual(tracked.stdout, b"")
        ignored = subprocess.run(
            [git, "-C", str(SOURCE_ROOT), "check-ignore", "-q", "--", cache],
            capture_output=True,
            timeout=EXIT_TIMEOUT,
            check=False,
        )
        self.assertEqual(ignored.returncode, 0, f"{cache} is not git-ignored")


class BadCommandLineTests(SynchronousTestCase):
    """
    Mistakes on the real twistd's command line end it with one readable
    line and no traceback.
    """

    def assertOptionError(self, args: Sequence[str], detail: str) -> None:
        """
        Assert that C{twistd -n --pidfile= tcpcomm *args} exits with status
        1, writing nothing but one C{twistd tcpcomm: error:} line to
        standard error, mentioning C{detail}.
        """
        child = runToEnd(
            self,
            [*twistdCommand(), "-n", "--pidfile=", "tcpcomm", *args],
            temporaryDirectory(self),
        )
        self.assertEqual(child.process.returncode, 1, child.output())
        self.assertNotIn("Traceback", child.output())
        [line] = child.stderr().splitlines()
        self.assertTrue(line.startswith("twistd tcpcomm: error: "), line)
        self.assertIn(detail, line)

    def test_unknownProtocol(self) -> None:
        """
        C{--protocol nope} is one error line naming it.
        """
        self.assertOptionError(["--protocol", "nope"], "'nope'")

    def test_unknownEndpoint(self) -> None:
        """
        C{--port bogus:1} is one error line naming it.
        """
        self.assertOptionError(["--port", "bogus:1"], "bogus:1")

    def test_unimportableHandler(self) -> None:
        """
        C{--handler no.such:f} is one error line naming it.
        """
        self.assertOptionError(["--handler", "no.such:f"], "no.such:f")

    def test_portOutOfRange(self) -> None:
        """
        C{--port 99999} is one error line naming the number, not an
        C{OverflowError} traceback.
        """
        self.assertOptionError(["--port", "99999"], "'99999'")

    def test_unixSocketInMissingDirectory(self) -> None:
        """
        A UNIX socket in a directory that does not exist is one error line
        naming it, not a C{FileNotFoundError} traceback.
        """
        self.assertOptionError(
            ["--port", "unix:/nonexistent/dir/sock"], "No such file or directory"
        )

    def test_busyPort(self) -> None:
        """
        A port another listener holds ends twistd with status 1 and exactly
        one error line saying it couldn't listen.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            busy = holder.getsockname()[1]
            child = runToEnd(
                self,
                [
                    *twistdCommand(),
                    "-n",
                    "--pidfile=",
                    "tcpcomm",
                    "--port",
                    f"tcp:{busy}:interface=127.0.0.1",
                ],
                temporaryDirectory(self),
            )
        output = child.output()
        self.assertEqual(child.process.returncode, 1, output)
        self.assertNotIn("Traceback", output)
        [line] = [line for line in output.splitlines() if "error:" in line]
        self.assertIn("twistd tcpcomm: error: ", line)
        self.assertIn("Couldn't listen", line)
        self.assertIn(str(busy), line)
