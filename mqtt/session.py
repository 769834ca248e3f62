"""Per-client state that outlives a connection: subscriptions, packet ids, QoS 1/2 windows.

Outbound QoS 1/2 messages enter an in-flight window (``max_inflight``); the rest wait in a
bounded queue, which is also where a persistent session collects messages while offline.
Order is kept: once anything is queued, new messages queue behind it.

A session is state only: it never touches a socket or a connection's output. Its methods
return the packet to send, and the connection sends it. A persistent session reports every
change of durable state to the store hook (``mqtt.store_hook``), so a restart can resume it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from .codec import encode_pubrel
from .errors import ProtocolError
from .limits import Limits, Stats
from .message import Message
from .store_hook import RestoredSession, StoreHook

if TYPE_CHECKING:
    from .connection import Connection

# What a session holds before it needs a container, shared by every session: most clients never
# queue a message or send a QoS 2 PUBLISH, and an empty deque costs 624 bytes, an empty set 216,
# an empty dict 64. ``len``, ``in``, ``get`` and iteration work on these read-only stand-ins;
# the first write swaps in a real container of the session's own.
_NO_QUEUE: tuple[()] = ()
_NO_IDS: frozenset[int] = frozenset()
_NO_INFLIGHT: Mapping[int, InFlight] = MappingProxyType({})


class InFlight:
    """An outbound QoS 1/2 message awaiting PUBACK, or PUBREC then PUBCOMP."""

    __slots__ = ("message", "qos", "released", "seq")

    def __init__(self, message: Message, qos: int, seq: int, released: bool = False) -> None:
        self.message = message
        self.qos = qos
        self.seq = seq  # the store's key for this delivery
        self.released = released  # QoS 2: PUBREC arrived, PUBREL sent, awaiting PUBCOMP


class Session:
    __slots__ = (
        "bridge",
        "clean",
        "client_id",
        "connection",
        "disconnected_at",
        "inbound_qos2",
        "inflight",
        "limits",
        "next_packet_id",
        "next_seq",
        "queue",
        "queued_bytes",
        "stats",
        "store",
        "subscriptions",
        "trusted",
        "username",
    )

    def __init__(self, client_id: str, clean: bool, limits: Limits, stats: Stats) -> None:
        self.client_id = client_id
        self.clean = clean
        self.limits = limits
        self.stats = stats
        self.username: str | None = None  # of the client that last attached: ACLs apply offline too
        self.trusted = False  # a bridge's own client: no ACL applies
        self.bridge = False  # a bridge: it keeps the publisher's RETAIN flag
        self.connection: Connection | None = None
        self.disconnected_at = 0.0  # broker clock; for session expiry while no client is attached
        self.store: StoreHook | None = None  # set for a persistent session when a store is in use
        self.subscriptions: dict[str, int] = {}  # filter -> granted QoS
        # packet id -> delivery; insertion order = send order, for redelivery. Shared until used.
        self.inflight: dict[int, InFlight] | Mapping[int, InFlight] = _NO_INFLIGHT
        # (message, qos, seq); the shared empty tuple until the first message queues
        self.queue: deque[tuple[Message, int, int]] | tuple[()] = _NO_QUEUE
        self.queued_bytes = 0
        # ids of QoS 2 PUBLISHes received, PUBREL pending; shared and empty until the first
        self.inbound_qos2: set[int] | frozenset[int] = _NO_IDS
        self.next_packet_id = 1
        self.next_seq = 1

    def __repr__(self) -> str:
        return f"Session({self.client_id!r}, clean={self.clean})"

    # -- outbound -------------------------------------------------------------------------

    def deliver(self, message: Message, qos: int, link_ready: bool) -> bytes | None:
        """The PUBLISH to send now, or None: the message waits in the queue (or was dropped).

        ``link_ready``: a client is attached and its connection is not congested.
        """
        if link_ready and not self.queue and len(self.inflight) < self.limits.max_inflight:
            seq = self.next_seq
            self.next_seq = seq + 1
            return self._start(message, qos, seq, queued=False)
        self.enqueue(message, qos)
        return None

    def enqueue(self, message: Message, qos: int) -> bool:
        """Queue behind the window; False (and counted) when the queue is full."""
        size = message.size
        limits = self.limits
        if (
            len(self.queue) >= limits.max_queued_messages
            or self.queued_bytes + size > limits.max_queued_bytes
        ):
            self.stats.publish_dropped += 1
            return False
        seq = self.next_seq
        self.next_seq = seq + 1
        self._writable_queue().append((message, qos, seq))
        self.queued_bytes += size
        if self.store is not None:
            self.store.outbound_added(
                self.client_id, seq, message.topic, message.payload, qos, message.delivered_retained, None
            )
        return True

    def _writable_queue(self) -> deque[tuple[Message, int, int]]:
        queue = self.queue
        if isinstance(queue, deque):
            return queue
        self.queue = queue = deque()
        return queue

    def _writable_inflight(self) -> dict[int, InFlight]:
        inflight = self.inflight
        if isinstance(inflight, dict):
            return inflight
        self.inflight = inflight = {}
        return inflight

    def queue_full(self) -> bool:
        limits = self.limits
        return len(self.queue) >= limits.max_queued_messages or self.queued_bytes >= limits.max_queued_bytes

    def next_queued(self) -> bytes | None:
        """Move the oldest queued message into the window if it has room; its PUBLISH, or None."""
        if not self.queue or len(self.inflight) >= self.limits.max_inflight:
            return None
        queue = self._writable_queue()
        message, qos, seq = queue.popleft()
        if not queue:
            self.queue = _NO_QUEUE  # drained: give the deque's block back
        self.queued_bytes -= message.size
        return self._start(message, qos, seq, queued=True)

    def _start(self, message: Message, qos: int, seq: int, queued: bool) -> bytes:
        store = self.store
        if qos:
            packet_id = self._allocate_packet_id()
            inflight = self.inflight
            if inflight is _NO_INFLIGHT:
                inflight = self.inflight = {}
            inflight[packet_id] = InFlight(message, qos, seq)  # type: ignore[index]
            if store is not None:
                if queued:
                    store.outbound_sent(self.client_id, seq, packet_id)
                else:
                    store.outbound_added(
                        self.client_id, seq, message.topic, message.payload, qos,
                        message.delivered_retained, packet_id,
                    )
            packet = message.encode(qos, packet_id)
        else:
            if queued and store is not None:
                store.outbound_done(self.client_id, seq)  # QoS 0 completes as it is sent
            packet = message.plain()
        stats = self.stats
        stats.publish_sent += 1
        stats.publish_bytes_sent += len(message.payload)
        return packet

    def _allocate_packet_id(self) -> int:
        packet_id = self.next_packet_id
        while packet_id in self.inflight:
            packet_id = packet_id % 65535 + 1
        self.next_packet_id = packet_id % 65535 + 1
        return packet_id

    def inflight_packets(self) -> list[bytes]:
        """On reconnect: unacknowledged PUBLISHes again with DUP=1, and pending PUBRELs [MQTT-4.4.0-1]."""
        return [
            encode_pubrel(packet_id)
            if entry.released
            else entry.message.encode(entry.qos, packet_id, dup=True)
            for packet_id, entry in self.inflight.items()
        ]

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
        self._complete(packet_id, entry)

    def pubrec(self, packet_id: int) -> None:
        """PUBREC: the QoS 2 message arrived; from now on resend only PUBREL (the caller sends it)."""
        entry = self.inflight.get(packet_id)
        if entry is None or entry.released:
            return
        if entry.qos != 2:
            raise ProtocolError("[MQTT-4.3.2]", f"PUBREC for packet {packet_id}, a QoS 1 delivery")
        entry.released = True
        if self.store is not None:
            self.store.outbound_released(self.client_id, entry.seq)

    def pubcomp(self, packet_id: int) -> None:
        """PUBCOMP completes a QoS 2 delivery whose PUBREC has arrived."""
        entry = self.inflight.get(packet_id)
        if entry is None:
            return
        if entry.qos != 2:
            raise ProtocolError("[MQTT-4.3.2]", f"PUBCOMP for packet {packet_id}, a QoS 1 delivery")
        if not entry.released:
            raise ProtocolError("[MQTT-4.3.3]", f"PUBCOMP for packet {packet_id} before its PUBREC")
        self._complete(packet_id, entry)

    def _complete(self, packet_id: int, entry: InFlight) -> None:
        del self.inflight[packet_id]  # type: ignore[attr-defined]  # it held the entry: a real dict
        if self.store is not None:
            self.store.outbound_done(self.client_id, entry.seq)

    # -- inbound QoS 2 ----------------------------------------------------------------------

    def receive_qos2(self, packet_id: int) -> bool:
        """True the first time a QoS 2 id arrives (route it); False for a resend before PUBREL."""
        if packet_id in self.inbound_qos2:
            return False
        if not self.inbound_qos2:
            self.inbound_qos2 = set()  # the first: swap the shared empty frozenset for a set
        self.inbound_qos2.add(packet_id)  # type: ignore[union-attr]
        if self.store is not None:
            self.store.inbound_qos2_added(self.client_id, packet_id)
        return True

    def release_qos2(self, packet_id: int) -> None:
        """PUBREL: forget the id [MQTT-4.3.3-2]."""
        if packet_id in self.inbound_qos2:
            self.inbound_qos2.discard(packet_id)  # type: ignore[union-attr]
            if self.store is not None:
                self.store.inbound_qos2_removed(self.client_id, packet_id)

    # -- whole-session changes --------------------------------------------------------------

    def clear_outbound(self) -> None:
        self.inflight = _NO_INFLIGHT
        self.queue = _NO_QUEUE
        self.queued_bytes = 0

    def restore(self, saved: RestoredSession) -> None:
        """Rebuild the windows a store kept (no store events: the rows exist already)."""
        self.username = saved.username
        self.inbound_qos2 = set(saved.inbound_qos2) or _NO_IDS
        for delivery in saved.outbound:
            message = Message.from_text(delivery.topic, delivery.payload, delivery.qos, delivery.retain)
            message.delivered_retained = delivery.retain
            self.next_seq = max(self.next_seq, delivery.seq + 1)
            if delivery.packet_id is None:
                self._writable_queue().append((message, delivery.qos, delivery.seq))
                self.queued_bytes += message.size
            else:
                self._writable_inflight()[delivery.packet_id] = InFlight(
                    message, delivery.qos, delivery.seq, delivery.released
                )
                self.next_packet_id = delivery.packet_id % 65535 + 1
