"""The broker core: sessions, routing, retained messages, wills, keepalive deadlines, $SYS.

A driver owns the sockets and calls this object; it never touches one itself:
    broker = Broker(clock=time.monotonic, limits=Limits())
    conn = broker.open(peer, tag=fd)   # per accepted socket
    conn.receive(data)                 # bytes read; may queue output on other connections
    for conn in broker.drain_dirty():  # connections with new output, or wanting to close
        n = os.write(conn.tag, conn.pending()); conn.sent(n)
    if now >= broker.next_deadline:    # keepalive, $SYS: only once one is due
        broker.tick(now)               # the driver's next wait timeout: next_deadline - now

Hooks with plain data crossing them: ``policy`` (authentication, per-filter subscribe,
publish, and a read check per delivery), ``store`` (durable state changes, see
``mqtt.store_hook``) with ``restore`` at start-up, and ``on_connected``/``on_fault``.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Callable
from typing import Any

from .codec import encode_suback, encode_unsuback
from .connection import Connection
from .limits import Limits, Stats
from .message import Message
from .packets import SUBACK_FAILURE, ConnackCode, Connect, Subscribe, Unsubscribe
from .policy import Policy
from .retained import RetainedStore
from .session import Session
from .store_hook import RestoredState, StoreHook
from .sys_topics import LoadAverages, sys_messages
from .timers import DeadlineWheel
from .topics import SubscriptionTrie, check_depth, topic_levels

_MATCH_CACHE_SIZE = 4096


class Broker:
    def __init__(
        self,
        clock: Callable[[], float],
        limits: Limits | None = None,
        policy: Policy | None = None,
        store: StoreHook | None = None,
    ) -> None:
        self.clock = clock
        self.limits = limits or Limits()
        self.policy = policy or Policy()
        self.store = store  # persistent sessions and retained messages report their changes here
        self.stats = Stats(started_at=clock())
        self.sessions: dict[str, Session] = {}
        self.retained = RetainedStore()
        self.subscriptions = SubscriptionTrie()
        self.dirty: list[Connection] = []
        self.on_connected: Callable[[Connection], None] | None = None  # telemetry hook
        # The driver's logger for contained faults: (connection or None, the exception).
        self.on_fault: Callable[[Connection | None, Exception], None] | None = None
        self._open_policy = type(self.policy) is Policy  # skip the per-message hook call
        self._match_cache: dict[str, dict[Any, int]] = {}
        self._deadlines = DeadlineWheel()  # CONNECT timeouts and keepalives, one reference each
        # The earliest time tick() has work (infinity: none). A driver reads it every loop turn
        # and calls tick() only once it has passed: a turn that nothing asked for costs nothing.
        self.next_deadline = self.stats.started_at
        self._next_sys = self.stats.started_at  # first $SYS snapshot on the first tick
        self.load = LoadAverages(self.stats.started_at)
        self._next_expiry_scan = self.stats.started_at

    # -- driver contract -------------------------------------------------------------------

    connection_class = Connection  # a test may inject a subclass that fails on purpose

    def open(self, peer: str, tag: Any = None, trusted: bool = False) -> Connection:
        """A new client connection. ``trusted``: the driver's own (a bridge's in-process client),
        exempt from authentication and ACLs, as mosquitto exempts its bridges."""
        connection = self.connection_class(self, peer, tag, self.clock())
        connection.trusted = trusted
        self.stats.connections_opened += 1
        self._schedule(connection, connection.last_seen + self.limits.connect_timeout)
        return connection

    def mark_dirty(self, connection: Connection) -> None:
        """A connection gained output or wants closing: the driver visits it at drain_dirty."""
        self.dirty.append(connection)

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
        for connection in self._deadlines.due(now):
            if connection.ended:
                continue
            try:
                self._expire_or_reschedule(connection, now)  # type: ignore[arg-type]
            except Exception as error:  # the fault barrier: this connection's part of tick
                self.contain(connection, error)  # type: ignore[arg-type]
        next_deadline = self._deadlines.next_due()  # infinity while no connection is timed
        if self.limits.session_expiry > 0:
            if now >= self._next_expiry_scan:
                self._expire_sessions(now)
                self._next_expiry_scan = now + min(60.0, self.limits.session_expiry / 4)
            next_deadline = min(next_deadline, self._next_expiry_scan)
        if self.limits.sys_interval > 0:
            if now >= self._next_sys:
                self._next_sys = now + self.limits.sys_interval
                try:
                    for message in sys_messages(self, now):
                        self.publish(message, None)
                except Exception as error:  # no one connection to blame: count and report it
                    self.contain(None, error)
            next_deadline = min(next_deadline, self._next_sys)
        self.next_deadline = next_deadline
        return None if next_deadline == math.inf else next_deadline

    def _expire_sessions(self, now: float) -> None:
        """Discard persistent sessions whose client has been away longer than session_expiry."""
        oldest = now - self.limits.session_expiry
        expired = [
            session
            for session in self.sessions.values()
            if session.connection is None and session.disconnected_at <= oldest
        ]
        for session in expired:
            self._discard_session(session)
        self.stats.clients_expired += len(expired)

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
        due = self._deadlines.schedule(connection, deadline)
        if due < self.next_deadline:
            self.next_deadline = due

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
        code = ConnackCode.ACCEPTED if connection.trusted else self.policy.authenticate(connect)
        if code != ConnackCode.ACCEPTED:
            connection.refuse(code, f"refused: CONNACK code {code} (not authorised)")
            return
        if connect.keepalive > self.limits.max_keepalive:  # mosquitto 2.0's max_keepalive
            most = self.limits.max_keepalive
            reason = f"refused: keepalive {connect.keepalive} s is over max_keepalive {most} s"
            connection.refuse(ConnackCode.IDENTIFIER_REJECTED, reason)
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
        connection.protocol_level = connect.protocol_level
        connection.bridge = connect.bridge
        if connect.will is not None:
            will = connect.will
            connection.will = Message.from_text(will.topic, will.payload, will.qos, will.retain)
        session, present = self._attach_session(client_id, connect.clean_session)
        session.connection = connection
        session.username = connect.username
        session.trusted = connection.trusted
        session.bridge = connect.bridge
        if session.store is not None:
            session.store.session_saved(client_id, connect.username)
        connection.session = session
        stats = self.stats
        stats.clients_connected += 1
        stats.clients_maximum = max(stats.clients_maximum, stats.clients_connected)
        connection.accept(present)
        deadline = connection.deadline()
        if deadline is not None and self._deadlines.slot_of(deadline) < connection.next_check:
            self._schedule(connection, deadline)  # a keepalive shorter than the CONNECT timeout
        if self.on_connected is not None:
            self.on_connected(connection)

    def _attach_session(self, client_id: str, clean: bool) -> tuple[Session, bool]:
        existing = self.sessions.get(client_id)
        if existing is not None and not clean and not existing.clean:
            return existing, True  # session present [MQTT-3.2.2-2]
        if existing is not None:
            self._discard_session(existing)  # clean start discards the old state [MQTT-3.1.2-6]
        session = Session(client_id, clean, self.limits, self.stats)
        if not clean:
            session.store = self.store
        self.sessions[client_id] = session
        return session, False

    def _discard_session(self, session: Session) -> None:
        for topic_filter in session.subscriptions:
            self.subscriptions.remove(topic_filter, session)
        session.subscriptions.clear()
        session.clear_outbound()
        self._match_cache.clear()
        if session.store is not None:
            session.store.session_removed(session.client_id)
            session.store = None
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def restore(self, state: RestoredState) -> None:
        """Load what a store kept, before the first client connects (no store events fire)."""
        now = self.clock()
        for message in state.retained:
            self.retained.set(message.topic, message)
        for saved in state.sessions:
            session = Session(saved.client_id, False, self.limits, self.stats)
            session.restore(saved)
            session.disconnected_at = now - saved.disconnected_for
            for topic_filter, qos in saved.subscriptions.items():
                session.subscriptions[topic_filter] = qos
                self.subscriptions.add(topic_filter, session, qos)
            session.store = self.store
            self.sessions[saved.client_id] = session
        self._match_cache.clear()

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
            session.disconnected_at = self.clock()
            if session.clean:
                self._discard_session(session)  # [MQTT-3.1.2-6]
            elif session.store is not None:
                session.store.session_disconnected(session.client_id)
        if fire_will and will is not None:
            self.publish(will, None)

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, connection: Connection, packet: Subscribe) -> None:
        session = connection.session
        assert session is not None
        max_levels = self.limits.max_topic_levels
        codes = []
        granted_filters = []
        store = session.store
        for topic_filter, requested in packet.subscriptions:
            # Ten thousand clients subscribing to one filter keep one copy of its text, not 10,000.
            topic_filter = sys.intern(topic_filter)
            allowed = connection.trusted or self.policy.may_subscribe(
                session.client_id, connection.username, topic_filter
            )
            if topic_levels(topic_filter) > max_levels or not allowed:
                codes.append(SUBACK_FAILURE)  # a refusal per filter, not a silent close
                continue
            granted = min(requested, self.limits.max_qos)
            self.subscriptions.add(topic_filter, session, granted)
            session.subscriptions[topic_filter] = granted
            if store is not None:
                store.subscription_set(session.client_id, topic_filter, granted)
            codes.append(granted)
            granted_filters.append((topic_filter, granted))
        self._match_cache.clear()
        connection.send(encode_suback(packet.packet_id, codes))
        for topic_filter, granted in granted_filters:
            self._send_retained(session, topic_filter, granted)  # also on re-subscribe [MQTT-3.8.4-3]

    def _send_retained(self, session: Session, topic_filter: str, granted: int) -> None:
        if not self.retained:
            return
        check_read = not self._open_policy
        output_limit = self.limits.max_pending_output
        # A list first: a delivery can close a connection, whose will may change the store.
        for message in list(self.retained.matching(topic_filter)):
            if check_read and not (
                session.trusted or self.policy.may_read(session.client_id, session.username, message.topic)
            ):
                continue  # a read-denied topic never reaches a client, retained copies included
            qos = min(message.qos, granted)
            connection = session.connection
            # A burst bounded like any other: past the output bound (QoS 0) or a full queue
            # (QoS 1/2) the rest is counted as dropped, before its payload is even read, so a
            # 'SUBSCRIBE #' against a large restored store cannot pull it all into memory.
            if (qos == 0 and connection is not None and connection.output_bytes >= output_limit) or (
                qos and session.queue_full()
            ):
                self.stats.publish_dropped += 1
                continue
            self._deliver(session, message.as_retained(), qos)

    def _deliver(self, session: Session, message: Message, qos: int) -> None:
        """One QoS 1/2 delivery (or a retained copy): now if the client keeps up, else queued."""
        connection = session.connection
        ready = connection is not None and not connection.congested
        packet = session.deliver(message, qos, ready)
        if packet is not None:
            connection.send(packet)  # type: ignore[union-attr]
        elif connection is not None and not ready:
            connection.lagging()

    def unsubscribe(self, connection: Connection, packet: Unsubscribe) -> None:
        session = connection.session
        assert session is not None
        for topic_filter in packet.topic_filters:  # all checked before any is removed
            check_depth(topic_filter, self.limits.max_topic_levels, "UNSUBSCRIBE filter")
        for topic_filter in packet.topic_filters:
            if session.subscriptions.pop(topic_filter, None) is not None:
                self.subscriptions.remove(topic_filter, session)
                if session.store is not None:
                    session.store.subscription_removed(session.client_id, topic_filter)
        self._match_cache.clear()
        connection.send(encode_unsuback(packet.packet_id))  # [MQTT-3.10.4-4]

    # -- publishing --------------------------------------------------------------------------

    def publish(self, message: Message, origin: Connection | None) -> None:
        """Route one message to every matching session; keep it if it is retained."""
        topic = message.topic
        if origin is not None and (
            (topic.startswith("$SYS") and not origin.bridge)  # clients cannot write the broker's $SYS
            or (
                not self._open_policy
                and not origin.trusted
                and not self.policy.may_publish(origin.client_id or "", origin.username, topic)
            )
        ):
            self.stats.publish_denied += 1
            return
        if message.retain:
            self._retain(topic, message)
        targets = self._match_cache.get(topic)
        if targets is None:
            targets = self.subscriptions.match(topic)
            if len(self._match_cache) >= _MATCH_CACHE_SIZE:
                self._match_cache.clear()
            self._match_cache[topic] = targets
        if not targets:
            return
        published_qos = message.qos
        count, payload_bytes = message.count, message.payload_bytes  # a MessageRun is several
        stats = self.stats
        check_read = not self._open_policy
        may_read = self.policy.may_read
        # A bridge never gets its own messages back: that would loop them between brokers.
        echo = origin.session if origin is not None and origin.bridge else None
        retained = message.retain
        plain: bytes | None = None  # the QoS 0 wire form, taken on the first QoS 0 delivery
        live = 0  # QoS 0 copies queued on live connections, counted once after the loop
        for session, granted in targets.items():
            if session is echo or (
                check_read
                and not session.trusted
                and not may_read(session.client_id, session.username, topic)
            ):
                continue
            if retained and session.bridge:
                # A bridge gets the publisher's RETAIN flag, so the remote retains it too.
                self._deliver(session, message.as_retained(), min(published_qos, granted))
                continue
            if published_qos and granted:
                self._deliver(session, message, min(published_qos, granted))
                continue
            connection = session.connection
            if connection is None:
                if self.limits.queue_qos0:
                    for single in message.singles() if count > 1 else (message,):  # type: ignore[attr-defined]
                        session.enqueue(single, 0)
            elif not connection.congested and not connection.wants_close:
                if plain is None:
                    plain = message.plain()  # live copies carry RETAIN=0 [MQTT-3.3.1-9]
                connection.send(plain, count)
                live += 1
            else:
                stats.publish_dropped += count
                connection.lagging()
        if live:
            stats.publish_sent += live * count
            stats.publish_bytes_sent += live * payload_bytes

    def _retain(self, topic: str, message: Message) -> None:
        store = self.store if self.store is not None and not topic.startswith("$SYS") else None
        if message.payload:
            self.retained.set(topic, message)
            if store is not None:
                store.retained_set(topic, message.payload, message.qos)
        elif self.retained.get(topic) is not None:  # an empty retained payload clears [MQTT-3.3.1-10]
            self.retained.discard(topic)
            if store is not None:
                store.retained_cleared(topic)
