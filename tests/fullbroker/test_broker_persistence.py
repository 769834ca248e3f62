"""The store through the running broker: restarts, kill -9 at any instant, damaged and large files.

The promise under test: no byte leaves the broker before the store transaction covering it
has committed, so killing it at any instant loses no acknowledged message and delivers no
QoS 2 message twice.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mqtt.packets import Connack, Publish, Suback, Subscribe
from tests.support.clients import RawClient, paho_client
from tests.support.servers import ROOT

from .broker_process import log_shows, start_broker
from .crash_clients import CrashPublisher, CrashSubscriber


def persistent_config(directory: Path) -> str:
    return (
        "listener 1883 127.0.0.1\nallow_anonymous true\n"
        f"persistence true\npersistence_location {directory}/\n"
    )


def test_retained_messages_and_sessions_survive_a_clean_restart(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, persistent_config(tmp_path))
    subscriber = RawClient(broker.port)
    subscriber.connect("durable", clean_session=False)
    subscriber.send(Subscribe(1, [("news/#", 1)]))
    assert subscriber.expect(Suback) == Suback(1, (1,))
    subscriber.close()
    publisher = paho_client(broker.port, client_id="pub")
    publisher.publish("news/retained", b"kept", qos=1, retain=True)
    publisher.publish("news/queued", b"waiting", qos=1)
    publisher.close()
    assert broker.stop() == 0  # SIGTERM: committed, closed, exit 0

    broker = start_broker(tmp_path, persistent_config(tmp_path))
    try:
        log_shows(broker, "retained")  # start-up names its row counts
        back = RawClient(broker.port)
        assert back.connect("durable", clean_session=False) == Connack(True, 0)
        queued = [back.expect(Publish), back.expect(Publish)]  # what came while it was away
        assert [(p.topic, p.payload) for p in queued] == [  # type: ignore[attr-defined]
            ("news/retained", b"kept"),
            ("news/queued", b"waiting"),
        ]
        fresh = RawClient(broker.port)
        fresh.connect("fresh")
        fresh.send(Subscribe(1, [("news/retained", 0)]))
        fresh.expect(Suback)
        retained = fresh.expect(Publish)
        assert (retained.payload, retained.retain) == (b"kept", True)  # type: ignore[attr-defined]
    finally:
        assert broker.stop() == 0


def pump(clients: list[CrashPublisher | CrashSubscriber], seconds: float) -> None:
    """Serve both clients' sockets for ``seconds``, handling whatever arrives."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        socks = {client.link.sock: client for client in clients if client.link.sock is not None}
        if not socks:
            return
        readable, _, _ = select.select(list(socks), [], [], max(0.0, min(0.01, end - time.monotonic())))
        for sock in readable:
            client = socks[sock]
            for packet in client.link.receive():
                client.on_packet(packet)


def test_kill_9_in_a_loop_loses_no_acknowledged_message_and_duplicates_no_qos2(tmp_path: Path) -> None:
    rng = random.Random(20261201)
    config = persistent_config(tmp_path)
    publisher, subscriber = CrashPublisher(), CrashSubscriber()
    clients: list[CrashPublisher | CrashSubscriber] = [subscriber, publisher]
    total, kills = 30_000, 8
    in_flight_at_kill: list[int] = []
    for round_number in range(kills + 1):
        broker = start_broker(tmp_path, config)
        subscriber.link.open(broker.port)
        pump(clients, 0.2)  # the subscriber's CONNACK (and first SUBSCRIBE) before publishing
        publisher.link.open(broker.port)
        if round_number < kills:
            stream_end = time.monotonic() + rng.uniform(0.2, 1.0)
            publisher.publish_some(total)
            while time.monotonic() < stream_end:
                pump(clients, rng.uniform(0, 0.004))
                publisher.publish_some(total)  # a window's worth on its way as the kill lands
            os.kill(broker.pid, signal.SIGKILL)  # mid-stream, whatever it was doing
            in_flight_at_kill.append(len(publisher.unacked) + len(publisher.releasing))
            broker.process.wait(5)
            broker.stop()
            for client in clients:
                client.link.drop()
            continue
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (publisher.next_seq == total and publisher.idle):
            publisher.publish_some(total)
            pump(clients, 0.01)
        pump(clients, 1.0)  # the last deliveries to the subscriber
        assert broker.stop() == 0

    acked_1, acked_2 = publisher.acknowledged[1], publisher.acknowledged[2]
    got_1, got_2 = subscriber.delivered[1], subscriber.delivered[2]
    print(
        f"kill -9 x{kills}: published {publisher.next_seq}, acknowledged QoS 1 {len(acked_1)} / QoS 2"
        f" {len(acked_2)}; delivered QoS 1 {len(got_1)} ({sum(got_1.values()) - len(got_1)} duplicates,"
        f" allowed), QoS 2 {len(got_2)} ({sum(got_2.values()) - len(got_2)} duplicates);"
        f" unacknowledged at each kill {in_flight_at_kill}"
    )
    assert sum(1 for count in in_flight_at_kill if count) >= kills // 2, "the kills missed the stream"
    assert publisher.next_seq == total and publisher.idle, "the stream never completed"
    assert acked_1 - set(got_1) == set(), "acknowledged QoS 1 messages were lost"
    assert acked_2 - set(got_2) == set(), "acknowledged QoS 2 messages were lost"
    assert [seq for seq, times in got_2.items() if times > 1] == [], "a QoS 2 message arrived twice"


def test_a_truncated_store_is_moved_aside_and_the_broker_starts(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, persistent_config(tmp_path))
    publisher = paho_client(broker.port, client_id="pub")
    for n in range(200):
        publisher.publish(f"r/{n}", b"x" * 2000, qos=1, retain=True)
    publisher.close()
    assert broker.stop() == 0
    store = tmp_path / "mosquitto.db"
    size = store.stat().st_size
    with store.open("r+b") as file:
        file.truncate(size // 2)
    broker = start_broker(tmp_path, persistent_config(tmp_path))
    try:
        log = broker.stderr()
        assert str(store) in log and "corrupt" in log
        assert list(tmp_path.glob("mosquitto.db.corrupt-*"))
        assert RawClient(broker.port).connect("after") == Connack(False, 0)
    finally:
        assert broker.stop() == 0


def test_a_garbage_store_is_moved_aside_and_the_broker_starts(tmp_path: Path) -> None:
    (tmp_path / "mosquitto.db").write_bytes(b"this is not a database\n" * 1000)
    broker = start_broker(tmp_path, persistent_config(tmp_path))
    try:
        assert list(tmp_path.glob("mosquitto.db.corrupt-*"))
        assert RawClient(broker.port).connect("after") == Connack(False, 0)
    finally:
        assert broker.stop() == 0


def make_large_store(path: Path, count: int, size: int) -> None:
    """Retained messages written straight into a store the broker made: fast, and realistic."""
    with sqlite3.connect(path) as db:
        payload = os.urandom(size)
        db.executemany(
            "INSERT INTO retained (topic, qos, payload) VALUES (?, 1, ?)",
            ((f"big/{n}", payload) for n in range(count)),
        )


def test_a_large_store_starts_fast_and_serves_payloads_lazily(tmp_path: Path) -> None:
    first = start_broker(tmp_path, persistent_config(tmp_path))
    assert first.stop() == 0  # creates the schema
    make_large_store(tmp_path / "mosquitto.db", 20_000, 10_240)
    megabytes = (tmp_path / "mosquitto.db").stat().st_size / 1e6
    assert megabytes > 200
    started = time.monotonic()
    broker = start_broker(tmp_path, persistent_config(tmp_path))
    seconds = time.monotonic() - started
    try:
        status = Path(f"/proc/{broker.pid}/status").read_text().splitlines()
        rss_kib = int(next(line for line in status if line.startswith("VmRSS")).split()[1])
        print(f"store {megabytes:.0f} MB: listening after {seconds:.2f} s, RSS {rss_kib / 1024:.0f} MiB")
        assert seconds < 10
        assert rss_kib * 1024 < megabytes * 1e6 / 4  # payloads stayed on disk
        client = RawClient(broker.port)
        client.connect("reader")
        client.send(Subscribe(1, [("big/19999", 0)]))
        client.expect(Suback)
        assert len(client.expect(Publish).payload) == 10_240  # type: ignore[attr-defined]
    finally:
        assert broker.stop() == 0


def test_a_second_broker_on_the_same_store_refuses_to_start(tmp_path: Path) -> None:
    first = start_broker(tmp_path, persistent_config(tmp_path))
    try:
        config = tmp_path / "mosquitto.conf"
        second = subprocess.run(
            [sys.executable, "-m", "servers.broker", "-c", str(config), "-p", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert second.returncode == 3
        assert f"is in use by broker pid {first.pid}" in second.stderr
        assert RawClient(first.port).connect("still-fine") == Connack(False, 0)
    finally:
        assert first.stop() == 0
    crashed = start_broker(tmp_path, persistent_config(tmp_path))
    os.kill(crashed.pid, signal.SIGKILL)  # a crash leaves no stale lock behind
    crashed.process.wait(5)
    crashed.stop()
    again = start_broker(tmp_path, persistent_config(tmp_path))
    assert again.stop() == 0


def retained_topics_in_main_file(store: Path, copy: Path) -> set[str]:
    """What the database file holds without its WAL: what a checkpoint has copied in."""
    copy.write_bytes(store.read_bytes())
    with sqlite3.connect(copy) as db:
        try:
            return {topic for (topic,) in db.execute("SELECT topic FROM retained")}
        except sqlite3.OperationalError:  # no such table: even the schema is still in the WAL
            return set()


def test_sigusr1_commits_and_checkpoints_the_store_now(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, persistent_config(tmp_path))
    try:
        publisher = paho_client(broker.port, client_id="pub")
        publisher.publish("saved/now", b"1", qos=1, retain=True)  # acked: committed to the WAL
        publisher.close()
        store, copy = tmp_path / "mosquitto.db", tmp_path / "copy.db"
        assert "saved/now" not in retained_topics_in_main_file(store, copy)  # only in the WAL yet
        broker.process.send_signal(signal.SIGUSR1)
        log_shows(broker, "Saved the store (SIGUSR1)")
        assert "saved/now" in retained_topics_in_main_file(store, copy)
    finally:
        assert broker.stop() == 0
