# -*- test-case-name: tests.test_client -*-
"""
The client side: connect, send, half-close ("I am done sending", as Java's
C{shutdownOutput()} or C{shutdown(fd, SHUT_WR)}), and read every byte the
server sends until it closes.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["ConnectionFailed", "clientEndpoint", "exchange"]

DEFAULT_TIMEOUT = 30.0

_SHORTHAND = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]=]+)):(?P<port>\d+)$")
_ENDPOINT_KINDS = frozenset({"tcp", "tcp6", "ssl", "tls", "unix"})


class ConnectionFailed(Exception):
    """
    Talking to a server failed; the message says how, and names the server.
    """


def clientEndpoint(reactor: Any, text: str) -> IStreamClientEndpoint:
    """
    Turn C{HOST:PORT} (C{[::1]:8000} for IPv6) or any Twisted client endpoint
    description (C{tcp:host=…:port=…}, C{unix:path=…}, C{tls:host:port})
    into an endpoint.  Host names resolve to IPv4 and IPv6 addresses and
    each is tried (L{HostnameEndpoint}).
    """
    match = _SHORTHAND.match(text.strip())
    if match and (match["v6"] or match["host"].lower() not in _ENDPOINT_KINDS):
        host = match["v6"] or match["host"]
        return HostnameEndpoint(reactor, host, int(match["port"]))
    endpoint: IStreamClientEndpoint = clientFromString(reactor, text)
    return endpoint


@implementer(IHalfCloseableProtocol)
class _Exchange(Protocol):
    """
    Send some bytes, half-close, and collect the reply until the server
    closes.
    """

    transport: ITCPTransport

    def __init__(self, data: bytes, done: Deferred[bytes]) -> None:
        self._data = data
        self._received: list[bytes] = []
        self._done = done

    def connectionMade(self) -> None:
        if self._data:
            self.transport.write(self._data)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self._received.append(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._done.called:
            return
        if reason.check(error.ConnectionDone):
            self._done.callback(b"".join(self._received))
        else:
            self._done.errback(reason)


def _describeFailure(failure: Failure, where: str, timeout: float) -> Failure:
    if failure.check(ConnectionFailed):
        return failure
    if failure.check(error.ConnectionRefusedError):
        message = f"connection refused by {where}"
    elif failure.check(error.DNSLookupError):
        message = f"name not found: {where}"
    elif failure.check(error.TimeoutError, defer.TimeoutError):
        message = f"timed out after {timeout:g} s talking to {where}"
    elif failure.check(error.ConnectionLost, error.ConnectionAborted):
        message = f"connection reset by {where}"
    else:
        message = f"{failure.getErrorMessage()} ({where})"
    return Failure(ConnectionFailed(message))


def exchange(
    reactor: Any,
    endpoint: IStreamClientEndpoint | str,
    data: bytes,
    timeout: float = DEFAULT_TIMEOUT,
) -> Deferred[bytes]:
    """
    Connect, write C{data}, half-close, and collect everything the server
    sends until it closes.

    @param reactor: The reactor to connect with.
    @param endpoint: Where to connect: an endpoint, or text for
        L{clientEndpoint}.
    @param data: What to send before half-closing.
    @param timeout: Seconds the whole exchange may take.
    @return: A Deferred firing with every byte the server sent, or failing
        with L{ConnectionFailed} (refused, name not found, timed out, reset).
    """
    where = endpoint if isinstance(endpoint, str) else repr(endpoint)
    if isinstance(endpoint, str):
        endpoint = clientEndpoint(reactor, endpoint)
    protocols: list[_Exchange] = []

    def cancel(d: Deferred[bytes]) -> None:
        for protocol in protocols:
            protocol.transport.abortConnection()

    done: Deferred[bytes] = Deferred(cancel)

    def build() -> _Exchange:
        protocol = _Exchange(data, done)
        protocols.append(protocol)
        return protocol

    connecting = endpoint.connect(Factory.forProtocol(build))

    def connectFailed(failure: Failure) -> None:
        if not done.called:
            done.errback(failure)

    connecting.addErrback(connectFailed)

    def timedOut(failure: Failure) -> Failure:
        if not protocols:
            connecting.cancel()
        return failure

    done.addTimeout(timeout, reactor)
    done.addErrback(timedOut)
    done.addErrback(_describeFailure, where, timeout)
    return done
