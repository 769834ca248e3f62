"""Legal packets at the protocol's extremes: many filters, deep topics, many retained messages.

Each of these once ended a whole server process: a SUBACK built with a one-byte length,
recursion once per topic level. Here the core answers them with well-formed packets (the
autouse fixture in conftest.py decodes every byte it queued) or closes only that connection.
"""

from __future__ import annotations

import pytest

from mqtt.codec import encode
from mqtt.message import Message
from mqtt.packets import (
    SUBACK_FAILURE,
    Connect,
    Publish,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from mqtt.retained import RetainedStore
from mqtt.topics import SubscriptionTrie
from tests.core.test_broker import connected, make_broker, take_output

DEEPEST = 65_536  # a 65,535-byte string of '/' has 65,536 empty levels: the most a topic can have


def deep(levels: int, level: str = "a") -> str:
    return "/".join([level] * levels)


@pytest.mark.parametrize("count", [1, 125, 126, 253, 254, 300, 20_000])
def test_suback_carries_one_return_code_per_filter_whatever_the_count(count: int) -> None:
    broker, _ = make_broker()
    client = connected(broker, "wide")
    filters = tuple((f"wide/{index}", index % 3) for index in range(count))
    client.receive(encode(Subscribe(7, filters)))
    assert take_output(client) == [Suback(7, tuple(qos for _, qos in filters))]
    assert not client.wants_close


@pytest.mark.parametrize("levels", [1_000, DEEPEST])
def test_a_deep_subscription_receives_a_deep_publish_when_the_cap_allows_it(levels: int) -> None:
    broker, _ = make_broker(max_topic_levels=DEEPEST)
    topic = deep(levels, level="") if levels == DEEPEST else deep(levels)
    subscriber = connected(broker, "deep-sub")
    subscriber.receive(encode(Subscribe(1, ((topic, 0),))))
    assert take_output(subscriber) == [Suback(1, (0,))]
    publisher = connected(broker, "deep-pub")
    publisher.receive(encode(Publish(topic, b"down here", retain=True)))
    assert take_output(subscriber) == [Publish(topic, b"down here")]
    late = connected(broker, "deep-late")
    late.receive(encode(Subscribe(1, ((topic, 0),))))
    assert take_output(late) == [Suback(1, (0,)), Publish(topic, b"down here", retain=True)]
    subscriber.receive(encode(Unsubscribe(2, (topic,))))
    assert take_output(subscriber) == [Unsuback(2)]
    assert broker.subscriptions.count == 1 and not publisher.wants_close


def test_a_deep_wildcard_filter_matches_a_deep_topic_without_recursion() -> None:
    broker, _ = make_broker(max_topic_levels=DEEPEST)
    subscriber = connected(broker, "plus")
    subscriber.receive(encode(Subscribe(1, (("/".join(["+"] * 5_000 + ["#"]), 0),))))
    take_output(subscriber)
    publisher = connected(broker, "pub")
    publisher.receive(encode(Publish(deep(6_000), b"x")))
    assert [packet.payload for packet in take_output(subscriber)] == [b"x"]  # type: ignore[union-attr]


def test_filter_over_max_topic_levels_gets_suback_failure_and_the_others_are_granted() -> None:
    broker, _ = make_broker(max_topic_levels=200)
    client = connected(broker, "capped")
    client.receive(encode(Subscribe(3, ((deep(200), 1), (deep(201), 1), (deep(1_000), 0)))))
    assert take_output(client) == [Suback(3, (1, SUBACK_FAILURE, SUBACK_FAILURE))]
    assert not client.wants_close and broker.subscriptions.count == 1


def test_publish_topic_over_max_topic_levels_closes_with_a_reason_and_fires_the_will() -> None:
    broker, _ = make_broker(max_topic_levels=200)
    watcher = connected(broker, "watcher")
    watcher.receive(encode(Subscribe(1, (("wills", 0),))))
    take_output(watcher)
    client = connected(broker, "too-deep", will=Will("wills", b"gone"))
    client.receive(encode(Publish(deep(201), b"x")))
    assert client.wants_close
    assert "PUBLISH topic has 201 levels, over max_topic_levels 200" in client.close_reason
    assert take_output(watcher) == [Publish("wills", b"gone")]


def test_will_topic_over_max_topic_levels_closes_without_a_connack() -> None:
    broker, _ = make_broker(max_topic_levels=200)
    client = broker.open("deep-will")
    client.receive(encode(Connect("deep-will", will=Will(deep(1_000), b"x"))))
    assert client.wants_close and "will topic has 1000 levels" in client.close_reason
    assert take_output(client) == []
    assert broker.stats.clients_connected == 0 and "deep-will" not in broker.sessions


def test_unsubscribe_filter_over_max_topic_levels_closes_and_removes_nothing() -> None:
    broker, _ = make_broker(max_topic_levels=200)
    client = connected(broker, "unsub")
    client.receive(encode(Subscribe(1, (("kept", 0),))))
    take_output(client)
    client.receive(encode(Unsubscribe(2, ("kept", deep(201)))))
    assert client.wants_close and "UNSUBSCRIBE filter has 201 levels" in client.close_reason
    assert take_output(client) == []


def test_the_levels_cap_is_enforced_at_its_default_of_200() -> None:
    broker, _ = make_broker()
    client = connected(broker, "default-cap")
    client.receive(encode(Subscribe(1, ((deep(200), 0), (deep(201), 0)))))
    assert take_output(client) == [Suback(1, (0, SUBACK_FAILURE))]


# -- the indexes themselves, without a broker ------------------------------------------------


def test_trie_match_and_remove_work_at_the_deepest_level_count() -> None:
    trie = SubscriptionTrie()
    topic = deep(DEEPEST, level="")
    trie.add(topic, "s", 1)
    trie.add(deep(DEEPEST - 1, level="") + "/#", "t", 0)
    assert trie.match(topic) == {"s": 1, "t": 0}
    assert trie.remove(topic, "s") and trie.remove(deep(DEEPEST - 1, level="") + "/#", "t")
    assert trie.match(topic) == {} and trie.count == 0


class WatchedChildren(dict):
    """A node's children that record whether a walk ever looked inside them."""

    looked = False

    def get(self, *args: object) -> object:
        WatchedChildren.looked = True
        return super().get(*args)

    def items(self):  # type: ignore[no-untyped-def]
        WatchedChildren.looked = True
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        WatchedChildren.looked = True
        return super().values()


def message(topic: str) -> Message:
    return Message.from_text(topic, topic.encode(), retain=True)


@pytest.mark.parametrize("topic_filter", ["news/today", "news/+", "news/#", "+/today", "$SYS/#"])
def test_retained_lookup_never_looks_inside_branches_its_filter_cannot_match(topic_filter: str) -> None:
    store = RetainedStore()
    for index in range(2_000):
        store.set(f"sensors/{index}/value", message(f"sensors/{index}/value"))
    store.set("news/today", message("news/today"))
    store.set("$SYS/broker/uptime", message("$SYS/broker/uptime"))
    sensors = store._root.children["sensors"]
    sensors.children = WatchedChildren(sensors.children)
    WatchedChildren.looked = False
    found = [retained.topic for retained in store.matching(topic_filter)]
    assert found == (["$SYS/broker/uptime"] if topic_filter.startswith("$") else ["news/today"])
    assert WatchedChildren.looked == topic_filter.startswith("+")  # only '+' must open every branch


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("#", ["a", "a/b", "a/b/c", "x/b"]),
        ("a/#", ["a", "a/b", "a/b/c"]),
        ("+/b", ["a/b", "x/b"]),
        ("+", ["a"]),
        ("+/+/c", ["a/b/c"]),
        ("$SYS/#", ["$SYS/x"]),
        ("+/x", []),
        ("a/b/c/#", ["a/b/c"]),
    ],
)
def test_retained_matching_follows_the_wildcard_rules(topic_filter: str, expected: list[str]) -> None:
    store = RetainedStore()
    for topic in ("a", "a/b", "a/b/c", "x/b", "$SYS/x"):
        store.set(topic, message(topic))
    assert sorted(m.topic for m in store.matching(topic_filter)) == expected


def test_discarding_a_retained_message_prunes_its_branch() -> None:
    store = RetainedStore()
    store.set("a/b/c", message("a/b/c"))
    store.set("a", message("a"))
    store.discard("a/b/c")
    store.discard("never/there")
    assert list(store.matching("#")) == [store.get("a")] and len(store) == 1
    assert store._root.children["a"].children == {}
