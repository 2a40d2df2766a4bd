# -*- test-case-name: tests.test_cli -*-
"""
The C{tcpcomm} command (also C{python -m tcpcomm}): a TCP client that
half-closes properly.

    tcpcomm connect HOST:PORT       stdin to the server, the server to stdout
    tcpcomm send HOST:PORT TEXT...  send each TEXT as a line, print the reply
    tcpcomm bench HOST:PORT --mode MODE   load an echo server, verify, measure
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IReactorFromThreads,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpcomm import bench
from tcpcomm._version import __version__
from tcpcomm.client import (
    DEFAULT_TIMEOUT,
    clientEndpoint,
    describeFailure,
    halfClose,
    isTLS,
)
from tcpcomm.connection import IFlowControlledTransport
from tcpcomm.endpoints import checkTLSAvailable
from tcpcomm.framers import Framer, FramingError, LineAdapter, parseFraming

PROG = "tcpcomm"

INTERRUPTED = bench.INTERRUPTED

_DESCRIPTION = """\
A TCP client that says "I am done sending" the proper way (a half-close,
like Java's shutdownOutput() or shutdown(fd, SHUT_WR)) and still reads
every byte the server sends until it closes.

ENDPOINT is HOST:PORT ([::1]:8000 for IPv6; host names are tried on IPv4 and
IPv6) or a Twisted client endpoint description such as
tcp:host=127.0.0.1:port=8000, unix:path=/run/tcpcomm.sock or
tls:example.com:8443.

What the server sends goes to standard output as it arrives; when standard
output is slow, the client stops reading the socket rather than buffering.

Exit status: 0 when the server closed cleanly; 1 with one line on standard
error when the connection was refused, reset or timed out, or the server
closed without replying to what was sent; 2 for a bad command line, a
malformed ENDPOINT or a port outside 1-65535 included; 130 when
interrupted (Ctrl-C).  (bench: 0 when every byte came back verified.)
"""

_BENCH_DESCRIPTION = """\
Load an echo server (byte echo or line echo) and measure it: open
--connections connections, send lines of exactly --size bytes (the LF
included), check every byte of the echo in order against what was sent,
warm up for --warmup seconds, then measure for --duration seconds.

modes:
  pingpong  each connection keeps --pipeline lines in flight (default 1):
            whenever k lines come back, k more go out in one send
  lines     the same, 16 in flight by default
  stream    each connection writes 64 KiB chunks (of --size-byte lines)
            and reads the echo, with at most 256 KiB in flight (--pipeline
            lines, if given); it reports MB/s, not lines per second

With --framing SPEC each message is a frame of that framing carrying a
--size-byte payload (for modbus, --size is the request ADU's: 12 for read
holding registers, an odd 15 to 259 for write multiple registers, each with
its own transaction id; for length with a small strip, the frame less the
stripped bytes): the server must echo each frame's payload in a frame of
the same framing, and every echoed frame is checked.

It reports lines (messages) per second, MB/s each way, line latency p50,
p90 and p99 (from the send that finished a line to the end of its echo),
and the load generator's own CPU use (user+sys over the measured time,
in percent of one core, added up over --processes).  --json prints one
JSON object instead (failed runs too: verified false).

ENDPOINT is HOST:PORT, [IPV6]:PORT, tcp:host=HOST:port=PORT or unix:PATH;
TLS is not supported.

Exit status: 0 when every byte sent came back verified; 1 with one line on
standard error when a connection was refused, reset or closed early, the
echo differed (the line names the connection and offset), or the server
stopped answering; 2 for a bad command line (a malformed or TLS ENDPOINT
included); 130 when interrupted (Ctrl-C).
"""


def _intAtLeast(least: int, most: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least or (most is not None and value > most):
            bounds = (
                f"from {least} to {most}" if most is not None else f"{least} or more"
            )
            raise argparse.ArgumentTypeError(
                f"expected a whole number {bounds}, not {text!r}"
            )
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"expected seconds, 0 or more, not {text!r}")
    return value


def _positiveSeconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, not {text!r}")
    return value


def buildParser() -> argparse.ArgumentParser:
    """
    The command line parser for C{tcpcomm}.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("endpoint", metavar="ENDPOINT", help="where to connect")
    common.add_argument(
        "--timeout",
        type=_positiveSeconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up after this long (default %(default)g); see each command",
    )
    common.add_argument(
        "--crlf",
        action="store_true",
        help="end lines with CRLF instead of LF",
    )

    connect = commands.add_parser(
        "connect",
        parents=[common],
        help="copy stdin to the server and the server to stdout",
        description="Copy standard input to the server and what the server sends"
        " to standard output, binary safe, like nc -N. At the end of standard"
        " input, half-close and keep printing until the server closes."
        " --timeout bounds connecting, and how long the server may stay silent"
        " after standard input ended. --crlf turns each LF of standard input"
        " into CRLF.",
    )
    connect.set_defaults(run=runConnect, commandParser=connect)

    send = commands.add_parser(
        "send",
        parents=[common],
        help="send each TEXT as a line, half-close, print the reply",
        description="Send each TEXT as a line, half-close, print everything the"
        " server sends until it closes. --timeout bounds the whole exchange.",
    )
    send.add_argument("text", metavar="TEXT", nargs="+", help="a line to send")
    send.add_argument(
        "--framing",
        metavar="SPEC",
        default=None,
        help="send each TEXT as a frame of this framing (delimiter:HEX, stx-etx,"
        " length:SIZE[:...], netstring, fixed:N, modbus; as twistd tcpcomm"
        " --framing) and print each reply frame's payload on a line of its own",
    )
    send.add_argument(
        "--hex",
        action="store_true",
        help="with --framing: give each TEXT, and print each reply payload, as hex",
    )
    send.set_defaults(run=runSend, commandParser=send)

    load = commands.add_parser(
        "bench",
        help="load an echo server, verify every byte, measure",
        description=_BENCH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("endpoint", metavar="ENDPOINT", help="the echo server")
    load.add_argument(
        "--mode", required=True, choices=bench.MODES, help="the load (see modes)"
    )
    load.add_argument(
        "--connections",
        type=_intAtLeast(1),
        default=100,
        metavar="C",
        help="connections at once (default %(default)s)",
    )
    load.add_argument(
        "--size",
        type=_intAtLeast(1, bench.MAX_SIZE),
        default=None,
        metavar="S",
        help=f"bytes per line, LF included (default {bench.DEFAULT_SIZE}); with"
        " --framing, payload bytes per frame (default: modbus 12, fixed:N N,"
        f" others {bench.DEFAULT_SIZE})",
    )
    load.add_argument(
        "--framing",
        metavar="SPEC",
        default="line",
        help="send each message as a frame of this framing (line, delimiter:HEX,"
        " stx-etx, length:SIZE[:...], netstring, fixed:N, modbus; as twistd"
        " tcpcomm --framing) and verify each echoed frame (default %(default)s)",
    )
    load.add_argument(
        "--pipeline",
        type=_intAtLeast(1),
        metavar="P",
        help="lines in flight per connection (default: pingpong 1, lines 16,"
        " stream 256 KiB worth)",
    )
    load.add_argument(
        "--duration",
        type=_positiveSeconds,
        default=5.0,
        metavar="D",
        help="seconds measured (default %(default)g)",
    )
    load.add_argument(
        "--warmup",
        type=_seconds,
        default=1.0,
        metavar="W",
        help="seconds of load before measuring (default %(default)g)",
    )
    load.add_argument(
        "--processes",
        type=_intAtLeast(1),
        default=1,
        metavar="N",
        help="split the connections across N processes (default %(default)s)",
    )
    load.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout"
    )
    load.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    load.set_defaults(run=None, commandParser=load)
    return parser


def benchConfig(args: argparse.Namespace) -> bench.BenchConfig:
    """
    The L{bench.BenchConfig} that C{tcpcomm bench}'s C{args} ask for;
    combinations argparse cannot check end it as argparse does (status 2).
    """
    try:
        bench.parseEndpoint(args.endpoint)
    except bench.BenchError as e:
        args.commandParser.error(str(e))
    if args.processes > args.connections:
        args.commandParser.error(
            f"argument --processes: {args.processes} processes for"
            f" {args.connections} connections; give each one at least one"
        )
    size = args.size
    try:
        if size is None:
            size = bench.defaultSize(args.framing)
        elif size < 2 and bench.isLineFraming(args.framing):
            args.commandParser.error(
                f"argument --size: expected a whole number from 2 to"
                f" {bench.MAX_SIZE}, not '{size}'"
            )
        config = bench.BenchConfig(
            endpoint=args.endpoint,
            mode=args.mode,
            connections=args.connections,
            size=size,
            pipeline=args.pipeline,
            duration=args.duration,
            warmup=args.warmup,
            processes=args.processes,
            framing=args.framing,
        )
        frame = config.frameBytes
    except bench.BenchError as e:
        args.commandParser.error(str(e))
    if args.framing == "modbus" and config.window > bench.MODBUS_TRANSACTIONS:
        args.commandParser.error(
            f"argument --pipeline: at most {bench.MODBUS_TRANSACTIONS} MODBUS"
            " requests in flight, each with its own transaction id"
        )
    if config.window * frame > bench.MAX_WINDOW:
        what = "lines" if bench.isLineFraming(config.framing) else "frames"
        args.commandParser.error(
            f"argument --pipeline: {config.window} {what} of {frame} bytes"
            f" in flight is more than {bench.MAX_WINDOW // bench.MiB} MiB"
        )
    return config


def _problem(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()
    return 1


async def runSend(reactor: Any, args: argparse.Namespace) -> int:
    """
    C{tcpcomm send}: send the lines, half-close, and copy the reply to
    standard output as it arrives.
    """
    if args.framing is None:
        delimiter = "\r\n" if args.crlf else "\n"
        data = "".join(text + delimiter for text in args.text).encode("utf-8")
        return await _talk(reactor, args, data)
    framer = args.framer
    return await _talk(reactor, args, b"".join(map(framer.encode, args.payloads)))


def framedSend(args: argparse.Namespace) -> None:
    """
    Check C{send --framing}'s arguments, and set C{args.framer} and
    C{args.payloads} (the frames to send, as payloads).

    @raise ValueError: With one line, if the spec, a C{--hex} TEXT or a
        payload the framing cannot frame is wrong.
    """
    if args.framing is None:
        if args.hex:
            raise ValueError("--hex applies to --framing only")
        return
    args.framer = parseFraming(args.framing)()
    payloads = []
    for text in args.text:
        try:
            payloads.append(bytes.fromhex(text) if args.hex else text.encode("utf-8"))
        except ValueError:
            raise ValueError(f"--hex: {text!r} is not hex") from None
    for payload in payloads:
        try:
            args.framer.encode(payload)
        except ValueError as e:
            shown = payload if len(payload) <= 40 else payload[:40] + b"..."
            raise ValueError(f"cannot send {shown!r} as a frame: {e}") from None
    args.payloads = payloads


class CrlfTranslator:
    """
    Turn each LF not already preceded by CR into CRLF, across chunks.
    """

    def __init__(self) -> None:
        self._lastWasCR = False

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return data
        out = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self._lastWasCR and data[:1] == b"\n":
            out = out[1:]
        self._lastWasCR = data[-1:] == b"\r"
        return out


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class _Upstream(Protocol):
    """
    The TCP side of C{tcpcomm connect} and C{send}: what the server sends
    goes to stdout as it arrives.  C{connect} sends standard input; C{send}
    sends fixed bytes and reads nothing from standard input.
    """

    transport: IFlowControlledTransport

    def __init__(
        self,
        reactor: Any,
        where: str,
        timeout: float,
        crlf: bool,
        data: bytes | None = None,
        framer: Framer | None = None,
        hexOutput: bool = False,
    ) -> None:
        """
        @param framer: For C{send --framing}: what cuts the server's bytes
            into the frames whose payloads are printed, one a line.
        @param hexOutput: Print those payloads as hex.
        """
        self.reactor = reactor
        self.where = where
        self.timeout = timeout
        self.translate = CrlfTranslator() if crlf and data is None else None
        self.data = data
        self.framer = framer
        self.hexOutput = hexOutput
        self.done: Deferred[int] = Deferred(self._cancelled)
        self.stdio: Any = None
        self.stdioProtocol = _Stdio(self)
        self.serverFinished = False
        self._silence: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        self._handshake: IDelayedCall | None = None
        self._code: int | None = None
        self._sent = 0
        self._received = 0
        self._lost = False

    def connectionMade(self) -> None:
        from twisted.internet.stdio import StandardIO

        stdin = 0
        if self.data is not None:
            # send: standard input stays the user's; an empty pipe stands
            # in for it, so the lines go out and the half-close follows.
            stdin, writeEnd = os.pipe()
            os.close(writeEnd)
            self.fromStdin(self.data)
        # (The POSIX StandardIO takes stdin=; mypy sees the Windows one.)
        self.stdio = cast(Any, StandardIO)(
            self.stdioProtocol, stdin=stdin, reactor=self.reactor
        )
        # Flow control both ways: a full socket buffer pauses reading stdin,
        # a full stdout pauses reading the socket.
        self.transport.registerProducer(self.stdio, True)
        self.stdio.registerProducer(self.transport, True)
        if isTLS(self.transport):
            # Until the handshake ends, the TLS transport holds standard
            # input, whose end starts the silence timer: time it on its own.
            self._handshake = self.reactor.callLater(self.timeout, self._silent)

    _stdinEnded = False
    _handshakeDone = False

    def handshakeCompleted(self) -> None:
        """
        TLS is up: a half-close that waited for it can go out now.
        """
        self._handshakeDone = True
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
        if self._stdinEnded and not self._lost:
            halfClose(self.transport)

    def fromStdin(self, data: bytes) -> None:
        if self.translate is not None:
            data = self.translate(data)
        self._sent += len(data)
        self.transport.write(data)

    def stdinEnded(self) -> None:
        if self._lost:
            # The connection went first (at the reactor's shutdown, the
            # order of the two is arbitrary): nothing left to half-close.
            return
        self.transport.unregisterProducer()
        self._stdinEnded = True
        if self._handshakeDone or not isTLS(self.transport):
            halfClose(self.transport)
        if self.data is None:
            self._restartSilenceTimer()

    def startDeadline(self, seconds: float) -> None:
        """
        End with "timed out" unless the server has closed in C{seconds}.
        """
        if not self._lost:
            self._deadline = self.reactor.callLater(seconds, self._silent)

    def outputGone(self) -> None:
        """
        Nobody reads our output any more (C{| head}): stop quietly, as
        tools in a pipeline do.
        """
        self._decide(0)
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self._received += len(data)
        if self.framer is not None:
            try:
                data = self._lines(self.framer.feed(data))
            except FramingError as e:
                self.stdio.write(self._lines(e.frames))
                self._decide(1, f"bad frame from {self.where}: {e.reason}")
                self.transport.abortConnection()
                return
        self.stdio.write(data)
        if self._silence is not None:
            self._restartSilenceTimer()

    def _lines(self, payloads: list[bytes]) -> bytes:
        """
        Reply payloads as printed: each on a line of its own, as hex with
        C{--hex}.
        """
        if self.hexOutput:
            payloads = [payload.hex().encode("ascii") for payload in payloads]
        return b"".join(payload + b"\n" for payload in payloads)

    def _endOfFrames(self) -> None:
        """
        The server closed cleanly: print an unterminated last frame, or say
        that it closed inside one.
        """
        if self.framer is None or self.stdio is None or self._code is not None:
            return
        try:
            self.stdio.write(self._lines(self.framer.end()))
        except FramingError as e:
            self.stdio.write(self._lines(e.frames))
            self._decide(1, f"{self.where} closed inside a frame: {e.reason}")

    def _restartSilenceTimer(self) -> None:
        if self._silence is not None and self._silence.active():
            self._silence.cancel()
        self._silence = self.reactor.callLater(self.timeout, self._silent)

    def _silent(self) -> None:
        self._silence = self._deadline = self._handshake = None
        waitingFor = self.where
        if not self._handshakeDone and isTLS(self.transport):
            # Such as a line server holding a ClientHello with no line end.
            waitingFor = (
                f"the TLS handshake with {self.where} (not a TLS port? use HOST:PORT)"
            )
        self._decide(1, f"timed out after {self.timeout:g} s waiting for {waitingFor}")
        self.transport.abortConnection()

    def _cancelled(self, done: Deferred[int]) -> None:
        """
        The command was interrupted: end without blaming the server, and
        close the connection (the reactor's shutdown closes the socket).
        """
        self._decide(INTERRUPTED)
        if not self._lost:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self.serverFinished = True
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        for timer in (self._silence, self._deadline, self._handshake):
            if timer is not None and timer.active():
                timer.cancel()
        if not (self.serverFinished or reason.check(ConnectionDone)):
            self._decide(1, str(describeFailure(reason, self.where, None, True)))
        else:
            self._endOfFrames()
        if self._sent and not self._received:
            if isTLS(self.transport):
                hint = ""
            elif self.framer is None or isinstance(self.framer, LineAdapter):
                hint = " (a TLS port? use tls:HOST:PORT)"
            else:
                # A binary framing's server refuses a bad frame without a word.
                hint = " (a server of another framing? or a TLS port: tls:HOST:PORT)"
            self._decide(1, f"connection closed by {self.where} with no reply{hint}")
        self._decide(0)
        self._finish(self._code or 0)

    def _decide(self, code: int, problem: str | None = None) -> None:
        """
        Settle the exit status, and report a problem, once: the first cause
        of the end wins over the connection loss it brings about.
        """
        if self._code is not None:
            return
        self._code = code
        if problem is not None:
            _problem(problem)

    def _finish(self, code: int) -> None:
        def end(_: object = None) -> None:
            if not self.done.called:
                self.done.callback(code)

        stdio = self.stdio
        if stdio is None or self.stdioProtocol.stdoutGone or self.done.called:
            end()
            return
        # Flush what is left for stdout, then end.
        stdio.unregisterProducer()
        self.stdioProtocol.closed.addBoth(end)
        stdio.loseConnection()


@implementer(IHalfCloseableProtocol)
class _Stdio(Protocol):
    """
    The stdin/stdout side of C{tcpcomm connect}.
    """

    def __init__(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        self.closed: Deferred[None] = Deferred()
        self.stdoutGone = False

    def dataReceived(self, data: bytes) -> None:
        self.upstream.fromStdin(data)

    def readConnectionLost(self) -> None:
        self.upstream.stdinEnded()

    def writeConnectionLost(self) -> None:
        self.stdoutGone = True
        self.upstream.outputGone()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.closed.called:
            self.closed.callback(None)


async def runConnect(reactor: Any, args: argparse.Namespace) -> int:
    """
    C{tcpcomm connect}: stdin to the server, the server to stdout.
    """
    return await _talk(reactor, args, None)


async def _talk(reactor: Any, args: argparse.Namespace, data: bytes | None) -> int:
    """
    Connect to C{args.endpoint} and copy what the server sends to standard
    output, with flow control, until it closes; send C{data}, or standard
    input if C{None}.
    """
    endpoint = clientEndpoint(reactor, args.endpoint)
    upstream = _Upstream(
        reactor,
        args.endpoint,
        args.timeout,
        args.crlf,
        data,
        framer=getattr(args, "framer", None),
        hexOutput=getattr(args, "hex", False),
    )
    started = reactor.seconds()
    connecting = connectProtocol(endpoint, upstream)
    connecting.addTimeout(args.timeout, reactor)
    try:
        await connecting
    except Exception:
        stopped = getattr(args, "stopped", None)
        if stopped is not None and stopped.called:
            # Interrupted: nothing to report.  (Cancelled while resolving
            # the name, HostnameEndpoint fails with DNSLookupError.)
            raise
        failure = Failure()
        return _problem(
            str(describeFailure(failure, args.endpoint, args.timeout, False))
        )
    if data is not None:
        # send: --timeout bounds the whole exchange.
        upstream.startDeadline(max(0.0, args.timeout - (reactor.seconds() - started)))
    return await upstream.done


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run the C{tcpcomm} command with C{argv} (default: C{sys.argv[1:]}).
    """
    try:
        _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C before the command could handle it (while starting up).
        _problem("interrupted")
        sys.exit(INTERRUPTED)


def _main(argv: Sequence[str] | None) -> NoReturn:
    parser = buildParser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        # The load generator is plain sockets: no reactor.
        config = benchConfig(args)
        sys.exit(bench.runCommand(config, asJSON=args.json, quiet=args.quiet))
    _openStandardDescriptors()
    try:
        checkTLSAvailable(args.endpoint)
    except ValueError as e:
        # Not a mistake on the command line: this installation lacks TLS.
        sys.exit(_problem(str(e)))
    from twisted.internet import reactor as globalReactor

    try:
        # Check the endpoint before starting the reactor.
        clientEndpoint(globalReactor, args.endpoint)
    except ValueError as e:
        args.commandParser.error(str(e))
    if args.command == "send":
        try:
            framedSend(args)
        except ValueError as e:
            args.commandParser.error(str(e))
    from twisted.internet.task import react

    # Fires with the exit status when a signal stops the command.
    stopped: Deferred[int] = Deferred()
    args.stopped = stopped

    def stop(code: int, message: str) -> None:
        if not stopped.called:
            _problem(message)
            stopped.callback(code)

    def onSignal(number: int, frame: object) -> None:
        code, message = _SIGNALS[number]
        cast(IReactorFromThreads, globalReactor).callFromThread(stop, code, message)

    # Twisted leaves a SIGINT handler that is already there alone; its
    # SIGTERM handler replaces ours once it runs, so ours goes in after.
    signal.signal(signal.SIGINT, onSignal)
    globalReactor.callWhenRunning(signal.signal, signal.SIGTERM, onSignal)

    async def run(reactor: Any) -> None:
        command = Deferred.fromCoroutine(args.run(reactor, args))
        code = await _first(command, stopped)
        if code:
            raise SystemExit(code)

    stdinFlags = _flags(0)
    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    finally:
        # Twisted leaves standard input non-blocking, which would break the
        # next reader of a shared pipe or terminal: put it back.
        if stdinFlags is not None and _flags(0) != stdinFlags:
            _flags(0, stdinFlags)


def _openStandardDescriptors() -> None:
    """
    Open C{/dev/null} in place of standard input, output or error if one is
    closed (C{<&-}, C{>&-}), as if redirected there, so that no descriptor
    the command opens takes its number.
    """
    for descriptor in (0, 1, 2):
        if _flags(descriptor) is None:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != descriptor:
                os.dup2(opened, descriptor)
                os.close(opened)


def _flags(descriptor: int, flags: int | None = None) -> int | None:
    """
    Get (or set to C{flags}) the file status flags of C{descriptor}; C{None}
    if it is not open or the system has no C{fcntl}.
    """
    try:
        import fcntl

        if flags is None:
            return fcntl.fcntl(descriptor, fcntl.F_GETFL)
        return fcntl.fcntl(descriptor, fcntl.F_SETFL, flags)
    except (ImportError, OSError):
        return None


_SIGNALS: dict[int, tuple[int, str]] = {
    signal.SIGINT: (INTERRUPTED, "interrupted"),
    signal.SIGTERM: (128 + signal.SIGTERM, "terminated"),
}
"""
What the command says and its exit status when a signal stops it, as a
shell reports it (128 plus the signal's number).
"""


def _first(command: Deferred[int], stopped: Deferred[int]) -> Deferred[int]:
    """
    The exit status of C{command}, or of C{stopped} if that fires first, in
    which case C{command} is cancelled: it ends the connection quietly.
    """
    result: Deferred[int] = Deferred()

    def settle(outcome: int | Failure) -> None:
        if result.called:
            return
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)

    def interrupted(code: int) -> None:
        settle(code)
        command.cancel()

    command.addBoth(settle)
    stopped.addCallback(interrupted)
    return result
