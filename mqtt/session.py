"""Per-client state that outlives a connection: subscriptions, packet ids, QoS 1/2 windows.

Outbound QoS 1/2 messages enter an in-flight window (``max_inflight``); the rest wait in a
bounded queue, which is also where a persistent session collects messages while offline.
Order is kept: once anything is queued, new messages queue behind it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .codec import encode_pubrel
from .errors import ProtocolError
from .limits import Limits, Stats
from .message import Message

if TYPE_CHECKING:
    from .connection import Connection


class InFlight:
    """An outbound QoS 1/2 message awaiting PUBACK, or PUBREC then PUBCOMP."""

    __slots__ = ("message", "qos", "released")

    def __init__(self, message: Message, qos: int) -> None:
        self.message = message
        self.qos = qos
        self.released = False  # QoS 2: PUBREC arrived, PUBREL sent, awaiting PUBCOMP


class Session:
    __slots__ = (
        "clean",
        "client_id",
        "connection",
        "inbound_qos2",
        "inflight",
        "limits",
        "next_packet_id",
        "queue",
        "queued_bytes",
        "stats",
        "subscriptions",
    )

    def __init__(self, client_id: str, clean: bool, limits: Limits, stats: Stats) -> None:
        self.client_id = client_id
        self.clean = clean
        self.limits = limits
        self.stats = stats
        self.connection: Connection | None = None
        self.subscriptions: dict[str, int] = {}  # filter -> granted QoS
        self.inflight: dict[int, InFlight] = {}  # insertion order = send order, for redelivery
        self.queue: deque[tuple[Message, int]] = deque()
        self.queued_bytes = 0
        self.inbound_qos2: set[int] = set()  # ids of QoS 2 PUBLISHes received, PUBREL pending
        self.next_packet_id = 1

    def __repr__(self) -> str:
        return f"Session({self.client_id!r}, clean={self.clean})"

    # -- outbound -------------------------------------------------------------------------

    def deliver(self, message: Message, qos: int) -> None:
        """Send now if the window and the connection allow, else queue (bounded)."""
        connection = self.connection
        if (
            connection is None
            or self.queue
            or len(self.inflight) >= self.limits.max_inflight
            or connection.congested
        ):
            self.enqueue(message, qos)
        else:
            self._send(connection, message, qos)

    def enqueue(self, message: Message, qos: int) -> None:
        size = message.size
        limits = self.limits
        if (
            len(self.queue) >= limits.max_queued_messages
            or self.queued_bytes + size > limits.max_queued_bytes
        ):
            self.stats.publish_dropped += 1
            return
        self.queue.append((message, qos))
        self.queued_bytes += size

    def pump(self) -> None:
        """Move queued messages to the connection while the window and output bound allow."""
        connection = self.connection
        queue = self.queue
        limits = self.limits
        while (
            queue
            and connection is not None
            and len(self.inflight) < limits.max_inflight
            and not connection.congested
        ):
            message, qos = queue.popleft()
            self.queued_bytes -= message.size
            self._send(connection, message, qos)

    def _send(self, connection: Connection, message: Message, qos: int) -> None:
        if qos:
            packet_id = self._allocate_packet_id()
            self.inflight[packet_id] = InFlight(message, qos)
            connection.send(message.encode(qos, packet_id))
        else:
            connection.send(message.plain())
        self.stats.messages_sent += 1

    def _allocate_packet_id(self) -> int:
        packet_id = self.next_packet_id
        while packet_id in self.inflight:
            packet_id = packet_id % 65535 + 1
        self.next_packet_id = packet_id % 65535 + 1
        return packet_id

    def resend_inflight(self) -> None:
        """On reconnect: unacknowledged PUBLISHes again with DUP=1, and pending PUBRELs [MQTT-4.4.0-1]."""
        connection = self.connection
        assert connection is not None
        for packet_id, entry in self.inflight.items():
            if entry.released:
                connection.send(encode_pubrel(packet_id))
            else:
                connection.send(entry.message.encode(entry.qos, packet_id, dup=True))
        self.pump()

    # -- acknowledgements from the client ---------------------------------------------------
    # An ack for an id with nothing in flight is ignored: a client that reconnects after the
    # broker restarted may still be finishing old flows. An ack of the wrong kind for a
    # delivery in flight is a protocol violation, and closes the connection (as mosquitto does).

    def puback(self, packet_id: int) -> None:
        """PUBACK completes a QoS 1 delivery."""
        entry = self.inflight.get(packet_id)
        if entry is None:
            return
        if entry.qos != 1:
            raise ProtocolError("[MQTT-4.3.3]", f"PUBACK for packet {packet_id}, a QoS 2 delivery")
        del self.inflight[packet_id]
        self.pump()

    def pubrec(self, packet_id: int) -> None:
        """PUBREC: the QoS 2 message arrived; answer PUBREL, and from now on resend only PUBREL."""
        entry = self.inflight.get(packet_id)
        if entry is not None:
            if entry.qos != 2:
                raise ProtocolError("[MQTT-4.3.2]", f"PUBREC for packet {packet_id}, a QoS 1 delivery")
            entry.released = True
        connection = self.connection
        if connection is not None:
            connection.send(encode_pubrel(packet_id))  # for an unknown id too, as mosquitto does

    def pubcomp(self, packet_id: int) -> None:
        """PUBCOMP completes a QoS 2 delivery whose PUBREC has arrived."""
        entry = self.inflight.get(packet_id)
        if entry is None:
            return
        if entry.qos != 2:
            raise ProtocolError("[MQTT-4.3.2]", f"PUBCOMP for packet {packet_id}, a QoS 1 delivery")
        if not entry.released:
            raise ProtocolError("[MQTT-4.3.3]", f"PUBCOMP for packet {packet_id} before its PUBREC")
        del self.inflight[packet_id]
        self.pump()

    def clear_outbound(self) -> None:
        self.inflight.clear()
        self.queue.clear()
        self.queued_bytes = 0
