# -*- test-case-name: tests.test_client -*-
"""
The C{HOST:PORT} shorthand the C{tcpcomm} commands take for an endpoint.

Imports nothing from Twisted, so that the load generator (L{tcpcomm.bench})
reads endpoints as the client does without it.
"""

from __future__ import annotations

import re

__all__ = ["splitHostPort"]

_SHORTHAND = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]=]+)):(?P<port>\d+)$")
_ENDPOINT_KINDS = frozenset({"tcp", "tcp6", "ssl", "tls", "unix"})


def splitHostPort(text: str) -> tuple[str, str] | None:
    """
    The host and the port (as typed) of C{HOST:PORT} or C{[IPV6]:PORT}, or
    C{None} if C{text} is not in that form (an endpoint description such as
    C{tcp:8000} or C{unix:path=...} is not).
    """
    match = _SHORTHAND.match(text.strip())
    if match is None or not (
        match["v6"] or match["host"].lower() not in _ENDPOINT_KINDS
    ):
        return None
    return match["v6"] or match["host"], match["port"]
