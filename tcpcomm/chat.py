# -*- test-case-name: tests.test_chat -*-
"""
Chat mode: each line a client sends reaches every other client.

    <NAME> line         what another client said
    * NAME joined       notices: joined, left, is now NEW
    /nick NEW           pick a name (letters, digits, _ - .); 3 changes at
                        once, then one per 10 s (see L{ChatRoom.rename})
    /who                list who is here
    //text              say "/text"

Replies to a client's own commands (C{/who}, C{ERROR …}) come in order like
any line-mode reply.  Lines from others are sent with
L{ConnectionProtocol.sendUnasked}: a client too slow to read them is
dropped with C{ERROR too slow} once more than C{maxPendingBytes} wait for
it, and the others never wait.  A client's renames within one read reach
the others as one notice, C{* OLD is now NEWEST}; lines from others are
sanitized (see L{tcpcomm.chatroom.sanitize}).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tcpcomm.chatroom import ChatRoom
from tcpcomm.framing import DEFAULT_MAX_LINE_LENGTH
from tcpcomm.line import (
    DEFAULT_MAX_PENDING_BYTES,
    HandlerResult,
    LineFactory,
    LineProtocol,
)


class ChatProtocol(LineProtocol):
    """
    A member of the factory's L{ChatRoom}.
    """

    __slots__ = ("_joined",)

    factory: ChatFactory

    def __init__(self) -> None:
        super().__init__()
        self._joined = False

    def connectionMade(self) -> None:
        """
        Join the room under the peer's address, and say how to go on.
        """
        super().connectionMade()
        if self.refused:
            return
        name = self.factory.room.join(self, self.peer)
        self._joined = True
        self.send(
            b"* welcome, %s: /nick NAME to change it, /who to list"
            b" who is here%s" % (name.encode(), self.factory.delimiter)
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Leave the room.
        """
        self._leave()
        super().connectionLost(reason)

    def deliver(self, text: bytes) -> None:
        """
        Show this client lines from the room (LF-separated, the last without
        a line ending), each ended with the factory's delimiter, in one
        write.
        """
        delimiter = self.factory.delimiter
        if delimiter != b"\n":
            text = text.replace(b"\n", delimiter)
        self.sendUnasked(text + delimiter)

    def answerLines(
        self, lines: list[bytes], handle: Callable[[bytes], HandlerResult]
    ) -> list[object]:
        """
        Answer a read's lines: each run of lines said to the room goes to
        the others as one block (see L{ChatRoom.sayLines}); commands are
        answered one by one, in order with what was said around them; the
        renames among them are announced at the end, in one notice, unless
        something said comes after them (see L{ChatRoom.rename}).
        """
        room = self.factory.room
        results: list[object] = []
        said: list[bytes] = []
        for line in lines:
            if line.startswith(b"/"):
                if not line.startswith(b"//"):
                    if said:
                        room.sayLines(self, said)
                        said = []
                    try:
                        results.append(handle(line))
                    except Exception:
                        results.append(self._handlerRaised())
                    continue
                line = line[1:]
            if line:
                said.append(line)
            results.append(None)
        if said:
            room.sayLines(self, said)
        room.announce(self)
        return results

    def lineReceived(self, line: bytes) -> HandlerResult:
        """
        A command, or something to say to the others.  A rename is
        announced by L{answerLines}, after the read's other renames.
        """
        room = self.factory.room
        if line.startswith(b"/") and not line.startswith(b"//"):
            command, _, argument = line.partition(b" ")
            if command == b"/nick":
                problem = room.rename(self, argument.strip(), announce=False)
                if problem is not None:
                    return b"ERROR " + problem.encode()
                return b"* you are now " + room.nameOf(self).encode()
            if command == b"/who":
                return room.who()
            return b"ERROR unknown command: " + command[:32]
        if line.startswith(b"//"):
            line = line[1:]
        if line:
            room.say(self, line)
        return None

    def tooSlow(self) -> None:
        """
        Too slow to read the room: leave it at once, say so, and close.
        """
        self._leave()
        super().tooSlow()

    def _leave(self) -> None:
        if self._joined:
            self._joined = False
            self.factory.room.leave(self)


class ChatFactory(LineFactory):
    """
    Build L{ChatProtocol}s sharing one L{ChatRoom}.

    @ivar room: The room; observe it with C{room.members} and
        C{room.addObserver}.
    """

    protocol = ChatProtocol

    def __init__(
        self,
        room: ChatRoom | None = None,
        *,
        maxPendingBytes: int = DEFAULT_MAX_PENDING_BYTES,
        delimiter: bytes = b"\n",
        maxLineLength: int = DEFAULT_MAX_LINE_LENGTH,
        clock: IReactorTime | None = None,
        idleTimeout: float | None = None,
        maxConnections: int | None = None,
        maxConnectionsPerHost: int | None = None,
    ) -> None:
        """
        @param room: The room to chat in (a new one by default).
        @param maxPendingBytes: How many bytes of others' lines may wait for
            a slow client before it is dropped with C{ERROR too slow}.

        A new room reads the time from C{clock}, for its limit on renames.
        """
        super().__init__(
            delimiter=delimiter,
            maxLineLength=maxLineLength,
            clock=clock,
            idleTimeout=idleTimeout,
            maxConnections=maxConnections,
            maxConnectionsPerHost=maxConnectionsPerHost,
            maxPendingBytes=maxPendingBytes,
        )
        self.room = room if room is not None else ChatRoom(self._seconds)

    def _seconds(self) -> float:
        return self.clock.seconds()
