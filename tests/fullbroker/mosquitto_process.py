"""A mosquitto of the test's own, and a paho client of it: the far end of bridge tests."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as paho

from tests.support.waiting import wait_until


def closed_port() -> int:
    """A port nothing listens on right now (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mosquitto:
    """A mosquitto of the test's own, on a free port, with persistence so a restart keeps sessions."""

    def __init__(self, directory: Path, extra: str = "") -> None:
        """``extra``: more config lines, e.g. a ``connection`` stanza bridging to another broker."""
        self.port = closed_port()
        self.directory = directory
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        # Run as root, mosquitto drops to the "mosquitto" user, which could not write here.
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"user {user}\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            f"log_dest file {self.log}\n"
            "log_type all\n" + extra
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self._accepts, timeout=10, what=f"mosquitto listening on {self.port}")

    def _accepts(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"mosquitto exited:\n{self.log_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM: mosquitto closes every connection and saves its sessions to disk."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class RemoteClient:
    """A paho client of the remote mosquitto that records what it receives."""

    def __init__(
        self, port: int, client_id: str, subscriptions: list[tuple[str, int]], clean: bool = True
    ) -> None:
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.on_connect = lambda client, *_: client.subscribe(subscriptions)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload, m.qos, m.retain))
        self.client.reconnect_delay_set(0.05, 0.2)  # back quickly after the remote restarts
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, timeout=10, what=f"{client_id} subscribed")

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(10)

    def payloads(self, topic: str) -> list[bytes]:
        return [payload for name, payload, _, _ in list(self.messages) if name == topic]

    def received_prefix(self, prefix: str) -> list[tuple[str, bytes, int, bool]]:
        return [message for message in list(self.messages) if message[0].startswith(prefix)]

    def received(self, topic: str) -> list[tuple[str, bytes, int, bool]]:
        return [message for message in list(self.messages) if message[0] == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
