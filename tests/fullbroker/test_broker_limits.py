"""Every limit the config sets, enforced on a running broker, without harming other clients.

max_connections refuses at accept, before any CONNECT; message_size_limit drops oversize
payloads after acknowledging them; max_keepalive refuses with CONNACK 0x02; a subscriber
that stops reading is cut off with a reset once its grace runs out, never left in FIN_WAIT_1.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from mqtt.packets import Connack, Puback, Publish, Suback, Subscribe
from tests.support.clients import RawClient
from tests.support.waiting import wait_until

from .broker_process import log_shows, start_broker

OPEN = "listener 1883 127.0.0.1\nallow_anonymous true\n"


def test_max_connections_refuses_at_accept_without_waiting_for_connect(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, OPEN + "max_connections 3\n")
    try:
        # Accepted in backlog order, so the fourth meets three open sockets that sent nothing.
        silent = [socket.create_connection(("127.0.0.1", broker.port)) for _ in range(3)]
        extra = RawClient(broker.port)
        assert extra.is_closed_by_server()  # closed at once, without a byte from it
        log_shows(broker, "max_connections 3")
        silent.pop().close()

        def connects() -> bool:
            client = RawClient(broker.port)
            try:
                return client.connect("late") == Connack(False, 0)
            except (ConnectionError, TimeoutError):
                return False  # the broker has not seen the close yet: still full
            finally:
                client.close()

        wait_until(connects, what="a client accepted once a slot is free")
        for sock in silent:
            sock.close()
    finally:
        assert broker.stop() == 0


def test_message_size_limit_acks_and_drops_and_the_client_stays(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, OPEN + "message_size_limit 100\n")
    try:
        reader = RawClient(broker.port)
        reader.connect("reader")
        reader.send(Subscribe(1, [("t", 1)]))
        assert reader.expect(Suback) == Suback(1, (1,))
        writer = RawClient(broker.port)
        writer.connect("writer")
        writer.send(Publish("t", b"x" * 101, qos=1, packet_id=1))
        writer.send(Publish("t", b"y" * 100, qos=1, packet_id=2))
        assert writer.expect(Puback) == Puback(1)
        assert writer.expect(Puback) == Puback(2)
        assert reader.expect(Publish).payload == b"y" * 100  # type: ignore[attr-defined]
    finally:
        assert broker.stop() == 0


def test_max_keepalive_refuses_a_longer_keepalive_with_connack_2(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, OPEN + "max_keepalive 60\n")
    try:
        assert RawClient(broker.port).connect("long", keepalive=120) == Connack(False, 2)
        assert RawClient(broker.port).connect("fine", keepalive=60) == Connack(False, 0)
    finally:
        assert broker.stop() == 0


def sockets_in_state(port: int, state: str) -> list[str]:
    result = subprocess.run(
        ["ss", "-tnH", "state", state, f"( sport = :{port} )"], capture_output=True, text=True, check=True
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_a_subscriber_that_stops_reading_is_reset_and_others_are_unaffected(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, OPEN, "--slow-client-grace", "1", "--max-pending-output", "65536")
    try:
        stalled = RawClient(broker.port)
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up soon
        stalled.connect("stalled")
        stalled.send(Subscribe(1, [("flood", 0)]))
        assert stalled.expect(Suback) == Suback(1, (0,))
        healthy = RawClient(broker.port)
        healthy.connect("healthy")
        healthy.send(Subscribe(1, [("flood", 0)]))
        assert healthy.expect(Suback) == Suback(1, (0,))
        publisher = RawClient(broker.port)
        publisher.connect("publisher")
        payload = b"p" * 4000
        received = 0
        sent = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (sent % 100 or "client is not reading" not in broker.stderr()):
            publisher.send(Publish("flood", payload))
            sent += 1
            while healthy.received or sent - received > 50:  # keep the healthy reader caught up
                healthy.next_packet()
                received += 1
        assert "client is not reading" in broker.stderr(), "the stalled client was never cut off"
        # An abortive close: the kernel sent RST and dropped the Send-Q, so nothing lingers.
        assert sockets_in_state(broker.port, "fin-wait-1") == []
        while received < sent:
            healthy.next_packet()
            received += 1
        assert received == sent  # QoS 0 to a reader that keeps up: not one message lost
        assert stalled.is_closed_by_server()
        stalled.close()
    finally:
        assert broker.stop() == 0
