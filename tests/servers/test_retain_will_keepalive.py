"""Retained messages, wills and keepalive, observed from outside the server.

Keepalive tests use a 1 s keepalive and measure from the client's last packet; every other
wait is a PINGREQ fence or a deadline poll.
"""

from __future__ import annotations

import time

import pytest

from mqtt.packets import Disconnect, Pingreq, Pingresp, Will
from tests.support.clients import RawClient
from tests.support.servers import ServerProcess

from .helpers import (
    Clients,
    acknowledge,
    mosquitto,
    needs_mosquitto_clients,
    next_publish,
    publish,
    publishes_before_pingresp,
    subscribe,
    unique,
)

# -- retained messages ---------------------------------------------------------------------------


def retained_for_new_subscriber(clients: Clients, topic_filter: str, qos: int = 2) -> list[tuple]:
    """(topic, payload, qos, retain) of what a new subscriber gets right after its SUBACK."""
    subscriber = clients.raw()
    assert subscribe(subscriber, (topic_filter, qos)) == (qos,)
    delivered = publishes_before_pingresp(subscriber)
    for message in delivered:
        acknowledge(subscriber, message)
    return [(m.topic, m.payload, m.qos, m.retain) for m in delivered]


def test_MQTT_3_3_1_6_retained_message_reaches_a_new_subscriber_with_retain_1(server: ServerProcess) -> None:
    topic = unique("retained")
    with Clients(server) as clients:
        publish(clients.raw(), topic, b"kept", qos=1, retain=True)
        assert retained_for_new_subscriber(clients, topic) == [(topic, b"kept", 1, True)]


def test_MQTT_3_3_1_9_live_copy_of_a_retained_publish_has_retain_0(server: ServerProcess) -> None:
    topic = unique("live")
    with Clients(server) as clients:
        subscriber = clients.raw()
        assert subscribe(subscriber, (topic, 0)) == (0,)
        publish(clients.raw(), topic, b"live", qos=1, retain=True)
        message = next_publish(subscriber)
        assert (message.payload, message.retain) == (b"live", False)


def test_MQTT_3_3_1_5_newer_retained_message_replaces_the_older(server: ServerProcess) -> None:
    topic = unique("replace")
    with Clients(server) as clients:
        publisher = clients.raw()
        publish(publisher, topic, b"old", qos=1, retain=True)
        publish(publisher, topic, b"new", qos=1, retain=True)
        assert retained_for_new_subscriber(clients, topic) == [(topic, b"new", 1, True)]


def test_MQTT_3_3_1_10_empty_retained_payload_clears_and_is_still_forwarded_live(
    server: ServerProcess,
) -> None:
    topic = unique("clear")
    with Clients(server) as clients:
        publisher, existing = clients.raw(), clients.raw()
        publish(publisher, topic, b"to be cleared", qos=1, retain=True)
        assert subscribe(existing, (topic, 0)) == (0,)
        assert next_publish(existing).retain
        publish(publisher, topic, b"", qos=1, retain=True)
        message = next_publish(existing)
        assert (message.payload, message.retain) == (b"", False)
        assert retained_for_new_subscriber(clients, topic) == []  # [MQTT-3.3.1-11]: not stored


@pytest.mark.parametrize(("published", "granted"), [(2, 0), (2, 1), (2, 2), (1, 2), (0, 2)])
def test_retained_message_is_delivered_at_the_lower_of_its_qos_and_the_granted_qos(
    server: ServerProcess, published: int, granted: int
) -> None:
    topic = unique("retained-qos")
    with Clients(server) as clients:
        publish(clients.raw(), topic, b"r", qos=published, retain=True)
        expected = [(topic, b"r", min(published, granted), True)]
        assert retained_for_new_subscriber(clients, topic, qos=granted) == expected


def test_MQTT_3_8_4_3_resubscribing_resends_the_retained_message(server: ServerProcess) -> None:
    topic = unique("resubscribe")
    with Clients(server) as clients:
        publish(clients.raw(), topic, b"again", qos=0, retain=True)
        subscriber = clients.raw()
        for packet_id in (1, 2):
            assert subscribe(subscriber, (f"{topic}/#", 0), packet_id=packet_id) == (0,)
            (message,) = publishes_before_pingresp(subscriber)
            assert (message.payload, message.retain) == (b"again", True)


@needs_mosquitto_clients
def test_mosquitto_sub_receives_what_mosquitto_pub_retained(server: ServerProcess) -> None:
    topic, port = unique("mosquitto-retained"), str(server.port)
    assert mosquitto("mosquitto_pub", "-p", port, "-t", topic, "-m", "kept", "-r", "-q", "1").returncode == 0
    received = mosquitto("mosquitto_sub", "-p", port, "-t", topic, "-C", "1", "-v", "-W", "5")
    assert (received.returncode, received.stdout) == (0, f"{topic} kept\n")


# -- wills -----------------------------------------------------------------------------------------


def will_watcher(clients: Clients, topic: str) -> RawClient:
    watcher = clients.raw()
    assert subscribe(watcher, (topic, 2)) == (2,)
    return watcher


def test_MQTT_3_1_2_8_will_is_published_when_the_socket_closes_without_disconnect(
    server: ServerProcess,
) -> None:
    topic = unique("will-socket")
    with Clients(server) as clients:
        watcher = will_watcher(clients, topic)
        clients.raw(will=Will(topic, b"gone")).close()
        message = next_publish(watcher)
        assert (message.topic, message.payload, message.retain) == (topic, b"gone", False)


def test_will_is_published_and_connection_closed_when_keepalive_expires(server: ServerProcess) -> None:
    topic = unique("will-keepalive")
    with Clients(server) as clients:
        watcher = will_watcher(clients, topic)
        last_packet_at = time.monotonic()
        silent = clients.raw(will=Will(topic, b"timed out"), keepalive=1)  # then says nothing
        message = next_publish(watcher)
        elapsed = time.monotonic() - last_packet_at
        assert message.payload == b"timed out"
        assert 1.4 <= elapsed <= 3.0, elapsed
        assert silent.is_closed_by_server(timeout=1)


def test_will_is_published_after_a_protocol_violation(server: ServerProcess) -> None:
    topic = unique("will-violation")
    with Clients(server) as clients:
        watcher = will_watcher(clients, topic)
        violator = clients.raw(will=Will(topic, b"violated"))
        violator.send(b"\xf0\x00")  # reserved packet type 15
        assert violator.is_closed_by_server()
        assert next_publish(watcher).payload == b"violated"


def test_MQTT_3_14_4_3_will_is_not_published_after_disconnect(server: ServerProcess) -> None:
    topic = unique("will-discarded")
    with Clients(server) as clients:
        watcher = will_watcher(clients, topic)
        polite = clients.raw(will=Will(topic, b"must not appear"))
        polite.send(Disconnect())
        assert polite.is_closed_by_server()
        publish(clients.raw(), topic, b"marker", qos=1)
        assert [m.payload for m in publishes_before_pingresp(watcher)] == [b"marker"]


@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_qos_and_retain_are_honoured(server: ServerProcess, will_qos: int) -> None:
    topic = unique(f"will-qos{will_qos}")
    with Clients(server) as clients:
        watcher = will_watcher(clients, topic)
        clients.raw(will=Will(topic, b"last words", will_qos, retain=True)).close()
        message = next_publish(watcher)
        assert (message.payload, message.qos, message.retain) == (b"last words", will_qos, False)
        acknowledge(watcher, message)
        assert retained_for_new_subscriber(clients, topic) == [(topic, b"last words", will_qos, True)]


# -- keepalive -----------------------------------------------------------------------------------


def test_MQTT_3_12_4_1_pingreq_gets_pingresp(server: ServerProcess) -> None:
    with Clients(server) as clients:
        raw = clients.raw()
        for _ in range(3):
            raw.send(Pingreq())
            assert raw.expect(Pingresp) == Pingresp()


def test_client_pinging_every_half_second_stays_connected_past_3_seconds(server: ServerProcess) -> None:
    topic = unique("pinging")
    with Clients(server) as clients:
        watcher = will_watcher(clients, topic)
        pinging = clients.raw(will=Will(topic, b"must not appear"), keepalive=1)
        started = time.monotonic()
        while time.monotonic() - started < 3.2:
            time.sleep(0.5)  # traffic pacing: the client's own PINGREQ schedule, not synchronisation
            pinging.send(Pingreq())
            assert pinging.expect(Pingresp) == Pingresp()
        publish(clients.raw(), topic, b"marker", qos=1)
        assert [m.payload for m in publishes_before_pingresp(watcher)] == [b"marker"]


def test_MQTT_3_1_2_24_silent_client_is_closed_after_one_and_a_half_keepalives(server: ServerProcess) -> None:
    with Clients(server) as clients:
        last_packet_at = time.monotonic()
        silent = clients.raw(keepalive=1)
        assert silent.is_closed_by_server(timeout=5)
        assert 1.2 <= time.monotonic() - last_packet_at <= 4.0
