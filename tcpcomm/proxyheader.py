# -*- test-case-name: tests.test_proxyheader -*-
"""
The PROXY protocol header that load balancers (HAProxy, AWS NLB, nginx's
C{proxy_protocol}) send before a client's own bytes, to say who the client
is: version 1 (a text line) and version 2 (binary), told apart by their
first bytes.  See U{https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt}.

No networking here: L{parseProxyHeader} is given the bytes received so far
and answers C{None} ("need more"), or the header and the bytes after it, or
raises L{ProxyHeaderError} with a readable reason.  It decides as early as
the bytes allow: a prefix that no valid header starts with is refused at
once, so a peer that is not a balancer is told off after its first bytes,
not after a timeout.  A header is at most L{V1_MAX_LENGTH} bytes (version
1) or C{16 + maxV2Length} (version 2), so a caller keeps at most that much.

L{formatProxyHeader} writes headers, for clients and tests.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_MAX_V2_LENGTH",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyAddress",
    "ProxyHeader",
    "ProxyHeaderError",
    "formatProxyHeader",
    "parseProxyHeader",
]

V1_MAX_LENGTH = 107
"""
The longest version 1 header, C{\\r\\n} included (the specification's
bound).
"""

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""
The twelve bytes every version 2 header starts with.
"""

DEFAULT_MAX_V2_LENGTH = 4096
"""
The most bytes of addresses and TLVs a version 2 header may carry here (the
format allows 65,535; balancers send a few hundred at most).
"""

_V1_PREFIX = b"PROXY "
_V2_FIXED = 16
_UNIX_PATH = 108

Family = Literal["inet", "inet6", "unix"]


class ProxyHeaderError(ValueError):
    """
    The bytes are not a PROXY protocol header; the message says why.
    """


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    """
    One end of the proxied connection.

    @ivar family: C{"inet"}, C{"inet6"} or C{"unix"}.
    @ivar host: The IP address in its usual text form, or the UNIX socket's
        path.
    @ivar port: The port, 0 for a UNIX socket.
    """

    family: Family
    host: str
    port: int = 0


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """
    A parsed header.

    @ivar version: 1 or 2.
    @ivar source: The client, or C{None} when the header names no client
        (version 2 C{LOCAL}, as health checks send, or an C{UNSPEC}
        family; version 1 C{UNKNOWN}): the connection is the balancer's own.
    @ivar destination: The address the client connected to, or C{None}
        with C{source}.
    """

    version: Literal[1, 2]
    source: ProxyAddress | None
    destination: ProxyAddress | None


def parseProxyHeader(
    data: bytes, maxV2Length: int = DEFAULT_MAX_V2_LENGTH
) -> tuple[ProxyHeader, bytes] | None:
    """
    Parse the PROXY header at the start of C{data}.

    @param data: Every byte received so far on the connection.
    @param maxV2Length: The most bytes of addresses and TLVs accepted in a
        version 2 header.
    @return: C{None} if C{data} may still become a header; else the header
        and the bytes that followed it.
    @raise ProxyHeaderError: If no header starts with C{data}.
    """
    if data[:1] == b"P":
        return _parseV1(data)
    if data[:1] == b"\r":
        return _parseV2(data, maxV2Length)
    if not data:
        return None
    raise ProxyHeaderError(
        f"not a PROXY protocol header: starts with {bytes(data[:16])!r}"
    )


def _parseV1(data: bytes) -> tuple[ProxyHeader, bytes] | None:
    """
    Parse a version 1 header: C{PROXY TCP4 SRC DST SPORT DPORT\\r\\n}.
    """
    if data[:6] != _V1_PREFIX[: len(data)]:
        raise ProxyHeaderError(
            f"not a PROXY protocol header: starts with {bytes(data[:16])!r}"
        )
    end = data.find(b"\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"PROXY v1 header longer than {V1_MAX_LENGTH} bytes")
        return None
    if data[end - 1 : end] != b"\r":
        raise ProxyHeaderError("PROXY v1 header ends with LF, not CRLF")
    line = data[: end - 1]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    fields = text.split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        # The specification: whatever follows UNKNOWN is ignored.
        return ProxyHeader(1, None, None), data[end + 1 :]
    if len(fields) != 6:
        raise ProxyHeaderError(
            f"PROXY v1 header {text[:60]!r}: expected PROXY TCP4|TCP6 SOURCE"
            " DESTINATION SOURCEPORT DESTINATIONPORT"
        )
    _, protocol, source, destination, sourcePort, destinationPort = fields
    if protocol == "TCP4":
        family: Family = "inet"
    elif protocol == "TCP6":
        family = "inet6"
    else:
        raise ProxyHeaderError(
            f"PROXY v1 header: unknown protocol {protocol[:16]!r}"
            " (expected TCP4, TCP6 or UNKNOWN)"
        )
    return (
        ProxyHeader(
            1,
            ProxyAddress(family, _v1Address(family, source), _v1Port(sourcePort)),
            ProxyAddress(
                family, _v1Address(family, destination), _v1Port(destinationPort)
            ),
        ),
        data[end + 1 :],
    )


def _v1Address(family: Family, text: str) -> str:
    """
    Check a version 1 address of C{family}; return its usual form.
    """
    try:
        if family == "inet":
            return str(ipaddress.IPv4Address(text))
        if "%" not in text:
            return str(ipaddress.IPv6Address(text))
    except ValueError:
        pass
    kind = "IPv4" if family == "inet" else "IPv6"
    raise ProxyHeaderError(f"PROXY v1 header: {text[:40]!r} is not an {kind} address")


def _v1Port(text: str) -> int:
    """
    Check a version 1 port: decimal, 0 to 65535.
    """
    if not (text.isdigit() and text.isascii() and len(text) <= 5) or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY v1 header: {text[:16]!r} is not a port")
    return int(text)


def _parseV2(data: bytes, maxLength: int) -> tuple[ProxyHeader, bytes] | None:
    """
    Parse a version 2 header: the signature, version and command, family
    and protocol, length, addresses, TLVs (skipped).
    """
    if data[:12] != V2_SIGNATURE[: len(data)]:
        raise ProxyHeaderError(
            f"not a PROXY protocol header: starts with {bytes(data[:16])!r}"
        )
    if len(data) > 12:
        versionCommand = data[12]
        if versionCommand >> 4 != 2:
            raise ProxyHeaderError(
                f"PROXY v2 header: unknown version {versionCommand >> 4}"
            )
        if versionCommand & 0xF > 1:
            raise ProxyHeaderError(
                f"PROXY v2 header: unknown command {versionCommand & 0xF}"
                " (expected LOCAL or PROXY)"
            )
    local = len(data) > 12 and data[12] & 0xF == 0
    if len(data) > 13 and not local and data[13] not in _V2_FAMILIES:
        raise ProxyHeaderError(
            f"PROXY v2 header: address family and protocol 0x{data[13]:02x} is"
            " not TCP over IPv4 or IPv6, a UNIX stream, or UNSPEC"
        )
    if len(data) < _V2_FIXED:
        return None
    (length,) = struct.unpack_from("!H", data, 14)
    if length > maxLength:
        raise ProxyHeaderError(
            f"PROXY v2 header: {length} bytes of addresses, more than {maxLength}"
        )
    familyByte = data[13]
    needed = 0 if local else _V2_FAMILIES[familyByte][1]
    if length < needed:
        raise ProxyHeaderError(
            f"PROXY v2 header: {length} bytes of addresses, too few for its"
            f" family ({needed})"
        )
    end = _V2_FIXED + length
    if len(data) < end:
        return None
    rest = data[end:]
    if local or needed == 0:
        return ProxyHeader(2, None, None), rest
    family = _V2_FAMILIES[familyByte][0]
    block = data[_V2_FIXED:end]
    if family == "unix":
        source = ProxyAddress("unix", _unixPath(block[:_UNIX_PATH]))
        destination = ProxyAddress("unix", _unixPath(block[_UNIX_PATH:216]))
    else:
        size = 4 if family == "inet" else 16
        make = ipaddress.IPv4Address if family == "inet" else ipaddress.IPv6Address
        sourcePort, destinationPort = struct.unpack_from("!HH", block, 2 * size)
        source = ProxyAddress(family, str(make(block[:size])), sourcePort)
        destination = ProxyAddress(
            family, str(make(block[size : 2 * size])), destinationPort
        )
    return ProxyHeader(2, source, destination), rest


_V2_FAMILIES: dict[int, tuple[Family, int]] = {
    0x00: ("inet", 0),  # UNSPEC: no addresses
    0x11: ("inet", 12),
    0x21: ("inet6", 36),
    0x31: ("unix", 216),
}
"""
The family and protocol bytes a stream server accepts with C{PROXY}: each
family's address block size.  Datagram protocols and unknown families are
refused, as the specification asks.
"""


def _unixPath(block: bytes) -> str:
    """
    A UNIX socket path from its NUL-padded 108 bytes.
    """
    return block.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def formatProxyHeader(header: ProxyHeader, tlvs: bytes = b"") -> bytes:
    """
    Write C{header} in its version: a version 1 line, or a version 2 header
    (C{LOCAL} when it has no source) followed by C{tlvs}.

    @raise ValueError: If version 1 is asked for UNIX addresses, or the
        addresses' families differ.
    """
    source, destination = header.source, header.destination
    if (source is None) != (destination is None):
        raise ValueError("give both addresses or neither")
    if source is not None and destination is not None:
        if source.family != destination.family:
            raise ValueError("both addresses must be of one family")
    if header.version == 1:
        if tlvs:
            raise ValueError("version 1 has no TLVs")
        if source is None or destination is None:
            return b"PROXY UNKNOWN\r\n"
        if source.family == "unix":
            raise ValueError("version 1 carries no UNIX addresses")
        protocol = "TCP4" if source.family == "inet" else "TCP6"
        return (
            f"PROXY {protocol} {source.host} {destination.host}"
            f" {source.port} {destination.port}\r\n"
        ).encode("ascii")
    if source is None or destination is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, len(tlvs)) + tlvs
    if source.family == "unix":
        block = b"".join(
            address.host.encode("utf-8", "surrogateescape").ljust(_UNIX_PATH, b"\0")
            for address in (source, destination)
        )
        familyByte = 0x31
    else:
        make = (
            ipaddress.IPv4Address if source.family == "inet" else ipaddress.IPv6Address
        )
        block = (
            make(source.host).packed
            + make(destination.host).packed
            + struct.pack("!HH", source.port, destination.port)
        )
        familyByte = 0x11 if source.family == "inet" else 0x21
    block += tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, familyByte, len(block)) + block
