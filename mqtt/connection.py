"""One client's byte stream: bytes in through ``receive``, bytes out through ``pending``/``sent``.

This is the sans-I/O handle a driver keeps per socket. It frames and dispatches packets; the
hot PUBLISH path reads the fixed header in place, reuses the previous topic's decoded string
when the topic bytes repeat, and forwards a plain QoS 0 frame's bytes as they arrived.
Back-to-back plain QoS 0 PUBLISHes of one topic in one read (a sensor's stream, a busy
publisher) are a ``PublishRun``: checked frame by frame, then routed once as one slice.

Output rules live here and only here: ``congested`` is a plain boolean that ``send`` and
``sent`` keep current, so the broker's fan-out loop reads one attribute per delivery. A client
that stays congested past ``slow_client_grace`` while messages keep coming is cut off with an
abortive close (``abortive``: the driver resets the socket instead of flushing it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .codec import (
    PINGRESP_BYTES,
    decode_body,
    encode_connack,
    encode_puback,
    encode_pubcomp,
    encode_pubrec,
    encode_pubrel,
    publish_topic,
    split_frames,
)
from .errors import LimitExceeded, ProtocolError, UnacceptableProtocolLevel
from .fixed_header import AWAITING_CONNECT_FIRST_BYTES, first_bytes_for
from .message import Message, MessageRun
from .packets import ConnackCode, Connect, PacketType, Pingreq, Subscribe, Unsubscribe
from .session import Session
from .topics import check_depth

if TYPE_CHECKING:
    from .broker import Broker
    from .limits import Stats

_TO_CLIENT_ONLY = {PacketType.CONNACK, PacketType.SUBACK, PacketType.UNSUBACK, PacketType.PINGRESP}


class Connection:
    __slots__ = (
        "_last_topic",
        "_last_topic_bytes",
        "_out",
        "abortive",
        "backed_up",
        "bridge",
        "broker",
        "bytes_needed",
        "client_id",
        "close_reason",
        "congested",
        "congested_since",
        "dirty",
        "ended",
        "first_bytes",
        "keepalive",
        "last_seen",
        "next_check",
        "output_bytes",
        "partial_frame",
        "peer",
        "protocol_level",
        "session",
        "tag",
        "trusted",
        "username",
        "wants_close",
        "will",
    )

    def __init__(self, broker: Broker, peer: str, tag: Any, now: float) -> None:
        # The broker: for what a packet asks of it, and its limits, counters and clock. Reached
        # through this one reference rather than copied into slots: 10,000 idle connections
        # would otherwise hold 10,000 copies of each (and a bound method apiece, 64 bytes).
        self.broker = broker
        self.peer = peer
        self.tag = tag  # the driver's own handle (its fd), as C would store in epoll_data
        self.session: Session | None = None
        self.client_id: str | None = None
        self.username: str | None = None
        self.keepalive = 0
        self.protocol_level = 0  # from CONNECT: 3 (MQTT 3.1) or 4 (3.1.1)
        self.trusted = False  # set by Broker.open for the driver's own clients (bridges)
        self.bridge = False  # a mosquitto bridge (protocol level | 0x80): never echo its own messages
        self.will: Message | None = None
        self.last_seen = now
        self.next_check = 0  # the deadline wheel's slot of this connection's live entry
        self.wants_close = False
        self.close_reason = ""
        self.ended = False
        self.dirty = False
        self.abortive = False  # close with RST (SO_LINGER 0), dropping unsent output
        # Framing state (codec.FrameState), kept here rather than in a Decoder of its own.
        self.first_bytes = AWAITING_CONNECT_FIRST_BYTES
        self.partial_frame: bytearray | None = None
        self.bytes_needed = 0
        self._out: list[bytes] | None = None  # queued output; no list at all while there is none
        self.output_bytes = 0
        self.backed_up = False  # the last send left bytes behind: the peer is not keeping up
        # Backed up and past max_pending_output: QoS 0 is dropped, QoS 1/2 wait in the session.
        self.congested = False
        self.congested_since = 0.0
        self._last_topic_bytes: bytes | None = None  # None: even an empty topic gets validated
        self._last_topic = ""

    def __repr__(self) -> str:
        return f"Connection({self.peer}, client_id={self.client_id!r})"

    # -- the driver contract -------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Parse and act on bytes read from the socket; may queue output on other connections."""
        if self.wants_close:
            return
        broker = self.broker
        stats = broker.stats
        self.last_seen = broker.clock()
        stats.bytes_received += len(data)
        run: PublishRun | None = None  # plain QoS 0 PUBLISHes of one topic so far, not yet routed
        try:
            for buffer, start, body, end in split_frames(self, data, broker.limits.max_packet_size):
                stats.messages_received += 1
                first = buffer[start]
                if run is not None:
                    if first == 0x30 and run.extend(buffer, start, body, end, stats):
                        continue  # one more of the run: a few comparisons, no routing
                    ended, run = run, None
                    broker.publish(ended.message(), self)
                    if self.wants_close:
                        return
                if first >> 4 == 3:
                    run = self._on_publish(first, buffer, start, body, end)
                else:
                    self._on_control(first, buffer[body:end])
                if self.wants_close:
                    return
            if run is not None:
                ended, run = run, None
                broker.publish(ended.message(), self)
        except UnacceptableProtocolLevel as error:
            self.refuse(ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION, f"refused: {error}")
        except ProtocolError as error:
            self._route_before_close(run)
            self.close(f"protocol error: {error}", fire_will=True)
        except LimitExceeded as error:
            self._route_before_close(run)
            self.close(f"limit exceeded: {error}", fire_will=True)

    def _route_before_close(self, run: PublishRun | None) -> None:
        """Messages that arrived whole before a bad packet are routed, as if one by one."""
        if run is not None and not self.wants_close:
            self.broker.publish(run.message(), self)

    def pending(self) -> bytes:
        """Everything queued for this socket, joined into one buffer for one ``write``."""
        out = self._out
        if not out:
            return b""
        if len(out) > 1:
            joined = b"".join(out)
            out.clear()
            out.append(joined)
        return out[0]

    def pending_buffers(self, most: int = 1024) -> list[bytes]:
        """The queued buffers as they are, for one scatter/gather ``writev`` (at most IOV_MAX)."""
        return self._out[:most] if self._out else []

    def sent(self, count: int, offered: int | None = None) -> None:
        """The driver's send wrote ``count`` bytes (0 for EAGAIN) from the front of the output.

        A short send means the socket is backed up: only then do the output limits bite, so a
        fast subscriber is never throttled for what one busy loop turn queued for it.
        ``offered`` is how many bytes the send was given, for a threaded driver whose other
        threads may append output meanwhile; by default, everything that was pending.
        """
        out = self._out
        if count <= 0:
            self.backed_up = bool(out)
            self._update_congestion()
            return
        short = count < offered if offered is not None else count < self.output_bytes
        self.output_bytes -= count
        self.broker.stats.bytes_sent += count
        if not self.output_bytes:
            self._out = None  # all sent: an idle connection keeps no empty list
        else:
            assert out is not None
            whole = 0
            while count >= len(out[whole]):
                count -= len(out[whole])
                whole += 1
            del out[:whole]
            if count:
                out[0] = out[0][count:]
        if short:
            self.backed_up = True
            self._update_congestion()
        else:  # everything went: neither backed up nor, therefore, congested
            self.backed_up = self.congested = False
        session = self.session
        if session is not None and session.queue and session.connection is self:
            self.pump()

    def lost(self, reason: str) -> None:
        """The socket died (EOF, reset, write error): fire the will, keep a persistent session."""
        if not self.ended:
            self.close(reason, fire_will=True)

    # -- output ----------------------------------------------------------------------------

    def send(self, data: bytes, packets: int = 1) -> None:
        """Queue ``data`` (``packets`` MQTT packets: a MessageRun is several) for the socket."""
        out = self._out
        if out is None:
            self._out = [data]
        else:
            out.append(data)
        self.output_bytes += len(data)
        broker = self.broker
        broker.stats.messages_sent += packets
        if self.backed_up:  # the rare case: the last send was short
            if not self.congested:
                self._update_congestion()
            if self.output_bytes > broker.limits.output_close_threshold and not self.ended:
                # Only replies (PUBACK, SUBACK...) can pile up this far: a client that sends but
                # never reads. Dropping it is the one way to keep its backlog bounded.
                self.cut_off(f"client is not reading: {self.output_bytes} bytes of output pending")
        if not self.dirty:  # wake(), inlined: this runs once per packet queued
            self.dirty = True
            broker.mark_dirty(self)

    def wake(self) -> None:
        """Have the driver visit this connection at its next flush (output or a close to act on)."""
        if not self.dirty:
            self.dirty = True
            self.broker.mark_dirty(self)

    def _update_congestion(self) -> None:
        """The one congestion rule: backed up (a short send) and past max_pending_output."""
        broker = self.broker
        congested = self.backed_up and self.output_bytes >= broker.limits.max_pending_output
        if congested and not self.congested:
            self.congested_since = broker.clock()
        self.congested = congested

    def lagging(self) -> None:
        """A message for this client found it congested (and was dropped or queued).

        Past ``slow_client_grace`` the client is cut off: otherwise a subscriber that stopped
        reading keeps its socket, its Send-Q and its session queue full forever.
        """
        waited = self.broker.clock() - self.congested_since
        if waited > self.broker.limits.slow_client_grace and not self.ended:
            self.cut_off(f"client is not reading: congested for {waited:.1f} s, messages dropped")

    def cut_off(self, reason: str) -> None:
        """An abortive close: drop unsent output; the driver resets the socket (SO_LINGER 0)."""
        self.abortive = True
        self.close(reason, fire_will=True)
        self._out = None
        self.output_bytes = 0

    def pump(self) -> None:
        """Move queued messages of this client's session to the socket while it keeps up."""
        session = self.session
        if session is None:
            return
        while not self.congested:
            packet = session.next_queued()
            if packet is None:
                return
            self.send(packet)

    def close(self, reason: str, fire_will: bool) -> None:
        """Ask the driver to close this socket after flushing what is queued."""
        if self.ended:
            return
        self.wants_close = True
        self.close_reason = reason
        self.broker.end(self, fire_will)
        self.wake()

    def abort(self, reason: str) -> None:
        """End after an internal error (``Broker.contain``): no more output, the driver closes."""
        try:
            self.close(reason, fire_will=True)
        except Exception:
            self.ended = True  # closing ran into a fault as well: give up on the will
        self.wants_close = True
        self.close_reason = reason
        self._out = None  # half-built state may lie behind it: send nothing more
        self.output_bytes = 0
        self.wake()

    def deadline(self) -> float | None:
        """When this connection expires: CONNECT timeout, or 1.5 x keepalive [MQTT-3.1.2-24]."""
        if self.session is None:
            return self.last_seen + self.broker.limits.connect_timeout
        if self.keepalive:
            return self.last_seen + 1.5 * self.keepalive
        return None

    # -- inbound packets -------------------------------------------------------------------

    def _on_publish(self, first: int, buffer: bytes, start: int, body: int, end: int) -> PublishRun | None:
        """Act on one PUBLISH; a plain QoS 0 one starts a run, which the caller routes."""
        session = self.session
        if session is None:
            raise ProtocolError("[MQTT-3.1.0-1]", "first packet must be CONNECT")
        qos = (first >> 1) & 0x03  # the framing already refused QoS 3 and DUP on QoS 0
        topic_end = body + 2 + ((buffer[body] << 8) | buffer[body + 1]) if end - body >= 2 else end + 1
        payload_start = topic_end + 2 if qos else topic_end
        if payload_start > end:
            raise ProtocolError("[MQTT-2.2.3]", "PUBLISH is shorter than its topic and packet id")
        topic_bytes = buffer[body + 2 : topic_end]
        broker = self.broker
        if topic_bytes == self._last_topic_bytes:
            topic = self._last_topic  # same topic as last time: skip UTF-8 decode and validation
        else:
            topic = publish_topic(topic_bytes)
            check_depth(topic, broker.limits.max_topic_levels, "PUBLISH topic")
            self._last_topic = topic
            self._last_topic_bytes = topic_bytes
        stats = broker.stats
        stats.publish_received += 1
        stats.publish_bytes_received += end - payload_start
        payload = buffer[payload_start:end]
        # mosquitto's message_size_limit: acknowledged as 3.1.1 requires, then dropped.
        max_payload = broker.limits.max_payload
        routed = not max_payload or end - payload_start <= max_payload
        if not routed:
            stats.publish_dropped += 1
        if qos == 0:
            if routed and first == 0x30:
                return PublishRun(topic, buffer, start, body, topic_end, end, max_payload)
            if routed:  # RETAIN set: the retained store needs this message on its own
                broker.publish(Message(topic, topic_bytes, payload, 0, True), self)
            return None
        packet_id = (buffer[topic_end] << 8) | buffer[topic_end + 1]
        if packet_id == 0:
            raise ProtocolError("[MQTT-2.3.1-1]", "PUBLISH packet identifier must be non-zero")
        if qos == 1:
            # The PUBACK is queued first, so the publisher's socket is flushed first: its round
            # trip does not wait behind the writes (and the wake-ups) of the fan-out.
            self.send(encode_puback(packet_id))
            if routed:
                broker.publish(Message(topic, topic_bytes, payload, 1, bool(first & 1)), self)
            return None
        # QoS 2, method B: deliver on first receipt, remember the id until PUBREL [MQTT-4.3.3-2].
        if routed and session.receive_qos2(packet_id):
            broker.publish(Message(topic, topic_bytes, payload, 2, bool(first & 1)), self)
        self.send(encode_pubrec(packet_id))
        return None

    def _on_control(self, first: int, body: bytes) -> None:
        packet_type = first >> 4  # the framing already refused reserved types and flags
        session = self.session
        if first == 0x40 and session is not None and len(body) == 2 and (body[0] or body[1]):
            # PUBACK, one per message a QoS 1 subscriber gets: read its id in place. (Anything
            # unusual, such as id 0, takes the general path below, which names the rule.)
            session.puback((body[0] << 8) | body[1])
            if session.queue:
                self.pump()
            return
        if packet_type == PacketType.CONNECT:
            if session is not None:
                raise ProtocolError("[MQTT-3.1.0-2]", "a second CONNECT is a protocol violation")
            connect = decode_body(first, body)
            assert isinstance(connect, Connect)
            # From now on the first bytes are judged by the rules of the client's protocol level.
            self.first_bytes = first_bytes_for(connect.protocol_level)
            self.broker.connect(self, connect)
            return
        if session is None:
            raise ProtocolError("[MQTT-3.1.0-1]", "first packet must be CONNECT")
        if packet_type in _TO_CLIENT_ONLY:
            raise ProtocolError("[MQTT-2.2.1]", f"{PacketType(packet_type).name} is sent only by servers")
        packet = decode_body(first, body)
        if packet_type == PacketType.PUBACK:
            session.puback(packet.packet_id)  # type: ignore[union-attr]
            self.pump()
        elif packet_type == PacketType.PUBREC:
            packet_id = packet.packet_id  # type: ignore[union-attr]
            session.pubrec(packet_id)
            self.send(encode_pubrel(packet_id))  # for an unknown id too, as mosquitto does
        elif packet_type == PacketType.PUBREL:
            packet_id = packet.packet_id  # type: ignore[union-attr]
            session.release_qos2(packet_id)
            self.send(encode_pubcomp(packet_id))  # also for an unknown id, so the client can finish
        elif packet_type == PacketType.PUBCOMP:
            session.pubcomp(packet.packet_id)  # type: ignore[union-attr]
            self.pump()
        elif isinstance(packet, Subscribe):
            self.broker.subscribe(self, packet)
        elif isinstance(packet, Unsubscribe):
            self.broker.unsubscribe(self, packet)
        elif isinstance(packet, Pingreq):
            self.send(PINGRESP_BYTES)
        else:  # DISCONNECT: discard the will, end normally [MQTT-3.14.4-3]
            self.will = None
            self.close("client sent DISCONNECT", fire_will=False)

    def refuse(self, code: int, reason: str) -> None:
        """Answer CONNECT with a refusal code, then close [MQTT-3.2.2-5]."""
        self.send(encode_connack(False, code))
        self.close(reason, fire_will=False)

    def accept(self, session_present: bool) -> None:
        """CONNACK 0, then what a resumed session still owes: in-flight resends, the queue."""
        self.send(encode_connack(session_present, ConnackCode.ACCEPTED))
        session = self.session
        if session_present and session is not None:
            for packet in session.inflight_packets():
                self.send(packet)
            self.pump()


class PublishRun:
    """Plain QoS 0 PUBLISHes (first byte 0x30) of one topic, back to back in one read buffer.

    The first one was checked in full by ``_on_publish``. A next frame joins if it starts where
    the run ends and carries the same topic field, byte for byte (so it needs no decoding or
    validation), and its payload is within ``max_payload``; anything else ends the run.
    """

    __slots__ = ("buffer", "count", "end", "max_payload", "payload_bytes", "start", "topic", "topic_field")

    def __init__(
        self, topic: str, buffer: bytes, start: int, body: int, topic_end: int, end: int, max_payload: int
    ) -> None:
        self.topic = topic
        self.buffer = buffer
        self.start = start
        self.end = end
        self.topic_field = buffer[body:topic_end]  # length prefix and topic, as on the wire
        self.max_payload = max_payload
        self.count = 1
        self.payload_bytes = end - topic_end

    def extend(self, buffer: bytes, start: int, body: int, end: int, stats: Stats) -> bool:
        """Take the frame at ``start`` if it continues this run (and count it as received)."""
        topic_field = self.topic_field
        if start != self.end or buffer is not self.buffer or not buffer.startswith(topic_field, body, end):
            return False
        payload = end - body - len(topic_field)
        if self.max_payload and payload > self.max_payload:
            return False  # routed on its own, which drops and counts it
        self.end = end
        self.count += 1
        self.payload_bytes += payload
        stats.publish_received += 1
        stats.publish_bytes_received += payload
        return True

    def message(self) -> Message:
        """What the broker routes: one Message, or a MessageRun of all of them as one slice."""
        buffer, start, end = self.buffer, self.start, self.end
        topic_bytes = self.topic_field[2:]
        if self.count == 1:  # the usual case at a light load: exactly the Message of before
            payload = buffer[end - self.payload_bytes : end]
            return Message(self.topic, topic_bytes, payload, 0, False, buffer[start:end])
        return MessageRun(self.topic, topic_bytes, buffer[start:end], self.count, self.payload_bytes)
