"""Bridges through the running broker, both ways, against a Debian mosquitto the test starts.

Our ``connection`` stanza bridges to mosquitto; then mosquitto's own ``connection`` stanza
bridges to us, with its protocol level 0x84, which we accept and never echo back to.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import PahoClient, paho_client
from tests.support.servers import ServerProcess
from tests.support.waiting import stays_false, wait_until

from .broker_process import log_shows, make_password_file, start_broker
from .mosquitto_process import Mosquitto, RemoteClient


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    (tmp_path / "remote").mkdir()
    broker = Mosquitto(tmp_path / "remote")
    broker.start()
    yield broker
    broker.stop()


def payloads(client: PahoClient, count: int) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in (client.next_message(10) for _ in range(count))]


LOGIN = ("alice", "wonderland")


def our_bridge_to(mosquitto: Mosquitto, directory: Path) -> ServerProcess:
    passwords = make_password_file(directory / "passwd", dict([LOGIN]))
    config = (
        # Clients must log in; the bridge's own client is trusted and needs no login.
        f"listener 1883 127.0.0.1\npassword_file {passwords}\n"
        f"persistence true\npersistence_location {directory}/\n"
        "connection to-mosquitto\n"
        f"address 127.0.0.1:{mosquitto.port}\n"
        "topic # both 1 site/ hq/\n"
        "cleansession false\nrestart_timeout 1 2\nkeepalive_interval 5\n"
    )
    broker = start_broker(directory, config)
    log_shows(broker, "to-mosquitto", timeout=10)
    return broker


def test_our_bridge_carries_qos_0_and_1_both_ways_without_echo(tmp_path: Path, mosquitto: Mosquitto) -> None:
    remote = RemoteClient(mosquitto.port, "remote-sub", [("hq/#", 1), ("$SYS/broker/connection/#", 1)])
    broker = our_bridge_to(mosquitto, tmp_path)
    try:
        wait_until(lambda: remote.payloads("$SYS/broker/connection/to-mosquitto/state")[-1:] == [b"1"],
                   timeout=15, what="the bridge's notification on mosquitto")
        local = paho_client(broker.port, client_id="local", login=LOGIN)
        local.subscribe("site/#", 1)
        local.publish("site/out0", b"local qos0", qos=0)
        local.publish("site/out1", b"local qos1", qos=1)
        wait_until(lambda: len(remote.received("hq/out0")) + len(remote.received("hq/out1")) == 2,
                   timeout=10, what="local messages on mosquitto")
        remote.publish("hq/in1", b"remote qos1", 1)
        remote.publish("hq/in0", b"remote qos0", 0)
        got = sorted(payloads(local, 4))  # its own two, and the two that crossed in
        assert got == [
            ("site/in0", b"remote qos0"), ("site/in1", b"remote qos1"),
            ("site/out0", b"local qos0"), ("site/out1", b"local qos1"),
        ]  # fmt: skip
        # No echo: what came in over the bridge did not go back out, so mosquitto saw each once.
        echoed = lambda: len(remote.received("hq/in1")) > 1 or len(remote.received("hq/in0")) > 1  # noqa: E731
        assert stays_false(echoed, 0.5)
        assert [m[2] for m in remote.received("hq/out1")] == [1]
        local.close()
    finally:
        remote.close()
        assert broker.stop() == 0


def test_qos_1_published_while_mosquitto_is_down_arrives_once_it_is_back(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    remote = RemoteClient(mosquitto.port, "remote-durable", [("hq/#", 1)], clean=False)
    broker = our_bridge_to(mosquitto, tmp_path)
    state = "$SYS/broker/connection/to-mosquitto/state"
    try:
        local = paho_client(broker.port, client_id="local", login=LOGIN)
        local.subscribe(state, 1)
        wait_until(lambda: any(m.payload == b"1" for m in drain(local)), timeout=15, what="bridge up")
        mosquitto.stop()
        wait_until(lambda: any(m.payload == b"0" for m in drain(local)), timeout=15, what="bridge down")
        for n in range(3):
            local.publish(f"site/while-down/{n}", b"queued %d" % n, qos=1)  # acked by us, queued
        mosquitto.start()
        wait_until(lambda: len(remote.received_prefix("hq/while-down/")) >= 3, timeout=20,
                   what="the queued messages on mosquitto")
        assert [payload for _, payload, _, _ in remote.received_prefix("hq/while-down/")] == [
            b"queued 0", b"queued 1", b"queued 2"
        ]
        local.close()
    finally:
        remote.close()
        assert broker.stop() == 0


def drain(client: PahoClient) -> list:
    messages = []
    while not client.messages.empty():
        messages.append(client.messages.get())
    return messages


def test_mosquitto_bridging_to_us_is_not_echoed(tmp_path: Path) -> None:
    ours = start_broker(tmp_path, "listener 1883 127.0.0.1\nallow_anonymous true\n")
    (tmp_path / "remote").mkdir()
    theirs = Mosquitto(
        tmp_path / "remote",
        f"connection to-us\naddress 127.0.0.1:{ours.port}\ntopic # both 1 m/ o/\nrestart_timeout 1 2\n",
    )
    try:
        local = paho_client(ours.port, client_id="ours")
        local.subscribe("$SYS/broker/connection/#", 1)
        local.subscribe("o/#", 1)
        theirs.start()
        wait_until(lambda: any(m.payload == b"1" for m in drain(local)), timeout=15,
                   what="mosquitto's bridge notification on our side")
        log_shows(ours, "(p2, c0")  # mosquitto's bridge: protocol level 0x84, a persistent session
        remote = RemoteClient(theirs.port, "their-sub", [("m/#", 1)])
        remote.publish("m/from-them", b"crossing in", 1)
        message = local.next_message(10)
        assert (message.topic, message.payload) == ("o/from-them", b"crossing in")
        local.publish("o/from-us", b"crossing out", qos=1)
        wait_until(lambda: remote.received("m/from-us"), timeout=10, what="our message on mosquitto")
        # Had we echoed mosquitto's message back over its bridge, its subscriber would see it twice.
        assert stays_false(lambda: len(remote.received("m/from-them")) > 1, 0.5)
        assert len(remote.received("m/from-us")) == 1
        remote.close()
        local.close()
    finally:
        theirs.stop()
        assert ours.stop() == 0
