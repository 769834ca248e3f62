"""The sqlite file under the full broker's store: schema, pragmas, checkpoints, and damage.

What this file teaches:

* which pragmas make sqlite a good *journal* for a broker: WAL, ``synchronous=NORMAL``, no
  automatic checkpoint inside a commit (each pragma says why where it is set);
* how to checkpoint from a thread without stalling the writer, and without letting the WAL
  grow for ever (``Checkpointer``);
* how to lay out rows so that start-up reads what it needs without the payloads: the payload
  is the last column, and a narrow index of (topic, qos) lets the retained scan skip the table;
* how to tell a damaged file from an unlucky environment. A file that is not a database, is
  truncated, is malformed or has another schema is *damage*: it is moved aside and the broker
  starts empty. A locked, unreadable or full disk is *not*: moving a good file aside would
  throw away state that a retry (or a second look by the operator) would have kept.

Truncation of a 1 GB file is found cheaply from the 100-byte header: it says how many pages the
database has, so a file shorter than that lost its tail. ``PRAGMA quick_check`` would find more,
but reads every page (seconds per GB: see the report of tests/bench/store_startup.py), so it is
an option, not the default; damage it would have caught later surfaces as a failed lazy read,
which is logged and answered with an empty payload.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

SCHEMA_VERSION = 1  # kept in PRAGMA user_version; any other value is "another schema"

SCHEMA = f"""
BEGIN;
CREATE TABLE retained (
    topic TEXT PRIMARY KEY,
    qos INTEGER NOT NULL,
    payload BLOB NOT NULL  -- last: reading topic and qos stops before the payload's bytes
);
-- Start-up reads every retained topic and its QoS. A 10 KB payload spills into overflow pages
-- but leaves ~2 KB of its head in the table's leaf page, so a table scan would read ~40 % of
-- the file; this index holds only (topic, qos), a few MB per 100,000 topics.
CREATE INDEX retained_topic_qos ON retained (topic, qos);
CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY,
    username TEXT,
    disconnected_at REAL  -- wall clock (time.time()); NULL while its client is connected
);
CREATE TABLE subscriptions (
    client_id TEXT NOT NULL,
    filter TEXT NOT NULL,
    qos INTEGER NOT NULL,
    PRIMARY KEY (client_id, filter)
) WITHOUT ROWID;
CREATE TABLE outbound (
    client_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    packet_id INTEGER,  -- NULL while queued; set once in flight
    released INTEGER NOT NULL DEFAULT 0,  -- QoS 2: PUBREC came, a reconnect resends PUBREL
    payload BLOB NOT NULL,
    PRIMARY KEY (client_id, seq)
);
CREATE TABLE inbound_qos2 (
    client_id TEXT NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, packet_id)
) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

# What a store file of this version must hold; checked at open (PRAGMA table_info is cheap).
TABLES: dict[str, set[str]] = {
    "retained": {"topic", "qos", "payload"},
    "sessions": {"client_id", "username", "disconnected_at"},
    "subscriptions": {"client_id", "filter", "qos"},
    "outbound": {"client_id", "seq", "topic", "qos", "retain", "packet_id", "released", "payload"},
    "inbound_qos2": {"client_id", "packet_id"},
}

# Bytes of WAL past which the background thread checkpoints (and to which a rewound WAL is
# truncated). Smaller means smaller fsyncs per checkpoint: under a 20 MB/s stream the longest
# commit() was 16-20 ms with 16 MB, 21-53 ms with 64 MB (tests/bench/store_startup.py --stream).
WAL_LIMIT = 16 << 20
BUSY_TIMEOUT_MS = 5000

# sqlite's primary result codes that say "the environment", not "the file": moving the file
# aside would not help, and would discard good state. Every other DatabaseError is damage.
_ENVIRONMENT_CODES = {
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_INTERRUPT,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}


class Damaged(Exception):
    """The file is not a store this code can use; the message is the reason for the log."""


def connect(path: Path, wal_limit: int = WAL_LIMIT) -> sqlite3.Connection:
    """The loop's connection to the store, its schema checked (or created), its pragmas set."""
    # isolation_level=None: no implicit transactions; commit() says BEGIN and COMMIT itself.
    # check_same_thread=False: the store serialises use with its own lock (a threaded server
    # calls the core, hence the store, from whichever worker holds the core lock).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # The checkpointer's connection briefly holds locks a commit may need: wait, not fail.
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        new = _check_schema(db)  # before any pragma that writes: a foreign file stays untouched
        # WAL: a commit appends its pages to the -wal file (one sequential write) instead of
        # rewriting the database in place behind a rollback journal, and readers never block it.
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise Damaged(f"cannot switch to WAL (journal_mode stays {mode!r})")
        # NORMAL: in WAL mode a commit does not fsync; the WAL is fsynced at each checkpoint.
        # A committed transaction is in the OS page cache, so it survives the process crashing
        # or a kill -9, which is what the broker promises. A power loss or kernel crash can roll
        # back the transactions since the last checkpoint (never corrupt the file); promising
        # more would cost an fsync per loop turn (synchronous=FULL).
        db.execute("PRAGMA synchronous = NORMAL")
        # No automatic checkpoint: it would run inside whichever commit() crossed 1000 pages,
        # copying pages and fsyncing on the loop. A background thread checkpoints instead.
        db.execute("PRAGMA wal_autocheckpoint = 0")
        # A WAL is reused from its start after a complete checkpoint but never shrinks; this
        # truncates it back to wal_limit then, so a burst does not leave a huge file behind,
        # and a WAL file bigger than wal_limit always means that much unchecked-in work.
        db.execute(f"PRAGMA journal_size_limit = {int(wal_limit)}")
        if new:
            db.executescript(SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def _check_schema(db: sqlite3.Connection) -> bool:
    """True for a new (empty) file; raises Damaged unless the file holds this store's schema."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == 0 and not names:
        return True
    if version != SCHEMA_VERSION:
        raise Damaged(f"schema version {version} (user_version), this broker reads version {SCHEMA_VERSION}")
    for table, columns in TABLES.items():
        found = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if found != columns:
            raise Damaged(f"table {table} has columns {sorted(found)}, expected {sorted(columns)}")
    return False


def header_problem(path: Path) -> str | None:
    """Why the file at ``path`` cannot be a healthy store, judged from its size and header; or None.

    Call it before sqlite opens the file: closing a second descriptor of an open sqlite file
    drops sqlite's POSIX locks on it.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None  # a new store
    if size == 0:
        # sqlite would take an empty file as an empty database, but this store never leaves one
        # (switching to WAL writes the first page): it is a file that lost everything.
        return "zero-length file"
    with path.open("rb") as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return "not an SQLite database (no SQLite header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"not an SQLite database (page size {page_size} in its header)"
    # Bytes 28-31 count the database's pages; they are trustworthy when the change counter
    # (24-27) equals "version-valid-for" (92-95). A file shorter than that lost its tail.
    # Skipped while a WAL is pending: a checkpoint writes page 1 (with the new count) first,
    # so one interrupted by a crash leaves a short file that the WAL will complete on open.
    pages = int.from_bytes(header[28:32], "big")
    wal = Path(f"{path}-wal")
    wal_pending = wal.exists() and wal.stat().st_size > 0
    if header[24:28] == header[92:96] and pages and not wal_pending:
        expected = pages * page_size
        if size < expected:
            return (
                f"truncated: its header counts {pages} pages of {page_size} bytes ({expected} bytes),"
                f" the file has {size}"
            )
        if size % page_size:
            return f"truncated: {size} bytes is not a whole number of {page_size}-byte pages"
    return None


def is_damage(error: BaseException) -> bool:
    """True when ``error`` says the file is bad (not a database, malformed, wrong schema)."""
    if isinstance(error, Damaged):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(error, sqlite3.DatabaseError) or code is None:
        return False  # e.g. ProgrammingError: a bug here, not a bad file
    return (code & 0xFF) not in _ENVIRONMENT_CODES


def describe(error: BaseException) -> str:
    """The reason for the log: ours as it is, sqlite's with its code (SQLITE_NOTADB: ...)."""
    name = getattr(error, "sqlite_errorname", None)
    return f"{name}: {error}" if name else str(error)


def move_aside(path: Path) -> Path:
    """Rename the file (and its -wal and -shm) to ``PATH.corrupt-<UTC timestamp>``; the new name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    extra = 1
    while target.exists():  # two failures within one second: keep both
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{extra}")
        extra += 1
    for suffix in ("", "-wal", "-shm"):  # the same suffixes, so sqlite3 opens the copy whole
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{target}{suffix}")
    return target


class Checkpointer:
    """A thread with its own connection that checkpoints the WAL, so commit() never has to.

    PASSIVE never takes the writer's lock: it copies the frames committed so far and returns,
    while the loop goes on committing (sqlite3 releases the GIL as it copies and fsyncs). But
    the WAL is only rewound to its start by a commit that finds *every* frame copied; commits
    that land during a long checkpoint leave a tail, and a WAL checkpointed only that way grows
    without end (a 20 MB/s stream grew one to 480 MB in 10 s). So PASSIVE runs again at once,
    copying just the tail that arrived meanwhile, until a round ends with nothing left: the
    next commit rewinds the WAL, and journal_size_limit trims the file back to ``wal_limit``.
    A blocking RESTART would be sure to finish, but holds the writer lock, stalling commit().

    It runs every ``interval`` seconds (None: never on a timer, as mosquitto's autosave_interval
    0), and whatever the interval, as soon as the WAL grows past ``wal_limit``.
    """

    ROUNDS = 20  # PASSIVE rounds per checkpoint, chasing the tail; left over: next poll

    POLL = 0.25  # seconds between looks at the WAL's size: a stat() each

    def __init__(self, path: Path, interval: float | None, wal_limit: int, log: logging.Logger) -> None:
        self.path = path
        self.interval = interval or float("inf")
        self.wal_limit = wal_limit
        self.log = log
        self.runs = 0
        self.complete = 0  # runs that caught up with the last commit (the WAL can rewind)
        self.longest = 0.0  # seconds, the slowest run so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _wal_size(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return 0

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # A checkpoint fsyncs the WAL before copying and the database after, as at NORMAL.
            db.execute("PRAGMA synchronous = NORMAL")
            due = time.monotonic() + self.interval
            seen = 0  # WAL size after the last run: the file keeps its size while it is reused
            while not self._stop.wait(min(self.POLL, self.interval)):
                size = self._wal_size()
                if time.monotonic() < due and (size <= self.wal_limit or size == seen):
                    continue
                started = time.monotonic()
                try:
                    self.complete += self._checkpoint(db)
                except sqlite3.Error as error:
                    self.log.warning("store %s: background checkpoint failed: %s", self.path, error)
                self.runs += 1
                self.longest = max(self.longest, time.monotonic() - started)
                seen = self._wal_size()
                due = time.monotonic() + self.interval
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> bool:
        """PASSIVE rounds until no commit landed during the last; True if that happened.

        A round reports the frames it saw *when it began*, so "all copied" is not enough: the
        next round must find no new frame (then the last round really copied everything).
        """
        before = -1
        for _ in range(self.ROUNDS):
            _busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames == copied and frames in (before, 0):
                return True
            if self._stop.is_set():
                break
            before = frames if frames == copied else -1
        return False
