# -*- test-case-name: tests.test_tap -*-
"""
C{twistd tcpcomm}: the command-line options and the service they describe.
"""

from __future__ import annotations

import importlib
import os
import select
import socket
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from types import ModuleType
from typing import Any, ClassVar

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet import fdesc
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python import usage

from tcpcomm.chat import ChatFactory
from tcpcomm.client import clientEndpoint
from tcpcomm.connection import ConnectionFactory
from tcpcomm.echo import EchoFactory
from tcpcomm.endpoints import (
    DEFAULT_BACKLOG,
    SystemdSockets,
    checkPortNumber,
    checkTLSAvailable,
    describeParseProblem,
    portFields,
    serverEndpointDescription,
    splitProxied,
    systemdActivationHint,
    systemdIndexDescriptor,
)
from tcpcomm.framers.line import LineAdapter
from tcpcomm.framers.spec import parseFraming
from tcpcomm.framing import DEFAULT_MAX_LINE_LENGTH
from tcpcomm.hostport import splitHostPort
from tcpcomm.line import (
    DEFAULT_MAX_PENDING_BYTES,
    DELIMITERS,
    Handler,
    LineFactory,
    echoLine,
)
from tcpcomm.proxied import DEFAULT_HEADER_TIMEOUT, proxiedListening
from tcpcomm.relay import DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_LIMIT, RelayFactory
from tcpcomm.stopsignals import StopSignalGuard
from tcpcomm.transport import writeThroughReactor
from tcpcomm.twistedprivate import wrapOptionHandlers
from tcpcomm.workers import (
    WorkerSupervisor,
    cannotListenMessage,
    checkPortsBindable,
    checkWorkerOptions,
    failStartup,
    inheritedPortServices,
    workerCount,
    workerDescriptors,
    workerServices,
)

PROTOCOLS = ("line", "echo", "chat", "relay")


def loadHandler(spec: str, directory: str | None = None) -> Handler:
    """
    Import a line handler named as C{MODULE:CALLABLE}, where C{CALLABLE}
    may be dotted (C{Class.method}).

    @param directory: Where else to look for C{MODULE} if it is not on
        C{sys.path} (twistd does not put the current directory there).  It
        is on C{sys.path} only while C{MODULE} is imported, and last, so
        that a file there can never stand in for a module of the standard
        library or an installed one (C{resource.py}, C{OpenSSL/}): C{MODULE}
        may import its neighbours when it is imported, and a package's own
        modules at any time.
    @raise ValueError: With a readable message, if C{spec} is malformed,
        cannot be imported, or names something that is not callable.
    """
    moduleName, _, path = spec.partition(":")
    if not moduleName or not path:
        raise ValueError(f"handler must be MODULE:CALLABLE, not {spec!r}")
    try:
        try:
            module = importlib.import_module(moduleName)
        except ModuleNotFoundError as e:
            top = moduleName.partition(".")[0]
            if directory is None or e.name != top:
                raise
            module = _importFrom(directory, moduleName)
        handler: object = module
        for name in path.split("."):
            handler = getattr(handler, name)
    except Exception as e:
        raise ValueError(
            f"cannot load handler {spec!r}: {type(e).__name__}: {e}"
        ) from None
    if not callable(handler):
        raise ValueError(f"handler {spec!r} is not callable")
    return handler


def _importFrom(directory: str, moduleName: str) -> ModuleType:
    """
    Import C{moduleName} with C{directory} last on C{sys.path}, then take
    C{directory} off it again.
    """
    sys.path.append(directory)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(moduleName)
    finally:
        # The last entry, which is ours (an earlier one may be the user's).
        for index in range(len(sys.path) - 1, -1, -1):
            if sys.path[index] == directory:
                del sys.path[index]
                break
        sys.path_importer_cache.pop(directory, None)


MAX_BYTES = 1 << 30
"""
The most C{--max-line-length}, C{--max-pending-bytes} and C{--queue-bytes} may
be: 1 GiB.
"""

MAX_CONNECTIONS = 1_000_000
"""
The most C{--max-connections} and C{--max-connections-per-ip} may be (each
connection needs a file descriptor; Linux allows a process 1,048,576).
"""

MAX_QUEUE_LIMIT = 10_000_000
"""
The most C{--queue-limit} may be, in lines.
"""

MIN_TIMEOUT = 0.01
"""
The shortest timeout, in seconds, of the options where 0 does not mean off.
"""

MAX_TIMEOUT = 7 * 24 * 3600.0
"""
The longest timeout, in seconds: a week (the reactor cannot wait much longer
than 24 days in one go).
"""


def _wholeNumber(minimum: int, maximum: int) -> Callable[[str], int]:
    """
    An option coercer for whole numbers from C{minimum} to C{maximum}.
    """

    def coerce(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if not minimum <= value <= maximum:
            raise ValueError(
                f"expected a whole number from {minimum} to {maximum:,},"
                f" not {text[:40]!r}"
            )
        return value

    coerce.coerceDoc = f"A whole number from {minimum} to {maximum:,}."  # type: ignore[attr-defined]
    return coerce


_byteCount = _wholeNumber(1, MAX_BYTES)
_connectionCount = _wholeNumber(0, MAX_CONNECTIONS)
_queueLimit = _wholeNumber(0, MAX_QUEUE_LIMIT)
_queueBytes = _wholeNumber(0, MAX_BYTES)


def _nonNegativeSeconds(text: str) -> float:
    """
    An option coercer for timeouts: 0, or seconds from L{MIN_TIMEOUT} to
    L{MAX_TIMEOUT}.
    """
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value == 0 or MIN_TIMEOUT <= value <= MAX_TIMEOUT):
        raise ValueError(
            f"expected 0 or seconds from {MIN_TIMEOUT} to {MAX_TIMEOUT:.0f},"
            f" not {text[:40]!r}"
        )
    return value + 0.0  # -0.0 is 0


_nonNegativeSeconds.coerceDoc = (  # type: ignore[attr-defined]
    f"0, or seconds from {MIN_TIMEOUT} to {MAX_TIMEOUT:.0f}."
)


MODE_OPTIONS: dict[str, tuple[str, ...]] = {
    "handler": ("line",),
    "handler-timeout": ("line",),
    "framing": ("line", "chat", "relay"),
    "delimiter": ("line", "chat", "relay"),
    "max-line-length": ("line", "chat", "relay"),
    "max-pending-bytes": ("chat", "relay"),
    "upstream": ("relay",),
    "tag": ("relay",),
    "queue-limit": ("relay",),
    "queue-bytes": ("relay",),
    "workers": ("line", "echo"),
    "worker-fds": ("line", "echo"),
}
"""
The options that apply to some C{--protocol}s only, and those protocols;
any other option applies to every protocol.  Given with another protocol,
even at its default value, an option is refused.
"""


def _modeNames(modes: Sequence[str]) -> str:
    """
    C{"line"}, C{"line and echo"}, C{"line, chat and relay"}.
    """
    if len(modes) == 1:
        return modes[0]
    return f"{', '.join(modes[:-1])} and {modes[-1]}"


DEFAULT_MAX_CONNECTIONS = 10000
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0


class _RecordedParameter(usage.CoerceParameter):
    """
    A parameter that notes in L{Options.given} that it was given, and whose
    refusal names it: C{--idle-timeout: expected ...}.
    """

    def __init__(
        self, options: Options, coerce: Callable[[str], Any], name: str
    ) -> None:
        super().__init__(options, coerce)
        self.name = name

    def dispatch(self, parameterName: str, value: str) -> None:
        self.options.given.append(self.name)
        try:
            self.options.opts[parameterName] = self.coerce(value)
        except ValueError as e:
            raise usage.UsageError(f"--{self.name}: {e}") from None


class Options(usage.Options):
    """
    Options for C{twistd tcpcomm}.
    """

    synopsis = "[options]"
    longdesc = (
        "A TCP server for many clients at once.  In line mode (the default)"
        " each line a client sends is answered by a handler (default: echo"
        " the line); in echo mode every byte comes back (RFC 862).  TCP"
        f" endpoints get a listen backlog of {DEFAULT_BACKLOG} unless they"
        " name one.  In the foreground (twistd -n) no PID file is written"
        " unless twistd's --pidfile names one."
    )

    optFlags: ClassVar[list[list[Any]]] = [
        [
            "tag",
            None,
            "Relay mode: prefix each line with the sender's address, and send"
            " lines back only to the client their tag names.",
        ],
    ]

    optParameters: ClassVar[list[list[Any]]] = [
        [
            "protocol",
            None,
            "line",
            "What to serve: line (each line answered by the handler), echo"
            " (every byte back), chat (each line to every other client), relay"
            " (each line to the --upstream server).",
        ],
        [
            "handler",
            None,
            None,
            "Line mode: MODULE:CALLABLE answering each line (default: echo"
            " the line).  MODULE is looked for on sys.path and in the current"
            " directory.",
        ],
        [
            "framing",
            None,
            "line",
            "Line and relay modes: how messages are cut and replies framed:"
            " line, delimiter:HEX, stx-etx, length:SIZE[:offset=N][:adjust=N]"
            "[:order=big|little][:strip=N][:max=N], netstring, fixed:N or"
            " modbus (chat takes line only).",
        ],
        [
            "delimiter",
            None,
            "lf",
            "Line, chat and relay modes: end lines sent with lf or crlf.",
        ],
        [
            "max-line-length",
            None,
            DEFAULT_MAX_LINE_LENGTH,
            "Line, chat and relay modes: the longest line accepted, in bytes.",
            _byteCount,
        ],
        [
            "max-connections",
            None,
            DEFAULT_MAX_CONNECTIONS,
            "The most connections open at once (0: no limit).  Over it, line"
            " mode answers ERROR too many connections and closes; echo closes.",
            _connectionCount,
        ],
        [
            "max-connections-per-ip",
            None,
            0,
            "The most connections open at once from one IP address (0: no"
            " limit); an IPv4 client reaching a tcp6 port counts as its IPv4"
            " address.",
            _connectionCount,
        ],
        [
            "idle-timeout",
            None,
            DEFAULT_IDLE_TIMEOUT,
            "Close connections idle this many seconds (0: never); line mode"
            " says ERROR idle timeout first.  Reading a complete line (echo:"
            " any byte) or writing counts as activity, so a client trickling a"
            " line that never ends is closed too.",
            _nonNegativeSeconds,
        ],
        [
            "handler-timeout",
            None,
            0,
            "Line mode: seconds a handler may take before its reply becomes"
            " ERROR handler timed out (0: no limit).",
            _nonNegativeSeconds,
        ],
        [
            "max-pending-bytes",
            None,
            DEFAULT_MAX_PENDING_BYTES,
            "Chat and relay modes: how many bytes of lines the client did not"
            " ask for may wait for a client that reads slowly before it is"
            " dropped with ERROR too slow.",
            _byteCount,
        ],
        [
            "upstream",
            None,
            None,
            "Relay mode: the server to forward lines to, as HOST:PORT or a"
            " Twisted client endpoint (tls:host:port, unix:path=...).",
        ],
        [
            "queue-limit",
            None,
            DEFAULT_QUEUE_LIMIT,
            "Relay mode: how many lines may wait while the upstream is down;"
            " beyond it a sender gets ERROR upstream unavailable.",
            _queueLimit,
        ],
        [
            "queue-bytes",
            None,
            DEFAULT_QUEUE_BYTES,
            "Relay mode: how many bytes of lines may wait while the upstream"
            " is down; beyond it a sender gets ERROR upstream unavailable.",
            _queueBytes,
        ],
        [
            "shutdown-timeout",
            None,
            DEFAULT_SHUTDOWN_TIMEOUT,
            "On SIGTERM or SIGINT, stop accepting and give open connections"
            " this many seconds to get their pending replies, then close the"
            " rest.",
            _nonNegativeSeconds,
        ],
        [
            "proxy-header-timeout",
            None,
            DEFAULT_HEADER_TIMEOUT,
            "haproxy: ports: seconds a connection has to send its whole PROXY"
            " protocol header before it is closed (0: no limit).",
            _nonNegativeSeconds,
        ],
        [
            "workers",
            None,
            1,
            "Serve with this many processes sharing the listening sockets (0:"
            " one per CPU): a supervisor holds the ports and restarts a worker"
            " that dies.  --max-connections and --max-connections-per-ip apply"
            " to each worker.  Line and echo modes; tcp, tcp6, unix and ssl"
            " ports.",
            workerCount,
        ],
        [
            "worker-fds",
            None,
            None,
            "Internal, set by --workers: serve as a worker on the listening"
            " sockets inherited as these file descriptors, one per --port",
            workerDescriptors,
        ],
    ]

    compData = usage.Completions(
        optActions={
            "protocol": usage.CompleteList(list(PROTOCOLS)),
            "delimiter": usage.CompleteList(list(DELIMITERS)),
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["metrics"] = None
        # The systemd: ports tcpcomm adopts itself: their descriptors and
        # address families.
        self["systemd-fds"] = {}
        # The options given on the command line, in order, so that an option
        # of another mode is refused even when given at its default value.
        self.given: list[str] = []
        wrapOptionHandlers(self, self._recording)

    def _recording(self, name: str, handler: Any) -> Any:
        """
        Wrap the parser's C{handler} for option C{name} to note that the
        option was given, and to name the option when its value is refused.
        """
        if isinstance(handler, usage.CoerceParameter):
            return _RecordedParameter(self, handler.coerce, name)

        def record(*args: Any) -> None:
            self.given.append(name)
            handler(*args)

        return record

    def opt_port(self, description: str) -> None:
        try:
            normalized = serverEndpointDescription(description)
            checkTLSAvailable(normalized)
        except ValueError as e:
            raise usage.UsageError(f"--port: {e}") from None
        try:
            checkPortNumber(normalized)
        except ValueError as e:
            raise usage.UsageError(f"bad endpoint {description!r}: {e}") from None
        sockets = SystemdSockets.fromEnvironment()
        try:
            adopted = systemdIndexDescriptor(normalized, sockets)
        except ValueError as e:
            raise usage.UsageError(f"--port {description}: {e}") from None
        if adopted is not None:
            # Passed without names: Twisted would ignore it.
            self["systemd-fds"][normalized] = adopted
            self["ports"].append(normalized)
            return
        try:
            _checkEndpoint(description, splitProxied(normalized)[0])
        except usage.UsageError:
            hint = systemdActivationHint(normalized, sockets)
            if hint is None:
                raise
            raise usage.UsageError(f"--port {description}: {hint}") from None
        self["ports"].append(normalized)

    # usage shows an opt_ method's docstring as its help, spacing and all.
    opt_port.__doc__ = (
        "Listen on this endpoint; repeat to listen on several. A bare number N"
        " means tcp:N; any Twisted server endpoint description works"
        " (tcp:8000:interface=127.0.0.1, tcp6:8000, unix:/path/sock,"
        " ssl:8443:privateKey=key.pem:certKey=cert.pem,"
        " systemd:domain=INET:index=0 or :name=NAME for a socket systemd"
        " passes); haproxy: before any of them (haproxy:tcp:8000) reads the"
        " client's address from the PROXY protocol header (v1 or v2) a load"
        " balancer sends first. Default: tcp:8000."
    )

    opt_p = opt_port

    def opt_metrics(self, description: str) -> None:
        try:
            normalized = serverEndpointDescription(description)
            checkTLSAvailable(normalized)
            checkPortNumber(normalized)
        except ValueError as e:
            raise usage.UsageError(f"--metrics: {e}") from None
        try:
            _checkEndpoint(description, normalized)
        except usage.UsageError as e:
            raise usage.UsageError(f"--metrics: {e}") from None
        self["metrics"] = normalized

    opt_metrics.__doc__ = (
        "Serve Prometheus metrics at /metrics on this endpoint (as --port:"
        " tcp:9100:interface=127.0.0.1, unix:/path/sock, ...). Default: none."
    )

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options}.

        @raise usage.UsageError: On a mistake, when used on its own.
        @raise SystemExit: On a mistake, when parsed as a subcommand of
            twistd (or twist): the user then sees one readable line, not
            twistd's whole usage text.
        """
        if self.parent is not None and hasattr(select, "epoll"):
            # Under twistd with no --reactor chosen: tcpcomm's lean reactor.
            from tcpcomm.leanreactor import installIfNoneInstalled

            installIfNoneInstalled()
        # What was typed, for --workers to start workers with.
        self.argv = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            raise SystemExit(f"twistd tcpcomm: error: {e}") from None
        if self.parent is not None:
            _noForegroundPIDFile(self.parent)

    def postOptions(self) -> None:
        """
        Check every option now, so that a mistake stops start-up with one
        readable line.
        """
        if not self["ports"]:
            self["ports"] = [serverEndpointDescription("8000")]
        protocol = self["protocol"]
        if protocol not in PROTOCOLS:
            raise usage.UsageError(
                f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}"
            )
        for name in self.given:
            modes = MODE_OPTIONS.get(name, PROTOCOLS)
            if protocol not in modes:
                raise usage.UsageError(
                    f"--{name} applies to --protocol {_modeNames(modes)} only,"
                    f" not {protocol}"
                )
        if self["delimiter"] not in DELIMITERS:
            raise usage.UsageError(
                f"unknown delimiter {self['delimiter']!r}: choose lf or crlf"
            )
        self._checkFraming(protocol)
        if "proxy-header-timeout" in self.given and not any(
            splitProxied(port)[1] for port in self["ports"]
        ):
            raise usage.UsageError(
                "--proxy-header-timeout applies to haproxy: ports only"
                " (--port haproxy:tcp:8000)"
            )
        if protocol == "relay":
            if self["upstream"] is None:
                raise usage.UsageError("--protocol relay needs --upstream HOST:PORT")
            from twisted.internet import reactor

            try:
                self["upstreamEndpoint"] = clientEndpoint(reactor, self["upstream"])
            except ValueError as e:
                raise usage.UsageError(f"--upstream: {e}") from None
            if upstreamIsOwnPort(self["upstream"], self["ports"]):
                raise usage.UsageError(
                    f"--upstream {self['upstream']} is this server's own port:"
                    " every line would go round forever"
                )
        if self["handler"] is not None:
            try:
                self["handlerObject"] = loadHandler(self["handler"], os.getcwd())
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        checkWorkerOptions(self)

    def _checkFraming(self, protocol: str) -> None:
        """
        Parse C{--framing}, and refuse the options that belong to lines when
        it is not C{line}.
        """
        spec = self["framing"]
        try:
            framer = parseFraming(spec)()
        except ValueError as e:
            raise usage.UsageError(f"--{e}") from None
        if isinstance(framer, LineAdapter):
            if any(field.startswith("max=") for field in spec.split(":")):
                # line:max=N is the line limit, in every mode (chat too).
                if "max-line-length" in self.given:
                    raise usage.UsageError(
                        f"--max-line-length and --framing {spec} both set the"
                        " longest line: give one"
                    )
                self["max-line-length"] = framer.framer.maxLineLength
            return
        if protocol == "chat":
            raise usage.UsageError(
                f"--framing {self['framing']}: chat carries lines only (--framing line)"
            )
        for name in ("delimiter", "max-line-length", "tag"):
            if name in self.given:
                hint = (
                    " (a framing's own limit is its max=, as length:4:max=N)"
                    if name == "max-line-length"
                    else ""
                )
                raise usage.UsageError(
                    f"--{name} applies to --framing line only, not"
                    f" {self['framing']}{hint}"
                )


def _noForegroundPIDFile(twistd: usage.Options) -> None:
    """
    A server in the foreground (C{twistd -n}) writes no PID file unless one
    is asked for with C{--pidfile}, so that several can run in one
    directory; a daemon keeps twistd's C{twistd.pid}, which is how it is
    stopped.

    @param twistd: twistd's options, parsed but for their C{postOptions}.
    """
    if "pidfile" not in twistd or not (twistd.get("nodaemon") or twistd.get("debug")):
        return
    # usage.Options keeps the default object itself; a --pidfile typed on
    # the command line is another string, even if it is "twistd.pid".
    if twistd["pidfile"] is twistd.defaults.get("pidfile"):
        twistd["pidfile"] = ""


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})


def upstreamIsOwnPort(upstream: str, ports: Sequence[str]) -> bool:
    """
    Whether the relay's C{upstream}, as C{HOST:PORT} on this host, is one of
    the server's own C{ports} (listening on every interface or on that
    host): a relay to itself would send every line round forever.
    """
    shorthand = splitHostPort(upstream)
    if shorthand is None:
        return False
    host, port = shorthand
    if host.lower() not in _LOCAL_HOSTS and not host.startswith("127."):
        return False
    for description in ports:
        ownPort, interface = portFields(description)
        if ownPort is not None and ownPort.isdigit() and int(ownPort) == int(port):
            if interface in ("", "0.0.0.0", "::", host) or (
                host.lower() == "localhost" and interface in ("127.0.0.1", "::1")
            ):
                return True
    return False


def _checkEndpoint(typed: str, description: str) -> None:
    """
    Build (but do not listen on) the endpoint C{description} names.

    @param typed: What the user typed, for the error message.
    @raise usage.UsageError: If it is malformed or names a missing file.
    """
    from twisted.internet import reactor

    try:
        serverFromString(reactor, description)
    except Exception as e:
        raise usage.UsageError(
            f"bad endpoint {typed!r}: {describeParseProblem(e)}"
        ) from None


def makeFactory(config: usage.Options) -> ConnectionFactory:
    """
    Build the factory C{config} asks for.
    """
    common: dict[str, Any] = {
        "idleTimeout": config["idle-timeout"] or None,
        "maxConnections": config["max-connections"] or None,
        "maxConnectionsPerHost": config["max-connections-per-ip"] or None,
    }
    if config["protocol"] == "echo":
        return EchoFactory(**common)
    if config["protocol"] == "relay":
        upstream = config.get("upstreamEndpoint")
        if upstream is None:
            from twisted.internet import reactor

            upstream = clientEndpoint(reactor, config["upstream"])
        return RelayFactory(
            upstream,
            framing=config["framing"],
            tag=config["tag"],
            queueLimit=config["queue-limit"],
            queueBytes=config["queue-bytes"],
            delimiter=DELIMITERS[config["delimiter"]],
            maxLineLength=config["max-line-length"],
            maxPendingBytes=config["max-pending-bytes"],
            **common,
        )
    if config["protocol"] == "chat":
        return ChatFactory(
            delimiter=DELIMITERS[config["delimiter"]],
            maxLineLength=config["max-line-length"],
            maxPendingBytes=config["max-pending-bytes"],
            **common,
        )
    handler = config.get("handlerObject")
    if handler is None and config["handler"] is not None:
        handler = loadHandler(config["handler"])
    return LineFactory(
        handler or echoLine,
        framing=config["framing"],
        delimiter=DELIMITERS[config["delimiter"]],
        maxLineLength=config["max-line-length"],
        handlerTimeout=config["handler-timeout"] or None,
        **common,
    )


class TcpcommService(MultiService):
    """
    Listen on every port with one factory; on stop, stop listening and let
    the connections finish (L{ConnectionFactory.shutDown}).

    A port that cannot be bound stops start-up with one readable line and
    exit status 1 (the ports already bound are closed again): see
    L{failStartup}.

    @ivar factory: The factory serving every port.
    @ivar shutdownTimeout: Seconds connections get to finish on stop.
    @ivar descriptions: The endpoint each port's service listens on.
    """

    def __init__(
        self,
        factory: ConnectionFactory,
        shutdownTimeout: float,
        twistdOptions: Any = None,
        reactor: IReactorCore | None = None,
    ) -> None:
        """
        @param twistdOptions: twistd's options, when run by twistd.
        @param reactor: When run by twistd, the reactor whose SIGTERM and
            SIGINT handlers a second signal must not reach while stopping
            (L{StopSignalGuard}).
        """
        super().__init__()
        self.factory = factory
        self.shutdownTimeout = shutdownTimeout
        self._twistdOptions = twistdOptions
        self.descriptions: dict[IService, str] = {}
        self._reactor = reactor
        self._signals = (
            StopSignalGuard(reactor)
            if reactor is not None and twistdOptions is not None
            else None
        )

    def startService(self) -> None:
        """
        Start listening; under twistd, once the reactor runs, make a second
        SIGTERM or SIGINT harmless.
        """
        super().startService()
        if self._reactor is not None and self._signals is not None:
            self._reactor.callWhenRunning(self._signals.install)

    def privilegedStartService(self) -> None:
        started: list[IService] = []
        for service in self:
            try:
                service.privilegedStartService()
            except Exception as e:
                message = cannotListenMessage(self.descriptions.get(service, "?"), e)
                if message is None:
                    raise
                for listening in started:
                    listening.stopService()
                failStartup(message, self._twistdOptions)
            started.append(service)

    def addPort(self, description: str, service: IService) -> None:
        """
        Add C{service}, which listens on the endpoint C{description}.
        """
        self.descriptions[service] = description
        service.setServiceParent(self)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, then wait for the connections to finish.
        """
        if self._signals is not None:
            self._signals.stopping = True
        stopped: Deferred[Any] = super().stopService()

        def finish(_: object) -> Deferred[None]:
            return self.factory.shutDown(self.shutdownTimeout)

        return stopped.addCallback(finish)


_log = Logger()


def raiseFileLimit(wanted: int) -> None:
    """
    Raise this process's soft limit on open files towards C{wanted} (each
    connection needs one), as far as the hard limit allows, and log it.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        _log.info(
            "Raised the open-files limit from {soft} to {target}",
            soft=soft,
            target=target,
            event="open_files_raised",
        )
    if target < wanted:
        _log.warn(
            "The open-files limit ({target}) is below what --max-connections"
            " needs ({wanted}); raise it (ulimit -n) or lower the limit",
            target=target,
            wanted=wanted,
            event="open_files_low",
        )


def checkRunnerFiles(runner: usage.Options) -> None:
    """
    Check that the log file and PID file twistd is about to write (after
    this, and after it forks into a daemon) can be written, so that a
    missing directory or a denied permission is one line on the terminal
    rather than twistd's traceback.

    @param runner: twistd's (or twist's) options.
    @raise SystemExit: With one readable line, if one cannot be written.
    """
    for option, what in (("logfile", "log file"), ("pidfile", "PID file")):
        path = runner.get(option)
        if not path or path == "-":
            continue
        problem = _cannotWrite(path)
        if problem is not None:
            raise SystemExit(
                f"twistd tcpcomm: error: cannot write the {what} {path!r}: {problem}"
            )


def _cannotWrite(path: str) -> str | None:
    """
    Why the file C{path} could not be opened for writing, or C{None}.
    """
    if os.path.isdir(path):
        return "it is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "permission denied"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return "no such directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return "permission denied"
    return None


def _bindsLater(config: usage.Options) -> bool:
    """
    Whether C{config} is a server's that twistd (or twist) is about to
    start, binding its ports only once it has forked or started logging:
    its parent is the runner's options, it runs in the directory it was
    started in (no C{--rundir} or C{--chroot}, which change what a UNIX
    socket's path names), and it is not a worker (whose ports are bound
    already).
    """
    runner = config.parent
    return (
        runner is not None
        and not runner.get("chroot")
        and runner.get("rundir", ".") == "."
        and config.get("worker-fds") is None
    )


_STAND_INS = {socket.AF_INET: "tcp:0", socket.AF_INET6: "tcp6:0"}
"""
Endpoint descriptions that say what kind of socket an inherited one of an
address family is, for L{inheritedPortServices} (which adopts the socket
instead of listening where they say).
"""


def _adoptedService(
    reactor: Any,
    adopted: tuple[int, socket.AddressFamily],
    factory: ConnectionFactory,
    proxied: bool = False,
    proxyHeaderTimeout: float = DEFAULT_HEADER_TIMEOUT,
) -> IService:
    """
    Serve C{factory} on the listening socket C{adopted} gives the file
    descriptor and address family of, behind a PROXY header if C{proxied}.
    """
    fd, family = adopted
    with suppress(OSError):  # a bad descriptor is reported as it is adopted
        # systemd passes blocking sockets: one would block the reactor in
        # accept().
        fdesc.setNonBlocking(fd)
    standIn = _STAND_INS.get(family, f"unix:inherited-descriptor-{fd}")
    if proxied:
        standIn = f"haproxy:{standIn}"
    [service] = inheritedPortServices(
        reactor, [standIn], [fd], factory, proxyHeaderTimeout
    )
    return service


def makeService(config: usage.Options, reactor: IReactorCore | None = None) -> IService:
    """
    Build a service listening on every C{--port} with one shared factory.

    Run by twistd, first check that every port can be bound (see
    L{checkPortsBindable}).

    @param reactor: The reactor to listen with; the global one by default.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    if config.parent is not None and _bindsLater(config):
        # twistd binds after it has forked into a daemon and started
        # logging, where a failure could not be one line on the terminal;
        # twist binds in startService, without our one-line report.
        checkPortsBindable(config["ports"] + _metricsPorts(config))
        checkRunnerFiles(config.parent)
    if config.get("workers", 1) > 1:
        # A supervisor holding the ports for worker processes (tcpcomm.workers).
        return WorkerSupervisor.fromOptions(config, reactor)
    factory = makeFactory(config)
    if config["max-connections"]:
        raiseFileLimit(config["max-connections"] + 64)
    parent = TcpcommService(factory, config["shutdown-timeout"], config.parent, reactor)
    if config.get("worker-fds") is not None:
        # A worker of --workers: serve the supervisor's sockets.
        for service in workerServices(reactor, config, factory):
            service.setServiceParent(parent)
        _addMetrics(parent, config, factory, reactor)
        return parent
    adopted: dict[str, tuple[int, socket.AddressFamily]]
    adopted = config.get("systemd-fds", {})
    for description in config["ports"]:
        if description in adopted:
            # A socket systemd passed without names (see Options.opt_port).
            inherited = adopted[description]
            service = _adoptedService(
                reactor,
                inherited,
                factory,
                splitProxied(description)[1],
                config["proxy-header-timeout"],
            )
            parent.addPort(description, service)
            continue
        # strports makes a busy port fail start-up instead of being logged;
        # TCP ports get write-through connections (tcpcomm.transport);
        # haproxy: ports read the PROXY header first (tcpcomm.proxied).
        endpoint, listening = proxiedListening(
            description, writeThroughReactor(reactor), config["proxy-header-timeout"]
        )
        service = strports.service(endpoint, factory, reactor=listening)
        if isinstance(service.endpoint, SSL4ServerEndpoint):
            # Twisted's TLS drops tcpcomm's half-close; see tcpcomm.tls.
            from tcpcomm.tls import keepHalfClose

            service.endpoint = keepHalfClose(service.endpoint)
        parent.addPort(description, service)
    _addMetrics(parent, config, factory, reactor)
    return parent


def _metricsPorts(config: usage.Options) -> list[str]:
    """
    The C{--metrics} endpoint, if any, as a list.
    """
    metrics: str | None = config.get("metrics")
    return [] if metrics is None else [metrics]


def _addMetrics(
    parent: TcpcommService,
    config: usage.Options,
    factory: ConnectionFactory,
    reactor: IReactorCore,
) -> None:
    """
    Serve C{factory}'s metrics on the C{--metrics} endpoint, if one is
    given (a worker's is the private socket its supervisor names).
    """
    for description in _metricsPorts(config):
        from tcpcomm.metrics import MetricsResource, metricsSite, serverRegistry

        site = metricsSite(MetricsResource(serverRegistry(factory)))
        service = strports.service(description, site, reactor=reactor)
        parent.addPort(description, service)
