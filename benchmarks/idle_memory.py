"""
How much memory a server spends on one idle connection.

For each server kind (tcpcomm's line and echo servers as C{twistd tcpcomm}
runs them: its lean reactor, the factory its default options build and its
write-through TCP transport; Twisted's stock C{LineOnlyReceiver} echoing lines
and C{twisted.protocols.wire.Echo}, with Twisted's default reactor and
transport), start the server in a subprocess on 127.0.0.1, warm it up, read
its resident set size (C{VmRSS} in C{/proc/PID/status}), open N idle
connections to it from this process, wait until the server has accepted all
of them (its open file descriptors, counted in C{/proc/PID/fd}) and its RSS
has settled, and read RSS again.  Bytes per idle connection = (RSS after -
RSS before) / N.

Each kind is measured several times, kinds interleaved (and their order
rotated) run by run; the medians are reported, as a markdown table or JSON.

Usage::

    python benchmarks/idle_memory.py [--connections N] [--runs R] [--json]

Linux only (it reads C{/proc}).  Loopback only.  Every wait is bounded; every
server is killed by its PID and reaped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The raw-socket helpers are the load tests' own, so both open connections
# the same way.
from tests.test_load import abortAll  # noqa: E402
from tests.test_load import openConnections as openIdleConnections  # noqa: E402

"""
The checkout: servers run from here, so that they import its C{tcpcomm}.
"""

KINDS = ("tcpcomm-line", "tcpcomm-echo", "twisted-line", "twisted-echo")

DESCRIPTIONS = {
    "tcpcomm-line": "tcpcomm line (as `twistd tcpcomm` serves it)",
    "tcpcomm-echo": "tcpcomm echo (as `twistd tcpcomm --protocol echo` serves it)",
    "twisted-line": "Twisted `LineOnlyReceiver` echoing lines",
    "twisted-echo": "Twisted `wire.Echo`",
}

BACKLOG = 4096
CONNECT_BATCH = 1000
"""
Connections opened before waiting for them to be established: fewer than
the backlog, so that the accept queue does not overflow.
"""

WARMUP_CONNECTIONS = 100
"""
Connections that each exchange one line with a fresh server, and close,
before its RSS is first read: the same warm-up for every kind.
"""

MARGIN = 256
"""
File descriptors needed beyond the connections.
"""

START_TIMEOUT = 20.0
STEP_TIMEOUT = 60.0
"""
Seconds any one step (warm-up, connecting, accepting, settling) may take.
"""

SETTLE_INTERVAL = 0.2
SETTLE_READINGS = 3
"""
RSS counts as settled when this many readings, L{SETTLE_INTERVAL} apart, are
equal.
"""

SERVER = """\
import resource, sys

kind, backlog, wanted = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if kind.startswith("tcpcomm-"):
    # As twistd tcpcomm runs: its lean reactor (where epoll exists).
    import select
    if hasattr(select, "epoll"):
        from tcpcomm.leanreactor import install
        install()

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner,
    textFileLogObserver,
)

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard == resource.RLIM_INFINITY:
    hard = max(soft, wanted)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
# Log warnings and worse, as a deployed server logs to a file: events are
# made and dropped, never buffered (before beginLoggingTo Twisted keeps the
# last 65,536 events, which would be counted as connection memory).
globalLogBeginner.beginLoggingTo(
    [FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(LogLevel.warn)],
    )],
    redirectStandardIO=False,
)

if kind.startswith("tcpcomm-"):
    # The factory twistd tcpcomm builds, with its defaults (idle timeout
    # 300 s and so on) but room for every connection, listening with its
    # write-through TCP transport.
    from tcpcomm import tap, transport

    options = tap.Options()
    options.parseOptions(
        ["--protocol", kind.removeprefix("tcpcomm-"), "--max-connections", str(wanted)]
    )
    factory = tap.makeFactory(options)
    port = transport.listenTCP(
        reactor, 0, factory, backlog=backlog, interface="127.0.0.1"
    )
else:
    if kind == "twisted-line":
        from twisted.protocols.basic import LineOnlyReceiver

        class LineEcho(LineOnlyReceiver):
            delimiter = b"\\n"

            def lineReceived(self, line):
                self.sendLine(line)

        factory = Factory.forProtocol(LineEcho)
    elif kind == "twisted-echo":
        from twisted.protocols.wire import Echo
        factory = Factory.forProtocol(Echo)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    port = reactor.listenTCP(0, factory, backlog=backlog, interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""
"""
The server: arguments are the kind, the backlog, and the descriptors wanted
if the hard limit is infinite.
"""


@dataclass
class Measurement:
    """
    One run of one server kind.
    """

    kind: str
    connections: int
    rssBefore: int
    rssAfter: int

    @property
    def perConnection(self) -> float:
        return (self.rssAfter - self.rssBefore) / self.connections


class Failed(Exception):
    """
    A step did not finish in time, or went wrong.
    """


def rss(pid: int) -> int:
    """
    The resident set size of process C{pid}, in bytes.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise Failed(f"no VmRSS for process {pid}")


def openDescriptors(pid: int) -> int:
    """
    How many file descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def settledDescriptors(pid: int) -> int:
    """
    Read how many descriptors process C{pid} has open until three readings
    0.1 s apart agree (bounded by L{STEP_TIMEOUT}); return it.
    """
    readings = [openDescriptors(pid)]
    for _ in range(int(STEP_TIMEOUT / 0.1)):
        if len(readings) >= 3 and len(set(readings[-3:])) == 1:
            return readings[-1]
        time.sleep(0.1)
        readings.append(openDescriptors(pid))
    raise Failed(f"the open descriptors of {pid} never settled: {readings[-5:]}")


def raiseFileLimit(needed: int) -> None:
    """
    Raise this process's soft C{RLIMIT_NOFILE} to its hard limit if it is
    below C{needed}.

    @raise Failed: If the hard limit is below C{needed}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise Failed(f"needs {needed} file descriptors; the hard limit is {hard}")
    raised = hard if hard != resource.RLIM_INFINITY else needed
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))


class Server:
    """
    A server of one kind in a subprocess; use as a context manager, which
    kills it by its PID and reaps it.
    """

    def __init__(self, kind: str, connections: int) -> None:
        self.kind = kind
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVER,
                kind,
                str(BACKLOG),
                str(connections + MARGIN),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.pid = self.process.pid
        self.port = self._readPort()

    def _readPort(self) -> int:
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        received = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            for _ in range(1000):
                timeout = deadline - time.monotonic()
                if timeout <= 0 or not selector.select(timeout):
                    break
                chunk = os.read(stdout.fileno(), 100)
                received += chunk
                if not chunk or received.endswith(b"\n"):
                    break
        if not received.endswith(b"\n"):
            raise Failed(f"{self.kind} server did not start: {self.errors()}")
        return int(received)

    def errors(self) -> str:
        """
        What the server wrote to its standard error so far.
        """
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=START_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


def openConnections(port: int, count: int, sockets: list[socket.socket]) -> None:
    """
    Open C{count} idle connections to 127.0.0.1:C{port}, appending each
    socket to C{sockets}: the load tests' helper, with this script's bound.
    """
    try:
        openIdleConnections(port, count, sockets, time.monotonic() + STEP_TIMEOUT)
    except AssertionError as e:
        raise Failed(str(e)) from None


def warmUp(port: int) -> None:
    """
    Exchange one line on each of L{WARMUP_CONNECTIONS} connections, one after
    the other, and close them.
    """
    for index in range(WARMUP_CONNECTIONS):
        line = b"warm-up %d\n" % index
        with socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT) as c:
            c.sendall(line)
            received = b""
            for _ in range(100):
                chunk = c.recv(4096)
                received += chunk
                if not chunk or received.endswith(b"\n"):
                    break
            if received != line:
                raise Failed(f"warm-up: sent {line!r}, got {received!r}")


def waitFor(what: str, done: Callable[[], bool]) -> None:
    """
    Poll C{done} every 10 ms until it is true, for at most L{STEP_TIMEOUT}
    seconds.
    """
    deadline = time.monotonic() + STEP_TIMEOUT
    for _ in range(int(STEP_TIMEOUT * 100)):
        if done():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    raise Failed(f"timed out waiting for {what}")


def settledRSS(pid: int) -> int:
    """
    Read the RSS of process C{pid} until L{SETTLE_READINGS} readings in a
    row agree (bounded by L{STEP_TIMEOUT}); return it.
    """
    readings = [rss(pid)]
    for _ in range(int(STEP_TIMEOUT / SETTLE_INTERVAL)):
        time.sleep(SETTLE_INTERVAL)
        readings.append(rss(pid))
        if len(set(readings[-SETTLE_READINGS:])) == 1 and (
            len(readings) >= SETTLE_READINGS
        ):
            return readings[-1]
    raise Failed(f"RSS of {pid} did not settle: {readings[-5:]}")


def measure(kind: str, connections: int) -> Measurement:
    """
    One run: start a server of C{kind}, warm it up, and measure its RSS
    before and after C{connections} idle connections.
    """
    sockets: list[socket.socket] = []
    with Server(kind, connections) as server:
        try:
            started = openDescriptors(server.pid)
            warmUp(server.port)
            # The warm-up connections are closed on our side; wait until the
            # server has closed them too (its descriptor count settles; it
            # may keep one or two more than at start, opened lazily).
            waitFor(
                "the warm-up connections to close",
                lambda: openDescriptors(server.pid) <= started + 2,
            )
            baseline = settledDescriptors(server.pid)
            before = settledRSS(server.pid)
            openConnections(server.port, connections, sockets)
            waitFor(
                f"{kind} to accept {connections} connections",
                lambda: openDescriptors(server.pid) >= baseline + connections,
            )
            after = settledRSS(server.pid)
            if not server.alive():
                raise Failed(f"{kind} server died: {server.errors()}")
            errors = server.errors()
            if errors:
                raise Failed(f"{kind} server logged:\n{errors}")
        finally:
            # Kill the server first (leaving __exit__ nothing to do but reap
            # it), then reset our sockets: no TIME_WAIT on either side.
            if server.alive():
                os.kill(server.pid, signal.SIGKILL)
            server.process.wait(timeout=START_TIMEOUT)
            abortAll(sockets)
    return Measurement(kind, connections, before, after)


def machine() -> dict[str, object]:
    """
    What the measurement ran on.
    """
    import twisted

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
    }


def table(results: dict[str, list[Measurement]], connections: int) -> str:
    """
    The medians as a markdown table.
    """
    rows = [
        f"| server | bytes per idle connection (median) | runs"
        f" | RSS before, MiB | RSS after {connections:,}, MiB |",
        "|---|---:|---|---:|---:|",
    ]
    for kind, runs in results.items():
        per = statistics.median(m.perConnection for m in runs)
        before = statistics.median(m.rssBefore for m in runs) / 2**20
        after = statistics.median(m.rssAfter for m in runs) / 2**20
        each = ", ".join(f"{m.perConnection:,.0f}" for m in runs)
        rows.append(
            f"| {DESCRIPTIONS[kind]} | {per:,.0f} | {each}"
            f" | {before:.1f} | {after:.1f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--connections", type=int, default=10_000, help="idle connections (10,000)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per kind (3)")
    parser.add_argument(
        "--kind",
        action="append",
        choices=KINDS,
        help="measure only this kind (repeatable; all by default)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    options = parser.parse_args(argv)
    if options.connections < 1 or options.runs < 1:
        parser.error("--connections and --runs must be at least 1")
    kinds: list[str] = options.kind or list(KINDS)
    try:
        raiseFileLimit(options.connections + MARGIN)
    except Failed as e:
        print(f"idle_memory: {e}", file=sys.stderr)
        return 1

    results: dict[str, list[Measurement]] = {kind: [] for kind in kinds}
    started = time.monotonic()
    for run in range(options.runs):
        shift = run % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            try:
                result = measure(kind, options.connections)
            except Failed as e:
                print(f"idle_memory: {e}", file=sys.stderr)
                return 1
            results[kind].append(result)
            if not options.json:
                print(
                    f"run {run + 1}, {kind}: {result.perConnection:,.0f} bytes"
                    " per connection",
                    file=sys.stderr,
                )
    elapsed = time.monotonic() - started

    if options.json:
        print(
            json.dumps(
                {
                    "connections": options.connections,
                    "runs": options.runs,
                    "seconds": round(elapsed, 1),
                    "machine": machine(),
                    "results": {
                        kind: {
                            "medianBytesPerConnection": statistics.median(
                                m.perConnection for m in runs
                            ),
                            "runs": [
                                asdict(m) | {"perConnection": m.perConnection}
                                for m in runs
                            ],
                        }
                        for kind, runs in results.items()
                    },
                },
                indent=2,
            )
        )
    else:
        info = machine()
        print(
            f"{options.connections:,} idle connections, median of {options.runs}"
            f" runs ({elapsed:.0f} s); {info['cpu']}, {info['cores']} cores,"
            f" Linux {info['kernel']}, {info['implementation']} {info['python']},"
            f" Twisted {info['twisted']}\n"
        )
        print(table(results, options.connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
