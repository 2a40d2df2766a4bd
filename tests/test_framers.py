"""
Tests for L{tcpcomm.framers}: each framer's frames, errors and replies, and
L{parseFraming}.
"""

from __future__ import annotations

import struct
from typing import cast

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver, NetstringReceiver
from twisted.trial.unittest import SynchronousTestCase

import tcpcomm.framers
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
    exceptionResponse,
    parseFraming,
)

# A MODBUS read holding registers request: transaction 1, unit 1, function
# 3, 2 registers from address 10.
READ_REQUEST = bytes.fromhex("0001 0000 0006 01 03 000a 0002")


class CollectingInt32(Int32StringReceiver):
    """
    An C{Int32StringReceiver} that keeps the strings it receives.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def stringReceived(self, string: bytes) -> None:
        self.received.append(string)


class CollectingNetstring(NetstringReceiver):
    """
    A C{NetstringReceiver} that keeps the strings it receives.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def stringReceived(self, string: bytes) -> None:
        self.received.append(string)


def assertFailsWith(
    testCase: SynchronousTestCase, framer: Framer, data: bytes, reason: str
) -> FramingError:
    """
    Feed C{data}, which must raise a L{FramingError} whose reason holds
    C{reason}; then the framer must be dead.

    @return: The error.
    """
    error: FramingError = testCase.assertRaises(FramingError, framer.feed, data)
    testCase.assertIn(reason, error.reason)
    testCase.assertEqual(framer.buffered, 0)
    testCase.assertRaises(FramingError, framer.feed, b"x")
    testCase.assertRaises(FramingError, framer.end)
    return error


class DelimiterFramerTests(SynchronousTestCase):
    """
    L{DelimiterFramer} cuts frames at a byte sequence.
    """

    def test_framesEndAtDelimiter(self) -> None:
        """
        Each frame ends at the delimiter, which the payload leaves out; the
        rest is held.
        """
        framer = DelimiterFramer(b"\x00")
        self.assertEqual(framer.feed(b"ab\x00\x00cd\x00ef"), [b"ab", b"", b"cd"])
        self.assertEqual(framer.buffered, 2)

    def test_delimiterSplitAcrossFeeds(self) -> None:
        """
        A multi-byte delimiter split between two reads still ends its frame.
        """
        framer = DelimiterFramer(b"\r\n")
        self.assertEqual(framer.feed(b"one\r"), [])
        self.assertEqual(framer.feed(b"\ntwo\r\n"), [b"one", b"two"])
        self.assertEqual(framer.buffered, 0)

    def test_endGivesLastFrame(self) -> None:
        """
        The end of input ends the unterminated last frame.
        """
        framer = DelimiterFramer(b"\x00")
        framer.feed(b"a\x00tail")
        self.assertEqual(framer.end(), [b"tail"])

    def test_endWithNothingHeld(self) -> None:
        """
        The end of input right after a delimiter gives no frame.
        """
        framer = DelimiterFramer(b"\x00")
        framer.feed(b"a\x00")
        self.assertEqual(framer.end(), [])

    def test_feedAfterEnd(self) -> None:
        """
        Input after the end is an error.
        """
        framer = DelimiterFramer(b"\x00")
        framer.end()
        self.assertRaises(FramingError, framer.feed, b"a")

    def test_tooLongFrameAfterGoodOnes(self) -> None:
        """
        A complete frame over max is an error that carries the frames
        before it.
        """
        framer = DelimiterFramer(b"\x00", maxLength=3)
        error = assertFailsWith(
            self, framer, b"abc\x00abcd\x00x\x00", "longer than max 3"
        )
        self.assertEqual(error.frames, [b"abc"])

    def test_tooLongFailsFast(self) -> None:
        """
        Bytes that prove their frame over max are an error before any
        delimiter arrives.
        """
        assertFailsWith(self, DelimiterFramer(b"\x00", 3), b"abcd", "longer than max")

    def test_partialDelimiterAfterMaxIsHeld(self) -> None:
        """
        Max bytes and the start of the delimiter are held: the frame may
        yet end within max.
        """
        framer = DelimiterFramer(b"\r\n", maxLength=3)
        self.assertEqual(framer.feed(b"abc\r"), [])
        self.assertEqual(framer.buffered, 4)
        self.assertEqual(framer.feed(b"\n"), [b"abc"])

    def test_overlappingDelimiterStartIsHeld(self) -> None:
        """
        A delimiter that may start before max is waited for, even when the
        bytes after max are not its start.
        """
        framer = DelimiterFramer(b"abc", maxLength=3)
        self.assertEqual(framer.feed(b"xxab"), [])
        self.assertEqual(framer.feed(b"c"), [b"xx"])

    def test_encodeAppendsDelimiter(self) -> None:
        """
        A reply gets the delimiter appended.
        """
        self.assertEqual(DelimiterFramer(b"\r\n").encode(b"ok"), b"ok\r\n")

    def test_encodeRefusesDelimiter(self) -> None:
        """
        A reply holding the delimiter cannot be framed.
        """
        self.assertRaises(FramingError, DelimiterFramer(b"\x00").encode, b"a\x00b")

    def test_encodeRefusesOverlap(self) -> None:
        """
        A reply that, with the delimiter, holds it earlier cannot be
        framed: the peer would cut it short.
        """
        self.assertRaises(FramingError, DelimiterFramer(b"aa").encode, b"xa")

    def test_encodeRefusesTooLong(self) -> None:
        """
        A reply over max cannot be framed.
        """
        self.assertRaises(FramingError, DelimiterFramer(b"\x00", 2).encode, b"abc")

    def test_emptyDelimiter(self) -> None:
        """
        An empty delimiter is refused.
        """
        self.assertRaises(ValueError, DelimiterFramer, b"")


class StxEtxFramerTests(SynchronousTestCase):
    """
    L{StxEtxFramer} cuts C{0x02 payload 0x03} frames out of line noise.
    """

    def test_framesBetweenNoise(self) -> None:
        """
        Frames are the bytes between STX and ETX; the bytes outside are
        discarded and counted.
        """
        framer = StxEtxFramer()
        self.assertEqual(framer.feed(b"xx\x02ab\x03y\x03\x02\x03\x02cd"), [b"ab", b""])
        self.assertEqual(framer.discarded, 4)
        self.assertEqual(framer.buffered, 3)
        self.assertEqual(framer.feed(b"e\x03"), [b"cde"])

    def test_stxInsideFrameIsData(self) -> None:
        """
        An STX inside a frame is payload.
        """
        self.assertEqual(StxEtxFramer().feed(b"\x02a\x02b\x03"), [b"a\x02b"])

    def test_tooLongFailsFast(self) -> None:
        """
        A frame over max is an error as soon as its bytes prove it.
        """
        framer = StxEtxFramer(maxLength=2)
        error = assertFailsWith(self, framer, b"\x02ab\x03\x02abc", "longer than max 2")
        self.assertEqual(error.frames, [b"ab"])

    def test_endInsideFrame(self) -> None:
        """
        The end of input inside a frame is an error.
        """
        framer = StxEtxFramer()
        framer.feed(b"\x02ab")
        self.assertRaises(FramingError, framer.end)

    def test_endAfterNoise(self) -> None:
        """
        The end of input after noise is no error.
        """
        framer = StxEtxFramer()
        framer.feed(b"\x02a\x03noise")
        self.assertEqual((framer.end(), framer.discarded), ([], 5))

    def test_encodeWraps(self) -> None:
        """
        A reply is wrapped in STX and ETX.
        """
        self.assertEqual(StxEtxFramer().encode(b"ok"), b"\x02ok\x03")

    def test_encodeRefusesEtx(self) -> None:
        """
        A reply holding ETX cannot be framed.
        """
        self.assertRaises(FramingError, StxEtxFramer().encode, b"a\x03")

    def test_encodeRefusesTooLong(self) -> None:
        """
        A reply over max cannot be framed.
        """
        self.assertRaises(FramingError, StxEtxFramer(1).encode, b"ab")


class LengthFieldFramerTests(SynchronousTestCase):
    """
    L{LengthFieldFramer} cuts frames as Netty's
    C{LengthFieldBasedFrameDecoder} does.
    """

    def test_int32WireFormat(self) -> None:
        """
        C{length:4} is a 4-byte big-endian length, then the payload.
        """
        framer = LengthFieldFramer(4)
        self.assertEqual(framer.encode(b"hello"), struct.pack("!I", 5) + b"hello")
        self.assertEqual(framer.feed(struct.pack("!I", 2) + b"hi"), [b"hi"])

    def test_int32StringReceiverInterop(self) -> None:
        """
        C{length:4} reads what C{Int32StringReceiver} sends, and sends what
        it reads.
        """
        receiver = CollectingInt32()
        transport = StringTransport()
        receiver.makeConnection(transport)
        receiver.sendString(b"from twisted")
        receiver.sendString(b"")
        framer = LengthFieldFramer(4)
        self.assertEqual(framer.feed(transport.value()), [b"from twisted", b""])
        receiver.dataReceived(framer.encode(b"to twisted") + framer.encode(b"x"))
        self.assertEqual(receiver.received, [b"to twisted", b"x"])

    def test_javaWriteShort(self) -> None:
        """
        C{length:2} is Java's C{DataOutputStream.writeShort(n); write(b)}: a
        2-byte big-endian length.
        """
        payload = bytes(range(256)) * 2
        wire = struct.pack(">H", 512) + payload
        framer = LengthFieldFramer(2)
        self.assertEqual(framer.encode(payload), wire)
        self.assertEqual(framer.feed(wire), [payload])

    def test_littleEndianAndOddSizes(self) -> None:
        """
        The field may be little-endian, and 3 or 8 bytes long.
        """
        self.assertEqual(
            LengthFieldFramer(2, order="little").encode(b"ab"), b"\x02\x00ab"
        )
        self.assertEqual(LengthFieldFramer(3).encode(b"ab"), b"\x00\x00\x02ab")
        self.assertEqual(LengthFieldFramer(8).feed(struct.pack(">Q", 1) + b"z"), [b"z"])

    def test_nettyHeaderBeforeLength(self) -> None:
        """
        Netty's example: offset 2, 3-byte field, strip 0; the whole frame is
        handed on.
        """
        frame = b"\xca\xfe" + b"\x00\x00\x0c" + b"HELLO, WORLD"
        framer = LengthFieldFramer(3, offset=2, strip=0)
        self.assertEqual(framer.feed(frame + frame[:5]), [frame])
        self.assertEqual(framer.buffered, 5)

    def test_nettyAdjustAndStrip(self) -> None:
        """
        Netty's example: offset 1, 2-byte field counting the whole frame
        (adjust -3), strip 3; the payload is the second header and body.
        """
        frame = b"\xca" + b"\x00\x10" + b"\xfe" + b"HELLO, WORLD"
        framer = LengthFieldFramer(2, offset=1, adjust=-3, strip=3)
        self.assertEqual(framer.feed(frame), [b"\xfeHELLO, WORLD"])

    def test_encodeOffsetIsZeros(self) -> None:
        """
        With the default strip, a reply's offset bytes are zeros and its
        field holds the payload's length less adjust.
        """
        framer = LengthFieldFramer(2, offset=1, adjust=-3)
        self.assertEqual(framer.encode(b"abc"), b"\x00\x00\x06abc")

    def test_encodeWholeFrameChecked(self) -> None:
        """
        With a smaller strip a reply is a whole frame, sent as it is once its
        length field matches its length.
        """
        framer = LengthFieldFramer(2, strip=0)
        self.assertEqual(framer.encode(b"\x00\x01a"), b"\x00\x01a")
        self.assertRaises(FramingError, framer.encode, b"\x00\x02a")
        self.assertRaises(FramingError, framer.encode, b"\x00")

    def test_encodeRefusesTooLongForField(self) -> None:
        """
        A reply whose length does not fit the field cannot be framed.
        """
        framer = LengthFieldFramer(1, maxLength=1000)
        self.assertEqual(len(framer.encode(bytes(255))), 256)
        self.assertRaises(FramingError, framer.encode, bytes(256))

    def test_encodeRefusesNegativeField(self) -> None:
        """
        A reply shorter than a positive adjust cannot be framed.
        """
        self.assertRaises(FramingError, LengthFieldFramer(1, adjust=2).encode, b"a")

    def test_encodeRefusesTooLong(self) -> None:
        """
        A reply whose frame is over max cannot be framed.
        """
        framer = LengthFieldFramer(4, maxLength=6)
        self.assertEqual(framer.encode(b"ab"), b"\x00\x00\x00\x02ab")
        self.assertRaises(FramingError, framer.encode, b"abc")

    def test_tooLongFailsFast(self) -> None:
        """
        A header announcing a frame over max is an error at once, before
        its body comes.
        """
        framer = LengthFieldFramer(2, maxLength=10)
        error = assertFailsWith(
            self, framer, b"\x00\x01a\x00\x09", "longer than max 10"
        )
        self.assertEqual(error.frames, [b"a"])

    def test_negativeAdjustedLength(self) -> None:
        """
        A length that adjust makes shorter than the header is an error.
        """
        framer = LengthFieldFramer(1, adjust=-2)
        assertFailsWith(self, framer, b"\x01", "shorter than its 1-byte header")

    def test_payloadsAreBytesWhenFedABytearray(self) -> None:
        """
        Payloads cut from a C{bytearray} are C{bytes}, not C{bytearray}
        slices.
        """
        framer = LengthFieldFramer(2)
        # Outside feed's declared type, but it has always worked.
        chunk = cast(bytes, bytearray(b"\x00\x02hi\x00\x01x\x00"))
        frames = framer.feed(chunk)
        self.assertEqual(frames, [b"hi", b"x"])
        self.assertEqual([type(frame) for frame in frames], [bytes, bytes])
        self.assertEqual(framer.buffered, 1)

    def test_endInsideFrame(self) -> None:
        """
        The end of input inside a frame is an error; between frames it is
        not.
        """
        framer = LengthFieldFramer(2)
        framer.feed(b"\x00\x02a")
        self.assertRaises(FramingError, framer.end)
        self.assertEqual(LengthFieldFramer(2).end(), [])

    def test_badParameters(self) -> None:
        """
        A size, offset, strip, order or max out of range is refused.
        """
        self.assertRaises(ValueError, LengthFieldFramer, 5)
        self.assertRaises(ValueError, LengthFieldFramer, 2, offset=-1)
        self.assertRaises(ValueError, LengthFieldFramer, 2, strip=3)
        self.assertRaises(ValueError, LengthFieldFramer, 2, maxLength=1)
        self.assertRaises(
            ValueError,
            LengthFieldFramer,
            2,
            order="middle",
        )


class NetstringFramerTests(SynchronousTestCase):
    """
    L{NetstringFramer} reads and writes netstrings as Twisted's
    C{NetstringReceiver}.
    """

    def test_netstrings(self) -> None:
        """
        Netstrings give their payloads; a partial one is held.
        """
        framer = NetstringFramer()
        self.assertEqual(framer.feed(b"5:hello,0:,3:a"), [b"hello", b""])
        self.assertEqual(framer.buffered, 3)
        self.assertEqual(framer.feed(b"b:,"), [b"ab:"])

    def test_netstringReceiverInterop(self) -> None:
        """
        The framer reads what C{NetstringReceiver} sends, and sends what it
        reads.
        """
        receiver = CollectingNetstring()
        transport = StringTransport()
        receiver.makeConnection(transport)
        receiver.sendString(b"from twisted")
        framer = NetstringFramer()
        self.assertEqual(framer.feed(transport.value()), [b"from twisted"])
        receiver.dataReceived(framer.encode(b"to twisted") + framer.encode(b""))
        self.assertEqual(receiver.received, [b"to twisted", b""])
        self.assertFalse(receiver.brokenPeer)

    def test_leadingZeroAsTwisted(self) -> None:
        """
        A length with a leading zero is an error, as C{NetstringReceiver}
        treats it.
        """
        receiver = CollectingNetstring()
        receiver.makeConnection(StringTransport())
        receiver.dataReceived(b"05:hello,")
        self.assertTrue(receiver.brokenPeer)
        assertFailsWith(self, NetstringFramer(), b"05:hello,", "leading zero")

    def test_missingComma(self) -> None:
        """
        A payload not followed by a comma is an error, after the frames
        before it.
        """
        error = assertFailsWith(self, NetstringFramer(), b"1:a,1:bc", "comma")
        self.assertEqual(error.frames, [b"a"])

    def test_notALength(self) -> None:
        """
        Anything but digits before the colon is an error.
        """
        assertFailsWith(self, NetstringFramer(), b"-1:", "does not start with")
        assertFailsWith(self, NetstringFramer(), b":", "does not start with")
        assertFailsWith(self, NetstringFramer(), b"1x", "does not start with")

    def test_tooLongFailsFast(self) -> None:
        """
        A length over max is an error as soon as its digits prove it.
        """
        assertFailsWith(self, NetstringFramer(99), b"100", "longer than max 99")
        assertFailsWith(
            self, NetstringFramer(99), b"100:" + bytes(100), "longer than max"
        )
        assertFailsWith(self, NetstringFramer(99), b"1000000", "longer than max 99")

    def test_endInsideFrame(self) -> None:
        """
        The end of input inside a netstring is an error.
        """
        framer = NetstringFramer()
        framer.feed(b"1")
        self.assertRaises(FramingError, framer.end)

    def test_encodeRefusesTooLong(self) -> None:
        """
        A reply over max cannot be framed.
        """
        self.assertRaises(FramingError, NetstringFramer(1).encode, b"ab")


class FixedFramerTests(SynchronousTestCase):
    """
    L{FixedFramer} cuts every N bytes.
    """

    def test_everyNBytes(self) -> None:
        """
        Every N bytes is a frame; the rest is held.
        """
        framer = FixedFramer(3)
        self.assertEqual(framer.feed(b"abcdefgh"), [b"abc", b"def"])
        self.assertEqual(framer.buffered, 2)
        self.assertEqual(framer.feed(b"i"), [b"ghi"])

    def test_endInsideFrame(self) -> None:
        """
        The end of input inside a record is an error.
        """
        framer = FixedFramer(3)
        framer.feed(b"ab")
        self.assertRaises(FramingError, framer.end)

    def test_endInsideFrameSaysHowMuch(self) -> None:
        """
        The error at the end of input inside a frame counts the bytes held,
        in words: C{1 byte}, C{2 bytes}.
        """
        for held, words in ((b"a", "(1 byte held)"), (b"ab", "(2 bytes held)")):
            framer = FixedFramer(3)
            framer.feed(held)
            error = self.assertRaises(FramingError, framer.end)
            self.assertEqual(error.reason, f"input ended inside a frame {words}")

    def test_encodeAsItIs(self) -> None:
        """
        Replies are sent as they are, whatever their length.
        """
        self.assertEqual(FixedFramer(3).encode(b"abcde"), b"abcde")

    def test_badLength(self) -> None:
        """
        A frame length under 1 is refused.
        """
        self.assertRaises(ValueError, FixedFramer, 0)


class ModbusFramerTests(SynchronousTestCase):
    """
    L{ModbusFramer} cuts MODBUS TCP ADUs by their MBAP header.
    """

    def test_wholeAdus(self) -> None:
        """
        Each ADU is a frame, header and all, however the reads cut it.
        """
        framer = ModbusFramer()
        self.assertEqual(framer.feed(READ_REQUEST + READ_REQUEST[:5]), [READ_REQUEST])
        self.assertEqual(framer.feed(READ_REQUEST[5:]), [READ_REQUEST])

    def test_protocolIdNotZero(self) -> None:
        """
        A protocol id other than 0 is an error as soon as the header is
        read.
        """
        assertFailsWith(
            self, ModbusFramer(), bytes.fromhex("0001 0001 0006"), "protocol id 1"
        )

    def test_tooLong(self) -> None:
        """
        An ADU over 260 bytes is an error as soon as the header is read.
        """
        ModbusFramer().feed(bytes.fromhex("0001 0000 00fe"))
        assertFailsWith(
            self, ModbusFramer(), bytes.fromhex("0001 0000 00ff"), "longer than max 260"
        )

    def test_noFunctionCode(self) -> None:
        """
        A length field under 2 (no function code) is an error.
        """
        assertFailsWith(
            self, ModbusFramer(), bytes.fromhex("0001 0000 0001"), "no function code"
        )

    def test_encodeChecksAdu(self) -> None:
        """
        A reply is a whole ADU, sent as it is once checked.
        """
        framer = ModbusFramer()
        self.assertEqual(framer.encode(READ_REQUEST), READ_REQUEST)
        self.assertRaises(FramingError, framer.encode, READ_REQUEST[:-1])
        self.assertRaises(
            FramingError, framer.encode, b"\x00\x01\x00\x01" + READ_REQUEST[4:]
        )

    def test_exceptionResponse(self) -> None:
        """
        The exception response keeps the transaction and unit ids and sets
        the function code's high bit; the code is 0x04 by default.
        """
        self.assertEqual(
            exceptionResponse(READ_REQUEST), bytes.fromhex("0001 0000 0003 01 83 04")
        )
        self.assertEqual(
            exceptionResponse(READ_REQUEST, 0x02),
            bytes.fromhex("0001 0000 0003 01 83 02"),
        )
        self.assertEqual(
            ModbusFramer().feed(exceptionResponse(READ_REQUEST)),
            [exceptionResponse(READ_REQUEST)],
        )

    def test_exceptionResponseBadArguments(self) -> None:
        """
        A request without a function code, or a code out of range, is
        refused.
        """
        self.assertRaises(ValueError, exceptionResponse, READ_REQUEST[:7])
        self.assertRaises(ValueError, exceptionResponse, READ_REQUEST, 0)
        self.assertRaises(ValueError, exceptionResponse, READ_REQUEST, 256)


class LineAdapterTests(SynchronousTestCase):
    """
    L{LineAdapter} is L{tcpcomm.framing.LineFramer} as a L{Framer}.
    """

    def test_lines(self) -> None:
        """
        Lines end at LF, with one CR before it dropped; the end of input
        ends the last.
        """
        framer = LineAdapter()
        self.assertEqual(framer.feed(b"a\r\nb\nc"), [b"a", b"b"])
        self.assertEqual(framer.buffered, 1)
        self.assertEqual(framer.end(), [b"c"])
        self.assertRaises(FramingError, framer.feed, b"x")

    def test_tooLong(self) -> None:
        """
        A line over max is an error that carries the lines before it.
        """
        error = assertFailsWith(self, LineAdapter(3), b"abc\nabcd", "longer than max 3")
        self.assertEqual(error.frames, [b"abc"])

    def test_encode(self) -> None:
        """
        A reply gets the delimiter; one holding an LF cannot be framed.
        """
        self.assertEqual(LineAdapter(delimiter=b"\r\n").encode(b"ok"), b"ok\r\n")
        self.assertRaises(FramingError, LineAdapter().encode, b"a\nb")
        self.assertRaises(FramingError, LineAdapter(1).encode, b"ab")

    def test_badArguments(self) -> None:
        """
        A max under 1 or a delimiter other than LF or CRLF is refused.
        """
        self.assertRaises(ValueError, LineAdapter, 0)
        self.assertRaises(ValueError, LineAdapter, 5, b"\r")


class ParseFramingTests(SynchronousTestCase):
    """
    L{parseFraming} turns a specification into a framer factory, or one
    line naming what is wrong.
    """

    def test_framings(self) -> None:
        """
        Each framing's specification makes its framer, with its parameters.
        """
        self.assertIsInstance(parseFraming("line")(), LineAdapter)
        self.assertEqual(parseFraming("line:max=7")().framer.maxLineLength, 7)  # type: ignore[attr-defined]
        delimiter = parseFraming("delimiter:0D0a:max=9")()
        assert isinstance(delimiter, DelimiterFramer)
        self.assertEqual((delimiter.delimiter, delimiter.maxLength), (b"\r\n", 9))
        self.assertIsInstance(parseFraming("stx-etx")(), StxEtxFramer)
        length = parseFraming(
            "length:3:offset=2:adjust=-1:order=little:strip=1:max=99"
        )()
        assert isinstance(length, LengthFieldFramer)
        self.assertEqual(
            (
                length.size,
                length.offset,
                length.adjust,
                length.order,
                length.strip,
                length.maxLength,
            ),
            (3, 2, -1, "little", 1, 99),
        )
        self.assertEqual(parseFraming("length:2")().encode(b"a"), b"\x00\x01a")
        self.assertEqual(parseFraming("netstring:max=5")().encode(b"a"), b"1:a,")
        fixed = parseFraming("fixed:4")()
        assert isinstance(fixed, FixedFramer)
        self.assertEqual(fixed.length, 4)
        self.assertIsInstance(parseFraming("modbus")(), ModbusFramer)

    def test_newFramerEachCall(self) -> None:
        """
        The factory makes a new framer each call, one per connection.
        """
        factory = parseFraming("fixed:2")
        first = factory()
        first.feed(b"a")
        self.assertEqual(factory().buffered, 0)

    def test_badSpecifications(self) -> None:
        """
        A bad specification is one C{ValueError} line that quotes it and
        names what is wrong.
        """
        cases = {
            "lines": "unknown framing 'lines'",
            "": "unknown framing ''",
            "delimiter": "needs its HEX",
            "delimiter:0": "bytes in hex",
            "delimiter:zz": "bytes in hex",
            "delimiter:max=3": "needs its HEX",
            "length:5": "size must be 1, 2, 3, 4 or 8, not 5",
            "length:x": "SIZE must be a whole number",
            "length:4:strip=5": "strip must be from 0 to offset + size (4), not 5",
            "length:4:foo=1": "unknown parameter 'foo' for length",
            "length:4:max=-1": "max must be at least the header's 4 bytes",
            "length:4:order=middle": "order must be big or little",
            "length:2:offset=-1": "offset must not be negative",
            "length:2:max=1e3": "max must be a whole number",
            "stx-etx:max=-1": "max must not be negative",
            "stx-etx:max=1:max=2": "parameter 'max' given twice",
            "netstring:max=+3": "max must be a whole number, not '+3'",
            "netstring:5": "'5' is no KEY=VALUE parameter",
            "fixed:0": "at least 1, not 0",
            "fixed": "needs its N",
            "modbus:max=3": "unknown parameter 'max' for modbus (known: none)",
            "line:max=0": "max must be at least 1",
            "line:max=1073741825": "max must be from -1073741824 to 1073741824",
            "fixed:99999999999": "N must be from -1073741824 to 1073741824",
            "length:8:max=99999999999999": "max must be from",
            "length:4:adjust=-99999999999": "adjust must be from",
        }
        for spec, expected in cases.items():
            error = self.assertRaises(ValueError, parseFraming, spec)
            message = str(error)
            self.assertTrue(message.startswith(f"framing {spec!r}: "), message)
            self.assertIn(expected, message)
            self.assertNotIn("\n", message)

    def test_hugeNumbers(self) -> None:
        """
        A size of thousands of digits is refused in one short line, not
        quoted whole nor in C{int()}'s words; the largest allowed, 1 GiB, is
        taken.
        """
        spec = "netstring:max=" + "9" * 5000
        message = str(self.assertRaises(ValueError, parseFraming, spec))
        self.assertLess(len(message), 200)
        self.assertIn("max must be from -1073741824 to 1073741824 (1 GiB)", message)
        self.assertNotIn("int_max_str_digits", message)
        parseFraming("fixed:1073741824")
        parseFraming("line:max=1073741824")


class ExportsTests(SynchronousTestCase):
    """
    C{tcpcomm.framers.__all__} is the public API.
    """

    def test_allNamesExist(self) -> None:
        """
        Every name in C{__all__} is an attribute of the package, and every
        public class or function defined there is in it.
        """
        for name in tcpcomm.framers.__all__:
            self.assertTrue(hasattr(tcpcomm.framers, name), name)
        public = {
            name
            for name, value in vars(tcpcomm.framers).items()
            if not name.startswith("_") and callable(value)
        }
        self.assertEqual(public - set(tcpcomm.framers.__all__), set())


class EncodeErrorTests(SynchronousTestCase):
    """
    The reasons L{Framer.encode} gives name what it was given as a payload
    or a frame: clients send with C{encode} too, so it is not always a reply.
    """

    def test_reasons(self) -> None:
        """
        Each framing's refusal of a payload says what is wrong with it,
        without calling it a reply.
        """
        for framer, payload, reason in (
            (LineAdapter(), b"a\nb", "payload holds an LF"),
            (DelimiterFramer(b"\x00"), b"a\x00", "payload holds the delimiter 0x00"),
            (StxEtxFramer(), b"a\x03", "payload holds ETX (0x03)"),
            (
                LengthFieldFramer(1),
                bytes(300),
                "payload of 300 bytes does not fit a 1-byte length field with adjust 0",
            ),
            (
                ModbusFramer(),
                b"hello",
                "frame of 5 bytes is shorter than its 6-byte header",
            ),
            (
                LengthFieldFramer(2, strip=0),
                b"\x00\x05ab",
                "frame of 4 bytes says it is 7 bytes long",
            ),
        ):
            error = self.assertRaises(FramingError, framer.encode, payload)
            self.assertEqual(error.reason, reason)
