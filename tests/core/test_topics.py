"""Topic name and filter validation, and the subscription trie's matching rules (spec 4.7).

Tables first, then behaviour by example, then the trie checked against a brute-force model
over random sequences of subscribe and unsubscribe calls.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt.errors import ProtocolError
from mqtt.topics import SubscriptionTrie, validate_filter, validate_topic_name

# ---------------------------------------------------------------------------------------------
# Validation tables

VALID_TOPIC_NAMES = ["a", "a/b", "/", "/a", "a/", "a//b", " ", "a b", "$SYS/broker/uptime", "é/ü", "\ufeff"]


@pytest.mark.parametrize("topic", VALID_TOPIC_NAMES)
def test_valid_topic_name_is_returned_unchanged(topic: str) -> None:
    assert validate_topic_name(topic) == topic


@pytest.mark.parametrize(
    ("topic", "rule"),
    [
        ("", "[MQTT-4.7.3-1]"),
        ("+", "[MQTT-3.3.2-2]"),
        ("#", "[MQTT-3.3.2-2]"),
        ("a/+", "[MQTT-3.3.2-2]"),
        ("a/#", "[MQTT-3.3.2-2]"),
        ("a+b", "[MQTT-3.3.2-2]"),
        ("sport/tennis#", "[MQTT-3.3.2-2]"),
    ],
)
def test_invalid_topic_name_is_rejected_with_its_rule(topic: str, rule: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        validate_topic_name(topic)
    assert caught.value.rule == rule


VALID_FILTERS = [
    "#",
    "+",
    "+/+",
    "/+",
    "/#",
    "a/#",
    "a/+/b",
    "+/#",
    "$SYS/#",
    "a//b",
    "/",
    "sport/tennis/player1/#",
    "+/tennis/#",
    "é/+",
]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS)
def test_valid_filter_is_returned_unchanged(topic_filter: str) -> None:
    assert validate_filter(topic_filter) == topic_filter


@pytest.mark.parametrize(
    ("topic_filter", "rule"),
    [
        ("", "[MQTT-4.7.3-1]"),
        ("a/#/b", "[MQTT-4.7.1-2]"),
        ("#a", "[MQTT-4.7.1-2]"),
        ("a#", "[MQTT-4.7.1-2]"),
        ("a/b#", "[MQTT-4.7.1-2]"),
        ("#/", "[MQTT-4.7.1-2]"),
        ("##", "[MQTT-4.7.1-2]"),
        ("+#", "[MQTT-4.7.1-2]"),
        ("a+", "[MQTT-4.7.1-3]"),
        ("+a", "[MQTT-4.7.1-3]"),
        ("++", "[MQTT-4.7.1-3]"),
        ("sport+", "[MQTT-4.7.1-3]"),
        ("a/b+/c", "[MQTT-4.7.1-3]"),
    ],
)
def test_invalid_filter_is_rejected_with_its_rule(topic_filter: str, rule: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        validate_filter(topic_filter)
    assert caught.value.rule == rule


@pytest.mark.parametrize("validate", [validate_topic_name, validate_filter])
def test_MQTT_4_7_3_2_null_character_in_a_topic_or_filter_is_rejected(validate: Callable[[str], str]) -> None:
    with pytest.raises(ProtocolError):
        validate("a\x00b")


# ---------------------------------------------------------------------------------------------
# Trie behaviour by example


def subscribed(*filters: str, qos: int = 1) -> SubscriptionTrie:
    """A trie in which subscriber "s" holds each of ``filters`` at ``qos``."""
    trie = SubscriptionTrie()
    for topic_filter in filters:
        trie.add(topic_filter, "s", qos)
    return trie


@pytest.mark.parametrize(
    ("topic_filter", "matching", "not_matching"),
    [
        ("a/b", ["a/b"], ["a", "a/b/c", "a/c", "b", "a/b/"]),
        ("a/+", ["a/b", "a/"], ["a", "a/b/c", "b/a"]),
        ("+", ["a", "finance"], ["a/b", "/finance", "/"]),
        ("+/+", ["/finance", "a/b", "/"], ["a", "a/b/c"]),
        ("/+", ["/finance", "/"], ["finance", "a/b"]),
        ("#", ["a", "a/b/c", "/", "/a"], []),
        ("a/#", ["a", "a/", "a/b", "a/b/c"], ["ab", "b/a", "b"]),
        ("sport/tennis/#", ["sport/tennis", "sport/tennis/player1/ranking"], ["sport", "sport/tennisball"]),
        ("a/+/c", ["a/b/c", "a//c"], ["a/c", "a/b/c/d"]),
        ("+/#", ["a", "a/b", "/"], []),
    ],
)
def test_filter_matches_exactly_the_topics_the_spec_says(
    topic_filter: str, matching: list[str], not_matching: list[str]
) -> None:
    trie = subscribed(topic_filter)
    for topic in matching:
        assert trie.match(topic) == {"s": 1}, topic
    for topic in not_matching:
        assert trie.match(topic) == {}, topic


@pytest.mark.parametrize("topic_filter", ["#", "+", "+/monitor/Clients", "+/#", "+/+/+"])
def test_filter_starting_with_a_wildcard_does_not_match_a_dollar_topic(topic_filter: str) -> None:
    trie = subscribed(topic_filter)
    assert trie.match("$SYS/monitor/Clients") == {}
    assert trie.match("$SYS") == {}


@pytest.mark.parametrize("topic_filter", ["$SYS/#", "$SYS/monitor/+", "$SYS/+/Clients", "$SYS/+/+"])
def test_filter_starting_with_dollar_matches_a_dollar_topic(topic_filter: str) -> None:
    assert subscribed(topic_filter).match("$SYS/monitor/Clients") == {"s": 1}


def test_dollar_sys_hash_also_matches_its_parent_level() -> None:
    assert subscribed("$SYS/#").match("$SYS") == {"s": 1}


def test_dollar_inside_a_later_level_is_matched_by_wildcards() -> None:
    assert subscribed("#").match("a/$b") == {"s": 1}
    assert subscribed("a/+").match("a/$b") == {"s": 1}


def test_overlapping_filters_of_one_subscriber_give_one_entry_at_the_highest_qos() -> None:
    trie = SubscriptionTrie()
    trie.add("a/b", "s", 0)
    trie.add("a/+", "s", 2)
    trie.add("#", "s", 1)
    trie.add("a/#", "s", 0)
    trie.add("a/+", "other", 1)
    assert trie.match("a/b") == {"s": 2, "other": 1}
    assert trie.match("a") == {"s": 1}


def test_subscribing_again_replaces_the_qos_without_counting_twice() -> None:
    trie = SubscriptionTrie()
    trie.add("a", "s", 2)
    trie.add("a", "s", 0)
    assert trie.match("a") == {"s": 0}
    assert trie.count == 1


def test_remove_returns_true_once_then_false() -> None:
    trie = subscribed("a/b", "a/#")
    assert trie.remove("a/b", "s") is True
    assert trie.remove("a/b", "s") is False
    assert trie.count == 1
    assert trie.match("a/b") == {"s": 1}  # still through a/#


@pytest.mark.parametrize(
    ("topic_filter", "subscriber"),
    [("x/y", "s"), ("a/b", "nobody"), ("a", "s"), ("a/b/c", "s"), ("+", "s")],
    ids=["unknown-filter", "unknown-subscriber", "prefix-of-a-filter", "extension-of-a-filter", "wildcard"],
)
def test_remove_of_an_unknown_subscription_returns_false_and_changes_nothing(
    topic_filter: str, subscriber: str
) -> None:
    trie = subscribed("a/b")
    assert trie.remove(topic_filter, subscriber) is False
    assert trie.count == 1
    assert trie.match("a/b") == {"s": 1}


def test_remove_prunes_branches_left_empty_and_keeps_shared_ones() -> None:
    # Pruning is invisible through match(), so this one test looks at the trie's nodes.
    trie = subscribed("a/b/c", "a", "x/y")
    trie.remove("a/b/c", "s")
    assert set(trie._root.children) == {"a", "x"}
    assert trie._root.children["a"].children == {}
    trie.remove("a", "s")
    trie.remove("x/y", "s")
    assert trie._root.children == {}
    assert trie.count == 0


def test_removing_one_subscriber_keeps_the_others_on_the_same_filter() -> None:
    trie = SubscriptionTrie()
    trie.add("a/+", "s", 1)
    trie.add("a/+", "t", 2)
    assert trie.remove("a/+", "s") is True
    assert trie.match("a/b") == {"t": 2}
    assert trie.count == 1


# ---------------------------------------------------------------------------------------------
# Trie against a brute-force model

# A few levels only, so that random filters and topics collide often.
LEVELS = ["a", "b", "", "$SYS"]
topics = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4).map("/".join).filter(bool)
filters = st.builds(
    lambda head, ends_in_hash: "/".join([*head, "#"] if ends_in_hash else head),
    st.lists(st.sampled_from([*LEVELS, "+"]), max_size=4),
    st.booleans(),
).filter(bool)
subscribe_calls = st.tuples(st.just("add"), filters, st.sampled_from("st"), st.integers(0, 2))
unsubscribe_calls = st.tuples(st.just("remove"), filters, st.sampled_from("st"), st.just(0))


def spec_matches(topic_filter: str, topic: str) -> bool:
    """Spec 4.7 written out level by level, as the reference for the trie."""
    if topic.startswith("$") and topic_filter[0] in "+#":
        return False
    filter_levels, topic_levels = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True  # "#" matches the remaining levels, and also the parent level
        if index == len(topic_levels) or level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


@given(st.lists(subscribe_calls | unsubscribe_calls, max_size=30), st.lists(topics, min_size=1, max_size=8))
def test_trie_agrees_with_the_spec_after_any_subscribe_unsubscribe_sequence(
    calls: list[tuple[str, str, str, int]], probe_topics: list[str]
) -> None:
    trie = SubscriptionTrie()
    model: dict[tuple[str, str], int] = {}
    for action, topic_filter, subscriber, qos in calls:
        if action == "add":
            trie.add(topic_filter, subscriber, qos)
            model[topic_filter, subscriber] = qos
        else:
            existed = (topic_filter, subscriber) in model
            assert trie.remove(topic_filter, subscriber) is existed
            model.pop((topic_filter, subscriber), None)
    assert trie.count == len(model)
    for topic in probe_topics:
        expected: dict[str, int] = {}
        for (topic_filter, subscriber), qos in model.items():
            if spec_matches(topic_filter, topic):
                expected[subscriber] = max(qos, expected.get(subscriber, -1))
        assert trie.match(topic) == expected
    for topic_filter, subscriber in list(model):
        trie.remove(topic_filter, subscriber)
    assert trie.count == 0
    assert trie._root.children == {}  # everything pruned
