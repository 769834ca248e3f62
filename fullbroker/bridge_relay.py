"""The relay at the heart of a bridge: packets pass between two MQTT sessions, topics rewritten.

A bridge is a client of both brokers. Toward the remote it is an ordinary network client;
toward the local broker it is an in-process ``Connection`` of the core, fed bytes as a socket
would feed them. Everything the remote sends is *client-bound* traffic of the remote session
(PUBLISH with the remote's packet ids, acks of our PUBLISHes), and becomes *server-bound*
traffic of the local session, and the other way round. MQTT keeps client-originated and
server-originated packet ids apart, so each id can keep its value as it crosses:

    remote PUBLISH id 7 ──> local PUBLISH id 7 ──> the core's PUBACK 7 ──> remote PUBACK 7
    the core's PUBLISH id 3 ──> remote PUBLISH id 3 ──> remote PUBACK 3 ──> local PUBACK 3

Only a PUBLISH is rebuilt (its topic changes prefix); acks cross as the very bytes they are.
Nothing here writes to a socket: ``from_local`` hands bytes to ``write_remote``, and it is
only ever called from the bridge's flush, after the server committed its store.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mqtt.broker import Broker
from mqtt.codec import Decoder, decode_body, encode, encode_puback, encode_pubcomp, encode_pubrec
from mqtt.connection import Connection
from mqtt.packets import SUBACK_FAILURE, Connack, Connect, PacketType, Publish, Suback, Subscribe, Unsubscribe

from .bridge_remote import LinkDown
from .bridge_topics import TopicMap

if TYPE_CHECKING:
    from .bridge_link import Bridge

_ACKS = (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP)
_IGNORED_FROM_LOCAL = (PacketType.UNSUBACK, PacketType.PINGRESP)


class Relay:
    """One connected period of a bridge: the local connection and the way to the remote."""

    def __init__(
        self,
        name: str,
        topics: TopicMap,
        local: Connection,
        write_remote: Callable[[bytes | memoryview], None],
        log: logging.Logger,
    ) -> None:
        self._name = name
        self._topics = topics
        self.local = local
        self._write_remote = write_remote
        self._log = log
        self._local_limit = local.broker.limits.max_packet_size
        # The core's output is well-formed by construction and bounded by its own limits.
        self._local_frames = Decoder()
        # QoS 2 messages of the core that no rule carries out (see _drop_outbound): their
        # PUBREL is answered here instead of being sent to a remote that never saw them.
        self._swallowed: set[int] = set()

    @classmethod
    def open(
        cls,
        broker: Broker,
        bridge: Bridge,
        write_remote: Callable[[bytes | memoryview], None],
        log: logging.Logger,
    ) -> Relay:
        """Connect the bridge's client of the local core: CONNECT (level 0x84), then SUBSCRIBE.

        The 0x84 level makes the core treat the connection as a bridge: it never sends the
        bridge's own messages back to it, so what came in from the remote does not go out again.
        """
        topics = bridge.topics
        # tag: the server's flush phase hands this connection back to the bridge by it.
        # Trusted: the bridge is the broker's own client, exempt from passwords and ACLs.
        local = broker.open(peer=f"bridge/{bridge.name}", tag=bridge, trusted=True)
        relay = cls(bridge.name, topics, local, write_remote, log)
        connect = Connect(bridge.local_clientid, bridge.config.cleansession, keepalive=0, bridge=True)
        local.receive(encode(connect))
        if local.wants_close:
            raise LinkDown(f"the local broker refused the bridge: {local.close_reason}")
        wanted = topics.local_filters
        session = local.session
        # A resumed session keeps the filters of an older configuration: drop those.
        stale = [f for f in session.subscriptions if f not in wanted] if session is not None else []
        if stale:
            local.receive(encode(Unsubscribe(1, tuple(stale))))
        if wanted:
            local.receive(encode(Subscribe(2, tuple(wanted.items()))))
        return relay

    # -- remote -> local ------------------------------------------------------------------------

    def from_remote(self, buffer: bytes, start: int, body: int, end: int) -> None:
        """One frame the remote sent after its CONNACK (PUBLISH or an ack): into the core."""
        kind = buffer[start] >> 4
        if kind == PacketType.PUBLISH:
            self._inbound_publish(buffer, start, body, end)
        elif kind in _ACKS:
            self.local.receive(buffer[start:end])  # ids and bytes unchanged (see module doc)
        else:
            raise LinkDown(f"protocol error: the remote sent {PacketType(kind).name}")

    def _inbound_publish(self, buffer: bytes, start: int, body: int, end: int) -> None:
        packet = decode_body(buffer[start], buffer[body:end])
        assert isinstance(packet, Publish)
        local_topic = self._topics.to_local(packet.topic)
        if local_topic is None:
            self._drop_inbound(packet, "no 'in' topic rule matches it")
            return
        if local_topic == packet.topic:
            frame: bytes = buffer[start:end]  # no prefixes to swap: forward the bytes as they came
        else:
            frame = encode(dataclasses.replace(packet, topic=local_topic))
        if len(frame) > self._local_limit:
            # Fed in, it would make the core close the bridge's connection, and the remote
            # would resend it after every reconnect: refuse this one message instead.
            self._drop_inbound(packet, f"{len(frame)} bytes exceed max_packet_size {self._local_limit}")
            return
        self.local.receive(frame)

    def _drop_inbound(self, packet: Publish, why: str) -> None:
        """Acknowledge and drop a remote PUBLISH the bridge will not carry, so it is not resent.

        The ack goes into the local connection's output, not to the socket: there it keeps
        its place among the core's own acks (QoS 1 acks go back in order, [MQTT-4.6.0-2])
        and leaves only in the flush. A QoS 2 PUBREL then reaches the core, which completes
        an unknown id with PUBCOMP.
        """
        log = self._log
        log.warning("Bridge %s: dropping a message on %s from the remote: %s", self._name, packet.topic, why)
        if packet.qos == 1:
            self.local.send(encode_puback(packet.packet_id))  # type: ignore[arg-type]
        elif packet.qos == 2:
            self.local.send(encode_pubrec(packet.packet_id))  # type: ignore[arg-type]

    # -- local -> remote ------------------------------------------------------------------------

    def from_local(self, data: bytes) -> None:
        """Bytes the core wrote to the bridge's connection (whole frames): toward the remote."""
        for buffer, start, body, end in self._local_frames.frames(data):
            kind = buffer[start] >> 4
            if kind == PacketType.PUBLISH:
                self._outbound_publish(buffer, start, body, end)
            elif kind in _ACKS:
                self._outbound_ack(kind, buffer, start, end)
            elif kind == PacketType.CONNACK:
                self._local_connack(decode_body(buffer[start], buffer[body:end]))
            elif kind == PacketType.SUBACK:
                self._local_suback(decode_body(buffer[start], buffer[body:end]))
            elif kind not in _IGNORED_FROM_LOCAL:
                raise LinkDown(f"the local broker wrote {PacketType(kind).name} to the bridge")

    def _outbound_publish(self, buffer: bytes, start: int, body: int, end: int) -> None:
        packet = decode_body(buffer[start], buffer[body:end])
        assert isinstance(packet, Publish)
        remote_topic = self._topics.to_remote(packet.topic)
        if remote_topic is None:
            self._drop_outbound(packet)
        elif remote_topic == packet.topic:
            self._write_remote(buffer[start:end])
        else:
            self._write_remote(encode(dataclasses.replace(packet, topic=remote_topic)))

    def _drop_outbound(self, packet: Publish) -> None:
        """A delivery no 'out' rule carries (left in a persistent session by an older config).

        The core must still see it acknowledged, or it would stay in flight forever.
        """
        topic = packet.topic
        self._log.warning("Bridge %s: not sending %s to the remote: no 'out' rule for it", self._name, topic)
        if packet.qos == 1:
            self.local.receive(encode_puback(packet.packet_id))  # type: ignore[arg-type]
        elif packet.qos == 2:
            self._swallowed.add(packet.packet_id)  # type: ignore[arg-type]
            self.local.receive(encode_pubrec(packet.packet_id))  # type: ignore[arg-type]

    def _outbound_ack(self, kind: int, buffer: bytes, start: int, end: int) -> None:
        if kind == PacketType.PUBREL:
            packet_id = (buffer[end - 2] << 8) | buffer[end - 1]
            if packet_id in self._swallowed:
                self._swallowed.discard(packet_id)
                self.local.receive(encode_pubcomp(packet_id))
                return
        self._write_remote(buffer[start:end])

    def _local_connack(self, connack: object) -> None:
        assert isinstance(connack, Connack)
        if connack.return_code:
            raise LinkDown(f"the local broker refused the bridge: CONNACK {connack.return_code}")
        if connack.session_present:
            self._log.info("Bridge %s: resuming the local session", self._name)

    def _local_suback(self, suback: object) -> None:
        assert isinstance(suback, Suback)
        if SUBACK_FAILURE in suback.return_codes:
            codes = suback.return_codes
            self._log.warning("Bridge %s: the local broker refused a subscription: %s", self._name, codes)
