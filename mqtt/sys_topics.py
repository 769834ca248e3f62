"""The ``$SYS/broker/...`` messages, built from the core's counters (mosquitto's topic names).

``mosquitto_sub -v -t '$SYS/#'`` shows them; they are retained, so a new subscriber sees the
latest values at once. The ``load/.../1min`` family is mosquitto's: a per-minute rate over the
last interval, smoothed as the kernel smooths its load average, ``new = rate + e^(-dt/T) *
(old - rate)`` for T of 1, 5 and 15 minutes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .limits import Stats
from .message import Message

if TYPE_CHECKING:
    from .broker import Broker

VERSION = "epoll-mqtt-lab 0.2.0"

# load/<name>/<window> -> the Stats counter whose rate it smooths (mosquitto's names).
LOAD_COUNTERS = {
    "messages/received": "messages_received",
    "messages/sent": "messages_sent",
    "publish/received": "publish_received",
    "publish/sent": "publish_sent",
    "publish/dropped": "publish_dropped",
    "bytes/received": "bytes_received",
    "bytes/sent": "bytes_sent",
    "connections": "connections_opened",
    "sockets": "connections_opened",
}
LOAD_WINDOWS = {"1min": 60.0, "5min": 300.0, "15min": 900.0}


class LoadAverages:
    """Exponentially smoothed per-minute rates of a few counters, updated at each $SYS tick."""

    def __init__(self, now: float) -> None:
        self.updated_at = now
        self.last_counts: dict[str, int] = dict.fromkeys(LOAD_COUNTERS.values(), 0)
        self.values: dict[str, float] = {
            f"{name}/{window}": 0.0 for name in LOAD_COUNTERS for window in LOAD_WINDOWS
        }

    def update(self, stats: Stats, now: float) -> None:
        elapsed = now - self.updated_at
        if elapsed <= 0:
            return
        counts = {attribute: getattr(stats, attribute) for attribute in self.last_counts}
        for name, attribute in LOAD_COUNTERS.items():
            per_minute = max(0, counts[attribute] - self.last_counts[attribute]) * 60.0 / elapsed
            for window, seconds in LOAD_WINDOWS.items():
                key = f"{name}/{window}"
                decay = math.exp(-elapsed / seconds)
                self.values[key] = per_minute + decay * (self.values[key] - per_minute)
        self.last_counts = counts
        self.updated_at = now


def sys_values(broker: Broker, now: float) -> dict[str, object]:
    stats = broker.stats
    sessions = len(broker.sessions)
    connected = stats.clients_connected
    away = max(0, sessions - connected)
    stored = sum(len(session.queue) + len(session.inflight) for session in broker.sessions.values())
    stored_bytes = sum(session.queued_bytes for session in broker.sessions.values())
    values: dict[str, object] = {
        "$SYS/broker/version": VERSION,
        "$SYS/broker/uptime": f"{int(now - stats.started_at)} seconds",
        "$SYS/broker/clients/total": sessions,
        "$SYS/broker/clients/maximum": stats.clients_maximum,
        "$SYS/broker/clients/connected": connected,
        "$SYS/broker/clients/active": connected,
        "$SYS/broker/clients/disconnected": away,
        "$SYS/broker/clients/inactive": away,
        "$SYS/broker/clients/expired": stats.clients_expired,
        "$SYS/broker/messages/received": stats.messages_received,
        "$SYS/broker/messages/sent": stats.messages_sent,
        "$SYS/broker/messages/stored": stored + len(broker.retained),
        "$SYS/broker/store/messages/count": stored + len(broker.retained),
        "$SYS/broker/store/messages/bytes": stored_bytes,
        "$SYS/broker/bytes/received": stats.bytes_received,
        "$SYS/broker/bytes/sent": stats.bytes_sent,
        "$SYS/broker/publish/messages/received": stats.publish_received,
        "$SYS/broker/publish/messages/sent": stats.publish_sent,
        "$SYS/broker/publish/messages/dropped": stats.publish_dropped,
        "$SYS/broker/publish/bytes/received": stats.publish_bytes_received,
        "$SYS/broker/publish/bytes/sent": stats.publish_bytes_sent,
        # Not mosquitto topics: PUBLISHes the ACL (or the $SYS rule) refused, and exceptions the
        # fault barrier caught, each of which closed one connection.
        "$SYS/broker/publish/messages/denied": stats.publish_denied,
        "$SYS/broker/faults": stats.faults,
        "$SYS/broker/retained messages/count": len(broker.retained),
        "$SYS/broker/subscriptions/count": broker.subscriptions.count,
    }
    for key, value in broker.load.values.items():
        values[f"$SYS/broker/load/{key}"] = f"{value:.2f}"
    return values


def sys_messages(broker: Broker, now: float) -> Iterator[Message]:
    broker.load.update(broker.stats, now)
    for topic, value in sys_values(broker, now).items():
        yield Message.from_text(topic, str(value).encode(), qos=0, retain=True)
