"""
Tests for C{twistd tcpcomm --workers N} (L{tcpcomm.workers}): the options
and the worker command line, the supervisor's restart and shutdown policy
with a fake reactor, sharing one listening socket between a holder and an
adopter in this process, and the real twistd with worker processes.

The real-twistd tests start the supervisor with the helpers of
L{tests.test_plugin}; the workers are its children.  At clean-up the
supervisor is killed by its PID if it is still running, and so is every
worker it logged starting that is still running (by its PID, after checking
that it is a tcpcomm worker).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import stat
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import (
    CannotListenError,
    ProcessDone,
    ProcessTerminated,
    ReactorNotRunning,
)
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import (
    LogLevel,
    formatEvent,
)
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm import workers
from tcpcomm.certificates import makeCertificateAuthority, writeServerFiles
from tcpcomm.client import exchange
from tcpcomm.line import LineFactory
from tcpcomm.stopsignals import StopSignalGuard
from tcpcomm.tap import Options, TcpcommService, makeService
from tcpcomm.workers import (
    KILL_MARGIN,
    MAX_QUICK_FAILURES,
    MAX_WORKERS,
    WORKER_LOGGER,
    SupervisorWatch,
    WorkerSupervisor,
    bindPorts,
    checkWorkerOptions,
    cpuCount,
    inheritedPortServices,
    workerArguments,
    workerLogObserver,
)
from tests.test_line import LogCapture
from tests.test_plugin import (
    IO_TIMEOUT,
    Child,
    runToEnd,
    startTwistd,
    talk,
    temporaryDirectory,
    twistdCommand,
)
from tests.test_shutdown import SLOW_HANDLER, connect, readToEnd
from tests.test_tap import parse, usageError

# Options and the worker command line.


class WorkerOptionsTests(SynchronousTestCase):
    """
    C{--workers} and C{--worker-fds} as L{Options} parses them.
    """

    def test_defaultIsOneProcess(self) -> None:
        """
        By default there is one worker, no inherited descriptors, and
        L{makeService} builds the single-process service it always did.
        """
        options = parse(self, ["--port", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(options["workers"], 1)
        self.assertIsNone(options["worker-fds"])
        self.assertIsInstance(makeService(options, reactor), TcpcommService)

    def test_workers(self) -> None:
        """
        C{--workers N} asks for N processes, and L{makeService} builds a
        L{WorkerSupervisor} for that many.
        """
        options = parse(self, ["--workers", "4"])
        self.assertEqual(options["workers"], 4)
        service = makeService(options, reactor)
        assert isinstance(service, WorkerSupervisor)
        self.assertEqual(service.count, 4)

    def test_zeroIsOnePerCPU(self) -> None:
        """
        C{--workers 0} means one per CPU this process may run on.
        """
        self.assertEqual(parse(self, ["--workers", "0"])["workers"], cpuCount())

    def test_badCounts(self) -> None:
        """
        Negative, fractional, non-numeric and too large counts are one-line
        mistakes naming the value.
        """
        for text in ["-1", "1.5", "abc", "", str(MAX_WORKERS + 1)]:
            message = usageError(self, ["--workers", text])
            self.assertIn(repr(text), message)
            self.assertIn("worker processes", message)
            self.assertNotIn("\n", message)
        self.assertEqual(parse(self, ["--workers", str(MAX_WORKERS)])["workers"], 256)

    def test_badCountUnderTwistd(self) -> None:
        """
        Under twistd a bad count is one C{twistd tcpcomm: error:} line.
        """
        error = self.assertRaises(
            SystemExit, ServerOptions().parseOptions, ["tcpcomm", "--workers", "x"]
        )
        message = str(error.code)
        self.assertTrue(message.startswith("twistd tcpcomm: error: "), message)
        self.assertNotIn("\n", message)

    def test_chatAndRelayRefused(self) -> None:
        """
        Chat and relay modes, whose clients share state in one process,
        cannot have workers.
        """
        for protocol in [["--protocol", "chat"], ["--protocol", "relay"]]:
            args = [*protocol, "--workers", "2"]
            if protocol[1] == "relay":
                args += ["--upstream", "127.0.0.1:1"]
            message = usageError(self, args)
            self.assertIn("--workers applies to --protocol line and echo", message)

    def test_echoAllowed(self) -> None:
        """
        Echo mode can have workers.
        """
        options = parse(self, ["--protocol", "echo", "--workers", "3"])
        self.assertEqual(options["workers"], 3)

    def test_unshareablePortRefused(self) -> None:
        """
        Only TCP, TCP6, UNIX and TLS ports can be shared.
        """
        options = parse(self, ["--workers", "2"])
        options["ports"] = ["tcp:1", "systemd:domain=INET:index=0"]
        error = self.assertRaises(usage.UsageError, checkWorkerOptions, options)
        self.assertIn("cannot share --port 'systemd:", str(error))

    def test_chrootRefused(self) -> None:
        """
        twistd's C{--chroot} and C{--workers} are one C{twistd tcpcomm:
        error:} line together.
        """
        error = self.assertRaises(
            SystemExit,
            ServerOptions().parseOptions,
            ["--chroot", "/srv", "tcpcomm", "--workers", "2"],
        )
        self.assertEqual(
            error.code,
            "twistd tcpcomm: error: --workers cannot be combined with twistd"
            " --chroot: workers run Python from outside it",
        )

    def test_workerDescriptors(self) -> None:
        """
        C{--worker-fds} takes one descriptor per port, and only in a worker
        (C{--workers 1}).
        """
        options = parse(self, ["-p", "tcp:1", "-p", "unix:/x", "--worker-fds", "3,4"])
        self.assertEqual(options["worker-fds"], [3, 4])
        self.assertIn(
            "2 descriptors for 1 ports",
            usageError(self, ["-p", "tcp:1", "--worker-fds", "3,4"]),
        )
        self.assertIn("3,x", usageError(self, ["--worker-fds", "3,x"]))
        self.assertIn(
            "worker processes only",
            usageError(self, ["--workers", "2", "--worker-fds", "3"]),
        )

    def test_help(self) -> None:
        """
        C{--help} explains C{--workers}, and says C{--worker-fds} is
        internal.
        """
        text = " ".join(str(Options()).split())
        self.assertIn("--workers=", text)
        self.assertIn("0: one per CPU", text)
        self.assertIn("apply to each worker", text)
        self.assertIn("Internal, set by --workers", text)


def tcpcommArguments(command: Sequence[str]) -> list[str]:
    """
    The tcpcomm options in a worker's command line (what follows the
    C{tcpcomm} subcommand).
    """
    return list(command[command.index("tcpcomm") + 1 :])


class WorkerCommandTests(SynchronousTestCase):
    """
    L{workerArguments}: the command line of a worker.
    """

    def test_roundTrip(self) -> None:
        """
        A worker's tcpcomm options parse to exactly the user's, but for
        C{--workers 1} and one inherited descriptor per port from 3 on.
        """
        typed = [
            "--port",
            "tcp:0:interface=127.0.0.1",
            "-p",
            "unix:/tmp/tcpcomm-test.sock:mode=600",
            "--workers=3",
            "--handler",
            "tests.test_tap:shout",
            "--delimiter",
            "crlf",
            "--max-line-length",
            "100",
            "--max-connections",
            "7",
            "--max-connections-per-ip",
            "2",
            "--idle-timeout",
            "1.5",
            "--handler-timeout",
            "2",
            "--shutdown-timeout",
            "3",
        ]
        original = parse(self, typed)
        command = workerArguments(original, 2)
        self.assertEqual(command[0], sys.executable)
        again = parse(self, tcpcommArguments(command))
        self.assertEqual(again["workers"], 1)
        self.assertEqual(again["worker-fds"], [3, 4])
        expected = dict(original)
        expected.update(workers=1, **{"worker-fds": [3, 4]})
        self.assertEqual(dict(again), expected)

    def test_standaloneLogsTaggedToStandardOutput(self) -> None:
        """
        Without twistd's options, a worker runs in the foreground with no
        PID file, logging through L{workerLogObserver}.
        """
        command = workerArguments(parse(self, []), 1)
        twistdPart = command[3 : command.index("tcpcomm")]
        self.assertEqual(
            twistdPart, ["--nodaemon", "--pidfile=", "--logger", WORKER_LOGGER]
        )

    def twistdPart(self, parent: dict[str, Any], slot: int = 2) -> list[str]:
        """
        The twistd options of worker C{slot} of a supervisor whose twistd
        options are C{parent}.
        """
        options = parse(self, [])
        options.parent = cast(usage.Options, parent)
        command = workerArguments(options, slot, "/srv")
        return command[3 : command.index("tcpcomm")]

    def test_supervisorsTwistdOptions(self) -> None:
        """
        Workers use the supervisor's reactor, and log where it logs: to
        standard output (tagged), syslog, the same custom logger, or a log
        file of their own next to the supervisor's.
        """
        base = ["--nodaemon", "--pidfile="]
        tagged = ["--logger", WORKER_LOGGER]
        self.assertEqual(
            self.twistdPart({"nodaemon": True, "reactor": "poll"}),
            [*base, "--reactor", "poll", *tagged],
        )
        self.assertEqual(
            self.twistdPart({"nodaemon": False, "logfile": "-"}), [*base, *tagged]
        )
        self.assertEqual(
            self.twistdPart({"nodaemon": False, "syslog": True, "prefix": "svc"}),
            [*base, "--syslog", "--prefix", "svc"],
        )
        self.assertEqual(
            self.twistdPart({"nodaemon": True, "logger": workerLogObserver}),
            [*base, "--logger", WORKER_LOGGER],
        )
        self.assertEqual(
            self.twistdPart({"nodaemon": True, "logfile": "log/t.log"}, 3),
            [*base, "--logfile", "/srv/log/t.log.worker-3"],
        )
        self.assertEqual(
            self.twistdPart({"nodaemon": False, "logfile": None}, 1),
            [*base, "--logfile", "/srv/twistd.log.worker-1"],
        )

    def test_twistsOptions(self) -> None:
        """
        Under C{twist}, workers take its reactor (unless the default) and
        log to standard output.
        """
        tagged = ["--nodaemon", "--pidfile=", "--logger", WORKER_LOGGER]
        self.assertEqual(
            self.twistdPart({"reactorName": "default", "logFile": sys.stdout}),
            tagged,
        )
        self.assertEqual(
            self.twistdPart({"reactorName": "poll"}),
            ["--nodaemon", "--pidfile=", "--reactor", "poll", *tagged[2:]],
        )


class WorkerLogObserverTests(SynchronousTestCase):
    """
    L{workerLogObserver}.
    """

    def test_systemTagged(self) -> None:
        """
        Each line is twistd's, with C{worker=PID} added to the system, for
        new-style and legacy events alike.
        """
        written: list[str] = []
        observer = workerLogObserver()
        stream = cast(Any, observer)._outFile
        self.assertIs(stream, sys.stdout)
        cast(Any, observer)._outFile = _Lines(written)
        observer(
            {
                "log_format": "{peer} connected",
                "peer": "127.0.0.1:5",
                "log_namespace": "tcpcomm.line.LineFactory",
                "log_level": LogLevel.info,
                "log_time": 0.0,
            }
        )
        observer({"log_format": "legacy", "log_system": "-", "log_time": 0.0})
        pid = os.getpid()
        self.assertTrue(
            written[0].endswith(
                f" [tcpcomm.line.LineFactory#info worker={pid}] 127.0.0.1:5 connected\n"
            ),
            written,
        )
        self.assertTrue(written[1].endswith(f" [- worker={pid}] legacy\n"), written)


class _Lines:
    """
    A text stream collecting what is written to it.
    """

    def __init__(self, written: list[str]) -> None:
        self._written = written

    def write(self, text: str) -> None:
        self._written.append(text)

    def flush(self) -> None:
        pass


# The supervisor, with a fake reactor.


class FakeProcess:
    """
    A spawned process as L{FakeProcessReactor} records it.
    """

    def __init__(
        self, pid: int, protocol: ProcessProtocol, args: list[str], **kw: Any
    ) -> None:
        self.pid: int | None = pid
        self.protocol = protocol
        self.args = args
        self.kw = kw
        self.signals: list[str] = []
        self.stdin = b""
        self.stdinClosed = False

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def write(self, data: bytes) -> None:
        assert not self.stdinClosed
        self.stdin += data

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def end(self, reason: Exception) -> None:
        """
        The process ends: tell its protocol as Twisted does.
        """
        self.pid = None
        self.protocol.processEnded(Failure(reason))


class FakeProcessReactor(Clock):
    """
    A clock that records C{spawnProcess} calls (or fails them), and records
    C{callWhenRunning} calls without running them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.failSpawn = False
        self.whenRunning: list[Callable[[], object]] = []

    def callWhenRunning(self, f: Callable[..., object], *a: Any, **kw: Any) -> None:
        self.whenRunning.append(lambda: f(*a, **kw))

    def spawnProcess(
        self, protocol: ProcessProtocol, executable: str, args: list[str], **kw: Any
    ) -> FakeProcess:
        if self.failSpawn:
            raise OSError("no more processes")
        process = FakeProcess(1000 + len(self.processes), protocol, args, **kw)
        self.processes.append(process)
        return process


KILLED = ProcessTerminated(signal=signal.SIGKILL)
FAILED = ProcessTerminated(exitCode=1)


class SupervisorTests(SynchronousTestCase):
    """
    L{WorkerSupervisor}'s restarts and shutdown, with a fake reactor and no
    ports.
    """

    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        self.gaveUp: list[bool] = []
        self.events = LogCapture(self).events
        self.supervisor = WorkerSupervisor(
            self.reactor,
            [],
            2,
            lambda number: ["python", f"worker{number}"],
            shutdownTimeout=3,
            directory="/srv",
            giveUp=lambda: self.gaveUp.append(True),
        )
        self.supervisor.startService()

    def logged(self) -> list[str]:
        """
        The supervisor's log messages so far.
        """
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_namespace") == "tcpcomm.workers.WorkerSupervisor"
        ]

    def running(self, number: int) -> FakeProcess:
        """
        The running process of worker C{number}.
        """
        [process] = [
            p
            for p in self.reactor.processes
            if p.args[-1] == f"worker{number}" and p.pid is not None
        ]
        return process

    def test_startsWorkers(self) -> None:
        """
        Starting spawns every worker with its command, in the supervisor's
        directory, with a pipe as standard input and the supervisor's
        standard output and error; their PIDs are logged.
        """
        first, second = self.reactor.processes
        self.assertEqual(first.args, ["python", "worker1"])
        self.assertEqual(second.args, ["python", "worker2"])
        self.assertEqual(first.kw["path"], "/srv")
        self.assertEqual(first.kw["childFDs"], {0: "w", 1: 1, 2: 2})
        self.assertEqual(self.supervisor.pids(), [1000, 1001])
        self.assertEqual(
            self.logged(),
            ["Started worker 1 of 2 (pid 1000)", "Started worker 2 of 2 (pid 1001)"],
        )

    def test_restartedAfterBackoff(self) -> None:
        """
        A worker that dies is logged with how it ended and restarted after
        0.1 s, in the same slot.
        """
        self.reactor.processes[0].end(KILLED)
        self.assertEqual(self.supervisor.pids(), [1001])
        self.assertIn(
            "Worker 1 (pid 1000) was killed by SIGKILL; restarting it in 0.1 s",
            self.logged(),
        )
        self.reactor.advance(0.05)
        self.assertEqual(len(self.reactor.processes), 2)
        self.reactor.advance(0.05)
        self.assertEqual(self.reactor.processes[2].args, ["python", "worker1"])
        self.assertEqual(self.supervisor.pids(), [1002, 1001])

    def test_backoffDoublesAndResets(self) -> None:
        """
        Quick failures in a row double the wait; a worker that ran for a
        while starts the backoff afresh.
        """
        delays = []
        for _ in range(MAX_QUICK_FAILURES - 1):
            self.running(1).end(FAILED)
            [call] = self.reactor.getDelayedCalls()
            delays.append(round(call.getTime() - self.reactor.seconds(), 3))
            self.reactor.advance(delays[-1])
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.8])
        self.reactor.advance(workers.STABLE_SECONDS)
        self.running(1).end(ProcessDone(0))
        [call] = self.reactor.getDelayedCalls()
        self.assertAlmostEqual(call.getTime() - self.reactor.seconds(), 0.1)
        self.assertEqual(self.gaveUp, [])

    def test_givesUp(self) -> None:
        """
        After L{MAX_QUICK_FAILURES} quick failures in a row the supervisor
        logs it, gives up, and starts no more workers.
        """
        for _ in range(MAX_QUICK_FAILURES):
            self.running(1).end(FAILED)
            self.reactor.advance(workers.STABLE_SECONDS - 1)
        self.assertEqual(self.gaveUp, [True])
        self.assertIn(
            f"exited with status 1, {MAX_QUICK_FAILURES} times in a row"
            " within 10 s of starting: giving up, stopping the server",
            self.logged()[-1],
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_spawnFailureRetried(self) -> None:
        """
        A worker that cannot be spawned is retried like one that died.
        """
        self.reactor.failSpawn = True
        self.reactor.processes[0].end(FAILED)
        self.reactor.advance(0.1)
        self.assertIn(
            "Worker 1 could not be started: no more processes; restarting it in 0.2 s",
            self.logged(),
        )
        self.reactor.failSpawn = False
        self.reactor.advance(0.2)
        self.assertEqual(len(self.supervisor.pids()), 2)

    def test_stopAsksAndWaits(self) -> None:
        """
        Stopping asks every running worker to stop (C{stop}, then the end of
        its standard input; no signal), restarts nothing (a pending restart
        is cancelled), and is done when every worker has ended.
        """
        first, second = self.reactor.processes
        first.end(KILLED)
        done = self.supervisor.stopService()
        self.assertEqual((first.stdin, first.stdinClosed), (b"", False))
        self.assertEqual((second.stdin, second.stdinClosed), (b"stop\n", True))
        self.assertEqual(second.signals, [])
        self.assertNoResult(done)
        second.end(ProcessDone(0))
        self.successResultOf(done)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertIn(
            "Worker 2 (pid 1001) has stopped (exited with status 0)", self.logged()
        )

    def test_stragglersKilled(self) -> None:
        """
        A worker still running C{--shutdown-timeout} plus L{KILL_MARGIN}
        seconds after it was asked to stop gets SIGKILL.
        """
        first, second = self.reactor.processes
        done = self.supervisor.stopService()
        first.end(ProcessDone(0))
        self.reactor.advance(3 + KILL_MARGIN - 0.5)
        self.assertEqual(second.signals, [])
        self.reactor.advance(0.5)
        self.assertEqual(second.signals, ["KILL"])
        self.assertIn(
            "Worker 2 (pid 1001) did not stop in time: killing it", self.logged()
        )
        second.end(KILLED)
        self.successResultOf(done)


class StopWithFailureTests(SynchronousTestCase):
    """
    L{workers.stopWithFailure}, which the supervisor calls when it gives up.
    """

    def test_exitStatusOne(self) -> None:
        """
        It stops the reactor; the program then runs to its end as usual
        (what it prints is flushed) and exits with status 1.
        """
        script = (
            "from twisted.internet import reactor\n"
            "from tcpcomm.workers import stopWithFailure\n"
            "reactor.callWhenRunning(stopWithFailure, reactor)\n"
            "reactor.run()\n"
            "print('after the reactor')\n"
        )
        child = runToEnd(self, [sys.executable, "-c", script], temporaryDirectory(self))
        self.assertEqual(child.process.returncode, 1, child.output())
        self.assertEqual(child.stdout(), "after the reactor\n")


# Sharing a socket in this process.


def dup(port: IListeningPort) -> int:
    """
    A new descriptor for C{port}'s socket, as a worker inherits it.
    """
    return os.dup(cast(Any, port).fileno())


def started(testCase: TestCase, services: Sequence[IService]) -> None:
    """
    Start C{services} as twistd does, and stop them at clean-up.
    """
    for service in services:
        service.privilegedStartService()
        service.startService()
        testCase.addCleanup(service.stopService)


class SharedSocketTests(TestCase):
    """
    L{bindPorts} (the supervisor's side) and L{inheritedPortServices} (a
    worker's) sharing listening sockets in this process.
    """

    def bind(self, descriptions: Sequence[str]) -> list[IListeningPort]:
        """
        L{bindPorts}, closing the ports at clean-up.
        """
        ports = bindPorts(reactor, descriptions)
        for port in ports:
            self.addCleanup(maybeDeferred, port.stopListening)
        return ports

    async def test_holderClosingLeavesAdoptersServing(self) -> None:
        """
        The held TCP port accepts nothing itself (a client waits in the
        backlog); a worker's adopted copy serves it, and goes on serving
        after the holder closes its copy; once the adopter stops too,
        clients are refused.
        """
        [held] = self.bind(["tcp:0:interface=127.0.0.1"])
        port = cast(Any, held).getHost().port
        address = f"127.0.0.1:{port}"
        early = exchange(reactor, address, b"one", timeout=5)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertNoResult(early)
        [service] = inheritedPortServices(
            reactor, ["tcp:0:interface=127.0.0.1"], [dup(held)], LineFactory()
        )
        started(self, [service])
        self.assertEqual(await early, b"one\n")
        await maybeDeferred(held.stopListening)
        self.assertEqual(await exchange(reactor, address, b"two", timeout=5), b"two\n")
        await service.stopService()
        await deferLater(reactor, 0, lambda: None)
        self.assertRaises(ConnectionRefusedError, connect, port)

    async def test_unixSocketFileBelongsToTheHolder(self) -> None:
        """
        An adopted UNIX socket keeps the file's mode, and a worker stopping
        leaves the file (the others still serve); the holder removes it.
        """
        path = os.path.join(temporaryDirectory(self), "s.sock")
        [held] = self.bind([f"unix:{path}:mode=600"])
        [service] = inheritedPortServices(
            reactor, [f"unix:{path}:mode=600"], [dup(held)], LineFactory()
        )
        started(self, [service])
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        reply = await exchange(reactor, f"unix:path={path}", b"hi", timeout=5)
        self.assertEqual(reply, b"hi\n")
        await service.stopService()
        self.assertTrue(os.path.exists(path))
        await maybeDeferred(held.stopListening)
        self.assertFalse(os.path.exists(path))

    def test_busyPortIsOneLine(self) -> None:
        """
        A port that cannot be bound is one C{twistd tcpcomm: error:} line,
        and the ports bound before it are closed again at once (a UNIX
        socket's file removed).
        """
        path = os.path.join(temporaryDirectory(self), "s.sock")
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            busy = holder.getsockname()[1]
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                free = probe.getsockname()[1]
            error = self.assertRaises(
                SystemExit,
                bindPorts,
                reactor,
                [
                    f"tcp:{free}:interface=127.0.0.1",
                    f"unix:{path}",
                    f"tcp:{busy}:interface=127.0.0.1",
                ],
            )
        message = str(error.code)
        self.assertTrue(message.startswith("twistd tcpcomm: error: Couldn't listen"))
        self.assertIn(str(busy), message)
        self.assertFalse(os.path.exists(path))
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", free))

    def test_wrongKindOfSocket(self) -> None:
        """
        A worker given a UNIX socket for a TCP port cannot listen.
        """
        left, right = socket.socketpair()
        self.addCleanup(left.close)
        self.addCleanup(right.close)
        [service] = inheritedPortServices(
            reactor, ["tcp:0"], [os.dup(left.fileno())], LineFactory()
        )
        error = self.assertRaises(CannotListenError, service.privilegedStartService)
        self.assertIn("not a TCP socket", str(error))

    async def test_watchTellsAskedFromGone(self) -> None:
        """
        L{SupervisorWatch} calls back when the pipe's writer closes it, and
        not before: asked to stop if C{stop} came first, else the
        supervisor is gone.
        """
        # The watch wraps this process's signal handlers (StopSignalGuard).
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        for written, asked in [(b"stop\n", True), (b"", False)]:
            readEnd, writeEnd = os.pipe()
            self.addCleanup(os.close, readEnd)
            ended: Deferred[bool] = Deferred()
            watch = SupervisorWatch(reactor, readEnd, ended.callback)
            watch.startService()
            self.addCleanup(watch.stopService)
            os.write(writeEnd, written)
            await deferLater(reactor, 0.05, lambda: None)
            self.assertNoResult(ended)
            os.close(writeEnd)
            self.assertEqual(await ended, asked)


class QueueingReactor:
    """
    A reactor's C{stop} and C{callFromThread}, as far as a worker's
    shutdown uses them: calls queue until L{runQueued}, and a second
    C{stop} raises.
    """

    def __init__(self) -> None:
        self.queued: list[Callable[[], object]] = []
        self.stops = 0

    def callFromThread(self, f: Callable[[], object]) -> None:
        self.queued.append(f)

    def stop(self) -> None:
        if self.stops:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")
        self.stops += 1

    def runQueued(self) -> None:
        while self.queued:
            self.queued.pop(0)()


class SignallingReactor(FakeProcessReactor, QueueingReactor):
    """
    A fake reactor for a supervisor's or a worker's signals: its C{sigTerm}
    and C{sigInt} are its signal handlers, which queue a stop as Twisted's
    do (a second stop raises, as Twisted's does).
    """

    def __init__(self) -> None:
        FakeProcessReactor.__init__(self)
        QueueingReactor.__init__(self)

    def sigTerm(self, number: int, frame: object = None) -> None:
        self.callFromThread(self.stop)

    def sigInt(self, number: int, frame: object = None) -> None:
        self.callFromThread(self.stop)

    def addReader(self, reader: object) -> None:
        pass

    def removeReader(self, reader: object) -> None:
        pass

    def installHandlers(self, testCase: SynchronousTestCase) -> None:
        """
        Make C{sigTerm} and C{sigInt} this process's handlers, as a running
        reactor does, until C{testCase}'s clean-up; then run what was to run
        once the reactor runs.
        """
        for number, handler in [
            (signal.SIGTERM, self.sigTerm),
            (signal.SIGINT, self.sigInt),
        ]:
            testCase.addCleanup(signal.signal, number, signal.getsignal(number))
            signal.signal(number, handler)
        for f in self.whenRunning:
            f()


def deliver(number: signal.Signals) -> None:
    """
    Call this process's handler for signal C{number}, as the signal would.
    """
    handler = signal.getsignal(number)
    assert callable(handler)
    handler(number, None)


class StopSignalTests(SynchronousTestCase):
    """
    A second SIGTERM or SIGINT to a stopping supervisor or worker, with
    fake handlers standing in for the reactor's (see L{SignallingReactor}).
    """

    def supervisor(self) -> tuple[WorkerSupervisor, SignallingReactor]:
        fake = SignallingReactor()
        supervisor = WorkerSupervisor(
            fake, [], 1, lambda number: ["python", "worker"], shutdownTimeout=3
        )
        supervisor.startService()
        fake.installHandlers(self)
        return supervisor, fake

    def test_secondSignalIgnored(self) -> None:
        """
        SIGTERM, then SIGTERM or SIGINT again before the stop is done: the
        first stops the reactor, the second is logged and ignored (no
        second stop, which would raise C{ReactorNotRunning}).
        """
        for second in [signal.SIGTERM, signal.SIGINT]:
            events = LogCapture(self).events
            _supervisor, fake = self.supervisor()
            deliver(signal.SIGTERM)
            deliver(second)
            fake.runQueued()
            self.assertEqual(fake.stops, 1)
            messages = [formatEvent(event) for event in events]
            self.assertIn(
                f"Received {second.name} while stopping already: ignored", messages
            )

    def test_signalWhileStoppingIgnored(self) -> None:
        """
        A SIGTERM after the supervisor began to stop for another reason
        (the reactor is stopping: it gave up on a worker) starts no second
        stop.
        """
        supervisor, fake = self.supervisor()
        fake.stop()
        supervisor.stopService()
        deliver(signal.SIGTERM)
        fake.runQueued()
        self.assertEqual(fake.stops, 1)

    def test_firstSignalStops(self) -> None:
        """
        The first SIGINT goes to the reactor's handler, which stops it.
        """
        _supervisor, fake = self.supervisor()
        deliver(signal.SIGINT)
        self.assertEqual(fake.stops, 0)
        fake.runQueued()
        self.assertEqual(fake.stops, 1)

    def test_otherHandlersLeftAlone(self) -> None:
        """
        Handlers that are not the reactor's (SIGINT ignored, as in workers)
        are not wrapped.
        """
        fake = SignallingReactor()
        guard = StopSignalGuard(fake)
        self.addCleanup(signal.signal, signal.SIGINT, signal.getsignal(signal.SIGINT))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        guard.install()
        self.assertEqual(signal.getsignal(signal.SIGINT), signal.SIG_IGN)

    def test_workerSignalAfterSupervisorsRequest(self) -> None:
        """
        A worker asked to stop by its supervisor, then sent SIGTERM (every
        process of a group signalled), stops its reactor once.
        """
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        self.addCleanup(os.close, writeEnd)
        fake = SignallingReactor()
        watch = SupervisorWatch(fake, readEnd)
        watch.startService()
        fake.installHandlers(self)
        watch._shutDown(True)
        fake.runQueued()
        deliver(signal.SIGTERM)
        fake.runQueued()
        self.assertEqual(fake.stops, 1)


class SupervisorWatchStopTests(SynchronousTestCase):
    """
    How a worker stops when the supervisor asks or goes.
    """

    def test_stopAfterSignalsStop(self) -> None:
        """
        When a SIGTERM's stop is already queued (every process signalled at
        once), the supervisor's request stops the reactor once, no error.
        """
        for asked in [True, False]:
            fake = QueueingReactor()
            watch = SupervisorWatch(fake)
            fake.callFromThread(fake.stop)  # as Twisted's SIGTERM handler does
            watch._shutDown(asked)
            self.assertEqual(fake.stops, 0)
            fake.runQueued()
            self.assertEqual(fake.stops, 1)

    def test_stopAlone(self) -> None:
        """
        Without a signal, the supervisor's request stops the reactor.
        """
        fake = QueueingReactor()
        SupervisorWatch(fake)._shutDown(True)
        fake.runQueued()
        self.assertEqual(fake.stops, 1)


# The real twistd with workers.


PID_HANDLER = """\
import os

def pid(line):
    return b"%d %s" % (os.getpid(), line)
"""

STARTED = re.compile(r"Started worker (\d+) of \d+ \(pid (\d+)\)")


def isWorker(pid: int) -> bool:
    """
    Whether process C{pid} is running (not a zombie) and is a tcpcomm
    worker.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
    except OSError:
        return False
    return state != b"Z" and b"--worker-fds" in command


def waitFor(
    condition: Callable[[], bool], what: str, timeout: float = IO_TIMEOUT
) -> None:
    """
    Poll C{condition} until it holds.

    @raise AssertionError: Naming C{what}, after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class RealWorkersTests(SynchronousTestCase):
    """
    The real C{twistd tcpcomm --workers 2}.
    """

    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            self.skipTest("reads /proc to find worker processes")

    def start(self, *args: str, handler: str = PID_HANDLER) -> tuple[Child, int, Path]:
        """
        Start twistd with two workers and, as C{--handler}, C{handler}'s
        C{pid} (by default: reply with the worker's PID and the line), or
        C{slow}; kill leftover workers at clean-up.
        """
        cwd = temporaryDirectory(self)
        (cwd / "workerhandler.py").write_text(handler, encoding="utf-8")
        name = "pid" if handler is PID_HANDLER else "slow"
        server, port = startTwistd(
            self, ["--workers", "2", "--handler", f"workerhandler:{name}", *args], cwd
        )
        self.addCleanup(self.killWorkers, server)
        return server, port, cwd

    def workerPIDs(self, server: Child) -> dict[int, int]:
        """
        The worker PIDs the supervisor logged starting so far, by worker
        number (the latest for each).
        """
        return {
            int(number): int(pid) for number, pid in STARTED.findall(server.output())
        }

    def killWorkers(self, server: Child) -> None:
        """
        Kill, by PID, every worker C{server} started that still runs.
        """
        for pid in {int(pid) for _, pid in STARTED.findall(server.output())}:
            if isWorker(pid):
                os.kill(pid, signal.SIGKILL)

    def waitForWorkers(self, server: Child, count: int = 2) -> dict[int, int]:
        """
        Wait until the latest C{count} workers started have logged that they
        are ready (serving, and handling SIGTERM).
        """

        def ready() -> bool:
            pids = self.workerPIDs(server).values()
            output = server.output()
            return len(pids) == count and all(
                f"Worker ready (pid {pid})" in output for pid in pids
            )

        waitFor(ready, "the workers to be ready")
        return self.workerPIDs(server)

    def assertWorkersGone(self, pids: Sequence[int]) -> None:
        """
        Wait (bounded) until none of C{pids} runs.
        """
        waitFor(lambda: not any(isWorker(pid) for pid in pids), "workers to exit")

    def test_twoWorkersServe(self) -> None:
        """
        Two workers serve the TCP, UNIX and TLS ports: lines come back (the
        last one at half-close) from one worker per connection,
        connections land on both workers, which log with their PIDs, and
        SIGTERM stops all three processes in order.
        """
        files = writeServerFiles(temporaryDirectory(self), makeCertificateAuthority())
        path = str(temporaryDirectory(self) / "s.sock")
        server, port, _ = self.start(
            "--port", f"unix:{path}", "--port", files.serverDescription(0)
        )
        pids = self.waitForWorkers(server)
        reply, _ = talk(port, b"hello\r\nworld")
        first = reply.split()[0]
        self.assertEqual(reply, first + b" hello\n" + first + b" world\n")
        self.assertIn(int(first), pids.values())
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(IO_TIMEOUT)
            client.connect(path)
            client.sendall(b"unix")
            client.shutdown(socket.SHUT_WR)
            self.assertRegex(readToEnd(client), rb"^\d+ unix\n$")
        self.assertRegex(self.tlsExchange(server, files.authorityPath), rb"^\d+ tls\n$")
        seen = {int(first)}
        deadline = time.monotonic() + IO_TIMEOUT
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(int(talk(port, b"x")[0].split()[0]))
        self.assertEqual(seen, set(pids.values()))
        self.assertEqual(server.terminate(), -signal.SIGTERM)
        output = server.output()
        for pid in pids.values():
            self.assertRegex(output, rf"worker={pid}\] 127\.0\.0\.1:\d+ connected")
        self.assertEqual(output.count("Server Shut Down."), 3)
        self.assertTrue(output.rstrip().endswith("Server Shut Down."))
        self.assertNotIn("Traceback", output)
        self.assertFalse(os.path.exists(path))
        self.assertWorkersGone(list(pids.values()))

    def tlsExchange(self, server: Child, authority: str) -> bytes:
        """
        Find the TLS port in C{server}'s log, send a line over TLS, and read
        the reply line.
        """
        bound = re.findall(r"WorkerSupervisor starting on (\d+)", server.output())
        [tlsPort] = [int(number) for number in bound][1:]
        context = ssl.create_default_context(cafile=authority)
        address = ("127.0.0.1", tlsPort)
        with socket.create_connection(address, timeout=IO_TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as client:
                client.sendall(b"tls\n")
                received = b""
                while not received.endswith(b"\n"):
                    chunk = client.recv(1024)
                    if not chunk:
                        break
                    received += chunk
        return received

    def test_killedWorkerRestarted(self) -> None:
        """
        A worker killed with SIGKILL is logged and restarted, and the server
        keeps answering meanwhile.
        """
        server, port, _ = self.start()
        pids = self.waitForWorkers(server)
        os.kill(pids[1], signal.SIGKILL)
        for _ in range(5):
            reply, _ = talk(port, b"still there")
            self.assertRegex(reply, rb"^\d+ still there\n$")
        waitFor(lambda: self.workerPIDs(server)[1] != pids[1], "a new worker 1")
        self.assertIn(
            f"Worker 1 (pid {pids[1]}) was killed by SIGKILL; restarting it in 0.1 s",
            server.output(),
        )
        restarted = self.waitForWorkers(server)
        self.assertEqual(restarted[2], pids[2])
        self.assertEqual(talk(port, b"x")[0][-2:], b"x\n")
        self.assertEqual(server.terminate(), -signal.SIGTERM)
        self.assertWorkersGone(list(restarted.values()))

    def test_replyInFlightFlushedOnSigterm(self) -> None:
        """
        SIGTERM to the supervisor while a worker's reply is in flight: the
        reply arrives, an idle client is closed, every process logs "Server
        Shut Down.", and then new clients are refused.
        """
        server, port, cwd = self.start(handler=SLOW_HANDLER)
        pids = self.waitForWorkers(server)
        idle = connect(port)
        busy = connect(port)
        self.addCleanup(idle.close)
        self.addCleanup(busy.close)
        busy.sendall(b"work\n")
        waitFor((cwd / "called").exists, "the handler to be called")
        server.sendTerminate()
        self.assertEqual(readToEnd(busy), b"done work\n")
        self.assertEqual(readToEnd(idle), b"")
        self.assertEqual(server.wait(), -signal.SIGTERM)
        output = server.output()
        self.assertIn("Shutting down: finishing", output)
        self.assertEqual(output.count("Server Shut Down."), 3)
        self.assertNotIn("Traceback", output)
        self.assertRaises(ConnectionRefusedError, connect, port)
        self.assertWorkersGone(list(pids.values()))

    def test_everyProcessSignalled(self) -> None:
        """
        SIGTERM to the supervisor and every worker at once (as systemd
        stops a service, or C{kill -TERM -PGID}): all shut down in order,
        with no traceback.
        """
        server, port, _ = self.start()
        pids = self.waitForWorkers(server)
        self.assertRegex(talk(port, b"x")[0], rb"^\d+ x\n$")
        for pid in [server.process.pid, *pids.values()]:
            os.kill(pid, signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
        output = server.output()
        self.assertEqual(output.count("Server Shut Down."), 3)
        self.assertNotIn("Traceback", output)
        self.assertWorkersGone(list(pids.values()))

    def test_supervisorKilled(self) -> None:
        """
        Workers whose supervisor was killed with SIGKILL shut down by
        themselves, and the port is closed.
        """
        server, port, _ = self.start()
        pids = self.waitForWorkers(server)
        os.kill(server.process.pid, signal.SIGKILL)
        self.assertEqual(server.wait(), -signal.SIGKILL)
        self.assertWorkersGone(list(pids.values()))
        self.assertEqual(server.output().count("The supervisor is gone"), 2)
        self.assertRaises(ConnectionRefusedError, connect, port)

    def test_badWorkersValue(self) -> None:
        """
        A bad C{--workers} value, or workers in chat mode, end twistd with
        exit status 1 and one error line.
        """
        for args, detail in [
            (["--workers", "-3"], "'-3'"),
            (["--workers", "2", "--protocol", "chat"], "line and echo only"),
        ]:
            child = runToEnd(
                self,
                [*twistdCommand(), "-n", "--pidfile=", "tcpcomm", *args],
                temporaryDirectory(self),
            )
            self.assertEqual(child.process.returncode, 1, child.output())
            [line] = child.stderr().splitlines()
            self.assertTrue(line.startswith("twistd tcpcomm: error: "), line)
            self.assertIn(detail, line)
            self.assertEqual(child.stdout(), "")
