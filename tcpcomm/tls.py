# -*- test-case-name: tests.test_tls -*-
"""
TLS that keeps tcpcomm's half-close.

Twisted's TLS layer (L{twisted.protocols.tls}) gives the protocol it wraps
no half-close.  When the client sends C{close_notify} (TLS's "I am done
sending"), Twisted answers with its own at once and closes; when the client
sends a TCP FIN without C{close_notify}, Twisted closes at once.  Either
way replies still being computed are lost, and so are replies written in
the same reactor turn, which Twisted holds back to send small writes
together.  And its C{loseWriteConnection} sends a bare TCP FIN (Twisted
#5341), which peers take for a lost connection.

L{HalfCloseTLSFactory} wraps a factory as L{TLSMemoryBIOFactory} does, but:

  - a wrapped protocol that provides L{IHalfCloseableProtocol} gets
    C{readConnectionLost} on the peer's C{close_notify}, and on a TCP FIN
    without one (L{HalfCloseTLSProtocol.inputTruncated} tells them apart),
    and may go on writing; our C{close_notify} goes out when it closes;
  - C{loseWriteConnection} sends C{close_notify} after what was written,
    and goes on reading.

Protocols without half-close behave as under Twisted's TLS.

L{keepHalfClose} turns the endpoint that C{ssl:} descriptions give into one
that listens with L{HalfCloseTLSFactory}.

Importing this module needs pyOpenSSL (C{tcpcomm[tls]}).
"""

from __future__ import annotations

from typing import Any

from OpenSSL.crypto import X509, PKey
from OpenSSL.SSL import SENT_SHUTDOWN, Error, WantReadError, ZeroReturnError
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "HalfCloseTLSFactory",
    "HalfCloseTLSProtocol",
    "HalfCloseTLSServerEndpoint",
    "keepHalfClose",
]


@implementer(IHalfCloseableProtocol)
class HalfCloseTLSProtocol(BufferingTLSTransport):
    """
    A TLS connection that passes end of input on to a half-closeable
    protocol, and half-closes with C{close_notify}.

    @ivar inputEnded: Whether the peer has finished sending: C{close_notify}
        or a TCP FIN.
    @ivar inputTruncated: Whether input ended with a TCP FIN and no
        C{close_notify}: an attacker on the path can cut a TLS stream that
        way, so a protocol that must know its input is whole checks this.
    """

    inputEnded = False
    inputTruncated = False
    _tcpInputEnded = False
    _writeClosing = False
    _closeWanted = False

    def _closeTCP(self) -> None:
        transport = self.transport
        assert transport is not None
        transport.loseConnection()

    def _halfCloseable(self) -> Any:
        return IHalfCloseableProtocol(self.wrappedProtocol, None)

    def _flushReceiveBIO(self) -> None:
        # TLSMemoryBIOProtocol._flushReceiveBIO, except that the peer's
        # close_notify ends input instead of the connection.
        while not self._lostTLSConnection and not self.inputEnded:
            try:
                data = self._tlsConnection.recv(2**15)
            except WantReadError:
                break
            except ZeroReturnError:
                if self._halfCloseable() is None:
                    self._shutdownTLS()
                    self._tlsShutdownFinished(None)
                else:
                    self._endInput()
            except Error:
                self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    ProtocolWrapper.dataReceived(self, data)
        self._flushSendBIO()

    def _endInput(self) -> None:
        self.inputEnded = True
        try:
            self._halfCloseable().readConnectionLost()
        except BaseException:
            self._tlsShutdownFinished(Failure())
            return
        if self._writeClosing:
            # Both sides are done sending.
            self.loseConnection()

    def readConnectionLost(self) -> None:
        """
        TCP FIN.  A half-closeable protocol that has not had C{close_notify}
        gets end of input, flagged as truncated; any other connection closes
        as under Twisted's TLS.
        """
        self._tcpInputEnded = True
        if self.inputEnded:
            return
        if self._halfCloseable() is None or not self._handshakeDone:
            self._closeTCP()
            return
        # OpenSSL is not told of the EOF: an unexpected EOF is a fatal error
        # that would stop the replies still to be written.  A record cut
        # short by the FIN is dropped.
        self.inputTruncated = True
        self._endInput()

    def writeConnectionLost(self) -> None:
        """
        The TCP write side is closed: nothing to do.
        """

    def loseWriteConnection(self) -> None:
        """
        Half-close the TLS way: send C{close_notify} once everything written
        has been sent, write nothing more, and go on reading until the
        peer's C{close_notify} or FIN.
        """
        if self._writeClosing or self.disconnecting or not self.connected:
            return
        if not self._handshakeDone:
            self.loseConnection()
            return
        self._aggregator.flush()
        self._writeClosing = True
        # Twisted's own logic sends close_notify once its buffer has drained
        # and the producer is gone, and drops later writes.
        self.disconnecting = True
        if not self._appSendBuffer and self._producer is None:
            self._shutdownTLS()

    def loseConnection(self) -> None:
        """
        Close: send C{close_notify} once everything written has been sent,
        and close TCP once the peer's is in, or at once if this side has
        half-closed already.
        """
        if self._writeClosing:
            self._closeWanted = True
            if self._tlsConnection.get_shutdown() & SENT_SHUTDOWN:
                self._closeTCP()
            return
        super().loseConnection()

    def _shutdownTLS(self) -> None:
        super()._shutdownTLS()
        # Our close_notify is out.  Close TCP now if nothing will come to
        # complete the TLS shutdown (the peer sent a bare FIN), or if the
        # protocol asked to close after half-closing.
        if (self._tcpInputEnded or self._closeWanted) and not self._lostTLSConnection:
            self._closeTCP()


class HalfCloseTLSFactory(TLSMemoryBIOFactory):
    """
    A L{TLSMemoryBIOFactory} building L{HalfCloseTLSProtocol}s:
    C{HalfCloseTLSFactory(serverOptions, False, factory)}, for instance with
    L{tcpcomm.testing.startServer}.
    """

    protocol = HalfCloseTLSProtocol


@implementer(IStreamServerEndpoint)
class HalfCloseTLSServerEndpoint:
    """
    Listen with TLS (L{HalfCloseTLSFactory}) on a TCP server endpoint.
    """

    def __init__(self, tcpEndpoint: IStreamServerEndpoint, contextFactory: Any):
        """
        @param tcpEndpoint: Where to listen.
        @param contextFactory: The server's TLS options, such as a
            L{twisted.internet.ssl.CertificateOptions}.
        """
        self._tcpEndpoint = tcpEndpoint
        self._contextFactory = contextFactory

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with C{protocolFactory} behind L{HalfCloseTLSFactory}.
        """
        wrapped = HalfCloseTLSFactory(self._contextFactory, False, protocolFactory)
        return self._tcpEndpoint.listen(wrapped)


def keepHalfClose(endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
    """
    Turn Twisted's C{ssl:} server endpoint (L{SSL4ServerEndpoint}) into one
    that listens on the same port, interface and backlog with the same
    certificate, through L{HalfCloseTLSFactory}; return any other endpoint
    unchanged.
    """
    if type(endpoint) is not SSL4ServerEndpoint:
        return endpoint
    ssl: Any = endpoint
    tcp = TCP4ServerEndpoint(ssl._reactor, ssl._port, ssl._backlog, ssl._interface)
    return HalfCloseTLSServerEndpoint(
        tcp, _withCryptographyObjects(ssl._sslContextFactory)
    )


def _withCryptographyObjects(options: Any) -> Any:
    """
    Give the C{CertificateOptions} that Twisted's C{ssl:} parser makes its
    certificate, key and chain as C{cryptography} objects instead of the
    pyOpenSSL C{X509} and C{PKey} that it loads, which pyOpenSSL 24.3 and
    later deprecate (a C{DeprecationWarning} as each server starts) and
    accept these in their place.  Done before any context is made from
    them; anything else is returned unchanged.
    """
    if isinstance(getattr(options, "certificate", None), X509):
        options.certificate = options.certificate.to_cryptography()
    if isinstance(getattr(options, "privateKey", None), PKey):
        options.privateKey = options.privateKey.to_cryptography_key()
    chain = getattr(options, "extraCertChain", None)
    if chain:
        options.extraCertChain = [
            c.to_cryptography() if isinstance(c, X509) else c for c in chain
        ]
    return options
