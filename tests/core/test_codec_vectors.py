"""Byte-exact vectors for every MQTT 3.1.1 packet, written out by hand from the spec.

Each vector is checked both ways (encode and decode). Then one test per spec rule the codec
enforces: the bytes that break it must raise ``ProtocolError`` naming that rule.
"""

from __future__ import annotations

import pytest

from mqtt.codec import Decoder, encode, encode_remaining_length
from mqtt.errors import PacketTooLarge, ProtocolError, UnacceptableProtocolLevel
from mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
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

# "MQTT" protocol name, level 4: the first 7 bytes of every 3.1.1 CONNECT variable header.
MQTT_V4 = "00 04 4d 51 54 54 04"

VECTORS = [
    pytest.param(f"10 0d {MQTT_V4} 02 00 3c 00 01 63", Connect("c"), id="connect-minimal"),
    pytest.param(f"10 0c {MQTT_V4} 02 00 3c 00 00", Connect(""), id="connect-empty-client-id"),
    pytest.param(
        f"10 12 {MQTT_V4} 16 00 3c 00 01 61 00 01 74 00 00",
        Connect("a", will=Will("t", b"", qos=2)),
        id="connect-will-qos2",
    ),
    pytest.param(
        f"10 13 {MQTT_V4} 82 00 00 00 01 61 00 04 75 73 65 72",
        Connect("a", keepalive=0, username="user"),
        id="connect-username-only",
    ),
    pytest.param(
        f"10 20 {MQTT_V4} ec 00 0a 00 03 63 69 64 00 03 77 2f 74 00 03 62 79 65 00 01 75 00 02 70 77",
        Connect("cid", False, 10, "u", b"pw", Will("w/t", b"bye", qos=1, retain=True)),
        id="connect-will-retain-username-password",
    ),
    pytest.param(
        "10 0f 00 06 4d 51 49 73 64 70 03 02 00 3c 00 01 63",
        Connect("c", protocol_name="MQIsdp", protocol_level=3),
        id="connect-mqtt31-mqisdp",
    ),
    pytest.param("20 02 00 00", Connack(False, 0), id="connack-accepted"),
    pytest.param("20 02 01 00", Connack(True, 0), id="connack-session-present"),
    pytest.param("20 02 00 05", Connack(False, 5), id="connack-not-authorized"),
    pytest.param("30 07 00 03 61 2f 62 68 69", Publish("a/b", b"hi"), id="publish-qos0"),
    pytest.param("31 03 00 01 74", Publish("t", retain=True), id="publish-qos0-retain-empty"),
    pytest.param("32 06 00 01 74 00 01 78", Publish("t", b"x", qos=1, packet_id=1), id="publish-qos1"),
    pytest.param(
        "3a 08 00 03 61 2f 62 00 0a 78",
        Publish("a/b", b"x", qos=1, dup=True, packet_id=10),
        id="publish-qos1-dup",
    ),
    pytest.param(
        "35 07 00 03 61 2f 62 ff ff",
        Publish("a/b", qos=2, retain=True, packet_id=0xFFFF),
        id="publish-qos2-retain",
    ),
    pytest.param(
        "3d 05 00 01 74 12 34",
        Publish("t", qos=2, retain=True, dup=True, packet_id=0x1234),
        id="publish-qos2-dup-retain",
    ),
    pytest.param("30 04 00 02 c3 a9", Publish("é"), id="publish-utf8-topic"),
    # [MQTT-1.5.3-3]: EF BB BF is U+FEFF wherever it appears and must not be stripped.
    pytest.param("30 06 00 04 ef bb bf 61", Publish("\ufeffa"), id="publish-bom-kept"),
    pytest.param("30 cb 01 00 01 74" + " 00" * 200, Publish("t", bytes(200)), id="publish-2-byte-length"),
    pytest.param("40 02 00 01", Puback(1), id="puback"),
    pytest.param("50 02 12 34", Pubrec(0x1234), id="pubrec"),
    pytest.param("62 02 ff ff", Pubrel(0xFFFF), id="pubrel"),
    pytest.param("70 02 00 07", Pubcomp(7), id="pubcomp"),
    pytest.param(
        "82 0c 00 01 00 03 61 2f 2b 01 00 01 23 02",
        Subscribe(1, (("a/+", 1), ("#", 2))),
        id="subscribe",
    ),
    pytest.param("90 06 00 01 01 80 00 02", Suback(1, (1, 0x80, 0, 2)), id="suback"),
    pytest.param("a2 0a 00 02 00 03 61 2f 2b 00 01 23", Unsubscribe(2, ("a/+", "#")), id="unsubscribe"),
    pytest.param("b0 02 00 02", Unsuback(2), id="unsuback"),
    pytest.param("c0 00", Pingreq(), id="pingreq"),
    pytest.param("d0 00", Pingresp(), id="pingresp"),
    pytest.param("e0 00", Disconnect(), id="disconnect"),
]


@pytest.mark.parametrize(("wire", "packet"), VECTORS)
def test_encode_produces_the_spec_bytes(wire: str, packet: Packet) -> None:
    assert encode(packet) == bytes.fromhex(wire)


@pytest.mark.parametrize(("wire", "packet"), VECTORS)
def test_decode_yields_the_spec_packet(wire: str, packet: Packet) -> None:
    assert Decoder().feed(bytes.fromhex(wire)) == [packet]


REMAINING_LENGTHS = [
    (0, "00"),
    (127, "7f"),
    (128, "80 01"),
    (16_383, "ff 7f"),
    (16_384, "80 80 01"),
    (2_097_151, "ff ff 7f"),
    (2_097_152, "80 80 80 01"),
    (268_435_455, "ff ff ff 7f"),
]


@pytest.mark.parametrize(("length", "wire"), REMAINING_LENGTHS)
def test_remaining_length_encodes_to_the_spec_bytes(length: int, wire: str) -> None:
    assert encode_remaining_length(length) == bytes.fromhex(wire)


def test_remaining_length_beyond_four_bytes_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode_remaining_length(268_435_456)


@pytest.mark.parametrize(("length", "wire"), REMAINING_LENGTHS)
def test_decoder_reads_the_remaining_length_from_its_prefix(length: int, wire: str) -> None:
    # The decoder's size limit brackets the length it decoded, without sending the body:
    # one byte under the frame size is refused, the exact frame size is accepted.
    header = b"\xe0" + bytes.fromhex(wire)
    frame_size = len(header) + length
    with pytest.raises(PacketTooLarge):
        Decoder(max_packet_size=frame_size - 1).feed(header)
    decoder = Decoder(max_packet_size=frame_size)
    assert decoder.feed(header) == ([Disconnect()] if length == 0 else [])
    assert decoder.buffered == (0 if length == 0 else len(header))


@pytest.mark.parametrize("length", [127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_publish_at_a_remaining_length_boundary_round_trips(length: int) -> None:
    packet = Publish("t", b"p" * (length - 3))  # topic field 00 01 74 is 3 bytes
    wire = encode(packet)
    assert wire[1:].startswith(encode_remaining_length(length))
    assert len(wire) == 1 + len(encode_remaining_length(length)) + length
    assert Decoder().feed(wire) == [packet]


# ---------------------------------------------------------------------------------------------
# Violations: one test per rule, each feeding bytes that break only that rule.


def decode_error(wire: str, decoder: Decoder | None = None) -> ProtocolError:
    """The ProtocolError that decoding ``wire`` (hex) raises; fails the test if none is raised."""
    with pytest.raises(ProtocolError) as caught:
        (decoder or Decoder()).feed(bytes.fromhex(wire))
    return caught.value


@pytest.mark.parametrize("wire", ["00 00", "f0 00"], ids=["type-0", "type-15"])
def test_MQTT_2_2_1_reserved_packet_type_is_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-2.2.1]"


@pytest.mark.parametrize(
    "wire",
    [
        f"11 0d {MQTT_V4} 02 00 3c 00 01 63",
        "21 02 00 00",
        "41 02 00 01",
        "60 02 00 01",
        "63 02 00 01",
        "80 06 00 01 00 01 61 00",
        "a0 05 00 01 00 01 61",
        "c1 00",
        "e8 00",
    ],
    ids=[
        "connect-0x11",
        "connack-0x21",
        "puback-0x41",
        "pubrel-0x60",
        "pubrel-0x63",
        "subscribe-0x80",
        "unsubscribe-0xa0",
        "pingreq-0xc1",
        "disconnect-0xe8",
    ],
)
def test_MQTT_2_2_2_2_wrong_fixed_header_flags_are_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-2.2.2-2]"


@pytest.mark.parametrize("wire", ["30 ff ff ff ff 7f", "c0 80 80 80 80 00"], ids=["huge", "zero-in-5-bytes"])
def test_MQTT_2_2_3_remaining_length_over_four_bytes_is_rejected(wire: str) -> None:
    error = decode_error(wire)
    assert type(error) is ProtocolError  # malformed, not merely too large
    assert error.rule == "[MQTT-2.2.3]"


def test_MQTT_2_2_3_continuation_bit_on_the_fourth_length_byte_is_rejected_at_once() -> None:
    assert decode_error("30 ff ff ff ff").rule == "[MQTT-2.2.3]"


@pytest.mark.parametrize(
    "wire",
    [f"10 0e {MQTT_V4} 02 00 3c 00 01 63 ff", "40 03 00 01 00", "c0 01 00", "d0 01 00", "e0 01 00"],
    ids=["connect", "puback-3-bytes", "pingreq", "pingresp", "disconnect"],
)
def test_MQTT_2_2_3_bytes_beyond_the_last_field_are_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-2.2.3]"


@pytest.mark.parametrize(
    "wire",
    ["30 03 00 05 74", "40 01 00", "82 03 00 01 00", f"10 0b {MQTT_V4} 02 00 3c 00"],
    ids=["publish-topic-past-end", "puback-1-byte", "subscribe-cut-length", "connect-no-client-id"],
)
def test_MQTT_2_2_3_fields_running_past_the_remaining_length_are_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-2.2.3]"


def test_MQTT_2_2_3_packet_over_max_size_is_rejected_before_its_body_arrives() -> None:
    decoder = Decoder(max_packet_size=100)
    decoder.feed(b"\x30")  # the length prefix is not complete yet: nothing to judge
    with pytest.raises(PacketTooLarge) as caught:
        decoder.feed(b"\x63")  # remaining length 99: a 101-byte frame
    assert caught.value.rule == "[MQTT-2.2.3]"


def test_packet_of_exactly_max_size_is_accepted() -> None:
    packet = Publish("t", bytes(95))  # 2 + 3 + 95 = 100 bytes on the wire
    assert Decoder(max_packet_size=100).feed(encode(packet)) == [packet]


@pytest.mark.parametrize(
    "wire",
    [
        "30 03 00 01 ff",
        "30 04 00 02 c0 af",
        "30 05 00 03 ed a0 80",
        "30 05 00 03 ed bf bf",
        "30 04 00 02 c3 28",
        f"10 0e {MQTT_V4} 02 00 3c 00 02 c0 80",
        "82 06 00 01 00 01 80 00",
    ],
    ids=[
        "invalid-byte",
        "overlong",
        "surrogate-d800",
        "surrogate-dfff",
        "bad-continuation",
        "overlong-nul-client-id",
        "lone-continuation-filter",
    ],
)
def test_MQTT_1_5_3_1_ill_formed_utf8_is_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-1.5.3-1]"


@pytest.mark.parametrize(
    "wire",
    ["30 05 00 03 61 00 62", f"10 0e {MQTT_V4} 02 00 3c 00 02 61 00", "a2 05 00 01 00 01 00"],
    ids=["topic", "client-id", "unsubscribe-filter"],
)
def test_MQTT_1_5_3_2_null_character_in_a_string_is_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-1.5.3-2]"


@pytest.mark.parametrize(
    "wire",
    [
        "32 05 00 01 74 00 00",
        "34 05 00 01 74 00 00",
        "40 02 00 00",
        "50 02 00 00",
        "62 02 00 00",
        "70 02 00 00",
        "82 06 00 00 00 01 61 00",
        "90 03 00 00 00",
        "a2 05 00 00 00 01 61",
        "b0 02 00 00",
    ],
    ids=[
        "publish-qos1",
        "publish-qos2",
        "puback",
        "pubrec",
        "pubrel",
        "pubcomp",
        "subscribe",
        "suback",
        "unsubscribe",
        "unsuback",
    ],
)
def test_MQTT_2_3_1_1_packet_id_zero_is_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-2.3.1-1]"


def test_MQTT_3_3_1_4_publish_with_qos_3_is_rejected() -> None:
    assert decode_error("36 05 00 01 74 00 01").rule == "[MQTT-3.3.1-4]"


def test_MQTT_3_3_1_2_dup_on_a_qos0_publish_is_rejected() -> None:
    assert decode_error("38 03 00 01 74").rule == "[MQTT-3.3.1-2]"


@pytest.mark.parametrize(
    "wire",
    [
        "30 05 00 03 61 2f 2b",
        "30 03 00 01 23",
        "30 05 00 03 61 23 62",
        f"10 12 {MQTT_V4} 06 00 3c 00 01 61 00 01 2b 00 00",
    ],
    ids=["plus", "hash", "hash-inside-level", "will-topic"],
)
def test_MQTT_3_3_2_2_publish_topic_with_wildcard_is_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-3.3.2-2]"


@pytest.mark.parametrize(
    "wire",
    ["30 02 00 00", "82 05 00 01 00 00 00", "a2 04 00 01 00 00"],
    ids=["publish-topic", "subscribe-filter", "unsubscribe-filter"],
)
def test_MQTT_4_7_3_1_empty_topic_or_filter_is_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-4.7.3-1]"


@pytest.mark.parametrize(
    "wire",
    [
        "82 0a 00 01 00 05 61 2f 23 2f 62 00",
        "82 07 00 01 00 02 23 61 00",
        "82 09 00 01 00 04 61 2f 62 23 00",
        "a2 07 00 01 00 03 23 2f 61",
    ],
    ids=["a/#/b", "#a", "a/b#", "unsubscribe-#/a"],
)
def test_MQTT_4_7_1_2_multi_level_wildcard_not_alone_and_last_is_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-4.7.1-2]"


@pytest.mark.parametrize(
    "wire",
    ["82 07 00 01 00 02 61 2b 00", "82 09 00 01 00 04 2b 2b 2f 61 00", "a2 06 00 01 00 02 2b 61"],
    ids=["a+", "++/a", "unsubscribe-+a"],
)
def test_MQTT_4_7_1_3_single_level_wildcard_not_a_whole_level_is_rejected(wire: str) -> None:
    assert decode_error(wire).rule == "[MQTT-4.7.1-3]"


def test_MQTT_3_8_3_3_subscribe_without_filters_is_rejected() -> None:
    assert decode_error("82 02 00 01").rule == "[MQTT-3.8.3-3]"


@pytest.mark.parametrize("qos_byte", ["03", "81", "04", "ff"])
def test_MQTT_3_8_3_4_subscribe_with_malformed_requested_qos_is_rejected(qos_byte: str) -> None:
    assert decode_error(f"82 06 00 01 00 01 61 {qos_byte}").rule == "[MQTT-3.8.3-4]"


def test_MQTT_3_10_3_2_unsubscribe_without_filters_is_rejected() -> None:
    assert decode_error("a2 02 00 01").rule == "[MQTT-3.10.3-2]"


@pytest.mark.parametrize("return_code", ["03", "7f", "81"])
def test_MQTT_3_9_3_2_suback_with_reserved_return_code_is_rejected(return_code: str) -> None:
    assert decode_error(f"90 03 00 01 {return_code}").rule == "[MQTT-3.9.3-2]"


def test_suback_without_return_codes_is_rejected() -> None:
    assert decode_error("90 02 00 01").rule == "[MQTT-3.9.3-2]"


@pytest.mark.parametrize(
    "wire", ["20 02 02 00", "20 02 80 00", "20 02 00 06"], ids=["flag-bit-1", "flag-bit-7", "return-code-6"]
)
def test_connack_with_reserved_flag_bits_or_return_code_is_rejected(wire: str) -> None:
    # MQTT 3.1.1 numbers no rule for either case; the codec cites section [MQTT-3.2.2].
    decode_error(wire)


def test_MQTT_3_1_2_1_connect_with_unknown_protocol_name_is_rejected() -> None:
    error = decode_error("10 0d 00 04 48 54 54 50 04 02 00 3c 00 01 63")  # "HTTP"
    assert type(error) is ProtocolError
    assert error.rule == "[MQTT-3.1.2-1]"


@pytest.mark.parametrize(
    "wire",
    [
        "10 0d 00 04 4d 51 54 54 05 02 00 3c 00 01 63",
        "10 0d 00 04 4d 51 54 54 03 02 00 3c 00 01 63",
        "10 0f 00 06 4d 51 49 73 64 70 04 02 00 3c 00 01 63",
    ],
    ids=["MQTT-level-5", "MQTT-level-3", "MQIsdp-level-4"],
)
def test_MQTT_3_1_2_2_connect_with_unsupported_level_is_unacceptable(wire: str) -> None:
    error = decode_error(wire)
    assert isinstance(error, UnacceptableProtocolLevel)
    assert error.rule == "[MQTT-3.1.2-2]"


def test_MQTT_3_1_2_3_connect_with_reserved_flag_set_is_rejected() -> None:
    assert decode_error(f"10 0d {MQTT_V4} 03 00 3c 00 01 63").rule == "[MQTT-3.1.2-3]"


@pytest.mark.parametrize("flags", ["0a", "12", "22", "3a"], ids=["qos1", "qos2", "retain", "qos1-retain"])
def test_MQTT_3_1_2_11_will_qos_or_retain_without_will_flag_is_rejected(flags: str) -> None:
    assert decode_error(f"10 0d {MQTT_V4} {flags} 00 3c 00 01 63").rule == "[MQTT-3.1.2-11]"


def test_MQTT_3_1_2_14_will_qos_3_is_rejected() -> None:
    wire = f"10 12 {MQTT_V4} 1e 00 3c 00 01 63 00 01 74 00 00"
    assert decode_error(wire).rule == "[MQTT-3.1.2-14]"


def test_MQTT_3_1_2_22_password_without_username_is_rejected() -> None:
    wire = f"10 11 {MQTT_V4} 42 00 3c 00 01 63 00 02 70 77"
    assert decode_error(wire).rule == "[MQTT-3.1.2-22]"
