"""Lab 12's MQTT client side: fill a broker's store with retained messages, time its start, read back.

Plain blocking sockets and the kit's codec, so that the same few lines drive mosquitto and the
kit's broker alike. A PINGREQ after a batch is the barrier: a broker handles one client's
packets in order, so its PINGRESP means every PUBLISH before it was taken in.
"""

from __future__ import annotations

import socket
import subprocess
import time

from mqtt.codec import Decoder, encode, encode_publish
from mqtt.packets import Connack, Connect, Pingreq, Pingresp, Publish, Subscribe

TOPIC_FORMAT = "lab12/{:06d}"


def mqtt_session(port: int, client_id: str, timeout: float = 10) -> socket.socket:
    """Connect, send CONNECT, read the CONNACK; raise if the broker refuses."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(encode(Connect(client_id)))
    packets = read_until(sock, Decoder(), lambda packet: isinstance(packet, Connack))
    if not packets or packets[-1].return_code != 0:
        sock.close()
        raise ConnectionError(f"no CONNACK 0 from port {port}: {packets}")
    return sock


def read_until(sock: socket.socket, decoder: Decoder, last: object) -> list[object]:
    """Packets until one for which ``last(packet)`` holds (included), or the peer closes."""
    packets: list[object] = []
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return packets
        for packet in decoder.feed(data):
            packets.append(packet)
            if last(packet):  # type: ignore[operator]
                return packets


def await_connack(
    port: int, process: subprocess.Popen[bytes], started: float, timeout: float
) -> float | None:
    """Seconds from ``started`` until the broker answers a CONNECT; None if it exits or never does.

    The first successful connect() is when the port listens; the CONNACK, that the broker serves.
    """
    while time.monotonic() - started < timeout and process.poll() is None:
        try:
            mqtt_session(port, "lab12-probe", timeout=timeout).close()
        except OSError:
            time.sleep(0.01)  # ECONNREFUSED: nothing listens yet; look again shortly
            continue
        return time.monotonic() - started
    return None


def fill(port: int, first: int, count: int, payload_size: int) -> None:
    """Retained QoS 0 messages on ``lab12/{first:06d}`` onwards, ``payload_size`` bytes each."""
    payload = b"x" * payload_size
    with mqtt_session(port, "lab12-filler") as sock:
        for number in range(first, first + count):
            topic = TOPIC_FORMAT.format(number).encode()
            sock.sendall(encode_publish(topic, payload, 0, True, False, None))
        sock.sendall(encode(Pingreq()))
        read_until(sock, Decoder(), lambda packet: isinstance(packet, Pingresp))


def retained(port: int, topic_filters: list[str], batch: int = 1, timeout: float = 60) -> tuple[int, int]:
    """(messages, payload bytes) a new subscriber to ``topic_filters`` receives: the retained set.

    The broker sends SUBACK, then the retained messages, then answers the PINGREQ sent after the
    SUBSCRIBE: the PINGRESP ends each count. ``batch`` filters go in one SUBSCRIBE, so that a
    broker that bounds one burst of retained copies (the kit's: max_pending_output, 1 MiB)
    sends them all.
    """
    count = size = 0
    with mqtt_session(port, "lab12-reader", timeout=timeout) as sock:
        decoder = Decoder()
        for first in range(0, len(topic_filters), batch):
            chosen = tuple((topic_filter, 0) for topic_filter in topic_filters[first : first + batch])
            sock.sendall(encode(Subscribe(1 + first % 60000, chosen)) + encode(Pingreq()))
            packets = read_until(sock, decoder, lambda packet: isinstance(packet, Pingresp))
            publishes = [packet for packet in packets if isinstance(packet, Publish)]
            count += len(publishes)
            size += sum(len(packet.payload) for packet in publishes)
    return count, size


def topics(count: int) -> list[str]:
    return [TOPIC_FORMAT.format(number) for number in range(count)]
