"""Which first bytes a packet may start with: the type nibble and the flags each type must carry.

Spec 2.2: types 0 and 15 are reserved, and every type but PUBLISH has a fixed flag nibble
([MQTT-2.2.2-1/2]); a PUBLISH's flags are DUP, QoS and RETAIN, with QoS 3 and DUP on QoS 0
forbidden. The rules become 256-entry tables, so the framing loop judges a first byte with
one index. MQTT 3.1 left some of them undefined, so a connection's table follows the
protocol level its CONNECT named.
"""

from __future__ import annotations

from .errors import ProtocolError
from .packets import PacketType

MQTT_3_1 = 3  # protocol level of "MQIsdp" clients

# Fixed-header flag nibble each type must carry (spec 2.2.2, [MQTT-2.2.2-1/2]); PUBLISH varies.
_REQUIRED_FLAGS: list[int | None] = [0] * 16  # indexed by packet type; types 0 and 15 are reserved
_REQUIRED_FLAGS[PacketType.PUBLISH] = None  # DUP, QoS and RETAIN: checked by check_publish_flags
for _packet_type in (PacketType.PUBREL, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE):
    _REQUIRED_FLAGS[_packet_type] = 2


def check_publish_flags(qos: int, dup: bool) -> None:
    if qos == 3:
        raise ProtocolError("[MQTT-3.3.1-4]", "PUBLISH must not have both QoS bits set")
    if dup and not qos:
        raise ProtocolError("[MQTT-3.3.1-2]", "DUP must be 0 for a QoS 0 PUBLISH")


def check_fixed_header(first: int) -> int:
    """Return the packet type of a first byte, rejecting type 0/15 and wrong or invalid flags."""
    packet_type = first >> 4
    if packet_type == 0 or packet_type == 15:
        raise ProtocolError("[MQTT-2.2.1]", f"reserved control packet type {packet_type}")
    if packet_type == PacketType.PUBLISH:
        check_publish_flags((first >> 1) & 0x03, bool(first & 0x08))
        return packet_type
    required = _REQUIRED_FLAGS[packet_type]
    if first & 0x0F != required:
        raise ProtocolError(
            "[MQTT-2.2.2-2]",
            f"{PacketType(packet_type).name} flags must be {required:#x}, got {first & 0x0F:#x}",
        )
    return packet_type


def _is_valid_first_byte(first: int) -> bool:
    try:
        check_fixed_header(first)
    except ProtocolError:
        return False
    return True


# 256-entry lookups: the framing loop accepts a first byte with one index, not a call, so
# whoever consumes Decoder.frames() gets only frames whose first byte is valid.
STRICT_FIRST_BYTES = bytes(_is_valid_first_byte(first) for first in range(256))  # MQTT 3.1.1
# Before CONNECT the level is unknown: let any CONNECT flags through to the codec's CONNECT
# decoder, which refuses them for 3.1.1 once it has read the level.
AWAITING_CONNECT_FIRST_BYTES = bytes(
    valid or first >> 4 == PacketType.CONNECT for first, valid in enumerate(STRICT_FIRST_BYTES)
)
# MQTT 3.1 allowed DUP (0x08) on a retried SUBSCRIBE, UNSUBSCRIBE and PUBREL.
MQTT_3_1_FIRST_BYTES = bytes(
    valid or first in (0x6A, 0x8A, 0xAA) for first, valid in enumerate(AWAITING_CONNECT_FIRST_BYTES)
)


def first_bytes_for(protocol_level: int) -> bytes:
    """The first-byte table for a connection that connected with ``protocol_level``."""
    return MQTT_3_1_FIRST_BYTES if protocol_level == MQTT_3_1 else STRICT_FIRST_BYTES
