"""
Properties every framer in L{tcpcomm.framers} keeps, checked with
hypothesis on valid streams and on arbitrary bytes in arbitrary chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.framers import (
    DelimiterFramer,
    FixedFramer,
    Framer,
    FramingError,
    LengthFieldFramer,
    LineAdapter,
    ModbusFramer,
    NetstringFramer,
    StxEtxFramer,
    parseFraming,
)
from tests.test_framing import splitAt


@dataclass(frozen=True)
class Case:
    """
    One framer configuration under test.

    @ivar name: The configuration, for reports.
    @ivar make: Makes a new framer.
    @ivar bound: The most bytes the framer may hold: its max plus header.
    @ivar wrap: Turns a payload into what is passed to C{encode}, for
        framings whose replies are whole frames; by default the payload.
    @ivar strip: How many leading bytes of what was encoded the framer
        hands back.
    """

    name: str
    make: Callable[[], Framer]
    bound: int
    wrap: Callable[[bytes], bytes] = bytes
    strip: int = 0

    def __repr__(self) -> str:
        return self.name

    def frame(self, framer: Framer, payload: bytes) -> tuple[bytes, bytes] | None:
        """
        @return: The bytes on the wire for C{payload} and the payload they
            give back, or L{None} if the framing cannot frame it.
        """
        try:
            reply = self.wrap(payload)
            return framer.encode(reply), reply[self.strip :]
        except FramingError:
            return None


_header = LengthFieldFramer(2, offset=4, maxLength=260)

CASES = [
    Case("line CRLF max=20", lambda: LineAdapter(20, b"\r\n"), 21),
    Case("delimiter:00:max=20", lambda: DelimiterFramer(b"\x00", 20), 20),
    Case("delimiter:0d0a:max=20", lambda: DelimiterFramer(b"\r\n", 20), 21),
    Case("delimiter:616261:max=20", lambda: DelimiterFramer(b"aba", 20), 22),
    Case("delimiter:616263:max=3", lambda: DelimiterFramer(b"abc", 3), 5),
    Case("stx-etx:max=20", lambda: StxEtxFramer(20), 21),
    Case("length:1:max=30", lambda: LengthFieldFramer(1, maxLength=30), 30),
    Case(
        "length:2:adjust=-2:order=little:max=40",
        lambda: LengthFieldFramer(2, adjust=-2, order="little", maxLength=40),
        40,
    ),
    Case(
        "length:3:offset=2:adjust=1:strip=1:max=40",
        lambda: LengthFieldFramer(3, offset=2, adjust=1, strip=1, maxLength=40),
        40,
        wrap=LengthFieldFramer(3, offset=2, adjust=1, maxLength=40).encode,
        strip=1,
    ),
    Case("length:4", lambda: LengthFieldFramer(4), 65536),
    Case("length:8:max=64", lambda: LengthFieldFramer(8, maxLength=64), 64),
    Case("netstring:max=20", lambda: NetstringFramer(20), 20 + 3),
    Case("fixed:5", lambda: FixedFramer(5), 4, wrap=lambda p: (p + bytes(5))[:5]),
    Case("modbus", ModbusFramer, 260, wrap=_header.encode),
]

cases = st.sampled_from(CASES)
payloads = st.binary(max_size=30)
cutLists = st.lists(st.integers(min_value=0), max_size=12)
# Bytes that mean something to some framing, to reach its corners sooner.
tokens = st.lists(
    st.sampled_from(
        [
            b"\x00",
            b"\x02",
            b"\x03",
            b"\r",
            b"\n",
            b"a",
            b"ab",
            b"0",
            b"19",
            b"123",
            b":",
            b",",
        ]
    ),
    max_size=6,
).map(b"".join)
# Streams that mix frames (True) with arbitrary bytes (False).
pieces = st.lists(
    st.tuples(st.booleans(), st.one_of(st.binary(max_size=30), tokens)), max_size=8
)


def outcome(
    framer: Framer, chunks: Iterable[bytes], bound: int
) -> tuple[list[bytes], str | None]:
    """
    Feed chunks then end the input, checking after each feed that no more
    than C{bound} bytes are held.

    @return: Every frame given, and the error's reason if one was raised.
    """
    frames: list[bytes] = []
    try:
        for chunk in chunks:
            frames.extend(framer.feed(chunk))
            assert framer.buffered <= bound, (framer.buffered, bound)
        frames.extend(framer.end())
    except FramingError as error:
        frames.extend(error.frames)
        return frames, error.reason
    return frames, None


def stream(case: Case, framer: Framer, parts: list[tuple[bool, bytes]]) -> bytes:
    """
    @return: The parts as one stream: frames where a part asks for one
        that can be framed, else the part's bytes.
    """
    data = []
    for asFrame, payload in parts:
        framed = case.frame(framer, payload) if asFrame else None
        data.append(payload if framed is None else framed[0])
    return b"".join(data)


class FramerPropertyTests(SynchronousTestCase):
    """
    Every framer gives the same frames however its input is chunked, reads
    back what it encodes, holds no more than its max and header, and stays
    dead after an error.
    """

    @settings(max_examples=300, deadline=None)
    @given(case=cases, payload=payloads)
    def test_encodeThenFeedRoundTrips(self, case: Case, payload: bytes) -> None:
        """
        Feeding what a framer encoded gives back the payload.
        """
        framer = case.make()
        framed = case.frame(framer, payload)
        if framed is not None:
            wire, expected = framed
            self.assertEqual(framer.feed(wire), [expected])
            self.assertEqual(framer.buffered, 0)
            self.assertEqual(framer.end(), [])

    @settings(max_examples=300, deadline=None)
    @given(case=cases, frames=st.lists(payloads, max_size=8), cuts=cutLists)
    def test_chunkingDoesNotMatterForFrames(
        self, case: Case, frames: list[bytes], cuts: list[int]
    ) -> None:
        """
        A stream of valid frames gives its payloads, fed whole or in any
        chunks.
        """
        encoder = case.make()
        framed = [f for f in (case.frame(encoder, p) for p in frames) if f]
        data = b"".join(wire for wire, _ in framed)
        expected = [payload for _, payload in framed]
        self.assertEqual(outcome(case.make(), [data], case.bound), (expected, None))
        self.assertEqual(
            outcome(case.make(), splitAt(data, cuts), case.bound), (expected, None)
        )

    @settings(max_examples=500, deadline=None)
    @given(case=cases, parts=pieces, cuts=cutLists)
    def test_chunkingDoesNotMatterForAnyInput(
        self, case: Case, parts: list[tuple[bool, bytes]], cuts: list[int]
    ) -> None:
        """
        Any input gives the same frames and the same error, fed whole or in
        any chunks, and the framer never holds more than its max and header.
        """
        data = stream(case, case.make(), parts)
        self.assertEqual(
            outcome(case.make(), splitAt(data, cuts), case.bound),
            outcome(case.make(), [data], case.bound),
        )

    @settings(max_examples=200, deadline=None)
    @given(case=cases, parts=pieces, more=st.binary())
    def test_deadAfterError(
        self, case: Case, parts: list[tuple[bool, bytes]], more: bytes
    ) -> None:
        """
        Once a framer raised, every later feed and end raises too.
        """
        framer = case.make()
        data = stream(case, framer, parts)
        try:
            framer.feed(data)
            framer.end()
        except FramingError:
            pass
        else:
            return
        self.assertRaises(FramingError, framer.feed, more)
        self.assertRaises(FramingError, framer.end)
        self.assertEqual(framer.buffered, 0)


def encodeOneByOne(framer: Framer, payloads: list[bytes]) -> bytes | str:
    """
    What C{encode} gives for each of C{payloads}, joined, or the reason of
    the first L{FramingError}.
    """
    try:
        return b"".join(framer.encode(payload) for payload in payloads)
    except FramingError as error:
        return error.reason


class EncodeAllTests(SynchronousTestCase):
    """
    C{encodeAll} is C{encode} for each reply, joined, on every path.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        spec=st.sampled_from(
            [
                "length:1",
                "length:2",
                "length:2:order=little",
                "length:2:adjust=2",
                "length:2:adjust=-1",
                "length:3",
                "length:4",
                "length:4:max=40",
                "length:8",
                "length:2:offset=1",
                "length:2:strip=0",
                "netstring:max=20",
                "delimiter:00",
                "fixed:3",
                "line:max=30",
            ]
        ),
        payloads=st.lists(st.binary(max_size=300), max_size=8),
    )
    def test_sameAsEncodeEach(self, spec: str, payloads: list[bytes]) -> None:
        """
        For any framing and replies, C{encodeAll} gives the bytes of
        C{encode} for each, joined, or raises the error C{encode} raises
        first.
        """
        framer = parseFraming(spec)()
        expected = encodeOneByOne(framer, payloads)
        try:
            got: bytes | str = framer.encodeAll(payloads)
        except FramingError as error:
            got = error.reason
        self.assertEqual(got, expected)
