# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
C{modbus}: MODBUS TCP application data units, cut by their MBAP header.
"""

from __future__ import annotations

from tcpcomm.framers.base import FramingError
from tcpcomm.framers.length import LengthFieldFramer

__all__ = [
    "GATEWAY_PATH_UNAVAILABLE",
    "GATEWAY_TARGET_FAILED",
    "MAX_ADU_LENGTH",
    "SERVER_DEVICE_FAILURE",
    "ModbusFramer",
    "exceptionResponse",
]

MAX_ADU_LENGTH = 260
"""
The longest MODBUS TCP ADU: a 7-byte MBAP header and a 253-byte PDU.
"""

SERVER_DEVICE_FAILURE = 0x04
"""
The exception code for a server that failed to answer a request.
"""

GATEWAY_PATH_UNAVAILABLE = 0x0A
"""
The exception code for a gateway that cannot reach its target (a relay
whose upstream is unavailable).
"""

GATEWAY_TARGET_FAILED = 0x0B
"""
The exception code for a gateway whose target did not respond (a handler
that timed out).
"""

MBAP_LENGTH = 7


class ModbusFramer(LengthFieldFramer):
    """
    MODBUS TCP ADUs: the MBAP header (transaction id, protocol id, length,
    unit id; 2, 2, 2 and 1 bytes, big-endian), then the PDU.

    The length field (offset 4) counts the unit id and the PDU, so this is
    C{length:2:offset=4:strip=0:max=260}, with two more checks: the protocol
    id must be 0, and the length at least 2 (a unit id and a function code).
    Payloads are whole ADUs, and so are replies, which L{encode} checks.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(size=2, offset=4, strip=0, maxLength=MAX_ADU_LENGTH)

    def frameLength(self, frame: bytes | bytearray, start: int = 0) -> int:
        """
        See L{LengthFieldFramer.frameLength}; also check the protocol id and
        that a function code is there.
        """
        protocol = int.from_bytes(frame[start + 2 : start + 4], "big")
        if protocol != 0:
            raise FramingError(f"MODBUS protocol id {protocol}, not 0")
        length = super().frameLength(frame, start)
        if length < MBAP_LENGTH + 1:
            raise FramingError(
                f"MODBUS length field {length - 6} leaves no function code"
            )
        return length


def exceptionResponse(request: bytes, code: int = SERVER_DEVICE_FAILURE) -> bytes:
    """
    The MODBUS exception response to a request.

    @param request: A request ADU: at least its MBAP header and function
        code.
    @param code: The exception code, 1 to 255; by default
        L{SERVER_DEVICE_FAILURE}.
    @return: An ADU with the request's transaction and unit ids, protocol
        id 0, and a PDU of the function code with its high bit set and
        C{code}.
    @raise ValueError: If C{request} is too short or C{code} out of range.
    """
    if len(request) < MBAP_LENGTH + 1:
        raise ValueError(
            f"a MODBUS request is at least {MBAP_LENGTH + 1} bytes, not {len(request)}"
        )
    if not 1 <= code <= 0xFF:
        raise ValueError(f"exception code must be from 1 to 255, not {code}")
    return b"".join(
        (
            request[0:2],
            b"\x00\x00\x00\x03",
            request[6:7],
            bytes((request[7] | 0x80, code)),
        )
    )
