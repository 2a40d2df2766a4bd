# -*- test-case-name: tests.test_bench -*-
"""
C{tcpcomm bench}: a load generator for echo servers.

It opens C{connections} connections to an echo server, sends lines of
exactly C{size} bytes (the trailing LF included) and checks every byte that
comes back, in order, against what was sent, so the same load measures
byte-echo servers (RFC 862) and line-echo servers alike.  Modes:

  - C{pingpong}: each connection keeps C{pipeline} lines in flight (default
    1); whenever k lines have come back, k more go out in one send.
  - C{lines}: the same mechanics, 16 in flight by default.
  - C{stream}: each connection writes large chunks (64 KiB) and reads the
    echo, with at most a window (256 KiB) in flight; it reports MB/s, not
    lines/s.

What each connection sends is a cyclic block of distinct lines (L{makePattern})
that all connections share, each starting at its own line.  A line's latency
runs from the send that finished it to the receive that completed its echo.

The hot loop is plain Python on non-blocking sockets and C{select.epoll}
(a L{selectors} selector where there is no epoll): no Twisted, no asyncio,
nothing parsed per line.  Bytes are counted, a line is complete every
C{size} bytes, and each receive is compared with the pattern by one
C{bytes.startswith} (a C{memcmp}).  With C{processes} above 1 the
connections are split across that many worker processes (this module, run
with L{workerMain}) whose results are added up.

With a C{framing} other than C{line} (L{framedPattern}), each message is a
frame of that framing carrying a C{size}-byte payload, every frame of a run
the same length; an echo server that re-frames each payload it gets sends
back the very bytes sent, so the same byte comparison verifies the payloads.

Nothing here imports Twisted (the framers are pure).
"""

from __future__ import annotations

import errno
import gc
import json
import os
import random
import select
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any, Protocol

from tcpcomm.framers import (
    DelimiterFramer,
    Framer,
    FramingError,
    LengthFieldFramer,
    LineAdapter,
    ModbusFramer,
    parseFraming,
)
from tcpcomm.hostport import splitHostPort

__all__ = [
    "DEFAULT_SIZE",
    "INTERRUPTED",
    "MODBUS_READ_SIZE",
    "MODBUS_TRANSACTIONS",
    "MODES",
    "BenchConfig",
    "BenchError",
    "BenchResult",
    "Progress",
    "Target",
    "WorkerResult",
    "bucketMidpoint",
    "combineResults",
    "defaultPipeline",
    "defaultSize",
    "firstDifference",
    "frameBytes",
    "framedPattern",
    "isLineFraming",
    "latencyBucket",
    "makePattern",
    "modbusRequest",
    "parseEndpoint",
    "patternLines",
    "percentile",
    "runBench",
    "runCommand",
    "splitConnections",
    "startOffset",
    "streamWrite",
    "workerMain",
]

MODES = ("pingpong", "lines", "stream")

INTERRUPTED = 130
"""
The exit status of a command stopped by Ctrl-C (SIGINT), as shells report
one killed by it: 128 plus the signal's number.
"""

KiB = 1024
MiB = 1024 * KiB

MAX_SIZE = 1 * MiB
"""
The longest line C{--size} allows.
"""

MAX_WINDOW = 64 * MiB
"""
The most bytes one connection may keep in flight (pipeline times size).
"""

STREAM_WINDOW = 256 * KiB
"""
C{stream} mode: bytes in flight per connection by default.
"""

STREAM_WRITE = 64 * KiB
"""
C{stream} mode: the least a connection sends at once, once running.
"""

MIN_PATTERN_BYTES = 256 * KiB
"""
The shared pattern block is at least this long, so receives can be large.
"""

CONNECT_BATCH = 100
"""
Connections opened at once: fewer than listen backlogs usually are.
"""

CONNECT_TIMEOUT = 10.0
"""
Seconds all of a process's connections may take to open.
"""

GRACE = 3.0
"""
The longest the server may leave a connection that waits for an echo
without one, at any time: past it the server has stopped answering.
"""

FINISH_LIMIT = 10.0
"""
Seconds the server has, after the measured time, to echo all that is in
flight, as long as it keeps answering (L{GRACE}).
"""

HISTOGRAM_BUCKETS = 2048
"""
Latency histogram size: L{latencyBucket} maps every 64-bit count of
nanoseconds below it.
"""

_IN = 0x001
_OUT = 0x004
_ERR = 0x008
_HUP = 0x010
# select.EPOLLIN etc. have these values on Linux; the selector fallback
# reports events with the same bits.


class BenchError(Exception):
    """
    The benchmark failed; the message says why, in one line.

    @ivar errors: How many processes failed (1 unless several ran).
    """

    def __init__(self, message: str, errors: int = 1) -> None:
        super().__init__(message)
        self.errors = errors


# The endpoint.


@dataclass(frozen=True)
class Target:
    """
    Where the generator connects.

    @ivar display: The endpoint as the user wrote it, for messages.
    @ivar host: The host name or address (TCP), or C{""}.
    @ivar port: The port (TCP), or C{0}.
    @ivar path: The socket's path (UNIX), or C{""}.
    @ivar timeout: Seconds all of a process's connections may take to open.
    """

    display: str
    host: str = ""
    port: int = 0
    path: str = ""
    timeout: float = CONNECT_TIMEOUT

    def addresses(self) -> list[tuple[int, Any]]:
        """
        Resolve to C{(family, sockaddr)} pairs, in the resolver's order.

        @raise BenchError: If the name does not resolve.
        """
        if self.path:
            return [(socket.AF_UNIX, self.path)]
        try:
            infos = socket.getaddrinfo(
                self.host, self.port, socket.AF_UNSPEC, socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError):
            raise BenchError(f"name not found: {self.display}") from None
        return [(family, sockaddr) for family, _, _, _, sockaddr in infos]


def _splitDescription(text: str) -> tuple[list[str], dict[str, str]]:
    """
    Split the arguments of a Twisted endpoint description (what follows
    C{kind:}) at unescaped colons, into positional and C{key=value} ones;
    a backslash escapes the next character.
    """
    positional: list[str] = []
    named: dict[str, str] = {}
    current: list[str] = []
    key: str | None = None
    characters = iter(text)

    def finish() -> None:
        value = "".join(current)
        if key is None:
            positional.append(value)
        else:
            named[key] = value

    for character in characters:
        if character == "\\":
            current.append(next(characters, ""))
        elif character == "=" and key is None:
            key = "".join(current)
            current = []
        elif character == ":":
            finish()
            current, key = [], None
        else:
            current.append(character)
    finish()
    return positional, named


def _port(text: str, endpoint: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BenchError(f"bad endpoint {endpoint!r}: port {text!r} is not 1-65535")
    return int(text)


def _timeout(named: dict[str, str], endpoint: str) -> float:
    text = named.pop("timeout", None)
    if text is None:
        return CONNECT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value > 0:
        raise BenchError(f"bad endpoint {endpoint!r}: timeout {text!r}")
    return value


def parseEndpoint(text: str) -> Target:
    """
    Read ENDPOINT as the other C{tcpcomm} commands do: C{HOST:PORT},
    C{[IPV6]:PORT}, or a Twisted client endpoint description, of which the
    generator supports C{tcp:} (C{tcp:HOST:PORT}, C{tcp:host=…:port=…}) and
    C{unix:} (C{unix:PATH}, C{unix:path=…}).

    @raise BenchError: For TLS endpoints (C{tls:}, C{ssl:}), other kinds,
        and malformed descriptions.
    """
    stripped = text.strip()
    shorthand = splitHostPort(stripped)
    if shorthand is not None:
        host, port = shorthand
        return Target(stripped, host=host, port=_port(port, text))
    kind, colon, rest = stripped.partition(":")
    kind = kind.strip().lower()
    if kind in ("tls", "ssl"):
        raise BenchError(
            f"tcpcomm bench measures plain TCP: TLS endpoints such as {text!r}"
            " are not supported"
        )
    usage = " (use HOST:PORT, [IPV6]:PORT, tcp:host=HOST:port=PORT or unix:PATH)"
    if not colon or kind not in ("tcp", "unix"):
        raise BenchError(f"bad endpoint {text!r}{usage}")
    positional, named = _splitDescription(rest)
    timeout = _timeout(named, text)
    if kind == "tcp":
        names = ["host", "port"]
    else:
        names = ["path"]
        named.pop("checkPID", None)
        named.pop("lockfile", None)
    if len(positional) > len(names):
        raise BenchError(f"bad endpoint {text!r}: too many arguments{usage}")
    values = dict(zip(names, positional, strict=False))
    for name in names:
        if name in named:
            if name in values:
                raise BenchError(f"bad endpoint {text!r}: {name} given twice")
            values[name] = named.pop(name)
    if named:
        raise BenchError(
            f"bad endpoint {text!r}: tcpcomm bench does not support"
            f" {', '.join(sorted(named))}"
        )
    missing = [name for name in names if not values.get(name)]
    if missing:
        raise BenchError(f"bad endpoint {text!r}: no {missing[0]}{usage}")
    if kind == "unix":
        return Target(stripped, path=values["path"], timeout=timeout)
    return Target(
        stripped,
        host=values["host"],
        port=_port(values["port"], text),
        timeout=timeout,
    )


# What is sent.

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_ALPHABET = bytes(_ALPHABET[i % 64] for i in range(256))


def defaultPipeline(mode: str, size: int) -> int:
    """
    Lines in flight per connection when C{--pipeline} is not given: 1 for
    C{pingpong}, 16 for C{lines}, L{STREAM_WINDOW} bytes' worth (at least
    4) for C{stream}.
    """
    if mode == "pingpong":
        return 1
    if mode == "lines":
        return 16
    return max(4, -(-STREAM_WINDOW // size))


def minimumSend(mode: str, size: int, pipeline: int) -> int:
    """
    The fewest lines a running connection sends at once: 1, except in
    C{stream} mode, where it waits until it can send L{STREAM_WRITE} bytes
    (or a quarter of its window, if less).
    """
    if mode != "stream":
        return 1
    return max(1, min(pipeline // 4, STREAM_WRITE // size))


def patternLines(size: int, pipeline: int) -> int:
    """
    How many lines the shared pattern block has: at least a window's worth
    (so a window goes out as one slice of it), at least
    L{MIN_PATTERN_BYTES}, at least 4.
    """
    return max(pipeline, -(-MIN_PATTERN_BYTES // size), 4)


def makePattern(size: int, lines: int) -> bytes:
    """
    The block of C{lines} lines of C{size} bytes that connections send over
    and over.

    Each line ends with LF and has no other LF nor CR (line servers treat CR
    before LF specially); the rest is printable ASCII.  It begins with its
    line number in base 64, least significant digit first, as far as the
    line is long enough, and goes on with pseudo-random characters: next
    lines always differ, and all lines differ when C{size - 1} digits can
    number them.  The same arguments always give the same block.

    @raise ValueError: If C{size} is below 2 or C{lines} below 1.
    """
    if size < 2 or lines < 1:
        raise ValueError(f"no pattern of {lines} lines of {size} bytes")
    rng = random.Random(f"tcpcomm bench {size}")
    body = bytearray(rng.randbytes(size * lines).translate(_TO_ALPHABET))
    column, step = 0, 1
    while column < size - 1 and step < lines:
        if step == 1:
            digits = (_ALPHABET * -(-lines // 64))[:lines]
        else:
            digits = b"".join(
                _ALPHABET[k % 64 : k % 64 + 1] * step for k in range(-(-lines // step))
            )[:lines]
        body[column::size] = digits
        column, step = column + 1, step * 64
    body[size - 1 :: size] = b"\n" * lines
    return bytes(body)


DEFAULT_SIZE = 64
"""
C{--size} when not given, except for C{modbus} and C{fixed:N}.
"""

MODBUS_READ_SIZE = 12
"""
The length of a MODBUS TCP read-holding-registers request ADU.
"""

MODBUS_TRANSACTIONS = 65536
"""
How many MODBUS transaction ids there are: the most requests in flight.
"""

_MODBUS_SIZES = "12 (read holding registers) or an odd size from 15 to 259"


def isLineFraming(framing: str) -> bool:
    """
    Whether C{framing} is a C{line} specification, which bench sends as it
    always has: C{size} counts the LF.
    """
    return framing.split(":", 1)[0] == "line"


def defaultSize(framing: str) -> int:
    """
    C{--size} when not given: L{DEFAULT_SIZE}, but a read-holding-registers
    request for C{modbus} and N for C{fixed:N}.

    @raise BenchError: If C{framing} is not a valid specification.
    """
    framer = _framer(framing)
    if isinstance(framer, ModbusFramer):
        return MODBUS_READ_SIZE
    name, _, argument = framing.partition(":")
    if name == "fixed":
        return int(argument)
    return DEFAULT_SIZE


def _framer(framing: str) -> Framer:
    """
    A new framer of C{framing}.

    @raise BenchError: If C{framing} is not a valid specification.
    """
    try:
        return parseFraming(framing)()
    except ValueError as e:
        raise BenchError(str(e)) from None


def modbusRequest(transaction: int, size: int, data: bytes) -> bytes:
    """
    A well-formed MODBUS TCP request ADU of C{size} bytes for unit 1: read
    holding registers (C{size} 12) or write multiple registers (an odd
    C{size} from 15 to 259).

    @param transaction: Its transaction id, 0 to 65535.
    @param data: At least C{size} bytes: the starting address and register
        values are taken from it.
    @raise ValueError: If no request has C{size} bytes.
    """
    if size == MODBUS_READ_SIZE:
        count = 1 + transaction % 125
        pdu = b"".join((b"\x03", data[:2], count.to_bytes(2, "big")))
    elif 15 <= size <= 259 and size % 2:
        count = (size - 13) // 2
        pdu = b"".join(
            (
                b"\x10",
                data[:2],
                count.to_bytes(2, "big"),
                bytes((2 * count,)),
                data[2 : 2 + 2 * count],
            )
        )
    else:
        raise ValueError(f"MODBUS requests are {_MODBUS_SIZES} bytes, not {size}")
    return b"".join(
        (
            transaction.to_bytes(2, "big"),
            b"\x00\x00",
            (1 + len(pdu)).to_bytes(2, "big"),
            b"\x01",
            pdu,
        )
    )


def _avoiding(delimiter: bytes) -> bytes:
    """
    A translation table that replaces each byte of the pattern's alphabet
    found in C{delimiter} with a printable byte found in neither.

    @raise BenchError: If there are not enough such bytes.
    """
    spare = [
        b
        for b in range(0x21, 0x100)
        if b != 0x7F and b not in _ALPHABET and b not in delimiter
    ]
    table = bytearray(range(256))
    for b in set(delimiter) & set(_ALPHABET):
        if not spare:
            raise BenchError(
                f"the delimiter {delimiter.hex()} holds too many bytes"
                " to make payloads without them"
            )
        table[b] = spare.pop(0)
    return bytes(table)


def framedPattern(framing: str, size: int, frames: int) -> bytes:
    """
    The block of C{frames} frames of C{framing} (not C{line}) that
    connections send over and over, each carrying a C{size}-byte payload.

    Payloads are the lines of L{makePattern} without their LF (so next
    payloads differ), with the bytes of a delimiter replaced.  Where the
    payload is the whole frame (C{modbus}, and C{length} with a C{strip}
    below its header) each frame is a well-formed one whose payload has
    C{size} bytes: MODBUS requests (L{modbusRequest}) with distinct
    transaction ids, or a length frame with a correct length field.  Every
    frame has the same length, and a new framer cuts the block back into
    exactly these payloads: that is checked.

    @raise BenchError: If C{framing} is not a valid specification, or a
        C{size}-byte payload cannot be framed by it (over its C{max}, not
        its C{fixed} length, no MODBUS request of that size...).
    """
    framer = _framer(framing)
    payloads = makePattern(size + 1, frames).split(b"\n")[:-1]
    try:
        if isinstance(framer, ModbusFramer):
            block = [
                modbusRequest(i % MODBUS_TRANSACTIONS, size, payload)
                for i, payload in enumerate(payloads)
            ]
            payloads = block
        elif isinstance(framer, LengthFieldFramer) and (
            framer.strip < framer.offset + framer.size
        ):
            header = framer.offset + framer.size
            if size + framer.strip < header:
                raise FramingError(
                    f"a payload of {framing} is at least {header - framer.strip}"
                    " bytes (the frame less the stripped bytes)"
                )
            whole = LengthFieldFramer(
                framer.size,
                framer.offset,
                framer.adjust,
                framer.order,
                None,
                framer.maxLength,
            )
            body = size + framer.strip - header
            block = [whole.encode(payload[:body]) for payload in payloads]
            payloads = [frame[framer.strip :] for frame in block]
        else:
            if isinstance(framer, DelimiterFramer):
                table = _avoiding(framer.delimiter)
                payloads = [payload.translate(table) for payload in payloads]
            block = [framer.encode(payload) for payload in payloads]
        cut = _framer(framing).feed(b"".join(block))
    except (FramingError, ValueError) as e:
        raise BenchError(f"--size {size}: {e}") from None
    if cut != payloads or len({len(frame) for frame in block}) != 1:
        raise BenchError(
            f"--size {size}: a {size}-byte payload is not one {framing!r} frame"
        )
    return b"".join(block)


@lru_cache(maxsize=64)
def frameBytes(framing: str, size: int) -> int:
    """
    The bytes each message takes on the wire: C{size} for C{line}, else the
    length of a frame of C{framing} carrying a C{size}-byte payload.

    @raise BenchError: If C{framing} is not a valid specification, or
        cannot carry C{size}-byte payloads (see L{framedPattern}); for
        C{line}, if C{size} is under 2 or the line over its C{max}.
    """
    if isLineFraming(framing):
        framer = _framer(framing)
        assert isinstance(framer, LineAdapter)
        if size < 2:
            raise BenchError(
                f"--size {size}: a line is at least 2 bytes, its LF included"
            )
        if size - 1 > framer.framer.maxLineLength:
            raise BenchError(
                f"--size {size}: the line is longer than max"
                f" {framer.framer.maxLineLength} bytes"
            )
        return size
    return len(framedPattern(framing, size, 1))


def startOffset(index: int, connections: int, lines: int, size: int) -> int:
    """
    Where in the pattern block connection C{index} (from 0, of
    C{connections}) starts: at a line of its own while there are at least
    as many lines as connections.
    """
    stride = max(1, lines // max(1, connections))
    return (index * stride) % lines * size


def firstDifference(expected: bytes | memoryview, got: bytes | memoryview) -> int:
    """
    The index of the first byte where C{got} differs from C{expected}, or
    the shorter length if one is the start of the other.
    """
    for index, (a, b) in enumerate(zip(bytes(expected), bytes(got), strict=False)):
        if a != b:
            return index
    return min(len(expected), len(got))


def _quoteErrorLine(received: memoryview) -> str:
    """
    If C{received} starts with a line server's C{ERROR} line (a line over
    its limit, too many connections), C{"; the server answered '…'"}
    quoting it, for the error message; else C{""}.
    """
    if received[:6].tobytes() != b"ERROR ":
        return ""
    text = bytes(received[:200]).split(b"\n", 1)[0].rstrip(b"\r")
    return f"; the server answered {text.decode('ascii', 'backslashreplace')!r}"


def splitConnections(connections: int, processes: int) -> list[tuple[int, int]]:
    """
    Split C{connections} as evenly as can be among C{processes}: a
    C{(first index, count)} for each.
    """
    base, extra = divmod(connections, processes)
    shares = []
    first = 0
    for k in range(processes):
        count = base + (k < extra)
        shares.append((first, count))
        first += count
    return shares


# Latency histogram: log-linear buckets, 32 per power of two (within 1.6 %).


def latencyBucket(nanoseconds: int) -> int:
    """
    The histogram bucket of a latency: exact below 64 ns, then 32 buckets
    per power of two.  The hot loop inlines this.
    """
    if nanoseconds < 64:
        return nanoseconds
    shift = nanoseconds.bit_length() - 6
    return (shift << 5) + (nanoseconds >> shift)


def bucketMidpoint(bucket: int) -> float:
    """
    The latency in nanoseconds that stands for the values of C{bucket}:
    the middle of the range it holds.
    """
    if bucket < 64:
        return float(bucket)
    shift = (bucket >> 5) - 1
    low = (32 + (bucket & 31)) << shift
    return low + ((1 << shift) - 1) / 2


def percentile(histogram: Sequence[int], fraction: float) -> float:
    """
    The latency, in nanoseconds, below or at which C{fraction} of the
    counted ones lie (the nearest-rank method on the bucket midpoints), or
    0.0 for an empty histogram.
    """
    total = sum(histogram)
    if not total:
        return 0.0
    rank = max(1, -(-int(fraction * total * 1_000_000) // 1_000_000))
    seen = 0
    for bucket, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return bucketMidpoint(bucket)
    return bucketMidpoint(len(histogram) - 1)


# Configuration and results.


@dataclass(frozen=True)
class BenchConfig:
    """
    One benchmark run.

    @ivar size: Bytes per line, its LF included; with another C{framing},
        payload bytes per frame.
    @ivar pipeline: Lines (frames) in flight per connection; C{None} for the
        mode's default (L{defaultPipeline}).
    @ivar framing: What each message is: a framing specification, as
        L{tcpcomm.framers.parseFraming} takes (C{line} by default).
    """

    endpoint: str
    mode: str
    connections: int = 100
    size: int = DEFAULT_SIZE
    pipeline: int | None = None
    duration: float = 5.0
    warmup: float = 1.0
    processes: int = 1
    framing: str = "line"

    @property
    def frameBytes(self) -> int:
        """
        Bytes per message on the wire (L{frameBytes}).

        @raise BenchError: If the framing cannot carry C{size}-byte
            payloads.
        """
        return frameBytes(self.framing, self.size)

    @property
    def window(self) -> int:
        """
        Lines (frames) in flight per connection.
        """
        if self.pipeline is not None:
            return self.pipeline
        return defaultPipeline(self.mode, self.frameBytes)


@dataclass(frozen=True)
class Progress:
    """
    A report, about once a second, of how a run goes.

    @ivar phase: C{"warm-up"}, C{"measuring"} or C{"finishing"}.
    @ivar elapsed: Seconds into the phase.
    @ivar messagesPerSecond: Lines echoed per second over the last report.
    @ivar bytesPerSecond: Bytes echoed per second over the last report.
    """

    phase: str
    elapsed: float
    messagesPerSecond: float
    bytesPerSecond: float


@dataclass(frozen=True)
class WorkerResult:
    """
    What one process measured.

    @ivar messages: Lines echoed in the measured time.
    @ivar bytes: Bytes echoed in the measured time.
    @ivar seconds: The measured time.
    @ivar cpuSeconds: The process's user and system CPU time in it.
    @ivar histogram: Counts of line latencies, by L{latencyBucket}.
    """

    messages: int
    bytes: int
    seconds: float
    cpuSeconds: float
    histogram: tuple[int, ...]

    def toJSON(self) -> dict[str, Any]:
        """
        This result as JSON-friendly data (the histogram sparse).
        """
        return {
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "cpuSeconds": self.cpuSeconds,
            "histogram": {str(i): n for i, n in enumerate(self.histogram) if n},
        }

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> WorkerResult:
        """
        The inverse of L{toJSON}.
        """
        histogram = [0] * HISTOGRAM_BUCKETS
        for index, count in data["histogram"].items():
            histogram[int(index)] = int(count)
        return cls(
            int(data["messages"]),
            int(data["bytes"]),
            float(data["seconds"]),
            float(data["cpuSeconds"]),
            tuple(histogram),
        )


@dataclass(frozen=True)
class BenchResult:
    """
    The results of all processes, added up.

    @ivar seconds: The measured time (the longest of the processes').
    @ivar messagesPerSecond: The sum of each process's rate.
    @ivar bytesPerSecond: Likewise, one direction.
    @ivar latency: p50, p90 and p99 line latency in microseconds, from the
        merged histograms.
    @ivar cpuPercent: The processes' CPU time over their measured time,
        added up, in percent of one core.
    """

    messages: int
    seconds: float
    messagesPerSecond: float
    bytesPerSecond: float
    latency: tuple[float, float, float]
    cpuPercent: float


def combineResults(results: Sequence[WorkerResult]) -> BenchResult:
    """
    Add up what several processes measured at the same time: counts and
    rates are summed, histograms merged before taking percentiles, CPU use
    summed.
    """
    histogram = [
        sum(counts) for counts in zip(*(r.histogram for r in results), strict=True)
    ]
    latency = tuple(percentile(histogram, q) / 1000 for q in (0.5, 0.9, 0.99))
    assert len(latency) == 3
    return BenchResult(
        messages=sum(r.messages for r in results),
        seconds=max((r.seconds for r in results), default=0.0),
        messagesPerSecond=sum(r.messages / r.seconds for r in results if r.seconds),
        bytesPerSecond=sum(r.bytes / r.seconds for r in results if r.seconds),
        latency=(latency[0], latency[1], latency[2]),
        cpuPercent=100 * sum(r.cpuSeconds / r.seconds for r in results if r.seconds),
    )


# The generator.


class _Poller(Protocol):
    def register(self, fd: int, eventmask: int = ...) -> None: ...

    def modify(self, fd: int, eventmask: int) -> None: ...

    def poll(
        self, timeout: float | None = ..., maxevents: int = ...
    ) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...


class _SelectorPoller:
    """
    The L{_Poller} where there is no epoll: a L{selectors} selector that
    reports events with epoll's bits.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    @staticmethod
    def _events(eventmask: int) -> int:
        events = selectors.EVENT_READ
        if eventmask & _OUT:
            events |= selectors.EVENT_WRITE
        return events

    def register(self, fd: int, eventmask: int = _IN) -> None:
        self._selector.register(fd, self._events(eventmask))

    def modify(self, fd: int, eventmask: int) -> None:
        self._selector.modify(fd, self._events(eventmask))

    def poll(
        self, timeout: float | None = None, maxevents: int = -1
    ) -> list[tuple[int, int]]:
        return [
            (
                key.fd,
                (_IN if events & selectors.EVENT_READ else 0)
                | (_OUT if events & selectors.EVENT_WRITE else 0),
            )
            for key, events in self._selector.select(timeout)
        ]

    def close(self) -> None:
        self._selector.close()


def _makePoller() -> _Poller:
    if hasattr(select, "epoll"):
        poller: _Poller = select.epoll()
        return poller
    return _SelectorPoller()


class _Connection:
    """
    One connection's state.  Offsets count bytes of its stream from 0.

    @ivar received: Bytes echoed and verified.
    @ivar sent: Bytes sent.
    @ivar target: Bytes it has been told to send (always whole lines).
    @ivar rpos: Where in the pattern block the next byte received belongs.
    @ivar spos: Where in the pattern block the next byte to send is.
    @ivar batches: C{(lines sent, perf_counter_ns)} after each send that
        finished lines, oldest first, until those lines come back.
    @ivar writing: Whether it waits for the socket to take more.
    """

    __slots__ = (
        "batches",
        "checkedAt",
        "checkedReceived",
        "fd",
        "index",
        "received",
        "recvInto",
        "rpos",
        "send",
        "sent",
        "sock",
        "spos",
        "target",
        "writing",
    )

    def __init__(self, index: int, sock: socket.socket, offset: int) -> None:
        self.index = index
        self.sock = sock
        self.fd = sock.fileno()
        self.recvInto = sock.recv_into
        self.send = sock.send
        self.received = 0
        self.sent = 0
        self.target = 0
        self.rpos = offset
        self.spos = offset
        self.batches: deque[tuple[int, int]] = deque()
        self.writing = False
        self.checkedReceived = 0
        self.checkedAt = 0

    @property
    def name(self) -> str:
        """
        How messages name it: C{connection #N}, counting from 1.
        """
        return f"connection #{self.index + 1}"


def _raiseFileLimit(needed: int) -> None:
    """
    Raise the soft limit on open files to fit C{needed}, if it is lower.

    @raise BenchError: If the hard limit is too low.
    """
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(
            f"{needed} open files are needed but the hard limit is {hard}"
            " (ulimit -Hn): use fewer connections or more --processes"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _describeError(error: OSError, where: str) -> str:
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(error, ConnectionResetError | ConnectionAbortedError):
        return f"connection reset by {where}"
    if isinstance(error, BrokenPipeError):
        return f"connection closed by {where} (broken pipe)"
    reason = error.strerror or str(error)
    return f"{reason} ({where})"


class _Generator:
    """
    The load of one process: C{count} connections from global index
    C{first} of C{config.connections}.
    """

    def __init__(
        self, config: BenchConfig, target: Target, first: int, count: int
    ) -> None:
        self.config = config
        self.target = target
        self.first = first
        self.count = count
        # Every message, line or frame, is this many bytes on the wire.
        self.size = config.frameBytes
        self.pipeline = config.window
        self.window = self.pipeline * self.size
        self.minimumSend = minimumSend(config.mode, self.size, self.pipeline) * (
            self.size
        )
        lines = patternLines(self.size, self.pipeline)
        self.blockBytes = lines * self.size
        self.framed = not isLineFraming(config.framing)
        if self.framed:
            self.pattern = framedPattern(config.framing, config.size, lines)
        else:
            self.pattern = makePattern(self.size, lines)
        self.doubled = self.pattern + self.pattern
        self.lines = lines
        self.connections: list[_Connection] = []
        self.poller: _Poller | None = None

    # Connecting.

    def connect(self) -> None:
        """
        Open every connection, in batches of L{CONNECT_BATCH}.

        @raise BenchError: If one is refused, fails, or they take longer
            than the endpoint's timeout.
        """
        _raiseFileLimit(self.count + 64)
        deadline = time.monotonic() + self.target.timeout
        candidates = self.target.addresses()
        address: tuple[int, Any] | None = None
        lastError: BenchError | None = None
        # The first connection tries each address; the others use the one
        # that worked.
        for candidate in candidates:
            try:
                self._openBatch(candidate, self.first, 1, deadline)
            except BenchError as e:
                lastError = e
                continue
            address = candidate
            break
        if address is None:
            assert lastError is not None
            raise lastError
        opened = 1
        while opened < self.count:
            batch = min(CONNECT_BATCH, self.count - opened)
            self._openBatch(address, self.first + opened, batch, deadline)
            opened += batch
        poller = self.poller = _makePoller()
        for connection in self.connections:
            poller.register(connection.fd, _IN)

    def _openBatch(
        self, address: tuple[int, Any], first: int, count: int, deadline: float
    ) -> None:
        family, sockaddr = address
        where = self.target.display
        waiting: dict[int, _Connection] = {}
        with selectors.DefaultSelector() as selector:
            for index in range(first, first + count):
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError as e:
                    raise BenchError(
                        f"connection #{index + 1}: cannot make a socket:"
                        f" {e.strerror or e}"
                    ) from None
                offset = startOffset(
                    index, self.config.connections, self.lines, self.size
                )
                connection = _Connection(index, sock, offset)
                self.connections.append(connection)
                if family == socket.AF_UNIX:
                    # A UNIX socket's non-blocking connect fails (EAGAIN)
                    # instead of waiting while the backlog is full.
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                else:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    status = sock.connect_ex(sockaddr)
                except OSError as e:
                    status = e.errno or errno.EIO
                sock.setblocking(False)
                if status not in (0, errno.EINPROGRESS):
                    self._connectFailed(connection, status)
                waiting[connection.fd] = connection
                selector.register(sock, selectors.EVENT_WRITE)
            while waiting:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    opened = len(self.connections) - len(waiting)
                    raise BenchError(
                        f"timed out after {self.target.timeout:g} s connecting to"
                        f" {where} ({opened} of {self.count} connections open)"
                    )
                for key, _ in selector.select(timeout):
                    connection = waiting.pop(key.fd)
                    selector.unregister(key.fileobj)
                    status = connection.sock.getsockopt(
                        socket.SOL_SOCKET, socket.SO_ERROR
                    )
                    if status:
                        self._connectFailed(connection, status)

    def _connectFailed(self, connection: _Connection, status: int) -> None:
        where = self.target.display
        if status == errno.ECONNREFUSED:
            problem = f"connection refused by {where}"
        else:
            problem = f"cannot connect to {where}: {os.strerror(status)}"
        if self.config.connections > 1:
            problem += f" ({connection.name} of {self.config.connections})"
        raise BenchError(problem)

    def close(self) -> None:
        """
        Close every connection (and the poller).
        """
        if self.poller is not None:
            self.poller.close()
            self.poller = None
        for connection in self.connections:
            connection.sock.close()

    # Failures, worded.

    def _lost(self, connection: _Connection, error: OSError) -> BenchError:
        return BenchError(
            f"{connection.name}: {_describeError(error, self.target.display)}"
            f" at offset {connection.received}"
        )

    def _closed(self, connection: _Connection) -> BenchError:
        missing = connection.sent - connection.received
        return BenchError(
            f"{connection.name}: the server closed the connection early, at"
            f" offset {connection.received} ({missing} bytes sent not echoed)"
        )

    def _mismatch(self, connection: _Connection, got: memoryview) -> BenchError:
        expected = self.doubled[connection.rpos : connection.rpos + len(got)]
        index = firstDifference(expected, got)
        offset = connection.received + index
        line, column = divmod(offset, self.size)
        if self.framed:
            # The frame's bytes before the difference matched what was sent.
            start = (connection.rpos + index - column) % self.blockBytes
            sent = self.doubled[start : start + column]
            detail = self._describeFrame(sent + bytes(got[index:]), line)
            unit = "frame"
        else:
            detail = _quoteErrorLine(got[index - min(index, column) :])
            unit = "line"
        return BenchError(
            f"{connection.name}: the echo differs from what was sent at offset"
            f" {offset} ({unit} {line + 1}, byte {column + 1} of {self.size}):"
            f" expected {bytes(expected[index : index + 1])!r},"
            f" got {bytes(got[index : index + 1])!r}" + detail
        )

    def _describeFrame(self, received: bytes, number: int) -> str:
        """
        What a new framer makes of C{received}, the bytes the server sent
        from the start of frame C{number} (from 0) on, for the error message.
        """
        framing = self.config.framing
        try:
            frames = _framer(framing).feed(received)
        except FramingError as e:
            return f"; the server sent a bad {framing} frame: {e.reason}"
        if not frames:
            return ""
        got, sent = len(frames[0]), self.config.size
        if got == sent:
            return f"; the server's frame {number + 1} carries another payload"
        return (
            f"; the server's frame {number + 1} carries a {got}-byte payload,"
            f" not {sent} bytes"
        )

    def _extra(self, connection: _Connection, received: int) -> BenchError:
        return BenchError(
            f"{connection.name}: the server sent {received - connection.sent}"
            f" bytes more than it was sent, at offset {connection.sent}"
        )

    # Running.

    def _totals(self) -> tuple[int, int]:
        size = self.size
        received = [connection.received for connection in self.connections]
        return sum(received), sum(r // size for r in received)

    def run(
        self,
        progress: Callable[[Progress], None] | None = None,
        stall: float = GRACE,
    ) -> WorkerResult:
        """
        Warm up, measure, then stop sending and wait for every byte sent to
        come back verified.

        @param progress: Called about once a second.
        @param stall: Seconds any connection may wait for an echo (the server
            has at most L{FINISH_LIMIT}, or this if longer, to echo what is
            in flight at the end).
        @raise BenchError: At the first problem.
        """
        assert self.poller is not None
        poll = self.poller.poll
        modify = self.poller.modify
        config = self.config
        size = self.size
        window = self.window
        minimumSend = self.minimumSend
        blockBytes = self.blockBytes
        startswith = self.doubled.startswith
        patternView = memoryview(self.doubled)
        receiveSize = min(self.window, blockBytes)
        buffer = bytearray(receiveSize)
        view = memoryview(buffer)
        now = time.perf_counter_ns
        histogram = [0] * HISTOGRAM_BUCKETS
        byFd: list[Any] = [None] * (1 + max(c.fd for c in self.connections))
        for connection in self.connections:
            byFd[connection.fd] = connection
        readable = _IN | _ERR | _HUP
        second = 1_000_000_000
        stallNs = int(stall * second)
        # Often enough to notice a stall within half the stall time.
        tick = min(second, stallNs // 2)

        def write(c: _Connection, t: int) -> None:
            """
            Send what C{c} has to, as far as its socket takes it.
            """
            try:
                n = c.send(patternView[c.spos : c.spos + c.target - c.sent])
            except BlockingIOError:
                n = 0
            except OSError as e:
                raise self._lost(c, e) from None
            wrote(c, n, t)

        def wrote(c: _Connection, n: int, t: int) -> None:
            """
            Account for C{n} bytes just sent on C{c}, and wait for its
            socket to take the rest, if any.
            """
            if n:
                sent = c.sent
                c.sent = sent + n
                spos = c.spos + n
                if spos >= blockBytes:
                    spos -= blockBytes
                c.spos = spos
                finished = (sent + n) // size
                if finished != sent // size:
                    c.batches.append((finished, t))
            if c.sent < c.target:
                if not c.writing:
                    modify(c.fd, _IN | _OUT)
                    c.writing = True
            elif c.writing:
                modify(c.fd, _IN)
                c.writing = False

        start = now()
        warmupEnd = start + int(config.warmup * second)
        measureEnd = warmupEnd + int(config.duration * second)
        deadline = measureEnd + int(max(stall, FINISH_LIMIT) * second)
        phase = "warm-up"
        phaseStart = start
        sending = True
        unfinished = len(self.connections)
        lastTick = start
        nextTick = min(start + second, warmupEnd)
        lastBytes = 0
        snapshot: tuple[int, int, int, float] = (start, 0, 0, 0.0)
        result: WorkerResult | None = None

        for c in self.connections:
            c.target = window
            c.checkedAt = start
            write(c, start)

        while True:
            t = now()
            if t >= nextTick:
                # Progress, phases, stalls: at most about once a second.
                totalBytes, totalLines = self._totals()
                if progress is not None and t - lastTick >= second // 2:
                    interval = (t - lastTick) / second
                    progress(
                        Progress(
                            phase,
                            (t - phaseStart) / second,
                            (totalBytes - lastBytes) / size / interval,
                            (totalBytes - lastBytes) / interval,
                        )
                    )
                    lastTick, lastBytes = t, totalBytes
                if phase == "warm-up" and t >= warmupEnd:
                    # User and system time, to the nanosecond (os.times
                    # counts clock ticks).
                    snapshot = (t, totalBytes, totalLines, time.process_time())
                    histogram[:] = [0] * HISTOGRAM_BUCKETS
                    phase, phaseStart = "measuring", t
                elif phase == "measuring" and t >= measureEnd:
                    started, startBytes, startLines, cpu = snapshot
                    result = WorkerResult(
                        messages=totalLines - startLines,
                        bytes=totalBytes - startBytes,
                        seconds=(t - started) / second,
                        cpuSeconds=time.process_time() - cpu,
                        histogram=tuple(histogram),
                    )
                    phase, phaseStart = "finishing", t
                    sending = False
                    unfinished = sum(
                        1 for c in self.connections if c.received < c.target
                    )
                    if not unfinished:
                        return result
                for c in self.connections:
                    if c.received != c.checkedReceived:
                        c.checkedReceived, c.checkedAt = c.received, t
                    elif c.received < c.target and t - c.checkedAt > stallNs:
                        raise BenchError(
                            f"{c.name}: no echo for {stall:g} s, at offset"
                            f" {c.received} ({c.sent - c.received} bytes sent"
                            " not echoed): the server stopped answering"
                        )
                if phase == "finishing" and t >= deadline:
                    late = next(c for c in self.connections if c.received < c.target)
                    raise BenchError(
                        f"{late.name}: {late.target - late.received} bytes not"
                        f" echoed {(t - measureEnd) / second:.0f} s after the end,"
                        f" at offset {late.received}"
                    )
                nextTick = t + tick
                if phase == "warm-up":
                    nextTick = min(nextTick, warmupEnd)
                elif phase == "measuring":
                    nextTick = min(nextTick, measureEnd)
                else:
                    nextTick = min(nextTick, deadline)
                continue
            for fd, events in poll((nextTick - t) / second):
                c = byFd[fd]
                if events & readable:
                    try:
                        n = c.recvInto(buffer, receiveSize)
                    except BlockingIOError:
                        n = -1
                    except OSError as e:
                        raise self._lost(c, e) from None
                    if n > 0:
                        received = c.received + n
                        if received > c.sent:
                            raise self._extra(c, received)
                        rpos = c.rpos
                        if not startswith(
                            buffer if n == receiveSize else view[:n], rpos
                        ):
                            raise self._mismatch(c, view[:n])
                        rpos += n
                        if rpos >= blockBytes:
                            rpos -= blockBytes
                        c.rpos = rpos
                        before = c.received // size
                        c.received = received
                        done = received // size
                        if done != before:
                            t = now()
                            batches = c.batches
                            while before < done:
                                end, sentAt = batches[0]
                                if end <= done:
                                    batches.popleft()
                                else:
                                    end = done
                                latency = t - sentAt
                                if latency < 64:
                                    histogram[latency] += end - before
                                else:
                                    shift = latency.bit_length() - 6
                                    histogram[(shift << 5) + (latency >> shift)] += (
                                        end - before
                                    )
                                before = end
                            if sending:
                                # Only a send under way is promised more;
                                # otherwise the target is what was sent.
                                target = done * size + window
                                if c.writing:
                                    c.target = target
                                elif target - c.sent >= minimumSend:
                                    # write(c, t), inlined for the usual case.
                                    c.target = target
                                    sent = c.sent
                                    spos = c.spos
                                    try:
                                        n = c.send(
                                            patternView[spos : spos + target - sent]
                                        )
                                    except BlockingIOError:
                                        n = 0
                                    except OSError as e:
                                        raise self._lost(c, e) from None
                                    if n == target - sent:
                                        c.sent = target
                                        spos += n
                                        if spos >= blockBytes:
                                            spos -= blockBytes
                                        c.spos = spos
                                        batches.append((target // size, t))
                                    else:
                                        wrote(c, n, t)
                        if not sending and received == c.target:
                            unfinished -= 1
                            if not unfinished:
                                assert result is not None
                                return result
                    elif n == 0:
                        raise self._closed(c)
                if events & _OUT:
                    write(c, now())


def _connectAndRun(
    config: BenchConfig,
    target: Target,
    first: int,
    count: int,
    progress: Callable[[Progress], None] | None,
    ready: Callable[[], None] | None = None,
    stall: float = GRACE,
) -> WorkerResult:
    generator = _Generator(config, target, first, count)
    try:
        generator.connect()
        if ready is not None:
            ready()
        # Nothing made in the loop lives long: spare it the collector.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return generator.run(progress, stall)
        finally:
            if collecting:
                gc.enable()
    finally:
        generator.close()


# Several processes.

_WORKER_CODE = (
    "import sys; from tcpcomm.bench import workerMain; sys.exit(workerMain())"
)


def workerMain() -> int:
    """
    A worker process of C{tcpcomm bench --processes N}: read its job (one
    JSON line) on standard input, open its connections, say
    C{{"event": "ready"}}, wait for a C{go} line, run, and report on
    standard output, one JSON object per line: C{progress} about once a
    second, then C{result} or C{error}.
    """
    stdout = sys.stdout

    def emit(event: str, **data: Any) -> None:
        stdout.write(json.dumps({"event": event, **data}) + "\n")
        stdout.flush()

    try:
        job = json.loads(sys.stdin.readline())
        config = BenchConfig(**job["config"])
        target = parseEndpoint(config.endpoint)

        def ready() -> None:
            emit("ready")
            if sys.stdin.readline().strip() != "go":
                raise SystemExit(1)

        result = _connectAndRun(
            config,
            target,
            job["first"],
            job["count"],
            lambda p: emit("progress", **p.__dict__),
            ready,
            float(job.get("stall", GRACE)),
        )
        emit("result", result=result.toJSON())
    except BenchError as e:
        emit("error", message=str(e))
        return 1
    except (KeyboardInterrupt, BrokenPipeError):
        return 1
    return 0


class _Worker:
    """
    The parent's side of one worker process.
    """

    def __init__(self, number: int, process: subprocess.Popen[bytes], log: IO[bytes]):
        self.number = number
        self.process = process
        self.log = log
        self.pending = b""
        self.ready = False
        self.progress: Progress | None = None
        self.result: WorkerResult | None = None
        self.error: str | None = None
        self.ended = False

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line.encode("utf-8") + b"\n")
            self.process.stdin.flush()
        except OSError:
            pass  # It has ended; its output says why.

    def errorOutput(self) -> str:
        self.log.seek(0)
        lines = self.log.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.log.close()


def _packagePath() -> str:
    """
    The directory that holds this C{tcpcomm} package, for the workers'
    C{PYTHONPATH}, so they run the same code.
    """
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _runWorkers(
    config: BenchConfig,
    progress: Callable[[Progress], None] | None,
    stall: float,
) -> tuple[list[WorkerResult], list[str]]:
    """
    Run C{config.processes} workers, each with its share of connections.

    @return: Their results, and the errors they reported.
    """
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (_packagePath(), environment.get("PYTHONPATH")) if p
    )
    workers: list[_Worker] = []
    try:
        for number, (first, count) in enumerate(
            splitConnections(config.connections, config.processes)
        ):
            log = tempfile.TemporaryFile()
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=environment,
            )
            worker = _Worker(number, process, log)
            workers.append(worker)
            job = {
                "config": config.__dict__,
                "first": first,
                "count": count,
                "stall": stall,
            }
            worker.tell(json.dumps(job))
        return _superviseWorkers(config, workers, progress, stall)
    finally:
        for worker in workers:
            worker.stop()


def _superviseWorkers(
    config: BenchConfig,
    workers: list[_Worker],
    progress: Callable[[Progress], None] | None,
    stall: float,
) -> tuple[list[WorkerResult], list[str]]:
    startBy = time.monotonic() + 15.0 + parseEndpoint(config.endpoint).timeout
    deadline = startBy
    started = False
    lastProgress = 0.0
    byFd: dict[int, _Worker] = {}
    with selectors.DefaultSelector() as selector:
        for worker in workers:
            assert worker.process.stdout is not None
            fd = worker.process.stdout.fileno()
            byFd[fd] = worker
            selector.register(fd, selectors.EVENT_READ)
        while not all(w.ended for w in workers):
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                late = [w for w in workers if not w.ended]
                doing = "running" if started else "connecting"
                raise BenchError(
                    f"load-generator process {late[0].number + 1} was still"
                    f" {doing} at its deadline"
                )
            for key, _ in selector.select(timeout):
                worker = byFd[key.fd]
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    worker.ended = True
                    if worker.result is None and worker.error is None:
                        worker.process.wait(5)
                        worker.error = (
                            f"load-generator process {worker.number + 1} exited"
                            f" with status {worker.process.returncode}:"
                            f" {worker.errorOutput()}"
                        )
                    continue
                worker.pending += chunk
                *lines, worker.pending = worker.pending.split(b"\n")
                for line in lines:
                    try:
                        report = json.loads(line)
                    except ValueError:
                        continue  # Not ours: whatever else wrote to stdout.
                    if isinstance(report, dict):
                        _handleReport(worker, report)
            if any(w.error for w in workers):
                break
            if not started and all(w.ready for w in workers):
                started = True
                for worker in workers:
                    worker.tell("go")
                deadline = (
                    time.monotonic()
                    + config.warmup
                    + config.duration
                    + max(stall, FINISH_LIMIT)
                    + 15.0
                )
            reports = [w.progress for w in workers if w.progress is not None]
            if (
                progress is not None
                and reports
                and time.monotonic() - lastProgress > 0.9
            ):
                lastProgress = time.monotonic()
                progress(
                    Progress(
                        reports[0].phase,
                        reports[0].elapsed,
                        sum(p.messagesPerSecond for p in reports),
                        sum(p.bytesPerSecond for p in reports),
                    )
                )
    results = [w.result for w in workers if w.result is not None]
    errors = [w.error for w in workers if w.error is not None]
    return results, errors


def _handleReport(worker: _Worker, report: dict[str, Any]) -> None:
    event = report.pop("event")
    if event == "ready":
        worker.ready = True
    elif event == "progress":
        worker.progress = Progress(**report)
    elif event == "result":
        worker.result = WorkerResult.fromJSON(report["result"])
    elif event == "error":
        worker.error = str(report["message"])


def runBench(
    config: BenchConfig,
    progress: Callable[[Progress], None] | None = None,
    stall: float = GRACE,
) -> BenchResult:
    """
    Run a benchmark: in this process, or split across C{config.processes}
    worker processes.

    @param progress: Called about once a second with how it goes.
    @param stall: Seconds a connection may go without an echo while it
        waits for one (L{GRACE}).
    @raise BenchError: At the first problem, with a one-line message; with
        several processes, the first process's problem, its C{errors}
        attribute the number of processes that failed.
    """
    target = parseEndpoint(config.endpoint)
    # Refuse a bad framing or size before connecting.
    frameBytes(config.framing, config.size)
    if config.processes == 1:
        result = _connectAndRun(
            config, target, 0, config.connections, progress, None, stall
        )
        return combineResults([result])
    results, errors = _runWorkers(config, progress, stall)
    if errors:
        raise BenchError(errors[0], len(errors))
    return combineResults(results)


# The command.


def _formatLatency(microseconds: float, unit: str) -> str:
    if microseconds >= 1000:
        return f"{microseconds / 1000:.2f} ms"
    return f"{microseconds:.1f} {unit}"


def _formatBytes(count: int) -> str:
    """
    C{count} bytes as people write them: C{64 KiB}, C{1 MiB}, C{100 bytes}.
    """
    for name, unit in (("MiB", MiB), ("KiB", KiB)):
        if count >= unit and count % unit == 0:
            return f"{count // unit} {name}"
    return f"{count:,} bytes"


def streamWrite(config: BenchConfig) -> int:
    """
    C{stream} mode: the bytes a connection writes at once, once running
    (L{STREAM_WRITE}, or a quarter of the window if less, in whole lines).
    """
    frame = config.frameBytes
    return minimumSend(config.mode, frame, config.window) * frame


def _summary(config: BenchConfig, result: BenchResult, unit: str) -> str:
    processes = f"{config.processes} process" + ("es" if config.processes > 1 else "")
    p50, p90, p99 = (_formatLatency(v, unit) for v in result.latency)
    frame = config.frameBytes
    if isLineFraming(config.framing):
        messages = f"{config.size}-byte lines"
    elif frame == config.size:
        # The payload is the whole frame (modbus, length with strip=0).
        messages = f"{frame}-byte {config.framing} frames"
    else:
        messages = (
            f"{frame}-byte {config.framing} frames of {config.size}-byte payloads"
        )
    if config.mode == "stream":
        # A stream of lines, written in large chunks: what it measures is
        # bytes per second; lines per second would only restate it.
        load = (
            f"{_formatBytes(streamWrite(config))} writes of {messages},"
            f" {_formatBytes(config.window * frame)} in flight each"
        )
        counts = (
            f"  traffic    {result.bytesPerSecond / 1e6:,.1f} MB/s each way"
            f" ({result.messages * frame / 1e6:,.1f} MB echoed)\n"
        )
    else:
        load = f"{messages}, {config.window} in flight each"
        counts = (
            f"  messages   {result.messagesPerSecond:,.0f}/s"
            f" ({result.messages:,} in all)\n"
            f"  traffic    {result.bytesPerSecond / 1e6:,.1f} MB/s each way\n"
        )
    return (
        f"tcpcomm bench {config.mode} to {config.endpoint}:"
        f" {config.connections} connections, {load}, {processes}\n"
        f"  measured   {result.seconds:.2f} s after {config.warmup:g} s of"
        " warm-up; every byte echoed and verified\n"
        f"{counts}"
        f"  latency    p50 {p50}, p90 {p90}, p99 {p99}\n"
        f"  generator  {result.cpuPercent:.0f}% of one core (user+sys),"
        f" {processes}\n"
    )


def _jsonReport(
    config: BenchConfig, result: BenchResult | None, errors: int
) -> dict[str, Any]:
    if result is None:
        result = BenchResult(0, 0.0, 0.0, 0.0, (0.0, 0.0, 0.0), 0.0)
    p50, p90, p99 = result.latency
    stream = config.mode == "stream"
    frame: int | None
    window: int | None
    try:
        frame, window = config.frameBytes, config.window
        inFlight: int | None = window * frame
        write = streamWrite(config) if stream else None
    except BenchError:
        # The framing cannot carry the size: nothing was sent.
        frame, window, inFlight, write = None, config.pipeline, None, None
    return {
        "mode": config.mode,
        "endpoint": config.endpoint,
        "connections": config.connections,
        "framing": config.framing,
        "size": config.size,
        "frame_bytes": frame,
        "pipeline": window,
        "in_flight_bytes": inFlight,
        "write_bytes": write,
        "metric": "bytes_per_s" if stream else "messages_per_s",
        "duration": round(result.seconds, 6),
        "processes": config.processes,
        "messages": result.messages,
        "messages_per_s": round(result.messagesPerSecond, 1),
        "bytes_per_s": round(result.bytesPerSecond, 1),
        "latency_us": {
            "p50": round(p50, 1),
            "p90": round(p90, 1),
            "p99": round(p99, 1),
        },
        "cpu_percent": round(result.cpuPercent, 1),
        "errors": errors,
        "verified": errors == 0,
    }


class _ProgressLine:
    """
    The live progress line on a terminal's standard error.
    """

    def __init__(
        self,
        stream: IO[str],
        duration: float,
        lines: bool = True,
        unit: str = "lines",
    ) -> None:
        """
        @param lines: Whether to show the rate of messages.
        @param unit: What the messages are called: C{lines} or C{frames}.
        """
        self.stream = stream
        self.duration = duration
        self.lines = lines
        self.unit = unit
        self.shown = False

    def __call__(self, progress: Progress) -> None:
        length = f"/{self.duration:g}" if progress.phase == "measuring" else ""
        rate = (
            f" {progress.messagesPerSecond:,.0f} {self.unit}/s," if self.lines else ""
        )
        self.stream.write(
            f"\r\x1b[K{progress.phase} {progress.elapsed:.1f}{length} s:{rate}"
            f" {progress.bytesPerSecond / 1e6:,.1f} MB/s each way"
        )
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def runCommand(
    config: BenchConfig,
    *,
    asJSON: bool = False,
    quiet: bool = False,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    prog: str = "tcpcomm",
) -> int:
    """
    C{tcpcomm bench}: run C{config}, report, and return the exit status: 0
    when every byte came back verified, 1 (with one error line on
    C{stderr}) otherwise.  With C{asJSON}, exactly one JSON object goes to
    C{stdout}, failed or not.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    line: _ProgressLine | None = None
    if not quiet and err.isatty():
        line = _ProgressLine(
            err,
            config.duration,
            config.mode != "stream",
            "lines" if isLineFraming(config.framing) else "frames",
        )
    result: BenchResult | None = None
    problem: str | None = None
    errors = 0
    status = 1
    try:
        result = runBench(config, line)
    except BenchError as e:
        problem, errors = str(e), e.errors
    except KeyboardInterrupt:
        problem, errors, status = "interrupted", 1, INTERRUPTED
    except OSError as e:
        problem, errors = _describeError(e, config.endpoint), 1
    if line is not None:
        line.clear()
    if asJSON:
        out.write(json.dumps(_jsonReport(config, result, errors)) + "\n")
    elif result is not None:
        unit = "µs"
        try:
            unit.encode(getattr(out, "encoding", None) or "ascii")
        except (UnicodeError, LookupError):
            unit = "us"
        out.write(_summary(config, result, unit))
    out.flush()
    if problem is not None:
        err.write(f"{prog}: error: {problem}\n")
        err.flush()
        return status
    return 0
