"""Bridge topic rules: what each side subscribes to, and how a topic changes its prefix on the way.

mosquitto's ``topic PATTERN DIRECTION QOS LOCAL_PREFIX REMOTE_PREFIX`` line means: the local
broker subscribes to ``LOCAL_PREFIX + PATTERN`` for ``out`` and ``both``, the remote broker to
``REMOTE_PREFIX + PATTERN`` for ``in`` and ``both``. A message crossing the bridge swaps one
prefix for the other: ``hq/site1/cmd/x`` arriving from the remote under ``remote_prefix
hq/site1/`` and ``local_prefix site/`` is published locally as ``site/cmd/x``.

When several rules match a topic, the first one in the configuration wins, as in mosquitto.
Finding the matching rules reuses the core's ``SubscriptionTrie``, with rule numbers standing
in for subscribers, so a bridge with many rules costs the topic's depth, not the rule count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mqtt.errors import ProtocolError
from mqtt.topics import SubscriptionTrie, validate_filter

if TYPE_CHECKING:
    from .config import BridgeTopic

INBOUND = ("in", "both")  # remote -> local
OUTBOUND = ("out", "both")  # local -> remote


@dataclass(frozen=True, slots=True)
class _Rule:
    strip: str  # the prefix a matching topic starts with on the side it comes from
    add: str  # the prefix it gets on the side it goes to


class _Direction:
    """The rules of one direction: ``filter -> (strip, add)``, first match wins."""

    def __init__(self) -> None:
        self._trie = SubscriptionTrie()
        self._rules: list[_Rule] = []
        self.filters: dict[str, int] = {}  # what to subscribe to on the sending side: filter -> QoS

    def add(self, topic_filter: str, qos: int, strip: str, add: str) -> None:
        self._trie.add(topic_filter, len(self._rules), qos)  # the rule number is the "subscriber"
        self._rules.append(_Rule(strip, add))
        # Two rules with one filter make one subscription, at the higher QoS.
        self.filters[topic_filter] = max(qos, self.filters.get(topic_filter, 0))

    def rewrite(self, topic: str) -> str | None:
        """The topic on the other side, or None when no rule carries it across."""
        matches = self._trie.match(topic)
        if not matches:
            return None
        rule = self._rules[min(matches)]  # type: ignore[type-var]  # the first rule configured wins
        # "a/#" also matches "a" itself (spec 4.7.1.2), which lacks the prefix "a/": mosquitto
        # checks the prefix too and drops such a topic rather than invent one.
        if not topic.startswith(rule.strip):
            return None
        crossed = rule.add + topic[len(rule.strip) :]
        return crossed or None


class TopicMap:
    """Both directions of one bridge's ``topic`` lines."""

    def __init__(self, topics: Iterable[BridgeTopic]) -> None:
        self._inbound = _Direction()
        self._outbound = _Direction()
        for topic in topics:
            if topic.direction not in ("in", "out", "both"):
                raise ValueError(f"bridge topic direction must be in, out or both: {topic.direction!r}")
            if not 0 <= topic.qos <= 2:
                raise ValueError(f"bridge topic QoS must be 0, 1 or 2: {topic.qos!r}")
            local, remote = topic.local_prefix, topic.remote_prefix
            if topic.pattern:
                local_filter, remote_filter = local + topic.pattern, remote + topic.pattern
            else:
                # An empty pattern ("") names one topic, the prefix itself; a side without a
                # prefix keeps the other side's name. The whole topic is the part swapped.
                local_filter, remote_filter = local or remote, remote or local
                local, remote = local_filter, remote_filter
            _check(local_filter)
            _check(remote_filter)
            if topic.direction in INBOUND:
                self._inbound.add(remote_filter, topic.qos, remote, local)
            if topic.direction in OUTBOUND:
                self._outbound.add(local_filter, topic.qos, local, remote)

    @property
    def remote_filters(self) -> dict[str, int]:
        """The bridge's SUBSCRIBE on the remote broker: filter -> QoS."""
        return self._inbound.filters

    @property
    def local_filters(self) -> dict[str, int]:
        """The bridge's SUBSCRIBE on the local broker: filter -> QoS."""
        return self._outbound.filters

    def to_local(self, remote_topic: str) -> str | None:
        return self._inbound.rewrite(remote_topic)

    def to_remote(self, local_topic: str) -> str | None:
        return self._outbound.rewrite(local_topic)


def _check(topic_filter: str) -> None:
    try:
        validate_filter(topic_filter)
    except ProtocolError as error:
        raise ValueError(f"bridge topic filter {topic_filter!r} is not valid: {error}") from None
