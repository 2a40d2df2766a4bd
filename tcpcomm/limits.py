# -*- test-case-name: tests.test_limits -*-
"""
Connection limits bookkeeping: how many connections are open, in all and per
client host, and whether one more may come in.

Pure: no Twisted, no I/O.  A factory asks L{ConnectionLimits.admit} for each
new connection and calls L{ConnectionLimits.release} when an admitted one
closes.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import AddressValueError, IPv6Address

__all__ = ["TOO_MANY", "ConnectionLimits", "hostKey"]

TOO_MANY = "too many connections"


def hostKey(host: str) -> str:
    """
    The address C{host} counts as for per-host limits: an IPv4-mapped IPv6
    address (C{::ffff:127.0.0.1}, what a dual-stack C{tcp6} port sees of an
    IPv4 client) counts as its IPv4 address, so that one client reaching a
    C{tcp} and a C{tcp6} port counts once.  Any other C{host} is itself.
    """
    if ":" not in host or "ffff" not in host.lower():
        # IPv4, or IPv6 with no ffff group: cannot be IPv4-mapped.
        return host
    return _mappedKey(host)


@lru_cache(maxsize=4096)
def _mappedKey(host: str) -> str:
    """
    L{hostKey} for IPv6 text with an ffff group: parsed (about 5 us, so the
    answers for recent clients are kept).
    """
    try:
        mapped = IPv6Address(host).ipv4_mapped
    except AddressValueError:
        return host
    return host if mapped is None else str(mapped)


class ConnectionLimits:
    """
    Count open connections and refuse those over a limit.

    @ivar maxConnections: The most connections open at once, or C{None}.
    @ivar maxPerHost: The most connections open at once from one host, or
        C{None}.  Hosts are counted by L{hostKey}.
    """

    def __init__(
        self, maxConnections: int | None = None, maxPerHost: int | None = None
    ) -> None:
        for name, value in (
            ("maxConnections", maxConnections),
            ("maxPerHost", maxPerHost),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, not {value}")
        self.maxConnections = maxConnections
        self.maxPerHost = maxPerHost
        self._open = 0
        self._perHost: dict[str, int] = {}

    @property
    def open(self) -> int:
        """
        How many admitted connections are open.
        """
        return self._open

    def openFrom(self, host: str) -> int:
        """
        How many admitted connections from C{host} are open.
        """
        return self._perHost.get(hostKey(host), 0)

    def admit(self, host: str | None) -> str | None:
        """
        Admit a new connection from C{host} (C{None} for a peer with no host,
        such as a UNIX socket client, which only the total limit covers).

        @return: C{None} if it is admitted (and now counted), else the reason
            it is refused.
        """
        if self.maxConnections is not None and self._open >= self.maxConnections:
            return TOO_MANY
        if host is not None:
            host = hostKey(host)
        if host is not None and self.maxPerHost is not None:
            if self._perHost.get(host, 0) >= self.maxPerHost:
                return TOO_MANY
        self._open += 1
        if host is not None:
            self._perHost[host] = self._perHost.get(host, 0) + 1
        return None

    def release(self, host: str | None) -> None:
        """
        An admitted connection from C{host} has closed.
        """
        self._open -= 1
        if host is not None:
            host = hostKey(host)
            left = self._perHost[host] - 1
            if left:
                self._perHost[host] = left
            else:
                del self._perHost[host]
