# -*- test-case-name: tests.test_chat -*-
"""
A chat room: who is in it, what they are called, and what each line
becomes for the others.

Pure: no Twisted, no I/O.  Members are any objects with a C{deliver(line)}
method; L{tcpcomm.chat.ChatProtocol} is one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

MAX_NICK_LENGTH = 32
_NICK = re.compile(rb"[A-Za-z0-9_.\-]{1,%d}" % MAX_NICK_LENGTH)
_UNSAFE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_C1 = re.compile("[\x80-\x9f]")
_HIGH = re.compile(rb"[\x80-\xff]")
_NEEDS_CARE = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f-\xff]")
"""
A byte that L{sanitize} may have to change (LF aside, which never occurs
inside a line): text without any is safe as it is.
"""


def _hexEscape(match: re.Match[bytes]) -> bytes:
    return b"\\x%02x" % match.group()[0]


def sanitize(text: bytes) -> bytes:
    """
    Make C{text} safe to show on another user's terminal, as C{ncat --chat}
    does: control bytes other than tab (ESC among them, which starts
    terminal escape sequences) are shown escaped as C{\\xNN}.  UTF-8 text
    keeps its characters, except the C1 controls U+0080 to U+009F; bytes
    that are not UTF-8 are shown escaped too.
    """
    text = _UNSAFE.sub(_hexEscape, text)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return _HIGH.sub(_hexEscape, text)
    if _C1.search(decoded):
        decoded = _C1.sub(lambda m: f"\\x{ord(m.group()):02x}", decoded)
        return decoded.encode("utf-8")
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

    def __init__(self) -> None:
        self._names: dict[Member, str] = {}
        self._byKey: dict[str, Member] = {}
        self._observers: list[Observer] = []

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
        Add C{member} under C{name} (made unique with a suffix if taken) and
        tell the others.

        @return: The name it got.
        """
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
        name = self._names.pop(member, None)
        if name is None:
            return
        del self._byKey[name.lower()]
        self._tellOthers(member, b"* %s left" % name.encode())

    def rename(self, member: Member, wanted: bytes) -> str | None:
        """
        Give C{member} the name C{wanted}, and tell the others.

        @return: C{None} if done, else why not, for an C{ERROR} line.
        """
        if _NICK.fullmatch(wanted) is None:
            return f"invalid nick: 1 to {MAX_NICK_LENGTH} letters, digits, _ - or ."
        new = wanted.decode("ascii")
        old = self._names[member]
        holder = self._byKey.get(new.lower())
        if holder is not None and holder is not member:
            return f"nick taken: {new}"
        del self._byKey[old.lower()]
        self._names[member] = new
        self._byKey[new.lower()] = member
        if new != old:
            self._tellOthers(member, b"* %s is now %s" % (old.encode(), wanted))
        return None

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
