# -*- test-case-name: tests.test_twistedprivate -*-
"""
The few places where tcpcomm relies on a private name of Twisted's, each
behind one small named helper pinned by a test, so that a Twisted release
that changes one breaks a test here rather than a user's server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python import usage

__all__ = ["replaceProtocol", "wrapOptionHandlers"]


def wrapOptionHandlers(options: usage.Options, wrap: Callable[[str, Any], Any]) -> None:
    """
    Replace the handler C{options} calls for each of its options, as
    C{usage.Options.__init__} made it, with C{wrap(name, handler)}.

    C{usage.Options} has no hook that sees every option given (flags,
    parameters and C{opt_} methods alike); its private C{_dispatch} table,
    one handler per option name (long and short), is the one place that
    does.  A handler that is a C{usage.CoerceParameter} must be replaced
    by one too: C{usage.Options} calls its C{dispatch} method, and other
    handlers themselves.
    """
    dispatch: dict[str, Any] = options._dispatch
    for name, handler in dispatch.items():
        dispatch[name] = wrap(name, handler)


def replaceProtocol(transport: object, old: object, new: object) -> bool:
    """
    Make C{transport} deliver what comes next (C{dataReceived},
    C{readConnectionLost}, C{connectionLost}) to C{new} instead of C{old}.

    Twisted's socket transports (C{tcp.Server}, C{unix.Server}, and so
    tcpcomm's write-through one) keep their protocol in C{protocol} and read
    it at each event; no interface says so.

    @return: Whether it could: C{transport} delivered to C{old} through its
        C{protocol} attribute.  If not, C{old} must pass events on itself.
    """
    if getattr(transport, "protocol", None) is not old:
        return False
    transport.protocol = new  # type: ignore[attr-defined]
    return True
