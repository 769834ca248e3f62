"""Legal-but-extreme and strictly-refused input against every variant, over real sockets.

A SUBSCRIBE with hundreds of filters and a topic a thousand levels deep each once ended the
whole server process. Now the first gets a SUBACK with a code per filter, the second a
refusal or a clean close of that one connection, and section 1.5.3's control characters,
wrong acknowledgements and MQTT 3.1 clients are handled as mosquitto handles them.
"""

from __future__ import annotations

import pytest

from mqtt.codec import encode
from mqtt.packets import SUBACK_FAILURE, Connect, Puback, Publish, Pubrec, Suback, Subscribe, Will
from tests.support.servers import ServerProcess

from .helpers import (
    Clients,
    dedicated_server,
    mosquitto,
    needs_mosquitto_clients,
    next_publish,
    publish,
    subscribe,
    unique,
)

DEEPEST_TOPIC = "/" * 65_535  # 65,536 empty levels: the deepest a topic string can be


def still_serving(clients: Clients) -> None:
    """A fresh pair still exchanges a message: the process and its loop are alive."""
    topic = unique("alive")
    subscriber = clients.raw()
    assert subscribe(subscriber, (topic, 1)) == (1,)
    publish(clients.raw(), topic, b"still here", qos=1)
    assert next_publish(subscriber).payload == b"still here"


@pytest.mark.parametrize("count", [126, 254, 300, 20_000])
def test_subscribe_with_many_filters_gets_a_code_for_each(server: ServerProcess, count: int) -> None:
    with Clients(server) as clients:
        client = clients.raw()
        filters = tuple((f"{unique('wide')}/{index}", 1) for index in range(count))
        assert subscribe(client, *filters, packet_id=65535) == (1,) * count
        still_serving(clients)


def test_a_thousand_level_filter_is_refused_and_a_thousand_level_topic_closes(server: ServerProcess) -> None:
    deep = "/".join(["a"] * 1_000)
    with Clients(server) as clients:
        watcher = clients.raw()
        will_topic = unique("will")
        assert subscribe(watcher, (will_topic, 0)) == (0,)
        client = clients.raw(will=Will(will_topic, b"too deep"))
        assert subscribe(client, (deep, 0), ("shallow", 0)) == (SUBACK_FAILURE, 0)
        client.send(Publish(deep, b"x"))
        assert client.is_closed_by_server()
        assert next_publish(watcher).payload == b"too deep"  # an abnormal close: the will fires
        will_too_deep = clients.socket()
        will_too_deep.send(Connect(unique("deep-will"), will=Will(deep, b"x")))
        assert will_too_deep.is_closed_by_server() and will_too_deep.received == []  # no CONNACK
        still_serving(clients)


@pytest.mark.parametrize("variant", ["epoll_lt", "threaded_boss_worker"])
def test_the_deepest_topic_a_packet_can_carry_is_routed_when_the_cap_allows(variant: str) -> None:
    with dedicated_server(variant, "--max-topic-levels", "65536") as server, Clients(server) as clients:
        subscriber = clients.raw()
        widest_wildcard = "/".join(["+"] * 32_767 + ["#"])  # 65,535 bytes too
        assert subscribe(subscriber, (DEEPEST_TOPIC, 1), (widest_wildcard, 1)) == (1, 1)
        publish(clients.raw(), DEEPEST_TOPIC, b"bottom", qos=1, retain=True)
        delivered = next_publish(subscriber)
        assert (delivered.topic, delivered.payload) == (DEEPEST_TOPIC, b"bottom")
        subscriber.send(Puback(delivered.packet_id))  # type: ignore[arg-type]
        late = clients.raw()
        assert subscribe(late, ("#", 0)) == (0,)
        assert next_publish(late).topic == DEEPEST_TOPIC  # the retained copy, found through the index
        still_serving(clients)


def test_1_5_3_control_character_in_topic_closes(server: ServerProcess) -> None:
    with Clients(server) as clients:
        client = clients.raw()
        client.send(b"\x30\x05\x00\x03a\x01b")
        assert client.is_closed_by_server()
        still_serving(clients)


def test_1_5_3_non_character_in_client_id_closes_without_connack(server: ServerProcess) -> None:
    with Clients(server) as clients:
        client = clients.socket()
        client.send(encode(Connect("id-\ufffe")))
        assert client.is_closed_by_server() and client.received == []


def test_4_3_2_pubrec_answering_a_qos1_delivery_closes(server: ServerProcess) -> None:
    topic = unique("wrong-ack")
    with Clients(server) as clients:
        subscriber = clients.raw()
        assert subscribe(subscriber, (topic, 1)) == (1,)
        publish(clients.raw(), topic, b"x", qos=1)
        delivery = next_publish(subscriber)
        subscriber.send(Pubrec(delivery.packet_id))  # type: ignore[arg-type]
        assert subscriber.is_closed_by_server()
        still_serving(clients)


def test_3_1_client_with_the_flags_3_1_left_undefined_is_served(server: ServerProcess) -> None:
    """An MQIsdp CONNECT with fixed-header flags and the reserved bit set; a DUP SUBSCRIBE."""
    body = b"\x00\x06MQIsdp\x03\x03\x00\x3c" + b"\x00\x05old31"
    with Clients(server) as clients:
        client = clients.socket()
        client.send(bytes((0x1A, len(body))) + body)
        topic = unique("mqtt31")
        subscribe_bytes = encode(Subscribe(4, ((topic, 0),)))
        client.send(bytes((subscribe_bytes[0] | 0x08,)) + subscribe_bytes[1:])
        client.next_packet()  # CONNACK
        assert client.expect(Suback) == Suback(4, (0,))


@needs_mosquitto_clients
def test_3_1_mosquitto_clients_speaking_mqttv31_exchange_a_retained_message(server: ServerProcess) -> None:
    topic = unique("v31")
    port = str(server.port)
    published = mosquitto("mosquitto_pub", "-V", "mqttv31", "-p", port, "-t", topic, "-m", "hello31", "-r")
    assert published.returncode == 0, published.stderr
    received = mosquitto("mosquitto_sub", "-V", "mqttv31", "-p", port, "-t", topic, "-C", "1", "-W", "10")
    assert received.returncode == 0 and received.stdout.strip() == "hello31", received.stderr
