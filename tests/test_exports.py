"""
Tests for the public API that L{tcpcomm} re-exports.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

import tcpcomm


class ExportsTests(SynchronousTestCase):
    """
    C{tcpcomm.__all__} is the public API and stays importable.
    """

    def test_allNamesExist(self) -> None:
        """
        Every name in C{__all__} is an attribute of the package.
        """
        for name in tcpcomm.__all__:
            self.assertTrue(hasattr(tcpcomm, name), name)

    def test_publicApi(self) -> None:
        """
        The public API is exactly this list; changing it is a decision.
        """
        self.assertEqual(
            sorted(tcpcomm.__all__),
            [
                "ChatFactory",
                "ChatProtocol",
                "ChatRoom",
                "ConnectionFactory",
                "ConnectionFailed",
                "ConnectionProtocol",
                "EchoFactory",
                "EchoProtocol",
                "LineClient",
                "LineFactory",
                "LineFramer",
                "LineProtocol",
                "ReconnectingLineClient",
                "RelayFactory",
                "RelayProtocol",
                "ServerStats",
                "__version__",
                "echoLine",
                "exchange",
            ],
        )

    def test_noStrayPublicNames(self) -> None:
        """
        Every public name the package defines at top level is in C{__all__}
        (submodules aside).
        """
        public = {
            name
            for name, value in vars(tcpcomm).items()
            if not name.startswith("_") and type(value).__name__ != "module"
        }
        self.assertEqual(public - set(tcpcomm.__all__), set())

    def test_version(self) -> None:
        """
        The version is a dotted string.
        """
        self.assertRegex(tcpcomm.__version__, r"^\d+\.\d+\.\d+")
