"""MQTT's field encodings (spec 1.5 and 2.2.3): variable-length integers, strings, binary data.

The codec builds packets from these; a ``FieldReader`` walks one packet body and turns
running out of bytes, ill-formed UTF-8 and zero packet ids into ``ProtocolError``.
"""

from __future__ import annotations

import re
import struct

from .errors import ProtocolError

MAX_REMAINING_LENGTH = 268_435_455  # four 7-bit bytes (spec 2.2.3)
U16 = struct.Struct("!H")

# Spec 1.5.3 lets a receiver close the connection on control characters (U+0001-U+001F,
# U+007F-U+009F) and non-characters (U+FDD0-U+FDEF, and the last two code points of every
# plane). mosquitto does, so this kit does too. U+0000 has its own rule, [MQTT-1.5.3-2].
_PLANE_ENDS = "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
_DISALLOWED = re.compile(f"[\x01-\x1f\x7f-\x9f\ufdd0-\ufdef{_PLANE_ENDS}]")


def encode_remaining_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length > MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {length} exceeds {MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        digit = length & 0x7F
        length >>= 7
        if length:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def encode_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return U16.pack(len(data)) + data


def encode_binary(data: bytes) -> bytes:
    return U16.pack(len(data)) + data


def decode_utf8(data: bytes | memoryview) -> str:
    """A UTF-8 string field's text: well-formed [MQTT-1.5.3-1], without U+0000 [MQTT-1.5.3-2],
    control characters or non-characters (1.5.3)."""
    try:
        text = bytes(data).decode("utf-8")  # strict: also rejects surrogates D800-DFFF
    except UnicodeDecodeError as error:
        raise ProtocolError("[MQTT-1.5.3-1]", f"ill-formed UTF-8 string: {error.reason}") from None
    if "\x00" in text:
        raise ProtocolError("[MQTT-1.5.3-2]", "UTF-8 string must not contain U+0000")
    disallowed = _DISALLOWED.search(text)
    if disallowed is not None:
        code_point = ord(disallowed.group())
        kind = "non-character" if code_point >= 0xFDD0 else "control character"
        raise ProtocolError("[MQTT-1.5.3]", f"UTF-8 string contains the {kind} U+{code_point:04X}")
    return text


class FieldReader:
    """Sequential field reader over one packet body; running short is a malformed packet."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def remaining(self) -> int:
        return len(self.data) - self.pos

    # Each CONNECT is read field by field, so these run ~10 times per client that connects:
    # they index the body in place rather than slice it and unpack the slice.

    def _short(self) -> ProtocolError:
        return ProtocolError("[MQTT-2.2.3]", f"{self.what} is shorter than its fields")

    def take(self, count: int) -> bytes:
        start = self.pos
        end = start + count
        if end > len(self.data):
            raise self._short()
        self.pos = end
        return bytes(self.data[start:end])

    def u8(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            raise self._short()
        self.pos = pos + 1
        return self.data[pos]

    def u16(self) -> int:
        pos, data = self.pos, self.data
        if pos + 2 > len(data):
            raise self._short()
        self.pos = pos + 2
        return (data[pos] << 8) | data[pos + 1]

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        return decode_utf8(self.binary())

    def packet_id(self) -> int:
        packet_id = self.u16()
        if packet_id == 0:
            raise ProtocolError("[MQTT-2.3.1-1]", f"{self.what} packet identifier must be non-zero")
        return packet_id

    def end(self) -> None:
        if self.remaining():
            raise ProtocolError("[MQTT-2.2.3]", f"{self.what} has {self.remaining()} trailing bytes")
