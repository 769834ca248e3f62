"""The broker core: sessions, routing, retained messages, wills, keepalive deadlines, $SYS.

A driver owns the sockets and calls this object; it never touches one itself:
    broker = Broker(clock=time.monotonic, limits=Limits())
    conn = broker.open(peer, tag=fd)   # per accepted socket
    conn.receive(data)                 # bytes read; may queue output on other connections
    for conn in broker.drain_dirty():  # connections with new output, or wanting to close
        n = sock.send(conn.pending()); conn.sent(n)
    broker.tick(now) -> deadline       # keepalive, $SYS; the driver's next wait timeout
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Callable
from itertools import count
from typing import Any

from .codec import encode_suback, encode_unsuback
from .connection import Connection
from .limits import Limits, Stats
from .message import Message
from .packets import SUBACK_FAILURE, ConnackCode, Connect, Subscribe, Unsubscribe
from .policy import Policy
from .retained import RetainedStore
from .session import Session
from .sys_topics import sys_messages
from .topics import SubscriptionTrie, check_depth, topic_levels

_MATCH_CACHE_SIZE = 4096


class Broker:
    def __init__(
        self,
        clock: Callable[[], float],
        limits: Limits | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.clock = clock
        self.limits = limits or Limits()
        self.policy = policy or Policy()
        self.stats = Stats(started_at=clock())
        self.sessions: dict[str, Session] = {}
        self.retained = RetainedStore()
        self.subscriptions = SubscriptionTrie()
        self.dirty: list[Connection] = []
        # Past max_pending_output QoS 0 is dropped and QoS 1/2 queued; past this, close.
        self.output_hard_limit = 2 * self.limits.max_pending_output + self.limits.max_packet_size
        self.on_connected: Callable[[Connection], None] | None = None  # telemetry hook
        # The driver's logger for contained faults: (connection or None, the exception).
        self.on_fault: Callable[[Connection | None, Exception], None] | None = None
        self._open_policy = type(self.policy) is Policy  # skip the per-message hook call
        self._match_cache: dict[str, dict[Any, int]] = {}
        self._deadlines: list[tuple[float, int, Connection]] = []
        self._sequence = count()
        self._next_sys = self.stats.started_at  # first $SYS snapshot on the first tick

    # -- driver contract -------------------------------------------------------------------

    connection_class = Connection  # a test may inject a subclass that fails on purpose

    def open(self, peer: str, tag: Any = None) -> Connection:
        connection = self.connection_class(self, peer, tag, self.clock())
        self._schedule(connection, connection.last_seen + self.limits.connect_timeout)
        return connection

    def drain_dirty(self) -> list[Connection]:
        """Connections that gained output or want closing since the last call."""
        dirty = self.dirty
        if not dirty:
            return dirty
        self.dirty = []
        for connection in dirty:
            connection.dirty = False
        return dirty

    def tick(self, now: float) -> float | None:
        """Expire connections and publish $SYS; return the next deadline (absolute) or None."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            scheduled, _, connection = heapq.heappop(deadlines)
            if connection.ended or scheduled != connection.next_check:
                continue  # closed, or a stale entry superseded by a later schedule
            try:
                self._expire_or_reschedule(connection, now)
            except Exception as error:  # the fault barrier: this connection's part of tick
                self.contain(connection, error)
        next_deadline = deadlines[0][0] if deadlines else None
        if self.limits.sys_interval > 0:
            if now >= self._next_sys:
                self._next_sys = now + self.limits.sys_interval
                try:
                    for message in sys_messages(self, now):
                        self.publish(message, None)
                except Exception as error:  # no one connection to blame: count and report it
                    self.contain(None, error)
            if next_deadline is None or self._next_sys < next_deadline:
                next_deadline = self._next_sys
        return next_deadline

    def _expire_or_reschedule(self, connection: Connection, now: float) -> None:
        deadline = connection.deadline()
        if deadline is None:
            return
        if deadline <= now:
            what = "CONNECT timeout" if connection.session is None else "keepalive expired"
            connection.close(f"{what} (no packet for {now - connection.last_seen:.1f} s)", True)
        else:
            self._schedule(connection, deadline)

    def contain(self, connection: Connection | None, error: Exception) -> None:
        """The fault barrier's core half: a bug surfaced while handling ``connection``.

        That one connection ends as an abnormal close (its will is published when closing
        still works), its unsent output is dropped, the fault is counted for $SYS, and the
        driver hears of it through ``on_fault`` to log it. Every other connection goes on.
        """
        self.stats.faults += 1
        if connection is not None:
            connection.abort(f"internal error: {type(error).__name__}: {error}")
        if self.on_fault is not None:
            self.on_fault(connection, error)

    def _schedule(self, connection: Connection, deadline: float) -> None:
        connection.next_check = deadline
        heapq.heappush(self._deadlines, (deadline, next(self._sequence), connection))

    # -- CONNECT and the end of a connection ----------------------------------------------

    def connect(self, connection: Connection, connect: Connect) -> None:
        if connect.will is not None:  # before any state changes: this closes without a CONNACK
            check_depth(connect.will.topic, self.limits.max_topic_levels, "will topic")
        client_id = connect.client_id
        if not client_id:
            if not connect.clean_session or connect.protocol_level == 3:
                connection.refuse(ConnackCode.IDENTIFIER_REJECTED, "refused: empty client id [MQTT-3.1.3-8]")
                return
            client_id = f"auto-{uuid.uuid4()}"  # the server assigns one [MQTT-3.1.3-6]
        code = self.policy.authenticate(connect)
        if code != ConnackCode.ACCEPTED:
            connection.refuse(code, f"refused: CONNACK code {code}")
            return
        limit = self.limits.max_connections
        existing = self.sessions.get(client_id)
        taking_over = existing is not None and existing.connection is not None
        if limit and self.stats.clients_connected >= limit and not taking_over:
            connection.refuse(ConnackCode.SERVER_UNAVAILABLE, f"refused: max_connections {limit} reached")
            return
        if existing is not None and existing.connection is not None:
            existing.connection.close("session taken over by a new connection [MQTT-3.1.4-2]", True)
        connection.client_id = client_id
        connection.username = connect.username
        connection.keepalive = connect.keepalive
        if connect.will is not None:
            will = connect.will
            connection.will = Message.from_text(will.topic, will.payload, will.qos, will.retain)
        session, present = self._attach_session(client_id, connect.clean_session)
        session.connection = connection
        connection.session = session
        stats = self.stats
        stats.clients_connected += 1
        stats.clients_maximum = max(stats.clients_maximum, stats.clients_connected)
        connection.accept(present)
        if present:
            session.resend_inflight()
        deadline = connection.deadline()
        if deadline is not None and deadline < connection.next_check:
            self._schedule(connection, deadline)
        if self.on_connected is not None:
            self.on_connected(connection)

    def _attach_session(self, client_id: str, clean: bool) -> tuple[Session, bool]:
        existing = self.sessions.get(client_id)
        if existing is not None and not clean and not existing.clean:
            return existing, True  # session present [MQTT-3.2.2-2]
        if existing is not None:
            self._discard_session(existing)  # clean start discards the old state [MQTT-3.1.2-6]
        session = Session(client_id, clean, self.limits, self.stats)
        self.sessions[client_id] = session
        return session, False

    def _discard_session(self, session: Session) -> None:
        for topic_filter in session.subscriptions:
            self.subscriptions.remove(topic_filter, session)
        session.subscriptions.clear()
        session.clear_outbound()
        self._match_cache.clear()
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def end(self, connection: Connection, fire_will: bool) -> None:
        """Called once per connection, by ``Connection.close``."""
        connection.ended = True
        session = connection.session
        if session is None:
            return
        self.stats.clients_connected -= 1
        will, connection.will = connection.will, None
        if session.connection is connection:
            session.connection = None
            if session.clean:
                self._discard_session(session)  # [MQTT-3.1.2-6]
        if fire_will and will is not None:
            self.publish(will, None)

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, connection: Connection, packet: Subscribe) -> None:
        session = connection.session
        assert session is not None
        max_levels = self.limits.max_topic_levels
        codes = []
        granted_filters = []
        for topic_filter, requested in packet.subscriptions:
            if topic_levels(topic_filter) > max_levels or not self.policy.may_subscribe(
                session.client_id, connection.username, topic_filter
            ):
                codes.append(SUBACK_FAILURE)  # a refusal per filter, not a silent close
                continue
            granted = min(requested, self.limits.max_qos)
            self.subscriptions.add(topic_filter, session, granted)
            session.subscriptions[topic_filter] = granted
            codes.append(granted)
            granted_filters.append((topic_filter, granted))
        self._match_cache.clear()
        connection.send(encode_suback(packet.packet_id, codes))
        for topic_filter, granted in granted_filters:
            self._send_retained(session, topic_filter, granted)  # also on re-subscribe [MQTT-3.8.4-3]

    def _send_retained(self, session: Session, topic_filter: str, granted: int) -> None:
        if not self.retained:
            return
        # A list first: a delivery can close a connection, whose will may change the store.
        for message in list(self.retained.matching(topic_filter)):
            session.deliver(message.as_retained(), min(message.qos, granted))

    def unsubscribe(self, connection: Connection, packet: Unsubscribe) -> None:
        session = connection.session
        assert session is not None
        for topic_filter in packet.topic_filters:  # all checked before any is removed
            check_depth(topic_filter, self.limits.max_topic_levels, "UNSUBSCRIBE filter")
        for topic_filter in packet.topic_filters:
            if session.subscriptions.pop(topic_filter, None) is not None:
                self.subscriptions.remove(topic_filter, session)
        self._match_cache.clear()
        connection.send(encode_unsuback(packet.packet_id))  # [MQTT-3.10.4-4]

    # -- publishing --------------------------------------------------------------------------

    def publish(self, message: Message, origin: Connection | None) -> None:
        """Route one message to every matching session; keep it if it is retained."""
        topic = message.topic
        if (
            not self._open_policy
            and origin is not None
            and not self.policy.may_publish(origin.client_id or "", origin.username, topic)
        ):
            return
        if message.retain:
            if message.payload:
                self.retained.set(topic, message)
            else:
                self.retained.discard(topic)  # an empty retained payload clears [MQTT-3.3.1-10]
        targets = self._match_cache.get(topic)
        if targets is None:
            targets = self.subscriptions.match(topic)
            if len(self._match_cache) >= _MATCH_CACHE_SIZE:
                self._match_cache.clear()
            self._match_cache[topic] = targets
        if not targets:
            return
        published_qos = message.qos
        limit = self.limits.max_pending_output
        stats = self.stats
        for session, granted in targets.items():
            if published_qos and granted:
                session.deliver(message, min(published_qos, granted))
                continue
            connection = session.connection
            if connection is None:
                if self.limits.queue_qos0:
                    session.enqueue(message, 0)
            # Connection.congested, inlined: this branch runs once per QoS 0 delivery.
            elif (
                not (connection.backed_up and connection.output_bytes >= limit) and not connection.wants_close
            ):
                connection.send(message.plain())  # live copies carry RETAIN=0 [MQTT-3.3.1-9]
                stats.messages_sent += 1
            else:
                stats.publish_dropped += 1
