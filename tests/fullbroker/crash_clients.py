"""Two MQTT clients that survive their broker being killed: for the kill -9 persistence test.

Both keep their side of a persistent session (clean session 0) across reconnects, as a real
client must: the publisher resends unacknowledged QoS 1/2 PUBLISHes with DUP and the same
packet id, and PUBRELs it still owes; the subscriber remembers QoS 2 ids it has received
until their PUBREL, so a resent PUBLISH is not delivered twice (method B of the spec, 4.3.3).
"""

from __future__ import annotations

import socket
from collections import Counter

from mqtt.codec import Decoder, encode
from mqtt.packets import (
    Connack,
    Connect,
    Packet,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
)


class Link:
    """A non-blocking socket to the broker, or None while it is down."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.sock: socket.socket | None = None
        self.decoder = Decoder()
        self.connected = False  # CONNACK received

    def open(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.decoder = Decoder()
        self.connected = False
        self.send(Connect(self.client_id, clean_session=False, keepalive=30))

    def send(self, packet: Packet | bytes) -> None:
        if self.sock is None:
            return
        data = packet if isinstance(packet, bytes) else encode(packet)
        try:
            self.sock.setblocking(True)  # small packets: a blocking send keeps the test simple
            self.sock.sendall(data)
            self.sock.setblocking(False)
        except OSError:
            self.drop()

    def receive(self) -> list[Packet]:
        if self.sock is None:
            return []
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            self.drop()
            return []
        return self.decoder.feed(data)

    def drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.connected = False


class CrashPublisher:
    """Publishes numbered messages at QoS 1 and 2, keeping a window of unacknowledged ones."""

    def __init__(self, window: int = 20) -> None:
        self.link = Link("crash-publisher")
        self.window = window
        self.next_seq = 0
        self.next_id = 1
        self.unacked: dict[int, Publish] = {}  # packet id -> PUBLISH awaiting PUBACK / PUBREC
        self.releasing: set[int] = set()  # QoS 2 ids with PUBREC received, PUBCOMP awaited
        self.acknowledged: dict[int, set[int]] = {1: set(), 2: set()}  # qos -> seqs the broker owns

    def on_packet(self, packet: Packet) -> None:
        if isinstance(packet, Connack):
            self.link.connected = True
            for publish in self.unacked.values():  # resend what was never acknowledged
                self.link.send(Publish(publish.topic, publish.payload, publish.qos, dup=True,
                                       packet_id=publish.packet_id))
            for packet_id in self.releasing:
                self.link.send(Pubrel(packet_id))
        elif isinstance(packet, Puback | Pubrec) and packet.packet_id in self.unacked:
            publish = self.unacked.pop(packet.packet_id)
            self.acknowledged[publish.qos].add(int(publish.payload))
            if isinstance(packet, Pubrec):
                self.releasing.add(packet.packet_id)
                self.link.send(Pubrel(packet.packet_id))
        elif isinstance(packet, Pubcomp):
            self.releasing.discard(packet.packet_id)

    def publish_some(self, limit: int) -> None:
        """Top the window up, but publish no more than ``limit`` messages in all."""
        while self.link.connected and len(self.unacked) < self.window and self.next_seq < limit:
            qos = 1 + self.next_seq % 2
            publish = Publish(f"k/{qos}", str(self.next_seq).encode(), qos, packet_id=self.next_id)
            self.unacked[self.next_id] = publish
            self.next_id = self.next_id % 65535 + 1
            self.next_seq += 1
            self.link.send(publish)

    @property
    def idle(self) -> bool:
        return not self.unacked and not self.releasing


class CrashSubscriber:
    """A persistent subscriber to k/1 (QoS 1) and k/2 (QoS 2) counting what it is delivered."""

    def __init__(self) -> None:
        self.link = Link("crash-subscriber")
        self.subscribed = False
        self.delivered: dict[int, Counter[int]] = {1: Counter(), 2: Counter()}  # qos -> seq -> times
        self.qos2_pending: set[int] = set()  # ids received, PUBREL not yet: method B's memory

    def on_packet(self, packet: Packet) -> None:
        if isinstance(packet, Connack):
            self.link.connected = True
            if not self.subscribed:
                self.link.send(Subscribe(1, [("k/1", 1), ("k/2", 2)]))
        elif isinstance(packet, Suback):
            self.subscribed = True
        elif isinstance(packet, Publish):
            self.on_publish(packet)
        elif isinstance(packet, Pubrel):
            self.qos2_pending.discard(packet.packet_id)
            self.link.send(Pubcomp(packet.packet_id))

    def on_publish(self, packet: Publish) -> None:
        seq = int(packet.payload)
        if packet.qos == 1:
            self.delivered[1][seq] += 1
            self.link.send(Puback(packet.packet_id))  # type: ignore[arg-type]
        elif packet.qos == 2:
            if packet.packet_id not in self.qos2_pending:
                self.qos2_pending.add(packet.packet_id)  # type: ignore[arg-type]
                self.delivered[2][seq] += 1
            self.link.send(Pubrec(packet.packet_id))  # type: ignore[arg-type]
