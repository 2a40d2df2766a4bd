"""
Tests for chat mode: the pure room (L{tcpcomm.chatroom}), the protocol on
in-memory transports, and three clients chatting over real sockets,
including a slow one that is dropped while the others keep flowing.
"""

from __future__ import annotations

import re
import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.endpoints import connectProtocol
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm.chat import ChatFactory, ChatProtocol
from tcpcomm.chatroom import NICK_BURST, NICK_INTERVAL, ChatRoom, sanitize
from tcpcomm.lineclient import LineClient
from tcpcomm.testing import startServer
from tests.test_echo import StubbornClient, serverBuffered
from tests.test_limits import connectFrom
from tests.test_line import HalfCloseableStringTransport, recordWrites, waitUntil


class Listener:
    """
    A room member that remembers what it was shown.
    """

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def deliver(self, line: bytes) -> None:
        self.lines.append(line)


class SanitizeTests(SynchronousTestCase):
    """
    L{sanitize} keeps other users' terminals safe.
    """

    def test_plainTextKept(self) -> None:
        """
        Printable ASCII, tabs and UTF-8 text pass unchanged.
        """
        for text in (b"hello, world", b"a\tb", "h\xe9llo \u2603".encode()):
            self.assertEqual(sanitize(text), text)

    def test_controlBytesEscaped(self) -> None:
        """
        Escape sequences, NUL, lone CR, bell and DEL are shown escaped.
        """
        self.assertEqual(
            sanitize(b"\x1b[2Jclear\x00\r\x07\x7f"),
            b"\\x1b[2Jclear\\x00\\x0d\\x07\\x7f",
        )

    def test_notUtf8Escaped(self) -> None:
        """
        Bytes that are not UTF-8 are shown escaped, so a raw 8-bit CSI
        (0x9b) cannot reach a terminal.
        """
        self.assertEqual(sanitize(b"a\x9b2Jb\xff"), b"a\\x9b2Jb\\xff")

    def test_c1ControlCharactersEscaped(self) -> None:
        """
        C1 control characters written as UTF-8 are shown escaped too.
        """
        self.assertEqual(sanitize("x\x9by".encode()), b"x\\x9by")


INVISIBLE = (
    "\x85\xad\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u2028\u2029"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064"
    "\u2066\u2067\u2068\u2069\u206a\u206f\ufeff\ufff9\ufffb"
    "\U000e0001\U000e0020\U000e0041\U000e007f"
)
"""
Characters that must never reach another user's terminal raw.
"""

FORBIDDEN = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{INVISIBLE}]")
"""
What no line shown to others may hold: control characters but tab, and
L{INVISIBLE}.
"""


def pieceOfLine(data: bytes) -> bytes:
    return data.replace(b"\n", b"")


lineBytes = st.lists(
    st.one_of(
        st.binary(max_size=8),
        st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from(INVISIBLE).map(str.encode),
    ),
    max_size=12,
).map(lambda pieces: pieceOfLine(b"".join(pieces)))
"""
Lines of any bytes, often valid UTF-8 and rich in the invisible characters.
"""


class InvisibleCharactersTests(SynchronousTestCase):
    """
    L{sanitize} shows characters that hide or reorder text escaped, and
    leaves harmless non-ASCII text as it is.
    """

    def test_bidiAndZeroWidthEscaped(self) -> None:
        """
        Bidi controls, zero-width characters and the line separators are
        shown as C{\\uNNNN}, C1 controls and the soft hyphen as
        C{\\xNN}, tag characters as C{\\UNNNNNNNN}.
        """
        self.assertEqual(
            sanitize("pay\u202egnp.exe \u2066x\u2069 a\u200bb".encode()),
            b"pay\\u202egnp.exe \\u2066x\\u2069 a\\u200bb",
        )
        self.assertEqual(
            sanitize("l1\u2028l2\u2029\x85\xad\ufeff\U000e0041".encode()),
            b"l1\\u2028l2\\u2029\\x85\\xad\\ufeff\\U000e0041",
        )
        for char in INVISIBLE:
            shown = sanitize(f"a{char}b".encode()).decode()
            self.assertNotIn(char, shown)
            self.assertEqual(shown.encode("ascii"), shown.encode())

    def test_harmlessNonAsciiUnchanged(self) -> None:
        """
        Accented letters, CJK, emoji and right-to-left text without
        controls pass unchanged.
        """
        for text in (
            "caf\xe9",
            "\u4e2d\u6587",
            "\U0001f600 ok",
            "\u05e9\u05dc\u05d5\u05dd",
        ):
            self.assertEqual(sanitize(text.encode()), text.encode())

    def test_invalidUtf8KeepsByteEscapes(self) -> None:
        """
        In a line that is not UTF-8, every high byte is shown as C{\\xNN},
        a bidi override among them.
        """
        self.assertEqual(sanitize(b"\xff" + "\u202e".encode()), b"\\xff\\xe2\\x80\\xae")

    @settings(max_examples=500, deadline=None)
    @given(lines=st.lists(lineBytes, min_size=1, max_size=4))
    def test_othersNeverSeeControlsOrInvisibles(self, lines: list[bytes]) -> None:
        """
        Whatever a member says, what the others get is UTF-8 with no
        control byte but tab and none of the invisible characters raw.
        """
        room = ChatRoom()
        speaker, listener = Listener(), Listener()
        room.join(speaker, "s")
        room.join(listener, "l")
        room.sayLines(speaker, [line for line in lines if line] or [b"x"])
        self.assertEqual(len(listener.lines), 1)
        for block in listener.lines:
            for shown in block.split(b"\n"):
                self.assertIsNone(FORBIDDEN.search(shown.decode("utf-8")), shown)

    def test_joinNameSanitized(self) -> None:
        """
        A name a member joins under (an address, or a certificate's name)
        cannot carry controls or invisible characters to the others.
        """
        room = ChatRoom()
        listener = Listener()
        room.join(listener, "l")
        name = room.join(Listener(), "evil\u202egnp\x1b")
        self.assertEqual(name, "evil\\u202egnp\\x1b")
        self.assertEqual(listener.lines, [b"* evil\\u202egnp\\x1b joined"])

    def test_nicksCannotCarryInvisibles(self) -> None:
        """
        C{/nick} refuses any name with an invisible or non-ASCII character.
        """
        room = ChatRoom()
        member = Listener()
        room.join(member, "m")
        for char in INVISIBLE:
            problem = room.rename(member, f"a{char}b".encode())
            self.assertIn("invalid nick", problem or "")
        self.assertEqual(room.members, ["m"])


class NickLimitTests(SynchronousTestCase):
    """
    Renames are limited per member, and a member's renames are announced
    in one notice.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.room = ChatRoom(self.clock.seconds)
        self.alice, self.bob = Listener(), Listener()
        self.room.join(self.alice, "a")
        self.room.join(self.bob, "b")
        self.bob.lines.clear()

    def test_burstThenOnePerInterval(self) -> None:
        """
        A member may rename L{NICK_BURST} times at once, then once per
        L{NICK_INTERVAL} seconds; over that it is told how long to wait,
        keeps its name, and nobody is told.
        """
        for n in range(NICK_BURST):
            self.assertIsNone(self.room.rename(self.alice, b"a%d" % n))
        self.assertEqual(
            self.room.rename(self.alice, b"late"),
            f"too many nick changes; wait {NICK_INTERVAL:g} s",
        )
        self.clock.advance(NICK_INTERVAL / 2)
        self.assertEqual(
            self.room.rename(self.alice, b"late"),
            f"too many nick changes; wait {NICK_INTERVAL / 2:g} s",
        )
        self.assertEqual(self.room.nameOf(self.alice), f"a{NICK_BURST - 1}")
        self.assertEqual(len(self.bob.lines), NICK_BURST)
        self.clock.advance(NICK_INTERVAL / 2)
        self.assertIsNone(self.room.rename(self.alice, b"late"))
        self.assertEqual(self.bob.lines[-1], b"* a2 is now late")
        self.assertIsNotNone(self.room.rename(self.alice, b"later"))

    def test_limitIsPerMember(self) -> None:
        """
        One member's renames do not spend another's.
        """
        for n in range(NICK_BURST + 1):
            self.room.rename(self.alice, b"a%d" % n)
        self.assertIsNone(self.room.rename(self.bob, b"bee"))

    def test_refusedRenamesCostNothing(self) -> None:
        """
        Invalid and taken names, and the name a member has already, spend
        no rename.
        """
        for _ in range(10):
            self.room.rename(self.alice, b"no way")
            self.room.rename(self.alice, b"B")
            self.room.rename(self.alice, b"a")
        for n in range(NICK_BURST):
            self.assertIsNone(self.room.rename(self.alice, b"a%d" % n))

    def test_renamesAnnouncedTogether(self) -> None:
        """
        Renames not announced at once reach the others as one notice from
        the first name to the last; renaming back announces nothing.
        """
        self.room.rename(self.alice, b"x", announce=False)
        self.room.rename(self.alice, b"y", announce=False)
        self.assertEqual(self.bob.lines, [])
        self.room.announce(self.alice)
        self.room.announce(self.alice)
        self.assertEqual(self.bob.lines, [b"* a is now y"])
        self.clock.advance(NICK_INTERVAL * 2)
        self.room.rename(self.alice, b"z", announce=False)
        self.room.rename(self.alice, b"y", announce=False)
        self.room.announce(self.alice)
        self.assertEqual(self.bob.lines, [b"* a is now y"])

    def test_pendingNoticeBeforeWhatFollows(self) -> None:
        """
        A rename not yet announced is announced before the member's next
        line, and before it leaves.
        """
        self.room.rename(self.alice, b"x", announce=False)
        self.room.say(self.alice, b"hi")
        self.room.rename(self.alice, b"y", announce=False)
        self.room.leave(self.alice)
        self.assertEqual(
            self.bob.lines, [b"* a is now x", b"<x> hi", b"* x is now y", b"* y left"]
        )


class ChatRoomTests(SynchronousTestCase):
    """
    L{ChatRoom}, with members that only listen.
    """

    def test_sayReachesOthersOnly(self) -> None:
        """
        A line reaches every other member as C{<NAME> line}, not the sender,
        and the observers get it as said.
        """
        room = ChatRoom()
        alice, bob, carol = Listener(), Listener(), Listener()
        for member, name in ((alice, "a"), (bob, "b"), (carol, "c")):
            room.join(member, name)
        heard: list[tuple[str, bytes]] = []
        room.addObserver(lambda name, line: heard.append((name, line)))
        room.say(alice, b"hi \x1b")
        self.assertEqual(bob.lines[-1], b"<a> hi \\x1b")
        self.assertEqual(carol.lines[-1], b"<a> hi \\x1b")
        self.assertNotIn(b"<a> hi \\x1b", alice.lines)
        self.assertEqual(heard, [("a", b"hi \x1b")])

    def test_joinAndLeaveNotices(self) -> None:
        """
        Others hear who joins and who leaves; the room lists members in
        joining order.
        """
        room = ChatRoom()
        alice, bob = Listener(), Listener()
        room.join(alice, "a")
        room.join(bob, "b")
        self.assertEqual(room.members, ["a", "b"])
        room.leave(bob)
        room.leave(bob)
        self.assertEqual(alice.lines, [b"* b joined", b"* b left"])
        self.assertEqual(room.members, ["a"])

    def test_nickRules(self) -> None:
        """
        A nick must be 1-32 letters, digits, _ - or .; it must not be taken
        by someone else, whatever the case; the others hear the change.
        """
        room = ChatRoom()
        alice, bob = Listener(), Listener()
        room.join(alice, "10.0.0.1:5")
        room.join(bob, "10.0.0.2:6")
        self.assertIsNone(room.rename(alice, b"Alice"))
        self.assertEqual(bob.lines[-1], b"* 10.0.0.1:5 is now Alice")
        self.assertEqual(room.rename(bob, b"alice"), "nick taken: alice")
        for bad in (b"", b"x" * 33, b"a b", b"a:b", b"\xff", b"[::1]:5"):
            self.assertIn("invalid nick", room.rename(bob, bad) or "", bad)
        self.assertIsNone(room.rename(alice, b"ALICE"))
        self.assertEqual(room.members, ["ALICE", "10.0.0.2:6"])

    def test_duplicateJoinNameMadeUnique(self) -> None:
        """
        Joining under a name already there gets a suffix.
        """
        room = ChatRoom()
        self.assertEqual(room.join(Listener(), "x"), "x")
        self.assertEqual(room.join(Listener(), "X"), "X~2")

    def test_who(self) -> None:
        """
        C{who} lists every member.
        """
        room = ChatRoom()
        room.join(Listener(), "a")
        room.join(Listener(), "b")
        self.assertEqual(room.who(), b"* here: a, b")


def chatter(factory: ChatFactory, host: str) -> HalfCloseableStringTransport:
    """
    Connect a chat client from C{host}; forget its welcome line.
    """
    transport = connectFrom(factory, host)
    transport.clear()
    return transport


class ChatProtocolTests(SynchronousTestCase):
    """
    L{ChatProtocol} on in-memory transports.
    """

    def test_welcomeAndCommands(self) -> None:
        """
        A client is welcomed with its name; C{/nick}, C{/who} and unknown
        commands are answered to it alone; C{//} sends a line starting with
        C{/}.
        """
        factory = ChatFactory()
        alice = connectFrom(factory, "10.0.0.1")
        self.assertEqual(
            alice.value(),
            b"* welcome, 10.0.0.1:4321: /nick NAME to change it, /who to list"
            b" who is here\n",
        )
        bob = chatter(factory, "10.0.0.2")
        alice.clear()
        alice.protocol.dataReceived(b"/nick alice\n/who\n/dance\n//slash\n")
        self.assertEqual(
            alice.value(),
            b"* you are now alice\n* here: alice, 10.0.0.2:4321\n"
            b"ERROR unknown command: /dance\n",
        )
        self.assertEqual(bob.value(), b"* 10.0.0.1:4321 is now alice\n<alice> /slash\n")

    def test_nickErrors(self) -> None:
        """
        A taken or invalid nick gets a clear ERROR line.
        """
        factory = ChatFactory()
        alice = chatter(factory, "10.0.0.1")
        bob = chatter(factory, "10.0.0.2")
        alice.protocol.dataReceived(b"/nick alice\n")
        bob.protocol.dataReceived(b"/nick ALICE\n/nick no way\n")
        self.assertEqual(
            bob.value().splitlines()[-2:],
            [
                b"ERROR nick taken: ALICE",
                b"ERROR invalid nick: 1 to 32 letters, digits, _ - or .",
            ],
        )

    def test_leaveNotice(self) -> None:
        """
        When a client goes, the others hear it and the room forgets it.
        """
        factory = ChatFactory()
        alice = chatter(factory, "10.0.0.1")
        bob = chatter(factory, "10.0.0.2")
        bob.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(
            alice.value(), b"* 10.0.0.2:4321 joined\n* 10.0.0.2:4321 left\n"
        )
        self.assertEqual(factory.room.members, ["10.0.0.1:4321"])

    def test_slowClientDroppedOthersUnaffected(self) -> None:
        """
        A client whose transport is full gets the room's lines queued, up to
        C{maxPendingBytes}; past that it is told C{ERROR too slow} and
        closed, while the others get every line.
        """
        factory = ChatFactory(maxPendingBytes=100)
        talker = chatter(factory, "10.0.0.1")
        slow = chatter(factory, "10.0.0.2")
        fast = chatter(factory, "10.0.0.3")
        slow.protocol.pauseProducing()
        slow.clear()
        fast.clear()
        for i in range(10):
            talker.protocol.dataReceived(b"message %d\n" % i)
        self.assertEqual(slow.value(), b"ERROR too slow\n")
        self.assertTrue(slow.writeDisconnected)
        told = [b"<10.0.0.1:4321> message %d\n" % i for i in range(10)]
        self.assertEqual(
            fast.value(), b"".join([*told[:3], b"* 10.0.0.2:4321 left\n", *told[3:]])
        )
        self.assertEqual(factory.stats.tooSlow, 1)

    def test_queuedLinesFollowWhenDrained(self) -> None:
        """
        Lines queued while a client's transport was full are sent, in
        order, once it drains.
        """
        factory = ChatFactory(maxPendingBytes=1000)
        talker = chatter(factory, "10.0.0.1")
        listener = chatter(factory, "10.0.0.2")
        listener.protocol.pauseProducing()
        for i in range(3):
            talker.protocol.dataReceived(b"m%d\n" % i)
        self.assertEqual(listener.value(), b"")
        listener.protocol.resumeProducing()
        self.assertEqual(
            listener.value(), b"".join(b"<10.0.0.1:4321> m%d\n" % i for i in range(3))
        )

    def test_renameFloodInOneRead(self) -> None:
        """
        A read of many C{/nick} lines gets the sender one answer per line,
        C{ERROR too many nick changes; wait N s} past the limit, and the
        others one notice, from the old name to the last one given.
        """
        factory = ChatFactory()
        alice = chatter(factory, "10.0.0.1")
        bob = chatter(factory, "10.0.0.2")
        alice.clear()
        alice.protocol.dataReceived(b"".join(b"/nick n%d\n" % n for n in range(100)))
        answers = alice.value().splitlines()
        self.assertEqual(
            answers[:NICK_BURST], [b"* you are now n%d" % n for n in range(NICK_BURST)]
        )
        self.assertEqual(
            set(answers[NICK_BURST:]),
            {b"ERROR too many nick changes; wait %d s" % NICK_INTERVAL},
        )
        self.assertEqual(len(answers), 100)
        self.assertEqual(
            bob.value(), b"* 10.0.0.1:4321 is now n%d\n" % (NICK_BURST - 1)
        )

    def test_renameLimitUsesFactoryClock(self) -> None:
        """
        The room of a chat factory earns renames back on the factory's
        clock.
        """
        factory = ChatFactory()
        alice = chatter(factory, "10.0.0.1")
        alice.protocol.dataReceived(b"".join(b"/nick n%d\n" % n for n in range(9)))
        alice.clear()
        assert isinstance(factory.clock, Clock)
        factory.clock.advance(NICK_INTERVAL)
        alice.protocol.dataReceived(b"/nick again\n/nick more\n")
        self.assertEqual(
            alice.value(),
            b"* you are now again\nERROR too many nick changes; wait %d s\n"
            % NICK_INTERVAL,
        )

    def test_refusedClientNeverJoins(self) -> None:
        """
        A client over the connection limit is not in the room.
        """
        factory = ChatFactory(maxConnections=1)
        chatter(factory, "10.0.0.1")
        refused = connectFrom(factory, "10.0.0.2")
        self.assertEqual(refused.value(), b"ERROR too many connections\n")
        self.assertEqual(factory.room.members, ["10.0.0.1:4321"])
        self.assertIsInstance(refused.protocol, ChatProtocol)


class Collector(LineClient):
    """
    A chat client over a real socket that keeps every line it gets.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)


class ChatOverSocketsTests(TestCase):
    """
    Chat over real sockets on 127.0.0.1.
    """

    async def test_threeClientsBothWays(self) -> None:
        """
        Three clients with nicks exchange lines in all directions; each
        gets every line of the others, in order, and none of its own.
        """
        factory = ChatFactory()
        server = startServer(self, factory)
        clients = [Collector(), Collector(), Collector()]
        for index, client in enumerate(clients):
            await connectProtocol(server.endpoint(), client)
            await waitUntil(lambda n=index + 1: len(factory.room.members) == n)
        names = [b"ann", b"ben", b"cat"]
        for client, name in zip(clients, names, strict=True):
            client.sendLine(b"/nick " + name)
        await waitUntil(lambda: factory.room.members == ["ann", "ben", "cat"])
        for round in range(20):
            for client, name in zip(clients, names, strict=True):
                client.sendLine(b"%s says %d" % (name, round))
        expected = {
            name: [
                b"<%s> %s says %d" % (other, other, round)
                for round in range(20)
                for other in names
                if other != name
            ]
            for name in names
        }

        def said(client: Collector) -> list[bytes]:
            return [line for line in client.lines if line.startswith(b"<")]

        await waitUntil(lambda: all(len(said(c)) == 40 for c in clients))
        for client, name in zip(clients, names, strict=True):
            got = said(client)
            for other in names:
                if other != name:
                    prefix = b"<%s>" % other
                    self.assertEqual(
                        [line for line in got if line.startswith(prefix)],
                        [line for line in expected[name] if line.startswith(prefix)],
                    )

    async def test_slowConsumerDroppedOthersFlow(self) -> None:
        """
        A client that never reads is dropped with C{ERROR too slow} once
        more than C{maxPendingBytes} wait for it, the server holding little
        more than that for it meanwhile; the other clients get every line.
        """
        limit = 64 * 1024
        factory = ChatFactory(maxPendingBytes=limit)
        server = startServer(self, factory)
        talker, listener = Collector(), Collector()
        await connectProtocol(server.endpoint(), talker)
        await connectProtocol(server.endpoint(), listener)
        slow = StubbornClient(b"")
        await connectProtocol(server.endpoint(), slow)
        await waitUntil(lambda: len(factory.room.members) == 3)
        slowPort = slow.transport.getHost().port
        [slowProtocol] = [
            p for p in factory.connections if p.peer.endswith(f":{slowPort}")
        ]
        # Small kernel buffers on both ends, as on a slow link: otherwise
        # loopback's buffers swallow megabytes before the server notices.
        server = slowProtocol.transport.getHandle()  # type: ignore[attr-defined]
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        client = slow.transport.getHandle()  # type: ignore[attr-defined]
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        count = 4000
        peak = 0
        for batch in range(0, count, 200):
            for i in range(batch, batch + 200):
                talker.sendLine(b"x" * 100 + b" %d" % i)
            await deferLater(reactor, 0.005)
            if not slowProtocol.disconnected:
                peak = max(
                    peak, serverBuffered(slowProtocol) + slowProtocol.queuedBytes
                )

        def heard() -> int:
            return len([x for x in listener.lines if x.startswith(b"<")])

        await waitUntil(lambda: heard() == count)
        await waitUntil(lambda: factory.stats.tooSlow == 1)
        self.assertLess(peak, 2 * limit + 64 * 1024)
        self.assertEqual(len(factory.room.members), 2)
        slow.startReading()
        received = await slow.done
        self.assertTrue(received.endswith(b"ERROR too slow\n"), received[-60:])


class RenameFloodOverSocketsTests(TestCase):
    """
    A client flooding C{/nick} over a real socket.
    """

    async def test_othersGetFewNotices(self) -> None:
        """
        2,000 C{/nick} lines from one client reach each of the others as
        at most L{NICK_BURST} notices; the sender gets an answer to every
        line, C{ERROR too many nick changes; wait N s} past the limit.
        """
        factory = ChatFactory()
        server = startServer(self, factory)
        flooder = Collector()
        listeners = [Collector() for _ in range(5)]
        for client in [flooder, *listeners]:
            await connectProtocol(server.endpoint(), client)
        await waitUntil(lambda: len(factory.room.members) == 6)
        count = 2000
        flooder.transport.write(b"".join(b"/nick n%d\n" % n for n in range(count)))
        flooder.sendLine(b"done")
        await waitUntil(lambda: len(flooder.lines) >= count + 1)
        await waitUntil(
            lambda: all(any(b"> done" in x for x in c.lines) for c in listeners)
        )
        errors = [x for x in flooder.lines if x.startswith(b"ERROR too many nick")]
        self.assertEqual(len(errors), count - NICK_BURST)
        for listener in listeners:
            notices = [x for x in listener.lines if b" is now " in x]
            self.assertGreaterEqual(len(notices), 1)
            self.assertLessEqual(len(notices), NICK_BURST)
            self.assertTrue(notices[-1].endswith(b" is now n%d" % (NICK_BURST - 1)))


class ChatBlocksTests(SynchronousTestCase):
    """
    A read's lines go to each other member as one block: the work is done
    once per read, not once per line per member.
    """

    def test_readIsOneWritePerMember(self) -> None:
        """
        The lines of one read reach every other member in one write each,
        prefixed and in order; the sender gets nothing.
        """
        factory = ChatFactory()
        alice = chatter(factory, "10.0.0.1")
        others = [chatter(factory, f"10.0.0.{n}") for n in (2, 3)]
        alice.protocol.dataReceived(b"/nick alice\n")
        for other in others:
            other.clear()
        writes = [recordWrites(other) for other in others]
        alice.clear()
        alice.protocol.dataReceived(b"one\ntwo\nthree\n")
        for recorded in writes:
            self.assertEqual(recorded, [b"<alice> one\n<alice> two\n<alice> three\n"])
        self.assertEqual(alice.value(), b"")

    def test_commandsKeepTheirPlace(self) -> None:
        """
        A command in the middle of a read splits it: what was said before a
        C{/nick} carries the old name, what comes after the new one, and
        the notice sits between them.
        """
        factory = ChatFactory()
        alice = chatter(factory, "10.0.0.1")
        bob = chatter(factory, "10.0.0.2")
        alice.clear()
        alice.protocol.dataReceived(b"before\n/nick alice\nafter\n//slash\n\n")
        self.assertEqual(
            bob.value(),
            b"<10.0.0.1:4321> before\n* 10.0.0.1:4321 is now alice\n"
            b"<alice> after\n<alice> /slash\n",
        )
        self.assertEqual(alice.value(), b"* you are now alice\n")

    def test_onlyUnsafeLinesEscaped(self) -> None:
        """
        In a block, a line with control bytes or bytes that are not UTF-8 is
        escaped, and the others are sent as they are.
        """
        factory = ChatFactory()
        alice = chatter(factory, "10.0.0.1")
        bob = chatter(factory, "10.0.0.2")
        alice.protocol.dataReceived(b"plain\n\x1b[2Jwipe\n\xff\nt\xc3\xa9\n")
        self.assertEqual(
            bob.value().splitlines(),
            [
                b"<10.0.0.1:4321> plain",
                b"<10.0.0.1:4321> \\x1b[2Jwipe",
                b"<10.0.0.1:4321> \\xff",
                b"<10.0.0.1:4321> t\xc3\xa9",
            ],
        )

    def test_crlfBlock(self) -> None:
        """
        With the CRLF delimiter, every line of a block ends with CRLF.
        """
        factory = ChatFactory(delimiter=b"\r\n")
        alice = chatter(factory, "10.0.0.1")
        bob = chatter(factory, "10.0.0.2")
        alice.protocol.dataReceived(b"a\r\nb\r\n")
        self.assertEqual(bob.value(), b"<10.0.0.1:4321> a\r\n<10.0.0.1:4321> b\r\n")

    def test_observersGetRawLines(self) -> None:
        """
        Observers get each line of a block as said, not sanitized.
        """
        factory = ChatFactory()
        seen: list[tuple[str, bytes]] = []
        factory.room.addObserver(lambda name, line: seen.append((name, line)))
        alice = chatter(factory, "10.0.0.1")
        chatter(factory, "10.0.0.2")
        alice.protocol.dataReceived(b"x\n\x1b\n")
        self.assertEqual(seen, [("10.0.0.1:4321", b"x"), ("10.0.0.1:4321", b"\x1b")])

    def test_thousandMembers(self) -> None:
        """
        In a room of 1,000 members, every line one member sends, over many
        reads, reaches each of the 999 others, in order.
        """
        factory = ChatFactory()
        members = [
            chatter(factory, f"10.0.{n // 250}.{n % 250 + 1}") for n in range(1000)
        ]
        for member in members:
            member.clear()
        sender, readers = members[0], members[1:]
        sent = [b"line %d" % n for n in range(200)]
        for start in range(0, len(sent), 7):
            sender.protocol.dataReceived(
                b"".join(s + b"\n" for s in sent[start : start + 7])
            )
        assert isinstance(sender.protocol, ChatProtocol)
        name = factory.room.nameOf(sender.protocol)
        expected = b"".join(b"<%s> %s\n" % (name.encode(), s) for s in sent)
        for reader in readers:
            self.assertEqual(reader.value(), expected)
