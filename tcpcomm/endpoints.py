# -*- test-case-name: tests.test_endpoints -*-
"""
Endpoint descriptions and addresses, as tcpcomm reads and prints them, and
the sockets systemd passes.

Nothing here imports the reactor.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_UNIX_MODE",
    "MAX_BACKLOG",
    "PROXY_PREFIX",
    "SYSTEMD_FIRST_DESCRIPTOR",
    "TLS_INSTALL_HINT",
    "SystemdSockets",
    "checkTLSAvailable",
    "describeParseProblem",
    "formatAddress",
    "portFields",
    "serverEndpointDescription",
    "splitProxied",
    "startEnvironment",
    "systemdActivationHint",
    "systemdIndexDescriptor",
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


PROXY_PREFIX = "haproxy:"
"""
What a server endpoint description starts with when connections come from a
load balancer that sends a PROXY protocol header first (L{tcpcomm.proxied}),
as with Twisted's own C{haproxy:} endpoints.
"""


def splitProxied(description: str) -> tuple[str, bool]:
    """
    Take C{haproxy:} off the front of an endpoint description.

    @return: The description without it, and whether it was there.
    """
    stripped = description.strip()
    if stripped[: len(PROXY_PREFIX)].lower() == PROXY_PREFIX:
        return stripped[len(PROXY_PREFIX) :], True
    return description, False


def serverEndpointDescription(text: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    Turn what a user typed for C{--port} into a Twisted server endpoint
    description.

    A bare port number C{"8000"} becomes C{"tcp:8000"}; TCP and TLS
    descriptions that set no C{backlog} get C{backlog}; UNIX socket
    descriptions that set no C{mode} get L{DEFAULT_UNIX_MODE}, also after
    C{haproxy:} (L{PROXY_PREFIX}); anything else is returned unchanged.

    @param text: A port number or an endpoint description such as
        C{"tcp:8000:interface=127.0.0.1"} or C{"unix:/run/tcpcomm.sock"}.
    @param backlog: The listen backlog to add where none is given.
    @raise ValueError: If C{text} is empty (or C{haproxy:} with nothing or
        C{haproxy:} again after it), names a C{backlog} that is not
        a whole number from 1 to L{MAX_BACKLOG}, or (C{unix:}) a C{mode} that
        is not octal from 0 to 777.
    """
    description = text.strip()
    inner, proxied = splitProxied(description)
    if proxied:
        if not inner.strip():
            raise ValueError("haproxy: needs the endpoint to listen on after it")
        if splitProxied(inner)[1]:
            raise ValueError("haproxy: is given twice")
        return PROXY_PREFIX + serverEndpointDescription(inner, backlog)
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


def portFields(description: str) -> tuple[str | None, str]:
    """
    The port (as written) and the interface (C{""}: every one) of a
    C{tcp:}, C{tcp6:} or C{ssl:} server endpoint description; the port is
    C{None} for other kinds or when none is written.
    """
    kind, *fields = _FIELD_SEPARATOR.split(splitProxied(description)[0].strip())
    if kind.strip().lower() not in _PORT_KINDS:
        return None, ""
    positional = [f for f in fields if "=" not in f]
    named = dict(f.partition("=")[::2] for f in fields if "=" in f)
    port = (positional or [named.get("port")])[0]
    return port, named.get("interface", "")


def checkPortNumber(description: str) -> None:
    """
    Make sure the port number of a C{tcp:}, C{tcp6:} or C{ssl:} server
    endpoint description is one: a whole number from 0 to 65535.

    @raise ValueError: If it is not, naming it.
    """
    number = portFields(description)[0]
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
    inner = splitProxied(description)[0]
    if inner.split(":", 1)[0].strip().lower() not in _TLS_KINDS:
        return
    if find_spec("OpenSSL") is None or find_spec("service_identity") is None:
        raise ValueError(
            f"TLS needs pyOpenSSL and service_identity: {TLS_INSTALL_HINT}"
        )


SYSTEMD_FIRST_DESCRIPTOR = 3
"""
The file descriptor systemd passes its first socket as (C{SD_LISTEN_FDS_START}).
"""


def startEnvironment() -> Mapping[str, str]:
    """
    The environment this process was started with.

    Importing C{twisted.internet.endpoints} deletes C{LISTEN_FDS} and
    C{LISTEN_PID} from C{os.environ}, and it is imported before tcpcomm's
    options are parsed (by C{tcpcomm} itself, and by Twisted's plugin scan
    when its cache is stale).  On Linux, C{/proc/self/environ} still holds
    the environment C{exec} gave the process; elsewhere, or if it cannot be
    read, C{os.environ} is all there is.

    @return: C{os.environ} if C{LISTEN_PID} is still in it, else the
        environment at C{exec}.
    """
    if "LISTEN_PID" in os.environ:
        return os.environ
    try:
        with open("/proc/self/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:
        return os.environ
    environment: dict[str, str] = {}
    for entry in entries:
        name, found, value = os.fsdecode(entry).partition("=")
        if found:
            environment.setdefault(name, value)
    return environment


@dataclass(frozen=True)
class SystemdSockets:
    """
    The sockets systemd's socket activation passed to this process.

    @ivar descriptors: Their file descriptors, in order (C{LISTEN_FDS} of
        them from L{SYSTEMD_FIRST_DESCRIPTOR}); empty if none were passed
        to this process.
    @ivar names: Their names (C{LISTEN_FDNAMES}), or C{None} if it is not
        set or empty (C{systemd-socket-activate} without C{--fdname},
        systemd before 227).
    """

    descriptors: Sequence[int] = range(0)
    names: tuple[str, ...] | None = None

    @classmethod
    def fromEnvironment(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> SystemdSockets:
        """
        Read C{LISTEN_FDS}, C{LISTEN_PID} and C{LISTEN_FDNAMES}.

        @param environ: The environment; by default L{startEnvironment}.
        @param pid: This process's ID; by default C{os.getpid()}.  Sockets
            passed to another process (C{LISTEN_PID}) are not this one's.
        """
        if environ is None:
            environ = startEnvironment()
        if pid is None:
            pid = os.getpid()
        count = environ.get("LISTEN_FDS", "")
        if environ.get("LISTEN_PID") != str(pid) or not count.isdecimal():
            return cls()
        # A range, not a list: LISTEN_FDS may be any number.
        descriptors = range(
            SYSTEMD_FIRST_DESCRIPTOR, SYSTEMD_FIRST_DESCRIPTOR + int(count)
        )
        names = environ.get("LISTEN_FDNAMES")
        return cls(descriptors, tuple(names.split(":")) if names else None)


_SYSTEMD_DOMAINS = {
    name: getattr(socket, f"AF_{name}")
    for name in ("INET", "INET6", "UNIX")
    if hasattr(socket, f"AF_{name}")
}
"""
The C{domain}s of C{systemd:} descriptions tcpcomm serves, and their address
families.
"""


def _systemdArguments(description: str) -> dict[str, str] | None:
    """
    The arguments of a C{systemd:} description, or C{None} for another kind.
    """
    kind, _, rest = splitProxied(description)[0].partition(":")
    if kind.strip().lower() != "systemd":
        return None
    return dict(
        part.partition("=")[::2] for part in _FIELD_SEPARATOR.split(rest) if part
    )


def _socketCount(count: int) -> str:
    """
    C{"1 socket was"}, C{"2 sockets were"}.
    """
    return "1 socket was" if count == 1 else f"{count} sockets were"


def _indexRange(count: int) -> str:
    """
    Say which indexes C{count} sockets passed allow.
    """
    allowed = "must be 0" if count == 1 else f"may be 0 to {count - 1}"
    return f"{_socketCount(count)} passed (LISTEN_FDS={count}), so index {allowed}"


def systemdIndexDescriptor(
    description: str, sockets: SystemdSockets
) -> tuple[int, socket.AddressFamily] | None:
    """
    The inherited file descriptor a C{systemd:domain=...:index=N} description
    names when Twisted cannot adopt it: sockets were passed without names
    (C{LISTEN_FDNAMES} unset), which Twisted ignores.

    @return: The descriptor and the domain's address family, or C{None} if
        Twisted is to handle
        C{description}: it is no C{systemd:} description with a known
        domain and a decimal C{index} alone, the sockets have names, or none
        were passed.
    @raise ValueError: If C{index} is beyond the sockets passed, in one
        line saying how many were.
    """
    arguments = _systemdArguments(description)
    if arguments is None or sockets.names is not None or not sockets.descriptors:
        return None
    index, domain = arguments.get("index"), arguments.get("domain", "")
    if index is None or not index.isdecimal() or "name" in arguments:
        return None
    family = _SYSTEMD_DOMAINS.get(domain)
    if family is None:
        return None
    count = len(sockets.descriptors)
    if int(index) >= count:
        raise ValueError(
            f"no socket inherited at index {int(index)}: {_indexRange(count)}"
        )
    return sockets.descriptors[int(index)], family


def systemdActivationHint(
    description: str, sockets: SystemdSockets | None = None
) -> str | None:
    """
    Say, in one line, why a well-formed C{systemd:} description found no
    inherited socket, and what the process needs.

    Twisted adopts sockets passed by systemd by name or index only when
    C{LISTEN_FDS}, C{LISTEN_PID} I{and} C{LISTEN_FDNAMES} are all set
    (systemd 227 and later set all three; C{systemd-socket-activate} sets
    C{LISTEN_FDNAMES} only when given C{--fdname}); tcpcomm adopts them by
    index without names (L{systemdIndexDescriptor}).

    @param description: A server endpoint description that Twisted refused.
    @param sockets: The sockets this process was passed; by default those
        L{SystemdSockets.fromEnvironment} finds.
    @return: The explanation, or C{None} if C{description} is not a
        C{systemd:} description with exactly one of a decimal C{index} or a
        C{name} (Twisted's own message then says what is wrong).
    """
    arguments = _systemdArguments(description)
    if arguments is None:
        return None
    domain = arguments.get("domain", "")
    if domain not in _SYSTEMD_DOMAINS:
        return f"unknown domain {domain!r}: use INET, INET6 or UNIX"
    index, name = arguments.get("index"), arguments.get("name")
    if index is not None and name is None and index.isdecimal():
        which = f"at index {int(index)}"
    elif name is not None and index is None:
        which = f"named {name!r}"
    else:
        return None
    if sockets is None:
        sockets = SystemdSockets.fromEnvironment()
    count = len(sockets.descriptors)
    if not count:
        reason = (
            "none were passed to this process (LISTEN_FDS and LISTEN_PID are"
            " not set for it): start tcpcomm from a systemd socket unit or"
            " under systemd-socket-activate"
        )
    elif sockets.names is None:
        # Only a name can get here: an index is adopted without names.
        reason = (
            f"{_socketCount(count)} passed without names (LISTEN_FDNAMES is"
            " not set; systemd-socket-activate sets it with --fdname=NAME):"
            " use index=N, from 0"
        )
    elif len(sockets.names) != count:
        reason = (
            f"LISTEN_FDNAMES names {len(sockets.names)} but LISTEN_FDS is"
            f" {count}, so Twisted ignores them all"
        )
    elif name is not None:
        reason = "the sockets passed are named " + ", ".join(
            repr(n) for n in sockets.names
        )
    else:
        reason = _indexRange(count)
    return f"no socket inherited {which}: {reason}"


_MISSING = re.compile(r"missing \d+ required positional argument: '(\w+)'")
_UNKNOWN = re.compile(r"unexpected keyword argument '(\w+)'|present', \[(.*)\]")
_NOT_NUMBER = re.compile(r"invalid literal for int\(\) with base 10: ('.*')")
_TWICE = re.compile(r"got multiple values for argument '(\w+)'")


def describeParseProblem(problem: BaseException) -> str:
    """
    Say why Twisted's endpoint parser refused a description, in words
    (not in the names of its private functions).
    """
    cause = problem.__cause__ or problem.__context__
    for e in (problem, cause):
        if isinstance(e, OSError) and e.errno is not None:
            return f"{e.filename or 'a file'}: {os.strerror(e.errno).lower()}"
    message = str(problem)
    if found := _MISSING.search(message):
        return f"no {found[1]} given"
    if found := _UNKNOWN.search(message):
        return f"unknown parameter {found[2] or repr(found[1])}"
    if found := _NOT_NUMBER.search(message):
        return f"{found[1]} is not a number"
    if found := _TWICE.search(message):
        # Most often an IPv6 address whose colons split it into arguments.
        return (
            f"{found[1]} given twice, or a value holds a ':' that is not"
            " escaped (an IPv6 address: interface=\\:\\:1)"
        )
    return message or type(problem).__name__


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
