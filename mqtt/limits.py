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
    # mosquitto's message_size_limit: a PUBLISH whose payload is longer is acknowledged and
    # dropped (max_packet_size, by contrast, closes the connection). 0 means no limit.
    max_payload: int = 0
    max_keepalive: int = 65535  # a CONNECT asking for longer gets CONNACK 0x02, as mosquitto 2.0
    # A connected client whose messages are being dropped (it does not read) is cut off with an
    # abortive close once the drops have gone on this long, in seconds.
    slow_client_grace: float = 30.0
    # mosquitto's persistent_client_expiration: a persistent session disconnected this long is
    # discarded, in seconds. 0 means never.
    session_expiry: float = 0.0

    @property
    def output_close_threshold(self) -> int:
        """Unsent bytes past which a backed-up connection is closed (2 x max_pending_output + a packet)."""
        return 2 * self.max_pending_output + self.max_packet_size


class Stats:
    """Counters the broker updates in place; ``$SYS/broker/...`` topics publish them.

    Names follow mosquitto's: a "message" is any MQTT packet, a "publish" is a PUBLISH.
    """

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "clients_connected",
        "clients_expired",
        "clients_maximum",
        "connections_opened",
        "faults",
        "messages_received",
        "messages_sent",
        "publish_bytes_received",
        "publish_bytes_sent",
        "publish_denied",
        "publish_dropped",
        "publish_received",
        "publish_sent",
        "started_at",
    )

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.bytes_received = 0
        self.bytes_sent = 0
        self.clients_connected = 0
        self.clients_maximum = 0
        self.clients_expired = 0  # persistent sessions discarded by session_expiry
        self.connections_opened = 0  # sockets handed to the core, for load/connections
        self.messages_received = 0  # packets of any kind
        self.messages_sent = 0
        self.publish_received = 0  # PUBLISH packets, and their payload bytes
        self.publish_sent = 0
        self.publish_bytes_received = 0
        self.publish_bytes_sent = 0
        self.publish_dropped = 0  # a full queue, a congested client, an oversize payload
        self.publish_denied = 0  # refused by the policy (ACL) or aimed at $SYS
        self.faults = 0  # exceptions the fault barrier contained (Broker.contain)
