"""
Tests for L{tcpcomm.replyqueue}: ordering, bounds and the hold and close
decisions of one connection's replies, without I/O.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.replyqueue import ReplyQueue


class ReplyQueueTests(SynchronousTestCase):
    """
    L{ReplyQueue} keeps replies in request order and bounds what waits.
    """

    def test_repliesLeaveInRequestOrder(self) -> None:
        """
        Replies settled out of order are taken in request order, each as
        soon as every reply before it is known.
        """
        queue = ReplyQueue(maxPending=8, perTurn=8)
        first = queue.wait(b"1")
        second = queue.wait(b"2")
        queue.ready(b"three")
        self.assertTrue(queue.settle(second, b"two"))
        self.assertFalse(queue.headReady)
        self.assertEqual(queue.takeReady(), [])
        self.assertTrue(queue.settle(first, b"one"))
        self.assertEqual(queue.takeReady(), [b"one", b"two", b"three"])
        self.assertEqual(len(queue), 0)

    def test_noReplyTakesNoPlace(self) -> None:
        """
        A handler that answers C{None} lets the replies behind it go, and
        adds nothing itself.
        """
        queue = ReplyQueue(maxPending=8, perTurn=8)
        silent = queue.wait(b"1")
        queue.ready(b"after")
        queue.settle(silent, None)
        self.assertEqual(queue.takeReady(), [b"after"])

    def test_settleTwiceIgnored(self) -> None:
        """
        A slot settled already (timed out) ignores its handler's late answer,
        and the count of running handlers stays right.
        """
        queue = ReplyQueue(maxPending=8, perTurn=8)
        slot = queue.wait(b"1")
        self.assertEqual(queue.running, 1)
        self.assertTrue(queue.settle(slot, b"timed out"))
        self.assertFalse(queue.settle(slot, b"late"))
        self.assertEqual(queue.running, 0)
        self.assertEqual(queue.takeReady(), [b"timed out"])

    def test_fullAtMaxPending(self) -> None:
        """
        Reading must pause once C{maxPending} replies wait, or once frames
        wait for room; room counts what is left.
        """
        queue = ReplyQueue(maxPending=2, perTurn=16)
        queue.wait(b"1")
        self.assertEqual(queue.room(paced=False), 1)
        self.assertFalse(queue.full())
        queue.wait(b"2")
        self.assertEqual(queue.room(paced=False), 0)
        self.assertTrue(queue.full())
        other = ReplyQueue(maxPending=2, perTurn=16)
        other.defer([b"x"])
        self.assertTrue(other.full())

    def test_pacedRoomPerTurn(self) -> None:
        """
        Paced, no more than C{perTurn} handlers start before the loop turns;
        the frames left wait for the turn, not for replies.
        """
        queue = ReplyQueue(maxPending=100, perTurn=2)
        queue.wait(b"1")
        queue.wait(b"2")
        self.assertEqual(queue.room(paced=True), 0)
        self.assertEqual(queue.room(paced=False), 98)
        queue.defer([b"3"])
        self.assertTrue(queue.waitsForTurn(paced=True))
        self.assertFalse(queue.waitsForTurn(paced=False))
        queue.newTurn()
        self.assertEqual(queue.room(paced=True), 2)

    def test_backlogKeepsOrder(self) -> None:
        """
        Frames put back go before those deferred, and are taken once, in
        order.
        """
        queue = ReplyQueue(maxPending=2, perTurn=2)
        queue.defer([b"c", b"d"])
        queue.putBack([b"a", b"b"])
        self.assertEqual(queue.takeBacklog(), [b"a", b"b", b"c", b"d"])
        self.assertEqual(queue.takeBacklog(), [])

    def test_idleOnlyWhenNothingWaits(self) -> None:
        """
        A close may happen only once no reply and no frame waits.
        """
        queue = ReplyQueue(maxPending=2, perTurn=2)
        self.assertTrue(queue.idle())
        slot = queue.wait(b"1")
        self.assertFalse(queue.idle())
        queue.settle(slot, b"r")
        self.assertFalse(queue.idle())
        queue.takeReady()
        self.assertTrue(queue.idle())
        queue.defer([b"x"])
        self.assertFalse(queue.idle())

    def test_cutEndsTheQueueAtASlot(self) -> None:
        """
        Cutting at a slot keeps the replies before it, drops those after it
        and every kept frame, and hands back the running ones to cancel.
        """
        queue = ReplyQueue(maxPending=8, perTurn=8)
        before = queue.wait(b"1")
        failed = queue.wait(b"2")
        after = queue.wait(b"3")
        queue.ready(b"known")
        queue.defer([b"4"])
        self.assertEqual(queue.cut(failed), [after])
        self.assertTrue(after.done)
        self.assertEqual(queue.backlog, [])
        self.assertEqual(queue.running, 1)
        queue.settle(before, b"one")
        self.assertEqual(queue.takeReady(), [b"one"])
        self.assertTrue(queue.idle())

    def test_dropSettlesRunning(self) -> None:
        """
        Dropping the queue settles and returns the slots still running, so a
        late answer is ignored.
        """
        queue = ReplyQueue(maxPending=8, perTurn=8)
        running = queue.wait(b"1")
        queue.ready(b"x")
        queue.lastWords = b"ERROR bye"
        self.assertEqual(queue.drop(), [running])
        self.assertFalse(queue.settle(running, b"late"))
        self.assertTrue(queue.idle())
        self.assertIsNone(queue.lastWords)

    def test_startedResetsOnceEmpty(self) -> None:
        """
        Pacing starts afresh once every reply has gone.
        """
        queue = ReplyQueue(maxPending=8, perTurn=1)
        slot = queue.wait(b"1")
        self.assertEqual(queue.room(paced=True), 0)
        queue.settle(slot, b"r")
        queue.takeReady()
        self.assertEqual(queue.room(paced=True), 1)
