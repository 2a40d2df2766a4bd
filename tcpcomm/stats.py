# -*- test-case-name: tests.test_connection -*-
"""
Counters a tcpcomm factory keeps for all of its connections.
"""

from __future__ import annotations

from dataclasses import dataclass


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
