"""
Tests for how C{twistd tcpcomm} starts, and fails to: one readable line and
exit status 1 in the foreground, as a daemon and with a log file; no PID
file left behind (and none at all in the foreground unless asked for); a
handler's directory that cannot stand in for other modules; plain TCP
without the C{tls} extra.

The real twistd runs in a subprocess from an empty temporary directory on
127.0.0.1; every daemon started is stopped by the PID in its PID file.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from twisted.internet import reactor
from twisted.python.lockfile import FilesystemLock
from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm import workers
from tcpcomm.line import LineFactory
from tcpcomm.tap import makeService
from tcpcomm.workers import checkPortsBindable, failStartup
from tests.test_plugin import (
    EXIT_TIMEOUT,
    Child,
    freePort,
    runToEnd,
    startTwistd,
    talk,
    temporaryDirectory,
    twistdCommand,
)
from tests.test_tap import parse


@contextmanager
def busyPort() -> Iterator[int]:
    """
    A port on 127.0.0.1 that another socket listens on meanwhile.
    """
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def assertOneErrorLine(
    testCase: SynchronousTestCase, child: Child, *details: str
) -> str:
    """
    Assert that C{child} exited with status 1, writing nothing but one
    C{twistd tcpcomm: error:} line, mentioning every one of C{details}, to
    standard error, and no traceback anywhere.

    @return: The line.
    """
    output = child.output()
    testCase.assertEqual(child.process.returncode, 1, output)
    testCase.assertNotIn("Traceback", output)
    testCase.assertEqual(child.stdout(), "")
    [line] = child.stderr().splitlines()
    testCase.assertTrue(line.startswith("twistd tcpcomm: error: "), line)
    for detail in details:
        testCase.assertIn(detail, line)
    return line


def stopDaemon(pidfile: Path) -> None:
    """
    Stop the daemon whose PID C{pidfile} holds, if it still runs, and wait
    (bounded) until it has removed the file.
    """
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + EXIT_TIMEOUT
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if pidfile.exists():
        os.kill(pid, signal.SIGKILL)


class DaemonStartupTests(SynchronousTestCase):
    """
    A start-up failure reaches the terminal as one line with status 1, in
    every twistd mode, and leaves no PID file.
    """

    def daemon(self, cwd: Path, *args: str) -> Child:
        """
        Run C{twistd --pidfile p.pid --logfile t.log tcpcomm *args} (a
        daemon) in C{cwd} until the starting process exits (bounded: before
        the fix it never did), stopping any daemon it left at clean-up.
        """
        self.addCleanup(stopDaemon, cwd / "p.pid")
        return runToEnd(
            self,
            [
                *twistdCommand(),
                "--pidfile",
                "p.pid",
                "--logfile",
                "t.log",
                "tcpcomm",
                *args,
            ],
            cwd,
        )

    def test_busyPortDaemon(self) -> None:
        """
        A daemon whose port is busy exits with status 1 and one line saying
        it couldn't listen, and leaves no PID file.
        """
        cwd = temporaryDirectory(self)
        with busyPort() as busy:
            child = self.daemon(cwd, "--port", f"tcp:{busy}:interface=127.0.0.1")
        assertOneErrorLine(self, child, "Couldn't listen", str(busy))
        self.assertFalse((cwd / "p.pid").exists())

    def test_missingDirectoryDaemon(self) -> None:
        """
        A daemon whose UNIX socket's directory is missing exits with status
        1 and one line naming the socket and the reason.
        """
        cwd = temporaryDirectory(self)
        child = self.daemon(cwd, "--port", f"unix:{cwd}/missing/sock")
        assertOneErrorLine(self, child, "missing/sock", "No such file or directory")
        self.assertFalse((cwd / "p.pid").exists())

    def test_busyPortWorkersDaemon(self) -> None:
        """
        With C{--workers}, a busy port is the same one line and status 1.
        """
        cwd = temporaryDirectory(self)
        with busyPort() as busy:
            child = self.daemon(
                cwd, "--workers", "2", "--port", f"tcp:{busy}:interface=127.0.0.1"
            )
        assertOneErrorLine(self, child, "Couldn't listen", str(busy))
        self.assertFalse((cwd / "p.pid").exists())

    def test_busyPortLogFile(self) -> None:
        """
        In the foreground with C{--logfile}, a busy port is one line on
        standard error (not only a log record), and status 1.
        """
        cwd = temporaryDirectory(self)
        with busyPort() as busy:
            child = runToEnd(
                self,
                [
                    *twistdCommand(),
                    "-n",
                    "--logfile",
                    "t.log",
                    "tcpcomm",
                    "--port",
                    f"tcp:{busy}:interface=127.0.0.1",
                ],
                cwd,
            )
        assertOneErrorLine(self, child, "Couldn't listen", str(busy))

    def test_unwritableRunnerFiles(self) -> None:
        """
        A log file or PID file in a missing directory, or a log file that
        is a directory, is one line on standard error and status 1, before
        anything is bound or forked.
        """
        cwd = temporaryDirectory(self)
        port = f"tcp:{freePort()}:interface=127.0.0.1"
        for runnerOptions, detail in (
            (["-n", "--logfile", "/nonexistent/t.log"], "no such directory"),
            (["-n", "--logfile", "."], "it is a directory"),
            (["--pidfile", "/nonexistent/t.pid", "--logfile", "t.log"], "PID file"),
        ):
            child = runToEnd(
                self,
                [*twistdCommand(), *runnerOptions, "tcpcomm", "--port", port],
                cwd,
            )
            assertOneErrorLine(self, child, "cannot write the", detail)
        self.assertEqual(os.listdir(cwd), [])

    def test_busyPortForeground(self) -> None:
        """
        In the foreground, logging to standard output, a busy port is one
        line on standard error before any log line, and status 1.
        """
        cwd = temporaryDirectory(self)
        with busyPort() as busy:
            child = runToEnd(
                self,
                [
                    *twistdCommand(),
                    "-n",
                    "tcpcomm",
                    "--port",
                    f"tcp:{busy}:interface=127.0.0.1",
                ],
                cwd,
            )
        assertOneErrorLine(self, child, "Couldn't listen", str(busy))

    def test_busyPortTwist(self) -> None:
        """
        Under C{twist} (which binds as it starts the service), a busy port
        is the same one line and status 1.
        """
        cwd = temporaryDirectory(self)
        with busyPort() as busy:
            child = runToEnd(
                self,
                [
                    sys.executable,
                    "-m",
                    "twisted",
                    "tcpcomm",
                    "--port",
                    f"tcp:{busy}:interface=127.0.0.1",
                ],
                cwd,
            )
        assertOneErrorLine(self, child, "Couldn't listen", str(busy))

    def test_busyPortRunDirectoryDaemon(self) -> None:
        """
        With C{--rundir} (ports are then only bound after the fork), a
        daemon whose port is busy still exits with status 1, through
        twistd's own report, and leaves no PID file.
        """
        cwd = temporaryDirectory(self)
        pidfile = cwd / "p.pid"
        self.addCleanup(stopDaemon, pidfile)
        with busyPort() as busy:
            child = runToEnd(
                self,
                [
                    *twistdCommand(),
                    "--rundir",
                    str(cwd),
                    "--pidfile",
                    str(pidfile),
                    "--logfile",
                    str(cwd / "t.log"),
                    "tcpcomm",
                    "--port",
                    f"tcp:{busy}:interface=127.0.0.1",
                ],
                cwd,
            )
        output = child.output()
        self.assertEqual(child.process.returncode, 1, output)
        self.assertIn(f"Couldn't listen on 127.0.0.1:{busy}", output)
        self.assertNotIn("Traceback", output)
        self.assertFalse(pidfile.exists())

    def test_daemonServes(self) -> None:
        """
        A daemon on a UNIX socket starts (status 0), writes its PID file,
        holds the socket's lock under its own PID, serves, and on SIGTERM
        removes its PID file and socket.
        """
        cwd = temporaryDirectory(self)
        child = self.daemon(cwd, "--port", f"unix:{cwd}/s.sock")
        self.assertEqual(child.process.returncode, 0, child.output())
        pid = int((cwd / "p.pid").read_text())
        self.assertEqual(os.readlink(cwd / "s.sock.lock"), str(pid))
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(EXIT_TIMEOUT)
            client.connect(str(cwd / "s.sock"))
            client.sendall(b"hi\n")
            client.shutdown(socket.SHUT_WR)
            self.assertEqual(client.recv(100), b"hi\n")
        stopDaemon(cwd / "p.pid")
        self.assertFalse((cwd / "p.pid").exists())
        self.assertFalse((cwd / "s.sock").exists())


class CheckPortsBindableTests(SynchronousTestCase):
    """
    L{checkPortsBindable} finds the ports that cannot be bound, quietly,
    and leaves none bound.
    """

    def assertOneLine(self, descriptions: Sequence[str], *details: str) -> None:
        """
        Assert that checking C{descriptions} raises L{SystemExit} with one
        C{twistd tcpcomm: error:} line mentioning C{details}.
        """
        error = self.assertRaises(SystemExit, checkPortsBindable, descriptions)
        message = str(error.code)
        self.assertTrue(message.startswith("twistd tcpcomm: error: "), message)
        self.assertNotIn("\n", message)
        for detail in details:
            self.assertIn(detail, message)

    def test_busyTCP(self) -> None:
        """
        A TCP port another socket listens on is refused, naming it.
        """
        with busyPort() as busy:
            self.assertOneLine(
                ["tcp:0:interface=127.0.0.1", f"tcp:{busy}:interface=127.0.0.1"],
                "Couldn't listen",
                str(busy),
            )

    def test_portsClashingWithEachOther(self) -> None:
        """
        Two ports that clash with each other (the same TCP port twice, the
        same UNIX path twice) are refused in one line, though each alone
        could be bound; nothing stays bound or behind.
        """
        port = freePort()
        tcp = f"tcp:{port}:interface=127.0.0.1"
        self.assertOneLine([tcp, tcp], "Couldn't listen", str(port))
        directory = temporaryDirectory(self)
        unix = f"unix:{directory}/s.sock:lockfile=0"
        self.assertOneLine([unix, unix], "s.sock")
        self.assertEqual(os.listdir(directory), [])
        checkPortsBindable([tcp, unix])

    def test_freeLeftUnbound(self) -> None:
        """
        Ports that can be bound are left unbound (and the socket file of a
        UNIX one, and its lock, removed).
        """
        port = freePort()
        directory = temporaryDirectory(self)
        checkPortsBindable(
            [f"tcp:{port}:interface=127.0.0.1", f"unix:{directory}/s.sock"]
        )
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))
            again.listen()
        self.assertEqual(os.listdir(directory), [])

    def test_unixLocked(self) -> None:
        """
        A UNIX socket whose lock a running process holds is refused.
        """
        directory = temporaryDirectory(self)
        lock = FilesystemLock(str(directory / "s.sock.lock"))
        self.assertTrue(lock.lock())
        self.addCleanup(lock.unlock)
        self.assertOneLine([f"unix:{directory}/s.sock"], "Already listening")

    def test_unixLeftBehind(self) -> None:
        """
        A UNIX socket file a dead server left behind is no reason to refuse
        (Twisted replaces it under its lock), unless there is no lock.
        """
        path = temporaryDirectory(self) / "s.sock"
        with socket.socket(socket.AF_UNIX) as old:
            old.bind(str(path))
        checkPortsBindable([f"unix:{path}"])
        self.assertTrue(path.exists())
        self.assertOneLine([f"unix:{path}:lockfile=0"], "Address already in use")

    def test_unixMissingDirectory(self) -> None:
        """
        A UNIX socket in a missing directory is refused, with or without a
        lock file.
        """
        missing = temporaryDirectory(self) / "missing"
        for description in (f"unix:{missing}/s", f"unix:{missing}/s:lockfile=0"):
            self.assertOneLine([description], "No such file or directory")

    def test_otherKindsUnchecked(self) -> None:
        """
        Endpoints other than TCP, TCP6, UNIX and TLS are not checked.
        """
        checkPortsBindable(["systemd:domain=INET:index=0"])

    def test_checkedBeforeServiceUnderTwistd(self) -> None:
        """
        L{makeService}, called as twistd calls it, refuses a busy port at
        once, before anything is started.
        """
        config = ServerOptions()
        with busyPort() as busy:
            config.parseOptions(
                ["tcpcomm", "--port", f"tcp:{busy}:interface=127.0.0.1"]
            )
            error = self.assertRaises(SystemExit, makeService, config.subOptions)
        self.assertIn("Couldn't listen", str(error.code))


class FailStartupTests(SynchronousTestCase):
    """
    L{failStartup} ends start-up in the way that reaches the user.
    """

    def test_outsideTwistd(self) -> None:
        """
        Without twistd's options, it raises L{SystemExit} with the line.
        """
        error = self.assertRaises(SystemExit, failStartup, "twistd tcpcomm: error: x")
        self.assertEqual(error.code, "twistd tcpcomm: error: x")

    def test_daemonStatusPipe(self) -> None:
        """
        In a daemon, the reason goes to twistd's status pipe (which the
        waiting parent prints) and the pipe is closed; its PID file is
        removed; the exit status is 1.
        """
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        pidfile = temporaryDirectory(self) / "p.pid"
        pidfile.write_text(str(os.getpid()))
        options = {"statusPipe": writeEnd, "pidfile": str(pidfile)}
        error = self.assertRaises(
            SystemExit, failStartup, "twistd tcpcomm: error: busy", options
        )
        self.assertEqual(error.code, 1)
        self.assertEqual(os.read(readEnd, 200), b"1 busy")
        self.assertEqual(os.read(readEnd, 200), b"")
        self.assertFalse(pidfile.exists())

    def test_foregroundStandardError(self) -> None:
        """
        In the foreground, the line goes to the original standard error
        (logging has redirected C{sys.stderr}), and a PID file naming
        another process is left alone.
        """
        stderr = io.StringIO()
        self.patch(sys, "__stderr__", stderr)
        pidfile = temporaryDirectory(self) / "p.pid"
        pidfile.write_text("1")
        options = {"pidfile": str(pidfile)}
        error = self.assertRaises(
            SystemExit, failStartup, "twistd tcpcomm: error: busy", options
        )
        self.assertEqual(error.code, 1)
        self.assertEqual(stderr.getvalue(), "twistd tcpcomm: error: busy\n")
        self.assertTrue(pidfile.exists())

    def test_serviceInDaemon(self) -> None:
        """
        The service, started in a daemon (ports bound after the fork, as
        with C{--rundir}), reports a busy port through the status pipe.
        """
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        with busyPort() as busy:
            service = makeService(
                parse(self, ["--port", f"tcp:{busy}:interface=127.0.0.1"])
            )
            service._twistdOptions = {  # type: ignore[attr-defined]
                "statusPipe": writeEnd,
                "pidfile": "",
            }
            error = self.assertRaises(SystemExit, service.privilegedStartService)
        self.assertEqual(error.code, 1)
        self.assertIn(b"Couldn't listen", os.read(readEnd, 200))


class ForegroundPIDFileTests(SynchronousTestCase):
    """
    C{twistd -n tcpcomm} writes no PID file unless asked for one.
    """

    def pidfile(self, args: Sequence[str]) -> str:
        """
        The PID file twistd would write for C{args}.
        """
        config = ServerOptions()
        config.parseOptions(args)
        pidfile: str = config["pidfile"]
        return pidfile

    def test_noneInForeground(self) -> None:
        """
        With C{-n} and no C{--pidfile}: none.  (Not tried with
        C{--debug}, which also runs in the foreground: parsing it turns on
        post-mortem debugging in this process.)
        """
        self.assertEqual(self.pidfile(["-n", "tcpcomm"]), "")

    def test_askedFor(self) -> None:
        """
        C{--pidfile}, even naming twistd's default, is written.
        """
        typed = "".join(["twistd", ".pid"])  # a string of its own, as argv's are
        self.assertEqual(
            self.pidfile(["-n", "--pidfile", typed, "tcpcomm"]),
            os.path.abspath("twistd.pid"),
        )

    def test_daemonKeepsDefault(self) -> None:
        """
        A daemon keeps twistd's C{twistd.pid}: it is how it is stopped.
        """
        self.assertEqual(self.pidfile(["tcpcomm"]), os.path.abspath("twistd.pid"))

    def test_twoServersOneDirectory(self) -> None:
        """
        Two C{twistd -n tcpcomm} servers run side by side in one directory
        (the second no longer refused as "Another twistd server"), and
        neither writes C{twistd.pid}.
        """
        cwd = temporaryDirectory(self)
        first, firstPort = startTwistd(self, [], cwd, twistdArgs=())
        second, secondPort = startTwistd(self, [], cwd, twistdArgs=())
        self.assertEqual(talk(firstPort, b"one\n")[0], b"one\n")
        self.assertEqual(talk(secondPort, b"two\n")[0], b"two\n")
        self.assertFalse((cwd / "twistd.pid").exists())
        self.assertEqual(first.terminate(), -signal.SIGTERM)
        self.assertEqual(second.terminate(), -signal.SIGTERM)


PLANTED = """\
open({marker!r}, "w").close()
raise ImportError("planted")
"""


class PlantedModuleTests(SynchronousTestCase):
    """
    Files next to a handler cannot stand in for other modules.
    """

    def test_plantedResourceNotRun(self) -> None:
        """
        A C{resource.py} planted in the directory a C{--handler} is loaded
        from is not run when twistd imports C{resource} at start-up
        (raising the open-files limit).
        """
        cwd = temporaryDirectory(self)
        marker = temporaryDirectory(self) / "planted-ran"
        (cwd / "handler.py").write_text("def h(line):\n    return line\n")
        (cwd / "resource.py").write_text(PLANTED.format(marker=str(marker)))
        server, port = startTwistd(self, ["--handler", "handler:h"], cwd)
        self.assertEqual(talk(port, b"hi\n")[0], b"hi\n")
        self.assertEqual(server.terminate(), -signal.SIGTERM, server.output())
        self.assertFalse(marker.exists())


NO_OPENSSL = """\
import sys
sys.modules["OpenSSL"] = None  # as if pyOpenSSL were not installed
"""


class WithoutTLSExtraTests(SynchronousTestCase):
    """
    Plain TCP needs no C{tls} extra (pyOpenSSL); a TLS port without it is
    one line.
    """

    def test_inheritedPlainPorts(self) -> None:
        """
        A worker's plain TCP port services are built without importing
        TLS support.
        """
        saved = {name: sys.modules.get(name) for name in ("tcpcomm.tls", "OpenSSL")}

        def restore() -> None:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module

        self.addCleanup(restore)
        sys.modules.pop("tcpcomm.tls", None)
        sys.modules["OpenSSL"] = None  # type: ignore[assignment]
        services = workers.inheritedPortServices(
            reactor, ["tcp:0:interface=127.0.0.1"], [1000], LineFactory()
        )
        self.assertEqual(len(services), 1)
        self.assertNotIn("tcpcomm.tls", sys.modules)

    def noOpenSSL(self) -> dict[str, str]:
        """
        An environment in which pyOpenSSL cannot be imported, in twistd and
        in the workers it starts.
        """
        site = temporaryDirectory(self)
        (site / "sitecustomize.py").write_text(NO_OPENSSL)
        return {"PYTHONPATH": str(site)}

    def test_workersServe(self) -> None:
        """
        C{--workers 2} serves plain TCP without pyOpenSSL, and no worker
        fails.
        """
        cwd = temporaryDirectory(self)
        server, port = startTwistd(
            self, ["--workers", "2"], cwd, environment=self.noOpenSSL()
        )
        deadline = time.monotonic() + EXIT_TIMEOUT
        while server.output().count("Worker ready") < 2:
            self.assertLess(time.monotonic(), deadline, server.output())
            time.sleep(0.05)
        self.assertEqual(talk(port, b"hi\n")[0], b"hi\n")
        self.assertEqual(server.terminate(), -signal.SIGTERM, server.output())
        self.assertNotIn("OpenSSL", server.output())
        self.assertNotIn("restarting", server.output())

    def test_tlsPortOneLine(self) -> None:
        """
        A TLS port without pyOpenSSL is one line saying to install the
        C{tls} extra.
        """
        cwd = temporaryDirectory(self)
        child = runToEnd(
            self,
            [
                *twistdCommand(),
                "-n",
                "tcpcomm",
                "--port",
                "ssl:0:privateKey=key.pem:certKey=cert.pem",
            ],
            cwd,
            self.noOpenSSL(),
        )
        assertOneErrorLine(self, child, "TLS needs pyOpenSSL")
