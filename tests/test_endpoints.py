"""
Tests for L{tcpcomm.endpoints}.
"""

from __future__ import annotations

import sys

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.endpoints import (
    DEFAULT_BACKLOG,
    DEFAULT_UNIX_MODE,
    checkTLSAvailable,
    formatAddress,
    serverEndpointDescription,
    systemdActivationHint,
)


class ServerEndpointDescriptionTests(SynchronousTestCase):
    """
    L{serverEndpointDescription} turns C{--port} values into descriptions.
    """

    def test_bareNumber(self) -> None:
        """
        A bare port number becomes a TCP endpoint with tcpcomm's backlog.
        """
        self.assertEqual(
            serverEndpointDescription("8000"), f"tcp:8000:backlog={DEFAULT_BACKLOG}"
        )

    def test_backlogAddedToTcpAndSsl(self) -> None:
        """
        TCP, TCP6 and SSL descriptions without a backlog get the default one.
        """
        for text in ("tcp:80:interface=127.0.0.1", "tcp6:80", "ssl:443:privateKey=k"):
            self.assertEqual(
                serverEndpointDescription(text, backlog=7), f"{text}:backlog=7"
            )

    def test_explicitBacklogKept(self) -> None:
        """
        A backlog the user gave is left alone.
        """
        text = "tcp:8000:backlog=10"
        self.assertEqual(serverEndpointDescription(text), text)

    def test_escapedBacklogIsNotABacklog(self) -> None:
        """
        An escaped colon before C{backlog=} (inside another value) does not
        count as a backlog option.
        """
        text = r"ssl:8443:privateKey=a\:backlog=1"
        self.assertTrue(serverEndpointDescription(text).endswith(":backlog=1024"))

    def test_otherKindsUnchanged(self) -> None:
        """
        Kinds with no backlog or mode to add pass through untouched.
        """
        for text in ("systemd:domain=INET:index=0", "unix:/tmp/sock:mode=600"):
            self.assertEqual(serverEndpointDescription(text), text)

    def test_unixModeAdded(self) -> None:
        """
        A UNIX socket description naming no mode gets mode 660, not
        Twisted's 666.
        """
        self.assertEqual(
            serverEndpointDescription("unix:/tmp/sock"), "unix:/tmp/sock:mode=660"
        )
        self.assertEqual(
            serverEndpointDescription("unix:address=/tmp/s:lockfile=0"),
            "unix:address=/tmp/s:lockfile=0:mode=660",
        )
        self.assertEqual(DEFAULT_UNIX_MODE, "660")

    def test_escapedModeIsNotAMode(self) -> None:
        """
        C{\\:mode=} inside a path is part of the path, so a mode is added.
        """
        self.assertEqual(
            serverEndpointDescription(r"unix:/tmp/a\:mode=1"),
            r"unix:/tmp/a\:mode=1:mode=660",
        )

    def test_backlogOutOfRangeRejected(self) -> None:
        """
        A backlog that is not a whole number from 1 to 65535 is refused,
        naming it.
        """
        for backlog in ("0", "-1", "65536", "1e3", "", "99999999999999999999"):
            error = self.assertRaises(
                ValueError, serverEndpointDescription, f"tcp:8000:backlog={backlog}"
            )
            self.assertEqual(
                str(error),
                f"backlog must be a whole number from 1 to 65535, not {backlog!r}",
            )
        self.assertEqual(
            serverEndpointDescription("tcp:8000:backlog=65535"),
            "tcp:8000:backlog=65535",
        )

    def test_whitespaceStripped(self) -> None:
        """
        Surrounding whitespace is ignored.
        """
        self.assertEqual(serverEndpointDescription(" 9 "), "tcp:9:backlog=1024")

    def test_emptyRejected(self) -> None:
        """
        An empty description is refused with C{ValueError}.
        """
        self.assertRaises(ValueError, serverEndpointDescription, "  ")


class FormatAddressTests(SynchronousTestCase):
    """
    L{formatAddress} names addresses as people type them.
    """

    def test_ipv4(self) -> None:
        """
        IPv4 addresses print as host:port.
        """
        self.assertEqual(
            formatAddress(IPv4Address("TCP", "127.0.0.1", 8000)), "127.0.0.1:8000"
        )

    def test_ipv6(self) -> None:
        """
        IPv6 addresses print with brackets around the host.
        """
        self.assertEqual(formatAddress(IPv6Address("TCP", "::1", 8000)), "[::1]:8000")

    def test_unix(self) -> None:
        """
        UNIX addresses print as unix:path, and unnamed ones say so.
        """
        self.assertEqual(formatAddress(UNIXAddress(b"/tmp/s")), "unix:/tmp/s")
        self.assertEqual(formatAddress(UNIXAddress(None)), "unix:(unnamed)")


class CheckTLSAvailableTests(SynchronousTestCase):
    """
    L{checkTLSAvailable} explains what TLS endpoints need.
    """

    def test_plainEndpointsPass(self) -> None:
        """
        Endpoints that are not TLS never need the TLS libraries.
        """
        checkTLSAvailable("tcp:8000")
        checkTLSAvailable("unix:/tmp/s")

    def test_missingLibrariesExplained(self) -> None:
        """
        Without pyOpenSSL, a TLS endpoint is refused with the command that
        installs the extra from the checkout, not from a package index.
        """
        self.patch(sys, "modules", {**sys.modules, "OpenSSL": None})
        for description in ("ssl:8443", "tls:example.com:443"):
            error = self.assertRaises(ValueError, checkTLSAvailable, description)
            self.assertEqual(
                str(error),
                "TLS needs pyOpenSSL and service_identity:"
                " pip install '.[tls]' (from the tcpcomm checkout)",
            )


class SystemdActivationHintTests(SynchronousTestCase):
    """
    L{systemdActivationHint} explains a C{systemd:} port with no socket.
    """

    def test_indexAndName(self) -> None:
        """
        An index or a name is named, with the variables a process needs.
        """
        for description, which in (
            ("systemd:domain=INET:index=0", "at index 0"),
            ("systemd:domain=UNIX:name=web", "named 'web'"),
        ):
            hint = systemdActivationHint(description)
            assert hint is not None
            self.assertTrue(hint.startswith(f"no socket inherited {which}: "), hint)
            self.assertIn("LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES", hint)
            self.assertIn("--fdname=NAME", hint)

    def test_unknownDomain(self) -> None:
        """
        A domain with no C{AF_} constant is named.
        """
        self.assertEqual(
            systemdActivationHint("systemd:domain=NOPE:index=0"),
            "unknown domain 'NOPE': use INET, INET6 or UNIX",
        )

    def test_nothingToSay(self) -> None:
        """
        Other kinds, and descriptions Twisted explains better, get C{None}.
        """
        for description in (
            "tcp:8000",
            "systemd:domain=INET",
            "systemd:domain=INET:index=0:name=a",
            "systemd:domain=INET:index=-1",
            "systemd:domain=INET:index=x",
        ):
            self.assertIsNone(systemdActivationHint(description), description)


class UnixModeTests(SynchronousTestCase):
    """
    The C{mode} of a C{unix:} description is checked.
    """

    def test_badModeRejected(self) -> None:
        """
        A mode that is not octal permission bits from 0 to 777 is refused.
        """
        for mode in ("", "abc", "8", "1777", "7777", "-1", "0x1ff", "99999999999"):
            error = self.assertRaises(
                ValueError, serverEndpointDescription, f"unix:/tmp/s:mode={mode}"
            )
            self.assertEqual(
                str(error),
                f"mode must be permission bits in octal, 0 to 777, not {mode!r}",
            )

    def test_goodModesKept(self) -> None:
        """
        Modes from 0 to 777, with or without leading zeros, are kept as given.
        """
        for mode in ("0", "600", "0660", "00777"):
            text = f"unix:/tmp/s:mode={mode}"
            self.assertEqual(serverEndpointDescription(text), text)
