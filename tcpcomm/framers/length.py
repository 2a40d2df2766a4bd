# -*- test-case-name: tests.test_framers,tests.test_framers_properties -*-
"""
C{length:SIZE...}: frames with a length field, with the semantics of Netty's
C{LengthFieldBasedFrameDecoder}.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import repeat
from operator import sub
from struct import Struct
from typing import ClassVar, Literal

from tcpcomm.framers.base import (
    DEFAULT_MAX_FRAME_LENGTH,
    BufferFramer,
    FramingError,
    frameTooLong,
)

__all__ = ["FIELD_SIZES", "LengthFieldFramer"]

FIELD_SIZES = (1, 2, 3, 4, 8)
"""
The sizes a length field may have, in bytes.
"""


_FIELD_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
"""
The C{struct} codes of the length fields that one can pack.
"""


def _readField(
    size: int, order: Literal["big", "little"], data: bytes, at: int
) -> tuple[int]:
    """
    Read a length field that C{struct} cannot (3 bytes), as C{unpack_from}
    would: C{size} bytes at C{at}, as a 1-tuple.
    """
    return (int.from_bytes(data[at : at + size], order),)


class LengthFieldFramer(BufferFramer):
    """
    Frames whose header holds their length, as Netty's
    C{LengthFieldBasedFrameDecoder(byteOrder, maxFrameLength, offset, size,
    adjust, strip, failFast=true)} cuts them.

    A frame is C{offset} bytes of anything, the C{size}-byte unsigned length
    field, then the rest; its whole length, counted from its first byte, is
    C{offset + size + value + adjust}. The first C{strip} bytes of each
    frame are dropped from the payload handed on.

    With C{strip == offset + size} (the default) the payload is the frame's
    body, and L{encode} builds the header as Netty's C{LengthFieldPrepender}
    does: C{offset} zero bytes, then the field holding C{len(payload) -
    adjust}. With a smaller C{strip} the payloads hold (part of) the header,
    and L{encode} takes a whole frame, checks it, and returns it as it is.

    C{length:4} is the wire format of Twisted's C{Int32StringReceiver};
    C{length:2} that of Java's C{DataOutputStream.writeShort(n); write(b)}.

    @ivar size: The length field's size in bytes: one of L{FIELD_SIZES}.
    @ivar offset: How many bytes precede the length field.
    @ivar adjust: What to add to the field's value to get the length of
        the frame after the field.
    @ivar order: The field's byte order.
    @ivar strip: How many bytes of each frame's start the payload leaves
        out, at most C{offset + size}.
    @ivar maxLength: The longest whole frame, header included, in bytes. A
        frame over it is an error as soon as its header is read; its body is
        never buffered.
    """

    __slots__ = (
        "_longestPayload",
        "_packField",
        "_unpackField",
        "adjust",
        "maxLength",
        "offset",
        "order",
        "size",
        "strip",
    )

    cutsBytes = True
    _inlineLength: ClassVar[bool] = True
    """
    Whether L{cutBytes} may read the length field itself: C{False} in
    subclasses that override L{frameLength}.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._inlineLength = cls.frameLength is LengthFieldFramer.frameLength

    size: int
    offset: int
    adjust: int
    order: Literal["big", "little"]
    strip: int
    maxLength: int

    def __init__(
        self,
        size: int = 4,
        offset: int = 0,
        adjust: int = 0,
        order: Literal["big", "little"] = "big",
        strip: int | None = None,
        maxLength: int = DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        """
        @param strip: See L{strip}; L{None} for C{offset + size}.
        @raise ValueError: If a parameter is out of its range.
        """
        if size not in FIELD_SIZES:
            raise ValueError(f"size must be 1, 2, 3, 4 or 8, not {size}")
        if offset < 0:
            raise ValueError(f"offset must not be negative, not {offset}")
        if order not in ("big", "little"):
            raise ValueError(f"order must be big or little, not {order}")
        header = offset + size
        if strip is None:
            strip = header
        if not 0 <= strip <= header:
            raise ValueError(
                f"strip must be from 0 to offset + size ({header}), not {strip}"
            )
        if maxLength < header:
            raise ValueError(
                f"max must be at least the header's {header} bytes, not {maxLength}"
            )
        super().__init__()
        self.size = size
        self.offset = offset
        self.adjust = adjust
        self.order = order
        self.strip = strip
        self.maxLength = maxLength
        code = _FIELD_CODES.get(size)
        field = (
            Struct(("<" if order == "little" else ">") + code)
            if code is not None
            else None
        )
        self._packField: Callable[[int], bytes] | None = (
            field.pack if field is not None and offset == 0 and strip == size else None
        )
        self._unpackField: Callable[[bytes, int], tuple[int, ...]] = (
            partial(_readField, size, order) if field is None else field.unpack_from
        )
        # The longest payload encodeAll may frame at once: within max, and
        # with a value that fits the field.
        self._longestPayload = min(maxLength - size, 256**size - 1 + adjust)

    def cut(self, buffer: bytes | bytearray, frames: list[bytes]) -> int:
        """
        See L{BufferFramer.cut}; C{buffer} may be C{bytes} too.
        """
        header = self.offset + self.size
        strip = self.strip
        size = len(buffer)
        position = 0
        while size - position >= header:
            length = self.frameLength(buffer, position)
            end = position + length
            if end > size:
                break
            frames.append(bytes(buffer[position + strip : end]))
            position = end
        return position

    def cutBytes(self, data: bytes, frames: list[bytes]) -> int:
        """
        See L{BufferFramer.cutBytes}: L{cut}, with each payload one slice of
        C{data} and, unless a subclass overrides L{frameLength}, the length
        field read here (with C{struct} where it can) rather than by a call
        per frame.
        """
        if not self._inlineLength:
            return self.cut(data, frames)
        offset = self.offset
        header = offset + self.size
        strip = self.strip
        # frameLength's checks, inline: the frame's whole length is the
        # field's value plus extra, and must be from header to maxLength.
        extra = header + self.adjust
        maxLength = self.maxLength
        size = len(data)
        position = 0
        unpack = self._unpackField
        while size - position >= header:
            length = unpack(data, position + offset)[0] + extra
            if length < header or length > maxLength:
                self.frameLength(data, position)  # raises, saying why
            end = position + length
            if end > size:
                break
            frames.append(data[position + strip : end])
            position = end
        return position

    def encodeAll(self, payloads: list[bytes]) -> bytes:
        """
        See L{Framer.encodeAll}: with the default C{strip}, no C{offset} and
        a field of 1, 2, 4 or 8 bytes, every header is packed and the block
        joined in C calls, with no Python call per reply; otherwise, and for
        any reply that would fail, L{encode} for each.
        """
        pack = self._packField
        if pack is None or not payloads:
            return super().encodeAll(payloads)
        lengths = list(map(len, payloads))
        adjust = self.adjust
        if max(lengths) > self._longestPayload or (
            adjust > 0 and min(lengths) < adjust
        ):
            # encode says which one fails, and why.
            return super().encodeAll(payloads)
        values = list(map(sub, lengths, repeat(adjust))) if adjust else lengths
        parts: list[bytes] = [b""] * (2 * len(payloads))
        parts[::2] = list(map(pack, values))
        parts[1::2] = payloads
        return b"".join(parts)

    def frameLength(self, frame: bytes | bytearray, start: int = 0) -> int:
        """
        Read and check the header of the frame at C{start}.

        @param frame: Bytes holding the whole header from C{start} on.
        @return: The frame's whole length, header included.
        @raise FramingError: If that length is shorter than the header (and
            so than C{strip}), or over C{maxLength}.
        """
        fieldStart = start + self.offset
        value = int.from_bytes(frame[fieldStart : fieldStart + self.size], self.order)
        header = self.offset + self.size
        length = header + value + self.adjust
        if length < header:
            raise FramingError(
                f"length field {value} with adjust {self.adjust} gives a frame"
                f" of {length} bytes, shorter than its {header}-byte header"
            )
        if length > self.maxLength:
            raise frameTooLong(self.maxLength)
        return length

    def encode(self, payload: bytes) -> bytes:
        """
        See L{Framer.encode}: with the default C{strip} a header and
        C{payload}; else C{payload}, a whole frame, once checked.

        @raise FramingError: If the frame would be over C{maxLength}, the
            length does not fit the field, or a whole frame's length field
            does not match its length.
        """
        size = self.size
        offset = self.offset
        header = offset + size
        if self.strip < header:
            if len(payload) < header:
                raise FramingError(
                    f"frame of {len(payload)} bytes is shorter than"
                    f" its {header}-byte header"
                )
            length = self.frameLength(payload)
            if length != len(payload):
                raise FramingError(
                    f"frame of {len(payload)} bytes says it is {length} bytes long"
                )
            return bytes(payload)
        length = len(payload)
        if header + length > self.maxLength:
            raise frameTooLong(self.maxLength)
        value = length - self.adjust
        # value < 256 ** size, without the power.
        if value < 0 or value >> (size << 3):
            raise FramingError(
                f"payload of {length} bytes does not fit"
                f" a {size}-byte length field with adjust {self.adjust}"
            )
        if offset:
            return b"".join((bytes(offset), value.to_bytes(size, self.order), payload))
        return value.to_bytes(size, self.order) + payload
