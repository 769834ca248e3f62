"""CONNECT rules and topic-filter matching, checked end to end over real sockets on every variant.

Raw clients send exact bytes and see exactly what the server answers before it closes; a
PINGREQ/PINGRESP round trip fences "nothing else was delivered" without sleeping.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from mqtt.packets import (
    Connack,
    Connect,
    Packet,
    Pingreq,
    Pingresp,
    Publish,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from tests.support.servers import ServerProcess

from .helpers import (
    Clients,
    connect_bytes,
    needs_mosquitto_clients,
    next_publish,
    packets_before_pingresp,
    publish,
    publishes_before_pingresp,
    subscribe,
    unique,
)

# -- CONNECT ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first_packet",
    [Publish("t", b"x"), Subscribe(1, (("t", 0),)), Pingreq()],
    ids=["publish", "subscribe", "pingreq"],
)
def test_MQTT_3_1_0_1_first_packet_other_than_connect_closes_the_connection(
    server: ServerProcess, first_packet: Packet
) -> None:
    with Clients(server) as clients:
        raw = clients.socket()
        raw.send(first_packet)
        assert raw.is_closed_by_server()
        assert raw.received == []


def test_MQTT_3_1_0_2_second_connect_closes_the_connection(server: ServerProcess) -> None:
    with Clients(server) as clients:
        raw = clients.raw()
        raw.send(Connect(unique("again")))
        assert raw.is_closed_by_server()
        assert raw.received == []


def test_MQTT_3_1_2_2_protocol_level_5_gets_connack_0x01_then_close(server: ServerProcess) -> None:
    with Clients(server) as clients:
        raw = clients.socket()
        raw.send(Connect(unique("v5"), protocol_name="MQTT", protocol_level=5))
        assert raw.is_closed_by_server()
        assert raw.received == [Connack(session_present=False, return_code=1)]


def test_MQTT_3_1_2_1_wrong_protocol_name_closes_without_connack(server: ServerProcess) -> None:
    with Clients(server) as clients:
        raw = clients.socket()
        raw.send(Connect(unique("name"), protocol_name="MQTX", protocol_level=4))
        assert raw.is_closed_by_server()
        assert raw.received == []


def test_mqisdp_level_3_client_is_accepted_and_served(server: ServerProcess) -> None:
    topic = unique("mqisdp")
    with Clients(server) as clients:
        raw = clients.raw(protocol_name="MQIsdp", protocol_level=3)
        assert subscribe(raw, (topic, 1)) == (1,)
        publish(clients.raw(), topic, b"3.1", qos=1)
        message = next_publish(raw)
        assert (message.topic, message.payload, message.qos) == (topic, b"3.1", 1)


def test_MQTT_3_1_3_6_empty_client_id_with_clean_session_is_assigned_one(server: ServerProcess) -> None:
    topic = unique("anonymous")
    with Clients(server) as clients:
        raw = clients.socket()
        raw.send(Connect("", clean_session=True))
        assert raw.expect(Connack) == Connack(session_present=False, return_code=0)
        assert subscribe(raw, (topic, 0)) == (0,)
        publish(raw, topic, b"hello")
        assert next_publish(raw).payload == b"hello"


def test_MQTT_3_1_3_8_empty_client_id_without_clean_session_gets_connack_0x02_then_close(
    server: ServerProcess,
) -> None:
    with Clients(server) as clients:
        raw = clients.socket()
        raw.send(Connect("", clean_session=False))
        assert raw.is_closed_by_server()
        assert raw.received == [Connack(session_present=False, return_code=2)]


def test_mqisdp_level_3_client_with_empty_client_id_gets_connack_0x02(server: ServerProcess) -> None:
    with Clients(server) as clients:
        raw = clients.socket()
        raw.send(Connect("", clean_session=True, protocol_name="MQIsdp", protocol_level=3))
        assert raw.is_closed_by_server()
        assert raw.received == [Connack(session_present=False, return_code=2)]  # 3.1 needs an id


def test_MQTT_3_1_4_2_second_connection_with_same_client_id_closes_the_first(server: ServerProcess) -> None:
    client_id = unique("takeover")
    with Clients(server) as clients:
        first = clients.raw(client_id)
        second = clients.raw(client_id)
        assert first.is_closed_by_server()
        second.send(Pingreq())
        assert second.expect(Pingresp) == Pingresp()


def test_MQTT_3_1_4_2_takeover_of_a_persistent_session_keeps_it(server: ServerProcess) -> None:
    client_id, topic = unique("takeover"), unique("takeover")
    with Clients(server) as clients:
        first = clients.raw(client_id, clean_session=False)
        assert subscribe(first, (topic, 1)) == (1,)
        second = clients.raw(client_id, clean_session=False, session_present=True)
        assert first.is_closed_by_server()
        publish(clients.raw(), topic, b"to the new connection", qos=1)
        assert next_publish(second).payload == b"to the new connection"


def test_MQTT_3_2_2_1_clean_session_gets_session_present_0(server: ServerProcess) -> None:
    with Clients(server) as clients:
        clients.raw(unique("clean"), clean_session=True, session_present=False)


def test_MQTT_3_2_2_2_resumed_persistent_session_gets_session_present_1(server: ServerProcess) -> None:
    client_id = unique("persistent")
    with Clients(server) as clients:
        clients.raw(client_id, clean_session=False, session_present=False).close()
        clients.raw(client_id, clean_session=False, session_present=True)


def test_MQTT_3_1_2_6_clean_connect_discards_a_stored_session(server: ServerProcess) -> None:
    client_id = unique("discard")
    with Clients(server) as clients:
        clients.raw(client_id, clean_session=False, session_present=False).close()
        clean = clients.raw(client_id, clean_session=True, session_present=False)
        clean.send(b"\xe0\x00")  # DISCONNECT: the clean session ends with the connection
        assert clean.is_closed_by_server()
        clients.raw(client_id, clean_session=False, session_present=False)


@pytest.mark.parametrize(
    ("flags", "payload"),
    [
        pytest.param(0x03, b"\x00\x01c", id="MQTT-3.1.2-3-reserved-flag"),
        pytest.param(0x42, b"\x00\x01c\x00\x02pw", id="MQTT-3.1.2-22-password-without-username"),
        pytest.param(0x12, b"\x00\x01c", id="MQTT-3.1.2-11-will-qos-without-will"),
        pytest.param(0x22, b"\x00\x01c", id="MQTT-3.1.2-11-will-retain-without-will"),
        pytest.param(0x1E, b"\x00\x01c\x00\x01w\x00\x00", id="MQTT-3.1.2-14-will-qos-3"),
        pytest.param(0x06, b"\x00\x01c\x00\x03w/+\x00\x00", id="MQTT-3.3.2-2-will-topic-wildcard"),
    ],
)
def test_MQTT_3_1_2_bad_connect_flags_close_the_connection(
    server: ServerProcess, flags: int, payload: bytes
) -> None:
    with Clients(server) as clients:
        raw = clients.socket()
        raw.send(connect_bytes(flags, payload))
        assert raw.is_closed_by_server()
        assert raw.received == []


# -- topic filters ----------------------------------------------------------------------------


def delivered_topics(server: ServerProcess, topic_filter: str, topics: list[str]) -> list[str]:
    """Topics a fresh subscriber to ``topic_filter`` receives when ``topics`` are published."""
    with Clients(server) as clients:
        subscriber = clients.raw()
        assert subscribe(subscriber, (topic_filter, 0)) == (0,)
        publisher = clients.raw()
        for packet_id, topic in enumerate(topics, start=1):
            publish(publisher, topic, b"m", qos=1, packet_id=packet_id)  # PUBACK: routed
        return [message.topic for message in publishes_before_pingresp(subscriber)]


def test_MQTT_4_7_1_3_plus_matches_exactly_one_level(server: ServerProcess) -> None:
    base = unique("plus")
    published = [f"{base}/a/x", f"{base}/a/b/x", f"{base}/x", f"{base}/b/x", f"{base}//x"]
    assert delivered_topics(server, f"{base}/+/x", published) == [f"{base}/a/x", f"{base}/b/x", f"{base}//x"]


def test_MQTT_4_7_1_2_hash_matches_the_parent_and_every_descendant(server: ServerProcess) -> None:
    base = unique("hash")
    published = [base, f"{base}/a", f"{base}/a/b/c", f"{base}x/a", f"other/{base}"]
    assert delivered_topics(server, f"{base}/#", published) == [base, f"{base}/a", f"{base}/a/b/c"]


def test_MQTT_4_7_2_1_wildcards_at_the_first_level_do_not_match_dollar_topics(server: ServerProcess) -> None:
    name = unique("dollar")
    published = [f"$lab/{name}", f"lab/{name}"]
    everything = delivered_topics(server, "#", published)
    assert f"lab/{name}" in everything
    assert [topic for topic in everything if topic.startswith("$")] == []  # not even $SYS
    assert delivered_topics(server, f"+/{name}", published) == [f"lab/{name}"]
    assert delivered_topics(server, "$lab/#", published) == [f"$lab/{name}"]
    assert delivered_topics(server, "$lab/+", published) == [f"$lab/{name}"]


def test_sys_hash_matches_broker_statistics(server: ServerProcess) -> None:
    with Clients(server) as clients:
        subscriber = clients.raw()
        assert subscribe(subscriber, ("$SYS/#", 0)) == (0,)
        # $SYS values are retained: the subscriber gets the latest set at once.
        message = next_publish(subscriber)
        assert message.topic.startswith("$SYS/broker/")
        assert message.retain


def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(server: ServerProcess) -> None:
    base = unique("overlap")
    with Clients(server) as clients:
        subscriber = clients.raw()
        assert subscribe(subscriber, (f"{base}/#", 0), (f"{base}/b", 1)) == (0, 1)
        publish(clients.raw(), f"{base}/b", b"once", qos=1)
        packets = packets_before_pingresp(subscriber)
        assert len(packets) == 1, packets
        message = packets[0]
        assert isinstance(message, Publish)
        assert (message.topic, message.payload, message.qos) == (f"{base}/b", b"once", 1)


@pytest.mark.parametrize("topic_filter", ["a/#/b", "a+", "", "#/a", "a/b#", "+a/b"])
def test_MQTT_4_7_1_malformed_filter_closes_the_connection(server: ServerProcess, topic_filter: str) -> None:
    with Clients(server) as clients:
        raw = clients.raw()
        raw.send(Subscribe(1, ((topic_filter, 0),)))
        assert raw.is_closed_by_server()
        assert raw.received == []


def test_MQTT_3_8_4_3_resubscribing_replaces_the_granted_qos(server: ServerProcess) -> None:
    topic = unique("resubscribe")
    with Clients(server) as clients:
        subscriber = clients.raw()
        assert subscribe(subscriber, (topic, 0), packet_id=1) == (0,)
        assert subscribe(subscriber, (topic, 1), packet_id=2) == (1,)
        publish(clients.raw(), topic, b"upgraded", qos=1)
        delivered = publishes_before_pingresp(subscriber)
        assert [(message.payload, message.qos) for message in delivered] == [(b"upgraded", 1)]


def test_MQTT_3_10_4_4_unsubscribe_stops_delivery_and_is_acknowledged(server: ServerProcess) -> None:
    topic = unique("unsubscribe")
    with Clients(server) as clients:
        subscriber, publisher = clients.raw(), clients.raw()
        assert subscribe(subscriber, (topic, 0)) == (0,)
        publish(publisher, topic, b"before", qos=1)
        assert next_publish(subscriber).payload == b"before"
        subscriber.send(Unsubscribe(7, (topic,)))
        assert subscriber.expect(Unsuback) == Unsuback(7)
        publish(publisher, topic, b"after", qos=1)
        assert packets_before_pingresp(subscriber) == []


def test_MQTT_3_10_4_5_unsuback_arrives_for_a_filter_never_subscribed(server: ServerProcess) -> None:
    with Clients(server) as clients:
        raw = clients.raw()
        raw.send(Unsubscribe(9, (unique("never"), "never/+/#")))
        assert raw.expect(Unsuback) == Unsuback(9)


def test_MQTT_3_9_3_1_suback_lists_the_granted_qos_of_each_filter_in_order(server: ServerProcess) -> None:
    base = unique("suback")
    with Clients(server) as clients:
        raw = clients.raw()
        codes = subscribe(raw, (f"{base}/2", 2), (f"{base}/0", 0), (f"{base}/1", 1), packet_id=0x1234)
        assert codes == (2, 0, 1)


@needs_mosquitto_clients
def test_mosquitto_sub_shows_sys_clients_connected(server: ServerProcess) -> None:
    command = ["mosquitto_sub", "-p", str(server.port), "-v", "-t", "$SYS/#", "-W", "5", "-i", unique("sys")]
    subscriber = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert subscriber.stdout is not None
        # Retained values arrive at once; a later interval counts mosquitto_sub itself.
        for line in subscriber.stdout:
            match = re.fullmatch(r"\$SYS/broker/clients/connected (\d+)\n", line)
            if match and int(match.group(1)) >= 1:
                break
        else:
            pytest.fail("mosquitto_sub exited without a $SYS/broker/clients/connected >= 1 line")
    finally:
        subscriber.kill()
        subscriber.wait()
