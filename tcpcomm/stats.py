# -*- test-case-name: tests.test_connection -*-
"""
Counters a tcpcomm factory keeps for all of its connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
