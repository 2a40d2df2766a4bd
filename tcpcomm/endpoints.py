# -*- test-case-name: tests.test_endpoints -*-
"""
Endpoint descriptions and addresses, as tcpcomm reads and prints them.

Pure string handling: nothing here imports the reactor.
"""

from __future__ import annotations

import re
from importlib.util import find_spec

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

DEFAULT_BACKLOG = 1024
"""
The listen backlog tcpcomm asks for on TCP and TLS endpoints that name none.

Twisted's own default of 50 makes the kernel refuse or reset clients when
hundreds connect at the same moment.  The kernel caps the value at
C{net.core.somaxconn}.
"""

_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "ssl"})
_HAS_BACKLOG = re.compile(r"(?<!\\):backlog=")


def serverEndpointDescription(text: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    Turn what a user typed for C{--port} into a Twisted server endpoint
    description.

    A bare port number C{"8000"} becomes C{"tcp:8000"}; TCP and TLS
    descriptions that set no C{backlog} get C{backlog}; anything else is
    returned unchanged.

    @param text: A port number or an endpoint description such as
        C{"tcp:8000:interface=127.0.0.1"} or C{"unix:/run/tcpcomm.sock"}.
    @param backlog: The listen backlog to add where none is given.
    @raise ValueError: If C{text} is empty.
    """
    description = text.strip()
    if not description:
        raise ValueError("an endpoint description cannot be empty")
    if description.isdigit():
        description = f"tcp:{description}"
    kind = description.split(":", 1)[0].lower()
    if kind in _BACKLOG_KINDS and not _HAS_BACKLOG.search(description):
        description = f"{description}:backlog={backlog}"
    return description


_PORT_KINDS = frozenset({"tcp", "tcp6", "ssl"})
_FIELD_SEPARATOR = re.compile(r"(?<!\\):")


def checkPortNumber(description: str) -> None:
    """
    Make sure the port number of a C{tcp:}, C{tcp6:} or C{ssl:} server
    endpoint description is one: a whole number from 0 to 65535.

    @raise ValueError: If it is not, naming it.
    """
    kind, *fields = _FIELD_SEPARATOR.split(description.strip())
    if kind.strip().lower() not in _PORT_KINDS:
        return
    positional = [f for f in fields if "=" not in f]
    named = [f.partition("=")[2] for f in fields if f.startswith("port=")]
    number = (positional or named or [None])[0]
    if number is None:
        return
    if not (number.isdigit() and int(number) <= 65535):
        raise ValueError(f"port must be a number from 0 to 65535, not {number!r}")


_TLS_KINDS = frozenset({"ssl", "tls"})


def checkTLSAvailable(description: str) -> None:
    """
    Make sure a TLS endpoint description can be used.

    @raise ValueError: If C{description} names a TLS endpoint (C{ssl:},
        C{tls:}) and the libraries Twisted needs for TLS are missing, with a
        message that says how to install them.
    """
    if description.split(":", 1)[0].strip().lower() not in _TLS_KINDS:
        return
    if find_spec("OpenSSL") is None or find_spec("service_identity") is None:
        raise ValueError(
            "TLS needs pyOpenSSL and service_identity: pip install 'tcpcomm[tls]'"
        )


def formatAddress(address: IAddress) -> str:
    """
    Name an address the way people type it: C{127.0.0.1:8000},
    C{[::1]:8000}, C{unix:/path/sock}.
    """
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if not name:
            return "unix:(unnamed)"
        return "unix:" + (
            name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        )
    return str(address)
