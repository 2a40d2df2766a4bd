"""
Tests for L{tcpcomm.replies}: how handlers' results become bytes on the
wire, for lines, binary framings and MODBUS, without I/O.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.framers import parseFraming
from tcpcomm.replies import (
    FAILED,
    HANDLER_TIMEOUT,
    INTERNAL_ERROR,
    TIMED_OUT,
    UNANSWERABLE,
    BadReply,
    CannotAnswer,
    ReplyFramer,
    toBytes,
)


def framerFor(spec: str) -> ReplyFramer:
    """
    The L{ReplyFramer} a factory serving C{spec} would make.
    """
    framer = parseFraming(spec)()
    return ReplyFramer(
        encode=framer.encode, encodeAll=framer.encodeAll, modbus=spec == "modbus"
    )


REQUEST = b"\x00\x07\x00\x00\x00\x06\x01\x03\x00\x00\x00\x02"


class ToBytesTests(SynchronousTestCase):
    """
    L{toBytes} takes every form of reply a handler may give.
    """

    def test_forms(self) -> None:
        """
        Bytes as they are, C{str} as UTF-8, bytearray and memoryview copied;
        anything else is a C{TypeError}.
        """
        self.assertEqual(toBytes(b"a"), b"a")
        self.assertEqual(toBytes("é"), b"\xc3\xa9")
        self.assertEqual(toBytes(bytearray(b"b")), b"b")
        self.assertEqual(toBytes(memoryview(b"c")), b"c")
        self.assertRaises(TypeError, toBytes, 42)


class LineRepliesTests(SynchronousTestCase):
    """
    Line replies: the delimiter, and C{ERROR} lines for failures.
    """

    def test_joinAddsDelimiters(self) -> None:
        """
        A read's replies are joined, each with the delimiter; one that is
        not bytes makes the join give up.
        """
        replies = ReplyFramer(b"\r\n")
        results: list[object] = [b"a", b"b"]
        self.assertEqual(replies.join(results), b"a\r\nb\r\n")
        self.assertEqual(results, [b"a", b"b"])
        self.assertIsNone(replies.join([b"a", None]))

    def test_failures(self) -> None:
        """
        A failure is C{ERROR internal error}, a timeout C{ERROR handler timed
        out}, a result of another type C{BadReply}; C{None} is no reply.
        """
        replies = ReplyFramer()
        self.assertEqual(replies.wire(FAILED, b"x"), INTERNAL_ERROR + b"\n")
        self.assertEqual(replies.wire(TIMED_OUT, b"x"), HANDLER_TIMEOUT + b"\n")
        self.assertIsNone(replies.wire(None, b"x"))
        self.assertEqual(replies.wire("ok", b"x"), b"ok\n")
        error = self.assertRaises(BadReply, replies.wire, 42, b"x")
        self.assertIn("42", error.reason)
        self.assertEqual(replies.errorLine(b"ERROR x"), b"ERROR x\n")

    def test_unanswerable(self) -> None:
        """
        L{UNANSWERABLE} cannot be answered in any framing.
        """
        self.assertRaises(CannotAnswer, ReplyFramer().wire, UNANSWERABLE, b"x")


class BinaryRepliesTests(SynchronousTestCase):
    """
    Binary framings: framed replies, and no answer for failures.
    """

    def test_framedAndJoined(self) -> None:
        """
        Replies are framed by the framer, and a read's joined in one block.
        """
        replies = framerFor("length:2")
        self.assertEqual(replies.wire(b"hi", b""), b"\x00\x02hi")
        self.assertEqual(replies.join([b"a", b"bc"]), b"\x00\x01a\x00\x02bc")
        self.assertIsNone(replies.join([b"a", 3]))

    def test_noAnswerForFailures(self) -> None:
        """
        A binary framing cannot tell a failure or an error line in band.
        """
        replies = framerFor("netstring")
        self.assertRaises(CannotAnswer, replies.wire, FAILED, b"x")
        self.assertRaises(CannotAnswer, replies.failure, b"x", True)
        self.assertIsNone(replies.errorLine(b"ERROR x"))

    def test_unframableIsBadReply(self) -> None:
        """
        A reply the framing cannot carry is a L{BadReply} saying why.
        """
        error = self.assertRaises(
            BadReply, framerFor("delimiter:00").wire, b"a\x00b", b""
        )
        self.assertIn("delimiter", error.reason)


class ModbusRepliesTests(SynchronousTestCase):
    """
    MODBUS: whole ADUs, checked against their request, and exception
    responses for failures.
    """

    def test_exceptionResponses(self) -> None:
        """
        A failure is exception 0x04, a timeout 0x0B, for the request's
        transaction.
        """
        replies = framerFor("modbus")
        self.assertEqual(
            replies.wire(FAILED, REQUEST), b"\x00\x07\x00\x00\x00\x03\x01\x83\x04"
        )
        self.assertEqual(
            replies.wire(TIMED_OUT, REQUEST), b"\x00\x07\x00\x00\x00\x03\x01\x83\x0b"
        )

    def test_transactionIdChecked(self) -> None:
        """
        A reply with another transaction id is a L{BadReply}; one by one is
        the only way MODBUS replies are framed.
        """
        replies = framerFor("modbus")
        other = b"\x00\x08" + REQUEST[2:]
        self.assertEqual(replies.wire(REQUEST, REQUEST), REQUEST)
        error = self.assertRaises(BadReply, replies.wire, other, REQUEST)
        self.assertIn("transaction id 0008", error.reason)
        self.assertIsNone(replies.join([REQUEST]))
