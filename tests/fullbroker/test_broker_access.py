"""Password and ACL files through the running broker, with real clients and real files.

Password files are made by Debian's ``mosquitto_passwd``; every check goes over a socket.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt.packets import Connack, Puback, Publish, Suback, Subscribe
from tests.support.clients import RawClient
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_until

from .broker_process import log_shows, make_password_file, start_broker

ACL = """\
# anonymous clients (none here: anonymous is off)
topic read public/#

user alice
topic readwrite home/#
topic read sensors/#
topic deny sensors/secret/#

user bob
topic write sensors/#

pattern readwrite clients/%c/#
pattern read users/%u/#
"""


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[ServerProcess]:
    passwords = make_password_file(tmp_path / "passwd", {"alice": "wonderland", "bob": "builder"})
    (tmp_path / "acl").write_text(ACL)
    config = f"listener 1883 127.0.0.1\npassword_file {passwords}\nacl_file {tmp_path / 'acl'}\n"
    broker = start_broker(tmp_path, config)
    yield broker
    assert broker.stop() == 0, broker.stderr()


def connect(
    broker: ServerProcess, username: str | None, password: bytes | None, client_id: str = ""
) -> tuple[RawClient, Connack]:
    client = RawClient(broker.port)
    return client, client.connect(client_id, username=username, password=password)


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", b"wrong"), ("mallory", b"wonderland"), ("alice", None), (None, None)],
    ids=["wrong-password", "unknown-user", "no-password", "anonymous"],
)
def test_bad_credentials_get_connack_5_and_a_closed_connection(
    secured: ServerProcess, username: str | None, password: bytes | None
) -> None:
    client, connack = connect(secured, username, password)
    assert connack == Connack(False, 5)
    assert client.is_closed_by_server()
    client.close()


def test_good_credentials_connect_and_no_password_is_ever_logged(secured: ServerProcess) -> None:
    client, connack = connect(secured, "alice", b"wonderland", "c1")
    assert connack == Connack(False, 0)
    connect(secured, "alice", b"s3cr3t-guess")[0].close()
    log_shows(secured, "New client connected from")
    log = secured.stderr()
    assert "wonderland" not in log and "s3cr3t-guess" not in log
    client.close()


def test_a_password_file_with_sha512_hashes_works_too(tmp_path: Path) -> None:
    passwords = make_password_file(tmp_path / "passwd", {"carol": "x-files"}, sha512=True)
    assert "$6$" in passwords.read_text()
    broker = start_broker(tmp_path, f"listener 1883 127.0.0.1\npassword_file {passwords}\n")
    try:
        assert connect(broker, "carol", b"x-files")[1] == Connack(False, 0)
        assert connect(broker, "carol", b"x-file")[1] == Connack(False, 5)
    finally:
        assert broker.stop() == 0


def test_listeners_without_allow_anonymous_refuse_anonymous_clients(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, "listener 1883 127.0.0.1\n")
    try:
        assert connect(broker, None, None)[1] == Connack(False, 5)
    finally:
        assert broker.stop() == 0


def test_no_config_file_allows_anonymous_on_loopback_only(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, None)
    try:
        assert broker.host == "127.0.0.1"
        assert connect(broker, None, None)[1] == Connack(False, 0)
    finally:
        assert broker.stop() == 0


def test_a_read_denied_topic_never_arrives_through_a_wildcard_nor_as_retained(secured: ServerProcess) -> None:
    writer, _ = connect(secured, "alice", b"wonderland", "writer")
    bob, _ = connect(secured, "bob", b"builder", "bob")
    for topic in ("sensors/secret/key", "sensors/temp"):  # bob may write, alice may read only temp
        bob.send(Publish(topic, b"retained " + topic.encode(), qos=1, packet_id=1, retain=True))
        assert bob.expect(Puback) == Puback(1)
    reader, _ = connect(secured, "alice", b"wonderland", "reader")
    reader.send(Subscribe(1, [("sensors/#", 1), ("#", 0)]))
    assert reader.expect(Suback) == Suback(1, (1, 0))  # broad filters: granted, filtered per delivery
    retained = [reader.expect(Publish), reader.expect(Publish)]
    assert {packet.topic for packet in retained} == {"sensors/temp"}  # type: ignore[attr-defined]
    bob.send(Publish("sensors/secret/key", b"live", qos=1, packet_id=2))
    bob.send(Publish("sensors/temp", b"21", qos=1, packet_id=3))
    assert bob.expect(Puback) == Puback(2) and bob.expect(Puback) == Puback(3)
    live = reader.expect(Publish)  # overlapping subscriptions: one copy, at the higher QoS
    assert (live.topic, live.payload, live.qos) == ("sensors/temp", b"21", 1)  # type: ignore[attr-defined]
    with pytest.raises(TimeoutError):
        reader.next_packet(timeout=0.3)
    for client in (writer, bob, reader):
        client.close()


def test_a_filter_wholly_denied_gets_0x80_and_a_denied_publish_is_acked_and_dropped(
    secured: ServerProcess,
) -> None:
    alice, _ = connect(secured, "alice", b"wonderland", "a1")
    alice.send(Subscribe(1, [("sensors/secret/#", 1), ("forbidden/#", 1), ("home/+", 1)]))
    assert alice.expect(Suback) == Suback(1, (0x80, 0x80, 1))
    bob, _ = connect(secured, "bob", b"builder", "b1")
    bob.send(Publish("home/door", b"open", qos=1, packet_id=7))  # bob may not write home/#
    assert bob.expect(Puback) == Puback(7)
    alice.send(Publish("home/light", b"on", qos=1, packet_id=8))
    packets = [alice.next_packet(), alice.next_packet()]  # her own message, and its PUBACK
    assert Puback(8) in packets
    assert [(p.topic, p.payload) for p in packets if isinstance(p, Publish)] == [("home/light", b"on")]
    with pytest.raises(TimeoutError):
        alice.next_packet(timeout=0.3)
    alice.close()
    bob.close()


def test_patterns_substitute_client_id_and_username(secured: ServerProcess) -> None:
    alice, _ = connect(secured, "alice", b"wonderland", "phone")
    alice.send(Subscribe(1, [("clients/phone/#", 1), ("clients/laptop/#", 1), ("users/alice/#", 0)]))
    assert alice.expect(Suback) == Suback(1, (1, 0x80, 0))
    alice.close()


def test_sighup_reloads_passwords_and_acls_and_keeps_sessions(secured: ServerProcess, tmp_path: Path) -> None:
    alice, _ = connect(secured, "alice", b"wonderland", "kept")
    alice.send(Subscribe(1, [("home/#", 1)]))
    assert alice.expect(Suback) == Suback(1, (1,))
    assert connect(secured, "dave", b"diver")[1] == Connack(False, 5)
    subprocess.run(["mosquitto_passwd", "-b", str(tmp_path / "passwd"), "dave", "diver"], check=True)
    more_rules = ACL.replace("topic readwrite home/#", "topic readwrite home/#\ntopic read news/#")
    (tmp_path / "acl").write_text(more_rules)
    secured.process.send_signal(signal.SIGHUP)
    log_shows(secured, "reloaded")
    dave, connack = connect(secured, "dave", b"diver")
    assert connack == Connack(False, 0)
    alice.send(Subscribe(2, [("news/#", 0)]))  # the new rule applies to a later SUBSCRIBE
    assert alice.expect(Suback) == Suback(2, (0,))
    alice.send(Publish("home/x", b"still here", qos=1, packet_id=3))  # the old subscription lives on
    packets = [alice.next_packet(), alice.next_packet()]
    assert Puback(3) in packets
    assert any(isinstance(p, Publish) and p.payload == b"still here" for p in packets)
    wait_until(lambda: secured.process.poll() is None, what="broker still running")
    dave.close()
    alice.close()
