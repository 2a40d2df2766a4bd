# -*- test-case-name: tests.test_chat -*-
"""
A chat room: who is in it, what they are called, and what each line
becomes for the others.

Pure: no Twisted, no I/O.  Members are any objects with a C{deliver(line)}
method; L{tcpcomm.chat.ChatProtocol} is one.  Time, for the limit on name
changes, comes from a clock passed in.

Name changes are limited per member with a token bucket: L{NICK_BURST}
changes at once, then one per L{NICK_INTERVAL} seconds.  A member's renames
that nothing else from it separates are announced to the others as one
notice, C{* OLD is now NEWEST}, when C{announce} is asked for (chat mode
does so at the end of each read).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "MAX_NICK_LENGTH",
    "NICK_BURST",
    "NICK_INTERVAL",
    "ChatRoom",
    "Member",
    "Observer",
    "sanitize",
]

MAX_NICK_LENGTH = 32

NICK_BURST = 3
"""
How many name changes a member may make at once.
"""

NICK_INTERVAL = 10.0
"""
Seconds to earn one more name change, once the burst is spent.
"""

_NICK = re.compile(rb"[A-Za-z0-9_.\-]{1,%d}" % MAX_NICK_LENGTH)
_UNSAFE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_INVISIBLE = re.compile(
    "[\x80-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064"
    "\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0001\U000e0020-\U000e007f]"
)
"""
Characters shown escaped even in valid UTF-8: the C1 controls (NEL among
them), and format characters that hide or reorder text on a terminal: the
soft hyphen, bidi marks, embeddings, overrides and isolates (U+061C,
U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), zero-width characters
(U+180E, U+200B-U+200D, U+2060-U+2064, U+FEFF), the line and paragraph
separators (U+2028, U+2029), deprecated format characters (U+206A-U+206F),
interlinear annotations (U+FFF9-U+FFFB) and tag characters (U+E0001,
U+E0020-U+E007F, invisible ASCII look-alikes).
"""
_HIGH = re.compile(rb"[\x80-\xff]")
_NEEDS_CARE = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f-\xff]")
"""
A byte that L{sanitize} may have to change (LF aside, which never occurs
inside a line): text without any is safe as it is.
"""


def _hexEscape(match: re.Match[bytes]) -> bytes:
    return b"\\x%02x" % match.group()[0]


def _charEscape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def sanitize(text: bytes) -> bytes:
    """
    Make C{text} safe to show on another user's terminal, as C{ncat --chat}
    does: control bytes other than tab (ESC among them, which starts
    terminal escape sequences) are shown escaped as C{\\xNN}.  UTF-8 text
    keeps its characters, except the C1 controls U+0080 to U+009F (as
    C{\\xNN}) and the invisible or reordering format characters (bidi
    overrides, zero-width characters, U+2028 and others: see
    L{_INVISIBLE}), shown as C{\\uNNNN} or C{\\UNNNNNNNN}; bytes that are
    not UTF-8 are shown escaped as C{\\xNN}, each.
    """
    text = _UNSAFE.sub(_hexEscape, text)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return _HIGH.sub(_hexEscape, text)
    if _INVISIBLE.search(decoded):
        return _INVISIBLE.sub(_charEscape, decoded).encode("utf-8")
    return text


class Member(Protocol):
    """
    Someone in a L{ChatRoom}.
    """

    def deliver(self, text: bytes) -> None:
        """
        Show C{text} to this member: one line or more, separated by LF, with
        no line ending after the last.
        """


Observer = Callable[[str, bytes], object]


class ChatRoom:
    """
    The members of a chat and their names.

    Names are unique, compared without regard to case.  A member joins with
    a default name (its address, which no chosen name can look like, since
    chosen names have no C{:}) and may pick another with L{rename}.
    """

    def __init__(
        self,
        now: Callable[[], float] = time.monotonic,
        *,
        nickBurst: int = NICK_BURST,
        nickInterval: float = NICK_INTERVAL,
    ) -> None:
        """
        @param now: The clock: seconds since any fixed moment.
        @param nickBurst: How many name changes a member may make at once.
        @param nickInterval: Seconds to earn one more, once they are spent.
        """
        if nickBurst < 1 or nickInterval < 0:
            raise ValueError("nickBurst must be at least 1, nickInterval at least 0")
        self._now = now
        self._nickBurst = nickBurst
        self._nickInterval = nickInterval
        self._names: dict[Member, str] = {}
        self._byKey: dict[str, Member] = {}
        self._observers: list[Observer] = []
        # A member's name-change bucket: (tokens, when they were counted).
        self._nickTokens: dict[Member, tuple[float, float]] = {}
        # The name a member had before renames not yet announced.
        self._unannounced: dict[Member, str] = {}

    @property
    def members(self) -> list[str]:
        """
        The names of the members, in the order they joined.
        """
        return list(self._names.values())

    def nameOf(self, member: Member) -> str:
        """
        The name of C{member}.

        @raise KeyError: If it is not in the room.
        """
        return self._names[member]

    def addObserver(self, observer: Observer) -> None:
        """
        Call C{observer(name, line)} for every line said in the room, as
        said (not sanitized).
        """
        self._observers.append(observer)

    def removeObserver(self, observer: Observer) -> None:
        """
        Stop calling C{observer}.
        """
        self._observers.remove(observer)

    def join(self, member: Member, name: str) -> str:
        """
        Add C{member} under C{name} (sanitized, and made unique with a
        suffix if taken) and tell the others.

        @return: The name it got.
        """
        name = sanitize(name.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "backslashreplace"
        )
        unique, suffix = name, 2
        while unique.lower() in self._byKey:
            unique, suffix = f"{name}~{suffix}", suffix + 1
        self._names[member] = unique
        self._byKey[unique.lower()] = member
        self._tellOthers(member, b"* %s joined" % unique.encode())
        return unique

    def leave(self, member: Member) -> None:
        """
        Remove C{member} and tell the others.  Leaving twice is harmless.
        """
        if member not in self._names:
            return
        self.announce(member)
        name = self._names.pop(member)
        self._nickTokens.pop(member, None)
        del self._byKey[name.lower()]
        self._tellOthers(member, b"* %s left" % name.encode())

    def rename(
        self, member: Member, wanted: bytes, *, announce: bool = True
    ) -> str | None:
        """
        Give C{member} the name C{wanted}, and tell the others.

        A member may make L{NICK_BURST} changes at once, then one per
        L{NICK_INTERVAL} seconds (the room's C{nickBurst} and
        C{nickInterval}); over that, the name stays and nobody is told.

        @param announce: Whether to tell the others now; if not, they are
            told by L{announce}, or before anything else this member does
            in the room, in one notice for all the renames since the last.
        @return: C{None} if done, else why not, for an C{ERROR} line.
        """
        if _NICK.fullmatch(wanted) is None:
            return f"invalid nick: 1 to {MAX_NICK_LENGTH} letters, digits, _ - or ."
        new = wanted.decode("ascii")
        old = self._names[member]
        holder = self._byKey.get(new.lower())
        if holder is not None and holder is not member:
            return f"nick taken: {new}"
        if new == old:
            return None
        wait = self._takeNickToken(member)
        if wait:
            return f"too many nick changes; wait {wait} s"
        del self._byKey[old.lower()]
        self._names[member] = new
        self._byKey[new.lower()] = member
        self._unannounced.setdefault(member, old)
        if announce:
            self.announce(member)
        return None

    def announce(self, member: Member) -> None:
        """
        Tell the others of C{member}'s renames not yet told, in one notice
        from its name before them to its name now (none if they are the
        same).
        """
        old = self._unannounced.pop(member, None)
        if old is not None:
            new = self._names[member]
            if new != old:
                self._tellOthers(
                    member, b"* %s is now %s" % (old.encode(), new.encode())
                )

    def _takeNickToken(self, member: Member) -> int:
        """
        Spend one of C{member}'s name changes.

        @return: 0 if it had one; else how many whole seconds until it has.
        """
        now = self._now()
        tokens, then = self._nickTokens.get(member, (self._nickBurst, now))
        if self._nickInterval:
            tokens = min(
                self._nickBurst, tokens + max(0.0, now - then) / self._nickInterval
            )
        else:
            tokens = self._nickBurst
        if tokens < 1:
            self._nickTokens[member] = (tokens, now)
            return max(1, math.ceil((1 - tokens) * self._nickInterval))
        self._nickTokens[member] = (tokens - 1, now)
        return 0

    def say(self, member: Member, line: bytes) -> None:
        """
        Send what C{member} said to every other member as C{<NAME> line},
        sanitized, and to the observers.
        """
        self.sayLines(member, [line])

    def sayLines(self, member: Member, lines: list[bytes]) -> None:
        """
        Send the C{lines} C{member} said (none holding an LF) to every other
        member, each as C{<NAME> line}, sanitized, as one block: the work is
        done once, not once per member; and to the observers, line by line.
        """
        if self._unannounced:
            self.announce(member)
        name = self._names[member]
        prefix = b"<%s> " % name.encode()
        shown = lines
        if _NEEDS_CARE.search(b"".join(lines)) is not None:
            shown = [sanitize(line) for line in lines]
        self._tellOthers(member, prefix + (b"\n" + prefix).join(shown))
        if self._observers:
            for observer in list(self._observers):
                for line in lines:
                    observer(name, line)

    def who(self) -> bytes:
        """
        The line that answers C{/who}.
        """
        return b"* here: " + ", ".join(self._names.values()).encode()

    def _tellOthers(self, sender: Member, text: bytes) -> None:
        for member in list(self._names):
            if member is not sender:
                member.deliver(text)
