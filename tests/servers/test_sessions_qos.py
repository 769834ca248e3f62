"""QoS 1 and 2 flows in both directions, the in-flight window, and persistent sessions.

A raw client sees every PUBACK/PUBREC/PUBREL/PUBCOMP, packet id and DUP flag; paho and the
mosquitto command-line clients check that independent implementations agree with the server.
"""

from __future__ import annotations

import pytest

from mqtt.packets import Disconnect, Puback, Pubcomp, Publish, Pubrec, Pubrel
from tests.support.clients import RawClient
from tests.support.servers import ServerProcess

from .helpers import (
    Clients,
    acknowledge,
    dedicated_server,
    mosquitto,
    needs_mosquitto_clients,
    next_publish,
    packets_before_pingresp,
    publish,
    publishes_before_pingresp,
    subscribe,
    sys_value,
    unique,
)


def disconnect(raw: RawClient) -> None:
    """DISCONNECT, then wait until the server has closed: the session is detached from now on."""
    raw.send(Disconnect())
    assert raw.is_closed_by_server()


# -- QoS flows -----------------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_publish_reaches_paho_subscriber_at_each_qos(server: ServerProcess, qos: int) -> None:
    topic = unique(f"paho-qos{qos}")
    with Clients(server) as clients:
        subscriber = clients.paho()
        subscriber.subscribe(topic, qos=2)
        clients.paho().publish(topic, b"payload", qos=qos)
        message = subscriber.next_message()
        assert (message.topic, message.payload, message.qos) == (topic, b"payload", qos)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_raw_publish_completes_the_acknowledgement_flow_of_its_qos(server: ServerProcess, qos: int) -> None:
    topic = unique(f"raw-qos{qos}")
    with Clients(server) as clients:
        subscriber, publisher = clients.raw(), clients.raw()
        assert subscribe(subscriber, (topic, 2)) == (2,)
        publish(publisher, topic, b"payload", qos=qos, packet_id=0x0102)  # checks PUBACK/PUBREC/PUBCOMP ids
        assert packets_before_pingresp(publisher) == []  # nothing more owed to the publisher
        message = next_publish(subscriber)
        assert (message.topic, message.payload, message.qos, message.dup) == (topic, b"payload", qos, False)


def test_MQTT_3_8_4_6_delivery_qos_is_the_minimum_of_published_and_granted(server: ServerProcess) -> None:
    base = unique("min-qos")
    with Clients(server) as clients:
        subscriber, publisher = clients.raw(), clients.raw()
        filters = [(f"{base}/g{granted}/#", granted) for granted in range(3)]
        assert subscribe(subscriber, *filters) == (0, 1, 2)
        for granted in range(3):
            for published in range(3):
                publish(publisher, f"{base}/g{granted}/p{published}", b"m", qos=published, packet_id=9)
        delivered = publishes_before_pingresp(subscriber)
        for message in delivered:
            acknowledge(subscriber, message)
        seen = {message.topic: message.qos for message in delivered}
        expected = {f"{base}/g{g}/p{p}": min(g, p) for g in range(3) for p in range(3)}
        assert seen == expected


@pytest.mark.parametrize("qos", [1, 2])
def test_MQTT_4_3_outbound_flow_completes_and_is_not_resent(server: ServerProcess, qos: int) -> None:
    topic, client_id = unique(f"outbound-qos{qos}"), unique("outbound")
    with Clients(server) as clients:
        subscriber = clients.raw(client_id, clean_session=False)
        assert subscribe(subscriber, (topic, qos)) == (qos,)
        publish(clients.raw(), topic, b"once", qos=qos)
        message = next_publish(subscriber)
        assert (message.qos, message.dup) == (qos, False)
        assert message.packet_id
        acknowledge(subscriber, message)  # PUBACK, or PUBREC -> server's PUBREL -> PUBCOMP
        disconnect(subscriber)
        resumed = clients.raw(client_id, clean_session=False, session_present=True)
        assert packets_before_pingresp(resumed) == []  # completed: nothing to redeliver


def test_MQTT_3_3_1_3_incoming_dup_flag_is_not_propagated(server: ServerProcess) -> None:
    topic = unique("dup")
    with Clients(server) as clients:
        subscriber, publisher = clients.raw(), clients.raw()
        assert subscribe(subscriber, (topic, 1)) == (1,)
        publisher.send(Publish(topic, b"resent", qos=1, dup=True, packet_id=3))
        assert publisher.expect(Puback) == Puback(3)
        message = next_publish(subscriber)
        assert (message.payload, message.qos, message.dup) == (b"resent", 1, False)


def test_MQTT_4_3_3_2_qos2_publish_resent_before_pubrel_is_delivered_once(server: ServerProcess) -> None:
    topic = unique("exactly-once")
    with Clients(server) as clients:
        subscriber, publisher = clients.raw(), clients.raw()
        assert subscribe(subscriber, (topic, 0)) == (0,)
        publisher.send(Publish(topic, b"once", qos=2, packet_id=42))
        assert publisher.expect(Pubrec) == Pubrec(42)
        publisher.send(Publish(topic, b"once", qos=2, dup=True, packet_id=42))
        assert publisher.expect(Pubrec) == Pubrec(42)
        publisher.send(Pubrel(42))
        assert publisher.expect(Pubcomp) == Pubcomp(42)
        assert [message.payload for message in publishes_before_pingresp(subscriber)] == [b"once"]


def test_MQTT_4_3_3_2_qos2_state_of_a_persistent_publisher_survives_reconnect(server: ServerProcess) -> None:
    topic, client_id = unique("exactly-once-reconnect"), unique("publisher")
    with Clients(server) as clients:
        subscriber = clients.raw()
        assert subscribe(subscriber, (topic, 0)) == (0,)
        publisher = clients.raw(client_id, clean_session=False)
        publisher.send(Publish(topic, b"once", qos=2, packet_id=11))
        assert publisher.expect(Pubrec) == Pubrec(11)
        disconnect(publisher)  # before PUBREL
        resumed = clients.raw(client_id, clean_session=False, session_present=True)
        resumed.send(Publish(topic, b"once", qos=2, dup=True, packet_id=11))
        assert resumed.expect(Pubrec) == Pubrec(11)
        resumed.send(Pubrel(11))
        assert resumed.expect(Pubcomp) == Pubcomp(11)
        assert [message.payload for message in publishes_before_pingresp(subscriber)] == [b"once"]


def test_MQTT_4_3_3_qos2_packet_id_reused_after_pubcomp_delivers_again(server: ServerProcess) -> None:
    topic = unique("reuse")
    with Clients(server) as clients:
        subscriber, publisher = clients.raw(), clients.raw()
        assert subscribe(subscriber, (topic, 0)) == (0,)
        publish(publisher, topic, b"first", qos=2, packet_id=7)
        publish(publisher, topic, b"second", qos=2, packet_id=7)
        payloads = [message.payload for message in publishes_before_pingresp(subscriber)]
        assert payloads == [b"first", b"second"]


def test_outbound_window_holds_20_unacknowledged_qos1_messages(server: ServerProcess) -> None:
    topic = unique("window")
    with Clients(server) as clients:
        subscriber, publisher = clients.raw(), clients.raw()
        assert subscribe(subscriber, (topic, 1)) == (1,)
        for number in range(30):
            publish(publisher, topic, b"%d" % number, qos=1, packet_id=number + 1)
        window = publishes_before_pingresp(subscriber)
        assert [message.payload for message in window] == [b"%d" % n for n in range(20)]
        assert len({message.packet_id for message in window}) == 20
        acknowledge(subscriber, window[0])
        (next_one,) = publishes_before_pingresp(subscriber)
        assert next_one.payload == b"20"
        received = [*window[1:], next_one]
        while len(received) < 29:
            for message in received[-10:]:
                acknowledge(subscriber, message)
            received += publishes_before_pingresp(subscriber)
        assert [message.payload for message in received] == [b"%d" % n for n in range(1, 30)]


def test_MQTT_4_6_0_qos1_messages_keep_their_order_across_200(server: ServerProcess) -> None:
    topic = unique("order")
    with Clients(server) as clients:
        subscriber, publisher = clients.raw(), clients.raw()
        assert subscribe(subscriber, (topic, 1)) == (1,)
        for number in range(200):  # pipelined: no waiting for each PUBACK
            publisher.send(Publish(topic, b"%d" % number, qos=1, packet_id=number + 1))
        payloads = []
        while len(payloads) < 200:
            message = next_publish(subscriber)
            acknowledge(subscriber, message)
            payloads.append(message.payload)
        assert payloads == [b"%d" % n for n in range(200)]
        # [MQTT-4.6.0-2]: PUBACKs go back in the order the PUBLISHes arrived.
        assert [publisher.expect(Puback) for _ in range(200)] == [Puback(n) for n in range(1, 201)]


# -- redelivery after reconnect ----------------------------------------------------------------


def test_MQTT_4_4_0_1_unacknowledged_publishes_are_resent_with_dup_and_same_ids(
    server: ServerProcess,
) -> None:
    topic, client_id = unique("redeliver"), unique("redeliver")
    with Clients(server) as clients:
        subscriber = clients.raw(client_id, clean_session=False)
        assert subscribe(subscriber, (topic, 1)) == (1,)
        publisher = clients.raw()
        for number in range(3):
            publish(publisher, topic, b"old%d" % number, qos=1, packet_id=number + 1)
        unacked = publishes_before_pingresp(subscriber)
        assert [message.payload for message in unacked] == [b"old0", b"old1", b"old2"]
        disconnect(subscriber)  # without acknowledging anything
        for number in range(2):
            publish(publisher, topic, b"new%d" % number, qos=1, packet_id=number + 1)
        resumed = clients.raw(client_id, clean_session=False, session_present=True)
        delivered = publishes_before_pingresp(resumed)
        resent, fresh = delivered[:3], delivered[3:]
        assert [(m.payload, m.packet_id, m.dup) for m in resent] == [
            (m.payload, m.packet_id, True) for m in unacked
        ]
        assert [(m.payload, m.dup) for m in fresh] == [(b"new0", False), (b"new1", False)]
        assert not {m.packet_id for m in fresh} & {m.packet_id for m in resent}


def test_MQTT_4_4_0_1_pubrel_is_resent_on_reconnect_after_pubrec(server: ServerProcess) -> None:
    topic, client_id = unique("pubrel"), unique("pubrel")
    with Clients(server) as clients:
        subscriber = clients.raw(client_id, clean_session=False)
        assert subscribe(subscriber, (topic, 2)) == (2,)
        publish(clients.raw(), topic, b"two", qos=2)
        packet_id = next_publish(subscriber).packet_id
        assert packet_id is not None
        subscriber.send(Pubrec(packet_id))
        assert subscriber.expect(Pubrel) == Pubrel(packet_id)
        disconnect(subscriber)  # without PUBCOMP
        resumed = clients.raw(client_id, clean_session=False, session_present=True)
        assert packets_before_pingresp(resumed) == [Pubrel(packet_id)]
        resumed.send(Pubcomp(packet_id))
        disconnect(resumed)
        again = clients.raw(client_id, clean_session=False, session_present=True)
        assert packets_before_pingresp(again) == []


# -- persistent sessions -------------------------------------------------------------------------


def test_MQTT_3_1_2_4_subscriptions_survive_reconnect(server: ServerProcess) -> None:
    topic, client_id = unique("survive"), unique("survive")
    with Clients(server) as clients:
        first = clients.paho(client_id=client_id, clean_session=False)
        first.subscribe(topic, qos=1)
        first.close()
        resumed = clients.paho(client_id=client_id, clean_session=False)
        flags, code = resumed.connack[0]
        assert (flags.session_present, code) == (True, 0)
        clients.paho().publish(topic, b"still subscribed", qos=1)
        assert resumed.next_message().payload == b"still subscribed"


def test_MQTT_3_1_2_5_qos1_and_qos2_published_while_offline_are_delivered_and_qos0_is_not(
    server: ServerProcess,
) -> None:
    topic, client_id = unique("offline"), unique("offline")
    with Clients(server) as clients:
        subscriber = clients.raw(client_id, clean_session=False)
        assert subscribe(subscriber, (topic, 2)) == (2,)
        disconnect(subscriber)
        publisher = clients.raw()
        for qos, payload in enumerate((b"zero", b"one", b"two")):
            publish(publisher, topic, payload, qos=qos)
        resumed = clients.raw(client_id, clean_session=False, session_present=True)
        delivered = publishes_before_pingresp(resumed)
        assert [(m.payload, m.qos) for m in delivered] == [(b"one", 1), (b"two", 2)]
        for message in delivered:
            acknowledge(resumed, message)


def test_offline_queue_is_bounded_and_drops_are_counted(server: ServerProcess) -> None:
    topic, client_id = unique("bounded"), unique("bounded")
    with (
        dedicated_server(server.variant, "--max-queued-messages", "5") as limited,
        Clients(limited) as clients,
    ):
        stats = clients.paho()
        stats.subscribe("$SYS/broker/publish/messages/dropped")
        offline = clients.raw(client_id, clean_session=False)
        assert subscribe(offline, (topic, 1)) == (1,)
        disconnect(offline)
        online = clients.paho()
        online.subscribe(topic, qos=1)
        publisher = clients.raw()
        for number in range(10):
            publish(publisher, topic, b"%d" % number, qos=1, packet_id=number + 1)
        assert [online.next_message().payload for _ in range(10)] == [b"%d" % n for n in range(10)]
        resumed = clients.raw(client_id, clean_session=False, session_present=True)
        assert [m.payload for m in publishes_before_pingresp(resumed)] == [b"%d" % n for n in range(5)]
        # A $SYS snapshot may fall between two drops: wait for one taken after all of them.
        assert sys_value(stats, "$SYS/broker/publish/messages/dropped", lambda value: int(value) >= 5) == "5"


def test_MQTT_3_1_2_6_clean_session_subscriptions_end_with_the_connection(server: ServerProcess) -> None:
    topic, client_id = unique("clean"), unique("clean")
    with Clients(server) as clients:
        clean = clients.raw(client_id, clean_session=True)
        assert subscribe(clean, (topic, 1)) == (1,)
        disconnect(clean)
        resumed = clients.raw(client_id, clean_session=False, session_present=False)
        publish(clients.raw(), topic, b"nobody listens", qos=1)
        assert packets_before_pingresp(resumed) == []


@needs_mosquitto_clients
@pytest.mark.parametrize("qos", [1, 2])
def test_mosquitto_clients_exchange_messages_at_qos(server: ServerProcess, qos: int) -> None:
    topic, client_id, port = unique(f"mosquitto-qos{qos}"), unique("mosq"), str(server.port)
    session = ["-p", port, "-i", client_id, "-c", "-q", str(qos), "-t", topic, "-W", "5"]
    # A persistent mosquitto_sub subscribes and leaves; the message waits in its session.
    assert mosquitto("mosquitto_sub", *session, "-E").returncode == 0
    published = mosquitto("mosquitto_pub", "-p", port, "-q", str(qos), "-t", topic, "-m", f"via qos {qos}")
    assert published.returncode == 0, published.stderr
    received = mosquitto("mosquitto_sub", *session, "-C", "1", "-v")
    assert (received.returncode, received.stdout) == (0, f"{topic} via qos {qos}\n")
