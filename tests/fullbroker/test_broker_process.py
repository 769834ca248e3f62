"""The broker as a process: its config file, listeners, log lines, $SYS and signals.

Every config error must name the file and the line and keep the broker from starting; an
option this broker does not implement is one warning, and the broker runs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mqtt.packets import Connack, Puback, Publish
from tests.support.clients import RawClient, paho_client
from tests.support.servers import ROOT

from .broker_process import log_shows, start_broker, write_config
from .mosquitto_process import closed_port


def run_broker_expecting_exit(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servers.broker", "-c", str(config), "-p", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize(
    ("lines", "line_number", "words"),
    [
        ("listener 1883 127.0.0.1\nport abc\n", 2, "port"),
        ("allow_anonymous maybe\n", 1, "allow_anonymous"),
        ("listener 1883 127.0.0.1\nmax_connections lots\n", 2, "max_connections"),
        ("# a comment\n\nlistener\n", 3, "listener"),
        ("address 10.0.0.1\n", 1, "address"),
        ("connection b\naddress 127.0.0.1\ntopic x sideways 1\n", 3, "sideways"),
    ],
    ids=["port", "boolean", "integer", "missing-argument", "bridge-key-outside-stanza", "direction"],
)
def test_a_malformed_line_stops_the_broker_naming_file_and_line(
    tmp_path: Path, lines: str, line_number: int, words: str
) -> None:
    config = write_config(tmp_path, lines)
    result = run_broker_expecting_exit(config)
    assert result.returncode != 0
    assert f"{config}:{line_number}:" in result.stderr
    assert words in result.stderr
    assert "listening on" not in result.stdout


def test_an_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    bad = "listener 1883 127.0.0.1\nsys_interval often\n"
    included = write_config(tmp_path / "conf.d", bad, "extra.conf")
    config = write_config(tmp_path, f"include_dir {tmp_path / 'conf.d'}\n")
    result = run_broker_expecting_exit(config)
    assert result.returncode != 0
    assert f"{included}:2:" in result.stderr


def test_a_missing_config_file_stops_the_broker(tmp_path: Path) -> None:
    result = run_broker_expecting_exit(tmp_path / "nowhere.conf")
    assert result.returncode != 0 and "nowhere.conf" in result.stderr


def test_an_unsupported_option_is_one_warning_and_the_broker_runs(tmp_path: Path) -> None:
    config = "listener 1883 127.0.0.1\nallow_anonymous true\nwebsockets_log_level 255\n"
    broker = start_broker(tmp_path, config)
    try:
        log = broker.stderr()
        assert log.count("websockets_log_level") == 1
        assert f"{tmp_path / 'mosquitto.conf'}:3:" in log
        assert RawClient(broker.port).connect("c") == Connack(False, 0)
    finally:
        assert broker.stop() == 0


def test_every_listener_accepts_clients(tmp_path: Path) -> None:
    second = closed_port()  # free now; the broker binds it next
    config = f"listener 1883 127.0.0.1\nlistener {second} 127.0.0.1\nallow_anonymous true\n"
    broker = start_broker(tmp_path, config)
    try:
        subscriber = paho_client(second, client_id="on-second")
        subscriber.subscribe("t", 1)
        publisher = paho_client(broker.port, client_id="on-first")
        publisher.publish("t", b"across listeners", qos=1)
        assert subscriber.next_message().payload == b"across listeners"
        subscriber.close()
        publisher.close()
    finally:
        assert broker.stop() == 0


def test_connection_messages_read_like_mosquittos(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, "listener 1883 127.0.0.1\nallow_anonymous true\n")
    try:
        client = RawClient(broker.port)
        client.connect("c1", keepalive=60, username="alice", clean_session=True)
        log_shows(broker, "as c1 (p2, c1, k60, u'alice').")
        assert f"New client connected from 127.0.0.1:{client.sock.getsockname()[1]} as c1" in broker.stderr()
        client.close()
        log_shows(broker, "Client c1 closed its connection.")
        polite = RawClient(broker.port)
        polite.connect("c2", clean_session=False, keepalive=30)
        log_shows(broker, "as c2 (p2, c0, k30).")
        polite.send(bytes((0xE0, 0)))  # DISCONNECT
        log_shows(broker, "Client c2 disconnected.")
        rude = RawClient(broker.port)
        rude.connect("c3")
        rude.send(bytes((0x30, 2, 0, 9)))  # a topic length longer than the packet
        log_shows(broker, "Client c3 disconnected: protocol error")
    finally:
        assert broker.stop() == 0


def test_connection_messages_false_keeps_them_out(tmp_path: Path) -> None:
    config = "listener 1883 127.0.0.1\nallow_anonymous true\nconnection_messages false\n"
    broker = start_broker(tmp_path, config)
    try:
        # The line is logged before the CONNACK is sent, so once the CONNACK is here it would be too.
        assert RawClient(broker.port).connect("quiet") == Connack(False, 0)
        assert "New client connected" not in broker.stderr()
    finally:
        assert broker.stop() == 0


def test_sys_topics_read_with_mosquitto_sub_as_with_mosquitto(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, "listener 1883 127.0.0.1\nallow_anonymous true\nsys_interval 1\n")
    try:
        forger = RawClient(broker.port)
        forger.connect("forger")
        forger.send(Publish("$SYS/broker/version", b"forged", qos=1, packet_id=1, retain=True))
        assert forger.expect(Puback) == Puback(1)
        result = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-v", "-t", "$SYS/#", "-W", "3"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        lines = result.stdout.splitlines()

        def value_of(topic: str) -> str | None:  # topics may hold spaces ("retained messages")
            found = [line[len(topic) + 1 :] for line in lines if line.startswith(topic + " ")]
            return found[-1] if found else None  # the latest of the values published

        for name in (
            "version",
            "uptime",
            "clients/total",
            "clients/maximum",
            "clients/active",
            "clients/connected",
            "clients/inactive",
            "clients/disconnected",
            "clients/expired",
            "messages/received",
            "messages/sent",
            "messages/stored",
            "bytes/received",
            "bytes/sent",
            "publish/messages/received",
            "publish/messages/sent",
            "publish/messages/dropped",
            "publish/bytes/received",
            "publish/bytes/sent",
            "store/messages/count",
            "store/messages/bytes",
            "subscriptions/count",
            "retained messages/count",
            "load/messages/received/1min",
            "load/bytes/sent/5min",
            "load/connections/15min",
            "faults",
        ):
            value = value_of(f"$SYS/broker/{name}")
            assert value is not None, name
            assert not value.startswith("-"), f"{name} is negative: {value}"
        assert value_of("$SYS/broker/version") != "forged"
        assert int(value_of("$SYS/broker/clients/connected") or 0) >= 1
    finally:
        assert broker.stop() == 0


def test_sigterm_stops_cleanly_with_exit_0(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, None)
    client = RawClient(broker.port)
    client.connect("c")
    broker.process.send_signal(signal.SIGTERM)
    assert broker.process.wait(10) == 0
    assert client.is_closed_by_server()


def test_log_dest_file_receives_the_log(tmp_path: Path) -> None:
    log_file = tmp_path / "broker.log"
    config = f"listener 1883 127.0.0.1\nallow_anonymous true\nlog_dest file {log_file}\n"
    broker = start_broker(tmp_path, config)
    try:
        assert RawClient(broker.port).connect("filed") == Connack(False, 0)  # logged before the CONNACK
        assert "New client connected" in log_file.read_text()
        assert "New client connected" not in broker.stderr()
    finally:
        assert broker.stop() == 0
