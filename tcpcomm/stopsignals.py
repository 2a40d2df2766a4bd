# -*- test-case-name: tests.test_workers -*-
"""
A second SIGTERM or SIGINT while the process is stopping: logged, and
otherwise harmless.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.logger import Logger

__all__ = ["StopSignalGuard"]


class StopSignalGuard:
    """
    Make a SIGTERM or SIGINT harmless once the process is stopping.

    Twisted's handlers stop the reactor on every such signal, and a second
    stop fails with a logged C{ReactorNotRunning} traceback.  Yet a second
    signal is routine: C{timeout} signals its child and then its process
    group, C{kill -TERM -PGID} and systemd signal every process of a group,
    and people press Ctrl-C twice.  Once L{install}ed, the first signal goes
    to Twisted's handler as before (it logs it, stops the reactor, and
    twistd exits with it); a signal after it, or after the process began to
    stop for another reason (L{stopping}), is logged and ignored.  It does
    not hurry the stop under way, which has its own bound
    (C{--shutdown-timeout}, and L{tcpcomm.workers.KILL_MARGIN} more for
    workers); SIGKILL
    stops at once.

    @ivar stopping: Whether the process is stopping: set by the first signal,
        and by the owner when it stops for another reason.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        """
        @param reactor: The reactor whose handlers to wrap.
        """
        self._reactor = reactor
        self.stopping = False

    def install(self) -> None:
        """
        Wrap the reactor's SIGTERM and SIGINT handlers.  Call it once the
        reactor runs (it installs them as it starts, e.g. with
        C{callWhenRunning}); other handlers (SIGINT ignored, as in workers,
        or a debugger's) are left alone.
        """
        for number in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(number)
            if callable(handler) and getattr(handler, "__self__", None) is (
                self._reactor
            ):
                signal.signal(number, functools.partial(self._received, handler))

    def _received(
        self,
        handler: Callable[[int, FrameType | None], object],
        number: int,
        frame: FrameType | None,
    ) -> None:
        if self.stopping:
            self._log.info(
                "Received {signal} while stopping already: ignored",
                signal=signal.Signals(number).name,
                event="signal_ignored",
            )
            return
        self.stopping = True
        handler(number, frame)
