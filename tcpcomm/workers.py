# -*- test-case-name: tests.test_workers -*-
"""
C{twistd tcpcomm --workers N}: N processes serving the same listening
sockets.

The process twistd starts becomes a supervisor.  It binds every C{--port}
itself (so a busy port stops start-up with one line, as without workers)
but never accepts a connection: it spawns N worker processes that inherit
the listening sockets as file descriptors 3, 4, ... and adopt them.  Each
worker is C{twistd --nodaemon tcpcomm} with the user's own options plus
C{--worker-fds}, so it serves, logs and shuts down exactly as a single
tcpcomm process does; the kernel hands each new connection to one of the
workers waiting on the shared socket.

The supervisor restarts a worker that ends unexpectedly (after a short
backoff; it gives up and stops the server, exit status 1, if a worker keeps
failing within seconds of starting).  On SIGTERM or SIGINT it closes its own
copies of the sockets, asks every worker to stop -- each then finishes its
connections as L{tcpcomm.connection.ConnectionFactory.shutDown} does -- and
waits for them (at most C{--shutdown-timeout} plus L{KILL_MARGIN} seconds,
then SIGKILL).

A worker's standard input is a pipe from the supervisor: the supervisor
asks it to stop by writing C{stop} and closing the pipe, and a worker whose
supervisor is gone (killed with SIGKILL) sees the pipe end without it; either
way it shuts down as on SIGTERM.  (Not a signal: a worker may get SIGTERM
from elsewhere at the same moment -- systemd signals every process of a
service, C{timeout} and C{kill -TERM -PGID} a whole process group.)  Workers
ignore SIGINT, which Ctrl-C sends to the whole process group: the supervisor
handles it for them.  A second SIGTERM or SIGINT to a process that is
stopping already is logged and ignored (see L{StopSignalGuard}).

Only TCP, TCP6, UNIX and TLS (C{ssl:}) ports can be shared, also behind
C{haproxy:}; TLS and PROXY headers are done in the workers.  Chat and relay
modes keep state shared by all clients in one process, so they cannot have
workers.  POSIX only.

With C{--metrics}, the supervisor serves the whole server's metrics: it
makes a private directory (mode 700), starts each worker with C{--metrics}
naming a UNIX socket in it, and at each scrape fetches every worker's page
there and sums them (L{tcpcomm.metrics.WorkersResource}).

Nothing here imports the reactor: functions take it as a parameter.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

from twisted.application import strports
from twisted.application.service import IService, Service
from twisted.internet import abstract, fdesc, tcp, unix
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.error import (
    CannotListenError,
    ConnectionDone,
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
    ReactorNotRunning,
)
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProtocolFactory
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    formatEventAsClassicLogText,
)
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.lockfile import FilesystemLock
from twisted.python.reflect import fullyQualifiedName

from tcpcomm.endpoints import splitProxied
from tcpcomm.proxied import DEFAULT_HEADER_TIMEOUT, proxiedListening
from tcpcomm.stopsignals import StopSignalGuard
from tcpcomm.transport import adoptStreamPort

__all__ = [
    "KILL_MARGIN",
    "MAX_WORKERS",
    "WorkerSupervisor",
    "bindPorts",
    "cannotListenMessage",
    "checkPortsBindable",
    "checkWorkerOptions",
    "cpuCount",
    "failStartup",
    "inheritedPortServices",
    "workerArguments",
    "workerCount",
    "workerDescriptors",
    "workerLogObserver",
    "workerServices",
]

MAX_WORKERS = 256
"""
The most worker processes C{--workers} accepts.
"""

SHAREABLE_KINDS = frozenset({"tcp", "tcp6", "unix", "ssl"})
"""
The endpoint kinds whose listening sockets workers can share.
"""

FIRST_WORKER_FD = 3
"""
The file descriptor a worker inherits its first listening socket as.
"""

RESTART_DELAY = 0.1
"""
Seconds before restarting a worker that ended unexpectedly; doubled for
each further quick failure in a row, up to L{MAX_RESTART_DELAY}.
"""

MAX_RESTART_DELAY = 5.0
"""
The longest wait before restarting a worker.
"""

STABLE_SECONDS = 10.0
"""
A worker that ran at least this long before ending was not failing to
start: its restart starts the backoff afresh.
"""

MAX_QUICK_FAILURES = 5
"""
After this many quick failures in a row of one worker (each within
L{STABLE_SECONDS} of starting), the supervisor gives up and stops.
"""

KILL_MARGIN = 5.0
"""
Seconds beyond C{--shutdown-timeout} that workers get to exit on shutdown
before they are killed.
"""

WORKER_LOGGER = "tcpcomm.workers.workerLogObserver"
"""
The C{twistd --logger} of workers that log to standard output.
"""

WORKER_LOGGERS = {"tcpcomm.logs.jsonLogger": "tcpcomm.logs.jsonWorkerLogger"}
"""
The C{twistd --logger} of workers whose supervisor has one of these: the
same format, with the worker named in each event.
"""

_LAUNCHER = (
    # Ctrl-C in a terminal signals the whole process group: the supervisor
    # alone handles it (it asks the workers to stop), so a worker is not
    # told to stop twice.
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "from twisted.scripts.twistd import run; sys.exit(run())"
)


# Options.


def cpuCount() -> int:
    """
    How many CPUs this process may run on (its affinity mask where the
    system has one, as C{taskset} sets it).
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def workerCount(text: str) -> int:
    """
    The C{--workers} coercer: a whole number from 0 to L{MAX_WORKERS},
    where 0 means one worker per CPU (L{cpuCount}).

    @raise ValueError: For anything else.
    """
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_WORKERS:
        raise ValueError(
            f"expected a number of worker processes from 1 to {MAX_WORKERS}"
            f" (0: one per CPU), not {text!r}"
        )
    return value or cpuCount()


workerCount.coerceDoc = (  # type: ignore[attr-defined]
    f"A whole number from 0 (one per CPU) to {MAX_WORKERS}."
)


def workerDescriptors(text: str) -> list[int]:
    """
    The C{--worker-fds} coercer: comma-separated file descriptor numbers.

    @raise ValueError: If C{text} is anything else.
    """
    try:
        fds = [int(part) for part in text.split(",")]
    except ValueError:
        fds = [-1]
    if any(fd < 0 for fd in fds):
        raise ValueError(f"expected file descriptors such as 3,4, not {text!r}")
    return fds


workerDescriptors.coerceDoc = "File descriptors such as 3,4."  # type: ignore[attr-defined]


def _kind(description: str) -> str:
    return splitProxied(description)[0].split(":", 1)[0].strip().lower()


def checkWorkerOptions(options: usage.Options) -> None:
    """
    Check C{--workers} and C{--worker-fds} against the other options.

    @raise usage.UsageError: With one readable line, on a mistake.
    """
    workers: int = options["workers"]
    fds: list[int] | None = options["worker-fds"]
    if fds is not None:
        if workers != 1:
            raise usage.UsageError("--worker-fds is for worker processes only")
        if len(fds) != len(options["ports"]):
            raise usage.UsageError(
                f"--worker-fds: {len(fds)} descriptors for"
                f" {len(options['ports'])} ports"
            )
    if workers == 1 and fds is None:
        return
    if os.name != "posix":
        raise usage.UsageError("--workers needs a POSIX system")
    if options.parent is not None and options.parent.get("chroot"):
        raise usage.UsageError(
            "--workers cannot be combined with twistd --chroot: workers run"
            " Python from outside it"
        )
    if options["protocol"] not in ("line", "echo"):
        raise usage.UsageError(
            "--workers applies to --protocol line and echo only: chat and"
            " relay clients share state in one process"
        )
    for description in options["ports"]:
        if _kind(description) not in SHAREABLE_KINDS:
            raise usage.UsageError(
                f"--workers cannot share --port {description!r}: use tcp,"
                " tcp6, unix or ssl ports"
            )


def _twistdArguments(
    parent: usage.Options | None, slot: int, directory: str
) -> list[str]:
    """
    The twistd options of worker C{slot}: in the foreground, no PID file,
    the supervisor's reactor, and logging to where the supervisor logs.

    @param parent: The supervisor's twistd options, if known.  Under
        C{twist} (whose options have no C{nodaemon}) only the reactor is
        taken from them, and workers log to standard output.
    @param directory: Where the supervisor started: relative log file names
        are relative to it.
    """
    arguments = ["--nodaemon", "--pidfile="]
    if parent is None or "nodaemon" not in parent:
        reactorName = parent.get("reactorName") if parent is not None else None
        if reactorName and reactorName != "default":
            arguments += ["--reactor", reactorName]
        return [*arguments, "--logger", WORKER_LOGGER]
    reactorName = parent.get("reactor")
    if reactorName:
        arguments += ["--reactor", reactorName]
    logger = parent.get("logger")
    logfile = parent.get("logfile")
    if logger is not None:
        name = logger if isinstance(logger, str) else fullyQualifiedName(logger)
        return [*arguments, "--logger", WORKER_LOGGERS.get(name, name)]
    if parent.get("syslog"):
        return [*arguments, "--syslog", "--prefix", parent.get("prefix") or "twisted"]
    if logfile == "-" or (not logfile and parent.get("nodaemon")):
        return [*arguments, "--logger", WORKER_LOGGER]
    # A log file (daemons log to twistd.log by default): one per worker, so
    # that no two processes rotate the same file.
    path = os.path.join(directory, logfile or "twistd.log")
    return [*arguments, "--logfile", f"{path}.worker-{slot}"]


def workerArguments(
    options: usage.Options, slot: int, directory: str | None = None
) -> list[str]:
    """
    The command line that starts worker C{slot} (numbered from 1) of the
    server C{options} describe: this Python running twistd with the
    supervisor's reactor and logging, then C{tcpcomm} with the user's own
    tcpcomm options followed by C{--workers 1 --worker-fds 3,4,...} (one
    descriptor per C{--port}, in order; later options win).

    @param options: Parsed L{tcpcomm.tap.Options}, whose C{argv} is what
        the user typed.
    @param directory: Where relative log file names are; the current
        directory by default.
    """
    typed: list[str] = options.argv  # type: ignore[attr-defined]
    fds = range(FIRST_WORKER_FD, FIRST_WORKER_FD + len(options["ports"]))
    return [
        sys.executable,
        "-c",
        _LAUNCHER,
        *_twistdArguments(options.parent, slot, directory or os.getcwd()),
        "tcpcomm",
        *typed,
        "--workers",
        "1",
        "--worker-fds",
        ",".join(str(fd) for fd in fds),
    ]


def workerLogObserver() -> ILogObserver:
    """
    The log observer of a worker that logs to standard output (the twistd
    C{--logger} of workers): twistd's format, with C{worker=PID} added to
    each line's system, so that the lines of several workers sharing one
    output can be told apart::

        2025-01-01T12:00:00+0000 [tcpcomm.line.LineFactory#info worker=4321] ...
    """
    tag = f" worker={os.getpid()}"

    def formatEvent(event: LogEvent) -> str | None:
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = "{}#{}".format(
                event.get("log_namespace", "-"), "-" if level is None else level.name
            )
        return formatEventAsClassicLogText({**event, "log_system": f"{system}{tag}"})

    return FileLogObserver(sys.stdout, formatEvent)


# The supervisor's side of the sockets.


class _HeldTCPPort(tcp.Port):
    """
    A bound, listening TCP socket the supervisor holds for its workers: it
    never accepts, and on close it only closes its own descriptor (Twisted
    would also C{shutdown()} the socket, which stops it listening in every
    process that shares it).
    """

    _shouldShutdown = False

    def startReading(self) -> None:
        """
        Never accept: the workers do.
        """


class _HeldUNIXPort(unix.Port):
    """
    A UNIX socket the supervisor holds for its workers, as L{_HeldTCPPort};
    it removes its file (and lock file) on close, as Twisted's does.
    """

    _shouldShutdown = False

    def startReading(self) -> None:
        """
        Never accept: the workers do.
        """


class _HoldingReactor:
    """
    A reactor as Twisted's server endpoints see it, whose C{listenTCP},
    C{listenUNIX} and C{listenSSL} bind and listen (with Twisted's own
    errors) but never accept.  TLS is left to the workers.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def listenTCP(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        held = _HeldTCPPort(port, factory, backlog, interface, self._reactor)
        held.startListening()
        return held

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: object,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> IListeningPort:
        held = _HeldUNIXPort(
            cast(bytes, address), factory, backlog, mode, self._reactor, wantPID
        )
        held.startListening()
        return held


class _NoConnections(Factory):
    """
    The factory of the supervisor's held ports, which accept nothing.
    """

    noisy = False

    def logPrefix(self) -> str:
        return "WorkerSupervisor"


def cannotListenMessage(description: str, error: BaseException) -> str | None:
    """
    The one line that says why C{description} could not be bound, if
    C{error} is a reason a port cannot be bound (busy, not allowed, a
    missing directory, a port number out of range); else C{None}.
    """
    if isinstance(error, CannotListenError):
        return f"twistd tcpcomm: error: {error}"
    if isinstance(error, OSError | OverflowError):
        reason = getattr(error, "strerror", None) or error
        return f"twistd tcpcomm: error: cannot listen on {description!r}: {reason}"
    return None


def bindPorts(reactor: Any, descriptions: Sequence[str]) -> list[IListeningPort]:
    """
    Bind and listen on every endpoint in C{descriptions} (TCP, TCP6, UNIX
    or TLS), without accepting, for workers to share; C{stopListening} on
    the result closes this process's copy only.

    @raise SystemExit: With one readable line, if a port cannot be bound
        (the ports bound already are closed again).
    """
    holding = _HoldingReactor(reactor)
    bound: list[IListeningPort] = []
    for description in descriptions:
        results: list[object] = []
        try:
            # A haproxy: port is bound as the port under it.
            endpoint = serverFromString(holding, splitProxied(description)[0])
            endpoint.listen(_NoConnections()).addBoth(results.append)
            [result] = results
            if isinstance(result, Failure):
                result.raiseException()
            assert isinstance(result, _HeldTCPPort | _HeldUNIXPort), result
        except BaseException as e:
            for port in bound:
                # At once (stopListening waits a reactor turn, and start-up
                # is ending): close the socket, remove a UNIX socket's file.
                cast(Any, port).connectionLost(Failure(ConnectionDone()))
            message = cannotListenMessage(description, e)
            if message is not None:
                raise SystemExit(message) from None
            raise
        bound.append(result)
    return bound


class _ProbingReactor:
    """
    A reactor as Twisted's server endpoints see it, whose C{listenTCP},
    C{listenSSL} and C{listenUNIX} check that the port could be bound
    now, quietly (Twisted's ports log as they listen and close).  The
    probes stay bound until L{close}, so that two ports that clash with
    each other are found too.
    """

    def __init__(self) -> None:
        self._probes: list[socket.socket] = []
        self._paths: list[str] = []

    def close(self) -> None:
        """
        Unbind every probe, and remove the socket files they made.
        """
        for probe in self._probes:
            probe.close()
        for path in self._paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._probes.clear()
        self._paths.clear()

    def listenTCP(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> None:
        # The address as Twisted's tcp.Port binds it.
        address: tuple[Any, ...] = (interface, port)
        family = socket.AF_INET
        try:
            if abstract.isIPv6Address(interface):
                family = socket.AF_INET6
                address = socket.getaddrinfo(
                    interface, port, 0, 0, 0, socket.AI_NUMERICHOST
                )[0][4]
            probe = socket.socket(family, socket.SOCK_STREAM)
            self._probes.append(probe)
            # As Twisted's ports do.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            probe.listen(backlog)
        except OSError as e:
            raise CannotListenError(interface, port, e) from None

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: object,
        backlog: int = 50,
        interface: str = "",
    ) -> None:
        self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> None:
        path = os.fsdecode(address)
        if path.startswith(("\0", "@")):
            return  # abstract: no file
        lock = None
        if wantPID:
            # Twisted's lock: held by a running process, or not creatable.
            lock = FilesystemLock(path + ".lock")
            if not lock.lock():
                raise CannotListenError(None, path, "Already listening")
        try:
            # Under the lock, Twisted replaces a socket file left behind.
            if lock is None or not os.path.exists(path):
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._probes.append(probe)
                probe.bind(path)
                self._paths.append(path)
        finally:
            if lock is not None:
                lock.unlock()


def checkPortsBindable(descriptions: Sequence[str]) -> None:
    """
    Check that every TCP, TCP6, UNIX and TLS port in C{descriptions} could
    be bound now, binding none for good: what twistd runs calls this
    before it forks into a daemon and before its logging starts, so that a
    port that cannot be bound ends start-up with one line on the terminal
    (after the fork, the waiting parent could only print twistd's own
    two-line report).  Other kinds (C{systemd:}, ...) are not checked.

    @raise SystemExit: With one readable line, if a port cannot be bound.
    """
    probing = _ProbingReactor()
    try:
        for description in descriptions:
            if _kind(description) not in SHAREABLE_KINDS:
                continue
            results: list[object] = []
            try:
                endpoint = serverFromString(probing, splitProxied(description)[0])
                endpoint.listen(_NoConnections()).addBoth(results.append)
                [result] = results
                if isinstance(result, Failure):
                    result.raiseException()
            except Exception as e:
                message = cannotListenMessage(description, e)
                if message is None:
                    raise
                raise SystemExit(message) from None
    finally:
        probing.close()


def _removeOwnPIDFile(path: str | None) -> None:
    """
    Remove twistd's PID file C{path} if it names this process.
    """
    if not path:
        return
    try:
        with open(path) as f:
            if int(f.read().strip()) != os.getpid():
                return
        os.remove(path)
    except (OSError, ValueError):
        pass


_startupLog = Logger(namespace="tcpcomm")


def failStartup(message: str, twistdOptions: Any = None) -> NoReturn:
    """
    End start-up with C{message} (one readable line) so that it reaches the
    user, and exit status 1.

    Outside twistd, raise C{SystemExit(message)}.  Under twistd (whose
    options are C{twistdOptions}) logging has started, so the line is also
    logged: a daemon writes it to twistd's status pipe, which the parent
    waiting on the terminal prints; a foreground server writes it to the
    original standard error.  Either way twistd's PID file is removed (a
    C{SystemExit} skips twistd's own clean-up).

    @param twistdOptions: twistd's options (C{ServerOptions}), if known.
    """
    if twistdOptions is None:
        raise SystemExit(message)
    _startupLog.error("{message}", message=message)
    statusPipe = twistdOptions.get("statusPipe")
    if statusPipe is not None:
        # The parent prints what follows "1 ", up to 100 bytes in all.
        reason = message.removeprefix("twistd tcpcomm: error: ")
        os.write(statusPipe, b"1 " + reason.encode("ascii", "backslashreplace")[:98])
        os.close(statusPipe)
        twistdOptions["statusPipe"] = None
    else:
        stderr = sys.__stderr__
        if stderr is not None:
            stderr.write(message + "\n")
            stderr.flush()
    _removeOwnPIDFile(twistdOptions.get("pidfile"))
    raise SystemExit(1)


# The workers' side.


def _inspect(fd: int) -> tuple[socket.AddressFamily, Any]:
    """
    The address family and bound address of the socket C{fd} (which stays
    open).
    """
    probe = socket.socket(fileno=fd)
    try:
        return probe.family, probe.getsockname()
    finally:
        probe.detach()


class _SharedUNIXPort(unix.Port):
    """
    An inherited UNIX listening socket: closing it leaves the socket file
    to the supervisor (Twisted's would remove it, cutting off the other
    workers).
    """

    def connectionLost(self, reason: Failure) -> None:
        tcp.Port.connectionLost(self, reason)


class _InheritingReactor:
    """
    A reactor as Twisted's server endpoints see it, whose C{listenTCP} and
    C{listenUNIX} adopt one inherited listening socket instead of binding
    one.  TCP connections are write-through (L{tcpcomm.transport}).
    """

    def __init__(self, reactor: Any, fd: int) -> None:
        self._reactor = reactor
        self._fd = fd

    def _take(
        self, families: Sequence[int], kind: str
    ) -> tuple[socket.AddressFamily, Any]:
        fd = self._fd
        try:
            family, address = _inspect(fd)
        except OSError as e:
            raise CannotListenError(None, f"inherited descriptor {fd}", e) from None
        if family not in families:
            raise CannotListenError(
                None, f"inherited descriptor {fd}", f"not a {kind} socket"
            )
        return family, address

    def listenTCP(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        try:
            family, _ = self._take((socket.AF_INET, socket.AF_INET6), "TCP")
            return adoptStreamPort(self._reactor, self._fd, family, factory)
        finally:
            os.close(self._fd)

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> IListeningPort:
        try:
            _, path = self._take((socket.AF_UNIX,), "UNIX")
            adopted: IListeningPort = _SharedUNIXPort._fromListeningDescriptor(
                self._reactor, self._fd, factory
            )
            port = cast(_SharedUNIXPort, adopted)
            if isinstance(path, str) and path and not path.startswith("\0"):
                # Twisted would chmod the file to its default mode: keep the
                # supervisor's.
                port.mode = stat.S_IMODE(os.stat(path).st_mode)
            port.startListening()
        except OSError as e:
            raise CannotListenError(None, address, e) from None
        finally:
            os.close(self._fd)
        return port


def inheritedPortServices(
    reactor: Any,
    descriptions: Sequence[str],
    fds: Sequence[int],
    factory: IProtocolFactory,
    proxyHeaderTimeout: float = DEFAULT_HEADER_TIMEOUT,
) -> list[IService]:
    """
    Services serving C{factory} on inherited listening sockets: C{fds[i]}
    for C{descriptions[i]}, which says what it is (C{ssl:} ports get
    tcpcomm's TLS on the inherited TCP socket; C{haproxy:} ports read a
    PROXY header first, see L{tcpcomm.proxied}).  Each descriptor is closed
    once adopted; stopping the service closes the adopted copy.
    """
    services: list[IService] = []
    for description, fd in zip(descriptions, fds, strict=True):
        endpoint, listening = proxiedListening(
            description, _InheritingReactor(reactor, fd), proxyHeaderTimeout
        )
        service = strports.service(endpoint, factory, reactor=cast(Any, listening))
        if isinstance(service.endpoint, SSL4ServerEndpoint):
            # Only here: plain TCP must work without the tls extra.
            from tcpcomm.tls import keepHalfClose

            service.endpoint = keepHalfClose(service.endpoint)
        services.append(service)
    return services


class _EndOfFile(abstract.FileDescriptor):
    """
    Read from a pipe; when it is closed, call C{onEnd} with whether
    anything was read from it.
    """

    def __init__(self, reactor: Any, fd: int, onEnd: Callable[[bool], None]) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._onEnd = onEnd
        self._received = False
        fdesc.setNonBlocking(fd)
        self.connected = True

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> object:
        return fdesc.readFromFD(self._fd, self._dataReceived)

    def _dataReceived(self, data: bytes) -> None:
        self._received = True

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._onEnd(self._received)


class SupervisorWatch(Service):
    """
    In a worker: log when it is ready (its reactor is running, so it
    accepts connections and handles SIGTERM), and shut down when the pipe
    from the supervisor (the worker's standard input) ends: after C{stop},
    because the supervisor asks it to; without, because the supervisor is
    gone.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        fd: int = 0,
        onEnd: Callable[[bool], None] | None = None,
    ) -> None:
        """
        @param fd: The pipe to watch.
        @param onEnd: Called when the pipe ends, with whether the supervisor
            asked to stop; by default, log why and stop C{reactor} (so the
            worker shuts down as on SIGTERM).
        """
        self._reactor = reactor
        self._fd = fd
        self._onEnd = onEnd or self._shutDown
        self._reader: _EndOfFile | None = None
        self._signals = StopSignalGuard(reactor)

    def startService(self) -> None:
        super().startService()
        self._reader = _EndOfFile(self._reactor, self._fd, self._pipeEnded)
        self._reader.startReading()
        self._reactor.callWhenRunning(self._signals.install)
        self._reactor.callWhenRunning(
            self._log.info,
            "Worker ready (pid {pid})",
            pid=os.getpid(),
            event="worker_ready",
        )

    def stopService(self) -> None:
        super().stopService()
        self._signals.stopping = True
        if self._reader is not None:
            self._reader.stopReading()
            self._reader = None

    def _pipeEnded(self, asked: bool) -> None:
        if self._reader is None:
            return
        self._reader = None
        self._onEnd(asked)

    def _shutDown(self, asked: bool) -> None:
        self._signals.stopping = True
        if asked:
            self._log.info(
                "The supervisor asks to stop: shutting down", event="shutdown"
            )
        else:
            self._log.warn(
                "The supervisor is gone: shutting down", event="supervisor_gone"
            )
        # A SIGTERM of our own (systemd signals every process of a service
        # at once) queues its stop with callFromThread; queued behind it,
        # this stop finds the reactor stopping instead of making that one
        # fail with a logged ReactorNotRunning.
        self._reactor.callFromThread(self._stopReactor)

    def _stopReactor(self) -> None:
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass


def workerServices(
    reactor: Any,
    options: usage.Options,
    factory: IProtocolFactory,
    watch: int | None = 0,
) -> list[IService]:
    """
    What a worker runs (C{--worker-fds}): its inherited ports, and a
    L{SupervisorWatch} on file descriptor C{watch} (none if C{None}).
    """
    services = inheritedPortServices(
        reactor,
        options["ports"],
        options["worker-fds"],
        factory,
        options.get("proxy-header-timeout", DEFAULT_HEADER_TIMEOUT),
    )
    if watch is not None:
        services.append(SupervisorWatch(reactor, watch))
    return services


# The supervisor.


def describeExit(reason: Failure) -> str:
    """
    How a process ended, in words: C{exited with status 1}, C{was killed
    by SIGKILL}.
    """
    value = reason.value
    if isinstance(value, ProcessDone | ProcessTerminated):
        if value.signal is not None:
            try:
                name = signal.Signals(value.signal).name
            except ValueError:
                name = f"signal {value.signal}"
            return f"was killed by {name}"
        return f"exited with status {value.exitCode}"
    return f"ended: {reason.getErrorMessage()}"


@dataclass
class _Worker:
    """
    One worker slot of a L{WorkerSupervisor}.

    @ivar number: 1 to the number of workers.
    @ivar process: The running process, if any.
    @ivar pid: Its process ID (kept after it ends, for the log).
    @ivar startedAt: When it was started.
    @ivar quickFailures: How many times in a row it ended within
        L{STABLE_SECONDS} of starting.
    @ivar restart: The pending restart, if any.
    @ivar ended: Fired when the running process ends.
    """

    number: int
    process: Any = None
    pid: int | None = None
    startedAt: float = 0.0
    quickFailures: int = 0
    restart: IDelayedCall | None = None
    ended: Deferred[None] = field(default_factory=Deferred)


class _WorkerProtocol(ProcessProtocol):
    """
    Tell the supervisor when its worker ends.
    """

    def __init__(self, supervisor: WorkerSupervisor, worker: _Worker) -> None:
        self._supervisor = supervisor
        self._worker = worker

    def processEnded(self, reason: Failure) -> None:
        self._supervisor._ended(self._worker, reason)


def _exitWithFailure() -> None:
    """
    At interpreter exit: make the exit status 1.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(1)


def stopWithFailure(reactor: Any) -> None:
    """
    Stop C{reactor} (so that twistd shuts down as usual) and make the
    process's exit status 1 once it has.
    """
    atexit.register(_exitWithFailure)
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


class WorkerSupervisor(Service):
    """
    Hold the listening sockets and keep C{count} worker processes serving
    them.

    @ivar count: How many workers.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        descriptions: Sequence[str],
        count: int,
        command: Callable[[int], list[str]],
        shutdownTimeout: float,
        directory: str | None = None,
        giveUp: Callable[[], None] | None = None,
        twistdOptions: Any = None,
        metrics: str | None = None,
    ) -> None:
        """
        @param reactor: Binds, spawns and keeps time.
        @param descriptions: The endpoints to share.
        @param command: The command line of worker N (see
            L{workerArguments}).
        @param shutdownTimeout: The workers' C{--shutdown-timeout}.
        @param directory: Where workers run; the current directory by
            default.
        @param giveUp: Called when a worker keeps failing; by default
            L{stopWithFailure}.
        @param twistdOptions: twistd's options, when run by twistd (see
            L{failStartup}).
        @param metrics: The endpoint to serve every worker's metrics on,
            summed, if any.
        """
        self._reactor = reactor
        self._descriptions = list(descriptions)
        self.count = count
        self._command = command
        self._shutdownTimeout = shutdownTimeout
        self._directory = directory or os.getcwd()
        self._giveUp = giveUp or (lambda: stopWithFailure(reactor))
        self._ports: list[IListeningPort] | None = None
        self._workers = [_Worker(number) for number in range(1, count + 1)]
        self._stopping = False
        self._twistdOptions = twistdOptions
        self._signals = StopSignalGuard(reactor)
        self._metrics = metrics
        self._metricsService: IService | None = None
        self._metricsDirectory: str | None = None

    @classmethod
    def fromOptions(cls, options: usage.Options, reactor: Any) -> WorkerSupervisor:
        """
        The supervisor C{twistd tcpcomm --workers N} runs.
        """
        directory = os.getcwd()
        return cls(
            reactor,
            options["ports"],
            options["workers"],
            lambda number: workerArguments(options, number, directory),
            options["shutdown-timeout"],
            directory,
            twistdOptions=options.parent,
            metrics=options.get("metrics"),
        )

    def pids(self) -> list[int]:
        """
        The process IDs of the workers running now.
        """
        return [w.pid for w in self._workers if w.process is not None and w.pid]

    def privilegedStartService(self) -> None:
        """
        Bind every port (before twistd drops privileges).

        @raise SystemExit: With one line, if a port cannot be bound (see
            L{failStartup}).
        """
        super().privilegedStartService()
        if self._ports is None:
            try:
                self._ports = bindPorts(self._reactor, self._descriptions)
            except SystemExit as e:
                failStartup(str(e.code), self._twistdOptions)
            if self._metrics is not None:
                self._startMetrics(self._metrics)

    def _startMetrics(self, description: str) -> None:
        """
        Listen on C{description} for scrapes of the workers' metrics (the
        private directory of their sockets is made in L{startService},
        after twistd has switched to C{--uid}, whose workers must be able
        to use it).
        """
        from tcpcomm.metrics import metricsSite
        from tcpcomm.workermetrics import WorkersResource

        resource = WorkersResource(self._reactor, self.count, self._metricsWorkers)
        service = strports.service(
            description, metricsSite(resource), reactor=self._reactor
        )
        try:
            service.privilegedStartService()
        except Exception as e:
            message = cannotListenMessage(description, e)
            for port in self._ports or []:
                cast(Any, port).connectionLost(Failure(ConnectionDone()))
            self._ports = []
            if message is None:
                raise
            failStartup(message, self._twistdOptions)
        service.startService()  # listening already: marks it running
        self._metricsService = service

    def _metricsSocket(self, worker: _Worker) -> str:
        """
        The UNIX socket worker C{worker} serves its metrics on.
        """
        assert self._metricsDirectory is not None
        return os.path.join(self._metricsDirectory, f"worker-{worker.number}.sock")

    def _metricsWorkers(self) -> list[tuple[int, int, str]]:
        """
        The workers running now: their numbers, process IDs and metrics
        sockets.
        """
        if self._metricsDirectory is None:  # stopped
            return []
        return [
            (w.number, w.pid, self._metricsSocket(w))
            for w in self._workers
            if w.process is not None and w.pid is not None
        ]

    def _removeMetricsDirectory(self) -> None:
        directory, self._metricsDirectory = self._metricsDirectory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def startService(self) -> None:
        """
        Start every worker; once the reactor runs, make a second SIGTERM or
        SIGINT harmless (L{StopSignalGuard}).
        """
        if self._ports is None:
            self.privilegedStartService()
        super().startService()
        if self._metricsService is not None and self._metricsDirectory is None:
            # Mode 700, this user's: the workers' metrics are private.
            self._metricsDirectory = tempfile.mkdtemp(prefix="tcpcomm-metrics-")
        self._reactor.callWhenRunning(self._signals.install)
        for worker in self._workers:
            self._start(worker)

    def _start(self, worker: _Worker) -> None:
        worker.restart = None
        if self._stopping:
            return
        assert self._ports is not None
        childFDs: dict[int, int | str] = {0: "w", 1: 1, 2: 2}
        for offset, port in enumerate(self._ports):
            childFDs[FIRST_WORKER_FD + offset] = port.fileno()  # type: ignore[attr-defined]
        command = self._command(worker.number)
        if self._metricsDirectory is not None:
            # Later options win: the worker serves its metrics privately.
            path = self._metricsSocket(worker)
            with suppress(FileNotFoundError):
                os.unlink(path)  # left by a worker that died
            command = [*command, "--metrics", f"unix:{path}:mode=600"]
        worker.ended = Deferred()
        worker.startedAt = self._reactor.seconds()
        worker.pid = None
        try:
            worker.process = self._reactor.spawnProcess(
                _WorkerProtocol(self, worker),
                command[0],
                command,
                env=dict(os.environ),
                path=self._directory,
                childFDs=childFDs,
            )
        except Exception as e:
            self._failed(worker, None, f"could not be started: {e}")
            return
        worker.pid = worker.process.pid
        self._log.info(
            "Started worker {number} of {count} (pid {pid})",
            number=worker.number,
            count=self.count,
            pid=worker.pid,
            event="worker_started",
        )

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        pid = worker.pid
        worker.process = None
        how = describeExit(reason)
        ended, worker.ended = worker.ended, Deferred()
        if self._stopping:
            self._log.info(
                "Worker {number} (pid {pid}) has stopped ({how})",
                number=worker.number,
                pid=pid,
                how=how,
                event="worker_stopped",
            )
        else:
            self._failed(worker, pid, how)
        ended.callback(None)

    def _failed(self, worker: _Worker, pid: int | None, how: str) -> None:
        """
        Worker C{worker} ended (or did not start) though not asked to:
        restart it after a backoff, or give up.
        """
        if self._reactor.seconds() - worker.startedAt >= STABLE_SECONDS:
            worker.quickFailures = 0
        worker.quickFailures += 1
        # "Worker 2 (pid 4321)", or "Worker 2" if it never started.
        name = f"Worker {worker.number}" + ("" if pid is None else f" (pid {pid})")
        if worker.quickFailures >= MAX_QUICK_FAILURES:
            self._log.critical(
                "{name} {how}, {failures} times in a row within {stable:g} s"
                " of starting: giving up, stopping the server",
                name=name,
                number=worker.number,
                pid=pid,
                how=how,
                failures=worker.quickFailures,
                stable=STABLE_SECONDS,
                event="worker_failed",
            )
            self._giveUp()
            return
        delay = min(RESTART_DELAY * 2 ** (worker.quickFailures - 1), MAX_RESTART_DELAY)
        self._log.error(
            "{name} {how}; restarting it in {delay:g} s",
            name=name,
            number=worker.number,
            pid=pid,
            how=how,
            delay=delay,
            event="worker_failed",
        )
        worker.restart = self._reactor.callLater(delay, self._start, worker)

    def stopService(self) -> Deferred[None]:
        """
        Close this process's copies of the sockets (once the workers close
        theirs, new clients are refused), ask every worker to shut down
        (C{stop} and the end of its standard input), and wait for them,
        killing any still running after C{--shutdown-timeout} plus
        L{KILL_MARGIN} seconds.
        """
        super().stopService()
        self._stopping = True
        self._signals.stopping = True
        for worker in self._workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
        closing: list[Deferred[Any]] = [
            maybeDeferred(port.stopListening) for port in self._ports or []
        ]
        if self._metricsService is not None:
            closing.append(maybeDeferred(self._metricsService.stopService))
            self._metricsService = None
        self._ports = []
        running = [w for w in self._workers if w.process is not None]
        if running:
            self._log.info(
                "Stopping {count} workers (at most {timeout:g} s)",
                count=len(running),
                timeout=self._shutdownTimeout + KILL_MARGIN,
                event="shutdown",
            )
        for worker in running:
            try:
                worker.process.write(b"stop\n")
                worker.process.closeStdin()
            except Exception:
                # Its pipe is gone: it is ending already.
                pass
        waiting: list[Deferred[Any]] = [worker.ended for worker in running]

        def kill() -> None:
            for worker in self._workers:
                if worker.process is not None:
                    self._log.warn(
                        "Worker {number} (pid {pid}) did not stop in time: killing it",
                        number=worker.number,
                        pid=worker.pid,
                        event="worker_killed",
                    )
                    self._signal(worker, "KILL")

        killer = self._reactor.callLater(self._shutdownTimeout + KILL_MARGIN, kill)

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()
            self._removeMetricsDirectory()

        return gatherResults(closing + waiting, consumeErrors=True).addCallback(done)

    def _signal(self, worker: _Worker, name: str) -> None:
        try:
            worker.process.signalProcess(name)
        except ProcessExitedAlready:
            pass
