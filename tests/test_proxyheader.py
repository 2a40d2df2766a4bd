"""
Tests for L{tcpcomm.proxyheader}: the PROXY protocol header parser, with
examples from the specification and properties checked by hypothesis.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.proxyheader import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyAddress,
    ProxyHeader,
    ProxyHeaderError,
    formatProxyHeader,
    parseProxyHeader,
)

CLIENT = ProxyAddress("inet", "192.0.2.7", 51000)
SERVER = ProxyAddress("inet", "198.51.100.1", 8000)


class VersionOneTests(SynchronousTestCase):
    """
    Version 1: one text line.
    """

    def test_tcp4(self) -> None:
        """
        A TCP4 line gives both addresses and the bytes after it.
        """
        parsed = parseProxyHeader(
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 8000\r\nhello\n"
        )
        self.assertEqual(parsed, (ProxyHeader(1, CLIENT, SERVER), b"hello\n"))

    def test_tcp6(self) -> None:
        """
        A TCP6 line gives IPv6 addresses in their short form.
        """
        header, rest = parseProxyHeader(
            b"PROXY TCP6 2001:db8:0::1 ::1 1 65535\r\n"
        ) or self.fail("no header")
        self.assertEqual(
            (header.source, header.destination, rest),
            (
                ProxyAddress("inet6", "2001:db8::1", 1),
                ProxyAddress("inet6", "::1", 65535),
                b"",
            ),
        )

    def test_unknown(self) -> None:
        """
        C{UNKNOWN} names no addresses, whatever follows it on the line.
        """
        self.assertEqual(
            parseProxyHeader(b"PROXY UNKNOWN ff 1.2.3.4 x\r\nrest"),
            (ProxyHeader(1, None, None), b"rest"),
        )

    def test_needMore(self) -> None:
        """
        A line without its CRLF yet asks for more.
        """
        self.assertIsNone(parseProxyHeader(b"PROXY TCP4 192.0.2.7 198.51"))
        self.assertIsNone(parseProxyHeader(b""))
        self.assertIsNone(parseProxyHeader(b"PRO"))

    def test_errors(self) -> None:
        """
        Malformed lines are refused with a reason that names the problem.
        """
        cases = {
            b"GET / HTTP/1.1\r\n": "not a PROXY protocol header",
            b"PROXYTCP4": "not a PROXY protocol header",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n": "LF, not CRLF",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n": "unknown protocol 'TCP5'",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n": "expected PROXY TCP4",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n": "expected PROXY TCP4",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n": "'::1' is not an IPv4 address",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n": "'1.2.3.4' is not an IPv6 address",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n": "'65536' is not a port",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n": "'-1' is not a port",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 \xc2\xb9 2\r\n": "not ASCII",
            b"PROXY " + b"9" * 101: f"longer than {V1_MAX_LENGTH} bytes",
        }
        for data, reason in cases.items():
            with self.assertRaises(ProxyHeaderError, msg=repr(data)) as caught:
                parseProxyHeader(data)
            self.assertIn(reason, str(caught.exception), repr(data))

    def test_longestAccepted(self) -> None:
        """
        A line of exactly 107 bytes (the specification's longest) is
        accepted.
        """
        address = "ffff:" * 7 + "ffff"
        line = f"PROXY TCP6 {address} {address} 65535 65535\r\n".encode()
        self.assertEqual(len(line), 104)
        padded = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
        self.assertEqual(len(padded), V1_MAX_LENGTH)
        self.assertIsNotNone(parseProxyHeader(line))
        self.assertIsNotNone(parseProxyHeader(padded))


def v2(command: int, family: int, block: bytes) -> bytes:
    """
    A version 2 header with the given command, family byte and block.
    """
    return (
        V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(block)) + block
    )


class VersionTwoTests(SynchronousTestCase):
    """
    Version 2: a binary header.
    """

    def test_inet(self) -> None:
        """
        PROXY over TCP/IPv4 gives both addresses; TLVs after them are
        skipped.
        """
        block = bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack("!HH", 51000, 8000)
        tlv = b"\x04\x00\x03abc"
        self.assertEqual(
            parseProxyHeader(v2(1, 0x11, block + tlv) + b"data"),
            (ProxyHeader(2, CLIENT, SERVER), b"data"),
        )

    def test_inet6(self) -> None:
        """
        PROXY over TCP/IPv6 gives IPv6 addresses.
        """
        block = (
            ipaddress.IPv6Address("2001:db8::1").packed
            + ipaddress.IPv6Address("::1").packed
            + struct.pack("!HH", 1, 2)
        )
        header, _ = parseProxyHeader(v2(1, 0x21, block)) or self.fail("none")
        self.assertEqual(
            (header.source, header.destination),
            (ProxyAddress("inet6", "2001:db8::1", 1), ProxyAddress("inet6", "::1", 2)),
        )

    def test_unix(self) -> None:
        """
        PROXY over a UNIX stream gives the two paths.
        """
        block = b"/run/client".ljust(108, b"\0") + b"/run/server".ljust(108, b"\0")
        header, _ = parseProxyHeader(v2(1, 0x31, block)) or self.fail("none")
        self.assertEqual(
            (header.source, header.destination),
            (ProxyAddress("unix", "/run/client"), ProxyAddress("unix", "/run/server")),
        )

    def test_localIgnoresAddresses(self) -> None:
        """
        C{LOCAL} (a health check) names no addresses, whatever its family
        and block say.
        """
        self.assertEqual(
            parseProxyHeader(v2(0, 0x11, b"\1" * 12) + b"x"),
            (ProxyHeader(2, None, None), b"x"),
        )
        self.assertEqual(
            parseProxyHeader(v2(0, 0x00, b"")), (ProxyHeader(2, None, None), b"")
        )

    def test_unspec(self) -> None:
        """
        C{PROXY} with the C{UNSPEC} family names no addresses.
        """
        self.assertEqual(
            parseProxyHeader(v2(1, 0x00, b"")), (ProxyHeader(2, None, None), b"")
        )

    def test_needMore(self) -> None:
        """
        A header cut anywhere before its end asks for more.
        """
        whole = v2(1, 0x11, b"\1" * 12)
        for end in range(len(whole)):
            self.assertIsNone(parseProxyHeader(whole[:end]), end)

    def test_errors(self) -> None:
        """
        Bad versions, commands, families and lengths are refused as soon as
        their byte is in, with a reason.
        """
        cases = {
            V2_SIGNATURE[:5] + b"X": "not a PROXY protocol header",
            V2_SIGNATURE + b"\x11": "unknown version 1",
            V2_SIGNATURE + b"\x22": "unknown command 2",
            V2_SIGNATURE + b"\x21\x12": "0x12 is not TCP",
            V2_SIGNATURE + b"\x21\x41": "0x41 is not TCP",
            V2_SIGNATURE + b"\x21\x11\x00\x0b": "too few for its family (12)",
            V2_SIGNATURE + b"\x21\x21\x00\x0c": "too few for its family (36)",
            V2_SIGNATURE + b"\x21\x11\x10\x01": "4097 bytes of addresses",
        }
        for data, reason in cases.items():
            with self.assertRaises(ProxyHeaderError, msg=repr(data)) as caught:
                parseProxyHeader(data)
            self.assertIn(reason, str(caught.exception), repr(data))

    def test_lengthBound(self) -> None:
        """
        The bound on addresses and TLVs can be raised to the format's own.
        """
        data = v2(1, 0x11, b"\1" * 12 + b"\0" * 5000)
        self.assertRaises(ProxyHeaderError, parseProxyHeader, data)
        self.assertIsNotNone(parseProxyHeader(data, maxV2Length=65535))


def addresses(family: str) -> st.SearchStrategy[ProxyAddress]:
    """
    Addresses of C{family}.
    """
    ports = st.integers(0, 65535)
    if family == "inet":
        hosts = st.ip_addresses(v=4).map(str)
    elif family == "inet6":
        hosts = st.ip_addresses(v=6).map(str)
    else:
        hosts = st.text(
            st.characters(codec="utf-8", exclude_characters="\0"), max_size=30
        )
        ports = st.just(0)
    return st.builds(ProxyAddress, st.just(family), hosts, ports)


@st.composite
def headers(draw: st.DrawFn) -> tuple[ProxyHeader, bytes]:
    """
    A header and the TLVs to send with it (version 2 only).
    """
    version: Literal[1, 2] = draw(st.sampled_from([1, 2]))
    families = ["inet", "inet6"] if version == 1 else ["inet", "inet6", "unix"]
    family = draw(st.sampled_from(families))
    source: ProxyAddress | None = None
    destination: ProxyAddress | None = None
    if draw(st.booleans()):
        source, destination = draw(addresses(family)), draw(addresses(family))
    tlvs = b"" if version == 1 else draw(st.binary(max_size=40))
    return ProxyHeader(version, source, destination), tlvs


class PropertyTests(SynchronousTestCase):
    """
    Properties that hold for every input.
    """

    @settings(max_examples=300, deadline=None)
    @given(headers(), st.binary(max_size=30))
    def test_roundTrip(self, made: tuple[ProxyHeader, bytes], after: bytes) -> None:
        """
        A header written by L{formatProxyHeader} parses back to itself, with
        the bytes after it.
        """
        header, tlvs = made
        parsed = parseProxyHeader(formatProxyHeader(header, tlvs) + after)
        self.assertEqual(parsed, (header, after))

    @settings(max_examples=300, deadline=None)
    @given(
        st.one_of(
            headers().map(lambda made: formatProxyHeader(*made)),
            st.binary(max_size=120),
            st.binary(max_size=40).map(lambda b: b"PROXY " + b),
            st.binary(max_size=40).map(lambda b: V2_SIGNATURE + b),
        ),
        st.binary(max_size=10),
    )
    def test_anyPrefixAgrees(self, data: bytes, after: bytes) -> None:
        """
        Every prefix of the input gets "need more" or the whole input's own
        answer: the same header (with the prefix's share of what follows)
        or the same error (its quote of the bytes may be shorter).  So
        however the input is cut into reads, the answer is the same.
        """
        data += after
        try:
            whole = parseProxyHeader(data)
        except ProxyHeaderError as e:
            wholeError: str | None = str(e)
            whole = None
        else:
            wholeError = None
        for end in range(len(data) + 1):
            try:
                part = parseProxyHeader(data[:end])
            except ProxyHeaderError as e:
                # The same reason; a quote of the bytes may be shorter.
                self.assertIsNotNone(wholeError, end)
                self.assertEqual(
                    str(e).split(": starts with")[0],
                    str(wholeError).split(": starts with")[0],
                    end,
                )
                continue
            if part is None:
                continue
            assert whole is not None
            header, rest = part
            self.assertEqual(header, whole[0])
            self.assertEqual(data[:end][len(data) - len(whole[1]) :], rest)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=300))
    def test_garbageRaisesOnlyHeaderErrors(self, data: bytes) -> None:
        """
        Any bytes at all get "need more", a header, or L{ProxyHeaderError}:
        never another exception.
        """
        for prefix in (
            b"",
            b"PROXY ",
            b"PROXY TCP4 ",
            V2_SIGNATURE,
            V2_SIGNATURE + b"!",
        ):
            try:
                parseProxyHeader(prefix + data)
            except ProxyHeaderError:
                pass

    def test_writeRefusesMixedFamilies(self) -> None:
        """
        L{formatProxyHeader} refuses headers it cannot write.
        """
        unix = ProxyAddress("unix", "/a")
        self.assertRaises(ValueError, formatProxyHeader, ProxyHeader(2, CLIENT, unix))
        self.assertRaises(ValueError, formatProxyHeader, ProxyHeader(1, unix, unix))
        self.assertRaises(ValueError, formatProxyHeader, ProxyHeader(1, CLIENT, None))
