"""Raw MQTT packet builders for the fuzzer: every field is bytes, and nothing is validated.

``mqtt.codec.encode`` takes ``str`` fields and packet objects; the fuzzer also needs ill-formed
UTF-8, forbidden flag combinations and lengths the codec would never produce, so it builds
frames here from bytes. Only the remaining-length encoding is shared with the codec.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from mqtt.fields import encode_remaining_length

U16 = struct.Struct("!H")
MAX_STRING = 65_535  # a two-byte length prefix: the longest string a field can carry

PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"
CONNACK = b"\x20\x02\x00\x00"

# First bytes of the acknowledgements, flags included (PUBREL's are 0b0010, [MQTT-3.6.1-1]).
ACK_FIRST_BYTES = {"puback": 0x40, "pubrec": 0x50, "pubrel": 0x62, "pubcomp": 0x70, "unsuback": 0xB0}


@dataclass(frozen=True, slots=True)
class WillSpec:
    topic: bytes
    payload: bytes
    qos: int
    retain: bool


def field(data: bytes) -> bytes:
    """A length-prefixed string or binary field (the caller keeps it under 65,536 bytes)."""
    return U16.pack(len(data)) + data


def frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_remaining_length(len(body)) + body


def connect(
    client_id: bytes,
    clean: bool = True,
    keepalive: int = 60,
    will: WillSpec | None = None,
    username: bytes | None = None,
    password: bytes | None = None,
    protocol: tuple[bytes, int] = (b"MQTT", 4),
) -> bytes:
    flags = 0x02 if clean else 0
    payload = field(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += field(will.topic) + field(will.payload)
    if username is not None:
        flags |= 0x80
        payload += field(username)
    if password is not None:
        flags |= 0x40
        payload += field(password)
    name, level = protocol
    return frame(0x10, field(name) + bytes((level, flags)) + U16.pack(keepalive) + payload)


def publish(
    topic: bytes,
    payload: bytes = b"",
    qos: int = 0,
    packet_id: int = 1,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    packet_id_field = U16.pack(packet_id) if qos else b""
    return frame(first, field(topic) + packet_id_field + payload)


def publish_of_size(topic: bytes, qos: int, size: int, packet_id: int = 1) -> bytes:
    """A PUBLISH of exactly ``size`` bytes, header included (for packets right at a size limit)."""
    fixed = 2 + len(topic) + (2 if qos else 0)
    for length_bytes in (1, 2, 3, 4):
        body = size - 1 - length_bytes
        if body >= fixed and len(encode_remaining_length(body)) == length_bytes:
            return publish(topic, b"\x5a" * (body - fixed), qos, packet_id)
    raise ValueError(f"no PUBLISH of {size} bytes has topic {topic[:20]!r}")


def subscribe(packet_id: int, filters: Sequence[tuple[bytes, int]]) -> bytes:
    return frame(0x82, U16.pack(packet_id) + b"".join(field(name) + bytes((qos,)) for name, qos in filters))


def unsubscribe(packet_id: int, filters: Sequence[bytes]) -> bytes:
    return frame(0xA2, U16.pack(packet_id) + b"".join(field(name) for name in filters))


def ack(kind: str, packet_id: int) -> bytes:
    return bytes((ACK_FIRST_BYTES[kind], 2)) + U16.pack(packet_id)


def suback(packet_id: int, codes: bytes) -> bytes:
    return frame(0x90, U16.pack(packet_id) + codes)


def deep_name(levels: int, level: bytes = b"d") -> bytes:
    """A topic or filter of ``levels`` levels; past what fits, every level is empty ('/' only)."""
    if levels * (len(level) + 1) - 1 > MAX_STRING:
        return b"/" * (min(levels, MAX_STRING + 1) - 1)
    return b"/".join([level] * levels)


def max_filters_that_fit(max_packet_size: int, filter_length: int = 1) -> int:
    """How many filters of ``filter_length`` bytes one SUBSCRIBE of at most max_packet_size carries."""
    per_filter = 2 + filter_length + 1
    body_limit = max_packet_size - 1 - len(encode_remaining_length(max_packet_size))
    return (body_limit - 2) // per_filter
