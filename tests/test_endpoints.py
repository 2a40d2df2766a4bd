"""
Tests for L{tcpcomm.endpoints}.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tcpcomm.endpoints import (
    DEFAULT_BACKLOG,
    DEFAULT_UNIX_MODE,
    SystemdSockets,
    checkTLSAvailable,
    formatAddress,
    serverEndpointDescription,
    systemdActivationHint,
    systemdIndexDescriptor,
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


class SystemdSocketsTests(SynchronousTestCase):
    """
    L{SystemdSockets.fromEnvironment} reads what systemd passed.
    """

    def test_withoutNames(self) -> None:
        """
        C{LISTEN_FDS} sockets from descriptor 3, and no names when
        C{LISTEN_FDNAMES} is unset or empty.
        """
        for extra in ({}, {"LISTEN_FDNAMES": ""}):
            sockets = SystemdSockets.fromEnvironment(
                {"LISTEN_FDS": "2", "LISTEN_PID": "42", **extra}, 42
            )
            self.assertEqual(list(sockets.descriptors), [3, 4])
            self.assertIsNone(sockets.names)

    def test_withNames(self) -> None:
        """
        C{LISTEN_FDNAMES} is split at colons.
        """
        sockets = SystemdSockets.fromEnvironment(
            {"LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "web:admin"},
            42,
        )
        self.assertEqual(sockets.names, ("web", "admin"))

    def test_notThisProcess(self) -> None:
        """
        Sockets passed to another process, or a count that is no number,
        are none of this process's.
        """
        for environ in (
            {"LISTEN_FDS": "1", "LISTEN_PID": "41"},
            {"LISTEN_FDS": "1"},
            {"LISTEN_FDS": "x", "LISTEN_PID": "42"},
            {"LISTEN_FDS": "-1", "LISTEN_PID": "42"},
        ):
            sockets = SystemdSockets.fromEnvironment(environ, 42)
            self.assertEqual(len(sockets.descriptors), 0, environ)

    def test_hugeCountCostsNothing(self) -> None:
        """
        A huge C{LISTEN_FDS} is counted, not listed descriptor by descriptor.
        """
        sockets = SystemdSockets.fromEnvironment(
            {"LISTEN_FDS": str(10**15), "LISTEN_PID": "42"}, 42
        )
        self.assertEqual(len(sockets.descriptors), 10**15)

    def test_environmentAtExec(self) -> None:
        """
        C{LISTEN_FDS} and C{LISTEN_PID} are found after C{os.environ} lost
        them, as it does when C{twisted.internet.endpoints} is imported.
        """
        if not os.path.exists("/proc/self/environ"):
            raise SkipTest("no /proc/self/environ")
        child = (
            "import os, twisted.internet.endpoints;"
            " from tcpcomm.endpoints import SystemdSockets;"
            " assert 'LISTEN_FDS' not in os.environ;"
            " print(list(SystemdSockets.fromEnvironment().descriptors))"
        )
        # Set LISTEN_PID to the PID the child will have, then exec it.
        parent = (
            "import os, sys;"
            " os.environ['LISTEN_PID'] = str(os.getpid());"
            " os.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])"
        )
        result = subprocess.run(
            [sys.executable, "-c", parent, child],
            env={**os.environ, "LISTEN_FDS": "2"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(result.stdout, "[3, 4]\n", result.stderr)


class SystemdIndexDescriptorTests(SynchronousTestCase):
    """
    L{systemdIndexDescriptor} finds sockets passed without names by index.
    """

    unnamed = SystemdSockets(range(3, 5))

    def test_byIndex(self) -> None:
        """
        C{index=N} is descriptor 3+N, with the domain's address family.
        """
        for description, expected in (
            ("systemd:domain=INET:index=0", (3, socket.AF_INET)),
            ("systemd:domain=INET6:index=1", (4, socket.AF_INET6)),
            ("systemd:domain=UNIX:index=0", (3, socket.AF_UNIX)),
        ):
            self.assertEqual(
                systemdIndexDescriptor(description, self.unnamed), expected
            )

    def test_beyondThoseInherited(self) -> None:
        """
        An index beyond the sockets passed is refused in one line saying how
        many were.
        """
        error = self.assertRaises(
            ValueError,
            systemdIndexDescriptor,
            "systemd:domain=INET:index=2",
            self.unnamed,
        )
        self.assertEqual(
            str(error),
            "no socket inherited at index 2: 2 sockets were passed"
            " (LISTEN_FDS=2), so index may be 0 to 1",
        )

    def test_leftToTwisted(self) -> None:
        """
        Named sockets, no sockets, C{name=}, unknown domains and other kinds
        are left to Twisted (C{None}).
        """
        named = SystemdSockets(range(3, 4), ("web",))
        for description, sockets in (
            ("systemd:domain=INET:index=0", named),
            ("systemd:domain=INET:index=0", SystemdSockets()),
            ("systemd:domain=INET:name=web", self.unnamed),
            ("systemd:domain=INET:index=0:name=web", self.unnamed),
            ("systemd:domain=INET:index=x", self.unnamed),
            ("systemd:domain=PACKET:index=0", self.unnamed),
            ("tcp:8000", self.unnamed),
        ):
            self.assertIsNone(systemdIndexDescriptor(description, sockets))


class SystemdActivationHintTests(SynchronousTestCase):
    """
    L{systemdActivationHint} explains a C{systemd:} port with no socket.
    """

    def test_nonePassed(self) -> None:
        """
        With no socket passed, an index or a name is named, and how to pass
        one.
        """
        for description, which in (
            ("systemd:domain=INET:index=0", "at index 0"),
            ("systemd:domain=UNIX:name=web", "named 'web'"),
        ):
            self.assertEqual(
                systemdActivationHint(description, SystemdSockets()),
                f"no socket inherited {which}: none were passed to this process"
                " (LISTEN_FDS and LISTEN_PID are not set for it): start tcpcomm"
                " from a systemd socket unit or under systemd-socket-activate",
            )

    def test_nameWithoutNames(self) -> None:
        """
        A name, when the sockets were passed without names, points to
        C{LISTEN_FDNAMES} and to C{index}.
        """
        self.assertEqual(
            systemdActivationHint(
                "systemd:domain=INET:name=web", SystemdSockets(range(3, 4))
            ),
            "no socket inherited named 'web': 1 socket was passed without names"
            " (LISTEN_FDNAMES is not set; systemd-socket-activate sets it with"
            " --fdname=NAME): use index=N, from 0",
        )

    def test_namedSockets(self) -> None:
        """
        With named sockets, a missing name lists the names, an index beyond
        them says how many there are, and names that do not match the count
        are pointed out.
        """
        named = SystemdSockets(range(3, 5), ("web", "admin"))
        for description, sockets, reason in (
            (
                "systemd:domain=INET:name=api",
                named,
                "the sockets passed are named 'web', 'admin'",
            ),
            (
                "systemd:domain=INET:index=2",
                named,
                "2 sockets were passed (LISTEN_FDS=2), so index may be 0 to 1",
            ),
            (
                "systemd:domain=INET:index=1",
                SystemdSockets(range(3, 5), ("web",)),
                "LISTEN_FDNAMES names 1 but LISTEN_FDS is 2, so Twisted ignores"
                " them all",
            ),
        ):
            hint = systemdActivationHint(description, sockets)
            assert hint is not None
            self.assertEqual(hint.partition(": ")[2], reason)

    def test_unknownDomain(self) -> None:
        """
        A domain other than INET, INET6 and UNIX is named.
        """
        for domain in ("NOPE", "PACKET"):
            self.assertEqual(
                systemdActivationHint(f"systemd:domain={domain}:index=0"),
                f"unknown domain {domain!r}: use INET, INET6 or UNIX",
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
