"""The ``$SYS/broker/...`` messages, built from the core's counters (mosquitto's topic names).

``mosquitto_sub -v -t '$SYS/#'`` shows them; they are retained, so a new subscriber sees the
latest values at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .message import Message

if TYPE_CHECKING:
    from .broker import Broker

VERSION = "epoll-mqtt-lab 0.1.0"


def sys_values(broker: Broker, now: float) -> dict[str, object]:
    stats = broker.stats
    sessions = len(broker.sessions)
    return {
        "$SYS/broker/version": VERSION,
        "$SYS/broker/uptime": f"{int(now - stats.started_at)} seconds",
        "$SYS/broker/clients/connected": stats.clients_connected,
        "$SYS/broker/clients/active": stats.clients_connected,
        "$SYS/broker/clients/total": sessions,
        "$SYS/broker/clients/disconnected": sessions - stats.clients_connected,
        "$SYS/broker/clients/maximum": stats.clients_maximum,
        "$SYS/broker/messages/received": stats.messages_received,
        "$SYS/broker/messages/sent": stats.messages_sent,
        "$SYS/broker/bytes/received": stats.bytes_received,
        "$SYS/broker/bytes/sent": stats.bytes_sent,
        "$SYS/broker/publish/messages/dropped": stats.publish_dropped,
        # Not a mosquitto topic: exceptions the fault barrier caught, each closing one connection.
        "$SYS/broker/faults": stats.faults,
        "$SYS/broker/retained messages/count": len(broker.retained),
        "$SYS/broker/subscriptions/count": broker.subscriptions.count,
    }


def sys_messages(broker: Broker, now: float) -> Iterator[Message]:
    for topic, value in sys_values(broker, now).items():
        yield Message.from_text(topic, str(value).encode(), qos=0, retain=True)
