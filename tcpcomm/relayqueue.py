# -*- test-case-name: tests.test_relay -*-
"""
The relay's bookkeeping, with no Twisted and no I/O.

L{RelayQueue} decides, for a line or a read's lines at once, whether a
line goes upstream now, waits, or is refused, and keeps waiting lines in
order; L{addressTag}, L{tagLine} and L{untagLine} put a sender's address on
a line and take it off again, and L{groupByTag} sorts a read's lines from
the upstream by their tags; L{LogThrottle} keeps a repeated warning from
flooding the log.  L{tcpcomm.relay} does the networking.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass

__all__ = [
    "Disposition",
    "LogThrottle",
    "RelayQueue",
    "RelayStats",
    "addressTag",
    "groupByTag",
    "tagLine",
    "untagLine",
]


class Disposition(enum.Enum):
    """
    What L{RelayQueue.offer} decided for a line.
    """

    SEND = "send"
    """Send it upstream now."""
    QUEUED = "queued"
    """It waits in the queue; L{RelayQueue.open} hands it back later."""
    REFUSED = "refused"
    """The queue is full: tell the sender."""


@dataclass(slots=True)
class RelayStats:
    """
    A relay's running totals.

    @ivar forwarded: Lines handed to an upstream connection.
    @ivar queued: Lines that had to wait in the queue first.
    @ivar refused: Lines refused because the queue was full.
    @ivar dropped: Queued lines thrown away when the relay stopped with no
        upstream connection.
    @ivar received: Lines received from the upstream.
    @ivar delivered: Lines written to clients (a line sent to every client
        counts once per client).
    @ivar undeliverable: Lines from the upstream dropped for naming no
        connected client (tagging only).
    @ivar upstreamConnections: Connections made to the upstream (the first
        and each reconnection).
    """

    forwarded: int = 0
    queued: int = 0
    refused: int = 0
    dropped: int = 0
    received: int = 0
    delivered: int = 0
    undeliverable: int = 0
    upstreamConnections: int = 0


class RelayQueue:
    """
    Keep lines in order on their way upstream.

    While the upstream can take lines (L{isOpen}), each goes at once; while
    it cannot (down, or not reading), lines wait here in arrival order, at
    most L{limit} lines and L{byteLimit} bytes of them, and a line that
    would pass either bound is refused.  L{open} hands back every waiting
    line, oldest first, to be sent before any newer one; so the queue is
    empty whenever it is open.

    Memory: at most L{byteLimit} bytes of lines, plus Python's overhead of
    about 40 bytes for each of at most L{limit} lines.

    @ivar limit: The most lines that may wait.
    @ivar byteLimit: The most bytes of lines (delimiters not counted) that
        may wait, or C{None} for no bound but L{limit}.
    @ivar queuedBytes: How many bytes of lines wait now.
    @ivar stats: The counters this queue updates (C{forwarded}, C{queued},
        C{refused}, C{dropped}).
    @ivar isOpen: Whether lines go upstream at once.
    """

    def __init__(
        self,
        limit: int,
        stats: RelayStats | None = None,
        byteLimit: int | None = None,
    ) -> None:
        """
        @param limit: See L{limit}; 0 refuses every line while closed.
        @param stats: Counters to update (new ones by default).
        @param byteLimit: See L{byteLimit}; 0 refuses every line while closed.
        @raise ValueError: If C{limit} or C{byteLimit} is negative.
        """
        if limit < 0:
            raise ValueError(f"queue limit must not be negative, not {limit}")
        if byteLimit is not None and byteLimit < 0:
            raise ValueError(f"queue byte limit must not be negative, not {byteLimit}")
        self.limit = limit
        self.byteLimit = byteLimit
        self.queuedBytes = 0
        self.stats = stats if stats is not None else RelayStats()
        self.isOpen = False
        self._waiting: deque[bytes] = deque()

    def __len__(self) -> int:
        """
        How many lines wait.
        """
        return len(self._waiting)

    def offer(self, line: bytes) -> Disposition:
        """
        Decide what becomes of C{line}, and count it.  A line C{QUEUED} is
        kept here.
        """
        if self.isOpen:
            self.stats.forwarded += 1
            return Disposition.SEND
        size = self.queuedBytes + len(line)
        byteLimit = self.byteLimit
        if len(self._waiting) >= self.limit or (
            byteLimit is not None and size > byteLimit
        ):
            self.stats.refused += 1
            return Disposition.REFUSED
        self._waiting.append(line)
        self.queuedBytes = size
        self.stats.queued += 1
        return Disposition.QUEUED

    def offerAll(self, lines: list[bytes]) -> list[Disposition]:
        """
        Decide for consecutive lines at once, exactly as L{offer} would one
        after the other, and count them.

        While open, every line is C{SEND}: the caller sends them together.
        While closed, lines that all fit are queued together; otherwise each
        is decided in turn, so that a line that does not fit is C{REFUSED}
        and a later, shorter one may still be C{QUEUED}.

        @return: One disposition per line, in order.
        """
        count = len(lines)
        if self.isOpen:
            self.stats.forwarded += count
            return [Disposition.SEND] * count
        size = self.queuedBytes + sum(map(len, lines))
        byteLimit = self.byteLimit
        if len(self._waiting) + count <= self.limit and (
            byteLimit is None or size <= byteLimit
        ):
            self._waiting.extend(lines)
            self.queuedBytes = size
            self.stats.queued += count
            return [Disposition.QUEUED] * count
        return [self.offer(line) for line in lines]

    def open(self) -> list[bytes]:
        """
        The upstream can take lines now.

        @return: The lines that waited, oldest first; the caller sends them
            before any line offered after this call.
        """
        self.isOpen = True
        waiting = list(self._waiting)
        self._waiting.clear()
        self.queuedBytes = 0
        self.stats.forwarded += len(waiting)
        return waiting

    def close(self) -> None:
        """
        The upstream cannot take lines now: queue them from here on.
        """
        self.isOpen = False

    def drop(self) -> int:
        """
        Throw away every waiting line.

        @return: How many were thrown away (also counted as C{dropped}).
        """
        count = len(self._waiting)
        self._waiting.clear()
        self.queuedBytes = 0
        self.stats.dropped += count
        return count


_UNSAFE_IN_TAG = re.compile(rb"[\x00-\x20%\x7f]")


def addressTag(peer: str) -> bytes:
    """
    The tag for a client whose address reads C{peer} (as
    L{tcpcomm.connection.describePeer} writes it: C{127.0.0.1:5555},
    C{[::1]:5555}, C{unix:/run/sock#3}).

    Spaces, control bytes and C{%} are written C{%XX}, so a tag never
    contains the separator or a line end and different peers never share a
    tag; IP addresses need none of that.
    """
    return _UNSAFE_IN_TAG.sub(
        lambda match: b"%%%02X" % match.group()[0], peer.encode("utf-8")
    )


def tagLine(tag: bytes, line: bytes) -> bytes:
    """
    C{line} as it goes upstream from the client tagged C{tag}: C{TAG SP line}.
    """
    return tag + b" " + line


def untagLine(line: bytes) -> tuple[bytes, bytes] | None:
    """
    Split a line from the upstream into its tag and the rest.

    @return: C{(tag, rest)}, or C{None} if C{line} does not start with a
        tag followed by a space.
    """
    tag, space, rest = line.partition(b" ")
    if not (tag and space):
        return None
    return tag, rest


def groupByTag(lines: list[bytes]) -> tuple[dict[bytes, list[bytes]], list[bytes]]:
    """
    Sort a read's lines from the upstream by their tags, each split as
    L{untagLine} splits it.

    @return: C{(groups, untagged)}: for each tag, in the order tags first
        appear, the rest of its lines, in order; and the lines with no tag,
        in order.
    """
    groups: dict[bytes, list[bytes]] = {}
    untagged: list[bytes] = []
    for line in lines:
        tag, space, rest = line.partition(b" ")
        if not (tag and space):
            untagged.append(line)
        elif (group := groups.get(tag)) is None:
            groups[tag] = [rest]
        else:
            group.append(rest)
    return groups, untagged


class LogThrottle:
    """
    Let a repeated event be logged at most once per interval, with a count
    of the ones held back.

    Counters keep the exact totals; the log only says that it happens.
    """

    def __init__(self, interval: float = 1.0) -> None:
        """
        @param interval: The fewest seconds between two log lines.
        """
        self.interval = interval
        self._lastLogged: float | None = None
        self._heldBack = 0

    def note(self, now: float) -> int:
        """
        The event happened at C{now} (seconds, on any clock).

        @return: 0 if it is not to be logged now; else how many events the
            log line stands for: this one and those held back since the last.
        """
        self._heldBack += 1
        if self._lastLogged is not None and now - self._lastLogged < self.interval:
            return 0
        self._lastLogged = now
        count, self._heldBack = self._heldBack, 0
        return count
