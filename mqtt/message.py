"""One application message, shared by every subscriber that receives it.

Encodings are built lazily and cached: the QoS 0 form is the publisher's own wire bytes when
they already are a plain QoS 0 PUBLISH, so fan-out forwards bytes without re-encoding.
"""

from __future__ import annotations

from .codec import encode_publish


class Message:
    __slots__ = ("_plain", "delivered_retained", "payload", "qos", "retain", "topic", "topic_bytes")

    def __init__(
        self,
        topic: str,
        topic_bytes: bytes,
        payload: bytes,
        qos: int,
        retain: bool,
        plain: bytes | None = None,
    ) -> None:
        self.topic = topic
        self.topic_bytes = topic_bytes
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self._plain = plain  # QoS 0, DUP 0 wire form, when already known
        # Live copies carry RETAIN=0 [MQTT-3.3.1-9]; copies sent from the retained store, RETAIN=1.
        self.delivered_retained = False

    @classmethod
    def from_text(cls, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Message:
        return cls(topic, topic.encode("utf-8"), payload, qos, retain)

    def as_retained(self) -> Message:
        """A copy for a new subscriber, delivered with RETAIN=1 [MQTT-3.3.1-8]."""
        copy = Message(self.topic, self.topic_bytes, self.payload, self.qos, True)
        copy.delivered_retained = True
        return copy

    @property
    def size(self) -> int:
        """Bytes this message costs a queue: topic plus payload."""
        return len(self.topic_bytes) + len(self.payload)

    def plain(self) -> bytes:
        """The QoS 0 PUBLISH every QoS 0 subscriber of this copy gets, encoded at most once."""
        plain = self._plain
        if plain is None:
            plain = self._plain = encode_publish(
                self.topic_bytes, self.payload, 0, self.delivered_retained, False, None
            )
        return plain

    def encode(self, qos: int, packet_id: int | None, dup: bool = False) -> bytes:
        """The PUBLISH for one delivery; QoS 1/2 carry a per-subscriber packet id."""
        if qos == 0:
            return self.plain()
        return encode_publish(self.topic_bytes, self.payload, qos, self.delivered_retained, dup, packet_id)
