"""Topic names, topic filters and the subscription trie.

A filter is split on ``/`` into levels; ``+`` matches one level and ``#`` the rest. The trie
walks the topic's levels once, so matching costs the topic's depth, not the number of
subscriptions. Filters that start with a wildcard never match topics that start with ``$``.
"""

from __future__ import annotations

from collections.abc import Hashable

from .errors import LimitExceeded, ProtocolError


def validate_topic_name(topic: str) -> str:
    """Return ``topic`` if it may appear in a PUBLISH, else raise ProtocolError."""
    if not topic:
        raise ProtocolError("[MQTT-4.7.3-1]", "topic name must be at least one character long")
    if "\x00" in topic:
        raise ProtocolError("[MQTT-4.7.3-2]", "topic name must not contain U+0000")
    if "+" in topic or "#" in topic:
        raise ProtocolError("[MQTT-3.3.2-2]", f"topic name {topic!r} must not contain wildcards")
    return topic


def validate_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a well-formed filter, else raise ProtocolError."""
    if not topic_filter:
        raise ProtocolError("[MQTT-4.7.3-1]", "topic filter must be at least one character long")
    if "\x00" in topic_filter:
        raise ProtocolError("[MQTT-4.7.3-2]", "topic filter must not contain U+0000")
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise ProtocolError(
                "[MQTT-4.7.1-2]", f"'#' must be a whole level and the last one: {topic_filter!r}"
            )
        if "+" in level and level != "+":
            raise ProtocolError("[MQTT-4.7.1-3]", f"'+' must occupy a whole level: {topic_filter!r}")
    return topic_filter


def topic_levels(topic: str) -> int:
    """How many levels a topic or filter has: one more than its separators."""
    return topic.count("/") + 1


def check_depth(topic: str, max_levels: int, what: str) -> None:
    """Raise LimitExceeded if ``topic`` has more than ``max_levels`` levels."""
    levels = topic_levels(topic)
    if levels > max_levels:
        raise LimitExceeded(f"{what} has {levels} levels, over max_topic_levels {max_levels}")


class _Node:
    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[Hashable, int] = {}


class SubscriptionTrie:
    """Maps filters to ``{subscriber: qos}`` and finds every subscriber of a topic name.

    ``match`` merges overlapping subscriptions of one subscriber into a single entry with the
    highest granted QoS, so the broker delivers one copy per subscriber.
    """

    def __init__(self) -> None:
        self._root = _Node()
        self.count = 0

    def add(self, topic_filter: str, subscriber: Hashable, qos: int) -> None:
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Node())
        if subscriber not in node.subscribers:
            self.count += 1
        node.subscribers[subscriber] = qos

    def remove(self, topic_filter: str, subscriber: Hashable) -> bool:
        """Remove one subscription; prune empty branches. Returns whether it existed."""
        path = [self._root]
        for level in topic_filter.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if path[-1].subscribers.pop(subscriber, None) is None:
            return False
        self.count -= 1
        levels = topic_filter.split("/")
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.subscribers or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
        return True

    def match(self, topic: str) -> dict[Hashable, int]:
        """Every subscriber whose filter matches ``topic``, with its highest QoS.

        An explicit stack, not recursion: a topic may have as many levels as a packet can
        carry, and each node is visited at most once, so the cost is bounded by the trie.
        """
        result: dict[Hashable, int] = {}
        levels = topic.split("/")
        last = len(levels)
        dollar = topic.startswith("$")  # wildcards at the first level skip $-topics [MQTT-4.7.2-1]
        pending = [(self._root, 0)]
        while pending:
            node, depth = pending.pop()
            children = node.children
            # '#' also matches the parent level: "a/#" matches "a" (spec 4.7.1.2).
            multi = children.get("#")
            if multi is not None and not (dollar and depth == 0):
                _merge(result, multi.subscribers)
            if depth == last:
                _merge(result, node.subscribers)
                continue
            exact = children.get(levels[depth])
            if exact is not None:
                pending.append((exact, depth + 1))
            single = children.get("+")
            if single is not None and not (dollar and depth == 0):
                pending.append((single, depth + 1))
        return result


def _merge(result: dict[Hashable, int], subscribers: dict[Hashable, int]) -> None:
    for subscriber, qos in subscribers.items():
        if result.get(subscriber, -1) < qos:
            result[subscriber] = qos
