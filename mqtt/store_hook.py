"""The persistence hook: what the core reports when durable state changes, and what it restores.

The core does no I/O. A store (the full broker's sqlite file, in ``fullbroker/``) subclasses
``StoreHook`` and records each event; at start-up it hands the core a ``RestoredState``.
Events carry plain data: client ids, topics, payloads, QoS, sequence numbers and packet ids.

Only what outlives a connection is reported: retained messages (except ``$SYS``, which the
broker rebuilds every interval) and persistent sessions (clean session 0). A clean session
dies with its connection, so writing it down would be wasted work.

Each outbound delivery of a persistent session has a sequence number, unique per session,
from the moment it is queued until it completes; the store keys its rows by it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .message import Message


class StoreHook:
    """Every method is a no-op; a store overrides them. Called inside the core, so keep them cheap."""

    def retained_set(self, topic: str, payload: bytes, qos: int) -> None:
        """``topic`` now retains this payload, replacing any earlier one."""

    def retained_cleared(self, topic: str) -> None:
        """An empty retained PUBLISH cleared ``topic``'s retained message."""

    def session_saved(self, client_id: str, username: str | None) -> None:
        """A persistent session was created, or a client (re)attached to it."""

    def session_disconnected(self, client_id: str) -> None:
        """Its client went away; the session waits (and may expire) from now."""

    def session_removed(self, client_id: str) -> None:
        """The session is gone: its subscriptions, deliveries and QoS 2 ids with it."""

    def subscription_set(self, client_id: str, topic_filter: str, qos: int) -> None:
        """A subscription was added, or re-granted at ``qos``."""

    def subscription_removed(self, client_id: str, topic_filter: str) -> None:
        """UNSUBSCRIBE removed it."""

    def outbound_added(
        self,
        client_id: str,
        seq: int,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        packet_id: int | None,
    ) -> None:
        """A delivery was queued (``packet_id`` None) or sent at once under ``packet_id``."""

    def outbound_sent(self, client_id: str, seq: int, packet_id: int) -> None:
        """A queued delivery entered the in-flight window under ``packet_id``."""

    def outbound_released(self, client_id: str, seq: int) -> None:
        """QoS 2: PUBREC arrived, so a reconnect resends PUBREL, never the PUBLISH."""

    def outbound_done(self, client_id: str, seq: int) -> None:
        """The delivery completed (PUBACK, PUBCOMP, or a queued QoS 0 message was sent)."""

    def inbound_qos2_added(self, client_id: str, packet_id: int) -> None:
        """A QoS 2 PUBLISH was received and routed; its PUBREL has not come yet."""

    def inbound_qos2_removed(self, client_id: str, packet_id: int) -> None:
        """PUBREL arrived: the id may be reused by the client."""


@dataclass(slots=True)
class RestoredDelivery:
    """One outbound QoS 1/2 (or queued QoS 0) delivery as the store kept it."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool  # the RETAIN flag it is delivered with
    packet_id: int | None = None  # None: still queued
    released: bool = False  # QoS 2: PUBREC already received


@dataclass(slots=True)
class RestoredSession:
    client_id: str
    username: str | None
    disconnected_for: float  # seconds since its client went away, for session expiry
    subscriptions: dict[str, int] = field(default_factory=dict)
    outbound: list[RestoredDelivery] = field(default_factory=list)  # in seq order
    inbound_qos2: list[int] = field(default_factory=list)


@dataclass(slots=True)
class RestoredState:
    """What a store read at start-up. ``retained`` may load payloads lazily (a large store)."""

    retained: Iterable[Message] = ()
    sessions: list[RestoredSession] = field(default_factory=list)
