# -*- test-case-name: tests.test_connection,tests.test_line -*-
"""
The state bits of a tcpcomm connection, all in one place.

A connection keeps its state in one small int,
L{ConnectionProtocol._flags<tcpcomm.connection.ConnectionProtocol>}: a
connection at work has none set, so the hot path tests one int against zero.
Those that come and go while a connection works stay below 256, so that its
flags are one of CPython's shared small ints rather than an int object of its
own; the flags of a closing connection, and those of the line engine, are
above.

Pure: no Twisted.
"""

from __future__ import annotations

__all__ = [
    "ACTIVE",
    "CLOSING",
    "DISCONNECTED",
    "HANDLING",
    "HELD",
    "HELD_FOR_PENDING",
    "IDLE",
    "INPUT_CLOSED",
    "LINE_SUBCLASS_FLAGS",
    "LINGER",
    "LINGERING",
    "NOT_HANDLING",
    "PACED",
    "QUEUED",
    "READING_PAUSED",
    "REFUSED",
    "SUBCLASS_FLAGS",
    "TIMED_OUT",
    "UNANSWERED",
    "WANT_CLOSE",
    "WRITE_BLOCKED",
]

# ConnectionProtocol's.

IDLE = 0b111
"""
The idle count: how many of the factory's sweeps in a row found the
connection idle (see L{tcpcomm.connection.IDLE_SWEEPS}).
"""
ACTIVE = ~IDLE
"""
Masks the idle count off: C{flags &= ACTIVE} records activity.
"""
HANDLING = 1 << 3
"""
Handlers are being called for a read: what arrives meanwhile waits.
"""
NOT_HANDLING = ~HANDLING
WRITE_BLOCKED = 1 << 4
"""
The transport paused us: its write buffer is full.
"""
READING_PAUSED = 1 << 5
"""
The transport is told to read no more (for a full buffer or a hold).
"""
HELD = 1 << 6
"""
Some reason of the protocol's own keeps reading paused
(L{holdReading<tcpcomm.connection.ConnectionProtocol.holdReading>}).
"""
QUEUED = 1 << 7
"""
Unasked data waits in the connection's own queue.
"""
CLOSING = 1 << 8
"""
This side has decided to close.
"""
INPUT_CLOSED = 1 << 9
"""
The peer half-closed.
"""
LINGERING = 1 << 10
"""
Last words sent: input is read and discarded until the peer closes.
"""
DISCONNECTED = 1 << 11
"""
The connection is gone.
"""
REFUSED = 1 << 12
"""
Over a connection limit, and refused.
"""
TIMED_OUT = 1 << 13
"""
Told that it was idle too long.
"""
SUBCLASS_FLAGS = 1 << 16
"""
The lowest bit that subclasses of L{ConnectionProtocol
<tcpcomm.connection.ConnectionProtocol>} may use.
"""

# LineProtocol's.

WANT_CLOSE = SUBCLASS_FLAGS
"""
Close once every pending reply is sent.
"""
LINGER = SUBCLASS_FLAGS << 1
"""
When closing, close lingering (after last words).
"""
HELD_FOR_PENDING = SUBCLASS_FLAGS << 2
"""
Reading is held because C{maxPending} replies (or unhandled frames) wait.
"""
PACED = SUBCLASS_FLAGS << 3
"""
Set on each connection a paced factory makes: a flag set keeps its reads off
the fast path, which would start a whole read's handlers at once.
"""
UNANSWERED = SUBCLASS_FLAGS << 4
"""
A binary framing could not answer a message: no more messages are handled,
and the connection closes after the replies before it.
"""
LINE_SUBCLASS_FLAGS = SUBCLASS_FLAGS << 5
"""
The lowest bit that subclasses of L{LineProtocol<tcpcomm.line.LineProtocol>}
may use.
"""
