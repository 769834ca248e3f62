"""The full broker's store: persistent sessions and retained messages in one sqlite file.

What this file teaches:

* **Group commit.** The core reports every durable change through ``mqtt.store_hook.StoreHook``
  from inside its hot path. A hook here only records the change in memory, coalesced per key,
  and ``commit()`` writes everything recorded since the last one in a single transaction. The
  server calls it once per loop turn, *before* sending that turn's output, so no acknowledgement
  leaves before the state it covers is durable, and the disk sees one write per turn, not one
  per packet. Coalescing means a delivery queued and completed within one turn never reaches
  the disk at all.
* **Lazy retained payloads.** Start-up reads topics and QoS only; each retained message comes
  back as a ``StoredMessage`` that SELECTs its payload when a subscriber needs it. A 1.2 GB
  store (100,000 x 10 KB) opens and restores in 0.25 s, in 65 MB of RSS.
* **Checkpoints off the loop.** A WAL checkpoint copies pages into the database and fsyncs; a
  thread with its own connection does it every ``autosave_interval`` seconds (mosquitto's
  name), and sooner when the WAL passes ``wal_limit`` (16 MB), so ``commit()`` never does.
* **Damage never blocks start-up** (see ``store_schema``): the file is moved aside, the broker
  starts empty, and the log says where the old file went and why.

A server uses it like this:
    store, state = SqliteStore.open(path, log, expiry=limits.session_expiry or None)
    broker = Broker(clock, limits, policy, store); broker.restore(state)
    each loop turn: handle input, then store.commit(), then send the turn's output
    SIGUSR1 (from the loop, via a flag): store.checkpoint(); SIGTERM: store.close()
Hooks, ``commit()`` and lazy reads run wherever the core runs: one thread, or under the core lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mqtt.message import Message
from mqtt.store_hook import RestoredDelivery, RestoredSession, RestoredState, StoreHook

from .store_schema import (
    TABLES,
    WAL_LIMIT,
    Checkpointer,
    Damaged,
    connect,
    describe,
    header_problem,
    is_damage,
    move_aside,
)

# What is pending for one outbound delivery (or one inbound QoS 2 id) since the last commit.
NEW = 0  # added this turn: not on disk yet, so "done" just forgets it
UPDATE = 1  # on disk; change it (outbound: packet id / released; inbound: add it back)
DELETE = 2  # on disk; delete it

_CLIENT_TABLES = ("sessions", "subscriptions", "outbound", "inbound_qos2")
_SELECT_PAYLOAD = "SELECT payload FROM retained WHERE topic = ?"


class StoredMessage(Message):
    """A retained message read back at start-up, whose payload stays on disk until it is used.

    ``Message`` keeps ``payload`` in a slot; the property here shadows that slot, so this class
    must not call ``Message.__init__`` (which would assign it) and sets the other slots itself.
    The payload is read anew at each use and never cached: a subscription to ``#`` must not pull
    the whole file into memory for good. A PUBLISH that replaces it stores a plain ``Message``.
    """

    __slots__ = ("_read",)

    def __init__(self, topic: str, qos: int, read: Callable[[str], bytes]) -> None:
        self.topic = topic
        self.topic_bytes = topic.encode("utf-8")
        self.qos = qos
        self.retain = True
        self._plain = None
        self.delivered_retained = False
        self._read = read

    @property
    def payload(self) -> bytes:  # type: ignore[override]
        return self._read(self.topic)


class _ClientChanges:
    """One client's changes since the last commit, each key holding only its latest state."""

    __slots__ = ("disconnected_at", "inbound", "outbound", "reset", "saved", "subscriptions", "username")

    def __init__(self) -> None:
        self.reset = False  # session_removed: delete every row of the client before the rest
        self.saved = False  # session_saved: (re)write the session row
        self.username: str | None = None
        self.disconnected_at: float | None = None  # set: the client went away at this wall time
        self.subscriptions: dict[str, int | None] = {}  # filter -> QoS, None: removed
        self.outbound: dict[int, list] = {}  # seq -> [NEW, topic, payload, qos, retain, packet_id,
        #                                      released] | [UPDATE, packet_id, released] | [DELETE]
        self.inbound: dict[int, int] = {}  # packet id -> NEW | UPDATE | DELETE


Batch = tuple[dict[str, tuple[int, bytes] | None], dict[str, _ClientChanges]]


class SqliteStore(StoreHook):
    """The store: hooks that record, ``commit()`` that writes, counters. Build it with ``open``."""

    def __init__(
        self, db: sqlite3.Connection, path: Path, log: logging.Logger, clock: Callable[[], float]
    ) -> None:
        self.path = path
        self._db = db
        self._log = log
        self._clock = clock  # wall clock: disconnected_at must mean something after a restart
        self._lock = threading.Lock()  # the loop's connection: commit, lazy reads, counters
        self._retained: dict[str, tuple[int, bytes] | None] = {}  # topic -> (qos, payload) | cleared
        self._clients: dict[str, _ClientChanges] = {}
        self._failed: list[Batch] = []  # batches a failed commit() rolled back, retried first
        self._checkpointer: Checkpointer | None = None
        self._closed = False
        self.commits = 0
        self.checkpoints = 0  # explicit ones; see checkpoints_total()
        self.read_errors = 0  # lazy payload reads that failed (logged, answered with b"")

    # -- start-up ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        log: logging.Logger,
        expiry: float | None,
        *,
        autosave_interval: float | None = 1800.0,
        wal_limit: int = WAL_LIMIT,
        clock: Callable[[], float] = time.time,
        quick_check: bool = False,
    ) -> tuple[SqliteStore, RestoredState]:
        """Open (or create) the store and read back what ``Broker.restore`` needs.

        ``expiry``: seconds a disconnected session lives (None or 0: forever); older ones are
        deleted now. ``autosave_interval``: seconds between background checkpoints (None or 0:
        none on a timer); the thread also checkpoints whenever the WAL passes ``wal_limit``
        bytes, so the WAL stays bounded either way. ``quick_check``
        runs ``PRAGMA quick_check`` at start-up: it finds more damage but reads the whole file.
        """
        started = time.monotonic()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            store, state, counts = cls._attempt(path, log, clock, expiry, quick_check, wal_limit)
        except Exception as error:
            if not is_damage(error):
                raise  # locked, unreadable, disk full: the file may be fine, so leave it be
            reason = describe(error)
            aside = move_aside(path)
            log.error("store %s is damaged (%s): moved it aside to %s, starting empty", path, reason, aside)
            store, state, counts = cls._attempt(path, log, clock, expiry, quick_check, wal_limit)
        store._checkpointer = Checkpointer(path, autosave_interval, wal_limit, log)
        expired = counts.pop("expired")
        log.info(
            "store %s: %.1f MB, opened in %.2f s: %d retained, %d sessions, %d subscriptions, "
            "%d queued/in-flight messages, %d inbound QoS 2 ids%s",
            path, store.file_bytes() / 1e6, time.monotonic() - started, counts["retained"],
            counts["sessions"], counts["subscriptions"], counts["outbound"], counts["inbound_qos2"],
            f" ({expired} expired sessions dropped)" if expired else "",
        )
        return store, state

    @classmethod
    def _attempt(
        cls,
        path: Path,
        log: logging.Logger,
        clock: Callable[[], float],
        expiry: float | None,
        quick_check: bool,
        wal_limit: int,
    ) -> tuple[SqliteStore, RestoredState, dict[str, int]]:
        problem = header_problem(path)
        if problem is not None:
            raise Damaged(problem)
        db = connect(path, wal_limit)
        try:
            if quick_check:
                found = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
                if found != ["ok"]:
                    raise Damaged("quick_check: " + "; ".join(found))
            store = cls(db, path, log, clock)
            state, counts = store._load(clock(), expiry)
        except BaseException:
            db.close()
            raise
        return store, state, counts

    def _load(self, now: float, expiry: float | None) -> tuple[RestoredState, dict[str, int]]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # Clients connected when the broker stopped have been away since: count from now.
            db.execute("UPDATE sessions SET disconnected_at = ? WHERE disconnected_at IS NULL", (now,))
            gone: list[tuple[str]] = []
            if expiry:
                oldest = now - expiry
                cursor = db.execute("SELECT client_id FROM sessions WHERE disconnected_at < ?", (oldest,))
                gone = cursor.fetchall()
                for table in _CLIENT_TABLES:
                    db.executemany(f"DELETE FROM {table} WHERE client_id = ?", gone)
            for table in _CLIENT_TABLES[1:]:  # rows of no session are dead history
                db.execute(f"DELETE FROM {table} WHERE client_id NOT IN (SELECT client_id FROM sessions)")
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        rows = db.execute("SELECT client_id, username, disconnected_at FROM sessions")
        sessions = {
            client_id: RestoredSession(client_id, username, max(0.0, now - disconnected_at))
            for client_id, username, disconnected_at in rows
        }
        counts = dict.fromkeys(TABLES, 0)
        for client_id, topic_filter, qos in db.execute("SELECT client_id, filter, qos FROM subscriptions"):
            sessions[client_id].subscriptions[topic_filter] = qos
            counts["subscriptions"] += 1
        for client_id, seq, topic, qos, retain, packet_id, released, payload in db.execute(
            "SELECT client_id, seq, topic, qos, retain, packet_id, released, payload"
            " FROM outbound ORDER BY client_id, seq"
        ):  # eager: bounded by max_queued_messages per session
            delivery = RestoredDelivery(seq, topic, payload, qos, bool(retain), packet_id, bool(released))
            sessions[client_id].outbound.append(delivery)
            counts["outbound"] += 1
        for client_id, packet_id in db.execute("SELECT client_id, packet_id FROM inbound_qos2"):
            sessions[client_id].inbound_qos2.append(packet_id)
            counts["inbound_qos2"] += 1
        # The covering index gives topic and QoS without visiting a single payload page.
        read = self._read_payload
        retained = [
            StoredMessage(topic, qos, read)
            for topic, qos in db.execute("SELECT topic, qos FROM retained INDEXED BY retained_topic_qos")
        ]
        counts.update(retained=len(retained), sessions=len(sessions), expired=len(gone))
        return RestoredState(retained, list(sessions.values())), counts

    def _read_payload(self, topic: str) -> bytes:
        """A StoredMessage's payload; b"" (and a log line) when it cannot be read: never raise."""
        try:
            with self._lock:
                row = self._db.execute(_SELECT_PAYLOAD, (topic,)).fetchone()
        except sqlite3.Error as error:
            reason = f"{type(error).__name__}: {error}"
        else:
            if row is not None:
                return row[0]
            reason = "its row is gone"
        self.read_errors += 1
        self._log.error(
            "store %s: cannot read the payload retained on %r (%s); sent empty", self.path, topic, reason
        )
        return b""

    # -- the hooks: record in memory only ---------------------------------------------------

    def _changes(self, client_id: str) -> _ClientChanges:
        changes = self._clients.get(client_id)
        if changes is None:
            changes = self._clients[client_id] = _ClientChanges()
        return changes

    def retained_set(self, topic: str, payload: bytes, qos: int) -> None:
        self._retained[topic] = (qos, payload)

    def retained_cleared(self, topic: str) -> None:
        self._retained[topic] = None

    def session_saved(self, client_id: str, username: str | None) -> None:
        changes = self._changes(client_id)
        changes.saved = True
        changes.username = username
        changes.disconnected_at = None  # connected again

    def session_disconnected(self, client_id: str) -> None:
        self._changes(client_id).disconnected_at = self._clock()

    def session_removed(self, client_id: str) -> None:
        changes = self._changes(client_id)
        changes.reset = True  # whatever the disk holds goes; what was recorded before, too
        changes.saved = False
        changes.disconnected_at = None
        changes.subscriptions.clear()
        changes.outbound.clear()
        changes.inbound.clear()

    def subscription_set(self, client_id: str, topic_filter: str, qos: int) -> None:
        self._changes(client_id).subscriptions[topic_filter] = qos

    def subscription_removed(self, client_id: str, topic_filter: str) -> None:
        self._changes(client_id).subscriptions[topic_filter] = None

    def outbound_added(
        self,
        client_id: str,
        seq: int,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        packet_id: int | None,
    ) -> None:
        self._changes(client_id).outbound[seq] = [NEW, topic, payload, qos, retain, packet_id, 0]

    def outbound_sent(self, client_id: str, seq: int, packet_id: int) -> None:
        outbound = self._changes(client_id).outbound
        entry = outbound.get(seq)
        if entry is None:
            outbound[seq] = [UPDATE, packet_id, 0]
        elif entry[0] == NEW:
            entry[5] = packet_id
        elif entry[0] == UPDATE:
            entry[1] = packet_id

    def outbound_released(self, client_id: str, seq: int) -> None:
        outbound = self._changes(client_id).outbound
        entry = outbound.get(seq)
        if entry is None:
            outbound[seq] = [UPDATE, None, 1]
        elif entry[0] == NEW:
            entry[6] = 1
        elif entry[0] == UPDATE:
            entry[2] = 1

    def outbound_done(self, client_id: str, seq: int) -> None:
        outbound = self._changes(client_id).outbound
        entry = outbound.get(seq)
        if entry is not None and entry[0] == NEW:
            del outbound[seq]  # added and done within one turn: the disk never hears of it
        else:
            outbound[seq] = [DELETE]

    def inbound_qos2_added(self, client_id: str, packet_id: int) -> None:
        inbound = self._changes(client_id).inbound
        inbound[packet_id] = UPDATE if inbound.get(packet_id) == DELETE else NEW

    def inbound_qos2_removed(self, client_id: str, packet_id: int) -> None:
        inbound = self._changes(client_id).inbound
        if inbound.get(packet_id) == NEW:
            del inbound[packet_id]
        else:
            inbound[packet_id] = DELETE

    # -- commit, checkpoint, close ----------------------------------------------------------

    def commit(self) -> None:
        """Write everything recorded since the last commit in one transaction; cheap when idle.

        On an error the transaction rolls back, the recorded changes stay pending (the next
        commit retries them first) and the error propagates: the server decides what to do.
        """
        if not (self._retained or self._clients or self._failed):
            return
        batches = [*self._failed, (self._retained, self._clients)]
        self._retained = {}
        self._clients = {}
        statements = [statement for batch in batches for statement in _statements(*batch)]
        if statements:
            db = self._db
            with self._lock:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    for sql, rows in statements:
                        db.executemany(sql, rows)
                    db.execute("COMMIT")
                except BaseException:
                    self._failed = batches
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("ROLLBACK")
                    raise
            self.commits += 1
        self._failed = []

    def checkpoint(self) -> tuple[int, int]:
        """Commit, then a PASSIVE checkpoint now (SIGUSR1); (WAL frames, frames checkpointed)."""
        self.commit()
        with self._lock:
            _busy, frames, done = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return frames, done

    def close(self) -> None:
        """Commit, checkpoint and close (SIGTERM). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.stop()
        try:
            self.commit()
        finally:
            with self._lock:
                try:  # TRUNCATE: leave the database file whole and the WAL empty
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as error:
                    self._log.warning("store %s: checkpoint at close failed: %s", self.path, error)
                self._db.close()

    # -- counters for $SYS and logs ------------------------------------------------------------

    def rows(self) -> dict[str, int]:
        """Rows per table as last committed (count(*) walks the smallest index: ms per 100k)."""
        with self._lock:
            db = self._db
            return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}

    def file_bytes(self) -> int:
        """The database file plus its WAL, in bytes."""
        total = 0
        for name in (self.path, Path(f"{self.path}-wal")):
            with contextlib.suppress(FileNotFoundError):
                total += name.stat().st_size
        return total

    def checkpoints_total(self) -> int:
        """Checkpoints run so far: explicit ones plus the background thread's."""
        return self.checkpoints + (self._checkpointer.runs if self._checkpointer is not None else 0)


def _statements(retained: dict[str, tuple[int, bytes] | None], clients: dict[str, _ClientChanges]) -> list:
    """One batch's changes as (SQL, rows) for executemany; the order keeps each key's history right.

    Deleting a removed session's rows comes first: what follows for that client was recorded
    after the removal. Every other key holds its final state, so kinds may run in any order.
    """
    resets, saves, disconnects, sub_set, sub_del = [], [], [], [], []
    out_new, out_update, out_delete, in_add, in_delete = [], [], [], [], []
    for client_id, changes in clients.items():
        if changes.reset:
            resets.append((client_id,))
        if changes.saved:
            saves.append((client_id, changes.username, changes.disconnected_at))
        elif changes.disconnected_at is not None:
            disconnects.append((changes.disconnected_at, client_id))
        for topic_filter, qos in changes.subscriptions.items():
            if qos is not None:
                sub_set.append((client_id, topic_filter, qos))
            else:
                sub_del.append((client_id, topic_filter))
        for seq, entry in changes.outbound.items():
            kind = entry[0]
            if kind == NEW:
                _, topic, payload, qos, retain, packet_id, released = entry
                out_new.append((client_id, seq, topic, qos, retain, packet_id, released, payload))
            elif kind == UPDATE:
                out_update.append((entry[1], entry[2], client_id, seq))
            else:
                out_delete.append((client_id, seq))
        for packet_id, state in changes.inbound.items():
            (in_delete if state == DELETE else in_add).append((client_id, packet_id))
    ret_set = [(topic, *value) for topic, value in retained.items() if value is not None]
    ret_del = [(topic,) for topic, value in retained.items() if value is None]
    statements = [(f"DELETE FROM {table} WHERE client_id = ?", resets) for table in _CLIENT_TABLES]
    statements += [
        ("INSERT OR REPLACE INTO sessions (client_id, username, disconnected_at) VALUES (?, ?, ?)", saves),
        ("UPDATE sessions SET disconnected_at = ? WHERE client_id = ?", disconnects),
        ("INSERT OR REPLACE INTO subscriptions (client_id, filter, qos) VALUES (?, ?, ?)", sub_set),
        ("DELETE FROM subscriptions WHERE client_id = ? AND filter = ?", sub_del),
        (
            "INSERT OR REPLACE INTO outbound (client_id, seq, topic, qos, retain, packet_id, released,"
            " payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            out_new,
        ),
        (
            "UPDATE outbound SET packet_id = coalesce(?, packet_id), released = max(released, ?)"
            " WHERE client_id = ? AND seq = ?",
            out_update,
        ),
        ("DELETE FROM outbound WHERE client_id = ? AND seq = ?", out_delete),
        ("INSERT OR IGNORE INTO inbound_qos2 (client_id, packet_id) VALUES (?, ?)", in_add),
        ("DELETE FROM inbound_qos2 WHERE client_id = ? AND packet_id = ?", in_delete),
        ("INSERT OR REPLACE INTO retained (topic, qos, payload) VALUES (?, ?, ?)", ret_set),
        ("DELETE FROM retained WHERE topic = ?", ret_del),
    ]
    return [(sql, rows) for sql, rows in statements if rows]
