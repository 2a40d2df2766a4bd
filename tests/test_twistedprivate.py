"""
Tests for L{tcpcomm.twistedprivate}: the private names of Twisted's that
tcpcomm relies on still behave as it expects.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tcpcomm.twistedprivate import wrapOptionHandlers


class _Example(usage.Options):
    optFlags: ClassVar[list[list[Any]]] = [["verbose", "v", "Say more."]]
    optParameters: ClassVar[list[list[Any]]] = [
        ["count", "c", 1, "How many.", int],
    ]

    def opt_name(self, value: str) -> None:
        self["name"] = value


class WrapOptionHandlersTests(SynchronousTestCase):
    """
    L{wrapOptionHandlers} sees every option given, whatever its kind.
    """

    def test_everyKindSeen(self) -> None:
        """
        Flags, coerced parameters and C{opt_} methods, given long, short or
        abbreviated, each reach the wrapper under their own name, and are
        still handled as before.
        """
        options = _Example()
        seen: list[str] = []

        def wrap(name: str, handler: Any) -> Any:
            if isinstance(handler, usage.CoerceParameter):

                class RecordedParameter(usage.CoerceParameter):
                    def dispatch(self, parameterName: str, value: str) -> None:
                        seen.append(name)
                        super().dispatch(parameterName, value)

                return RecordedParameter(options, handler.coerce)

            def recorded(*args: Any) -> None:
                seen.append(name)
                handler(*args)

            return recorded

        wrapOptionHandlers(options, wrap)
        options.parseOptions(["-v", "--cou=3", "--name", "x"])
        self.assertEqual(
            (options["verbose"], options["count"], options["name"]), (1, 3, "x")
        )
        self.assertEqual(seen, ["verbose", "count", "name"])
