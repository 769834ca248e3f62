"""One application message, shared by every subscriber that receives it.

Encodings are built lazily and cached: the QoS 0 form is the publisher's own wire bytes when
they already are a plain QoS 0 PUBLISH, so fan-out forwards bytes without re-encoding.

A ``MessageRun`` goes one step further: several plain QoS 0 PUBLISHes of one topic that
arrived back to back in one read, routed once and forwarded as the one slice of bytes they
are. Every subscriber of the topic gets all of them, in order, so nothing per message is
left to decide; only an offline queue needs them one by one again (``singles``).
"""

from __future__ import annotations

from .codec import Decoder, encode_publish


class Message:
    __slots__ = ("_plain", "delivered_retained", "payload", "qos", "retain", "topic", "topic_bytes")

    count = 1  # application messages this object stands for (a MessageRun: several)

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
    def payload_bytes(self) -> int:
        """Payload bytes of every message this stands for, for the $SYS byte counters."""
        return len(self.payload)

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


class MessageRun(Message):
    """``count`` plain QoS 0 PUBLISHes of one topic, contiguous on the wire: one route, one slice.

    ``plain()`` is all of them, exactly as they arrived. ``payload`` is left empty: whatever
    needs the payloads one by one (an offline session's queue) takes ``singles()`` instead.
    """

    __slots__ = ("count", "payload_bytes")

    def __init__(self, topic: str, topic_bytes: bytes, frames: bytes, count: int, payload_bytes: int) -> None:
        super().__init__(topic, topic_bytes, b"", 0, False, frames)
        self.count = count
        self.payload_bytes = payload_bytes

    def singles(self) -> list[Message]:
        """The run as one Message per PUBLISH (for an offline session's queue)."""
        payload_offset = 2 + len(self.topic_bytes)  # after the topic field: QoS 0 has no packet id
        topic, topic_bytes = self.topic, self.topic_bytes
        return [
            Message(topic, topic_bytes, frames[body + payload_offset : end], 0, False, frames[start:end])
            for frames, start, body, end in Decoder().frames(self.plain())
        ]
