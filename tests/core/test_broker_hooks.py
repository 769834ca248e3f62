"""The hooks the full broker plugs into the core, and the mosquitto limits it maps onto them.

Driven directly with an injected clock: a read check per delivery, the store hook's events,
restore, session expiry, message_size_limit, max_keepalive, the bridge bit's no-echo rule,
$SYS being read-only for clients, and the cut-off of a client that stays congested.
"""

from __future__ import annotations

from mqtt.broker import Broker
from mqtt.codec import encode
from mqtt.limits import Limits
from mqtt.message import Message
from mqtt.packets import (
    Connack,
    Connect,
    Puback,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
)
from mqtt.policy import Policy
from mqtt.store_hook import RestoredDelivery, RestoredSession, RestoredState, StoreHook

from .test_broker import FakeClock, connected, take_output


class ReadDenied(Policy):
    """Everyone may subscribe to anything, but nobody may read ``secret/...``."""

    def may_read(self, client_id: str, username: str | None, topic: str) -> bool:
        return not topic.startswith("secret/")


class RecordingStore(StoreHook):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def __getattribute__(self, name: str) -> object:
        if name.startswith(("retained", "session", "subscription", "outbound", "inbound")):
            events = object.__getattribute__(self, "events")
            return lambda *args: events.append((name, *args))
        return object.__getattribute__(self, name)


def make(**fields: object) -> tuple[Broker, FakeClock]:
    clock = FakeClock()
    policy = fields.pop("policy", None)
    store = fields.pop("store", None)
    limits = Limits(sys_interval=0, **fields)  # type: ignore[arg-type]
    return Broker(clock=clock, limits=limits, policy=policy, store=store), clock  # type: ignore[arg-type]


def published_topics(packets: list[object]) -> list[str]:
    return [packet.topic for packet in packets if isinstance(packet, Publish)]


def test_a_wildcard_subscription_never_carries_a_read_denied_topic() -> None:
    broker, _ = make(policy=ReadDenied())
    publisher = connected(broker, "pub")
    publisher.receive(encode(Publish("secret/key", b"r", retain=True)))
    reader = connected(broker, "reader")
    reader.receive(encode(Subscribe(1, [("#", 1)])))
    assert take_output(reader) == [Suback(1, (1,))]  # granted, then filtered per delivery
    publisher.receive(encode(Publish("secret/key", b"live")))
    publisher.receive(encode(Publish("public/news", b"ok")))
    assert published_topics(take_output(reader)) == ["public/news"]


def test_clients_cannot_publish_into_sys_and_the_refusal_is_counted() -> None:
    broker, _ = make()
    reader = connected(broker, "reader")
    reader.receive(encode(Subscribe(1, [("$SYS/#", 0)])))
    take_output(reader)
    publisher = connected(broker, "pub")
    publisher.receive(encode(Publish("$SYS/broker/uptime", b"forged", qos=1, packet_id=3)))
    assert take_output(publisher) == [Puback(3)]  # acknowledged, as 3.1.1 requires
    assert take_output(reader) == []
    assert broker.stats.publish_denied == 1


def test_message_size_limit_acknowledges_and_drops_an_oversize_payload() -> None:
    broker, _ = make(max_payload=10)
    reader = connected(broker, "reader")
    reader.receive(encode(Subscribe(1, [("t", 2)])))
    take_output(reader)
    publisher = connected(broker, "pub")
    publisher.receive(encode(Publish("t", b"x" * 11, qos=1, packet_id=1)))
    publisher.receive(encode(Publish("t", b"x" * 11, qos=2, packet_id=2)))
    publisher.receive(encode(Publish("t", b"x" * 10, qos=1, packet_id=3)))
    assert take_output(publisher) == [Puback(1), Pubrec(2), Puback(3)]
    assert [len(packet.payload) for packet in take_output(reader)] == [10]  # type: ignore[attr-defined]
    assert broker.stats.publish_dropped == 2
    assert not publisher.wants_close


def test_max_keepalive_refuses_a_longer_keepalive_with_connack_2() -> None:
    broker, _ = make(max_keepalive=60)
    client = broker.open("peer")
    client.receive(encode(Connect("slow", keepalive=61)))
    assert take_output(client) == [Connack(False, 2)]
    assert client.wants_close
    assert connected(broker, "ok", keepalive=60).session is not None


def test_a_bridge_never_gets_its_own_messages_back() -> None:
    broker, _ = make()
    bridge = broker.open("bridge")
    bridge.receive(encode(Connect("bridge-1", bridge=True)))
    take_output(bridge)
    bridge.receive(encode(Subscribe(1, [("#", 0)])))
    take_output(bridge)
    local = connected(broker, "local")
    local.receive(encode(Subscribe(1, [("#", 0)])))
    take_output(local)
    bridge.receive(encode(Publish("from/remote", b"1")))
    local.receive(encode(Publish("from/local", b"2")))
    assert published_topics(take_output(bridge)) == ["from/local"]
    assert published_topics(take_output(local)) == ["from/remote", "from/local"]


def test_a_plain_client_still_gets_its_own_messages() -> None:
    broker, _ = make()
    client = connected(broker, "self")
    client.receive(encode(Subscribe(1, [("#", 0)])))
    take_output(client)
    client.receive(encode(Publish("echo", b"1")))
    assert published_topics(take_output(client)) == ["echo"]


def test_a_client_congested_past_the_grace_is_cut_off_abortively() -> None:
    broker, clock = make(max_pending_output=100, slow_client_grace=5.0)
    slow = connected(broker, "slow")
    slow.receive(encode(Subscribe(1, [("f", 0)])))
    take_output(slow)
    publisher = connected(broker, "pub")
    publisher.receive(encode(Publish("f", b"y" * 200)))
    slow.sent(0)  # EAGAIN: backed up and past max_pending_output
    assert slow.congested
    publisher.receive(encode(Publish("f", b"y")))
    clock.now += 4.9
    publisher.receive(encode(Publish("f", b"y")))
    assert not slow.wants_close  # dropped and counted, still within the grace
    assert broker.stats.publish_dropped == 2
    clock.now += 0.2
    publisher.receive(encode(Publish("f", b"y")))
    assert slow.wants_close and slow.abortive
    assert slow.output_bytes == 0  # nothing more is flushed to a client that does not read
    assert not publisher.wants_close


def test_draining_resets_the_grace() -> None:
    broker, clock = make(max_pending_output=100, slow_client_grace=5.0)
    slow = connected(broker, "slow")
    slow.receive(encode(Subscribe(1, [("f", 0)])))
    take_output(slow)
    publisher = connected(broker, "pub")
    publisher.receive(encode(Publish("f", b"y" * 200)))
    slow.sent(0)
    clock.now += 4.0
    take_output(slow)  # it caught up
    assert not slow.congested
    publisher.receive(encode(Publish("f", b"y" * 200)))
    slow.sent(0)
    clock.now += 4.0
    publisher.receive(encode(Publish("f", b"y")))
    assert not slow.wants_close


def test_store_hook_sees_a_persistent_sessions_life_and_nothing_of_a_clean_one() -> None:
    store = RecordingStore()
    broker, _ = make(store=store)
    clean = connected(broker, "clean")
    clean.receive(encode(Subscribe(1, [("t", 1)])))
    assert store.events == []
    durable = connected(broker, "durable", clean_session=False)
    durable.receive(encode(Subscribe(1, [("t", 1)])))
    take_output(durable)
    publisher = connected(broker, "pub")
    publisher.receive(encode(Publish("t", b"m", qos=1, packet_id=9, retain=True)))
    durable.receive(encode(Puback(1)))
    durable.lost("gone")
    names = [event[0] for event in store.events]
    assert names == [
        "session_saved",
        "subscription_set",
        "retained_set",
        "outbound_added",
        "outbound_done",
        "session_disconnected",
    ]
    assert store.events[3] == ("outbound_added", "durable", 1, "t", b"m", 1, False, 1)


def test_store_hook_reports_queueing_the_window_and_inbound_qos2() -> None:
    store = RecordingStore()
    broker, _ = make(store=store, max_inflight=1)
    durable = connected(broker, "d", clean_session=False)
    durable.receive(encode(Subscribe(1, [("t", 2)])))
    take_output(durable)
    publisher = connected(broker, "pub")
    store.events.clear()
    publisher.receive(encode(Publish("t", b"1", qos=2, packet_id=1)))
    publisher.receive(encode(Publish("t", b"2", qos=2, packet_id=2)))
    durable.receive(encode(Pubrec(1)))
    durable.receive(encode(Pubrel(5)))  # an unknown id: answered, nothing stored
    assert [event[0] for event in store.events] == [
        "outbound_added",  # sent at once, id 1
        "outbound_added",  # queued: the window of 1 is full
        "outbound_released",
    ]
    assert store.events[1][-1] is None
    durable.receive(encode(Publish("in", b"q2", qos=2, packet_id=7)))
    durable.receive(encode(Pubrel(7)))
    assert store.events[-2:] == [("inbound_qos2_added", "d", 7), ("inbound_qos2_removed", "d", 7)]


def test_restore_resumes_a_session_with_its_window_and_queue() -> None:
    broker, _ = make()
    broker.restore(
        RestoredState(
            retained=[Message.from_text("r", b"kept", 1, True)],
            sessions=[
                RestoredSession(
                    "d",
                    None,
                    disconnected_for=3.0,
                    subscriptions={"t": 1},
                    outbound=[
                        RestoredDelivery(1, "t", b"in-flight", 1, False, packet_id=4),
                        RestoredDelivery(2, "t", b"queued", 1, False),
                    ],
                    inbound_qos2=[11],
                )
            ],
        )
    )
    client = broker.open("peer")
    client.receive(encode(Connect("d", clean_session=False)))
    packets = take_output(client)
    assert packets[0] == Connack(True, 0)
    assert packets[1] == Publish("t", b"in-flight", qos=1, packet_id=4, dup=True)
    assert packets[2] == Publish("t", b"queued", qos=1, packet_id=5)
    client.receive(encode(Publish("x", b"again", qos=2, packet_id=11)))
    assert broker.stats.publish_sent == 1  # the known QoS 2 id was not routed a second time
    client.receive(encode(Subscribe(1, [("r", 1)])))
    assert [p.payload for p in take_output(client) if isinstance(p, Publish)] == [b"kept"]


def test_a_persistent_session_away_longer_than_the_expiry_is_discarded() -> None:
    store = RecordingStore()
    broker, clock = make(store=store, session_expiry=100.0)
    durable = connected(broker, "d", clean_session=False)
    durable.lost("gone")
    broker.tick(clock.now + 99)
    assert "d" in broker.sessions
    clock.now += 99 + 100 / 4  # sessions are scanned every quarter of the expiry (at most 60 s)
    broker.tick(clock.now)
    assert "d" not in broker.sessions
    assert broker.stats.clients_expired == 1
    assert store.events[-1] == ("session_removed", "d")


def test_a_retained_burst_is_bounded_without_reading_the_payloads_it_drops() -> None:
    class CountedPayload(Message):
        reads = 0

        def as_retained(self) -> Message:
            CountedPayload.reads += 1
            return super().as_retained()

    broker, _ = make(max_pending_output=1000, max_queued_messages=5, max_inflight=2)
    topics = [f"r/{n}" for n in range(50)]
    broker.restore(RestoredState([CountedPayload(t, t.encode(), b"x" * 100, 1, True) for t in topics]))
    zero = connected(broker, "zero")
    zero.receive(encode(Subscribe(1, [("r/#", 0)])))
    assert CountedPayload.reads == 10  # 10 x ~105 bytes passes the 1000-byte output bound
    assert len(published_topics(take_output(zero))) == 10
    CountedPayload.reads = 0
    one = connected(broker, "one")
    one.receive(encode(Subscribe(1, [("r/#", 1)])))
    assert CountedPayload.reads == 2 + 5  # the in-flight window, then the queue
    assert broker.stats.publish_dropped == 40 + 43


def test_a_trusted_bridge_client_skips_authentication_and_acls() -> None:
    class NobodyAllowed(Policy):
        def authenticate(self, connect: Connect) -> int:
            return 5

        def may_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
            return False

        def may_publish(self, client_id: str, username: str | None, topic: str) -> bool:
            return False

        def may_read(self, client_id: str, username: str | None, topic: str) -> bool:
            return False

    broker, _ = make(policy=NobodyAllowed())
    outsider = broker.open("peer")
    outsider.receive(encode(Connect("outsider")))
    assert take_output(outsider) == [Connack(False, 5)]
    bridge = broker.open("bridge/b1", trusted=True)
    bridge.receive(encode(Connect("local.b1", bridge=True)))
    assert take_output(bridge) == [Connack(False, 0)]
    bridge.receive(encode(Subscribe(1, [("out/#", 1)])))
    assert take_output(bridge) == [Suback(1, (1,))]
    other = broker.open("bridge/b2", trusted=True)
    other.receive(encode(Connect("local.b2", bridge=True)))
    take_output(other)
    other.receive(encode(Publish("out/x", b"crossing", qos=1, packet_id=1)))
    assert [p.payload for p in take_output(bridge) if isinstance(p, Publish)] == [b"crossing"]


def test_a_bridge_gets_the_publishers_retain_flag_and_a_client_does_not() -> None:
    broker, _ = make()
    bridge = broker.open("bridge/b1", trusted=True)
    bridge.receive(encode(Connect("local.b1", bridge=True)))
    bridge.receive(encode(Subscribe(1, [("t", 1)])))
    take_output(bridge)
    client = connected(broker, "client")
    client.receive(encode(Subscribe(1, [("t", 1)])))
    take_output(client)
    publisher = connected(broker, "pub")
    publisher.receive(encode(Publish("t", b"kept", qos=1, packet_id=1, retain=True)))
    assert [p.retain for p in take_output(bridge) if isinstance(p, Publish)] == [True]
    assert [p.retain for p in take_output(client) if isinstance(p, Publish)] == [False]
