# -*- test-case-name: tests.test_client -*-
"""
The client side: connect, send, half-close ("I am done sending", as Java's
C{shutdownOutput()} or C{shutdown(fd, SHUT_WR)}), and read every byte the
server sends until it closes.

Failures come as L{ConnectionFailed}, whose message says what went wrong and
names the server: refused, name not found, timed out, reset.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpcomm.certificates import escapeDescription
from tcpcomm.endpoints import checkTLSAvailable, describeParseProblem
from tcpcomm.hostport import splitHostPort

__all__ = [
    "DEFAULT_TIMEOUT",
    "ConnectionFailed",
    "clientEndpoint",
    "describeEndpoint",
    "exchange",
    "halfClose",
    "isTLS",
]

DEFAULT_TIMEOUT = 30.0
"""
Seconds an exchange may take by default.
"""

_USAGE = " (use HOST:PORT or a Twisted client endpoint description)"


class ConnectionFailed(Exception):
    """
    Talking to a server failed.  The message says how and names the server.

    @ivar received: What the server had sent before the failure.
    """

    def __init__(self, message: str, received: bytes = b"") -> None:
        super().__init__(message)
        self.received = received


def clientEndpoint(reactor: Any, text: str) -> IStreamClientEndpoint:
    """
    Turn C{HOST:PORT} (C{[::1]:8000} for IPv6) or any Twisted client endpoint
    description (C{tcp:host=…:port=…}, C{unix:path=…}, C{tls:host:port},
    C{tls:[::1]:port}) into an endpoint.  Host names resolve to both IPv4
    and IPv6 addresses and each is tried (L{HostnameEndpoint}).

    @raise ValueError: If C{text} is neither, or names a port outside
        1-65535, with a readable message that names C{text}.
    """
    shorthand = splitHostPort(text)
    if shorthand is not None:
        host, port = shorthand
        return HostnameEndpoint(reactor, host, _checkPort(port, text))
    if ":" not in text:
        raise ValueError(f"bad endpoint {text!r}: no port given{_USAGE}")
    checkTLSAvailable(text)
    try:
        endpoint: IStreamClientEndpoint = clientFromString(reactor, _bracketedTLS(text))
    except Exception as e:
        problem = describeParseProblem(e)
        raise ValueError(f"bad endpoint {text!r}: {problem}{_USAGE}") from None
    portNumber = _innermost(endpoint, "_port")
    if isinstance(portNumber, int):
        _checkPort(str(portNumber), text)
    return endpoint


_BRACKETED_TLS = re.compile(
    r"^(?P<kind>tls):\[(?P<host>[0-9A-Fa-f:.%]+)\]:(?P<port>\d+)(?P<rest>(?::.*)?)$",
    re.IGNORECASE,
)


def _bracketedTLS(text: str) -> str:
    """
    Rewrite C{tls:[IPV6]:PORT…}, which Twisted's parser cannot read, into
    the description it can: the address escaped for certificate checks, and
    a C{tcp:} endpoint to that address (Twisted's C{tls:} parser would pass
    the address through IDNA, which refuses colons).
    """
    match = _BRACKETED_TLS.match(text.strip())
    if match is None or "endpoint=" in match["rest"]:
        return text
    host, port = match["host"], match["port"]
    inner = f"tcp:host={escapeDescription(host)}:port={port}"
    return (
        f"tls:{escapeDescription(host)}:{port}{match['rest']}"
        f":endpoint={escapeDescription(inner)}"
    )


def _checkPort(port: str, text: str) -> int:
    """
    The port C{port} names, if it is one a client can connect to.

    @raise ValueError: If it is not within 1-65535.
    """
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad endpoint {text!r}: port {port} is not within 1-65535")
    return int(port)


def _innermost(endpoint: object, name: str) -> object:
    """
    The attribute C{name} of C{endpoint}, or of the endpoint it wraps (TLS).
    """
    inner = getattr(endpoint, "_wrappedEndpoint", None)
    if inner is not None:
        return _innermost(inner, name)
    return getattr(endpoint, name, None)


def describeEndpoint(endpoint: IStreamClientEndpoint | str) -> str:
    """
    Name an endpoint for error messages, as well as it can be named.
    """
    if isinstance(endpoint, str):
        return endpoint
    host = _innermost(endpoint, "_hostText") or _innermost(endpoint, "_host")
    port = _innermost(endpoint, "_port")
    if isinstance(host, str) and isinstance(port, int):
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    path = _innermost(endpoint, "_path")
    if isinstance(path, str):
        return f"unix:{path}"
    return repr(endpoint)


def isTLS(transport: object) -> bool:
    """
    Whether C{transport} is Twisted's TLS transport (C{tls:} and C{ssl:}
    endpoints), which provides C{ITCPTransport} just as plain TCP does.
    """
    try:
        from twisted.protocols.tls import TLSMemoryBIOProtocol
    except ImportError:
        return False
    return isinstance(transport, TLSMemoryBIOProtocol)


def halfClose(transport: ITCPTransport) -> None:
    """
    Say "I am done sending", and go on reading.

    Over TCP that is a FIN (C{loseWriteConnection}).  Over TLS it is a
    C{close_notify}: Twisted's TLS C{loseConnection} sends it after what was
    written and goes on delivering what the server sends until the server's
    C{close_notify}.  (Its C{loseWriteConnection} sends a bare TCP FIN,
    which servers take for a lost connection, Twisted #5341.)  Over TLS,
    call this once the handshake is done (L{IHandshakeListener}) or once
    something was written: before, with nothing written, Twisted aborts.
    """
    if isTLS(transport):
        transport.loseConnection()
    else:
        transport.loseWriteConnection()


def _sslReasons(value: BaseException | None) -> str:
    """
    The reasons an C{OpenSSL.SSL.Error} gives, such as C{certificate verify
    failed}.
    """
    args = getattr(value, "args", ())
    entries = args[0] if args and isinstance(args[0], list) else []
    reasons = [entry[-1] for entry in entries if isinstance(entry, tuple) and entry]
    return "; ".join(str(r) for r in reasons) or str(value) or type(value).__name__


def _mismatches(value: BaseException | None) -> str:
    """
    The names or addresses a C{service_identity.VerificationError} did not
    find in the certificate.
    """
    names = []
    for problem in getattr(value, "errors", []):
        wanted = getattr(problem, "mismatched_id", None)
        name = getattr(wanted, "hostname", None) or getattr(wanted, "ip", None)
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if name is not None:
            names.append(str(name))
    return ", ".join(names) or "the name asked for"


def describeFailure(
    failure: Failure, where: str, timeout: float | None, connected: bool
) -> ConnectionFailed:
    """
    Turn a Twisted connection failure into a L{ConnectionFailed} whose
    message names C{where}.
    """
    if isinstance(failure.value, ConnectionFailed):
        return failure.value
    if failure.check(error.ConnectionRefusedError):
        message = f"connection refused by {where}"
    elif failure.check(error.DNSLookupError):
        message = f"name not found: {where}"
    elif failure.check(error.TimeoutError, defer.TimeoutError):
        doing = "waiting for" if connected else "connecting to"
        after = "" if timeout is None else f" after {timeout:g} s"
        message = f"timed out{after} {doing} {where}"
    elif failure.check(error.ConnectionLost, error.ConnectionAborted):
        message = f"connection reset by {where}"
    elif failure.check("service_identity.exceptions.VerificationError"):
        message = (
            f"TLS certificate verification failed for {where}: the certificate"
            f" is not valid for {_mismatches(failure.value)}"
        )
    elif failure.check("OpenSSL.SSL.Error"):
        message = f"TLS failed with {where}: {_sslReasons(failure.value)}"
    elif isinstance(failure.value, error.ConnectError) and isinstance(
        failure.value.osError, int
    ):
        reason = os.strerror(failure.value.osError).lower()
        message = f"cannot connect to {where}: {reason}"
    else:
        message = f"{failure.getErrorMessage()} ({where})"
    return ConnectionFailed(message)


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class _Exchange(Protocol):
    """
    Send some bytes, half-close, and collect the reply until the server
    closes.  Over TLS the half-close waits for the end of the handshake.
    """

    transport: ITCPTransport

    def __init__(self, data: bytes, done: Deferred[bytes]) -> None:
        self._data = data
        self._received: list[bytes] = []
        self._done = done
        self._serverFinished = False

    def connectionMade(self) -> None:
        if self._data:
            self.transport.write(self._data)
        if not isTLS(self.transport):
            halfClose(self.transport)

    def handshakeCompleted(self) -> None:
        halfClose(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self._received.append(data)

    def readConnectionLost(self) -> None:
        self._serverFinished = True
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def received(self) -> bytes:
        return b"".join(self._received)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._done.called:
            return
        # A server that answered and closed before reading all we sent may
        # reset the connection after its FIN: the answer is still whole.
        if self._serverFinished or reason.check(error.ConnectionDone):
            self._done.callback(self.received())
        else:
            self._done.errback(reason)


def exchange(
    reactor: Any,
    endpoint: IStreamClientEndpoint | str,
    data: bytes,
    timeout: float = DEFAULT_TIMEOUT,
) -> Deferred[bytes]:
    """
    Connect, write C{data}, half-close, and collect everything the server
    sends until it closes.

    Works with any server that closes when done: one that answers only
    after end of input, and one that answers and closes first.  (A server
    that closes without reading everything sent to it makes its kernel reset
    the connection; that fails as "reset", and what arrived before is in
    L{ConnectionFailed.received}.)

    @param reactor: The reactor to connect with.
    @param endpoint: Where to connect: an endpoint, or text for
        L{clientEndpoint}.
    @param data: What to send before half-closing.
    @param timeout: Seconds the whole exchange may take.
    @return: A Deferred firing with every byte the server sent, or failing
        with L{ConnectionFailed} (refused, name not found, timed out, reset),
        which carries what had arrived before the failure.  Cancelling it
        closes the connection and fails it with C{CancelledError}.
    """
    where = describeEndpoint(endpoint)
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

    def failed(failure: Failure) -> Failure:
        if not protocols:
            connecting.cancel()
        if failure.check(defer.CancelledError):
            # Cancelled by the caller: not a connection failure.
            return failure
        problem = describeFailure(failure, where, timeout, bool(protocols))
        if protocols:
            problem.received = protocols[0].received()
        return Failure(problem)

    done.addTimeout(timeout, reactor)
    done.addErrback(failed)
    return done
