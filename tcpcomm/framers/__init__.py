# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
Framers: cut a byte stream into frames, and frame replies, one module per
framing. Pure and synchronous: no Twisted, no I/O.

L{parseFraming} turns a specification such as C{length:2} into a factory
of L{Framer}s.
"""

from tcpcomm.framers.base import DEFAULT_MAX_FRAME_LENGTH, Framer, FramingError
from tcpcomm.framers.delimiter import DelimiterFramer
from tcpcomm.framers.fixed import FixedFramer
from tcpcomm.framers.length import LengthFieldFramer
from tcpcomm.framers.line import LineAdapter
from tcpcomm.framers.modbus import ModbusFramer, exceptionResponse
from tcpcomm.framers.netstring import NetstringFramer
from tcpcomm.framers.spec import FRAMINGS, framerFactory, parseFraming
from tcpcomm.framers.stxetx import StxEtxFramer

__all__ = [
    "DEFAULT_MAX_FRAME_LENGTH",
    "FRAMINGS",
    "DelimiterFramer",
    "FixedFramer",
    "Framer",
    "FramingError",
    "LengthFieldFramer",
    "LineAdapter",
    "ModbusFramer",
    "NetstringFramer",
    "StxEtxFramer",
    "exceptionResponse",
    "framerFactory",
    "parseFraming",
]
