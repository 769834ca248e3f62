"""Every limit the core enforces, and the counters it keeps for $SYS.

Limits are plain values so a driver can fill them from command-line flags and a test can
shrink them to provoke each overflow path.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_packet_size: int = 1 << 20  # bytes in one packet, header included
    max_inflight: int = 20  # outbound QoS 1/2 messages awaiting acknowledgement, per client
    max_queued_messages: int = 1000  # per session, beyond the in-flight window (mosquitto's default)
    max_queued_bytes: int = 16 << 20  # per session
    queue_qos0: bool = False  # queue QoS 0 for offline persistent sessions (mosquitto: off)
    # Unsent bytes per live connection before QoS 0 is dropped and QoS 1/2 wait in the session
    # queue; a connection whose backlog passes 2 x this + max_packet_size is closed.
    max_pending_output: int = 1 << 20
    max_connections: int = 0  # connected clients; 0 means unlimited
    max_qos: int = 2  # highest QoS granted to a subscription
    # Levels in a topic or filter (mosquitto 2.0.11 accepts 201). A filter over it gets SUBACK
    # 0x80; a PUBLISH topic, will topic or UNSUBSCRIBE filter over it closes the connection.
    max_topic_levels: int = 200
    connect_timeout: float = 30.0  # seconds a socket may stay open without sending CONNECT
    sys_interval: float = 10.0  # seconds between $SYS publications; 0 turns them off


class Stats:
    """Counters the broker updates in place; ``$SYS/broker/...`` topics publish them."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "clients_connected",
        "clients_maximum",
        "faults",
        "messages_received",
        "messages_sent",
        "publish_dropped",
        "started_at",
    )

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.bytes_received = 0
        self.bytes_sent = 0
        self.clients_connected = 0
        self.clients_maximum = 0
        self.messages_received = 0
        self.messages_sent = 0
        self.publish_dropped = 0
        self.faults = 0  # exceptions the fault barrier contained (Broker.contain)
