"""
How fast tcpcomm's servers echo, next to stock Twisted and asyncio servers.

Every server (see L{DESCRIPTIONS}) runs in a subprocess from the checkout on
127.0.0.1; the load generator (C{benchmarks/loadgen.c}, built on the spot
when a C compiler is there, else C{python -m tcpcomm bench}: see
C{--generator}) runs in another, pinned to other CPUs than the server when
the machine has two or more.  For
each repeat the servers are taken in a rotated order; each is started
fresh, warmed up with one short discarded run of every scenario, measured
once per scenario (scenarios also rotated) and stopped.  The medians over
the repeats, their ratios to the stock Twisted server of the same kind, and
the CPU that the generator and the server used while measuring are written
as a markdown table (C{compare.md}), as JSON (C{compare.json}) and as a
chart (C{compare.png}, when matplotlib is installed).

Usage::

    python benchmarks/compare.py [--servers S ...] [--scenarios N ...]
        [--repeats 3] [--duration 5] [--warmup 1] [--server-warmup 1]
        [--processes N] [--server-cpu 0] [--client-cpu 1-N]
        [--wait-quiet PERCENT] [--retry-noisy 2] [--generator auto]
        [--out benchmarks/results] [--json]

Linux only (it reads C{/proc}).  Loopback only.  Every step is bounded in
time; every process is ended by its PID (the generator by the process group
it was started in) and reaped.  Exit status 1 when a server or a run failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
"""
The checkout: servers and the generator run from here, so that they import
its C{tcpcomm}.
"""
sys.path.insert(0, str(ROOT))

from benchmarks import servers  # noqa: E402

SERVERS_SCRIPT = str(Path(servers.__file__).resolve())

DESCRIPTIONS = {
    "tcpcomm-line": "tcpcomm line mode, `twistd -n tcpcomm` (echoes lines)",
    "tcpcomm-line-py": "the same with a handler in Python, `--handler"
    " benchmarks.handlers:echoInPython` (`def echo(line): return line`)",
    "tcpcomm-line-async": "tcpcomm line mode with `async def echo(line): return"
    " line`"
    " (`benchmarks.handlers:echoAsync`, returns without awaiting)",
    "tcpcomm-line-later": "tcpcomm line mode with a handler answering a reactor"
    " turn later, `deferLater(reactor, 0, bytes, line)`"
    " (`benchmarks.handlers:echoLater`)",
    "tcpcomm-line-metrics": "`tcpcomm-line` serving Prometheus metrics,"
    " `--metrics tcp:0:interface=127.0.0.1`",
    "tcpcomm-line-later-metrics": "`tcpcomm-line-later` serving Prometheus"
    " metrics (each handler answering later is timed for the latency"
    " histogram)",
    "tcpcomm-echo": "tcpcomm echo mode, `twistd -n tcpcomm --protocol echo`",
    "tcpcomm-length": "tcpcomm echoing 4-byte length-prefixed frames,"
    " `twistd -n tcpcomm --protocol line --framing length:4`",
    "twisted-echo": "Twisted `wire.Echo`, epoll reactor",
    "twisted-linereceiver": "Twisted `LineReceiver` echoing lines, epoll reactor",
    "twisted-lineonly": "Twisted `LineOnlyReceiver` echoing lines, epoll reactor",
    "twisted-int32": "Twisted `Int32StringReceiver` echoing frames"
    " (`stringReceived` → `sendString`), epoll reactor",
    "asyncio-protocol": "asyncio `Protocol`: `data_received` → `write`",
    "asyncio-lines": "asyncio `Protocol` with tcpcomm's line framing"
    " (`tcpcomm.framing.LineFramer`): the lines of one read echoed in one `write`",
    "asyncio-streams": "asyncio streams: `readline` → `write` → `drain`",
    "asyncio-streams-async": "asyncio streams with the `async def` echo of"
    " `tcpcomm-line-async`: `readline` → `write(await echo(line))` → `drain`",
    "asyncio-streams-later": "asyncio streams, `write(await echo(line))`, with a"
    " handler that awaits"
    " `asyncio.sleep(0)` (one loop turn) before it returns the line"
    " (`benchmarks.handlers:echoAfterSleep`)",
    "uvloop-protocol": "the asyncio `Protocol` server on uvloop",
}

LINE_KINDS = frozenset(
    {
        "tcpcomm-line",
        "tcpcomm-line-py",
        "tcpcomm-line-async",
        "tcpcomm-line-later",
        "tcpcomm-line-metrics",
        "tcpcomm-line-later-metrics",
        "twisted-linereceiver",
        "twisted-lineonly",
        "asyncio-lines",
        "asyncio-streams",
        "asyncio-streams-async",
        "asyncio-streams-later",
    }
)
"""
Servers that frame lines; the others echo bytes as they come, or frames
(L{servers.LENGTH_KINDS}).
"""

LINE_REFERENCE = "twisted-lineonly"
BYTE_REFERENCE = "twisted-echo"
LENGTH_REFERENCE = "twisted-int32"

LEFT_OUT = {
    kind: frozenset({"stream"})
    for kind in (
        "tcpcomm-line-async",
        "tcpcomm-line-later",
        "tcpcomm-line-later-metrics",
        "asyncio-streams-async",
        "asyncio-streams-later",
    )
}
"""
Scenarios not run for a server: the handler rows compare what calling a
handler per line costs, which ping-pong and 16 pipelined show; streaming
lines through them would only show it again, more slowly.
"""


def reference(kind: str) -> str:
    """
    The stock Twisted server that C{kind}'s figures are divided by.
    """
    if kind in servers.LENGTH_KINDS:
        return LENGTH_REFERENCE
    return LINE_REFERENCE if kind in LINE_KINDS else BYTE_REFERENCE


@dataclass(frozen=True)
class Scenario:
    """
    One way of loading a server: the generator's options and what to report.
    """

    name: str
    label: str
    mode: str
    connections: int
    size: int
    pipeline: int | None
    """
    Lines in flight per connection; C{None} for the generator's default
    (in C{stream} mode, 256 KiB worth).
    """
    unit: str
    metric: str
    scale: float = 1.0

    def rate(self, result: dict[str, Any]) -> float:
        """
        The figure reported for one generator result.
        """
        return float(result[self.metric]) * self.scale

    @property
    def inFlight(self) -> str:
        """
        The pipeline depth, for people.
        """
        return "default" if self.pipeline is None else str(self.pipeline)

    def arguments(
        self, duration: float, warmup: float, processes: int, length: bool = False
    ) -> list[str]:
        """
        The generator's options for this scenario; with C{length}, in
        length-prefixed frames (C{--framing length:4}) rather than lines.
        """
        pipeline = [] if self.pipeline is None else ["--pipeline", str(self.pipeline)]
        framing = ["--framing", "length:4"] if length else []
        return [
            *framing,
            "--mode",
            self.mode,
            "--connections",
            str(self.connections),
            "--size",
            str(self.size),
            *pipeline,
            "--duration",
            f"{duration:g}",
            "--warmup",
            f"{warmup:g}",
            "--processes",
            str(min(processes, self.connections)),
            "--json",
            "--quiet",
        ]


SCENARIOS = {
    "pingpong": Scenario(
        name="pingpong",
        label="ping-pong",
        mode="pingpong",
        connections=100,
        size=64,
        pipeline=1,
        unit="round trips/s",
        metric="messages_per_s",
    ),
    "lines16": Scenario(
        name="lines16",
        label="16 pipelined",
        mode="lines",
        connections=100,
        size=64,
        pipeline=16,
        unit="lines/s",
        metric="messages_per_s",
    ),
    "stream": Scenario(
        name="stream",
        label="stream",
        mode="stream",
        connections=10,
        size=64,
        pipeline=None,
        unit="MB/s",
        metric="bytes_per_s",
        scale=1e-6,
    ),
}


@dataclass(frozen=True)
class Target:
    """
    A ratio the table has to show: C{kind} over C{over} (by default
    C{reference(kind)}) in one scenario, at least C{minimum}.
    """

    key: str
    label: str
    kind: str
    scenario: str
    minimum: float
    over: str | None = None

    @property
    def reference(self) -> str:
        """
        The server C{kind}'s figure is divided by.
        """
        return self.over or reference(self.kind)


TARGETS = (
    Target("line-p1", "tcpcomm-line P1", "tcpcomm-line", "pingpong", 2.0),
    Target("line-p16", "tcpcomm-line P16", "tcpcomm-line", "lines16", 3.0),
    Target("echo-pingpong", "tcpcomm-echo pingpong", "tcpcomm-echo", "pingpong", 1.5),
    Target("echo-stream", "tcpcomm-echo stream", "tcpcomm-echo", "stream", 1.0),
    Target(
        "async-p1",
        "tcpcomm-line-async P1",
        "tcpcomm-line-async",
        "pingpong",
        0.7,
        "tcpcomm-line-py",
    ),
    Target(
        "async-p16",
        "tcpcomm-line-async P16",
        "tcpcomm-line-async",
        "lines16",
        0.7,
        "tcpcomm-line-py",
    ),
    Target(
        "later-p1",
        "tcpcomm-line-later P1",
        "tcpcomm-line-later",
        "pingpong",
        1.5,
        "asyncio-streams-later",
    ),
    Target(
        "later-p16",
        "tcpcomm-line-later P16",
        "tcpcomm-line-later",
        "lines16",
        1.5,
        "asyncio-streams-later",
    ),
    Target(
        "metrics-p1",
        "tcpcomm-line-metrics P1",
        "tcpcomm-line-metrics",
        "pingpong",
        0.95,
        "tcpcomm-line",
    ),
    Target(
        "metrics-p16",
        "tcpcomm-line-metrics P16",
        "tcpcomm-line-metrics",
        "lines16",
        0.95,
        "tcpcomm-line",
    ),
    Target(
        "later-metrics-p1",
        "tcpcomm-line-later-metrics P1",
        "tcpcomm-line-later-metrics",
        "pingpong",
        0.95,
        "tcpcomm-line-later",
    ),
    Target(
        "later-metrics-p16",
        "tcpcomm-line-later-metrics P16",
        "tcpcomm-line-later-metrics",
        "lines16",
        0.95,
        "tcpcomm-line-later",
    ),
    Target("length-p16", "tcpcomm-length P16", "tcpcomm-length", "lines16", 3.0),
    Target(
        "length-line-p16",
        "tcpcomm-length P16",
        "tcpcomm-length",
        "lines16",
        0.9,
        "tcpcomm-line",
    ),
)

LINE_P16_RATE = 2_000_000
"""
The rate tcpcomm-line has to reach with 16 lines pipelined, in lines/s.
"""

BACKLOG = servers.DEFAULT_BACKLOG
START_TIMEOUT = 20.0
"""
Seconds a server may take to start listening.
"""
STOP_TIMEOUT = 15.0
"""
Seconds a server may take to exit after SIGTERM before it gets SIGKILL
(twistd tcpcomm's graceful shutdown takes at most 10).
"""
GENERATOR_MARGIN = 60.0
"""
Seconds a generator run may take beyond its warm-up and duration.
"""
SAMPLE_INTERVAL = 0.1
SATURATED = 0.9
"""
A process counts as saturated at this fraction of the CPUs it may use.
"""
QUIET_BOUND = 60.0
"""
The longest C{--wait-quiet} waits before a run.
"""
NOISY = 25.0
"""
A run counts as disturbed when other processes used at least this much CPU
(in % of one CPU) while it measured.
"""
PORT_LINE = re.compile(rb"starting on (\d+)\b")
LOG_TROUBLE = re.compile(
    rb"^.*(?:#warn\]|#error\]|#critical\]|Traceback|Unhandled).*$", re.MULTILINE
)
"""
Lines in a twistd log that say something went wrong (twistd writes its whole
log, info included, to standard output; the other servers write only
warnings, to standard error).
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TIMES = "\N{MULTIPLICATION SIGN}"
NONE = "\N{EN DASH}"
"""
Written in tables for a figure that is missing.
"""


class Failed(Exception):
    """
    A server or a generator run went wrong or ran out of time.
    """


# -- CPUs ---------------------------------------------------------------------


def parseCPUs(text: str) -> set[int]:
    """
    Parse a CPU list such as C{0}, C{1,3} or C{2-5}.
    """
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    if not cpus:
        raise ValueError(f"no CPUs in {text!r}")
    return cpus


def formatCPUs(cpus: set[int]) -> str:
    """
    Write C{cpus} as a CPU list (C{0}, C{1-15}).
    """
    ordered = sorted(cpus)
    runs: list[str] = []
    start = previous = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == previous + 1:
            previous = cpu
            continue
        runs.append(str(start) if start == previous else f"{start}-{previous}")
        if cpu is not None:
            start = previous = cpu
    return ",".join(runs)


@dataclass
class Pinning:
    """
    Which CPUs the server and the generator run on; C{None} when not
    pinned, with C{why}.
    """

    server: set[int] | None
    client: set[int] | None
    why: str = ""

    def describe(self) -> str:
        if self.server is None or self.client is None:
            return f"not pinned ({self.why})"
        return (
            f"server on CPU {formatCPUs(self.server)},"
            f" generator on CPU {formatCPUs(self.client)}"
        )

    def clientCapacity(self) -> int:
        """
        How many CPUs the generator may use.
        """
        if self.client is not None:
            return len(self.client)
        return os.cpu_count() or 1


def choosePinning(serverCPU: str | None, clientCPU: str | None) -> Pinning:
    """
    The pinning asked for, or by default the first CPU this process may use
    for the server and all the others for the generator.
    """
    if not hasattr(os, "sched_setaffinity"):
        return Pinning(None, None, "os.sched_setaffinity is not available")
    if serverCPU == "none" or clientCPU == "none":
        return Pinning(None, None, "asked not to")
    allowed = os.sched_getaffinity(0)
    server = parseCPUs(serverCPU) if serverCPU else {min(allowed)}
    client = parseCPUs(clientCPU) if clientCPU else allowed - server
    if not client:
        return Pinning(None, None, f"only {len(allowed)} CPU available")
    if not (server | client) <= allowed:
        raise Failed(
            f"CPUs {formatCPUs((server | client) - allowed)} are not available"
            f" (allowed: {formatCPUs(allowed)})"
        )
    if server & client:
        raise Failed("the server and generator CPUs overlap")
    return Pinning(server, client)


def pinTo(cpus: set[int] | None) -> Callable[[], None] | None:
    """
    A C{preexec_fn} that pins the child to C{cpus}.
    """
    if cpus is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def cpuTicks(pid: int) -> int | None:
    """
    User plus system CPU time of process C{pid} so far, in clock ticks, or
    C{None} when it is gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machineTicks() -> int:
    """
    User, nice and system CPU time of all CPUs so far, in clock ticks:
    process time, without interrupts, soft interrupts and steal.
    """
    with open("/proc/stat", "rb") as stat:
        fields = stat.readline().split()
    return int(fields[1]) + int(fields[2]) + int(fields[3])


def waitForQuiet(server: Server, threshold: float, bound: float) -> float | None:
    """
    Wait until other processes (not the server, not this one) use less than
    C{threshold} % of one CPU over a second, for at most C{bound} seconds.
    Return the seconds waited, or C{None} if the machine never got quiet.
    """
    started = time.monotonic()
    for _ in range(int(bound) + 1):
        machine, serverBefore, ours = machineTicks(), cpuTicks(server.pid), os.times()
        time.sleep(1.0)
        serverAfter, oursAfter = cpuTicks(server.pid), os.times()
        busy = (machineTicks() - machine) / CLOCK_TICKS
        busy -= ((serverAfter or 0) - (serverBefore or 0)) / CLOCK_TICKS
        busy -= oursAfter.user + oursAfter.system - ours.user - ours.system
        if 100 * busy < threshold:
            return time.monotonic() - started
        if time.monotonic() - started >= bound:
            break
    return None


def descendants(pid: int) -> set[int]:
    """
    Process C{pid} and every process below it (from C{/proc/PID/task/*/children}).
    """
    found = {pid}
    pending = [pid]
    while pending and len(found) < 10_000:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except OSError:
                continue
            for child in map(int, text.split()):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


# -- servers ------------------------------------------------------------------


class Server:
    """
    A server of one kind in a subprocess, listening on 127.0.0.1; use as a
    context manager, which stops it by its PID (SIGTERM, then SIGKILL after
    L{STOP_TIMEOUT}) and reaps it.
    """

    def __init__(
        self, kind: str, pinning: Pinning, command: list[str] | None = None
    ) -> None:
        """
        Start the server of C{kind}, or run C{command} (which must print
        C{starting on PORT}) under that name.
        """
        self.kind = kind
        self._stdout: IO[bytes] = tempfile.TemporaryFile()
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command or servers.serverCommand(kind, BACKLOG, SERVERS_SCRIPT),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            preexec_fn=pinTo(pinning.server),
            start_new_session=True,
        )
        self.pid = self.process.pid
        try:
            self.port = self._waitForPort()
        except BaseException:
            self.stop()
            raise

    def _waitForPort(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / 0.05) + 1):
            match = PORT_LINE.search(self.output())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise Failed(
                    f"exited with status {self.process.returncode}"
                    f" on start-up: {self.lastWords()}"
                )
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise Failed(f"not listening after {START_TIMEOUT:g} s: {self.lastWords()}")

    def output(self) -> bytes:
        """
        What the server wrote to its standard output so far.
        """
        self._stdout.seek(0)
        return self._stdout.read()

    def errors(self) -> bytes:
        """
        What the server wrote to its standard error so far.
        """
        self._stderr.seek(0)
        return self._stderr.read()

    def trouble(self) -> list[str]:
        """
        Warnings, errors and tracebacks the server logged so far.
        """
        found = [m.group(0) for m in LOG_TROUBLE.finditer(self.output())]
        found += [line for line in self.errors().splitlines() if line.strip()]
        return [line.decode(errors="replace").strip() for line in found]

    def lastWords(self) -> str:
        """
        The last line the server wrote to standard error, or else standard
        output, for a failure message.
        """
        for text in (self.errors(), self.output()):
            lines = [
                line
                for line in text.splitlines()
                if line.strip() and not PORT_LINE.search(line)
            ]
            if lines:
                return lines[-1].decode(errors="replace").strip()[-300:]
        return "(no output)"

    def exited(self) -> str | None:
        """
        Why the server is no longer running, or C{None} while it runs.
        """
        if self.process.poll() is None:
            return None
        return (
            f"server exited with status {self.process.returncode}: {self.lastWords()}"
        )

    def stop(self) -> None:
        """
        Stop the server by its PID and reap it.
        """
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self._stdout.close()
            self._stderr.close()


# -- generator runs -----------------------------------------------------------


@dataclass
class Run:
    """
    One generator run against one server: a measurement, or why it failed.
    """

    repeat: int
    server: str
    scenario: str
    rate: float | None = None
    generatorCpu: float | None = None
    """
    The generator's CPU use as it reports it, in % of one CPU.
    """
    generatorCpuObserved: float | None = None
    """
    The generator's CPU use (all its processes) seen from C{/proc} over
    about the measured interval, in % of one CPU.
    """
    serverCpu: float | None = None
    """
    The server's CPU use seen from C{/proc} over about the measured
    interval, in % of one CPU.
    """
    otherCpu: float | None = None
    """
    Every other process's CPU use on the machine over the same interval
    (L{CpuUse.other}).
    """
    cpuWindow: float | None = None
    """
    Seconds of the interval the C{/proc} figures cover.
    """
    waitedForQuiet: float | None = None
    """
    Seconds waited for other processes to quiet down (C{--wait-quiet}).
    """
    failure: str | None = None
    result: dict[str, Any] | None = None
    discarded: list[dict[str, Any]] = field(default_factory=list)
    """
    Earlier attempts at this run, measured while other processes used
    L{NOISY} or more (C{--retry-noisy}).
    """


@dataclass
class Sample:
    """
    CPU ticks of the server and of the generator's processes at one moment.
    """

    at: float
    server: int | None
    generator: int
    machine: int
    """
    User, nice and system ticks of all CPUs (C{/proc/stat}).
    """
    outputSeen: bool


LOADGEN_SOURCE = ROOT / "benchmarks" / "loadgen.c"
TCPCOMM_BENCH = [sys.executable, "-m", "tcpcomm", "bench"]


def buildLoadgen(directory: Path) -> Path:
    """
    Compile L{LOADGEN_SOURCE} into C{directory} with C{$CC} (default C{cc})
    and return the program's path.

    @raise Failed: If there is no compiler or it fails.
    """
    program = directory / "loadgen"
    command = [
        *shlex.split(os.environ.get("CC", "cc")),
        "-O2",
        "-o",
        str(program),
        str(LOADGEN_SOURCE),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=120, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Failed(f"cannot build {LOADGEN_SOURCE.name}: {e}") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        why = lines[0] if lines else f"exit status {done.returncode}"
        raise Failed(f"cannot build {LOADGEN_SOURCE.name}: {why}")
    return program


def chooseGenerator(options: argparse.Namespace, directory: Path) -> str | None:
    """
    Settle C{options.generator} into C{options.generatorCommand}: C{c}
    builds L{LOADGEN_SOURCE}, C{tcpcomm} is C{python -m tcpcomm bench},
    C{auto} the first when it builds and the second otherwise; anything else
    is a command.  Return a problem to report, or C{None}.
    """
    choice = options.generator
    options.generatorNote = None
    if choice in ("auto", "c"):
        try:
            options.generatorCommand = [str(buildLoadgen(directory))]
            options.generatorName = "benchmarks/loadgen.c"
            return None
        except Failed as e:
            if choice == "c":
                return str(e)
            options.generatorNote = f"{e}; using python -m tcpcomm bench"
            choice = "tcpcomm"
    if choice == "tcpcomm":
        options.generatorCommand = TCPCOMM_BENCH
        options.generatorName = "python -m tcpcomm bench"
    else:
        options.generatorCommand = shlex.split(choice)
        options.generatorName = choice
    return None


def generatorCommand(options: argparse.Namespace) -> list[str]:
    """
    The load generator's command, before its endpoint and options.
    """
    command: list[str] = getattr(options, "generatorCommand", TCPCOMM_BENCH)
    return command


@dataclass
class CpuUse:
    """
    CPU use over about the measured interval, from C{/proc}, in % of one
    CPU.

    @ivar server: The server process's (C{None} if it was gone).
    @ivar generator: The generator's processes', added up.
    @ivar other: Every other process's on the machine (this script's
        sampling included): user, nice and system time of all CPUs less
        the server's and the generator's.
    @ivar seconds: The interval these cover.
    """

    server: float | None
    generator: float
    other: float
    seconds: float


def cpuBetween(samples: list[Sample], start: float, end: float) -> CpuUse | None:
    """
    CPU use between the first sample at or after C{start} and the last at or
    before C{end}; C{None} if fewer than two samples are in between.
    """
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) < 2 or inside[-1].at - inside[0].at <= 0:
        return None
    first, last = inside[0], inside[-1]
    seconds = last.at - first.at

    def use(ticks: int) -> float:
        return 100 * ticks / CLOCK_TICKS / seconds

    server = None
    if first.server is not None and last.server is not None:
        server = use(last.server - first.server)
    generator = use(last.generator - first.generator)
    other = use(last.machine - first.machine) - generator - (server or 0.0)
    return CpuUse(server, generator, max(0.0, other), seconds)


def runGenerator(
    server: Server,
    scenario: Scenario,
    duration: float,
    warmup: float,
    options: argparse.Namespace,
    pinning: Pinning,
) -> tuple[dict[str, Any], CpuUse | None]:
    """
    Run the generator once against C{server}: return its JSON result and
    the CPU use over about the measured interval.

    The generator prints its result when its measured interval has ended;
    the interval taken is the last seconds before the result appeared, as
    many as the generator says it measured, less a margin at each end.

    @raise Failed: If the generator fails, finds a wrong byte, prints no
        result, or runs over its bound; or the server exits.
    """
    command = [
        *generatorCommand(options),
        f"127.0.0.1:{server.port}",
        *scenario.arguments(
            duration, warmup, options.processes, server.kind in servers.LENGTH_KINDS
        ),
    ]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=pinTo(pinning.client),
            start_new_session=True,
        )
        samples: list[Sample] = []
        family: set[int] = {process.pid}
        lastTicks: dict[int, int] = {}
        bound = warmup + duration + GENERATOR_MARGIN
        deadline = time.monotonic() + bound
        try:
            for _ in range(int(bound / SAMPLE_INTERVAL) + 1):
                if process.poll() is not None or time.monotonic() > deadline:
                    break
                family |= descendants(process.pid)
                for pid in list(family):
                    ticks = cpuTicks(pid)
                    if ticks is not None:
                        lastTicks[pid] = ticks
                samples.append(
                    Sample(
                        time.monotonic(),
                        cpuTicks(server.pid),
                        sum(lastTicks.values()),
                        machineTicks(),
                        os.fstat(stdout.fileno()).st_size > 0,
                    )
                )
                time.sleep(SAMPLE_INTERVAL)
            if process.poll() is None:
                raise Failed(
                    f"the generator ran over its bound of {bound:g} s"
                    + (f"; {server.exited()}" if server.exited() else "")
                )
        finally:
            if process.poll() is None:
                # Its own session: the group holds the generator and any
                # processes it started, all ours.
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)
            # Anything it started and left behind, in its own process group.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stdout.seek(0)
        out = stdout.read().decode(errors="replace")
        stderr.seek(0)
        err = stderr.read().decode(errors="replace")

    result: dict[str, Any] | None = None
    for line in reversed(out.splitlines()):
        if line.strip().startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            break
    if process.returncode != 0 or result is None or not result.get("verified"):
        why = server.exited()
        if why is None:
            lastError = [line for line in err.splitlines() if line.strip()]
            if lastError:
                why = lastError[-1].strip()[:300]
            elif result is not None:
                why = f"not verified, errors: {result.get('errors')!r}"[:300]
            else:
                why = "no result"
            why = f"generator exited with status {process.returncode}: {why}"
        raise Failed(why)

    seen = [s.at for s in samples if s.outputSeen]
    ended = seen[0] if seen else (samples[-1].at if samples else time.monotonic())
    measured = result.get("duration")
    if not isinstance(measured, int | float) or measured <= 0:
        measured = duration
    margin = min(0.3, measured / 4)
    use = cpuBetween(
        samples,
        ended - SAMPLE_INTERVAL - measured + margin,
        ended - SAMPLE_INTERVAL - margin,
    )
    return result, use


def measureOnce(
    server: Server,
    scenario: Scenario,
    repeat: int,
    options: argparse.Namespace,
    pinning: Pinning,
    report: Callable[[str], None],
) -> Run:
    """
    Measure C{server} in C{scenario} once (after waiting for other processes
    to quiet down, with C{--wait-quiet}).
    """
    kind = server.kind
    run = Run(repeat, kind, scenario.name)
    if options.wait_quiet:
        waited = waitForQuiet(server, options.wait_quiet, QUIET_BOUND)
        run.waitedForQuiet = QUIET_BOUND if waited is None else waited
        if waited is None:
            report(
                f"  {kind}, {scenario.name}: other processes stayed busy"
                f" for {QUIET_BOUND:g} s; measuring anyway"
            )
    try:
        result, use = runGenerator(
            server, scenario, options.duration, options.warmup, options, pinning
        )
    except Failed as e:
        run.failure = str(e)
        report(f"  {kind}, {scenario.name}: failed: {e}")
        return run
    run.result = result
    run.rate = scenario.rate(result)
    cpu = result.get("cpu_percent")
    run.generatorCpu = float(cpu) if isinstance(cpu, int | float) else None
    if use is not None:
        run.generatorCpuObserved = use.generator
        run.serverCpu = use.server
        run.otherCpu = use.other
        run.cpuWindow = use.seconds
    report(
        f"  {kind}, {scenario.name}: {run.rate:,.{digits(scenario)}f}"
        f" {scenario.unit} (generator {percent(run.generatorCpu)},"
        f" server {percent(run.serverCpu)}, others {percent(run.otherCpu)})"
    )
    return run


def measureServer(
    kind: str,
    repeat: int,
    scenarios: list[Scenario],
    options: argparse.Namespace,
    pinning: Pinning,
    report: Callable[[str], None],
) -> tuple[list[Run], list[str]]:
    """
    Start a fresh server of C{kind}, warm it up with one short run of every
    scenario, measure every scenario once, in the given order, and stop it.
    Return the runs (failed ones with their reason) and what the server
    logged that looks like trouble.
    """
    runs: list[Run] = []
    scenarios = [s for s in scenarios if s.name not in LEFT_OUT.get(kind, ())]
    try:
        server = Server(kind, pinning)
    except Failed as e:
        reason = f"start-up: {e}"
        report(f"  {kind}: failed: {reason}")
        return [Run(repeat, kind, s.name, failure=reason) for s in scenarios], []
    with server:
        warmUpFailures: dict[str, str] = {}
        for scenario in scenarios:
            if server.exited() is not None:
                break
            try:
                runGenerator(
                    server, scenario, options.server_warmup, 0, options, pinning
                )
            except Failed as e:
                warmUpFailures[scenario.name] = f"warm-up: {e}"
                report(f"  {kind}, {scenario.name}: warm-up failed: {e}")
        for scenario in scenarios:
            failure = warmUpFailures.get(scenario.name) or server.exited()
            if failure is not None:
                runs.append(Run(repeat, kind, scenario.name, failure=failure))
                continue
            discarded: list[dict[str, Any]] = []
            for attempt in range(options.retry_noisy + 1):
                run = measureOnce(server, scenario, repeat, options, pinning, report)
                if (
                    run.failure is None
                    and attempt < options.retry_noisy
                    and (run.otherCpu or 0.0) >= NOISY
                ):
                    report(
                        f"  {kind}, {scenario.name}: other processes used"
                        f" {percent(run.otherCpu)} of a CPU meanwhile; again"
                    )
                    discarded.append(asdict(run))
                    continue
                break
            run.discarded = discarded
            runs.append(run)
        trouble = server.trouble()
    return runs, trouble


# -- summary ------------------------------------------------------------------


@dataclass
class Cell:
    """
    One server in one scenario over every repeat.
    """

    server: str
    scenario: str
    rates: list[float] = field(default_factory=list)
    failure: str | None = None
    median: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    ratio: float | None = None
    generatorCpu: float | None = None
    generatorCpuObserved: float | None = None
    serverCpu: float | None = None
    otherCpu: float | None = None
    generatorSaturated: bool = False
    serverSaturated: bool = False
    leftOut: bool = False
    """
    Not run, by design (L{LEFT_OUT}).
    """


def medianOf(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(
    runs: list[Run], kinds: list[str], scenarios: list[Scenario], pinning: Pinning
) -> dict[tuple[str, str], Cell]:
    """
    Medians, ranges, ratios and CPU use per server and scenario.  A cell
    with any failed run is failed.
    """
    cells: dict[tuple[str, str], Cell] = {}
    for kind in kinds:
        for scenario in scenarios:
            mine = [r for r in runs if r.server == kind and r.scenario == scenario.name]
            cell = Cell(kind, scenario.name)
            cells[kind, scenario.name] = cell
            if scenario.name in LEFT_OUT.get(kind, ()):
                cell.leftOut = True
                continue
            failures = [r.failure for r in mine if r.failure]
            if failures:
                cell.failure = failures[0]
                continue
            cell.rates = [r.rate for r in mine if r.rate is not None]
            if not cell.rates:
                cell.failure = "not measured"
                continue
            cell.median = statistics.median(cell.rates)
            cell.minimum, cell.maximum = min(cell.rates), max(cell.rates)
            cell.generatorCpu = medianOf([r.generatorCpu for r in mine])
            cell.generatorCpuObserved = medianOf([r.generatorCpuObserved for r in mine])
            cell.serverCpu = medianOf([r.serverCpu for r in mine])
            cell.otherCpu = medianOf([r.otherCpu for r in mine])
            processes = max(
                [int((r.result or {}).get("processes") or 1) for r in mine] or [1]
            )
            capacity = 100 * min(processes, pinning.clientCapacity())
            generator = cell.generatorCpu
            if generator is None:
                generator = cell.generatorCpuObserved
            cell.generatorSaturated = (
                generator is not None and generator >= SATURATED * capacity
            )
            cell.serverSaturated = (
                cell.serverCpu is not None and cell.serverCpu >= SATURATED * 100
            )
    for (kind, name), cell in cells.items():
        ref = cells.get((reference(kind), name))
        if cell.median is not None and ref is not None and ref.median:
            cell.ratio = cell.median / ref.median
    return cells


def digits(scenario: Scenario) -> int:
    return 1 if scenario.unit == "MB/s" else 0


def plural(count: int, noun: str) -> str:
    """
    C{count} and C{noun}, with an C{s} unless it is one.
    """
    return f"{count} {noun}" + ("" if count == 1 else "s")


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value:.0f} %"


def targetLines(
    cells: dict[tuple[str, str], Cell], minimums: dict[str, float]
) -> list[tuple[str, bool | None]]:
    """
    One line per target, and whether it was met (C{None}: not measured).
    """
    lines: list[tuple[str, bool | None]] = []
    for target in TARGETS:
        ref = target.reference
        minimum = minimums[target.key]
        head = f"{target.label} / {ref}:"
        cell = cells.get((target.kind, target.scenario))
        refCell = cells.get((ref, target.scenario))
        if cell is None or refCell is None:
            lines.append((f"{head} not measured (server or scenario left out)", None))
            continue
        if cell.median is None or not refCell.median:
            why = cell.failure or refCell.failure or "no figure"
            lines.append((f"{head} no ratio ({why})", False))
            continue
        ratio = cell.median / refCell.median
        met = ratio >= minimum
        scenario = SCENARIOS[target.scenario]
        line = (
            f"{head} {ratio:.2f}{TIMES} (target ≥ {minimum:g}{TIMES})"
            f" {'OK' if met else 'BELOW'} —"
            f" {cell.median:,.{digits(scenario)}f} vs"
            f" {refCell.median:,.{digits(scenario)}f} {scenario.unit}"
        )
        if cell.generatorSaturated or refCell.generatorSaturated:
            line += " (generator saturated: the ratio may be understated)"
        lines.append((line, met))
    cell = cells.get(("tcpcomm-line", "lines16"))
    if cell is not None and cell.median is not None:
        met = cell.median >= LINE_P16_RATE
        lines.append(
            (
                f"tcpcomm-line P16: {cell.median:,.0f} lines/s (target"
                f" ≥ {LINE_P16_RATE:,}) {'OK' if met else 'BELOW'}",
                met,
            )
        )
    return lines


# -- output -------------------------------------------------------------------


def checkout() -> str:
    """
    Which tcpcomm was measured: the checkout's commit, and whether tracked
    files differ from it.
    """

    def git(*arguments: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *arguments],
            capture_output=True,
            timeout=START_TIMEOUT,
            check=True,
        )
        return done.stdout.decode(errors="replace").strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if dirty else "")


def machine() -> dict[str, Any]:
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
    try:
        uvloopVersion: str | None = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uvloopVersion = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "uvloop": uvloopVersion,
        "tcpcomm": checkout(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
    }


def fmtRate(value: float | None, scenario: Scenario) -> str:
    return NONE if value is None else f"{value:,.{digits(scenario)}f}"


def cpuCell(value: float | None, saturated: bool) -> str:
    return percent(value) + (" ⚠" if saturated else "")


def markdown(
    cells: dict[tuple[str, str], Cell],
    runs: list[Run],
    kinds: list[str],
    scenarios: list[Scenario],
    options: argparse.Namespace,
    info: dict[str, Any],
    pinning: Pinning,
    skipped: dict[str, str],
    trouble: dict[str, list[str]],
    targets: list[tuple[str, bool | None]],
    elapsed: float,
) -> str:
    """
    The report: machine and settings, the table of medians, targets, notes
    and every run's figure.
    """
    settings = "; ".join(
        f"{s.name} `--mode {s.mode}` C={s.connections} S={s.size} P={s.inFlight}"
        for s in scenarios
    )
    processes = f"{options.processes} process" + ("es" if options.processes > 1 else "")
    others = [r.otherCpu for r in runs if r.otherCpu is not None]
    out = [
        "# tcpcomm against stock Twisted and asyncio servers",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} CPUs, Linux {info['kernel']},"
        f" {info['implementation']} {info['python']}, Twisted {info['twisted']},"
        f" uvloop {info['uvloop'] or 'not installed'}; {info['date']}.",
        f"- tcpcomm: commit {info['tcpcomm']}.",
        f"- Pinning: {pinning.describe()}.",
        f"- Load: `{options.generatorName}` with {processes}: {settings}"
        " (C connections, S-byte lines, P in flight per connection; stream's"
        " default is 256 KiB in flight).",
        f"- Each figure is the median of {plural(options.repeats, 'run')} of"
        f" {options.duration:g} s measured after {options.warmup:g} s of warm-up."
        f" Each server was started fresh for each repeat and warmed up with a"
        f" discarded {options.server_warmup:g} s run of every scenario; servers"
        f" and scenarios were taken in a rotated order. The whole run took"
        f" {elapsed / 60:.0f} minutes.",
    ]
    if others:
        out.append(
            f"- Other processes on the machine used a median of"
            f" {statistics.median(others):.0f} % of one CPU while measuring"
            f" (at most {max(others):.0f} %);"
            f" {sum(o >= NOISY for o in others)} of {len(others)} runs had"
            f" {NOISY:.0f} % or more (marked † below)."
        )
    retried = [r for r in runs if r.discarded]
    if retried:
        out.append(
            f"- {plural(len(retried), 'run')} measured again (up to"
            f" {options.retry_noisy} times) because other processes used"
            f" {NOISY:.0f} % of one CPU or more meanwhile;"
            f" {sum(len(r.discarded) for r in retried)} attempts discarded"
            " (in `compare.json`)."
        )
    waits = [r.waitedForQuiet for r in runs if r.waitedForQuiet is not None]
    if options.wait_quiet and waits:
        out.append(
            f"- Before each run it waited until other processes used less than"
            f" {options.wait_quiet:g} % of one CPU: a median of"
            f" {statistics.median(waits):.0f} s;"
            f" {plural(sum(w >= QUIET_BOUND for w in waits), 'run')} gave up after"
            f" {QUIET_BOUND:g} s."
        )
    out.append("")
    header = ["server"]
    align = ["---"]
    for s in scenarios:
        header += [f"{s.label}, {s.unit}", f"{TIMES} stock", "gen CPU", "srv CPU"]
        align += ["---:", "---:", "---:", "---:"]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(align) + "|")
    failures: dict[str, int] = {}
    where: dict[str, list[str]] = {}
    for kind in kinds:
        for s in scenarios:
            for run in sorted(runs, key=lambda r: r.repeat):
                if (run.server, run.scenario) == (kind, s.name) and run.failure:
                    failures.setdefault(run.failure, len(failures) + 1)
                    where.setdefault(run.failure, []).append(
                        f"{kind} {s.name} repeat {run.repeat + 1}"
                    )
    for kind in kinds:
        row = [f"`{kind}`"]
        for s in scenarios:
            cell = cells[kind, s.name]
            if cell.failure is not None:
                row += [f"failed ({failures[cell.failure]})", "", "", ""]
                continue
            if cell.leftOut:
                row += ["not run", "", "", ""]
                continue
            ratio = NONE if cell.ratio is None else f"{cell.ratio:.2f}{TIMES}"
            if kind == reference(kind) and cell.ratio is not None:
                ratio = "1 (ref)"
            row += [
                fmtRate(cell.median, s),
                ratio,
                cpuCell(cell.generatorCpu, cell.generatorSaturated),
                cpuCell(cell.serverCpu, cell.serverSaturated),
            ]
        out.append("| " + " | ".join(row) + " |")
    for kind, why in skipped.items():
        out.append(f"| `{kind}` | skipped: {why} |" + " |" * (4 * len(scenarios) - 1))
    capacity = pinning.clientCapacity()
    out += [
        "",
        f"{TIMES} stock: the median divided by that of the stock Twisted server"
        " of the same kind: line servers (`tcpcomm-line*`, `twisted-linereceiver`,"
        f" `asyncio-lines`, `asyncio-streams*`) by `{LINE_REFERENCE}`, byte echo"
        " servers (`tcpcomm-echo`, `asyncio-protocol`, `uvloop-protocol`) by"
        f" `{BYTE_REFERENCE}`, length-prefixed frame servers (`tcpcomm-length`)"
        f" by `{LENGTH_REFERENCE}`. Rates count lines (or frames) echoed (one"
        " round trip is one line there and back); MB/s is 10^6 bytes per second"
        " each way, length headers included. The frame servers get S-byte"
        " payloads after a 4-byte length (`--framing length:4`); not run: the"
        " scenario is left out for that server (the handler rows are compared"
        " at one and at 16 lines in flight)."
        " gen CPU: the generator's CPU time (user + system) over its measured"
        " seconds, as it reports it; srv CPU: the server's, read from"
        " `/proc/PID/stat` over the same seconds; both medians, in % of one"
        f" CPU. ⚠: at least {SATURATED:.0%} of what that side can use (the"
        " server one CPU; the generator one CPU per process, at most"
        f" {capacity} CPU{'s' if capacity > 1 else ''}): it was the bottleneck,"
        " and the figure says more about it than about the other side.",
        "",
        "| server | what it is |",
        "|---|---|",
    ]
    out += [f"| `{kind}` | {DESCRIPTIONS[kind]} |" for kind in kinds]
    if failures:
        out += [
            "",
            "Failed (a cell fails when any of its runs did; see every run below):",
            "",
        ]
        for reason, number in failures.items():
            out.append(f"{number}. {', '.join(where[reason])}: {reason}")
    out += ["", "## Targets", "", "```"]
    out += [line for line, _ in targets]
    out += ["```", ""]
    if any(trouble.values()):
        out += ["## Logged by servers", ""]
        for kind, lines in trouble.items():
            for line in lines[:5]:
                out.append(f"- `{kind}`: `{line[:200]}`")
            if len(lines) > 5:
                out.append(f"- `{kind}`: {len(lines) - 5} more lines")
        out.append("")
    out += [
        "<details><summary>Every run: rate; generator / server / other"
        " processes' CPU</summary>",
        "",
        "| server | scenario | "
        + " | ".join(f"repeat {i + 1}" for i in range(options.repeats))
        + " |",
        "|---|---|" + "---:|" * options.repeats,
    ]
    for kind in kinds:
        for s in scenarios:
            figures = []
            for repeat in range(options.repeats):
                found = [
                    r
                    for r in runs
                    if (r.server, r.scenario, r.repeat) == (kind, s.name, repeat)
                ]
                if not found:
                    figures.append(NONE)
                elif found[0].failure is not None:
                    figures.append(f"failed ({failures[found[0].failure]})")
                else:
                    run = found[0]
                    figures.append(
                        f"{fmtRate(run.rate, s)}; {percent(run.generatorCpu)}"
                        f" / {percent(run.serverCpu)} / {percent(run.otherCpu)}"
                        + (" †" if (run.otherCpu or 0) >= NOISY else "")
                    )
            out.append(f"| `{kind}` | {s.name} | " + " | ".join(figures) + " |")
    out += ["", "</details>", ""]
    return "\n".join(out)


def chart(
    cells: dict[tuple[str, str], Cell],
    kinds: list[str],
    scenarios: list[Scenario],
    info: dict[str, Any],
    pinning: Pinning,
    path: Path,
) -> str | None:
    """
    Draw the medians, with min-to-max error bars, one panel per scenario, into
    C{path}.  Return why not when matplotlib is missing.
    """
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed (pip install '.[bench]')"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "tcpcomm": "#d62728",
        "twisted": "#1f77b4",
        "asyncio": "#2ca02c",
        "uvloop": "#9467bd",
    }
    figure, axes = plt.subplots(
        1, len(scenarios), figsize=(4.2 * len(scenarios), 4.8), squeeze=False
    )
    for axis, scenario in zip(axes[0], scenarios, strict=True):
        names, medians, low, high, colour = [], [], [], [], []
        for kind in kinds:
            cell = cells[kind, scenario.name]
            names.append(kind)
            median = cell.median or 0.0
            medians.append(median)
            low.append(median - (cell.minimum if cell.minimum is not None else median))
            high.append((cell.maximum if cell.maximum is not None else median) - median)
            colour.append(colours.get(kind.split("-")[0], "grey"))
        positions = range(len(names))
        axis.bar(positions, medians, color=colour, yerr=[low, high], capsize=3)
        for position, kind in zip(positions, kinds, strict=True):
            cell = cells[kind, scenario.name]
            if cell.failure is not None or cell.leftOut:
                axis.text(
                    position,
                    0,
                    "failed" if cell.failure is not None else "not run",
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        axis.set_xticks(list(positions))
        axis.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        axis.set_title(
            f"{scenario.label} (C={scenario.connections}, S={scenario.size},"
            f" P={scenario.inFlight})",
            fontsize=10,
        )
        axis.set_ylabel(scenario.unit)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(
        f"Echo servers on {info['cpu']} ({info['cores']} CPUs), Python"
        f" {info['python']}, Twisted {info['twisted']}; {pinning.describe()};"
        f" median, min{NONE}max",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


# -- main ---------------------------------------------------------------------


def checkGenerator(options: argparse.Namespace) -> str | None:
    """
    Why the generator cannot run, or C{None} when C{--help} works; then
    C{options.speaksLength} says whether its help offers C{--framing}
    (length-prefixed frames, for L{servers.LENGTH_KINDS}).
    """
    try:
        done = subprocess.run(
            [*generatorCommand(options), "--help"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {done.returncode}"
    options.speaksLength = b"--framing" in done.stdout + done.stderr
    return None


def parseArguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=servers.KINDS,
        default=list(servers.KINDS),
        metavar="SERVER",
        help=f"servers to compare ({', '.join(servers.KINDS)})",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=list(SCENARIOS),
        default=list(SCENARIOS),
        metavar="SCENARIO",
        help=f"scenarios to run ({', '.join(SCENARIOS)})",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="measured seconds per run"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="generator warm-up seconds before each measured run",
    )
    parser.add_argument(
        "--server-warmup",
        type=float,
        default=1.0,
        help="seconds of the discarded run of each scenario on a fresh server",
    )
    parser.add_argument(
        "--connections", type=int, help="connections in every scenario (100)"
    )
    parser.add_argument("--size", type=int, help="message size in every scenario (64)")
    parser.add_argument(
        "--pipeline", type=int, help="messages in flight for lines16 (16)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        help="generator processes (default: one per generator CPU)",
    )
    parser.add_argument(
        "--retry-noisy",
        type=int,
        default=2,
        metavar="N",
        help=f"measure a run again, at most N times, when other processes used"
        f" {NOISY:g} %% of one CPU or more while it measured",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="before each measured run, wait (at most"
        f" {QUIET_BOUND:g} s) until other processes use less than PERCENT of"
        " one CPU (0: do not wait)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="directory for compare.md, compare.json and compare.png",
    )
    parser.add_argument(
        "--server-cpu",
        help="CPU list for servers ('none': no pinning;"
        " default: the first CPU allowed)",
    )
    parser.add_argument(
        "--client-cpu", help="CPU list for the generator (default: the other CPUs)"
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="KEY=RATIO",
        help="change a target's minimum ratio; keys: "
        + ", ".join(f"{t.key} ({t.minimum:g})" for t in TARGETS),
    )
    parser.add_argument(
        "--generator",
        default="auto",
        metavar="GENERATOR",
        help="the load generator: 'c' (benchmarks/loadgen.c, built with $CC or"
        " cc), 'tcpcomm' (python -m tcpcomm bench), 'auto' (c if it builds,"
        " else tcpcomm), or a command taking the same options and printing the"
        " same JSON",
    )
    parser.add_argument(
        "--json", action="store_true", help="print compare.json instead of the table"
    )
    options = parser.parse_args(argv)
    if options.repeats < 1:
        parser.error("--repeats must be at least 1")
    if options.duration <= 0 or options.warmup < 0 or options.server_warmup <= 0:
        parser.error(
            "--duration and --server-warmup must be positive, --warmup not negative"
        )
    if options.retry_noisy < 0:
        parser.error("--retry-noisy must not be negative")
    for number in ("connections", "size", "pipeline", "processes"):
        value = getattr(options, number)
        if value is not None and value < 1:
            parser.error(f"--{number} must be at least 1")
    minimums = {t.key: t.minimum for t in TARGETS}
    for text in options.target:
        key, _, value = text.partition("=")
        if key not in minimums:
            parser.error(f"unknown target {key!r}: choose from {', '.join(minimums)}")
        try:
            minimums[key] = float(value)
        except ValueError:
            parser.error(f"--target {text!r}: not a number")
    options.minimums = minimums
    return options


def chosenScenarios(options: argparse.Namespace) -> list[Scenario]:
    """
    The scenarios asked for, with C{--connections}, C{--size} and
    C{--pipeline} applied.
    """
    chosen = []
    for name in dict.fromkeys(options.scenarios):
        scenario = SCENARIOS[name]
        changes: dict[str, int] = {}
        if options.connections is not None:
            changes["connections"] = options.connections
        if options.size is not None:
            changes["size"] = options.size
        if options.pipeline is not None and scenario.mode == "lines":
            changes["pipeline"] = options.pipeline
        chosen.append(Scenario(**(asdict(scenario) | changes)))
    return chosen


def main(argv: list[str] | None = None) -> int:
    options = parseArguments(argv)
    scenarios = chosenScenarios(options)

    def report(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    skipped: dict[str, str] = {}
    kinds: list[str] = []
    for kind in dict.fromkeys(options.servers):
        if kind.startswith("uvloop-") and importlib.util.find_spec("uvloop") is None:
            skipped[kind] = "uvloop not installed"
            report(f"{kind}: skipped: uvloop not installed")
        else:
            kinds.append(kind)
    try:
        pinning = choosePinning(options.server_cpu, options.client_cpu)
    except (Failed, ValueError) as e:
        report(f"compare: cannot pin: {e}")
        return 1
    if pinning.client is not None:
        # This process only waits and samples; keep it off the server's CPU.
        os.sched_setaffinity(0, pinning.client)
    if options.processes is None:
        options.processes = pinning.clientCapacity() if pinning.client else 1
    # Where loadgen.c is built; removed when this object goes, at exit.
    build = tempfile.TemporaryDirectory(prefix="tcpcomm-compare-")
    problem = chooseGenerator(options, Path(build.name))
    if options.generatorNote:
        report(f"compare: {options.generatorNote}")
    if problem is None:
        problem = checkGenerator(options)
    if problem is not None:
        report(f"compare: the load generator does not run: {problem}")
        return 1
    if not options.speaksLength:
        for kind in [k for k in kinds if k in servers.LENGTH_KINDS]:
            kinds.remove(kind)
            skipped[kind] = "the load generator has no --framing (loadgen.c has)"
            report(f"{kind}: skipped: {skipped[kind]}")
    if not kinds:
        report("compare: no server left to measure")
        return 1

    perScenario = options.server_warmup + options.warmup + options.duration + 1.5
    runsPerRepeat = sum(
        1 for kind in kinds for s in scenarios if s.name not in LEFT_OUT.get(kind, ())
    )
    report(
        f"{len(kinds)} servers, {len(scenarios)} scenarios, {options.repeats}"
        f" repeats; {pinning.describe()}; about"
        f" {runsPerRepeat * options.repeats * perScenario / 60:.0f} minutes"
    )
    info = machine()
    runs: list[Run] = []
    trouble: dict[str, list[str]] = {kind: [] for kind in kinds}
    started = time.monotonic()
    for repeat in range(options.repeats):
        shift = repeat % len(kinds)
        order = kinds[shift:] + kinds[:shift]
        turn = repeat % len(scenarios)
        scenarioOrder = scenarios[turn:] + scenarios[:turn]
        report(f"repeat {repeat + 1} of {options.repeats}")
        for kind in order:
            measured, logged = measureServer(
                kind, repeat, scenarioOrder, options, pinning, report
            )
            runs += measured
            trouble[kind] += logged
    elapsed = time.monotonic() - started

    cells = summarize(runs, kinds, scenarios, pinning)
    targets = targetLines(cells, options.minimums)
    options.out.mkdir(parents=True, exist_ok=True)
    table = markdown(
        cells,
        runs,
        kinds,
        scenarios,
        options,
        info,
        pinning,
        skipped,
        trouble,
        targets,
        elapsed,
    )
    (options.out / "compare.md").write_text(table)
    document = {
        "machine": info,
        "pinning": {
            "server": sorted(pinning.server) if pinning.server else None,
            "client": sorted(pinning.client) if pinning.client else None,
            "description": pinning.describe(),
        },
        "settings": {
            "repeats": options.repeats,
            "duration": options.duration,
            "warmup": options.warmup,
            "serverWarmup": options.server_warmup,
            "waitQuiet": options.wait_quiet,
            "retryNoisy": options.retry_noisy,
            "processes": options.processes,
            "backlog": BACKLOG,
            "generator": options.generatorName,
            "seconds": round(elapsed, 1),
        },
        "scenarios": [asdict(s) for s in scenarios],
        "references": {
            "line": LINE_REFERENCE,
            "bytes": BYTE_REFERENCE,
            "length": LENGTH_REFERENCE,
        },
        "lengthFramed": [kind for kind in kinds if kind in servers.LENGTH_KINDS],
        "leftOut": {kind: sorted(LEFT_OUT[kind]) for kind in kinds if kind in LEFT_OUT},
        "skipped": skipped,
        "cells": [asdict(cell) for cell in cells.values()],
        "targets": [{"line": line, "met": met} for line, met in targets],
        "serverLogs": trouble,
        "runs": [asdict(run) for run in runs],
    }
    (options.out / "compare.json").write_text(json.dumps(document, indent=2) + "\n")
    whyNoChart = chart(
        cells, kinds, scenarios, info, pinning, options.out / "compare.png"
    )
    if whyNoChart:
        report(f"compare: no chart: {whyNoChart}")

    if options.json:
        print(json.dumps(document, indent=2))
    else:
        print(table)
    for line, _ in targets:
        report(line)
    written = ", ".join(
        str(options.out / name)
        for name in ("compare.md", "compare.json", "compare.png")
        if not (name.endswith(".png") and whyNoChart)
    )
    report(f"wrote {written}")
    failed = any(run.failure for run in runs)
    if failed:
        report("compare: some runs failed (see the table)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
