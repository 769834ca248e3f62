"""Test clients: paho-mqtt (a real, independent MQTT implementation) and a raw socket client.

The raw client sends exact bytes, for protocol violations and for many connections without
a thread each; paho checks that a real client library interoperates.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import time
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as paho

from mqtt.codec import Decoder, encode
from mqtt.packets import Connack, Connect, Packet

from .waiting import wait_until


@dataclass
class PahoClient:
    """A connected paho client whose received messages land in ``messages``."""

    client: paho.Client
    messages: queue.Queue = field(default_factory=queue.Queue)
    disconnected: list = field(default_factory=list)
    connack: list = field(default_factory=list)

    def next_message(self, timeout: float = 5.0) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def no_message(self, within: float) -> bool:
        try:
            self.messages.get(timeout=within)
        except queue.Empty:
            return True
        return False

    def subscribe(self, topic: str, qos: int = 0) -> None:
        granted: list = []
        self.client.on_subscribe = lambda client, userdata, mid, codes, properties: granted.append(codes)
        self.client.subscribe(topic, qos)
        wait_until(lambda: granted, what=f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(timeout=5)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def paho_client(
    port: int,
    client_id: str | None = None,
    clean_session: bool = True,
    keepalive: int = 60,
    will: tuple[str, bytes, int, bool] | None = None,
    host: str = "127.0.0.1",
    login: tuple[str, str] | None = None,
) -> PahoClient:
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id=client_id if client_id is not None else f"test-{uuid.uuid4().hex[:8]}",
        protocol=paho.MQTTv311,
        clean_session=clean_session,
    )
    wrapper = PahoClient(client)
    client.on_message = lambda c, userdata, message: wrapper.messages.put(message)
    client.on_connect = lambda c, userdata, flags, code, properties: wrapper.connack.append((flags, code))
    client.on_disconnect = lambda c, userdata, flags, code, properties: wrapper.disconnected.append(code)
    if will is not None:
        client.will_set(will[0], will[1], qos=will[2], retain=will[3])
    if login is not None:
        client.username_pw_set(*login)
    client.connect(host, port, keepalive=keepalive)
    client.loop_start()
    wait_until(lambda: wrapper.connack, what="CONNACK")
    return wrapper


class RawClient:
    """A blocking TCP socket speaking MQTT through the project's codec, byte-exact."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.decoder = Decoder()
        self.received: list[Packet] = []

    def send(self, data: bytes | Packet) -> None:
        self.sock.sendall(data if isinstance(data, bytes | bytearray) else encode(data))

    def connect(self, client_id: str = "", **fields: object) -> Connack:
        self.send(Connect(client_id or f"raw-{uuid.uuid4().hex[:8]}", **fields))  # type: ignore[arg-type]
        connack = self.expect(Connack)
        return connack

    def expect(self, packet_type: type, timeout: float = 5.0) -> Packet:
        """The next packet, which must be of ``packet_type``."""
        packet = self.next_packet(timeout)
        assert isinstance(packet, packet_type), f"expected {packet_type.__name__}, got {packet!r}"
        return packet

    def next_packet(self, timeout: float = 5.0) -> Packet:
        deadline = time.monotonic() + timeout
        while not self.received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet arrived")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.received.extend(self.decoder.feed(data))
        return self.received.pop(0)

    def is_closed_by_server(self, timeout: float = 5.0) -> bool:
        """True once the server has closed (EOF or reset); packets before the close are kept."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.received.extend(self.decoder.feed(data))
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
