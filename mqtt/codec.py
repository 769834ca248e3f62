"""MQTT 3.1.1 wire format: ``encode(packet) -> bytes`` and an incremental, strict ``Decoder``.

The decoder never reads byte by byte in a Python loop over the stream: it finds frame
boundaries in one large buffer and hands each frame's span on. Partial frames wait in a
bytearray until the bytes the length prefix promised have arrived, so a packet fed one
byte at a time costs O(n), not O(n^2). Every violation raises ``ProtocolError`` naming the
spec rule.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Protocol

from .errors import PacketTooLarge, ProtocolError, UnacceptableProtocolLevel
from .fields import (
    MAX_REMAINING_LENGTH,
    U16,
    FieldReader,
    decode_utf8,
    encode_binary,
    encode_remaining_length,
    encode_string,
)
from .fixed_header import MQTT_3_1, STRICT_FIRST_BYTES, check_fixed_header
from .packets import (
    SUBACK_FAILURE,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from .topics import validate_filter, validate_topic_name

SUPPORTED_PROTOCOLS = {"MQTT": 4, "MQIsdp": MQTT_3_1}  # 3.1.1, and 3.1 as mosquitto accepts it

PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
DISCONNECT_BYTES = b"\xe0\x00"

# ---------------------------------------------------------------------------------------------
# Encoding: every byte the broker sends is made by a function in this section.

_ACK = struct.Struct("!BBH")  # first byte, remaining length 2, packet id: the four-byte acks
_pack_ack = _ACK.pack


def _frame(first_byte: int, body: bytes) -> bytes:
    """Fixed header plus body, with the variable-length remaining length of spec 2.2.3."""
    return bytes((first_byte,)) + encode_remaining_length(len(body)) + body


def encode_puback(packet_id: int) -> bytes:
    return _pack_ack(0x40, 2, packet_id)


def encode_pubrec(packet_id: int) -> bytes:
    return _pack_ack(0x50, 2, packet_id)


def encode_pubrel(packet_id: int) -> bytes:
    return _pack_ack(0x62, 2, packet_id)  # flags 0010 [MQTT-3.6.1-1]


def encode_pubcomp(packet_id: int) -> bytes:
    return _pack_ack(0x70, 2, packet_id)


def encode_unsuback(packet_id: int) -> bytes:
    return _pack_ack(0xB0, 2, packet_id)


_CONNACKS = {
    (present, code): bytes((0x20, 2, int(present), code)) for present in (False, True) for code in range(6)
}


def encode_connack(session_present: bool, return_code: int) -> bytes:
    """CONNACK; a refusal never claims a session [MQTT-3.2.2-4]."""
    return _CONNACKS[(bool(session_present) and return_code == 0, return_code)]


def encode_suback(packet_id: int, return_codes: Sequence[int]) -> bytes:
    """SUBACK: one return code per filter, so its length needs the variable-length encoding."""
    return _frame(0x90, U16.pack(packet_id) + bytes(return_codes))


def encode_publish(
    topic: bytes, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int | None
) -> bytes:
    """A PUBLISH from already-encoded topic bytes: the one place outgoing PUBLISHes are built."""
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    topic_field = U16.pack(len(topic)) + topic
    if qos:
        if not packet_id:
            raise ValueError("QoS > 0 PUBLISH needs a non-zero packet id")
        topic_field += U16.pack(packet_id)
    return bytes((first,)) + encode_remaining_length(len(topic_field) + len(payload)) + topic_field + payload


def _encode_connect(packet: Connect) -> bytes:
    flags = 0x02 if packet.clean_session else 0
    payload = encode_string(packet.client_id)
    if packet.will is not None:
        flags |= 0x04 | (packet.will.qos << 3) | (0x20 if packet.will.retain else 0)
        payload += encode_string(packet.will.topic) + encode_binary(packet.will.payload)
    if packet.username is not None:
        flags |= 0x80
        payload += encode_string(packet.username)
    if packet.password is not None:
        flags |= 0x40
        payload += encode_binary(packet.password)
    level = packet.protocol_level | (0x80 if packet.bridge else 0)
    header = encode_string(packet.protocol_name) + bytes((level, flags))
    return _frame(0x10, header + U16.pack(packet.keepalive) + payload)


def _encode_subscribe(packet: Subscribe) -> bytes:
    body = U16.pack(packet.packet_id)
    for topic_filter, qos in packet.subscriptions:
        body += encode_string(topic_filter) + bytes((qos,))
    return _frame(0x82, body)


def _encode_unsubscribe(packet: Unsubscribe) -> bytes:
    body = U16.pack(packet.packet_id) + b"".join(encode_string(f) for f in packet.topic_filters)
    return _frame(0xA2, body)


def encode(packet: Packet) -> bytes:
    """Serialise one packet to its exact wire bytes."""
    match packet:
        case Publish():
            topic = packet.topic.encode("utf-8")
            return encode_publish(
                topic, packet.payload, packet.qos, packet.retain, packet.dup, packet.packet_id
            )
        case Puback(packet_id=pid):
            return encode_puback(pid)
        case Pubrec(packet_id=pid):
            return encode_pubrec(pid)
        case Pubrel(packet_id=pid):
            return encode_pubrel(pid)
        case Pubcomp(packet_id=pid):
            return encode_pubcomp(pid)
        case Connect():
            return _encode_connect(packet)
        case Connack(session_present=present, return_code=code):
            return bytes((0x20, 2, 1 if present else 0, code))  # any values, for tests of bad CONNACKs
        case Subscribe():
            return _encode_subscribe(packet)
        case Suback(packet_id=pid, return_codes=codes):
            return encode_suback(pid, codes)
        case Unsubscribe():
            return _encode_unsubscribe(packet)
        case Unsuback(packet_id=pid):
            return encode_unsuback(pid)
        case Pingreq():
            return PINGREQ_BYTES
        case Pingresp():
            return PINGRESP_BYTES
        case Disconnect():
            return DISCONNECT_BYTES
    raise TypeError(f"not an MQTT packet: {packet!r}")


# ---------------------------------------------------------------------------------------------
# Decoding: fields


def publish_topic(topic_bytes: bytes) -> str:
    """Decode and validate a PUBLISH topic name (shared by Decoder and the broker's fast path)."""
    return validate_topic_name(decode_utf8(topic_bytes))


def _decode_connect(first: int, body: bytes | memoryview) -> Connect:
    reader = FieldReader(body, "CONNECT")
    name = reader.string()
    level_byte = reader.u8()
    # mosquitto bridges set 0x80 on the level ("try_private") to ask for no echo of their own
    # messages; the rest of the byte is the ordinary level.
    level, bridge = level_byte & 0x7F, bool(level_byte & 0x80)
    if name not in SUPPORTED_PROTOCOLS:
        raise ProtocolError("[MQTT-3.1.2-1]", f"unknown protocol name {name!r}")
    if SUPPORTED_PROTOCOLS[name] != level:
        raise UnacceptableProtocolLevel("[MQTT-3.1.2-2]", f"unsupported protocol level {level} for {name}")
    flags = reader.u8()
    # MQTT 3.1 defined neither CONNECT's fixed-header flags nor the reserved connect flag, so
    # 3.1 brokers ignored both; only a 3.1.1 CONNECT is held to them.
    if level != MQTT_3_1 and first & 0x0F:
        raise ProtocolError("[MQTT-2.2.2-2]", f"CONNECT flags must be 0x0, got {first & 0x0F:#x}")
    if level != MQTT_3_1 and flags & 0x01:
        raise ProtocolError("[MQTT-3.1.2-3]", "CONNECT reserved flag must be zero")
    has_will, will_qos, will_retain = bool(flags & 0x04), (flags >> 3) & 0x03, bool(flags & 0x20)
    if not has_will and (will_qos or will_retain):
        raise ProtocolError("[MQTT-3.1.2-11]", "will QoS and retain must be zero without a will")
    if will_qos == 3:
        raise ProtocolError("[MQTT-3.1.2-14]", "will QoS must not be 3")
    has_username, has_password = bool(flags & 0x80), bool(flags & 0x40)
    if has_password and not has_username:
        raise ProtocolError("[MQTT-3.1.2-22]", "password flag set without user name flag")
    keepalive = reader.u16()
    client_id = reader.string()
    will = None
    if has_will:
        will_topic = validate_topic_name(reader.string())
        will = Will(will_topic, reader.binary(), will_qos, will_retain)
    username = reader.string() if has_username else None
    password = reader.binary() if has_password else None
    reader.end()
    return Connect(client_id, bool(flags & 0x02), keepalive, username, password, will, name, level, bridge)


def _decode_publish(first: int, body: bytes | memoryview) -> Publish:
    """The body of a PUBLISH whose first byte ``check_fixed_header`` has accepted."""
    qos, retain, dup = (first >> 1) & 0x03, bool(first & 0x01), bool(first & 0x08)
    reader = FieldReader(body, "PUBLISH")
    topic = publish_topic(reader.binary())
    packet_id = reader.packet_id() if qos else None
    return Publish(topic, reader.take(reader.remaining()), qos, retain, dup, packet_id)


def _decode_subscribe(body: bytes | memoryview) -> Subscribe:
    reader = FieldReader(body, "SUBSCRIBE")
    packet_id = reader.packet_id()
    subscriptions = []
    while reader.remaining():
        topic_filter = validate_filter(reader.string())
        qos = reader.u8()
        if qos > 2:
            raise ProtocolError("[MQTT-3.8.3-4]", f"requested QoS byte {qos:#04x} is malformed")
        subscriptions.append((topic_filter, qos))
    if not subscriptions:
        raise ProtocolError("[MQTT-3.8.3-3]", "SUBSCRIBE must contain at least one topic filter")
    return Subscribe(packet_id, tuple(subscriptions))


def _decode_unsubscribe(body: bytes | memoryview) -> Unsubscribe:
    reader = FieldReader(body, "UNSUBSCRIBE")
    packet_id = reader.packet_id()
    filters = []
    while reader.remaining():
        filters.append(validate_filter(reader.string()))
    if not filters:
        raise ProtocolError("[MQTT-3.10.3-2]", "UNSUBSCRIBE must contain at least one topic filter")
    return Unsubscribe(packet_id, tuple(filters))


def _decode_connack(body: bytes | memoryview) -> Connack:
    reader = FieldReader(body, "CONNACK")
    flags, code = reader.u8(), reader.u8()
    reader.end()
    if flags & 0xFE:
        raise ProtocolError("[MQTT-3.2.2]", "CONNACK acknowledge flags bits 7-1 are reserved")
    if code > 5:
        raise ProtocolError("[MQTT-3.2.2]", f"unknown CONNACK return code {code}")
    return Connack(bool(flags), code)


def _decode_suback(body: bytes | memoryview) -> Suback:
    reader = FieldReader(body, "SUBACK")
    packet_id = reader.packet_id()
    codes = tuple(reader.take(reader.remaining()))
    if not codes or any(code not in (0, 1, 2, SUBACK_FAILURE) for code in codes):
        raise ProtocolError("[MQTT-3.9.3-2]", f"SUBACK return codes {codes} are not 0, 1, 2 or 0x80")
    return Suback(packet_id, codes)


_ACK_CLASSES = {
    PacketType.PUBACK: Puback,
    PacketType.PUBREC: Pubrec,
    PacketType.PUBREL: Pubrel,
    PacketType.PUBCOMP: Pubcomp,
    PacketType.UNSUBACK: Unsuback,
}
_EMPTY_PACKETS = {
    PacketType.PINGREQ: Pingreq(),
    PacketType.PINGRESP: Pingresp(),
    PacketType.DISCONNECT: Disconnect(),
}
_BODY_DECODERS = {
    PacketType.CONNACK: _decode_connack,
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
}


def decode_packet(first: int, body: bytes | memoryview) -> Packet:
    """Decode one complete MQTT 3.1.1 frame, given its first byte and its body."""
    check_fixed_header(first)
    return decode_body(first, body)


def decode_body(first: int, body: bytes | memoryview) -> Packet:
    """Decode a frame whose first byte the framing has already accepted for its connection."""
    packet_type = first >> 4
    if packet_type == PacketType.PUBLISH:
        return _decode_publish(first, body)
    ack_class = _ACK_CLASSES.get(packet_type)
    if ack_class is not None:
        reader = FieldReader(body, PacketType(packet_type).name)
        packet_id = reader.packet_id()
        reader.end()
        return ack_class(packet_id)
    empty = _EMPTY_PACKETS.get(packet_type)
    if empty is not None:
        if len(body):
            raise ProtocolError("[MQTT-2.2.3]", f"{PacketType(packet_type).name} must have no body")
        return empty
    if packet_type == PacketType.CONNECT:
        return _decode_connect(first, body)
    return _BODY_DECODERS[packet_type](body)


# ---------------------------------------------------------------------------------------------
# Decoding: framing


class FrameState(Protocol):
    """What framing keeps between reads: a partial frame, and which first bytes are valid.

    ``Decoder`` is one; so is ``Connection``, which keeps these three fields itself rather than
    own a Decoder: one object per client instead of two (64 bytes each, 10,000 clients).
    """

    first_bytes: bytes  # one entry per byte value: is it a valid first byte here?
    partial_frame: bytearray | None  # a frame's first bytes while the rest is on its way
    bytes_needed: int  # bytes the partial frame needs before parsing is worth retrying


def split_frames(
    state: FrameState, data: bytes | bytearray | memoryview, max_packet_size: int
) -> Iterator[tuple[bytes, int, int, int]]:
    """Yield ``(buffer, frame_start, body_start, frame_end)`` for each whole frame in ``data``.

    A trailing partial frame waits in ``state.partial_frame`` (None between frames, which is
    almost always: an idle connection should not own an empty bytearray).
    """
    partial = state.partial_frame
    if partial is not None:
        partial += data
        if len(partial) < state.bytes_needed:
            return
        buffer = bytes(partial)
        state.partial_frame = None
    else:
        buffer = data if type(data) is bytes else bytes(data)
    size = len(buffer)
    pos = 0
    strict = STRICT_FIRST_BYTES  # every table accepts at least these: the one-index fast path
    while pos < size:
        first = buffer[pos]
        # Read state.first_bytes only off the fast path: the caller may widen it between
        # frames (a CONNECT just told us the protocol level).
        if not strict[first] and not state.first_bytes[first]:
            check_fixed_header(first)  # raises: refuse a bad header before buffering a body
        span = frame_span(buffer, pos, size, max_packet_size)
        if span is None or span[1] > size:
            state.partial_frame = bytearray(buffer[pos:])
            state.bytes_needed = span[1] - pos if span is not None else 0
            return
        body, end = span
        yield buffer, pos, body, end
        pos = end


class Decoder:
    """Incremental framing over a byte stream of any fragmentation.

    ``frames(data)`` yields ``(buffer, frame_start, body_start, frame_end)`` spans into one
    buffer, so a caller can forward a frame's bytes (``buffer[frame_start:frame_end]``) without
    re-encoding it; ``feed(data)`` decodes them into packet objects. ``first_bytes`` says which
    first bytes are valid: strict 3.1.1 by default; a broker's connection widens it while it
    awaits CONNECT and for MQTT 3.1 clients (``first_bytes_for``).
    """

    __slots__ = ("bytes_needed", "first_bytes", "max_packet_size", "partial_frame")

    def __init__(
        self, max_packet_size: int = MAX_REMAINING_LENGTH + 5, first_bytes: bytes = STRICT_FIRST_BYTES
    ) -> None:
        self.max_packet_size = max_packet_size
        self.first_bytes = first_bytes
        self.partial_frame: bytearray | None = None
        self.bytes_needed = 0

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self.partial_frame) if self.partial_frame is not None else 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        frames = self.frames(data)
        return [decode_body(buffer[start], buffer[body:end]) for buffer, start, body, end in frames]

    def frames(self, data: bytes | bytearray | memoryview) -> Iterator[tuple[bytes, int, int, int]]:
        return split_frames(self, data, self.max_packet_size)


def frame_span(buffer: bytes, pos: int, size: int, limit: int) -> tuple[int, int] | None:
    """(body_start, frame_end) of the frame at ``pos``, or None while the length is incomplete."""
    if size - pos < 2:
        return None
    byte = buffer[pos + 1]
    if byte < 0x80:
        body, length = pos + 2, byte
    else:
        length, multiplier, index = byte & 0x7F, 128, pos + 2
        while True:
            if index - pos > 4:
                raise ProtocolError("[MQTT-2.2.3]", "remaining length uses more than four bytes")
            if index >= size:
                return None
            byte = buffer[index]
            index += 1
            length += (byte & 0x7F) * multiplier
            if byte < 0x80:
                break
            multiplier <<= 7
        body = index
    if body - pos + length > limit:
        raise PacketTooLarge(
            "[MQTT-2.2.3]", f"packet of {body - pos + length} bytes exceeds max_packet_size {limit}"
        )
    return body, body + length
