"""The first thing a newcomer does: mosquitto_sub in one terminal, mosquitto_pub in another."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.clients import paho_client
from tests.support.servers import ServerProcess

needs_mosquitto_clients = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None, reason="mosquitto-clients not installed (make test installs it)"
)


@needs_mosquitto_clients
def test_mosquitto_pub_reaches_mosquitto_sub(server: ServerProcess) -> None:
    port = str(server.port)
    subscriber = subprocess.Popen(
        ["mosquitto_sub", "-p", port, "-t", "test", "-C", "1", "-W", "10", "-i", "smoke-sub"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # The subscriber is ready once its SUBSCRIBE went through: retry the publish until it lands.
        while subscriber.poll() is None:
            subprocess.run(
                ["mosquitto_pub", "-p", port, "-t", "test", "-m", "123456"], check=True, timeout=10
            )
            try:
                subscriber.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
        assert subscriber.stdout is not None
        assert subscriber.stdout.read() == "123456\n"
        assert subscriber.returncode == 0
    finally:
        if subscriber.poll() is None:
            subscriber.kill()


def test_paho_round_trip(server: ServerProcess) -> None:
    subscriber = paho_client(server.port)
    publisher = paho_client(server.port)
    try:
        subscriber.subscribe("smoke/#", qos=1)
        publisher.publish("smoke/a", b"hello", qos=1)
        message = subscriber.next_message()
        assert (message.topic, message.payload, message.qos) == ("smoke/a", b"hello", 1)
    finally:
        subscriber.close()
        publisher.close()
