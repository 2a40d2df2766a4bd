# -*- test-case-name: tests.test_leanreactor -*-
"""
Twisted's epoll reactor, without its per-event logging context.

Twisted's epoll reactor runs every readiness event inside
C{log.callWithLogger}, which sets a legacy logging context (the "system"
that C{twisted.python.log.msg} calls made while handling the event are
tagged with) -- about a third of the reactor's time per event for a small
request/response.  L{LeanEPollReactor} skips that wrapper and hands plain
read events straight to C{doRead}, with the same error handling; every
other event goes through Twisted's own dispatch.

What changes for applications: legacy C{log.msg}/C{log.err} calls made
while handling a read get the system C{"-"} rather than the protocol's
C{logPrefix()}.  Events from C{twisted.logger.Logger} (all of tcpcomm's)
are not affected.

C{twistd tcpcomm} installs it unless another reactor was chosen with
C{twistd --reactor}; it is also available to any twistd application as
C{twistd --reactor tcpcomm}, and to scripts through L{install}.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log

__all__ = ["LeanEPollReactor", "install", "installIfNoneInstalled"]


class LeanEPollReactor(EPollReactor):
    """
    An epoll reactor that dispatches without a logging context per event.
    """

    def doPoll(self, timeout: float | None) -> None:
        """
        Wait for events and dispatch them; see C{EPollReactor.doPoll}.
        """
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        doReadOrWrite = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == EPOLLIN:
                try:
                    why = selectable.doRead()
                except BaseException:
                    why = sys.exc_info()[1]
                    log.err()
                if why:
                    self._disconnectSelectable(selectable, why, True)
            else:
                doReadOrWrite(selectable, fd, event)

    doIteration = doPoll


def install() -> Any:
    """
    Install L{LeanEPollReactor} as the global reactor and return it.

    @raise twisted.internet.error.ReactorAlreadyInstalledError: If a reactor
        is already installed.
    """
    from twisted.internet.main import installReactor

    reactor = LeanEPollReactor()
    installReactor(reactor)
    return reactor


def installIfNoneInstalled() -> bool:
    """
    Install L{LeanEPollReactor} unless a reactor is installed already.

    @return: Whether it was installed now.
    """
    if "twisted.internet.reactor" in sys.modules:
        return False
    install()
    return True
