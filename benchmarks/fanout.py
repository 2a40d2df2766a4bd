"""
How fast tcpcomm's chat fans lines out and its relay gathers them, next to
asyncio C{Protocol} servers doing the same work.

Two scenarios (issue 15), each run against tcpcomm (C{twistd -n tcpcomm}
as users run it) and an asyncio reference in the same run:

  - C{chat}: C{--protocol chat}; 50 members connect, one sends 20,000 lines
    of 32 bytes (LF included) as fast as it can; the time until all 49 others
    have every line.  Figure: lines delivered per second (20,000 x 49 / time).
  - C{relay}: C{--protocol relay --upstream 127.0.0.1:PORT}; an upstream sink
    in this process counts what arrives; 20 clients each send 50,000 lines of
    32 bytes; the time until the sink has all 1,000,000.  Figure: lines/s.

Usage::

    python benchmarks/fanout.py [--scenarios chat relay] [--repeats 3]
        [--members 50] [--lines 20000] [--clients 20] [--client-lines 50000]
        [--server-cpu 0] [--client-cpu 1] [--retry-noisy 2]
        [--wait-quiet PERCENT] [--out benchmarks/results] [--json]

The load (every client, the sink) is this process, on the client CPUs; each
server a subprocess on the server CPU, started fresh for each repeat, warmed
up with a tenth of the load, then measured once.  Every byte that arrives is
checked after the clock stops.  Linux only (it reads C{/proc}).  Loopback
only.  Every loop is bounded in count and time; every process it starts is
ended by its PID and reaped.  Exit status 1 when a run failed.

Run as C{python benchmarks/fanout.py --serve KIND [--upstream HOST:PORT]},
it is one of the asyncio reference servers (L{REFERENCES}).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import selectors
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import compare, servers  # noqa: E402
from tcpcomm.chatroom import sanitize  # noqa: E402
from tcpcomm.framing import LineFramer  # noqa: E402
from tcpcomm.line import DEFAULT_MAX_PENDING_BYTES  # noqa: E402

SCRIPT = str(Path(__file__).resolve())

REFERENCES = ("asyncio-chat", "asyncio-relay")
KINDS = {
    "chat": ("tcpcomm-chat", "asyncio-chat"),
    "relay": ("tcpcomm-relay", "asyncio-relay"),
}
"""
The servers of each scenario: tcpcomm first, its reference second.
"""

DESCRIPTIONS = {
    "tcpcomm-chat": "`twistd -n tcpcomm --protocol chat`",
    "asyncio-chat": "asyncio `Protocol`: a read's lines (tcpcomm's `LineFramer`),"
    " each prefixed `<name> `, control bytes escaped with"
    " `tcpcomm.chatroom.sanitize` in lines that have any, written as one block"
    " to each other member (`get_write_buffer_size()` over 1 MiB: dropped)",
    "tcpcomm-relay": "`twistd -n tcpcomm --protocol relay --upstream 127.0.0.1:PORT`",
    "asyncio-relay": "asyncio `Protocol`: a client read's whole lines"
    " (`LineFramer`) written upstream in one write; upstream lines to every"
    " client; clients' reading paused while the upstream's buffer is full",
}

TARGET = 0.5
"""
tcpcomm's rate over the reference's, at least.
"""

LINE_SIZE = 32
"""
Bytes per line sent, LF included.
"""

ROUND_TIMEOUT = 120.0
"""
Seconds a measured (or warm-up) round may take.
"""
SETUP_TIMEOUT = 20.0
"""
Seconds connecting, syncing or accepting the upstream may take.
"""
READ_SIZE = 256 * 1024
LOOP_BOUND = 10_000_000
"""
The most turns any loop takes (each is bounded in time too).
"""
QUIET_WINDOW = 0.5
"""
Seconds of pause before a measured round, over which (and the round) other
processes' CPU use is read.
"""


# -- the asyncio references ----------------------------------------------------

_NEEDS_ESCAPE = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f-\xff]")
"""
A byte that C{sanitize} may change (anything but tab, printable ASCII, and
the LF between lines): a read without one has no line to escape.
"""


class ChatMember(asyncio.Protocol):
    """
    A chat member: each read's lines go to every other member as one block
    of C{<NAME> line} lines.  Its name is its address; joins and leaves are
    told to the others; C{/who} is answered, C{//text} says C{/text}, other
    commands are answered C{ERROR unknown command} (no C{/nick}: the load
    does not rename); empty lines are not said.
    """

    room: list[ChatMember]

    def __init__(self, room: list[ChatMember]) -> None:
        self.room = room
        self.framer = LineFramer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.name = b"%s:%d" % (host.encode(), port)
        self.prefix = b"<%s> " % self.name
        self.tell(b"* %s joined\n" % self.name)
        self.room.append(self)
        self.transport.write(b"* welcome, %s: /who to list who is here\n" % self.name)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.room:
            self.room.remove(self)
            self.tell(b"* %s left\n" % self.name)

    def tell(self, block: bytes) -> None:
        """
        Send C{block} to every other member.
        """
        for member in self.room:
            if member is not self:
                member.deliver(block)

    def data_received(self, data: bytes) -> None:
        lines = self.framer.feed(data)
        if not lines:
            return
        if _NEEDS_ESCAPE.search(data) or any(not x or x[0] == 0x2F for x in lines):
            lines = self.said(lines)
            if not lines:
                return
        prefix = self.prefix
        self.tell(prefix + (b"\n" + prefix).join(lines) + b"\n")

    def said(self, lines: list[bytes]) -> list[bytes]:
        """
        The lines of C{lines} to say, escaped; answer the commands.
        """
        kept = []
        for line in lines:
            if line.startswith(b"/") and not line.startswith(b"//"):
                command = line.partition(b" ")[0][:32]
                if command == b"/who":
                    names = b", ".join(member.name for member in self.room)
                    self.transport.write(b"* here: " + names + b"\n")
                else:
                    self.transport.write(b"ERROR unknown command: " + command + b"\n")
                continue
            if line.startswith(b"//"):
                line = line[1:]
            if line:
                kept.append(sanitize(line) if _NEEDS_ESCAPE.search(line) else line)
        return kept

    def deliver(self, block: bytes) -> None:
        """
        Send C{block}, or drop this member if too much waits for it.
        """
        if self.transport.get_write_buffer_size() > DEFAULT_MAX_PENDING_BYTES:
            self.transport.write(b"ERROR too slow\n")
            self.transport.abort()
            return
        self.transport.write(block)


class RelayClient(asyncio.Protocol):
    """
    A relay client: the whole lines of each read go upstream in one write.
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.framer = LineFramer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.relay.clients.append(self)
        if self.relay.paused:
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.relay.clients:
            self.relay.clients.remove(self)

    def data_received(self, data: bytes) -> None:
        lines = self.framer.feed(data)
        if lines:
            lines.append(b"")
            self.relay.upstream.write(b"\n".join(lines))


class Relay(asyncio.Protocol):
    """
    The relay's upstream connection: its lines go to every client, and
    reading from every client pauses while its buffer is full.
    """

    def __init__(self) -> None:
        self.clients: list[RelayClient] = []
        self.paused = False
        self.framer = LineFramer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.upstream = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        lines = self.framer.feed(data)
        if lines:
            lines.append(b"")
            block = b"\n".join(lines)
            for client in self.clients:
                client.transport.write(block)

    def pause_writing(self) -> None:
        self.paused = True
        for client in self.clients:
            client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        for client in self.clients:
            client.transport.resume_reading()


async def serveReference(kind: str, upstream: str | None) -> None:
    """
    Serve the reference C{kind} on 127.0.0.1 until SIGTERM or SIGINT.
    """
    loop = asyncio.get_running_loop()
    backlog = servers.DEFAULT_BACKLOG
    factory: Callable[[], asyncio.Protocol]
    if kind == "asyncio-chat":
        room: list[ChatMember] = []

        def factory() -> asyncio.Protocol:
            return ChatMember(room)

    else:
        if upstream is None:
            raise SystemExit("fanout: asyncio-relay needs --upstream HOST:PORT")
        host, _, port = upstream.rpartition(":")
        _, relay = await loop.create_connection(Relay, host, int(port))

        def factory() -> asyncio.Protocol:
            return RelayClient(relay)

    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=backlog)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers.announce(kind, server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()


def serverCommand(kind: str, upstream: int | None) -> list[str]:
    """
    The command line of the server C{kind}; C{upstream} is the sink's port
    for the relays.
    """
    relay = ["--upstream", f"127.0.0.1:{upstream}"] if kind.endswith("relay") else []
    if kind.startswith("tcpcomm-"):
        protocol = kind.removeprefix("tcpcomm-")
        return servers.tcpcommCommand(
            kind, servers.DEFAULT_BACKLOG, ["--protocol", protocol, *relay]
        )
    return [sys.executable, SCRIPT, "--serve", kind, *relay]


# -- the load ------------------------------------------------------------------


class Failed(compare.Failed):
    """
    A run went wrong: a wrong byte, a closed connection, out of time.
    """


def connect(port: int, count: int) -> list[socket.socket]:
    """
    Open C{count} non-blocking connections to 127.0.0.1:C{port}, one after
    the other.
    """
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), SETUP_TIMEOUT)
            sock.setblocking(False)
            opened.append(sock)
    except OSError as e:
        for sock in opened:
            sock.close()
        raise Failed(f"cannot connect: {e}") from None
    return opened


def sendAll(sock: socket.socket, data: bytes, deadline: float) -> None:
    """
    Send C{data} on the non-blocking C{sock} by C{deadline}.
    """
    view = memoryview(data)
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        for _ in range(LOOP_BOUND):
            if not view:
                return
            if time.monotonic() > deadline:
                raise Failed("out of time sending")
            if selector.select(1.0):
                view = view[sock.send(view[:READ_SIZE]) :]
    raise Failed("too many turns sending")


def readUntil(
    socks: Sequence[socket.socket], done: Callable[[int, bytes], bool], deadline: float
) -> list[bytes]:
    """
    Read from each of C{socks} until C{done(index, everything read)}; return
    what each read.
    """
    got = [b""] * len(socks)
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            selector.register(sock, selectors.EVENT_READ, index)
        for _ in range(LOOP_BOUND):
            if not selector.get_map():
                return got
            if time.monotonic() > deadline:
                raise Failed("out of time waiting for the sync line")
            for key, _ in selector.select(1.0):
                data = cast(socket.socket, key.fileobj).recv(READ_SIZE)
                if not data:
                    raise Failed("a connection closed")
                got[key.data] += data
                if done(key.data, got[key.data]):
                    selector.unregister(key.fileobj)
    raise Failed("too many turns waiting for the sync line")


def cpuSeconds(pid: int) -> float | None:
    """
    The CPU time of every thread of process C{pid} so far, in seconds, to
    the nanosecond (C{/proc/PID/task/*/schedstat}; L{compare.cpuTicks}
    counts 10 ms ticks, too coarse for a round of 0.1 s); C{None} when it
    is gone.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            total += int(
                Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0]
            )
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


@dataclass
class Round:
    """
    What a round of load measured, from the first byte sent until the last
    line arrived.
    """

    seconds: float
    lines: int
    clientCpu: float
    """
    This process's CPU time, in seconds.
    """
    serverCpu: float | None
    """
    The server's CPU time, in seconds.
    """


def blast(
    senders: list[tuple[socket.socket, bytes]],
    readers: list[socket.socket],
    expected: int,
    size: int,
    deadline: float,
    server: int,
) -> tuple[Round, list[bytes]]:
    """
    Send each sender's bytes as fast as each socket takes them, and read
    from each reader until it has C{expected} LFs; a sender must get
    nothing.  Return the seconds from the first send until the last reader
    had its LFs, with this process's and the C{server} process's CPU time
    meanwhile (lines counted as C{expected} per reader), and what each
    reader got.

    Each reader reads into one buffer made beforehand, of C{size} bytes
    (what it should get) and room for one more read, so that reading costs
    no allocation.
    """
    buffers = [bytearray(size + READ_SIZE) for _ in readers]
    views = [memoryview(buffer) for buffer in buffers]
    filled = [0] * len(readers)
    counts = [0] * len(readers)
    left = [memoryview(data) for _, data in senders]
    with selectors.DefaultSelector() as selector:
        for index, (sock, _) in enumerate(senders):
            selector.register(
                sock, selectors.EVENT_READ | selectors.EVENT_WRITE, -1 - index
            )
        for index, sock in enumerate(readers):
            selector.register(sock, selectors.EVENT_READ, index)
        pending = len(readers)
        serverBefore = cpuSeconds(server)
        clock = time.process_time()
        started = time.perf_counter()
        ended = started
        for _ in range(LOOP_BOUND):
            if not pending:
                break
            if time.monotonic() > deadline:
                raise Failed(
                    f"out of time: {sum(counts):,} of {expected * len(readers):,}"
                    " lines arrived"
                )
            for key, events in selector.select(1.0):
                sock = cast(socket.socket, key.fileobj)
                index = key.data
                if events & selectors.EVENT_READ:
                    if index < 0:
                        raise Failed(f"a sender got {sock.recv(80)!r}")
                    start = filled[index]
                    if start >= size + READ_SIZE:
                        raise Failed(f"a reader got more than {size:,} bytes")
                    got = sock.recv_into(views[index][start:])
                    if not got:
                        raise Failed("a connection closed")
                    filled[index] = start + got
                    counts[index] += buffers[index].count(b"\n", start, start + got)
                    if counts[index] >= expected:
                        selector.unregister(sock)
                        pending -= 1
                        ended = time.perf_counter()
                elif events & selectors.EVENT_WRITE:
                    view = left[-1 - index]
                    view = left[-1 - index] = view[sock.send(view[:READ_SIZE]) :]
                    if not view:
                        selector.modify(sock, selectors.EVENT_READ, index)
        else:
            raise Failed("too many turns")
    cpu = time.process_time() - clock
    serverAfter = cpuSeconds(server)
    serverCpu = None
    if serverBefore is not None and serverAfter is not None:
        serverCpu = serverAfter - serverBefore
    measured = Round(ended - started, expected * len(readers), cpu, serverCpu)
    for view in views:
        view.release()
    return measured, [bytes(b[:n]) for b, n in zip(buffers, filled, strict=True)]


def chatLines(count: int, tag: bytes) -> list[bytes]:
    """
    C{count} distinct lines of L{LINE_SIZE} bytes, LF included.
    """
    width = LINE_SIZE - 2 - len(tag)
    return [b"%s %0*d\n" % (tag, width, n) for n in range(count)]


class ChatLoad:
    """
    The chat scenario's members, connected to one server.
    """

    def __init__(self, port: int, members: int) -> None:
        self.socks = connect(port, members)
        self.prefix = b""
        try:
            # Each is in the room once welcomed.
            readUntil(
                self.socks,
                lambda _, data: b"\n" in data,
                time.monotonic() + SETUP_TIMEOUT,
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for sock in self.socks:
            sock.close()

    def sync(self, token: bytes) -> None:
        """
        Ask C{/who} and say C{token}, and wait until the sender has its
        answer and every other member the token: what they got before
        (notices, earlier rounds) is done with.  Learn the sender's
        C{<NAME> } prefix from the token's line.
        """
        line = b"> " + token + b"\n"
        deadline = time.monotonic() + SETUP_TIMEOUT
        sendAll(self.socks[0], b"/who\n" + token + b"\n", deadline)

        def synced(index: int, data: bytes) -> bool:
            if index == 0:
                answer = data.rfind(b"* here: ")
                return answer >= 0 and data.endswith(b"\n")
            return data.endswith(line)

        got = readUntil(self.socks, synced, deadline)[1:]
        start = got[0].rfind(b"\n<", 0, len(got[0]) - len(line)) + 1
        self.prefix = got[0][start : len(got[0]) - len(token) - 1]
        if not self.prefix.startswith(b"<") or any(
            not data.endswith(self.prefix + token + b"\n") for data in got
        ):
            raise Failed(f"unexpected sync line: {got[0][-120:]!r}")

    def round(self, count: int, round: int, server: int) -> Round:
        """
        One member sends C{count} lines; wait until every other has them.
        """
        self.sync(b"sync-%d" % round)
        lines = chatLines(count, b"r%d" % round)
        expected = b"".join(self.prefix + line for line in lines)
        measured, received = blast(
            [(self.socks[0], b"".join(lines))],
            self.socks[1:],
            count,
            len(expected),
            time.monotonic() + ROUND_TIMEOUT,
            server,
        )
        for index, data in enumerate(received, 1):
            if data != expected:
                last = data[data.rfind(b"\n", 0, -1) + 1 :]
                raise Failed(
                    f"member {index} got {len(data):,} bytes, not"
                    f" {len(expected):,}; its last line {last[:80]!r}, not"
                    f" {self.prefix + lines[-1]!r}"
                )
        return measured


class RelayLoad:
    """
    The relay scenario's upstream sink (listening before the relay starts)
    and its clients.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream: socket.socket | None = None
        self.socks: list[socket.socket] = []

    def close(self) -> None:
        for sock in [*self.socks, self.upstream, self.listener]:
            if sock is not None:
                sock.close()

    def start(self, port: int, clients: int, server: compare.Server) -> None:
        """
        Take the relay's upstream connection and connect C{clients} to it.
        """
        self.listener.settimeout(0.2)
        deadline = time.monotonic() + SETUP_TIMEOUT
        for _ in range(int(SETUP_TIMEOUT / 0.2) + 1):
            if self.upstream is not None:
                break
            if time.monotonic() > deadline or server.exited():
                raise Failed(
                    "the relay did not connect upstream"
                    + (f": {server.exited()}" if server.exited() else "")
                )
            try:
                self.upstream, _ = self.listener.accept()
            except TimeoutError:
                continue
        if self.upstream is None:
            raise Failed("the relay did not connect upstream")
        self.upstream.setblocking(False)
        self.socks = connect(port, clients)

    def sync(self, token: bytes) -> None:
        """
        Each client says C{token}; wait until the sink has them all.
        """
        assert self.upstream is not None
        deadline = time.monotonic() + SETUP_TIMEOUT
        marks = [b"%s-%02d\n" % (token, n) for n in range(len(self.socks))]
        for sock, mark in zip(self.socks, marks, strict=True):
            sendAll(sock, mark, deadline)
        readUntil(
            [self.upstream],
            lambda _, data: all(mark in data for mark in marks),
            deadline,
        )

    def round(self, count: int, round: int, server: int) -> Round:
        """
        Each client sends C{count} lines; wait until the sink has them all;
        check every client's lines arrived whole and in order.
        """
        assert self.upstream is not None
        self.sync(b"sync-%d" % round)
        payloads = [
            b"".join(chatLines(count, b"c%02d" % n)) for n in range(len(self.socks))
        ]
        total = count * len(self.socks)
        measured, received = blast(
            list(zip(self.socks, payloads, strict=True)),
            [self.upstream],
            total,
            total * LINE_SIZE,
            time.monotonic() + ROUND_TIMEOUT,
            server,
        )
        data = received[0]
        if len(data) != total * LINE_SIZE:
            raise Failed(f"the sink got {len(data):,} bytes, not {total * LINE_SIZE:,}")
        # Each client's lines, in the order they came, must be what it sent.
        byClient: dict[bytes, list[bytes]] = {}
        for line in data.split(b"\n")[:-1]:
            byClient.setdefault(line[:3], []).append(line)
        for number, payload in enumerate(payloads):
            mine = byClient.get(b"c%02d" % number, [])
            if b"\n".join(mine) + b"\n" != payload:
                raise Failed(
                    f"client {number}'s lines arrived out of order or garbled"
                    f" ({len(mine):,} lines, not {count:,})"
                )
        return measured


# -- measuring -------------------------------------------------------------------


@dataclass
class Run:
    """
    One measured round against one fresh server, or why it failed.
    """

    repeat: int
    scenario: str
    server: str
    rate: float | None = None
    seconds: float | None = None
    clientCpu: float | None = None
    serverCpu: float | None = None
    otherCpu: float | None = None
    """
    The CPU use of this process, the server, and everything else on the
    machine over the round, in % of one CPU.
    """
    failure: str | None = None
    discarded: list[dict[str, Any]] = field(default_factory=list)


def measure(
    kind: str,
    scenario: str,
    repeat: int,
    options: argparse.Namespace,
    pinning: compare.Pinning,
) -> Run:
    """
    Start a fresh server of C{kind}, warm it up with a tenth of the load,
    measure one round, stop it.
    """
    run = Run(repeat, scenario, kind)
    relay = RelayLoad() if scenario == "relay" else None
    load: ChatLoad | RelayLoad | None = relay
    try:
        command = serverCommand(kind, relay.port if relay else None)
        with compare.Server(kind, pinning, command) as server:
            try:
                if relay is not None:
                    relay.start(server.port, options.clients, server)
                    count = options.client_lines
                else:
                    load = ChatLoad(server.port, options.members)
                    count = options.lines
                assert load is not None
                load.round(max(1, count // 10), 0, server.pid)
                if options.wait_quiet:
                    compare.waitForQuiet(
                        server, options.wait_quiet, compare.QUIET_BOUND
                    )
                # Other processes' CPU over at least QUIET_WINDOW (the machine's
                # figure is in 10 ms ticks): a quiet pause, then the round.
                before = (
                    time.monotonic(),
                    compare.machineTicks(),
                    cpuSeconds(server.pid),
                    time.process_time(),
                )
                time.sleep(QUIET_WINDOW)
                result = load.round(count, 1, server.pid)
                after = (
                    time.monotonic(),
                    compare.machineTicks(),
                    cpuSeconds(server.pid),
                    time.process_time(),
                )
                if server.exited():
                    raise Failed(cast(str, server.exited()))
            finally:
                # Before the server stops: it need not wait for them.
                if load is not None:
                    load.close()
    except compare.Failed as e:
        run.failure = str(e)
        return run
    finally:
        if load is not None:
            load.close()
    run.seconds = result.seconds
    run.rate = result.lines / result.seconds
    run.clientCpu = 100 * result.clientCpu / result.seconds
    if result.serverCpu is not None:
        run.serverCpu = 100 * result.serverCpu / result.seconds
    window = after[0] - before[0]
    busy = (after[1] - before[1]) / compare.CLOCK_TICKS - (after[3] - before[3])
    if before[2] is not None and after[2] is not None:
        busy -= after[2] - before[2]
    run.otherCpu = max(0.0, 100 * busy / window)
    return run


def measureOnce(
    kind: str,
    scenario: str,
    repeat: int,
    options: argparse.Namespace,
    pinning: compare.Pinning,
) -> Run:
    """
    L{measure}, again (at most C{--retry-noisy} times) while other processes
    used L{compare.NOISY} or more.
    """
    discarded: list[dict[str, Any]] = []
    for attempt in range(options.retry_noisy + 1):
        run = measure(kind, scenario, repeat, options, pinning)
        noisy = (run.otherCpu or 0.0) >= compare.NOISY
        if run.failure is None and noisy and attempt < options.retry_noisy:
            discarded.append(asdict(run))
            continue
        break
    run.discarded = discarded
    return run


@dataclass
class Cell:
    """
    One server in one scenario over every repeat.
    """

    scenario: str
    server: str
    rates: list[float]
    median: float | None
    clientCpu: float | None
    serverCpu: float | None
    otherCpu: float | None
    failure: str | None
    perServerCpu: float | None = None
    """
    The median of the runs' lines per second of the server's CPU time: what
    the server could do were it the bottleneck.
    """


def summarize(runs: list[Run], scenario: str, kind: str) -> Cell:
    mine = [r for r in runs if (r.scenario, r.server) == (scenario, kind)]
    failures = [r.failure for r in mine if r.failure]
    rates = [r.rate for r in mine if r.rate is not None]
    return Cell(
        scenario,
        kind,
        rates,
        None if failures or not rates else statistics.median(rates),
        compare.medianOf([r.clientCpu for r in mine]),
        compare.medianOf([r.serverCpu for r in mine]),
        compare.medianOf([r.otherCpu for r in mine]),
        failures[0] if failures else None,
        compare.medianOf(
            [100 * r.rate / r.serverCpu for r in mine if r.rate and r.serverCpu]
        ),
    )


LABELS = {"chat": "chat fan-out", "relay": "relay gather"}


def loadText(scenario: str, options: argparse.Namespace) -> str:
    if scenario == "chat":
        return (
            f"{options.members} members, one sends {options.lines:,} lines of"
            f" {LINE_SIZE} bytes; until all {options.members - 1} others have them"
        )
    return (
        f"{options.clients} clients {compare.TIMES} {options.client_lines:,} lines of"
        f" {LINE_SIZE} bytes; until the upstream has all"
        f" {options.clients * options.client_lines:,}"
    )


def targetLine(ours: Cell, reference: Cell) -> str:
    head = f"{LABELS[ours.scenario]} {ours.server} / {reference.server}:"
    if ours.median is None or reference.median is None:
        return f"{head} no ratio ({ours.failure or reference.failure})"
    ratio = ours.median / reference.median
    line = (
        f"{head} {ratio:.2f}{compare.TIMES} (target ≥ {TARGET:g}{compare.TIMES})"
        f" {'OK' if ratio >= TARGET else 'BELOW'} — {ours.median:,.0f} vs"
        f" {reference.median:,.0f} lines/s"
    )
    if saturated(reference.clientCpu) and not saturated(reference.serverCpu):
        line += (
            " (the load, not the reference server, was the bottleneck:"
            " the ratio is overstated; per server CPU-second"
            f" {efficiency(ours, reference)})"
        )
    return line


def efficiency(ours: Cell, reference: Cell) -> str:
    """
    tcpcomm's lines per server CPU-second over the reference's.
    """
    if ours.perServerCpu is None or reference.perServerCpu is None:
        return compare.NONE
    return f"{ours.perServerCpu / reference.perServerCpu:.2f}{compare.TIMES}"


def saturated(cpu: float | None) -> bool:
    """
    Whether C{cpu} (in % of one CPU) is most of the one CPU a side has.
    """
    return cpu is not None and cpu >= 100 * compare.SATURATED


def cpuCell(cpu: float | None) -> str:
    return compare.cpuCell(cpu, saturated(cpu))


def markdown(
    cells: list[Cell],
    runs: list[Run],
    options: argparse.Namespace,
    info: dict[str, Any],
    pinning: compare.Pinning,
    elapsed: float,
) -> str:
    """
    The report: machine and settings, the side-by-side table, targets, and
    every run.
    """
    percent = compare.percent
    out = [
        "# Chat fan-out and relay gather: tcpcomm against asyncio",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} CPUs, Linux {info['kernel']},"
        f" {info['implementation']} {info['python']}, Twisted {info['twisted']};"
        f" {info['date']}.",
        f"- tcpcomm: commit {info['tcpcomm']}.",
        f"- Pinning: {pinning.describe().replace('generator', 'load')}.",
        f"- Each figure is the median of {compare.plural(options.repeats, 'run')};"
        " each run on a fresh server, warmed up with a tenth of the load. The"
        f" whole run took {elapsed / 60:.1f} minutes.",
        "",
        "| scenario | load | tcpcomm, lines/s | asyncio, same work | ratio (target"
        f" ≥ {TARGET:g}{compare.TIMES}) | load CPU | srv CPU (tcpcomm / asyncio) |"
        " ratio per server CPU-second |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    byKey = {(c.scenario, c.server): c for c in cells}
    for scenario in options.scenarios:
        ours, ref = (byKey[scenario, kind] for kind in KINDS[scenario])

        def rate(cell: Cell) -> str:
            if cell.median is None:
                return f"failed: {cell.failure}"
            return f"{cell.median:,.0f}"

        ratio = compare.NONE
        if ours.median is not None and ref.median is not None:
            ratio = f"**{ours.median / ref.median:.2f}{compare.TIMES}**"
        out.append(
            f"| {LABELS[scenario]} | {loadText(scenario, options)} | {rate(ours)}"
            f" | {rate(ref)} | {ratio} | {cpuCell(ours.clientCpu)} /"
            f" {cpuCell(ref.clientCpu)} | {cpuCell(ours.serverCpu)} /"
            f" {cpuCell(ref.serverCpu)} | {efficiency(ours, ref)} |"
        )
    out += [
        "",
        "Chat counts lines delivered (lines sent times the readers), relay lines"
        " the upstream received. Load CPU: this process's (every client and the"
        " sink) over the measured round, tcpcomm's run / asyncio's; srv CPU: the"
        " server's (`/proc/PID/task/*/schedstat`); medians, in % of one CPU."
        f" ⚠: {compare.SATURATED:.0%} or more of the one CPU that side has. A"
        " server well below that while the load is at ⚠ waited for the load:"
        " its figure is a floor. The other processes' CPU (in every run"
        f" below) is read over the round and {QUIET_WINDOW:g} s of pause before"
        " it. Ratio per server CPU-second: the median of each run's lines per"
        " second of server CPU time, tcpcomm's over the reference's: what the"
        " ratio would be were both servers the bottleneck (an estimate, since"
        " a server that waits does less work per wake-up).",
        "",
        "| server | what it is |",
        "|---|---|",
    ]
    kinds = [kind for scenario in options.scenarios for kind in KINDS[scenario]]
    out += [f"| `{kind}` | {DESCRIPTIONS[kind]} |" for kind in kinds]
    out += ["", "## Targets", "", "```"]
    for scenario in options.scenarios:
        ours, ref = (byKey[scenario, kind] for kind in KINDS[scenario])
        out.append(targetLine(ours, ref))
    out += [
        "```",
        "",
        "<details><summary>Every run: lines/s, seconds; load / server / other"
        " processes' CPU</summary>",
        "",
        "| server | "
        + " | ".join(f"repeat {i + 1}" for i in range(options.repeats))
        + " |",
        "|---|" + "---:|" * options.repeats,
    ]
    for kind in kinds:
        figures = []
        mine = [r for r in runs if r.server == kind]
        for run in sorted(mine, key=lambda r: r.repeat):
            if run.failure:
                figures.append(f"failed: {run.failure}")
            else:
                figures.append(
                    f"{run.rate:,.0f}, {run.seconds:.3f} s; {percent(run.clientCpu)}"
                    f" / {percent(run.serverCpu)} / {percent(run.otherCpu)}"
                    + (f" ({len(run.discarded)} noisy redone)" if run.discarded else "")
                )
        out.append(f"| `{kind}` | " + " | ".join(figures) + " |")
    out += ["", "</details>", ""]
    return "\n".join(out)


def parseArguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--scenarios", nargs="+", choices=list(KINDS), default=list(KINDS)
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", type=int, default=50, help="chat members")
    parser.add_argument(
        "--lines", type=int, default=20_000, help="lines the chat sender sends"
    )
    parser.add_argument("--clients", type=int, default=20, help="relay clients")
    parser.add_argument(
        "--client-lines", type=int, default=50_000, help="lines each relay client sends"
    )
    parser.add_argument("--server-cpu", help="server CPU list ('none': no pinning)")
    parser.add_argument("--client-cpu", help="load CPU list (default: the others)")
    parser.add_argument(
        "--retry-noisy",
        type=int,
        default=2,
        metavar="N",
        help=f"redo a run, at most N times, when other processes used"
        f" {compare.NOISY:g} %% of one CPU or more meanwhile",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="before each measured round, wait (at most"
        f" {compare.QUIET_BOUND:g} s) until other processes use less than"
        " PERCENT of one CPU (0: do not wait)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="directory for fanout.md and fanout.json",
    )
    parser.add_argument("--json", action="store_true", help="print fanout.json")
    parser.add_argument("--serve", choices=REFERENCES, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    for number in ("repeats", "members", "lines", "clients", "client_lines"):
        if getattr(options, number) < 1:
            parser.error(f"--{number.replace('_', '-')} must be at least 1")
    if options.members < 2:
        parser.error("--members must be at least 2")
    if options.retry_noisy < 0:
        parser.error("--retry-noisy must not be negative")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parseArguments(argv)
    if options.serve:
        servers.runLoop(
            lambda: serveReference(options.serve, options.upstream),
            asyncio.new_event_loop,
        )
        return 0

    def report(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # Stopped by a signal, still stop the servers (by their PIDs) on the way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    try:
        pinning = compare.choosePinning(options.server_cpu, options.client_cpu)
    except (compare.Failed, ValueError) as e:
        report(f"fanout: cannot pin: {e}")
        return 1
    if pinning.client is not None:
        os.sched_setaffinity(0, pinning.client)
    report(f"{pinning.describe().replace('generator', 'load')}")
    info = compare.machine()
    runs: list[Run] = []
    started = time.monotonic()
    for repeat in range(options.repeats):
        for scenario in options.scenarios:
            kinds = KINDS[scenario]
            if repeat % 2:
                kinds = kinds[::-1]
            for kind in kinds:
                run = measureOnce(kind, scenario, repeat, options, pinning)
                runs.append(run)
                if run.failure:
                    report(f"  {kind}: failed: {run.failure}")
                else:
                    report(
                        f"  {kind}: {run.rate:,.0f} lines/s in {run.seconds:.3f} s"
                        f" (load {compare.percent(run.clientCpu)}, server"
                        f" {compare.percent(run.serverCpu)}, others"
                        f" {compare.percent(run.otherCpu)})"
                    )
    elapsed = time.monotonic() - started
    cells = [
        summarize(runs, scenario, kind)
        for scenario in options.scenarios
        for kind in KINDS[scenario]
    ]
    table = markdown(cells, runs, options, info, pinning, elapsed)
    document = {
        "machine": info,
        "pinning": pinning.describe(),
        "settings": {
            name: getattr(options, name)
            for name in (
                "repeats",
                "members",
                "lines",
                "clients",
                "client_lines",
                "retry_noisy",
                "wait_quiet",
            )
        }
        | {"lineSize": LINE_SIZE, "seconds": round(elapsed, 1)},
        "cells": [asdict(cell) for cell in cells],
        "runs": [asdict(run) for run in runs],
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "fanout.md").write_text(table)
    (options.out / "fanout.json").write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2) if options.json else table)
    report(f"wrote {options.out / 'fanout.md'}, {options.out / 'fanout.json'}")
    return 1 if any(run.failure for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
