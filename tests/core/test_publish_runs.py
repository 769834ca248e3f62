"""Back-to-back QoS 0 PUBLISHes of one topic are routed once, and behave exactly as if one by one.

A run is only a cheaper route: every subscriber gets every message, in order, byte for byte;
the $SYS counters count each message; a RETAIN, QoS 1, other-topic, oversize or malformed
frame ends the run where it stands; an offline session's queue gets the messages one by one.
"""

from __future__ import annotations

from mqtt.broker import Broker
from mqtt.codec import Decoder, encode
from mqtt.connection import Connection
from mqtt.packets import Connect, Publish, Subscribe
from tests.core.test_broker import connected, make_broker, take_output


def subscriber(broker: Broker, name: str = "sub", topic_filter: str = "run/#") -> Connection:
    connection = connected(broker, name)
    connection.receive(encode(Subscribe(1, ((topic_filter, 0),))))
    take_output(connection)
    return connection


def frames(*packets: Publish) -> bytes:
    return b"".join(encode(packet) for packet in packets)


def test_a_run_reaches_the_subscriber_whole_and_in_order_and_counts_each_message() -> None:
    broker, _ = make_broker()
    sub = subscriber(broker)
    publisher = connected(broker, "pub")
    before = (broker.stats.publish_received, broker.stats.publish_sent, broker.stats.messages_sent)
    burst = frames(*(Publish("run/a", b"payload-%d" % n) for n in range(50)))
    publisher.receive(burst)
    assert sub.pending() == burst  # forwarded as the very bytes that arrived
    got = Decoder().feed(sub.pending())
    sub.sent(sub.output_bytes)
    assert [packet.payload for packet in got] == [b"payload-%d" % n for n in range(50)]  # type: ignore[union-attr]
    stats = broker.stats
    assert stats.publish_received - before[0] == 50
    assert stats.publish_sent - before[1] == 50
    assert stats.messages_sent - before[2] == 50
    assert stats.publish_bytes_sent == sum(len(b"payload-%d" % n) for n in range(50))


def test_other_frames_end_the_run_and_the_order_is_kept() -> None:
    broker, _ = make_broker()
    sub = subscriber(broker)
    publisher = connected(broker, "pub")
    sequence = [
        Publish("run/a", b"1"),
        Publish("run/a", b"2"),
        Publish("run/b", b"3"),  # another topic
        Publish("run/b", b"4", retain=True),  # RETAIN: needs the retained store
        Publish("run/b", b"5"),
        Publish("run/b", b"6", qos=1, packet_id=7),  # QoS 1: needs a PUBACK
        Publish("run/b", b"7"),
        Publish("run/b", b"8"),
    ]
    publisher.receive(frames(*sequence))
    got = take_output(sub)
    assert [packet.payload for packet in got] == [b"%d" % n for n in range(1, 9)]  # type: ignore[union-attr]
    assert [packet.topic for packet in got] == ["run/a"] * 2 + ["run/b"] * 6  # type: ignore[union-attr]
    assert [type(packet).__name__ for packet in take_output(publisher)] == ["Puback"]
    assert broker.retained.get("run/b") is not None


def test_an_oversize_payload_in_a_run_is_dropped_alone() -> None:
    broker, _ = make_broker(max_payload=4)
    sub = subscriber(broker)
    publisher = connected(broker, "pub")
    publisher.receive(frames(*(Publish("run/a", payload) for payload in (b"ok1", b"too long", b"ok2"))))
    assert [packet.payload for packet in take_output(sub)] == [b"ok1", b"ok2"]  # type: ignore[union-attr]
    assert broker.stats.publish_dropped == 1


def test_messages_before_a_bad_frame_are_delivered_then_the_publisher_is_closed() -> None:
    broker, _ = make_broker()
    sub = subscriber(broker)
    publisher = connected(broker, "pub")
    bad_topic = encode(Publish("run/a", b"x"))[:4] + b"+" + encode(Publish("run/a", b"x"))[5:]
    publisher.receive(frames(Publish("run/a", b"1"), Publish("run/a", b"2")) + bad_topic)
    assert [packet.payload for packet in take_output(sub)] == [b"1", b"2"]  # type: ignore[union-attr]
    assert publisher.wants_close and "protocol error" in publisher.close_reason


def test_a_frame_shorter_than_the_topic_it_claims_is_not_taken_into_the_run() -> None:
    broker, _ = make_broker()
    sub = subscriber(broker)
    publisher = connected(broker, "pub")
    first = encode(Publish("run/a", b"1"))
    # A 5-byte body claiming the 7-byte topic field of "run/a"; the bytes after it spell the
    # rest of that field, so only the frame's own end tells the two apart.
    truncated = bytes((0x30, 5)) + first[2:7]
    publisher.receive(first + truncated + first[7:])
    assert [packet.payload for packet in take_output(sub)] == [b"1"]  # type: ignore[union-attr]
    assert publisher.wants_close and "protocol error" in publisher.close_reason


def test_an_offline_session_queues_a_run_one_message_at_a_time() -> None:
    broker, _ = make_broker(queue_qos0=True, max_queued_messages=3)
    away = connected(broker, "away", clean_session=False)
    away.receive(encode(Subscribe(1, (("run/#", 0),))))
    take_output(away)
    away.lost("gone")
    publisher = connected(broker, "pub")
    publisher.receive(frames(*(Publish("run/a", b"%d" % n) for n in range(5))))
    session = broker.sessions["away"]
    assert [message.payload for message, _, _ in session.queue] == [b"0", b"1", b"2"]
    assert broker.stats.publish_dropped == 2  # the queue's bound holds per message
    back = broker.open("again")
    back.receive(encode(Connect("away", clean_session=False)))
    assert [getattr(packet, "payload", None) for packet in take_output(back)][1:] == [b"0", b"1", b"2"]
