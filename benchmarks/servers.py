"""
The servers that C{benchmarks/compare.py} compares, one per kind.

Run one as C{python benchmarks/servers.py KIND [--backlog N]}: it listens on
127.0.0.1, on a port the kernel picks, with the given listen backlog, prints
C{KIND starting on PORT} on standard output (the line twistd logs for a
port, so that one pattern finds every server's port), and serves until
SIGTERM or SIGINT.  It logs warnings and worse to standard error and nothing
else.  Every server echoes: byte echo servers send back every byte, line
servers send back every LF-terminated line, length servers (L{LENGTH_KINDS})
every frame with a 4-byte big-endian length prefix.

The tcpcomm kinds are not here: C{compare.py} runs them through twistd,
exactly as users do (L{tcpcommCommand}), because C{twistd tcpcomm} chooses
the reactor and transport that users get.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

DEFAULT_BACKLOG = 1024

TWISTED_KINDS = (
    "twisted-echo",
    "twisted-linereceiver",
    "twisted-lineonly",
    "twisted-int32",
)
ASYNCIO_KINDS = (
    "asyncio-protocol",
    "asyncio-lines",
    "asyncio-streams",
    "asyncio-streams-async",
    "asyncio-streams-later",
    "uvloop-protocol",
)
TCPCOMM_KINDS = (
    "tcpcomm-line",
    "tcpcomm-line-py",
    "tcpcomm-line-async",
    "tcpcomm-line-later",
    "tcpcomm-line-metrics",
    "tcpcomm-line-later-metrics",
    "tcpcomm-echo",
    "tcpcomm-length",
)
KINDS = TCPCOMM_KINDS + TWISTED_KINDS + ASYNCIO_KINDS

LENGTH_KINDS = frozenset({"tcpcomm-length", "twisted-int32"})
"""
Servers that speak frames with a 4-byte big-endian length prefix (Twisted's
C{Int32StringReceiver}); the others speak lines or bytes.
"""

TCPCOMM_OPTIONS = {
    "tcpcomm-line": ["--protocol", "line"],
    "tcpcomm-line-py": [
        "--protocol",
        "line",
        "--handler",
        "benchmarks.handlers:echoInPython",
    ],
    "tcpcomm-line-async": [
        "--protocol",
        "line",
        "--handler",
        "benchmarks.handlers:echoAsync",
    ],
    "tcpcomm-line-later": [
        "--protocol",
        "line",
        "--handler",
        "benchmarks.handlers:echoLater",
    ],
    # With --metrics (port 0: twistd logs the line port first, which is the
    # one compare.py finds).
    "tcpcomm-line-metrics": [
        "--protocol",
        "line",
        "--metrics",
        "tcp:0:interface=127.0.0.1",
    ],
    "tcpcomm-line-later-metrics": [
        "--protocol",
        "line",
        "--handler",
        "benchmarks.handlers:echoLater",
        "--metrics",
        "tcp:0:interface=127.0.0.1",
    ],
    "tcpcomm-echo": ["--protocol", "echo"],
    "tcpcomm-length": ["--protocol", "line", "--framing", "length:4"],
}
"""
The options of C{twistd -n tcpcomm} for each tcpcomm kind, besides C{--port}.
"""

TWISTD = "from twisted.scripts.twistd import run; run()"
"""
twistd as a C{-c} program: C{sys.executable -c TWISTD ARGS} is C{twistd ARGS}
run by this interpreter, finding the checkout's plugin from the working
directory.
"""


def tcpcommCommand(
    kind: str, backlog: int, options: Sequence[str] | None = None
) -> list[str]:
    """
    The command line that runs tcpcomm's server of C{kind} the way users
    run it, C{twistd -n tcpcomm} with default options, on 127.0.0.1 and a
    port the kernel picks; twistd logs C{... starting on PORT}.

    Run it with the checkout as the working directory.

    @param options: The options besides C{--port}, if not
        C{TCPCOMM_OPTIONS[kind]}.
    """
    return [
        sys.executable,
        "-c",
        TWISTD,
        "-n",
        "--pidfile=",
        "tcpcomm",
        *(TCPCOMM_OPTIONS[kind] if options is None else options),
        "--port",
        f"tcp:0:interface=127.0.0.1:backlog={backlog}",
    ]


def serverCommand(kind: str, backlog: int, script: str) -> list[str]:
    """
    The command line that runs a server of C{kind}; C{script} is the path
    of this file.
    """
    if kind in TCPCOMM_KINDS:
        return tcpcommCommand(kind, backlog)
    if kind not in KINDS:
        raise ValueError(f"unknown server kind {kind!r}")
    return [sys.executable, script, kind, "--backlog", str(backlog)]


def announce(kind: str, port: int) -> None:
    """
    Say which port the server listens on, as twistd does.
    """
    print(f"{kind} starting on {port}", flush=True)


def runTwisted(kind: str, backlog: int) -> None:
    """
    Serve a stock Twisted protocol on the default reactor (epoll on Linux).
    """
    from twisted.internet import reactor
    from twisted.internet.address import IPv4Address
    from twisted.internet.protocol import Protocol, ServerFactory
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )
    from twisted.protocols import basic, wire

    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )

    class LineReceiverEcho(basic.LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            self.sendLine(line)

    class LineOnlyEcho(basic.LineOnlyReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            self.sendLine(line)

    class Int32Echo(basic.Int32StringReceiver):
        def stringReceived(self, string: bytes) -> None:
            self.sendString(string)

    protocols: dict[str, type[Protocol]] = {
        "twisted-echo": wire.Echo,
        "twisted-linereceiver": LineReceiverEcho,
        "twisted-lineonly": LineOnlyEcho,
        "twisted-int32": Int32Echo,
    }
    factory = ServerFactory()
    factory.protocol = protocols[kind]
    port = reactor.listenTCP(0, factory, backlog=backlog, interface="127.0.0.1")
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    announce(kind, address.port)
    reactor.run()


class EchoProtocol(asyncio.Protocol):
    """
    Byte echo with asyncio's protocol API: every chunk read is written back.
    """

    transport: asyncio.WriteTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class LineProtocol(asyncio.Protocol):
    """
    Line echo with asyncio's protocol API and tcpcomm's own line framing
    (L{tcpcomm.framing.LineFramer}: split on LF, one CR before it dropped,
    16 KiB at most): the replies to all the lines of one read are joined and
    written at once, as tcpcomm's line server does.
    """

    transport: asyncio.WriteTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from tcpcomm.framing import LineFramer

        self.transport = cast(asyncio.WriteTransport, transport)
        self.framer = LineFramer()

    def data_received(self, data: bytes) -> None:
        lines = self.framer.feed(data)
        if lines:
            lines.append(b"")
            self.transport.write(b"\n".join(lines))


async def echoLines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """
    Line echo with asyncio streams: C{readline}, C{write}, C{await drain()}.
    """
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line)
            await writer.drain()
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def awaitingEachLine(
    handler: Callable[[bytes], Awaitable[bytes]],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """
    Line echo with asyncio streams and an C{async} handler: C{readline},
    C{write(await handler(line))}, C{await drain()}.  The handler gets the
    line as read, LF included, and its reply is written as it is (no
    stripping and re-adding of the LF, less work than tcpcomm does).
    """

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write(await handler(line))
                await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    return serve


async def serveAsyncio(kind: str, backlog: int) -> None:
    """
    Listen with asyncio on the running loop until SIGTERM or SIGINT.
    """
    loop = asyncio.get_running_loop()
    server: asyncio.Server
    if kind.startswith("asyncio-streams"):
        from benchmarks.handlers import echoAfterSleep, echoAsync

        serve = {
            "asyncio-streams": echoLines,
            "asyncio-streams-async": awaitingEachLine(echoAsync),
            "asyncio-streams-later": awaitingEachLine(echoAfterSleep),
        }[kind]
        server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=backlog)
    else:
        protocol = LineProtocol if kind == "asyncio-lines" else EchoProtocol
        server = await loop.create_server(protocol, "127.0.0.1", 0, backlog=backlog)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    announce(kind, server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()


def runLoop(main: Callable[[], Awaitable[None]], newLoop: Callable[[], Any]) -> None:
    """
    Run C{main} to completion on a fresh loop made by C{newLoop}.
    """
    loop = newLoop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def runAsyncio(kind: str, backlog: int) -> None:
    """
    Serve with asyncio's default loop, or uvloop's for C{uvloop-*} kinds.
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    newLoop: Callable[[], Any] = asyncio.new_event_loop
    if kind.startswith("uvloop-"):
        import uvloop

        newLoop = uvloop.new_event_loop
    runLoop(lambda: serveAsyncio(kind, backlog), newLoop)


def main(argv: list[str] | None = None) -> None:
    """
    Run the server named on the command line.
    """
    # The checkout, for its tcpcomm (asyncio-lines) and benchmarks.handlers.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("kind", choices=TWISTED_KINDS + ASYNCIO_KINDS)
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG)
    options = parser.parse_args(argv)
    if options.kind in TWISTED_KINDS:
        runTwisted(options.kind, options.backlog)
    else:
        runAsyncio(options.kind, options.backlog)


if __name__ == "__main__":
    main()
