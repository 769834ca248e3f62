"""Strict MQTT 3.1.1 where the spec lets a receiver choose, choosing as mosquitto does.

These rules carry no ``[MQTT-x.y.z-n]`` number of their own, so each test is named after its
spec section and the behaviour: section 1.5.3 (control and non-characters in strings), 4.3.2
and 4.3.3 (an acknowledgement of the wrong kind), and MQTT 3.1's looser fixed headers.
"""

from __future__ import annotations

import pytest

from mqtt.codec import encode, encode_publish
from mqtt.connection import Connection
from mqtt.packets import (
    Connack,
    Connect,
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
from tests.core.test_broker import connected, make_broker, take_output

DISALLOWED = ["\x01", "\x1f", "\x7f", "\x85", "\x9f"]  # control characters
DISALLOWED += ["\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe", "\U0010ffff"]  # non-characters
ALLOWED_NEIGHBOURS = ["\x20", "\x7e", "\xa0", "\ufdcf", "\ufdf0", "\ufffd", "\U00010000", "\U0010fffd"]


def string_field(where: str, text: str) -> tuple[bytes, bytes]:
    """(CONNECT, packet after it) carrying ``text`` in the named string field."""
    client_id = text if where == "client id" else "strict"
    username = text if where == "username" else None
    will = Will(f"w/{text}", b"") if where == "will topic" else None
    connect = encode(Connect(client_id, username=username, will=will))
    after = {
        "topic name": encode_publish(f"t/{text}".encode(), b"x", 0, False, False, None),
        "subscribe filter": encode(Subscribe(1, ((f"t/{text}", 0),))),
        "unsubscribe filter": encode(Unsubscribe(1, (f"t/{text}",))),
    }.get(where, b"")
    return connect, after


IN_CONNECT = ["client id", "username", "will topic"]
AFTER_CONNECT = ["topic name", "subscribe filter", "unsubscribe filter"]


@pytest.mark.parametrize("where", IN_CONNECT)
@pytest.mark.parametrize("character", DISALLOWED, ids=lambda c: f"U+{ord(c):04X}")
def test_1_5_3_disallowed_character_in_connect_closes_without_connack(where: str, character: str) -> None:
    broker, _ = make_broker()
    client = broker.open("strict")
    client.receive(string_field(where, character)[0])
    assert client.wants_close and "[MQTT-1.5.3]" in client.close_reason
    assert f"U+{ord(character):04X}" in client.close_reason
    assert take_output(client) == []


@pytest.mark.parametrize("where", AFTER_CONNECT)
@pytest.mark.parametrize("character", DISALLOWED, ids=lambda c: f"U+{ord(c):04X}")
def test_1_5_3_disallowed_character_in_topic_or_filter_closes(where: str, character: str) -> None:
    broker, _ = make_broker()
    client = broker.open("strict")
    connect, after = string_field(where, character)
    client.receive(connect)
    assert take_output(client) == [Connack(False, 0)]
    client.receive(after)
    assert client.wants_close and "[MQTT-1.5.3]" in client.close_reason
    assert take_output(client) == []


@pytest.mark.parametrize("where", IN_CONNECT + AFTER_CONNECT)
@pytest.mark.parametrize("character", ALLOWED_NEIGHBOURS, ids=lambda c: f"U+{ord(c):04X}")
def test_1_5_3_characters_next_to_the_disallowed_ranges_are_accepted(where: str, character: str) -> None:
    broker, _ = make_broker()
    client = broker.open("strict")
    connect, after = string_field(where, character)
    client.receive(connect + after)
    assert not client.wants_close
    assert take_output(client)[0] == Connack(False, 0)


# -- 4.3.2 / 4.3.3: acknowledgements of the wrong kind ---------------------------------------


def delivery_in_flight(qos: int) -> tuple[Connection, int]:
    """A subscriber holding one outbound delivery of ``qos``, and that delivery's packet id."""
    broker, _ = make_broker()
    subscriber = connected(broker, "sub")
    subscriber.receive(encode(Subscribe(1, (("acks", 2),))))
    take_output(subscriber)
    connected(broker, "pub").receive(encode(Publish("acks", b"x", qos, packet_id=9)))
    (delivery,) = take_output(subscriber)
    assert isinstance(delivery, Publish) and delivery.qos == qos and delivery.packet_id
    return subscriber, delivery.packet_id


@pytest.mark.parametrize("wrong_ack", [Pubrec, Pubcomp])
def test_4_3_2_pubrec_or_pubcomp_answering_a_qos1_delivery_closes(wrong_ack: type) -> None:
    subscriber, packet_id = delivery_in_flight(qos=1)
    subscriber.receive(encode(wrong_ack(packet_id)))
    assert subscriber.wants_close and "QoS 1 delivery" in subscriber.close_reason


@pytest.mark.parametrize("wrong_ack", [Puback, Pubcomp])
def test_4_3_3_puback_or_pubcomp_while_pubrec_is_awaited_closes(wrong_ack: type) -> None:
    subscriber, packet_id = delivery_in_flight(qos=2)
    subscriber.receive(encode(wrong_ack(packet_id)))
    assert subscriber.wants_close and "[MQTT-4.3.3]" in subscriber.close_reason


def test_4_3_3_puback_while_pubcomp_is_due_closes() -> None:
    subscriber, packet_id = delivery_in_flight(qos=2)
    subscriber.receive(encode(Pubrec(packet_id)))
    assert take_output(subscriber) == [Pubrel(packet_id)]
    subscriber.receive(encode(Puback(packet_id)))
    assert subscriber.wants_close and "a QoS 2 delivery" in subscriber.close_reason


def test_4_3_3_a_repeated_pubrec_is_answered_with_pubrel_again_as_mosquitto_does() -> None:
    subscriber, packet_id = delivery_in_flight(qos=2)
    subscriber.receive(encode(Pubrec(packet_id)) * 2)
    assert take_output(subscriber) == [Pubrel(packet_id), Pubrel(packet_id)]
    subscriber.receive(encode(Pubcomp(packet_id)))
    assert not subscriber.wants_close and subscriber.session.inflight == {}  # type: ignore[union-attr]


def test_4_3_acks_for_a_packet_id_with_nothing_in_flight_are_ignored() -> None:
    subscriber, packet_id = delivery_in_flight(qos=1)
    unknown = packet_id + 1
    subscriber.receive(encode(Puback(unknown)) + encode(Pubcomp(unknown)) + encode(Pubrec(unknown)))
    assert not subscriber.wants_close
    assert take_output(subscriber) == [Pubrel(unknown)]  # PUBREC still gets its PUBREL, as in mosquitto
    assert list(subscriber.session.inflight) == [packet_id]  # type: ignore[union-attr]


# -- MQTT 3.1 ("MQIsdp", level 3): what 3.1 left undefined is accepted, 3.1.1 stays strict ----


def connect_bytes(protocol: str, first_byte: int, connect_flags: int) -> bytes:
    level = 3 if protocol == "MQIsdp" else 4
    body = len(protocol).to_bytes(2, "big") + protocol.encode() + bytes((level, connect_flags))
    body += b"\x00\x3c" + b"\x00\x03old"
    return bytes((first_byte, len(body))) + body


@pytest.mark.parametrize(("first_byte", "connect_flags"), [(0x1F, 0x02), (0x10, 0x03), (0x12, 0x03)])
def test_3_1_connect_flags_that_3_1_left_undefined_are_accepted_from_mqisdp(
    first_byte: int, connect_flags: int
) -> None:
    broker, _ = make_broker()
    client = broker.open("old")
    client.receive(connect_bytes("MQIsdp", first_byte, connect_flags))
    assert take_output(client) == [Connack(False, 0)] and not client.wants_close


@pytest.mark.parametrize(
    ("first_byte", "connect_flags", "rule"), [(0x1F, 0x02, "[MQTT-2.2.2-2]"), (0x10, 0x03, "[MQTT-3.1.2-3]")]
)
def test_3_1_1_keeps_connect_flags_strict(first_byte: int, connect_flags: int, rule: str) -> None:
    broker, _ = make_broker()
    client = broker.open("new")
    client.receive(connect_bytes("MQTT", first_byte, connect_flags))
    assert client.wants_close and rule in client.close_reason
    assert take_output(client) == []


def with_dup(packet: bytes) -> bytes:
    return bytes((packet[0] | 0x08,)) + packet[1:]


def test_3_1_dup_on_a_retried_subscribe_unsubscribe_and_pubrel_is_accepted() -> None:
    broker, _ = make_broker()
    client = broker.open("old")
    client.receive(connect_bytes("MQIsdp", 0x10, 0x02))
    retried = [encode(Subscribe(1, (("a", 1),))), encode(Unsubscribe(2, ("a",))), encode(Pubrel(3))]
    client.receive(b"".join(with_dup(packet) for packet in retried))
    assert take_output(client) == [Connack(False, 0), Suback(1, (1,)), Unsuback(2), Pubcomp(3)]
    assert not client.wants_close


@pytest.mark.parametrize("packet", [Subscribe(1, (("a", 1),)), Unsubscribe(2, ("a",)), Pubrel(3)])
def test_3_1_1_dup_on_subscribe_unsubscribe_or_pubrel_closes(packet: object) -> None:
    broker, _ = make_broker()
    client = connected(broker, "new")
    client.receive(with_dup(encode(packet)))  # type: ignore[arg-type]
    assert client.wants_close and "[MQTT-2.2.2-2]" in client.close_reason
