# -*- test-case-name: tests.test_connection -*-
"""
Counters a tcpcomm factory keeps for all of its connections.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

__all__ = ["LATENCY_BUCKETS", "HandlerLatency", "ServerStats"]

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""
The upper bounds, in seconds, of L{HandlerLatency}'s buckets.
"""


class HandlerLatency:
    """
    How long handlers that answer later (a Deferred, or a coroutine that
    waits) took, in buckets; handlers that answer at once are not timed
    (their count is the factory's C{linesHandled} less C{handledBefore} and
    C{started}).

    @ivar bounds: The buckets' upper bounds, in seconds, ascending.
    @ivar counts: How many took at most each bound (and more than the one
        before); one more, last, for those over every bound.
    @ivar total: The seconds they took, in all.
    @ivar started: How many handlers answered later (timed or still
        running).
    @ivar handledBefore: How many messages had been handled when timing
        began.
    """

    __slots__ = ("bounds", "counts", "handledBefore", "started", "total")

    def __init__(
        self, handledBefore: int = 0, bounds: tuple[float, ...] = LATENCY_BUCKETS
    ) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.started = 0
        self.handledBefore = handledBefore

    def observe(self, seconds: float) -> None:
        """
        Count a handler that took C{seconds} (a clock stepped back counts
        as 0).
        """
        if seconds < 0:
            seconds = 0.0
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def timed(self) -> int:
        """
        How many handlers were timed (their replies are known).
        """
        return sum(self.counts)


@dataclass(slots=True)
class ServerStats:
    """
    Running totals for one factory, updated as traffic flows.

    @ivar connectionsOpen: Connections open now.
    @ivar connectionsTotal: Connections accepted since the factory was made.
    @ivar bytesIn: Bytes received from clients.
    @ivar bytesOut: Bytes handed to transports for clients.
    @ivar linesHandled: Complete lines passed to a line handler.
    @ivar connectionsRefused: Connections refused for being over a limit.
    @ivar idleTimeouts: Connections closed for being idle.
    @ivar handlerTimeouts: Replies given up on for a handler too slow.
    @ivar tooSlow: Connections dropped for reading too slowly.
    @ivar badFrames: Connections closed for input their framing cannot cut
        (a corrupt or oversized frame).
    @ivar refusals: Refused connections by reason, a label in Prometheus
        style: C{"max_connections"}, C{"max_connections_per_ip"},
        C{"connection_rate"}.  Their sum is C{connectionsRefused}.
    @ivar handlerErrors: Messages whose handler raised or failed.
    @ivar readPauses: Times reading from a connection was paused because its
        peer read too slowly (flow control).
    @ivar tlsHandshakeFailures: TLS handshakes that failed (a bad or missing
        client certificate, a protocol error) or were cut off.
    @ivar tlsHandshakeTimeouts: Connections closed for not finishing their
        TLS handshake in time.
    @ivar proxyHeaderErrors: Connections closed for a PROXY protocol header
        that is malformed or that did not come in time.
    @ivar unfinishedBytes: Bytes held now, across all connections, in
        partial lines or frames (the unfinished-frame budget's use).
    @ivar unfinishedBudget: The unfinished-frame budget in bytes, or C{None}
        for none.
    @ivar budgetCloses: Connections closed because the server-wide
        unfinished-frame budget was spent and they held the most.
    @ivar handlerLatency: How long the handlers that answer later took, if
        timed (only while metrics are served: see L{tcpcomm.metrics}).
    """

    connectionsOpen: int = 0
    connectionsTotal: int = 0
    bytesIn: int = 0
    bytesOut: int = 0
    linesHandled: int = 0
    connectionsRefused: int = 0
    idleTimeouts: int = 0
    handlerTimeouts: int = 0
    tooSlow: int = 0
    badFrames: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    handlerErrors: int = 0
    readPauses: int = 0
    tlsHandshakeFailures: int = 0
    tlsHandshakeTimeouts: int = 0
    proxyHeaderErrors: int = 0
    unfinishedBytes: int = 0
    unfinishedBudget: int | None = None
    budgetCloses: int = 0
    handlerLatency: HandlerLatency | None = None
