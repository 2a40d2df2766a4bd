"""
Fuzzing the line protocol: random binary input (NUL bytes, invalid UTF-8,
lone CRs, overlong lines), cut into random chunks down to a byte at a time,
and handlers that answer in every way a handler can.  Whatever comes in, the
server never raises, never holds more than the line limit, and answers every
line in order with its reply, an C{ERROR} line, or a clean close.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.framers import FramingError
from tcpcomm.framing import LineFramer
from tcpcomm.line import INTERNAL_ERROR, HandlerResult, LineFactory, LineProtocol
from tests.test_framers_properties import CASES, Case, pieces, stream
from tests.test_framing import cutLists, referenceFrame, splitAt, streams
from tests.test_line import HalfCloseableStringTransport, connect

LIMIT = 16

# Streams with long runs too, so overlong lines come up often.
hostileStreams = st.one_of(
    streams,
    st.lists(
        st.one_of(
            st.sampled_from([b"\n", b"\r\n", b"\r", b"\x00", b"\xff\xfe"]),
            st.binary(min_size=1, max_size=LIMIT + 4),
        ),
        max_size=30,
    ).map(b"".join),
)


def feedChunks(protocol: LineProtocol, chunks: list[bytes]) -> None:
    """
    Feed every chunk to C{protocol}, as reads from a socket would.
    """
    for chunk in chunks:
        protocol.dataReceived(chunk)


def expectedReplies(
    data: bytes, halfClose: bool, reply: Mapping[bytes, bytes | None]
) -> bytes:
    """
    What the server must send for C{data}: per the reference framing model,
    each line's reply (C{None}: no reply) in order, a last unterminated line
    answered only at half-close, then the ERROR line if a line was too long.
    """
    lines, overflowed, last = referenceFrame(data, LIMIT)
    if halfClose and last is not None and not overflowed:
        lines.append(last)
    answers = [reply[line] for line in lines]
    out = b"".join(answer + b"\n" for answer in answers if answer is not None)
    if overflowed:
        out += b"ERROR line too long (limit %d bytes)\n" % (LIMIT,)
    return out


def behaviour(line: bytes) -> int:
    """
    Pick how the handler answers C{line}, deterministically: 0 bytes, 1 str,
    2 None, 3 raise, 4 fired Deferred, 5 Deferred fired later, 6 coroutine.
    """
    return hashlib.sha256(line).digest()[0] % 7


class LineProtocolFuzzTests(SynchronousTestCase):
    """
    L{LineProtocol} under random input, on an in-memory transport.
    """

    @settings(max_examples=300, deadline=None)
    @given(hostileStreams, cutLists, st.booleans())
    def test_echoMatchesModel(
        self, data: bytes, cuts: list[int], halfClose: bool
    ) -> None:
        """
        However the input is cut, the echo server sends exactly the model's
        replies, holds at most the limit plus one byte, and closes when it
        should.
        """
        protocol, transport = connect(LineFactory(maxLineLength=LIMIT))
        for chunk in splitAt(data, cuts):
            protocol.dataReceived(chunk)
            self.assertLessEqual(protocol.heldBytes, LIMIT + 1)
        if halfClose:
            protocol.readConnectionLost()
        identity = {line: line for line in self.allLines(data)}
        self.assertEqual(transport.value(), expectedReplies(data, halfClose, identity))
        _, overflowed, _ = referenceFrame(data, LIMIT)
        self.assertEqual(transport.writeDisconnected, overflowed)
        self.assertEqual(transport.disconnecting, halfClose)

    @settings(max_examples=300, deadline=None)
    @given(
        hostileStreams,
        st.randoms(use_true_random=False),
        st.integers(1, 4),
        st.integers(1, 64),
    )
    def test_everyKindOfHandlerInOrder(
        self, data: bytes, random: object, maxPending: int, chunkSize: int
    ) -> None:
        """
        With handlers that return bytes, str, None, raise, or return
        Deferreds and coroutines that finish in random order, a small
        C{maxPending} and input in chunks of any size, every line gets its
        own reply in request order, no more than C{maxPending} handlers wait
        at once, and the connection closes after the last reply.
        """
        waiting: list[Deferred[bytes]] = []

        async def coroutine(line: bytes) -> bytes:
            return b"co " + line

        def handler(line: bytes) -> HandlerResult:
            kind = behaviour(line)
            if kind == 0:
                return b"b " + line
            if kind == 1:
                return "s " + line.decode("latin-1")
            if kind == 2:
                return None
            if kind == 3:
                raise ValueError("handler bug")
            if kind == 4:
                return succeed(b"f " + line)
            if kind == 5:
                d: Deferred[bytes] = Deferred()
                d.addCallback(lambda _: b"d " + line)
                waiting.append(d)
                return d
            return coroutine(line)

        protocol, transport = connect(
            LineFactory(handler, maxLineLength=LIMIT, maxPending=maxPending)
        )
        for i in range(0, len(data), chunkSize):
            protocol.dataReceived(data[i : i + chunkSize])
        protocol.readConnectionLost()
        # Fire waiting handlers in random order until none is left; firing
        # one may start more (lines that waited for room in the queue).
        fired = 0
        while fired < len(waiting):
            self.assertLessEqual(len([d for d in waiting if not d.called]), maxPending)
            unfired = [d for d in waiting if not d.called]
            random.choice(unfired).callback(None)  # type: ignore[attr-defined]
            fired += 1
        self.flushLoggedErrors(ValueError)

        def reply(line: bytes) -> bytes | None:
            return [
                b"b " + line,
                ("s " + line.decode("latin-1")).encode("utf-8"),
                None,
                INTERNAL_ERROR,
                b"f " + line,
                b"d " + line,
                b"co " + line,
            ][behaviour(line)]

        replies = {line: reply(line) for line in self.allLines(data)}
        self.assertEqual(transport.value(), expectedReplies(data, True, replies))
        self.assertTrue(transport.disconnecting or transport.writeDisconnected)

    def allLines(self, data: bytes) -> list[bytes]:
        """
        Every candidate line of C{data} (complete or not), CR-dropped.
        """
        lines, _, last = referenceFrame(data, None)
        return [*lines, *([last] if last is not None else [])]


class RandomBinaryTests(SynchronousTestCase):
    """
    Large random binary input against the framer and the protocol.
    """

    @settings(max_examples=25, deadline=None)
    @given(st.binary(min_size=0, max_size=1 << 16), st.integers(1, 4096))
    def test_bigRandomInputBounded(self, data: bytes, chunkSize: int) -> None:
        """
        Up to 64 KiB of random bytes in chunks of any size: the framer never
        holds more than its limit plus one, and the protocol's output is
        only whole lines.
        """
        framer = LineFramer(LIMIT)
        protocol, transport = connect(LineFactory(maxLineLength=LIMIT))
        for start in range(0, len(data), chunkSize):
            chunk = data[start : start + chunkSize]
            framer.feed(chunk)
            protocol.dataReceived(chunk)
            self.assertLessEqual(framer.pendingLength(), LIMIT + 1)
        output = transport.value()
        self.assertTrue(output == b"" or output.endswith(b"\n"))

    def test_hugeLineNeverHeld(self) -> None:
        """
        A 16 MiB line (in 64 KiB reads) is answered with the ERROR line, and
        the protocol never holds more than the limit of it.
        """
        protocol, transport = connect(LineFactory())
        chunk = b"\xff" * 65536
        for _ in range(256):
            protocol.dataReceived(chunk)
            self.assertLessEqual(protocol.heldBytes, 65537)
        self.assertEqual(
            transport.value(), b"ERROR line too long (limit 65536 bytes)\n"
        )
        self.assertIsInstance(transport, HalfCloseableStringTransport)


echoCases = st.sampled_from(
    [case for case in CASES if not case.name.startswith("line") and not case.strip]
)


class FramedProtocolFuzzTests(SynchronousTestCase):
    """
    The message server over every binary and delimiter framing, under
    random input in random chunks, against a model: the framer fed the
    whole input at once.
    """

    @settings(max_examples=300, deadline=None)
    @given(echoCases, pieces, cutLists, st.booleans())
    def test_echoMatchesFramerModel(
        self,
        case: Case,
        parts: list[tuple[bool, bytes]],
        cuts: list[int],
        halfClose: bool,
    ) -> None:
        """
        However the input is cut, an echo server over any framing sends back
        the frames a framer cuts from the whole input, framed again, in
        order; it holds no more than the framing's max and header; and it
        closes after a framing error, or once the client half-closed.
        """
        data = stream(case, case.make(), parts)
        protocol, transport = connect(LineFactory(framing=case.make))
        for chunk in splitAt(data, cuts):
            protocol.dataReceived(chunk)
            self.assertLessEqual(protocol.heldBytes, case.bound)
        if halfClose:
            protocol.readConnectionLost()
        model = case.make()
        frames: list[bytes] = []
        failed = False
        try:
            frames += model.feed(data)
            if halfClose:
                frames += model.end()
        except FramingError as error:
            frames += error.frames
            failed = True
        # An echo the framing cannot carry (an unterminated last frame that
        # ends like its delimiter) ends the replies, and the connection.
        encoder = case.make()
        replies: list[bytes] = []
        for frame in frames:
            try:
                replies.append(encoder.encode(frame))
            except FramingError:
                failed = True
                break
        self.assertEqual(transport.value(), b"".join(replies))
        closed = transport.writeDisconnected or transport.disconnecting
        self.assertEqual(closed, failed or halfClose)
