# -*- test-case-name: tests.test_endpoints -*-
"""
Endpoint descriptions and addresses, as tcpcomm reads and prints them.

Pure string handling: nothing here imports the reactor.
"""

from __future__ import annotations

import re
import socket
from importlib.util import find_spec

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_UNIX_MODE",
    "MAX_BACKLOG",
    "TLS_INSTALL_HINT",
    "checkTLSAvailable",
    "formatAddress",
    "serverEndpointDescription",
    "systemdActivationHint",
]

DEFAULT_BACKLOG = 1024
"""
The listen backlog tcpcomm asks for on TCP and TLS endpoints that name none.

Twisted's own default of 50 makes the kernel refuse or reset clients when
hundreds connect at the same moment.  The kernel caps the value at
C{net.core.somaxconn}.
"""

MAX_BACKLOG = 65535
"""
The largest listen backlog a description may name (Linux caps it at
C{net.core.somaxconn} anyway, 4096 by default; older kernels kept it in 16
bits).
"""

DEFAULT_UNIX_MODE = "660"
"""
The permission bits (octal) of the UNIX sockets tcpcomm listens on when the
description names no C{mode}: the server's user and group may connect,
others may not.  Twisted's own default is 666, anyone on the machine.
"""

_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "ssl"})
_BACKLOG_VALUE = re.compile(r"(?<!\\):backlog=([^:]*)")
_MODE_VALUE = re.compile(r"(?<!\\):mode=([^:]*)")
_OCTAL = re.compile(r"0*[0-7]{1,3}")


def serverEndpointDescription(text: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    Turn what a user typed for C{--port} into a Twisted server endpoint
    description.

    A bare port number C{"8000"} becomes C{"tcp:8000"}; TCP and TLS
    descriptions that set no C{backlog} get C{backlog}; UNIX socket
    descriptions that set no C{mode} get L{DEFAULT_UNIX_MODE}; anything else
    is returned unchanged.

    @param text: A port number or an endpoint description such as
        C{"tcp:8000:interface=127.0.0.1"} or C{"unix:/run/tcpcomm.sock"}.
    @param backlog: The listen backlog to add where none is given.
    @raise ValueError: If C{text} is empty, names a C{backlog} that is not
        a whole number from 1 to L{MAX_BACKLOG}, or (C{unix:}) a C{mode} that
        is not octal from 0 to 777.
    """
    description = text.strip()
    if not description:
        raise ValueError("an endpoint description cannot be empty")
    if description.isdigit():
        description = f"tcp:{description}"
    kind = description.split(":", 1)[0].lower()
    backlogs = _BACKLOG_VALUE.findall(description)
    for value in backlogs:
        if not (value.isdecimal() and 1 <= int(value) <= MAX_BACKLOG):
            raise ValueError(
                f"backlog must be a whole number from 1 to {MAX_BACKLOG}, not {value!r}"
            )
    if kind in _BACKLOG_KINDS and not backlogs:
        description = f"{description}:backlog={backlog}"
    if kind == "unix":
        modes = _MODE_VALUE.findall(description)
        for value in modes:
            if not _OCTAL.fullmatch(value):
                raise ValueError(
                    f"mode must be permission bits in octal, 0 to 777, not {value!r}"
                )
        if not modes:
            description = f"{description}:mode={DEFAULT_UNIX_MODE}"
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

TLS_INSTALL_HINT = "pip install '.[tls]' (from the tcpcomm checkout)"
"""
How to install what TLS needs, as the README says it: tcpcomm is installed
from its checkout, not from a package index.
"""


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
            f"TLS needs pyOpenSSL and service_identity: {TLS_INSTALL_HINT}"
        )


def systemdActivationHint(description: str) -> str | None:
    """
    Say, in one line, why a well-formed C{systemd:} description found no
    inherited socket, and what the process needs.

    Twisted adopts sockets passed by systemd only when C{LISTEN_FDS},
    C{LISTEN_PID} I{and} C{LISTEN_FDNAMES} are all set (systemd 227 and
    later set all three; C{systemd-socket-activate} sets C{LISTEN_FDNAMES}
    only when given C{--fdname}); without C{LISTEN_FDNAMES} it ignores the
    inherited sockets, and C{index=0} is out of range.

    @param description: A server endpoint description that Twisted refused.
    @return: The explanation, or C{None} if C{description} is not a
        C{systemd:} description with exactly one of a decimal C{index} or a
        C{name} (Twisted's own message then says what is wrong).
    """
    kind, _, rest = description.partition(":")
    if kind.strip().lower() != "systemd":
        return None
    arguments = dict(
        part.partition("=")[::2] for part in _FIELD_SEPARATOR.split(rest) if part
    )
    domain = arguments.get("domain", "")
    if not hasattr(socket, f"AF_{domain}"):
        return f"unknown domain {domain!r}: use INET, INET6 or UNIX"
    index, name = arguments.get("index"), arguments.get("name")
    if index is not None and name is None and index.isdecimal():
        which = f"at index {index}"
    elif name is not None and index is None:
        which = f"named {name!r}"
    else:
        return None
    return (
        f"no socket inherited {which}: start tcpcomm from a systemd socket"
        " unit, or with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES all set"
        " (Twisted ignores inherited sockets without LISTEN_FDNAMES;"
        " systemd-socket-activate sets it with --fdname=NAME)"
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
