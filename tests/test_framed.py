"""
Tests for the promises the line server keeps over every framing
(C{LineFactory(handler, framing=SPEC)}), on an in-memory transport with a
fake clock: one mixin of tests, one small subclass per framing.

Every framing keeps the line server's promises (replies in request order,
C{maxPending}, half-close, graceful shutdown, bounded memory); what differs
is how a failure is answered: C{line} answers in band with its C{ERROR}
lines, C{modbus} with exception responses, and the other (binary) framings
send the replies to earlier frames, log the peer and the reason, and close,
lingering.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.connection import LINGER_SECONDS
from tcpcomm.framers import Framer, FramingError, exceptionResponse, parseFraming
from tcpcomm.framers.modbus import (
    GATEWAY_TARGET_FAILED,
    MAX_ADU_LENGTH,
    SERVER_DEVICE_FAILURE,
)
from tcpcomm.line import (
    HANDLER_TIMEOUT,
    IDLE_TIMEOUT,
    INTERNAL_ERROR,
    HandlerResult,
    LineFactory,
    LineProtocol,
)
from tests.test_limits import connectFrom
from tests.test_line import HalfCloseableStringTransport, LogCapture
from tests.test_timeouts import LATEST, TIMEOUT, elapse

if TYPE_CHECKING:
    _Base = SynchronousTestCase
else:
    _Base = object

PEER = "192.0.2.7:4321"
"""
The peer L{connectFrom} connects from, as log lines name it.
"""

LIMIT = 64
"""
The C{max} of the framings that take one.
"""


def modbusRequest(number: int) -> bytes:
    """
    A MODBUS TCP request to read holding register C{number}: transaction
    id C{number}, unit 1, function 3, one register.
    """
    return (
        number.to_bytes(2, "big")
        + b"\x00\x00\x00\x06\x01\x03"
        + number.to_bytes(2, "big")
        + b"\x00\x01"
    )


def protocolOf(transport: HalfCloseableStringTransport) -> LineProtocol:
    """
    The line protocol L{connectFrom} connected to C{transport}.
    """
    protocol = transport.protocol
    assert isinstance(protocol, LineProtocol)
    return protocol


def clockOf(transport: HalfCloseableStringTransport) -> Clock:
    """
    The fake clock of the factory of C{transport}'s protocol.
    """
    clock = transport.protocol.factory.clock
    assert isinstance(clock, Clock)
    return clock


class FramedPromisesMixin(_Base):
    """
    The line server's promises over the framing C{spec}.

    Subclasses set C{spec} and C{failures} and, where the framing needs it,
    override L{request}, L{partialFrame} and L{oversizedFrame}.

    @cvar spec: The framing specification under test.
    @cvar failures: How a failed, timed-out or unencodable reply is answered:
        C{"line"} (an C{ERROR} line in its place), C{"modbus"} (an exception
        response in its place) or C{"close"} (the replies before it, a log
        line, a lingering close).
    @cvar lastFrameAtEnd: Whether the end of input ends a partial last
        frame (delimiter framings), rather than being an error.
    """

    spec: ClassVar[str]
    failures: ClassVar[str] = "close"
    lastFrameAtEnd: ClassVar[bool] = False

    def framer(self) -> Framer:
        """
        A fresh framer of this framing, from the pure framers.
        """
        return parseFraming(self.spec)()

    def request(self, number: int) -> bytes:
        """
        The payload of request C{number}: 8 bytes, distinct per number.
        """
        return b"req%05d" % (number,)

    def frames(self, *numbers: int) -> bytes:
        """
        The bytes a client sends for the requests C{numbers}, in order.
        """
        framer = self.framer()
        return b"".join(framer.encode(self.request(n)) for n in numbers)

    def replies(self, transport: HalfCloseableStringTransport) -> list[bytes]:
        """
        The payloads of the frames the server sent, cut by a fresh framer.
        """
        return self.framer().feed(transport.value())

    def partialFrame(self, number: int) -> bytes:
        """
        Request C{number}'s frame without its last byte.
        """
        return self.frames(number)[:-1]

    def oversizedFrame(self) -> bytes:
        """
        The start of a frame over the framing's C{max}, long enough to prove
        it too long.
        """
        raise NotImplementedError(f"{type(self).__name__} must say")

    def connect(
        self, handler: Callable[[bytes], HandlerResult] | None = None, **kwargs: Any
    ) -> HalfCloseableStringTransport:
        """
        A connection of a C{LineFactory} with this framing, C{handler}
        (echo by default) and the factory arguments C{kwargs}, on an
        in-memory transport with a fake clock.
        """
        if handler is None:
            factory = LineFactory(framing=self.spec, **kwargs)
        else:
            factory = LineFactory(handler, framing=self.spec, **kwargs)
        return connectFrom(factory)

    def inPlace(self, number: int, line: bytes, modbusCode: int) -> bytes:
        """
        What answers request C{number} in band, when its handler failed: the
        C{ERROR} C{line}, or the MODBUS exception response C{modbusCode}.
        """
        if self.failures == "line":
            return line
        return exceptionResponse(self.request(number), modbusCode)

    def assertLingeringClose(self, transport: HalfCloseableStringTransport) -> None:
        """
        The server has sent FIN and reads on, discarding, until the client
        closes or L{LINGER_SECONDS} pass.
        """
        self.assertTrue(transport.writeDisconnected)
        self.assertFalse(transport.disconnecting)
        clockOf(transport).advance(LINGER_SECONDS)
        self.assertTrue(transport.disconnecting)

    def assertLogged(self, logs: LogCapture, *fragments: str) -> None:
        """
        One log line holds every one of C{fragments}.
        """
        texts = [
            formatEvent(event)
            + (
                ""
                if "log_failure" not in event
                else event["log_failure"].getErrorMessage()
            )
            for event in logs.events
        ]
        if not any(all(f in text for f in fragments) for text in texts):
            self.fail(f"no log line holds {fragments!r}: {texts!r}")

    def assertFailedAt(
        self,
        transport: HalfCloseableStringTransport,
        logs: LogCapture,
        before: Sequence[int],
        failed: int,
        after: Sequence[int],
        line: bytes,
        modbusCode: int,
        reason: str,
    ) -> None:
        """
        Request C{failed} failed, between requests C{before} and C{after}:
        in band (C{line} or C{modbusCode}) with the connection open, or, for
        the binary framings, the replies to C{before} only, a log line with
        the peer and C{reason}, and a lingering close.
        """
        expected = [self.request(n) for n in before]
        if self.failures == "close":
            self.assertEqual(self.replies(transport), expected)
            self.assertLogged(logs, PEER, reason)
            self.assertLingeringClose(transport)
        else:
            expected.append(self.inPlace(failed, line, modbusCode))
            expected.extend(self.request(n) for n in after)
            self.assertEqual(self.replies(transport), expected)
            self.assertFalse(transport.writeDisconnected)
            self.assertFalse(transport.disconnecting)

    def test_echo(self) -> None:
        """
        Without a handler, each frame's payload comes back framed the same
        way, all the replies to one read in one read's worth of frames.
        """
        transport = self.connect()
        transport.protocol.dataReceived(self.frames(0, 1, 2))
        self.assertEqual(transport.value(), self.frames(0, 1, 2))

    def test_repliesInRequestOrder(self) -> None:
        """
        Replies go out in request order when handlers finish out of order;
        an immediate reply waits behind a slower one before it.
        """
        waiting: dict[bytes, Deferred[bytes]] = {}

        def handler(payload: bytes) -> HandlerResult:
            if payload in (self.request(1), self.request(3)):
                waiting[payload] = Deferred()
                return waiting[payload]
            return payload

        transport = self.connect(handler)
        transport.protocol.dataReceived(self.frames(0, 1, 2, 3, 4))
        self.assertEqual(self.replies(transport), [self.request(0)])
        waiting[self.request(3)].callback(self.request(3))
        self.assertEqual(self.replies(transport), [self.request(0)])
        waiting[self.request(1)].callback(self.request(1))
        self.assertEqual(self.replies(transport), [self.request(n) for n in range(5)])

    def test_maxPendingPausesReading(self) -> None:
        """
        Reading pauses while C{maxPending} replies wait on handlers, and
        resumes once one is sent.
        """
        waiting: list[tuple[bytes, Deferred[bytes]]] = []

        def handler(payload: bytes) -> Deferred[bytes]:
            waiting.append((payload, Deferred()))
            return waiting[-1][1]

        transport = self.connect(handler, maxPending=2)
        transport.protocol.dataReceived(self.frames(0))
        self.assertEqual(transport.producerState, "producing")
        transport.protocol.dataReceived(self.frames(1))
        self.assertEqual(transport.producerState, "paused")
        payload, d = waiting[0]
        d.callback(payload)
        # A reply ready while another handler runs leaves a turn later.
        clockOf(transport).advance(0)
        self.assertEqual(self.replies(transport), [self.request(0)])
        self.assertEqual(transport.producerState, "producing")

    def test_halfCloseAnswersEveryFrame(self) -> None:
        """
        After the client half-closes, every frame read is still answered,
        and then the server closes.
        """
        waiting: list[tuple[bytes, Deferred[bytes]]] = []

        def handler(payload: bytes) -> Deferred[bytes]:
            waiting.append((payload, Deferred()))
            return waiting[-1][1]

        transport = self.connect(handler)
        transport.protocol.dataReceived(self.frames(0, 1))
        transport.protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        for payload, d in reversed(waiting):
            d.callback(payload)
        self.assertEqual(self.replies(transport), [self.request(0), self.request(1)])
        self.assertTrue(transport.disconnecting)

    def test_partialFrameAtHalfClose(self) -> None:
        """
        A partial frame when the client half-closes: a delimiter framing
        answers it as the last frame; a binary framing answers the frames
        before it, logs the peer and the reason, and closes.
        """
        logs = LogCapture(self)
        partial = self.partialFrame(1)
        transport = self.connect()
        transport.protocol.dataReceived(self.frames(0) + partial)
        transport.protocol.readConnectionLost()
        if self.lastFrameAtEnd:
            self.assertEqual(
                self.replies(transport), [self.request(0), self.request(1)]
            )
        else:
            framer = self.framer()
            framer.feed(partial)
            try:
                framer.end()
            except FramingError as error:
                reason = error.reason
            else:
                self.fail(f"{self.spec} ended a partial frame")
            self.assertEqual(self.replies(transport), [self.request(0)])
            self.assertLogged(logs, PEER, reason)
        self.assertTrue(transport.disconnecting)

    def test_handlerFails(self) -> None:
        """
        A handler that raises: C{ERROR internal error} or MODBUS exception
        0x04 in its reply's place, or, in binary framings, the replies
        before it, a log line and a lingering close.
        """
        logs = LogCapture(self)

        def handler(payload: bytes) -> bytes:
            if payload == self.request(1):
                raise RuntimeError("handler broke")
            return payload

        transport = self.connect(handler)
        transport.protocol.dataReceived(self.frames(0, 1, 2))
        self.assertFailedAt(
            transport,
            logs,
            [0],
            1,
            [2],
            INTERNAL_ERROR,
            SERVER_DEVICE_FAILURE,
            "handler broke",
        )
        self.flushLoggedErrors(RuntimeError)

    def test_laterHandlerAfterFailure(self) -> None:
        """
        A handler still running for a frame after one whose handler failed
        (gave no reply), in the same read, is cancelled quietly (no unhandled
        error) where the framing closes, and answered in order where it
        answers in band.
        """
        waiting: list[Deferred[bytes]] = []
        cancelled: list[bytes] = []

        def handler(payload: bytes) -> Any:
            if payload == self.request(1):
                return 42  # No reply: a failure that leaves no traceback.
            if payload == self.request(2):
                waiting.append(Deferred(lambda d: cancelled.append(payload)))
                return waiting[-1]
            return payload

        transport = self.connect(handler)
        transport.protocol.dataReceived(self.frames(0, 1, 2))
        if self.failures == "close":
            self.assertEqual(cancelled, [self.request(2)])
            self.assertEqual(self.replies(transport), [self.request(0)])
            waiting.clear()
            gc.collect()
            self.assertEqual(self.flushLoggedErrors(CancelledError), [])
        else:
            self.assertEqual(cancelled, [])
            waiting[0].callback(self.request(2))
            self.assertEqual(
                self.replies(transport),
                [
                    self.request(0),
                    self.inPlace(1, INTERNAL_ERROR, SERVER_DEVICE_FAILURE),
                    self.request(2),
                ],
            )

    def test_handlerTimesOut(self) -> None:
        """
        A handler that outlasts the handler timeout is cancelled; its reply
        is C{ERROR handler timed out} or MODBUS exception 0x0B, or, in
        binary framings, the replies before it, a log line and a lingering
        close.
        """
        logs = LogCapture(self)
        cancelled: list[Deferred[bytes]] = []
        hanging: Deferred[bytes] = Deferred(cancelled.append)

        def handler(payload: bytes) -> HandlerResult:
            return hanging if payload == self.request(1) else payload

        transport = self.connect(handler, handlerTimeout=3)
        transport.protocol.dataReceived(self.frames(0, 1, 2))
        self.assertEqual(self.replies(transport), [self.request(0)])
        clockOf(transport).advance(3)
        self.assertEqual(cancelled, [hanging])
        self.assertFailedAt(
            transport,
            logs,
            [0],
            1,
            [2],
            HANDLER_TIMEOUT,
            GATEWAY_TARGET_FAILED,
            "3",
        )

    def test_idleTimeout(self) -> None:
        """
        A client idle for the idle timeout is closed: told in an C{ERROR}
        line in line framing, with no in-band word in the others; the peer
        is logged.
        """
        logs = LogCapture(self)
        transport = self.connect(idleTimeout=TIMEOUT)
        transport.protocol.dataReceived(self.frames(0))
        elapse(clockOf(transport), LATEST)
        expected = [self.request(0)]
        if self.failures == "line":
            expected.append(IDLE_TIMEOUT)
        self.assertEqual(self.replies(transport), expected)
        self.assertEqual(
            transport.value(), b"".join(map(self.framer().encode, expected))
        )
        self.assertLogged(logs, PEER, "idle")
        self.assertTrue(transport.writeDisconnected)

    def test_shutDownSendsPendingReplies(self) -> None:
        """
        On shutdown the server reads no more, sends the replies still
        pending, then closes.
        """
        d: Deferred[bytes] = Deferred()

        def handler(payload: bytes) -> HandlerResult:
            return d if payload == self.request(0) else payload

        transport = self.connect(handler)
        transport.protocol.dataReceived(self.frames(0, 1))
        transport.protocol.shutDown()
        self.assertEqual(transport.producerState, "paused")
        self.assertFalse(transport.writeDisconnected)
        d.callback(self.request(0))
        self.assertEqual(self.replies(transport), [self.request(0), self.request(1)])
        self.assertTrue(transport.writeDisconnected or transport.disconnecting)


class BadFrameMixin(FramedPromisesMixin):
    """
    The promises about frames the framing refuses, for the framings that
    can refuse one (all but C{fixed}).
    """

    def badFrame(self) -> bytes:
        """
        Bytes the framing refuses: by default L{oversizedFrame}.
        """
        return self.oversizedFrame()

    def refusal(self, data: bytes) -> str:
        """
        The reason the pure framer gives for refusing C{data}.
        """
        try:
            self.framer().feed(data)
        except FramingError as error:
            return error.reason
        self.fail(f"{self.spec} took {data!r}")
        raise AssertionError("unreachable")

    def test_badFrame(self) -> None:
        """
        A frame the framing refuses, after good ones in the same read: the
        replies to the frames before it, then (in line framing) the C{ERROR}
        line, a log line naming the peer and the reason, and a lingering
        close; nothing after it is answered.
        """
        logs = LogCapture(self)
        seen: list[bytes] = []

        def handler(payload: bytes) -> bytes:
            seen.append(payload)
            return payload

        bad = self.badFrame()
        transport = self.connect(handler)
        transport.protocol.dataReceived(self.frames(0) + bad + self.frames(2))
        expected = [self.request(0)]
        if self.failures == "line":
            expected.append(b"ERROR line too long (limit %d bytes)" % (LIMIT,))
        else:
            self.assertLogged(logs, PEER, self.refusal(bad))
        self.assertEqual(self.replies(transport), expected)
        self.assertEqual(seen, [self.request(0)])
        self.assertLingeringClose(transport)

    def test_badFrameWaitsForPendingReplies(self) -> None:
        """
        A refused frame behind a reply still pending: the pending reply goes
        out first, and only then does the server close.
        """
        d: Deferred[bytes] = Deferred()
        transport = self.connect(lambda payload: d)
        transport.protocol.dataReceived(self.frames(0) + self.badFrame())
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.writeDisconnected)
        d.callback(self.request(0))
        self.assertEqual(self.replies(transport)[0], self.request(0))
        self.assertTrue(transport.writeDisconnected)

    def test_heldBytesBounded(self) -> None:
        """
        Fed an endless frame a few bytes at a time, the server never holds
        more than the framing's C{max} plus its header, and closes once the
        frame is proved too long.
        """
        data = self.oversizedFrame()
        bound = LIMIT + len(self.framer().encode(b""))
        transport = self.connect()
        protocol = protocolOf(transport)
        for start in range(0, len(data), 7):
            protocol.dataReceived(data[start : start + 7])
            self.assertLessEqual(protocol.heldBytes, bound)
        self.assertTrue(transport.writeDisconnected)


class UnencodableReplyMixin(FramedPromisesMixin):
    """
    The promise about replies the framing cannot encode, for the framings
    that can refuse one.
    """

    unencodable: ClassVar[bytes]

    def test_unencodableReply(self) -> None:
        """
        A reply the framing cannot encode is a failed handler: MODBUS
        exception 0x04, or the replies before it, a log line and a lingering
        close.
        """
        logs = LogCapture(self)

        def handler(payload: bytes) -> bytes:
            return self.unencodable if payload == self.request(1) else payload

        try:
            self.framer().encode(self.unencodable)
        except FramingError as error:
            reason = error.reason
        else:
            self.fail(f"{self.spec} encoded {self.unencodable!r}")
        transport = self.connect(handler)
        transport.protocol.dataReceived(self.frames(0, 1, 2))
        self.assertFailedAt(
            transport, logs, [0], 1, [2], b"", SERVER_DEVICE_FAILURE, reason
        )


class LineFramingTests(BadFrameMixin, SynchronousTestCase):
    """
    C{line}: failures answered with C{ERROR} lines, as without a framing.
    """

    spec = f"line:max={LIMIT}"
    failures = "line"
    lastFrameAtEnd = True

    def oversizedFrame(self) -> bytes:
        return b"x" * (LIMIT * 3)


class DelimiterFramingTests(BadFrameMixin, UnencodableReplyMixin, SynchronousTestCase):
    """
    C{delimiter:00}: NUL-terminated frames.
    """

    spec = f"delimiter:00:max={LIMIT}"
    lastFrameAtEnd = True
    unencodable = b"nul\x00inside"

    def oversizedFrame(self) -> bytes:
        return b"x" * (LIMIT * 3)


class StxEtxFramingTests(BadFrameMixin, UnencodableReplyMixin, SynchronousTestCase):
    """
    C{stx-etx}: C{0x02 payload 0x03}.
    """

    spec = f"stx-etx:max={LIMIT}"
    unencodable = b"etx\x03inside"

    def oversizedFrame(self) -> bytes:
        return b"\x02" + b"x" * (LIMIT * 3)


class LengthFramingTests(BadFrameMixin, UnencodableReplyMixin, SynchronousTestCase):
    """
    C{length:4}: Twisted's C{Int32StringReceiver}.
    """

    spec = f"length:4:max={LIMIT}"
    unencodable = b"x" * LIMIT

    def oversizedFrame(self) -> bytes:
        return (LIMIT * 3).to_bytes(4, "big") + b"x" * LIMIT


class LittleEndianLengthFramingTests(
    BadFrameMixin, UnencodableReplyMixin, SynchronousTestCase
):
    """
    C{length:2:order=little}: a 2-byte little-endian length field.
    """

    spec = f"length:2:order=little:max={LIMIT}"
    unencodable = b"x" * LIMIT

    def oversizedFrame(self) -> bytes:
        return (LIMIT * 3).to_bytes(2, "little") + b"x" * LIMIT


class NetstringFramingTests(BadFrameMixin, UnencodableReplyMixin, SynchronousTestCase):
    """
    C{netstring}: Twisted's C{NetstringReceiver}.
    """

    spec = f"netstring:max={LIMIT}"
    unencodable = b"x" * (LIMIT + 1)

    def oversizedFrame(self) -> bytes:
        return b"%d:" % (LIMIT * 3,) + b"x" * LIMIT


class FixedFramingTests(FramedPromisesMixin, SynchronousTestCase):
    """
    C{fixed:8}: every 8 bytes a frame; no frame can be bad, no reply
    unencodable.
    """

    spec = "fixed:8"

    def test_heldBytesBounded(self) -> None:
        """
        Fewer bytes than a frame are held, never more.
        """
        transport = self.connect()
        for size in range(1, 8):
            transport.protocol.dataReceived(b"x")
            self.assertEqual(protocolOf(transport).heldBytes, size)
        transport.protocol.dataReceived(b"x")
        self.assertEqual(protocolOf(transport).heldBytes, 0)
        self.assertEqual(transport.value(), b"x" * 8)


class ModbusFramingTests(BadFrameMixin, UnencodableReplyMixin, SynchronousTestCase):
    """
    C{modbus}: MODBUS TCP; a failed handler gets exception 0x04, a timed-out
    one 0x0B, and the connection stays open.
    """

    spec = "modbus"
    failures = "modbus"
    unencodable = b"not a MODBUS ADU"

    def request(self, number: int) -> bytes:
        return modbusRequest(number)

    def oversizedFrame(self) -> bytes:
        # An MBAP header whose length field (300) puts the ADU over 260
        # bytes, then more bytes.
        return b"\x00\x01\x00\x00\x01\x2c\x01" + b"\x03" * 300

    def badFrame(self) -> bytes:
        # Protocol id 1: not MODBUS.
        return b"\x00\x01\x00\x01\x00\x06\x01\x03\x00\x00\x00\x01"

    def test_heldBytesBounded(self) -> None:
        """
        An ADU over 260 bytes is refused from its header: no more than 260
        bytes are ever held.
        """
        data = self.oversizedFrame()
        transport = self.connect()
        for start in range(0, len(data), 7):
            transport.protocol.dataReceived(data[start : start + 7])
            self.assertLessEqual(protocolOf(transport).heldBytes, MAX_ADU_LENGTH)
        self.assertTrue(transport.writeDisconnected)
