"""Retained messages, indexed by topic level so that a SUBSCRIBE costs what its filter matches.

A new subscription must receive every retained message its filter matches [MQTT-3.3.1-6].
Scanning every retained topic per SUBSCRIBE costs the size of the store; walking a tree of
topic levels visits only the branches the filter can reach: one child per literal level, all
children for ``+``, the whole subtree for ``#``. Walks use an explicit stack, so a topic as
deep as a packet allows cannot exhaust Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterator

from .message import Message


class _Level:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Level] = {}
        self.message: Message | None = None


class RetainedStore:
    """topic -> its retained message, with ``matching(filter)`` walking only what can match."""

    def __init__(self) -> None:
        self._root = _Level()
        self._by_topic: dict[str, Message] = {}

    def __len__(self) -> int:
        return len(self._by_topic)

    def __bool__(self) -> bool:
        return bool(self._by_topic)

    def get(self, topic: str) -> Message | None:
        return self._by_topic.get(topic)

    def items(self) -> Iterator[tuple[str, Message]]:
        return iter(self._by_topic.items())

    def set(self, topic: str, message: Message) -> None:
        """Keep ``message`` as the topic's retained message, replacing any earlier one."""
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Level()
            node = child
        node.message = message
        self._by_topic[topic] = message

    def discard(self, topic: str) -> None:
        """Forget the topic's retained message (an empty retained payload) and prune the branch."""
        if self._by_topic.pop(topic, None) is None:
            return
        levels = topic.split("/")
        path = [self._root]
        for level in levels:
            path.append(path[-1].children[level])
        path[-1].message = None
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.message is not None or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def matching(self, topic_filter: str) -> Iterator[Message]:
        """Every retained message whose topic ``topic_filter`` matches."""
        levels = topic_filter.split("/")
        last = len(levels)
        pending = [(self._root, 0)]
        while pending:
            node, depth = pending.pop()
            if depth == last:
                if node.message is not None:
                    yield node.message
                continue
            level = levels[depth]
            if level == "#":
                yield from _subtree(node, skip_dollar=depth == 0)  # "a/#" also matches "a"
            elif level == "+":
                pending.extend(
                    (child, depth + 1)
                    for name, child in node.children.items()
                    if not (depth == 0 and name.startswith("$"))  # [MQTT-4.7.2-1]
                )
            else:
                child = node.children.get(level)
                if child is not None:
                    pending.append((child, depth + 1))


def _subtree(top: _Level, skip_dollar: bool) -> Iterator[Message]:
    """The messages at ``top`` and below it; at the root, not under ``$`` topics."""
    if top.message is not None:
        yield top.message
    pending = [
        child for name, child in top.children.items() if not (skip_dollar and name.startswith("$"))
    ]
    while pending:
        node = pending.pop()
        if node.message is not None:
            yield node.message
        pending.extend(node.children.values())
