# -*- test-case-name: tests.test_transport -*-
"""
A TCP transport that sends at once when nothing is waiting to be sent.

Twisted's TCP transport never sends from C{write()}: it appends the bytes to
a buffer, asks the reactor to watch the socket for writability, and sends
one loop turn later -- two extra system calls (switching write-watching on
and off) and a loop turn for every reply of a request/response protocol.
L{WriteThroughServer} tries C{send()} at once when its buffer is empty and
falls back to Twisted's buffering for whatever the kernel did not take, so
flow control, half-close and ordering are Twisted's own.

It plugs in where Twisted documents it: C{tcp.Port.transport} names the
connection class a port builds.  L{WriteThroughPort} is such a port;
L{listenTCP}, L{adoptStreamPort} and L{writeThroughReactor} are the ways to
get one.
"""

from __future__ import annotations

import os
import socket
from errno import EWOULDBLOCK
from typing import Any, cast

from twisted.internet import main, tcp
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorSocket,
    IReactorTCP,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.python.runtime import platform

from tcpcomm.endpoints import DEFAULT_BACKLOG

__all__ = [
    "WriteThroughPort",
    "WriteThroughServer",
    "adoptStreamPort",
    "listenTCP",
    "writeThroughReactor",
]


_TWISTED_DEFAULTS = (
    "TLS",
    "_aborting",
    "_writeDisconnecting",
    "bufferSize",
    "connected",
    "dataBuffer",
    "disconnecting",
    "producer",
    "producerPaused",
    "streamingProducer",
)
"""
The attributes of Twisted's TCP transport that L{WriteThroughServer} keeps
in slots, each starting at Twisted's class default (C{_tempDataLen} has
none: Twisted sets it in C{__init__}).
"""


class WriteThroughServer(tcp.Server):
    """
    A server-side TCP connection whose C{write} sends at once when it can.

    It sends directly only when all of these hold; otherwise it buffers as
    Twisted does:

      - nothing is buffered (so bytes never overtake earlier ones);
      - the connection is open and no close, abort or half-close is under
        way;
      - TLS is not started on it (C{startTLS} bytes must be encrypted);
      - no producer is registered, or a streaming one that is not paused
        (Twisted resumes a pull producer only from its own write path).

    What the kernel does not take is buffered, and any error from the direct
    C{send} is left for the reactor's normal write path to find, so
    C{connectionLost} never runs from inside C{write}.
    """

    # What write() and doRead() read, in slots: CPython specializes loads
    # of slots (and of instance attributes), not of class attributes read
    # through an instance -- each of those is a generic lookup, about 200
    # instructions, on every read or write.  Slots rather than instance
    # attributes for Twisted's class defaults: 8 bytes each, where copying
    # them into the instance dictionary grows it (measured: 43 bytes more
    # per idle connection than these slots).
    __slots__ = (*_TWISTED_DEFAULTS, "_descriptor", "_tempDataLen")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Twisted's class defaults, which the slots hide.
        for name in _TWISTED_DEFAULTS:
            setattr(self, name, getattr(tcp.Server, name))
        super().__init__(*args, **kwargs)
        # os.read and os.write take their arguments without building a
        # tuple and parsing it, as socket.recv and socket.send do: about 500
        # instructions less per call, for the same system call on a connected
        # TCP socket.  The descriptor is used only while the connection is
        # open: doRead runs only for a registered reader, and write() sends
        # only while connected (Twisted clears that before closing the
        # socket).
        self._descriptor = self.socket.fileno()

    def write(self, data: bytes) -> None:
        if (
            data.__class__ is bytes
            and not self._tempDataLen
            and not self.dataBuffer
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnecting
            and not self._aborting
            and not self.TLS
            and (
                self.producer is None
                or (self.streamingProducer and not self.producerPaused)
            )
        ):
            try:
                sent = os.write(self._descriptor, data)
            except OSError:
                # Would block: buffer it all.  Any other error: buffer it all
                # too, and let doWrite meet the error and disconnect.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)

    def doRead(self) -> Any:
        """
        Read what the socket has and hand it to the protocol: Twisted's
        C{doRead} and C{_dataReceived} in one call, one frame less per read.
        """
        try:
            data = os.read(self._descriptor, self.bufferSize)
        except OSError as e:
            if e.args[0] == EWOULDBLOCK:
                return None
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.protocol.dataReceived(data)
        return None

    # Twisted formats two strings per connection in __init__ (about 200
    # bytes of an idle connection); these build them when first asked for.
    _logPrefixText: str | None = None

    @property
    def logstr(self) -> str:
        """
        The log prefix, C{"Protocol,sessionno,host"}, made on first use.
        """
        if self._logPrefixText is None:
            protocol = getattr(self, "protocol", None)
            prefix = "-" if protocol is None else self._getLogPrefix(protocol)
            self._logPrefixText = f"{prefix},{self.sessionno},{self.hostname}"
        return self._logPrefixText

    @logstr.setter
    def logstr(self, value: str) -> None:
        """
        Ignore C{tcp.Server.__init__}'s eager value.
        """

    @property
    def repstr(self) -> str:
        """
        C{"<Protocol #sessionno on port>"}, made when asked for.
        """
        protocol = getattr(self, "protocol", None)
        name = "-" if protocol is None else protocol.__class__.__name__
        port = getattr(self.server, "_realPortNumber", None)
        return f"<{name} #{self.sessionno} on {port}>"

    @repstr.setter
    def repstr(self, value: str) -> None:
        """
        Ignore C{tcp.Server.__init__}'s eager value.
        """

    def writeSequence(self, iovec: Any) -> None:
        chunks = list(iovec)
        if not self.TLS and all(chunk.__class__ is bytes for chunk in chunks):
            self.write(b"".join(chunks))
        else:
            super().writeSequence(chunks)


class WriteThroughPort(tcp.Port):
    """
    A listening TCP port whose connections are L{WriteThroughServer}s.
    """

    transport = WriteThroughServer


def _writeThroughWorks(reactor: object) -> bool:
    """
    Whether L{WriteThroughServer} can serve on C{reactor}: a POSIX reactor
    of Twisted's, on a system whose sockets are file descriptors.
    """
    return isinstance(reactor, PosixReactorBase) and not platform.isWindows()


def listenTCP(
    reactor: IReactorTCP,
    port: int,
    factory: IProtocolFactory,
    backlog: int = DEFAULT_BACKLOG,
    interface: str = "",
) -> IListeningPort:
    """
    Listen like C{reactor.listenTCP}, with write-through connections.

    Reactors that are not Twisted's POSIX ones (IOCP, test fakes), and any
    reactor on Windows (where a socket is not a file descriptor), get their
    own C{listenTCP}.

    @raise twisted.internet.error.CannotListenError: As C{listenTCP} does.
    """
    if not _writeThroughWorks(reactor):
        return reactor.listenTCP(
            port, cast(Any, factory), backlog=backlog, interface=interface
        )
    listening = WriteThroughPort(port, factory, backlog, interface, reactor)
    listening.startListening()
    return listening


def adoptStreamPort(
    reactor: IReactorSocket,
    fileDescriptor: int,
    addressFamily: socket.AddressFamily,
    factory: IProtocolFactory,
) -> IListeningPort:
    """
    Listen on an inherited listening socket like C{reactor.adoptStreamPort},
    with write-through connections for TCP (other families get the
    reactor's own).

    As with Twisted's, the descriptor is duplicated: close C{fileDescriptor}
    yourself afterwards if you no longer need it.
    """
    if addressFamily not in (
        socket.AF_INET,
        socket.AF_INET6,
    ) or not _writeThroughWorks(reactor):
        return reactor.adoptStreamPort(
            fileDescriptor, addressFamily, cast(Any, factory)
        )
    listening = WriteThroughPort._fromListeningDescriptor(
        reactor, fileDescriptor, addressFamily, factory
    )
    listening.startListening()
    return listening  # type: ignore[no-any-return]


class _WriteThroughReactor:
    """
    A reactor as seen by Twisted's endpoints: everything is the real
    reactor's except C{listenTCP}, which builds write-through ports.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def listenTCP(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        return listenTCP(self._reactor, port, factory, backlog, interface)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def writeThroughReactor(reactor: Any) -> Any:
    """
    Wrap C{reactor} so that endpoints built on it (C{serverFromString},
    C{TCP4ServerEndpoint}, C{strports.service}) listen with write-through
    TCP connections.  Every other use goes to C{reactor} unchanged.
    """
    if isinstance(reactor, _WriteThroughReactor):
        return reactor
    return _WriteThroughReactor(reactor)
