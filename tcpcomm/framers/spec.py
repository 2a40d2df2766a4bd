# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
Framing specifications, as C{--framing} will take them: C{line},
C{delimiter:HEX}, C{stx-etx}, C{length:SIZE[:KEY=VALUE]...}, C{netstring},
C{fixed:N}, C{modbus}.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Literal

from tcpcomm.framers.base import Framer
from tcpcomm.framers.delimiter import DelimiterFramer
from tcpcomm.framers.fixed import FixedFramer
from tcpcomm.framers.length import LengthFieldFramer
from tcpcomm.framers.line import LineAdapter
from tcpcomm.framers.modbus import ModbusFramer
from tcpcomm.framers.netstring import NetstringFramer
from tcpcomm.framers.stxetx import StxEtxFramer

__all__ = ["FRAMINGS", "framerFactory", "parseFraming"]

FRAMINGS = ("line", "delimiter", "stx-etx", "length", "netstring", "fixed", "modbus")
"""
The framings' names, as a specification starts.
"""

_INTEGER = re.compile(r"-?[0-9]+")

_MOST = 1 << 30
"""
The largest size or offset a specification may give, either way: 1 GiB, as
C{--max-line-length}; a frame any longer would be held whole in memory.
"""
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")

# For each framing: whether it takes one positional argument, and the
# parameters it takes after it.
_SHAPES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "line": (None, ("max",)),
    "delimiter": ("HEX", ("max",)),
    "stx-etx": (None, ("max",)),
    "length": ("SIZE", ("offset", "adjust", "order", "strip", "max")),
    "netstring": (None, ("max",)),
    "fixed": ("N", ()),
    "modbus": (None, ()),
}


def parseFraming(spec: str) -> Callable[[], Framer]:
    """
    Parse a framing specification.

    A specification is a framing's name, then its argument if it takes one,
    then C{KEY=VALUE} parameters, all separated by colons:

      - C{line[:max=N]}: lines, LF or CRLF.
      - C{delimiter:HEX[:max=N]}: frames ending with the bytes C{HEX}
        (C{00}, C{0d0a}...).
      - C{stx-etx[:max=N]}: C{0x02 payload 0x03}.
      - C{length:SIZE[:offset=N][:adjust=N][:order=big|little][:strip=N]
        [:max=N]}: a length field, as L{LengthFieldFramer}.
      - C{netstring[:max=N]}: C{5:hello,}.
      - C{fixed:N}: every N bytes.
      - C{modbus}: MODBUS TCP ADUs.

    C{max} is the longest payload, except for C{length}, where it is the
    longest whole frame, header included (as Netty's C{maxFrameLength}).

    @return: A callable that makes a new framer, one per connection.
    @raise ValueError: If C{spec} is not a valid specification; its
        message is one line that names what is wrong.
    """
    try:
        return _parse(spec)
    except ValueError as error:
        shown = spec if len(spec) <= 60 else spec[:60] + "..."
        raise ValueError(f"framing {shown!r}: {error}") from None


def framerFactory(framing: str | Callable[[], Framer]) -> Callable[[], Framer]:
    """
    A factory of framers, one per connection, from a C{framing} argument.

    @param framing: A specification (as L{parseFraming} takes) or already
        a factory.
    @raise ValueError: With one line, if the specification is not valid.
    """
    if isinstance(framing, str):
        return parseFraming(framing)
    return framing


def _parse(spec: str) -> Callable[[], Framer]:
    """
    Parse a framing specification; see L{parseFraming}.

    @raise ValueError: With what is wrong, without the specification.
    """
    name, *fields = spec.split(":")
    if name not in _SHAPES:
        raise ValueError(f"unknown framing {name!r}; known: {', '.join(FRAMINGS)}")
    argumentName, parameterNames = _SHAPES[name]
    argument = None
    if argumentName is not None:
        if not fields or "=" in fields[0]:
            raise ValueError(
                f"{name} needs its {argumentName}, as {name}:{argumentName}"
            )
        argument, *fields = fields
    parameters: dict[str, str] = {}
    for field in fields:
        key, equals, value = field.partition("=")
        if not equals:
            raise ValueError(f"{field!r} is no KEY=VALUE parameter")
        if key not in parameterNames:
            known = ", ".join(parameterNames) or "none"
            raise ValueError(f"unknown parameter {key!r} for {name} (known: {known})")
        if key in parameters:
            raise ValueError(f"parameter {key!r} given twice")
        parameters[key] = value
    maxLength = {}
    if "max" in parameters:
        maxLength["maxLength"] = _integer("max", parameters.pop("max"))
    factory: Callable[[], Framer]
    if name == "line":
        lineMax = maxLength.get("maxLength")
        factory = partial(LineAdapter, *(() if lineMax is None else (lineMax,)))
    elif name == "delimiter":
        assert argument is not None
        factory = partial(DelimiterFramer, _hex(argument), **maxLength)
    elif name == "stx-etx":
        factory = partial(StxEtxFramer, **maxLength)
    elif name == "length":
        assert argument is not None
        factory = partial(
            LengthFieldFramer,
            _integer("SIZE", argument),
            offset=_integer("offset", parameters.get("offset", "0")),
            adjust=_integer("adjust", parameters.get("adjust", "0")),
            order=_order(parameters.get("order", "big")),
            strip=(
                _integer("strip", parameters["strip"])
                if "strip" in parameters
                else None
            ),
            **maxLength,
        )
    elif name == "netstring":
        factory = partial(NetstringFramer, **maxLength)
    elif name == "fixed":
        assert argument is not None
        factory = partial(FixedFramer, _integer("N", argument))
    else:
        factory = ModbusFramer
    # The framers check their own ranges: make one now, so that a bad value
    # is refused here, at start-up.
    factory()
    return factory


def _integer(name: str, text: str) -> int:
    """
    @return: C{text} as a decimal integer.
    @raise ValueError: If it is not one, or one beyond 1 GiB either way.
    """
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{name} must be a whole number, not {text!r}")
    # The length first: int() refuses over 4300 digits, in words of its own.
    if len(text) > 11 or abs(int(text)) > _MOST:
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise ValueError(
            f"{name} must be from -{_MOST} to {_MOST} (1 GiB), not {shown}"
        )
    return int(text)


def _hex(text: str) -> bytes:
    """
    @return: The bytes that C{text} spells in hex.
    @raise ValueError: If it does not spell at least one byte.
    """
    if not _HEX.fullmatch(text):
        raise ValueError(
            f"the delimiter must be bytes in hex (00, 0d0a...), not {text!r}"
        )
    return bytes.fromhex(text)


def _order(text: str) -> Literal["big", "little"]:
    """
    @return: C{text} as a byte order.
    @raise ValueError: If it is neither C{big} nor C{little}.
    """
    if text == "big":
        return "big"
    if text == "little":
        return "little"
    raise ValueError(f"order must be big or little, not {text!r}")
