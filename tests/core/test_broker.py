"""The broker core driven directly, with an injected clock: no sockets, no sleeping."""

from __future__ import annotations

from mqtt.broker import Broker
from mqtt.codec import Decoder, encode
from mqtt.connection import Connection
from mqtt.limits import Limits
from mqtt.packets import (
    Connack,
    Connect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Subscribe,
    Will,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_broker(**limits: object) -> tuple[Broker, FakeClock]:
    clock = FakeClock()
    return Broker(clock=clock, limits=Limits(sys_interval=0, **limits)), clock  # type: ignore[arg-type]


def take_output(connection: Connection) -> list[Packet]:
    """What a driver would send: decode it and mark it all sent."""
    data = connection.pending()
    connection.sent(len(data))
    return Decoder().feed(data)


def connected(broker: Broker, client_id: str, **fields: object) -> Connection:
    connection = broker.open(f"peer-{client_id}")
    connection.receive(encode(Connect(client_id, **fields)))  # type: ignore[arg-type]
    assert take_output(connection) == [Connack(False, 0)]
    return connection


def test_MQTT_3_1_2_24_silent_client_is_closed_after_one_and_a_half_keepalives() -> None:
    broker, clock = make_broker()
    client = connected(broker, "quiet", keepalive=10)
    clock.now += 14.9
    broker.tick(clock.now)
    assert not client.wants_close
    clock.now += 0.2
    broker.tick(clock.now)
    assert client.wants_close and "keepalive" in client.close_reason


def test_traffic_pushes_the_keepalive_deadline_back() -> None:
    broker, clock = make_broker()
    client = connected(broker, "chatty", keepalive=10)
    for _ in range(5):
        clock.now += 10
        client.receive(encode(Pingreq()))
        assert take_output(client) == [Pingresp()]
        broker.tick(clock.now)
    assert not client.wants_close


def test_tick_returns_the_next_keepalive_deadline_as_the_wait_timeout() -> None:
    broker, clock = make_broker()
    connected(broker, "k", keepalive=4)
    assert broker.tick(clock.now) == clock.now + 6.0


def test_socket_that_never_sends_connect_is_closed_after_connect_timeout() -> None:
    broker, clock = make_broker(connect_timeout=5.0)
    silent = broker.open("silent")
    clock.now += 5.1
    broker.tick(clock.now)
    assert silent.wants_close and "CONNECT timeout" in silent.close_reason


def test_will_fires_on_keepalive_expiry_but_not_after_disconnect() -> None:
    broker, clock = make_broker()
    watcher = connected(broker, "watcher")
    watcher.receive(encode(Subscribe(1, (("wills/#", 0),))))
    take_output(watcher)
    expiring = connected(broker, "expiring", keepalive=2, will=Will("wills/a", b"gone"))
    polite = connected(broker, "polite", keepalive=2, will=Will("wills/b", b"never"))
    polite.receive(bytes((0xE0, 0)))
    clock.now += 3.1
    broker.tick(clock.now)
    assert expiring.wants_close
    assert [(p.topic, p.payload) for p in take_output(watcher)] == [("wills/a", b"gone")]  # type: ignore[union-attr]


def test_client_that_never_reads_its_acks_is_closed_at_the_hard_output_limit() -> None:
    broker, _ = make_broker(max_pending_output=1024, max_packet_size=1024)
    flooder = connected(broker, "flooder")
    publish = encode(Publish("t", b"x", qos=1, packet_id=1))
    flooder.receive(publish)
    flooder.sent(0)  # the driver's send met EAGAIN: from now on the client counts as not reading
    for _ in range(800):  # 800 PUBACKs of 4 bytes = 3,200 bytes > 2 x 1024 + 1024
        flooder.receive(publish)
        if flooder.wants_close:
            break
    assert flooder.wants_close and "not reading" in flooder.close_reason
    assert flooder.output_bytes <= 2 * 1024 + 1024 + 4


def test_offline_queue_keeps_max_queued_messages_and_counts_the_rest_as_dropped() -> None:
    broker, _ = make_broker(max_queued_messages=3)
    sleeper = connected(broker, "sleeper", clean_session=False)
    sleeper.receive(encode(Subscribe(1, (("q", 1),))))
    take_output(sleeper)
    sleeper.receive(bytes((0xE0, 0)))
    publisher = connected(broker, "pub")
    for index in range(1, 6):
        publisher.receive(encode(Publish("q", str(index).encode(), qos=1, packet_id=index)))
    assert broker.stats.publish_dropped == 2
    back = broker.open("back")
    back.receive(encode(Connect("sleeper", clean_session=False)))
    packets = take_output(back)
    assert packets[0] == Connack(True, 0)
    assert [p.payload for p in packets[1:]] == [b"1", b"2", b"3"]  # type: ignore[union-attr]


def test_inflight_window_holds_back_messages_until_acknowledged() -> None:
    broker, _ = make_broker(max_inflight=2)
    subscriber = connected(broker, "sub")
    subscriber.receive(encode(Subscribe(1, (("w", 1),))))
    take_output(subscriber)
    publisher = connected(broker, "pub")
    for index in range(1, 5):
        publisher.receive(encode(Publish("w", bytes([index]), qos=1, packet_id=index)))
    first = take_output(subscriber)
    assert [p.payload for p in first] == [b"\x01", b"\x02"]  # type: ignore[union-attr]
    subscriber.receive(encode(Puback(first[0].packet_id)))  # type: ignore[union-attr]
    assert [p.payload for p in take_output(subscriber)] == [b"\x03"]  # type: ignore[union-attr]


def test_qos0_to_a_backed_up_connection_is_dropped_and_counted() -> None:
    broker, _ = make_broker(max_pending_output=100)
    slow = connected(broker, "slow")
    slow.receive(encode(Subscribe(1, (("f", 0),))))
    take_output(slow)
    publisher = connected(broker, "pub")
    publisher.receive(encode(Publish("f", b"y" * 20)))
    slow.sent(0)  # EAGAIN: the subscriber's socket is backed up
    for _ in range(19):
        publisher.receive(encode(Publish("f", b"y" * 20)))
    assert slow.output_bytes < 100 + 30
    assert broker.stats.publish_dropped > 0
    assert broker.stats.publish_sent + broker.stats.publish_dropped == 20


def test_max_connections_refuses_with_server_unavailable() -> None:
    broker, _ = make_broker(max_connections=1)
    connected(broker, "first")
    second = broker.open("second")
    second.receive(encode(Connect("second")))
    assert take_output(second) == [Connack(False, 3)]
    assert second.wants_close


def test_partial_sends_consume_output_across_buffer_boundaries() -> None:
    broker, _ = make_broker()
    subscriber = connected(broker, "partial")
    subscriber.receive(encode(Subscribe(1, (("p", 0),))))
    take_output(subscriber)
    publisher = connected(broker, "pub")
    for index in range(5):
        publisher.receive(encode(Publish("p", bytes([index]) * 10)))
    expected = b"".join(subscriber.pending_buffers())
    received = b""
    for chunk in (7, 1, 13, 0, 20, 100):  # what successive sends managed to write
        taken = b"".join(subscriber.pending_buffers())[:chunk]
        subscriber.sent(len(taken))
        received += taken
    assert received == expected
    assert subscriber.output_bytes == 0 and subscriber.pending() == b""


def test_a_subscriber_that_keeps_up_is_not_throttled_by_one_busy_turn() -> None:
    broker, _ = make_broker(max_pending_output=100)
    fast = connected(broker, "fast")
    fast.receive(encode(Subscribe(1, (("f", 0),))))
    take_output(fast)
    publisher = connected(broker, "pub")
    for _ in range(50):  # 50 x 25 bytes queued in one turn, far past max_pending_output
        publisher.receive(encode(Publish("f", b"y" * 20)))
    assert len(take_output(fast)) == 50
    assert broker.stats.publish_dropped == 0
