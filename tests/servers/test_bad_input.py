"""Hostile and oversized input, and the server's limits: one bad client never hurts the others.

Each bad connection must be closed by the server (or by its own client) without disturbing a
paho client connected before it, without leaking a descriptor, and without unbounded memory.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable

import pytest

from mqtt.codec import encode, encode_publish
from mqtt.packets import Connack, Connect, Puback, Publish, Subscribe
from tests.support.clients import PahoClient, RawClient
from tests.support.servers import ServerProcess

from .helpers import (
    Clients,
    dedicated_server,
    fd_baseline,
    fds_back_to,
    packets_before_pingresp,
    payloads_until,
    publishes_before_pingresp,
    rss_kib,
    subscribe,
    sys_value,
    unique,
)

CONNECT = encode(Connect("bad-input-client"))
BAD_BYTES = {
    "garbage-before-connect": random.Random(0).randbytes(4096),
    "garbage-after-connect": CONNECT + random.Random(1).randbytes(4096),
    "reserved-type-0": CONNECT + b"\x00\x00",
    "reserved-type-15": CONNECT + b"\xf0\x00",
    "five-byte-remaining-length": CONNECT + b"\x30\xff\xff\xff\xff\x7f",
    "MQTT-3.3.1-4-publish-qos-3": CONNECT + b"\x36\x05\x00\x01t\x00\x01",
    "MQTT-3.3.2-2-wildcard-in-topic": CONNECT + encode(Publish("a/+", b"x")),
    "MQTT-3.3.1-2-dup-on-qos-0": CONNECT + b"\x38\x03\x00\x01t",
    "MQTT-2.2.2-2-subscribe-flags-0": CONNECT + b"\x80\x06\x00\x01\x00\x01t\x00",
    "MQTT-3.6.1-1-pubrel-flags-0": CONNECT + b"\x60\x02\x00\x01",
    "MQTT-3.8.3-3-subscribe-without-filters": CONNECT + b"\x82\x02\x00\x01",
    "MQTT-3.8.3-4-subscribe-qos-3": CONNECT + encode(Subscribe(1, (("t", 3),))),
    "MQTT-3.10.3-2-unsubscribe-without-filters": CONNECT + b"\xa2\x02\x00\x01",
    "MQTT-2.3.1-1-publish-packet-id-0": CONNECT + b"\x32\x05\x00\x01t\x00\x00",
    "MQTT-2.3.1-1-subscribe-packet-id-0": CONNECT + b"\x82\x06\x00\x00\x00\x01t\x00",
    "MQTT-1.5.3-1-topic-not-utf8": CONNECT + b"\x30\x03\x00\x01\xff",
    "MQTT-1.5.3-2-topic-with-nul": CONNECT + b"\x30\x04\x00\x02a\x00",
    "MQTT-2.2.1-connack-from-client": CONNECT + b"\x20\x02\x00\x00",
}


def fresh(data: bytes) -> bytes:
    """``data`` with its leading CONNECT (if any) given a client id of its own."""
    if data.startswith(CONNECT):
        return encode(Connect(unique("bad"))) + data[len(CONNECT) :]
    return data


def assert_survivor_still_served(survivor_topic: str, clients: Clients, survivor: PahoClient) -> None:
    """A fresh message reaches the survivor, and nothing else arrived before it."""
    marker = unique("alive").encode()
    clients.paho().publish(survivor_topic, marker, qos=1)
    assert survivor.next_message().payload == marker


@pytest.mark.parametrize("bad_bytes", BAD_BYTES.values(), ids=BAD_BYTES.keys())
def test_bad_input_closes_only_that_connection(server: ServerProcess, bad_bytes: bytes) -> None:
    topic = unique("survivor")
    with Clients(server) as clients:
        survivor = clients.paho()
        survivor.subscribe(topic, qos=1)
        bad = clients.socket()
        bad.send(fresh(bad_bytes))
        assert bad.is_closed_by_server()
        assert all(isinstance(packet, Connack) for packet in bad.received), bad.received
        assert_survivor_still_served(topic, clients, survivor)


def test_truncated_packet_then_close_ends_only_that_connection(server: ServerProcess) -> None:
    topic = unique("survivor")
    with Clients(server) as clients:
        survivor = clients.paho()
        survivor.subscribe(topic, qos=1)
        truncated = clients.socket()
        truncated.send(fresh(CONNECT) + encode(Publish(topic, b"never delivered", 1, packet_id=1))[:-4])
        truncated.close()
        assert_survivor_still_served(topic, clients, survivor)  # and not the truncated PUBLISH


def test_MQTT_4_7_3_1_publish_with_empty_topic_closes_the_connection(server: ServerProcess) -> None:
    with Clients(server) as clients:
        raw = clients.raw()
        raw.send(encode_publish(b"", b"no topic", 1, False, False, 1) + b"\xc0\x00")  # + PINGREQ
        with pytest.raises(ConnectionError):  # a correct server closes without PUBACK or PINGRESP
            raw.next_packet()


def close_abruptly(raw: RawClient) -> None:
    """SO_LINGER 0: close() sends RST instead of FIN, the server's recv sees ECONNRESET."""
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


def server_closes(data: bytes) -> Callable[[RawClient], None]:
    def misbehave(raw: RawClient) -> None:
        raw.send(fresh(data))
        assert raw.is_closed_by_server()

    return misbehave


def client_closes(data: bytes, abruptly: bool = False) -> Callable[[RawClient], None]:
    def misbehave(raw: RawClient) -> None:
        raw.send(fresh(data))
        close_abruptly(raw) if abruptly else raw.close()

    return misbehave


BAD_CONNECTIONS = [
    *(server_closes(data) for data in BAD_BYTES.values()),
    client_closes(CONNECT[:5]),
    client_closes(CONNECT + encode(Publish("t", b"x" * 100))[:50]),
    client_closes(CONNECT, abruptly=True),
    client_closes(b"", abruptly=True),
]


def test_two_hundred_bad_connections_leave_no_descriptor_behind(server: ServerProcess) -> None:
    topic = unique("survivor")
    with Clients(server) as clients:
        survivor = clients.paho()
        survivor.subscribe(topic, qos=1)
        baseline = fd_baseline(server)
        for index in range(200):
            raw = RawClient(server.port)
            try:
                BAD_CONNECTIONS[index % len(BAD_CONNECTIONS)](raw)
            finally:
                raw.close()
        fds_back_to(server, baseline)
        assert_survivor_still_served(topic, clients, survivor)


def publish_of_size(topic: str, size: int) -> bytes:
    """A QoS 1 PUBLISH (packet id 1) whose whole frame is exactly ``size`` bytes."""
    overhead = len(encode_publish(topic.encode(), b"", 1, False, False, 1)) + 1  # 2-byte length
    frame = encode_publish(topic.encode(), b"p" * (size - overhead), 1, False, False, 1)
    assert len(frame) == size
    return frame


def test_packet_over_max_packet_size_closes_only_that_client(server: ServerProcess) -> None:
    topic = unique("limit")
    with (
        dedicated_server(server.variant, "--max-packet-size", "1024") as limited,
        Clients(limited) as clients,
    ):
        survivor = clients.paho()
        survivor.subscribe(topic, qos=1)
        at_limit = clients.raw()
        at_limit.send(publish_of_size(topic, 1024))
        assert at_limit.expect(Puback) == Puback(1)
        assert len(survivor.next_message().payload) > 1000
        over_limit = clients.raw()
        over_limit.send(publish_of_size(topic, 2048))
        assert over_limit.is_closed_by_server()
        assert over_limit.received == []  # no PUBACK
        clients.paho().publish(topic, b"marker", qos=1)
        assert payloads_until(survivor, b"marker") == []  # the 2 KB message was not routed


def test_connection_over_max_connections_gets_connack_0x03_then_close(server: ServerProcess) -> None:
    with dedicated_server(server.variant, "--max-connections", "3") as limited, Clients(limited) as clients:
        connected = [clients.raw() for _ in range(3)]
        fourth = clients.socket()
        fourth.send(Connect(unique("fourth")))
        assert fourth.is_closed_by_server()
        # The full broker counts sockets and closes the fourth at accept, as mosquitto does; the
        # variants count CONNECTed clients and answer CONNACK 0x03.
        refusal = [] if server.variant == "broker" else [Connack(session_present=False, return_code=3)]
        assert fourth.received == refusal
        connected[0].send(b"\xe0\x00")  # DISCONNECT frees a slot once the server has closed it
        assert connected[0].is_closed_by_server()
        clients.raw()


# -- a subscriber that stops reading -----------------------------------------------------------

FLOOD_MESSAGES = 50_000
FLOOD_PAYLOAD = 1000  # bytes: 50 MB in all


def flood_past_a_stalled_subscriber(variant: str, *flags: str) -> tuple[list[int], int, int]:
    """Flood 50 MB of QoS 0 past one subscriber that never reads and one that reads everything.

    The healthy subscriber has an 8 MB receive buffer and drains the stream after every 1 MB
    batch, so the kernel always has room for its copy: any loss is the server's doing.
    Returns its sequence numbers, the server's RSS growth in KiB and the $SYS dropped count.
    """
    topic = unique("flood")
    with (
        dedicated_server(variant, "--max-pending-output", "65536", *flags) as limited,
        Clients(limited) as clients,
    ):
        stats = clients.paho()
        stats.subscribe("$SYS/broker/publish/messages/dropped")
        stalled = clients.raw()
        assert subscribe(stalled, (topic, 0)) == (0,)
        healthy = clients.raw()
        healthy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        assert subscribe(healthy, (topic, 0)) == (0,)
        publisher = clients.raw()
        filler = b"f" * (FLOOD_PAYLOAD - 8)
        sequence: list[int] = []
        baseline = peak = rss_kib(limited.pid)
        for first in range(0, FLOOD_MESSAGES, 1000):
            batch = b"".join(
                encode_publish(topic.encode(), b"%08d" % n + filler, 0, False, False, None)
                for n in range(first, first + 1000)
            )
            publisher.sock.sendall(batch)
            # PINGREQ/PINGRESP fences: the server has routed this batch, then the healthy
            # subscriber has read everything routed to it (pacing, not a sleep).
            assert packets_before_pingresp(publisher) == []
            sequence += [int(message.payload[:8]) for message in publishes_before_pingresp(healthy)]
            peak = max(peak, rss_kib(limited.pid))
        dropped = int(sys_value(stats, "$SYS/broker/publish/messages/dropped", lambda value: int(value) > 0))
        return sequence, peak - baseline, dropped


@pytest.mark.slow
def test_stalled_subscriber_costs_bounded_memory_and_counted_drops(server: ServerProcess) -> None:
    sequence, rss_growth_kib, dropped = flood_past_a_stalled_subscriber(server.variant)
    assert rss_growth_kib < 60 * 1024
    assert dropped > 0
    assert sequence == sorted(set(sequence))  # whatever the healthy subscriber got is in order
    assert sequence, "the healthy subscriber was starved"


@pytest.mark.slow
def test_healthy_subscriber_gets_every_message_while_another_stalls(server: ServerProcess) -> None:
    sequence, _, _ = flood_past_a_stalled_subscriber(server.variant)
    assert sequence == list(range(FLOOD_MESSAGES))
