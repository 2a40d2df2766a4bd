# -*- test-case-name: tests.test_echo -*-
"""
The echo service (RFC 862) over TCP: every byte a client sends comes back,
unchanged and in order.
"""

from __future__ import annotations

from tcpcomm.connection import ConnectionFactory, ConnectionProtocol


class EchoProtocol(ConnectionProtocol):
    """
    Send back every byte received.

    Binary safe.  When the client half-closes, everything it sent is echoed
    and then the server closes.  A client that sends without reading fills
    the server's write buffer, which pauses reading from it: the server holds
    at most about one buffer (64 KiB) plus one read for it.
    """

    __slots__ = ()

    def dataReceived(self, data: bytes) -> None:
        """
        Echo C{data}.
        """
        self.countIn(len(data))
        self.send(data)


class EchoFactory(ConnectionFactory):
    """
    Build L{EchoProtocol}s.
    """

    protocol = EchoProtocol
