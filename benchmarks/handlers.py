"""
The line handlers that C{benchmarks/compare.py}'s servers call, one per way
of answering: at once in Python, from a coroutine that never waits, a
reactor turn later, and an asyncio loop turn later.

The tcpcomm servers load them with C{twistd -n tcpcomm --handler
benchmarks.handlers:NAME}, from the checkout as the working directory; the
asyncio streams servers of C{benchmarks/servers.py} import them.  Nothing
here imports a reactor at import time: twistd installs its own after the
handler is loaded.
"""

from __future__ import annotations

import asyncio
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

__all__ = ["echoAfterSleep", "echoAsync", "echoInPython", "echoLater"]


def echoInPython(line: bytes) -> bytes:
    """
    The handler of C{tcpcomm-line-py}: the default echo, written as a
    Python function, as a user's own handler is (tcpcomm's default,
    C{bytes.__bytes__}, is called without a Python frame).
    """
    return line


async def echoAsync(line: bytes) -> bytes:
    """
    An C{async def} echo that returns without awaiting anything: its
    coroutine has finished by the time it is first run.  C{tcpcomm-line-async}
    and C{asyncio-streams-async} both call it.
    """
    return line


def echoLater(line: bytes) -> Deferred[bytes]:
    """
    Echo a reactor turn later: C{deferLater(reactor, 0, bytes, line)}, one
    L{DelayedCall} per line (C{tcpcomm-line-later}).
    """
    from twisted.internet import reactor

    return deferLater(cast(IReactorTime, reactor), 0, bytes, line)


async def echoAfterSleep(line: bytes) -> bytes:
    """
    Echo an asyncio loop turn later: C{await asyncio.sleep(0)}, which yields
    to the loop once (C{asyncio-streams-later}).
    """
    await asyncio.sleep(0)
    return line
