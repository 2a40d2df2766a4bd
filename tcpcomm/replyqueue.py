# -*- test-case-name: tests.test_replyqueue -*-
"""
The replies of one connection, in the order their requests came in.

A server that lets clients pipeline must answer in request order even when
handlers finish out of order, and must bound how much it takes on for one
client.  L{ReplyQueue} holds what that needs: the replies waiting for their
turn (some still waiting for their handler), the frames read but not yet
handed to a handler (waiting for room), and the connection's last words.
It decides when reading must pause (L{ReplyQueue.full}) and when a close may
happen (L{ReplyQueue.idle}); the protocol does the I/O.

Pure and synchronous: no Twisted, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

__all__ = ["ReplyQueue", "Slot"]


class Slot:
    """
    One reply in a L{ReplyQueue}: known (C{done}) or waiting for its handler.

    @ivar done: Whether the reply is known.
    @ivar reply: The reply's payload; C{None} for no reply.
    @ivar request: The frame this replies to, kept for an error reply that
        needs it (MODBUS exception responses).
    @ivar waiting: What the handler is waiting on (a Deferred), for the
        protocol to cancel.
    @ivar timer: The handler's timeout, for the protocol to cancel.
    @ivar started: When its handler was found to answer later (by the
        protocol's clock), to time it.
    """

    __slots__ = ("done", "reply", "request", "started", "timer", "waiting")

    def __init__(
        self, reply: bytes | None = None, done: bool = True, request: bytes = b""
    ) -> None:
        self.done = done
        self.reply = reply
        self.request = request
        self.waiting: Any = None
        self.timer: Any = None
        self.started = 0.0


class ReplyQueue:
    """
    Replies in request order, the frames waiting for room, and the
    decisions that follow from them.

    A connection makes one only once a reply has to wait (most never do);
    while nothing waits, replies go out at once without it.

    @ivar maxPending: How many replies may wait (for their handlers, or
        behind one) before no more frames are handled.
    @ivar perTurn: How many handlers that answer later may start before the
        protocol must let its event loop turn (when paced).
    @ivar started: How many such handlers started since the queue last
        emptied or the loop last turned.
    @ivar backlog: Frames read but not yet handled, in order.
    @ivar lastWords: An error reply to send once everything before it is
        sent, just before closing; C{None} for none.
    @ivar running: How many replies wait for their handlers.
    """

    __slots__ = (
        "_slots",
        "backlog",
        "lastWords",
        "maxPending",
        "perTurn",
        "running",
        "started",
    )

    def __init__(self, maxPending: int, perTurn: int) -> None:
        self._slots: deque[Slot] = deque()
        self.maxPending = maxPending
        self.perTurn = perTurn
        self.started = 0
        self.running = 0
        self.backlog: list[bytes] = []
        self.lastWords: bytes | None = None

    def __len__(self) -> int:
        """
        How many replies wait to be sent.
        """
        return len(self._slots)

    @property
    def waiting(self) -> bool:
        """
        Whether any reply waits: replies known now must queue behind it.
        """
        return bool(self._slots)

    @property
    def headReady(self) -> bool:
        """
        Whether the first waiting reply is known, so L{takeReady} has some.
        """
        slots = self._slots
        return bool(slots) and slots[0].done

    def room(self, paced: bool) -> int:
        """
        How many more frames may be handled now: room among the waiting
        replies and, when C{paced}, in this turn's C{perTurn}.
        """
        room = self.maxPending - len(self._slots)
        if paced:
            room = min(room, self.perTurn - self.started)
        return room

    def ready(self, reply: bytes) -> None:
        """
        Queue C{reply}, known now, behind the replies that wait.
        """
        self._slots.append(Slot(reply))

    def wait(self, request: bytes) -> Slot:
        """
        Queue a reply that waits for its handler.

        @param request: The frame it answers.
        @return: Its slot, for L{settle}.
        """
        slot = Slot(None, False, request)
        self._slots.append(slot)
        self.started += 1
        self.running += 1
        return slot

    def settle(self, slot: Slot, reply: bytes | None) -> bool:
        """
        The handler of C{slot} answered C{reply}.

        @return: C{False} if the slot was settled already (its handler timed
            out, or the queue was dropped), else C{True}.
        """
        if slot.done:
            return False
        slot.reply = reply
        slot.done = True
        self.running -= 1
        return True

    def takeReady(self) -> list[bytes]:
        """
        Take the replies that may go out now: every known one at the head,
        in order.  Once none waits, pacing starts afresh.
        """
        slots = self._slots
        out: list[bytes] = []
        while slots and slots[0].done:
            reply = slots.popleft().reply
            if reply is not None:
                out.append(reply)
        if not slots:
            self.started = 0
        return out

    def defer(self, frames: list[bytes]) -> None:
        """
        Keep C{frames}, read after those already kept, until there is room.
        """
        self.backlog += frames

    def putBack(self, frames: list[bytes]) -> None:
        """
        Keep C{frames}, which were read before those already kept.
        """
        self.backlog[:0] = frames

    def takeBacklog(self) -> list[bytes]:
        """
        Take every frame kept for later.
        """
        backlog, self.backlog = self.backlog, []
        return backlog

    def newTurn(self) -> None:
        """
        The event loop turned: paced handlers may start again.
        """
        self.started = 0

    def full(self) -> bool:
        """
        Whether reading must pause: frames wait for room, or C{maxPending}
        replies wait.
        """
        return bool(self.backlog) or len(self._slots) >= self.maxPending

    def waitsForTurn(self, paced: bool) -> bool:
        """
        Whether the kept frames wait for the loop to turn (rather than for
        waiting replies to be sent).
        """
        return (
            paced
            and bool(self.backlog)
            and self.started >= self.perTurn
            and len(self._slots) < self.maxPending
        )

    def idle(self) -> bool:
        """
        Whether nothing waits: no reply, no frame.  A wanted close may
        happen (after the last words).
        """
        return not self._slots and not self.backlog

    def cut(self, slot: Slot) -> list[Slot]:
        """
        End the queue at C{slot}, which gets no reply: the replies before it
        still go out, those after it never will, and no kept frame will be
        handled.

        @return: The slots after it whose handlers were still running,
            settled now (to no reply), for the protocol to cancel.
        """
        slots = self._slots
        after: list[Slot] = []
        while slots and slots[-1] is not slot:
            after.append(slots.pop())
        after.reverse()
        self.settle(slot, None)
        self.backlog = []
        return self._stop(after)

    def drop(self) -> list[Slot]:
        """
        Forget everything: the connection is gone.

        @return: The slots whose handlers were still running, settled now
            (to no reply), for the protocol to cancel.
        """
        slots, self._slots = self._slots, deque()
        self.backlog = []
        self.lastWords = None
        return self._stop(slots)

    def _stop(self, slots: Iterable[Slot]) -> list[Slot]:
        """
        Settle the slots of C{slots} still running to no reply.

        @return: Those slots.
        """
        running = [slot for slot in slots if not slot.done]
        for slot in running:
            self.settle(slot, None)
        return running
