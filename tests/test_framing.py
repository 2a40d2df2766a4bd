"""
Tests for L{tcpcomm.framing}.
"""

import tracemalloc
from collections.abc import Iterable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.framing import DEFAULT_MAX_LINE_LENGTH, LineFramer


def feedAll(framer: LineFramer, chunks: Iterable[bytes]) -> list[bytes]:
    """
    Feed chunks to a framer one after another.

    @return: All the lines it returned, in order.
    """
    lines: list[bytes] = []
    for chunk in chunks:
        lines.extend(framer.feed(chunk))
    return lines


def splitAt(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """
    Split bytes at the given offsets, each taken modulo C{len(data) + 1}.

    @return: The pieces, in order; some may be empty.
    """
    offsets = sorted({cut % (len(data) + 1) for cut in cuts})
    return [
        data[start:end]
        for start, end in zip([0, *offsets], [*offsets, None], strict=True)
    ]


def dropOneCR(line: bytes) -> bytes:
    """
    @return: C{line} without one CR at its end, if it has one.
    """
    return line[:-1] if line.endswith(b"\r") else line


def referenceFrame(
    data: bytes, maxLineLength: int | None = None
) -> tuple[list[bytes], bool, bytes | None]:
    """
    A slow, obvious model of feeding C{data} to a framer and finishing it.

    @param maxLineLength: The limit, or C{None} for no limit.
    @return: The lines, whether it overflowed, and what C{finish} returns.
    """
    *complete, tail = data.split(b"\n")
    lines: list[bytes] = []
    for line in map(dropOneCR, complete):
        if maxLineLength is not None and len(line) > maxLineLength:
            return lines, True, None
        lines.append(line)
    if maxLineLength is not None and len(dropOneCR(tail)) > maxLineLength:
        return lines, True, None
    return lines, False, dropOneCR(tail) if tail else None


# Streams rich in line endings, CRs and bytes that are not UTF-8 text, and
# arbitrary binary streams.
streams = st.one_of(
    st.lists(
        st.sampled_from(
            [b"a", b"bc", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3", b"\xe2\x82"]
        ),
        max_size=80,
    ).map(b"".join),
    st.binary(max_size=200),
)
cutLists = st.lists(st.integers(min_value=0, max_value=1000), max_size=12)


class LineFramerTests(SynchronousTestCase):
    """
    Tests for L{LineFramer}.
    """

    def test_lf(self) -> None:
        """
        LF ends a line, and is not part of it.
        """
        self.assertEqual(LineFramer().feed(b"one\ntwo\n"), [b"one", b"two"])

    def test_crlf(self) -> None:
        """
        CRLF ends a line, and neither byte is part of it.
        """
        self.assertEqual(LineFramer().feed(b"one\r\ntwo\r\n"), [b"one", b"two"])

    def test_mixedEndings(self) -> None:
        """
        LF and CRLF endings may be mixed in one stream.
        """
        self.assertEqual(
            LineFramer().feed(b"a\r\nb\nc\r\nd\n"), [b"a", b"b", b"c", b"d"]
        )

    def test_emptyLines(self) -> None:
        """
        Consecutive endings give empty lines.
        """
        self.assertEqual(LineFramer().feed(b"\n\r\n\n"), [b"", b"", b""])

    def test_loneCRIsData(self) -> None:
        """
        A CR not directly before an LF is kept as part of the line.
        """
        self.assertEqual(LineFramer().feed(b"a\rb\r\rc\n"), [b"a\rb\r\rc"])

    def test_leadingCRIsData(self) -> None:
        """
        A CR at the start of a line, not before its LF, is kept.
        """
        self.assertEqual(LineFramer().feed(b"\rab\n"), [b"\rab"])

    def test_crCrLfDropsOneCR(self) -> None:
        """
        Of CR CR LF, only the CR directly before the LF is dropped.
        """
        self.assertEqual(LineFramer().feed(b"a\r\r\n\r\r\n"), [b"a\r", b"\r"])

    def test_arbitraryBytes(self) -> None:
        """
        NUL and bytes that are not valid UTF-8 are passed through unchanged.
        """
        line = b"\x00\xff\xfe\xc3(\xe2\x82\x00"
        self.assertEqual(LineFramer().feed(line + b"\n"), [line])

    def test_allByteValues(self) -> None:
        """
        Every byte value but LF is data, CR included when not before LF.
        """
        line = bytes(range(256)).replace(b"\n", b"")
        self.assertEqual(LineFramer().feed(line + b"\n"), [line])

    def test_linesAreBytes(self) -> None:
        """
        Lines are returned as C{bytes}, also when joined from held bytes.
        """
        framer = LineFramer()
        framer.feed(b"ab")
        lines = framer.feed(b"c\nd\n")
        self.assertEqual([type(line) for line in lines], [bytes, bytes])
        framer.feed(b"e\r")
        self.assertIs(type(framer.finish()), bytes)

    def test_emptyFeed(self) -> None:
        """
        Feeding no bytes returns no lines and holds nothing.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b""), [])
        self.assertEqual(framer.pendingLength(), 0)

    def test_incompleteLineHeld(self) -> None:
        """
        Bytes with no LF after them are held, not returned.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"one\ntw"), [b"one"])
        self.assertEqual(framer.pendingLength(), 2)
        self.assertEqual(framer.feed(b"o"), [])
        self.assertEqual(framer.pendingLength(), 3)
        self.assertEqual(framer.feed(b"\nthree\n"), [b"two", b"three"])
        self.assertEqual(framer.pendingLength(), 0)

    def test_nothingHeldCostsNoBuffer(self) -> None:
        """
        A framer holding nothing (new, or after lines that all ended) keeps
        no buffer: it costs its object alone (56 bytes on CPython 3.11),
        however many bytes it held before.
        """
        framers: list[LineFramer] = []
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            framers.extend(LineFramer() for _ in range(1000))
            for framer in framers[500:]:
                framer.feed(b"a partial line")
                framer.feed(b" now ended\nand another\n")
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        kept = sum(s.size_diff for s in after.compare_to(before, "filename"))
        self.assertLessEqual(kept / len(framers), 72)
        self.assertEqual({framer.pendingLength() for framer in framers}, {0})

    def test_emptyFeedKeepsHeldBytes(self) -> None:
        """
        Feeding no bytes leaves held bytes, and a held CR, as they were.
        """
        framer = LineFramer(3)
        framer.feed(b"abc\r")
        self.assertEqual(framer.feed(b""), [])
        self.assertEqual(framer.pendingLength(), 4)
        self.assertEqual(framer.feed(b"\n"), [b"abc"])

    def test_splitAtEveryPosition(self) -> None:
        """
        Splitting a stream into two or three pieces anywhere gives the same lines.
        """
        data = b"ab\r\n\nc\rd\r\r\n\x00\xff\r\ne\nf\r"
        expected = [b"ab", b"", b"c\rd\r", b"\x00\xff", b"e"]
        for first in range(len(data) + 1):
            for second in range(first, len(data) + 1):
                framer = LineFramer()
                pieces = [data[:first], data[first:second], data[second:]]
                self.assertEqual(feedAll(framer, pieces), expected, pieces)
                self.assertEqual(framer.finish(), b"f", pieces)

    def test_byteByByte(self) -> None:
        """
        Feeding a stream one byte at a time gives the same lines.
        """
        data = b"ab\r\n\nc\rd\r\r\n\x00\xff\r\ne\n"
        framer = LineFramer()
        pieces = [data[i : i + 1] for i in range(len(data))]
        self.assertEqual(
            feedAll(framer, pieces), [b"ab", b"", b"c\rd\r", b"\x00\xff", b"e"]
        )

    def test_crlfSplitAcrossCalls(self) -> None:
        """
        A CR at the end of one call and an LF at the start of the next are CRLF.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"abc\r"), [])
        self.assertEqual(framer.feed(b"\ndef\r"), [b"abc"])
        self.assertEqual(framer.feed(b"\n"), [b"def"])

    def test_crlfSplitAcrossCallsEmptyLine(self) -> None:
        """
        A lone held CR followed by an LF in the next call is an empty line.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"\r"), [])
        self.assertEqual(framer.feed(b"\n"), [b""])

    def test_heldCRThenData(self) -> None:
        """
        A held CR not followed by LF in the next call is data.
        """
        framer = LineFramer()
        framer.feed(b"a\r")
        self.assertEqual(framer.feed(b"b\n"), [b"a\rb"])

    def test_heldCRThenCrlf(self) -> None:
        """
        A held CR followed by CRLF in the next call keeps the held CR.
        """
        framer = LineFramer()
        framer.feed(b"a\r")
        self.assertEqual(framer.feed(b"\r\n"), [b"a\r"])

    def test_defaultMaxLineLength(self) -> None:
        """
        The default limit is L{DEFAULT_MAX_LINE_LENGTH}, 65536 bytes.
        """
        self.assertEqual(DEFAULT_MAX_LINE_LENGTH, 65536)
        framer = LineFramer()
        self.assertEqual(framer.maxLineLength, DEFAULT_MAX_LINE_LENGTH)
        self.assertFalse(framer.overflowed)
        line = b"x" * DEFAULT_MAX_LINE_LENGTH
        self.assertEqual(framer.feed(line + b"\r\n"), [line])
        self.assertEqual(framer.feed(line + b"x\n"), [])
        self.assertTrue(framer.overflowed)

    def test_maxLineLengthTooSmall(self) -> None:
        """
        A limit less than 1 is rejected with L{ValueError}.
        """
        self.assertRaises(ValueError, LineFramer, 0)
        self.assertRaises(ValueError, LineFramer, -1)

    def test_maxLineLengthOne(self) -> None:
        """
        A limit of 1 accepts one-byte and empty lines, and refuses two bytes.
        """
        framer = LineFramer(1)
        self.assertEqual(framer.feed(b"a\n\r\n\rb\n"), [b"a", b""])
        self.assertTrue(framer.overflowed)

    def test_exactLimitLf(self) -> None:
        """
        A line of exactly the limit, ended by LF, is accepted.
        """
        framer = LineFramer(5)
        self.assertEqual(framer.feed(b"abcde\nfghij\n"), [b"abcde", b"fghij"])
        self.assertFalse(framer.overflowed)

    def test_exactLimitCrlf(self) -> None:
        """
        A line of exactly the limit, ended by CRLF, is accepted.
        """
        framer = LineFramer(5)
        self.assertEqual(framer.feed(b"abcde\r\nfghij\r\n"), [b"abcde", b"fghij"])
        self.assertFalse(framer.overflowed)

    def test_exactLimitInPieces(self) -> None:
        """
        A line of exactly the limit is accepted however it is split, LF or CRLF.
        """
        for ending in [b"\n", b"\r\n"]:
            data = b"abcde" + ending
            for first in range(len(data) + 1):
                for second in range(first, len(data) + 1):
                    framer = LineFramer(5)
                    pieces = [data[:first], data[first:second], data[second:]]
                    self.assertEqual(feedAll(framer, pieces), [b"abcde"], pieces)
                    self.assertFalse(framer.overflowed, pieces)

    def test_exactLimitHeld(self) -> None:
        """
        An incomplete line of exactly the limit is held, not refused.
        """
        framer = LineFramer(5)
        self.assertEqual(framer.feed(b"abcde"), [])
        self.assertFalse(framer.overflowed)
        self.assertEqual(framer.pendingLength(), 5)
        self.assertEqual(framer.feed(b"\n"), [b"abcde"])

    def test_exactLimitHeldCR(self) -> None:
        """
        The limit plus a CR is held: it may be the CR of a CRLF.
        """
        framer = LineFramer(5)
        self.assertEqual(framer.feed(b"abcde\r"), [])
        self.assertFalse(framer.overflowed)
        self.assertEqual(framer.pendingLength(), 6)
        self.assertEqual(framer.feed(b"\n"), [b"abcde"])
        self.assertFalse(framer.overflowed)

    def test_exactLimitHeldCRThenData(self) -> None:
        """
        The limit plus a held CR overflows when the next byte is not LF.
        """
        framer = LineFramer(5)
        framer.feed(b"abcde\r")
        self.assertEqual(framer.feed(b"x"), [])
        self.assertTrue(framer.overflowed)
        self.assertEqual(framer.pendingLength(), 0)

    def test_exactLimitHeldCRThenCrlf(self) -> None:
        """
        The limit plus a held CR overflows when CRLF follows: that CR is data.
        """
        framer = LineFramer(5)
        framer.feed(b"abcde\r")
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertTrue(framer.overflowed)

    def test_overLimitLf(self) -> None:
        """
        A complete line one byte over the limit overflows and is not returned.
        """
        framer = LineFramer(5)
        self.assertEqual(framer.feed(b"abcdef\n"), [])
        self.assertTrue(framer.overflowed)

    def test_overLimitCrlf(self) -> None:
        """
        A complete CRLF line one byte over the limit overflows.
        """
        framer = LineFramer(5)
        self.assertEqual(framer.feed(b"abcdef\r\n"), [])
        self.assertTrue(framer.overflowed)

    def test_overLimitCrCrLf(self) -> None:
        """
        A kept CR counts towards the length: limit bytes plus CR CR LF overflow.
        """
        framer = LineFramer(5)
        self.assertEqual(framer.feed(b"abcde\r\r\n"), [])
        self.assertTrue(framer.overflowed)

    def test_overLimitHeld(self) -> None:
        """
        An incomplete line of limit + 1 bytes not ending in CR overflows at once.
        """
        framer = LineFramer(5)
        self.assertEqual(framer.feed(b"abcdef"), [])
        self.assertTrue(framer.overflowed)
        self.assertEqual(framer.pendingLength(), 0)

    def test_overLimitHeldAcrossCalls(self) -> None:
        """
        Held bytes and new bytes together over the limit overflow, LF or not.
        """
        for tail in [b"f", b"f\n", b"f\r\n", b"fgh"]:
            framer = LineFramer(5)
            self.assertEqual(framer.feed(b"abcde"), [])
            self.assertEqual(framer.feed(tail), [], tail)
            self.assertTrue(framer.overflowed, tail)

    def test_overLimitHeldTwoCRs(self) -> None:
        """
        The limit plus two CRs overflows while incomplete: one CR is data.
        """
        framer = LineFramer(5)
        self.assertEqual(framer.feed(b"abcde\r\r"), [])
        self.assertTrue(framer.overflowed)

    def test_linesBeforeOverlongReturned(self) -> None:
        """
        Lines before an overlong line in one call are returned, it and later ones not.
        """
        framer = LineFramer(3)
        self.assertEqual(framer.feed(b"ab\r\ncd\ntoolong\nef\n"), [b"ab", b"cd"])
        self.assertTrue(framer.overflowed)

    def test_linesBeforeOverlongTailReturned(self) -> None:
        """
        Lines before an overlong incomplete line in the same call are returned.
        """
        framer = LineFramer(3)
        self.assertEqual(framer.feed(b"ab\ncd\ntoolong"), [b"ab", b"cd"])
        self.assertTrue(framer.overflowed)
        self.assertEqual(framer.pendingLength(), 0)

    def test_nothingAfterOverflow(self) -> None:
        """
        After overflow, feed returns and holds nothing and finish returns C{None}.
        """
        framer = LineFramer(3)
        framer.feed(b"toolong\n")
        self.assertEqual(framer.feed(b"ok\n"), [])
        self.assertEqual(framer.feed(b"he"), [])
        self.assertEqual(framer.pendingLength(), 0)
        self.assertIsNone(framer.finish())
        self.assertTrue(framer.overflowed)

    def test_finishWithHeldBytes(self) -> None:
        """
        finish returns the held incomplete line.
        """
        framer = LineFramer()
        framer.feed(b"one\ntwo")
        self.assertEqual(framer.finish(), b"two")

    def test_finishWithNothingHeld(self) -> None:
        """
        finish returns C{None} when no bytes are held.
        """
        self.assertIsNone(LineFramer().finish())
        framer = LineFramer()
        framer.feed(b"one\n")
        self.assertIsNone(framer.finish())

    def test_finishDropsTrailingCR(self) -> None:
        """
        finish treats the end as an LF, so one CR at the end is dropped.
        """
        framer = LineFramer()
        framer.feed(b"two\r")
        self.assertEqual(framer.finish(), b"two")

    def test_finishDropsOnlyOneCR(self) -> None:
        """
        finish drops only the last of several trailing CRs.
        """
        framer = LineFramer()
        framer.feed(b"two\r\r")
        self.assertEqual(framer.finish(), b"two\r")

    def test_finishLoneCR(self) -> None:
        """
        finish with only a CR held returns an empty line, as CRLF would.
        """
        framer = LineFramer()
        framer.feed(b"\r")
        self.assertEqual(framer.finish(), b"")

    def test_finishExactLimitWithCR(self) -> None:
        """
        finish accepts the limit plus a held CR, dropping the CR.
        """
        framer = LineFramer(5)
        framer.feed(b"abcde\r")
        self.assertEqual(framer.finish(), b"abcde")
        self.assertFalse(framer.overflowed)

    def test_finishEmptiesFramer(self) -> None:
        """
        After finish nothing is held, and a second finish returns C{None}.
        """
        framer = LineFramer()
        framer.feed(b"two")
        self.assertEqual(framer.finish(), b"two")
        self.assertEqual(framer.pendingLength(), 0)
        self.assertIsNone(framer.finish())

    def test_loweredLimitHeldOverflowsOnFinish(self) -> None:
        """
        If C{maxLineLength} is lowered below the held bytes, finish overflows.
        """
        framer = LineFramer(10)
        framer.feed(b"abcdef")
        framer.maxLineLength = 3
        self.assertIsNone(framer.finish())
        self.assertTrue(framer.overflowed)

    def test_loweredLimitHeldOverflowsOnFeed(self) -> None:
        """
        If C{maxLineLength} is lowered below the held bytes, the next feed overflows.
        """
        for data in [b"g", b"\n", b"\r\n"]:
            framer = LineFramer(10)
            framer.feed(b"abcdef")
            framer.maxLineLength = 3
            self.assertEqual(framer.feed(data), [], data)
            self.assertTrue(framer.overflowed, data)

    def test_pendingBoundedByteByByte(self) -> None:
        """
        Fed byte by byte, a huge line holds at most the limit, then overflows.
        """
        framer = LineFramer(100)
        for count in range(1, 10001):
            framer.feed(b"x")
            self.assertLessEqual(framer.pendingLength(), 100)
            self.assertEqual(framer.overflowed, count > 100)

    def test_pendingBoundedWithCRByteByByte(self) -> None:
        """
        Fed byte by byte, the limit plus a CR is held; one more byte overflows.
        """
        framer = LineFramer(100)
        for byte in [b"x"] * 100 + [b"\r"]:
            framer.feed(byte)
        self.assertEqual(framer.pendingLength(), 101)
        self.assertFalse(framer.overflowed)
        for _ in range(1000):
            framer.feed(b"\r")
            self.assertTrue(framer.overflowed)
            self.assertEqual(framer.pendingLength(), 0)

    def test_pendingBoundedInBigChunks(self) -> None:
        """
        Fed in big chunks, a huge line holds at most the limit, then overflows.
        """
        for head in [b"", b"ok\n", b"ok\r\n" * 100]:
            for chunk in [b"x" * 4096, b"x" * 10000, b"x" * 10001, b"x" * 65536]:
                framer = LineFramer(10000)
                framer.feed(head)
                fed = 0
                while not framer.overflowed:
                    framer.feed(chunk)
                    fed += len(chunk)
                    self.assertLessEqual(framer.pendingLength(), 10000)
                    self.assertEqual(framer.overflowed, fed > 10000)
                self.assertEqual(framer.pendingLength(), 0)

    def test_pendingBoundedInBigChunksWithCR(self) -> None:
        """
        Fed in big chunks, the limit plus a CR is held; more bytes overflow.
        """
        framer = LineFramer(10000)
        framer.feed(b"x" * 4096)
        framer.feed(b"x" * 5904 + b"\r")
        self.assertEqual(framer.pendingLength(), 10001)
        self.assertFalse(framer.overflowed)
        framer.feed(b"\r" * 4096)
        self.assertEqual(framer.pendingLength(), 0)
        self.assertTrue(framer.overflowed)

    def test_longLineByteByByte(self) -> None:
        """
        A 256 KiB line fed a byte at a time comes out whole, CR dropped.
        """
        size = 256 * 1024
        framer = LineFramer(size)
        feed = framer.feed
        byte = b"x"
        for _ in range(size):
            feed(byte)
        self.assertEqual(framer.pendingLength(), size)
        self.assertEqual(feed(b"\r\n"), [b"x" * size])

    def test_megabyteLinesInSmallPieces(self) -> None:
        """
        Two 1 MiB lines fed in 32-byte pieces come out whole, lone CRs kept.
        """
        size = 1024 * 1024
        data = b"\xff" * size + b"\r\n" + b"\r" * size + b"\n"
        framer = LineFramer(size)
        feed = framer.feed
        lines = [
            line for i in range(0, len(data), 32) for line in feed(data[i : i + 32])
        ]
        self.assertEqual(lines, [b"\xff" * size, b"\r" * (size - 1)])


class LineFramerPropertyTests(SynchronousTestCase):
    """
    Property tests for L{LineFramer}, against a simple reference model.
    """

    def assertSameAsWhole(
        self, data: bytes, chunks: Sequence[bytes], maxLineLength: int
    ) -> None:
        """
        Assert that feeding C{chunks} gives what feeding C{data} whole gives.
        """
        whole = LineFramer(maxLineLength)
        wholeLines = whole.feed(data)
        pieces = LineFramer(maxLineLength)
        self.assertEqual(feedAll(pieces, chunks), wholeLines)
        self.assertEqual(pieces.overflowed, whole.overflowed)
        self.assertEqual(pieces.finish(), whole.finish())

    @settings(max_examples=300, deadline=None)
    @given(
        data=streams,
        cuts=cutLists,
        maxLineLength=st.integers(min_value=1, max_value=12),
    )
    def test_chunkingIrrelevant(
        self, data: bytes, cuts: list[int], maxLineLength: int
    ) -> None:
        """
        Any chunking gives the lines, overflow and finish result of feeding whole.
        """
        self.assertSameAsWhole(data, splitAt(data, cuts), maxLineLength)

    @settings(max_examples=100, deadline=None)
    @given(data=streams, maxLineLength=st.integers(min_value=1, max_value=12))
    def test_byteByByteIrrelevant(self, data: bytes, maxLineLength: int) -> None:
        """
        Feeding a stream one byte at a time is the same as feeding it whole.
        """
        chunks = [data[i : i + 1] for i in range(len(data))]
        self.assertSameAsWhole(data, chunks, maxLineLength)

    @settings(max_examples=300, deadline=None)
    @given(data=streams, cuts=cutLists)
    def test_matchesReferenceWithinLimit(self, data: bytes, cuts: list[int]) -> None:
        """
        Within the limit, lines and finish match the split-at-LF, drop-one-CR model.
        """
        lines, _, rest = referenceFrame(data)
        framer = LineFramer(max(len(data), 1))
        self.assertEqual(feedAll(framer, splitAt(data, cuts)), lines)
        self.assertFalse(framer.overflowed)
        self.assertEqual(framer.finish(), rest)

    @settings(max_examples=300, deadline=None)
    @given(
        data=streams,
        cuts=cutLists,
        maxLineLength=st.integers(min_value=1, max_value=6),
    )
    def test_matchesReferenceWithSmallLimit(
        self, data: bytes, cuts: list[int], maxLineLength: int
    ) -> None:
        """
        With a small limit, feed never holds over limit + 1 and matches the model.
        """
        framer = LineFramer(maxLineLength)
        lines: list[bytes] = []
        for chunk in splitAt(data, cuts):
            lines.extend(framer.feed(chunk))
            self.assertLessEqual(framer.pendingLength(), maxLineLength + 1)
        expected, overflowed, rest = referenceFrame(data, maxLineLength)
        self.assertEqual(lines, expected)
        self.assertEqual(framer.overflowed, overflowed)
        self.assertEqual(framer.finish(), rest)
