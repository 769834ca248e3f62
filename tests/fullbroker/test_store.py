"""The sqlite store under a real broker core: what a restart keeps, a crash loses, damage moves aside.

Every test drives ``mqtt.broker.Broker`` with real MQTT bytes (``mqtt.codec.encode``), calls
``store.commit()`` where a server's loop turn would end, and reopens the file into a new broker
through ``Broker.restore``, as a restarted server does. Checkpoints on a timer are off, and no
test but the one about them writes the 16 MB of WAL that would set one off.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from fullbroker.store import SqliteStore, StoredMessage
from fullbroker.store_schema import is_damage
from mqtt.broker import Broker
from mqtt.codec import Decoder, encode
from mqtt.connection import Connection
from mqtt.limits import Limits
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
from mqtt.store_hook import RestoredState

REPO = Path(__file__).resolve().parents[2]
LOG = logging.getLogger("test.store")


class Clock:
    """A settable clock: the broker's monotonic one, or the store's wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_store(path: Path, expiry: float | None = None, wall: Clock | None = None, **options: object):
    options.setdefault("autosave_interval", None)
    return SqliteStore.open(path, LOG, expiry, clock=wall or Clock(1_700_000_000.0), **options)  # type: ignore[arg-type]


def start(
    path: Path, expiry: float | None = None, wall: Clock | None = None, **limits: object
) -> tuple[Broker, SqliteStore, RestoredState]:
    """What a server does at start-up: open the store, build the core, restore into it."""
    store, state = open_store(path, expiry, wall)
    broker = Broker(Clock(1000.0), Limits(sys_interval=0, **limits), store=store)  # type: ignore[arg-type]
    broker.restore(state)
    return broker, store, state


def take(connection: Connection) -> list[Packet]:
    """What a driver would send: decode it and mark it all sent."""
    data = connection.pending()
    connection.sent(len(data))
    return Decoder().feed(data)


def connect(broker: Broker, client_id: str, clean: bool = True, present: bool = False) -> Connection:
    connection = broker.open(f"peer-{client_id}")
    connection.receive(encode(Connect(client_id, clean_session=clean)))
    assert take(connection)[0] == Connack(present, 0)
    return connection


def subscribe(connection: Connection, topic_filter: str, qos: int, packet_id: int = 1) -> list[Packet]:
    connection.receive(encode(Subscribe(packet_id, ((topic_filter, qos),))))
    packets = take(connection)
    assert packets[0] == Suback(packet_id, (qos,))
    return packets[1:]


def rows(**counts: int) -> dict[str, int]:
    """``SqliteStore.rows()`` as it should read: every table, zero unless given."""
    return {"retained": 0, "sessions": 0, "subscriptions": 0, "outbound": 0, "inbound_qos2": 0, **counts}


def count(path: Path, table: str) -> int:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- a restart resumes everything -------------------------------------------------------------


def test_a_persistent_session_and_retained_messages_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    broker, store, state = start(path, max_inflight=3)
    assert not state.sessions and not list(state.retained)
    sub = connect(broker, "sub", clean=False)
    subscribe(sub, "q/#", 2)
    pub = connect(broker, "pub")
    pub.receive(
        encode(Publish("r/a", b"A" * 3000, qos=1, retain=True, packet_id=1))
        + encode(Publish("r/b", b"B", qos=0, retain=True))
        + encode(Publish("r/c", b"C", qos=0, retain=True))
        + encode(Publish("r/c", b"", qos=0, retain=True))  # clears r/c again
    )
    store.commit()
    payloads = {n: f"message {n}".encode() * n for n in range(1, 8)}
    for n, qos in ((1, 1), (2, 2), (3, 2), (4, 1), (5, 2)):  # 1-3 in flight, 4-5 queued
        pub.receive(encode(Publish(f"q/{n}", payloads[n], qos=qos, packet_id=10 + n)))
    assert [p.topic for p in take(sub)] == ["q/1", "q/2", "q/3"]  # type: ignore[union-attr]
    sub.receive(encode(Pubrec(3)))  # q/3 arrived: from now on only its PUBREL is resent
    sub.receive(encode(Publish("in/x", b"once", qos=2, packet_id=7)))  # its PUBREL never comes
    assert take(sub) == [Pubrel(3), Pubrec(7)]
    store.commit()
    sub.lost("connection reset")
    store.commit()
    pub.receive(encode(Publish("q/6", payloads[6], qos=1, packet_id=16)))  # queued for the offline client
    store.commit()
    store.close()

    broker, store, state = start(path, max_inflight=3)
    assert [s.client_id for s in state.sessions] == ["sub"]
    watcher = connect(broker, "watcher")
    subscribe(watcher, "in/#", 0)
    sub = broker.open("peer-sub-again")
    sub.receive(encode(Connect("sub", clean_session=False)))
    assert take(sub) == [
        Connack(True, 0),
        Publish("q/1", payloads[1], qos=1, dup=True, packet_id=1),
        Publish("q/2", payloads[2], qos=2, dup=True, packet_id=2),
        Pubrel(3),
    ]
    # The inbound QoS 2 id is still known: the resent PUBLISH is acknowledged, not routed again.
    sub.receive(encode(Publish("in/x", b"once", qos=2, dup=True, packet_id=7)))
    assert take(sub) == [Pubrec(7)] and take(watcher) == []
    sub.receive(encode(Pubrel(7)))
    assert take(sub) == [Pubcomp(7)]
    sub.receive(encode(Publish("in/x", b"a new one", qos=2, packet_id=7)))  # the id is free again
    assert take(watcher) == [Publish("in/x", b"a new one")]
    # The queue follows, in order, as the window frees up.
    delivered = []
    for ack in (Puback(1), Pubrec(2), Pubcomp(2), Pubcomp(3)):
        sub.receive(encode(ack))
        for packet in take(sub):
            if isinstance(packet, Publish):
                delivered.append(packet)
                sub.receive(encode(Puback(packet.packet_id) if packet.qos == 1 else Pubrec(packet.packet_id)))
    assert [(p.topic, p.payload, p.qos, p.dup) for p in delivered] == [
        ("q/4", payloads[4], 1, False),
        ("q/5", payloads[5], 2, False),
        ("q/6", payloads[6], 1, False),
    ]
    # The subscription came back too, and retained messages arrive on subscribe.
    pub = connect(broker, "pub")
    pub.receive(encode(Publish("q/7", payloads[7], qos=1, packet_id=1)))
    assert [p.topic for p in take(sub) if isinstance(p, Publish)] == ["q/7"]
    fresh = connect(broker, "fresh")
    retained = sorted(subscribe(fresh, "r/#", 1), key=lambda p: p.topic)  # type: ignore[union-attr]
    assert retained == [
        Publish("r/a", b"A" * 3000, qos=1, retain=True, packet_id=1),
        Publish("r/b", b"B", qos=0, retain=True),
    ]
    store.close()


def test_a_session_removed_and_saved_again_in_one_turn_keeps_only_the_new_state(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    broker, store, _ = start(path)
    sub = connect(broker, "sub", clean=False)
    subscribe(sub, "old/#", 1)
    pub = connect(broker, "pub")
    store.commit()
    # One loop turn, one commit: the old session goes offline, gets a message queued, is
    # discarded by a clean session, and a new persistent session subscribes elsewhere.
    sub.lost("gone")
    pub.receive(encode(Publish("old/1", b"queued", qos=1, packet_id=1)))
    connect(broker, "sub", clean=True).lost("gone")
    sub = connect(broker, "sub", clean=False)
    subscribe(sub, "new/#", 1)
    for payload in (b"first", b"", b"third"):  # a retained topic set, cleared, set again
        pub.receive(encode(Publish("t", payload, qos=0, retain=True)))
    store.commit()
    store.close()

    broker, store, state = start(path)
    [session] = state.sessions
    assert session.subscriptions == {"new/#": 1} and session.outbound == []
    assert [(m.topic, m.payload) for m in state.retained] == [("t", b"third")]
    store.close()


# -- a crash loses only what was not committed -----------------------------------------------

CRASHING_SERVER = """
import logging, os, signal, sys
from fullbroker.store import SqliteStore
from mqtt.broker import Broker
from mqtt.codec import encode
from mqtt.limits import Limits
from mqtt.packets import Connect, Publish, Subscribe

store, state = SqliteStore.open(sys.argv[1], logging.getLogger("child"), None)
broker = Broker(lambda: 0.0, Limits(sys_interval=0), store=store)
broker.restore(state)
keeper = broker.open("a")
keeper.receive(encode(Connect("keeper", clean_session=False)) + encode(Subscribe(1, (("t/#", 1),))))
keeper.receive(encode(Publish("t/kept", b"K", qos=1, retain=True, packet_id=1)))
store.commit()  # end of a loop turn
keeper.receive(encode(Subscribe(2, (("u/#", 1),))))
keeper.receive(encode(Publish("t/lost", b"L", qos=1, retain=True, packet_id=2)))
broker.open("b").receive(encode(Connect("ghost", clean_session=False)))
os.kill(os.getpid(), signal.SIGKILL)  # kill -9 before this turn's commit (and its PUBACK)
"""


def test_a_kill_9_keeps_what_was_committed_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", CRASHING_SERVER, str(path)], env=env, capture_output=True)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    _, store, state = start(path)
    assert [m.topic for m in state.retained] == ["t/kept"]
    [session] = state.sessions
    assert session.client_id == "keeper" and session.subscriptions == {"t/#": 1}
    assert [(d.topic, d.payload, d.packet_id) for d in session.outbound] == [("t/kept", b"K", 1)]
    store.close()


# -- only live state is kept ---------------------------------------------------------------


def test_completed_deliveries_cleared_retained_and_removed_sessions_leave_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    broker, store, _ = start(path)
    sub = connect(broker, "sub", clean=False)
    subscribe(sub, "d/#", 2)
    pub = connect(broker, "pub")
    pub.receive(
        encode(Publish("d/1", b"one", qos=1, packet_id=1))
        + encode(Publish("d/2", b"two", qos=2, packet_id=2))
        + encode(Publish("kept", b"R", retain=True))
    )
    sub.receive(encode(Publish("up", b"x", qos=2, packet_id=9)))
    store.commit()
    assert store.rows() == rows(retained=1, sessions=1, subscriptions=1, outbound=2, inbound_qos2=1)
    sub.receive(encode(Puback(1)) + encode(Pubrec(2)))
    store.commit()
    assert store.rows()["outbound"] == 1
    sub.receive(encode(Pubcomp(2)) + encode(Pubrel(9)))
    pub.receive(encode(Publish("kept", b"", retain=True)))
    store.commit()
    assert store.rows() == rows(sessions=1, subscriptions=1)
    sub.lost("gone")
    connect(broker, "sub", clean=True)  # a clean session discards the persistent one
    store.close()
    for table in ("retained", "sessions", "subscriptions", "outbound", "inbound_qos2"):
        assert count(path, table) == 0, table


def test_a_delivery_added_and_done_in_one_turn_never_touches_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    broker, store, _ = start(path)
    sub = connect(broker, "sub", clean=False)
    subscribe(sub, "d/#", 1)
    pub = connect(broker, "pub")
    store.commit()
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.commit()  # nothing recorded: not even a BEGIN
    assert statements == []
    pub.receive(encode(Publish("d/1", b"fast", qos=1, packet_id=1)))
    [publish] = take(sub)
    sub.receive(encode(Puback(publish.packet_id)))  # type: ignore[union-attr]
    store.commit()
    assert not any("outbound" in sql for sql in statements), statements
    assert statements == []  # the delivery cancelled itself out: nothing else changed either
    store.close()


def test_a_failed_commit_keeps_its_changes_and_the_next_commit_applies_them_in_order(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store, _ = open_store(path)
    store.session_saved("c", "user")
    store.outbound_added("c", 1, "t", b"p", 1, False, None)
    store.retained_set("r", b"v1", 0)
    store._db.execute("PRAGMA query_only = 1")  # every write now fails, as a full disk would
    with pytest.raises(sqlite3.OperationalError):
        store.commit()
    store._db.execute("PRAGMA query_only = 0")
    store.outbound_done("c", 1)  # recorded after the failure: must apply after the failed batch
    store.retained_cleared("r")
    store.retained_set("s", b"kept", 1)
    store.commit()
    assert store.rows() == rows(retained=1, sessions=1)
    store.close()


# -- session expiry at start-up ----------------------------------------------------------------


def test_sessions_disconnected_longer_than_expiry_are_dropped_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    wall = Clock(1_700_000_000.0)
    broker, store, _ = start(path, wall=wall)
    for client_id in ("old", "recent", "online"):
        subscribe(connect(broker, client_id, clean=False), f"{client_id}/#", 1)
    store.commit()
    broker.sessions["old"].connection.lost("gone")  # type: ignore[union-attr]
    store.commit()
    wall.now += 90
    broker.sessions["recent"].connection.lost("gone")  # type: ignore[union-attr]
    store.close()  # "online" is still connected when the broker stops

    wall.now += 10  # old: away 100 s, recent: 10 s, online: counts from this start
    with caplog.at_level(logging.INFO, logger=LOG.name):
        broker, store, state = start(path, expiry=50, wall=wall)
    away = sorted((s.client_id, s.disconnected_for) for s in state.sessions)
    assert away == [("online", 0.0), ("recent", 10.0)]
    assert "1 expired sessions dropped" in caplog.text
    assert count(path, "subscriptions") == 2
    store.close()
    wall.now += 60  # 60 s after the broker restarted: "online" has now been away too long
    broker, store, state = start(path, expiry=50, wall=wall)
    assert state.sessions == []
    store.close()


# -- damage never blocks start-up ---------------------------------------------------------------


def full_store(path: Path, retained: int = 200) -> None:
    store, _ = open_store(path)
    for n in range(retained):
        store.retained_set(f"r/{n}", bytes([n % 256]) * 10240, 0)
    store.session_saved("c", None)
    store.commit()
    store.close()


def truncate(path: Path) -> None:
    full_store(path)
    os.truncate(path, path.stat().st_size // 2)


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(50_000))


def zero_length(path: Path) -> None:
    path.write_bytes(b"")


def malformed(path: Path) -> None:
    full_store(path)
    with path.open("r+b") as file:  # a valid header, then junk where the schema should be
        file.seek(100)
        file.write(b"\xa5" * 8000)


def other_schema(path: Path) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("PRAGMA user_version = 99")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (truncate, "truncated"),
        (garbage, "not an SQLite database"),
        (zero_length, "zero-length"),
        (malformed, "SQLITE_"),
        (other_schema, "schema version 99"),
    ],
)
def test_a_damaged_file_is_moved_aside_and_the_store_opens_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage, reason: str
) -> None:
    path = tmp_path / "store.db"
    damage(path)
    damaged_bytes = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        broker, store, state = start(path)
    assert state.sessions == [] and list(state.retained) == []
    [aside] = tmp_path.glob("store.db.corrupt-*[0-9]Z")
    assert aside.read_bytes() == damaged_bytes  # moved, not repaired or deleted
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert str(path) in message and reason in message and str(aside) in message, message
    # The new store works.
    pub = connect(broker, "pub")
    pub.receive(encode(Publish("t", b"fresh", retain=True)))
    store.close()
    assert count(path, "retained") == 1


def test_a_busy_database_is_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    full_store(path, retained=1)
    first, second = sqlite3.connect(path, timeout=0), sqlite3.connect(path, timeout=0)
    first.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as busy:
        second.execute("BEGIN IMMEDIATE")
    first.close()
    second.close()
    assert not is_damage(busy.value)
    path.write_bytes(b"junk" * 1000)
    with closing(sqlite3.connect(path)) as db, pytest.raises(sqlite3.DatabaseError) as junk:
        db.execute("SELECT * FROM sqlite_master")
    assert is_damage(junk.value)


# -- retained payloads are read lazily ---------------------------------------------------------


def payload_of(n: int) -> bytes:
    return f"payload {n} ".encode() * 500


@pytest.fixture
def traced_sqlite(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQL statement any sqlite connection opened from now on runs."""
    statements: list[str] = []
    real_connect = sqlite3.connect

    def tracing_connect(*args, **kwargs):  # type: ignore[no-untyped-def]
        db = real_connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite3, "connect", tracing_connect)
    yield statements


def payload_reads(statements: list[str]) -> int:
    return sum("SELECT payload FROM retained" in sql for sql in statements)


def test_retained_payloads_are_read_only_when_a_subscriber_needs_them(
    tmp_path: Path, traced_sqlite: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    store, _ = open_store(path)
    for n in range(100):
        store.retained_set(f"r/{n}", payload_of(n), 1)
    store.close()

    traced_sqlite.clear()
    broker, store, state = start(path)
    assert all(isinstance(m, StoredMessage) for m in state.retained) and len(broker.retained) == 100
    assert payload_reads(traced_sqlite) == 0
    assert not any("payload" in sql for sql in traced_sqlite if "retained" in sql), traced_sqlite
    # Start-up's scan is answered by the (topic, qos) index alone: no table page, no payload page.
    with closing(sqlite3.connect(path)) as db:
        [scan] = [sql for sql in traced_sqlite if "FROM retained" in sql]
        plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {scan}"))
    assert "COVERING INDEX" in plan, plan

    one = connect(broker, "one")
    assert subscribe(one, "r/7", 1) == [Publish("r/7", payload_of(7), qos=1, retain=True, packet_id=1)]
    assert payload_reads(traced_sqlite) == 1
    everyone = connect(broker, "everyone")
    received = {p.topic: p.payload for p in subscribe(everyone, "r/#", 0)}  # type: ignore[union-attr]
    assert received == {f"r/{n}": payload_of(n) for n in range(100)}

    # A payload that cannot be read is logged and sent empty; the broker goes on.
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("DELETE FROM retained WHERE topic = 'r/3'")
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        assert subscribe(connect(broker, "late"), "r/3", 0) == [Publish("r/3", b"", retain=True)]
    assert "'r/3'" in caplog.text and store.read_errors == 1
    # A PUBLISH replaces a lazy message with a plain one, and the file follows at commit.
    connect(broker, "pub").receive(encode(Publish("r/5", b"new", retain=True)))
    store.close()
    store, state = open_store(path)
    assert {m.topic: m.payload for m in state.retained}["r/5"] == b"new"
    store.close()


# -- checkpoints run in the background -----------------------------------------------------------


def test_the_background_thread_checkpoints_once_the_wal_passes_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store, _ = open_store(path, autosave_interval=3600.0, wal_limit=256 << 10)
    before = path.stat().st_size
    for n in range(100):
        store.retained_set(f"r/{n}", os.urandom(10240), 0)
    store.commit()  # all of it goes to the WAL; the database file has only the schema
    deadline = time.monotonic() + 10
    while store.checkpoints_total() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.checkpoints_total() == 1
    assert before < 100_000 < 100 * 10240 < path.stat().st_size  # the pages were copied into it
    store.close()
