"""What the sqlite store costs: start-up on a big file, and commit() under a steady QoS 1 stream.

Start-up: builds a store of ``--retained`` retained messages of ``--size`` bytes (inserted
directly, in big transactions), then opens it ``--repeats`` times, each in a fresh Python
process, timing ``SqliteStore.open`` + ``Broker.restore`` and reporting the child's peak RSS
beside the file size: an RSS far below the file size shows the payloads stayed on disk. Page
caches are left as they are; ``--cold`` asks the kernel to forget this one file's cached pages
before each open (``posix_fadvise(DONTNEED)``, no root needed), as after a reboot.
``--quick-check`` also times what start-up avoids: ``PRAGMA quick_check`` (every page), and a
scan of (topic, qos) from the table's leaves rather than from the narrow covering index.

    .venv/bin/python -m tests.bench.store_startup --retained 100000 --size 10240 --repeats 3 [--cold]

Stream: ``--rate`` QoS 1 messages/s through the hooks for ``--seconds`` (each delivery added in
one turn, done the next, ``--per-commit`` per turn), with the store's background checkpointer
(every ``--autosave`` s, or past ``--wal-limit`` MB of WAL); reports the longest ``commit()``
and its percentiles. ``--inline`` lets sqlite checkpoint inside commit instead (its default,
every 1000 pages), for comparison.

    .venv/bin/python -m tests.bench.store_startup --stream [--payload 256 --rate 5000 --per-commit 50]

Not collected by pytest (the file name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from anywhere, too

from fullbroker.store import SqliteStore  # noqa: E402
from fullbroker.store_schema import WAL_LIMIT  # noqa: E402
from mqtt.broker import Broker  # noqa: E402
from mqtt.limits import Limits  # noqa: E402

LOG = logging.getLogger("bench.store")


def topic(n: int) -> str:
    return f"bench/{n // 1000}/{n % 1000}"


def build(path: Path, retained: int, size: int) -> None:
    """A store of ``retained`` messages, written straight into the table in 10,000-row transactions."""
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    store, _ = SqliteStore.open(path, LOG, None, autosave_interval=None)  # the real schema
    store.close()
    started = time.monotonic()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")  # a bench fixture: a crash here just means rebuild
    base = os.urandom(size)
    for first in range(0, retained, 10_000):
        last = min(retained, first + 10_000)
        rows = [(topic(n), n % 3, n.to_bytes(8, "big") + base[8:]) for n in range(first, last)]
        db.execute("BEGIN")
        db.executemany("INSERT INTO retained (topic, qos, payload) VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    seconds = time.monotonic() - started
    print(f"built {path}: {retained} x {size} bytes, {path.stat().st_size / 1e6:.0f} MB in {seconds:.1f} s")


def child_open(path: Path) -> None:
    """In a fresh process: open + restore, then a few lazy reads; one JSON line on stdout."""
    started = time.monotonic()
    store, state = SqliteStore.open(path, LOG, None)
    opened = time.monotonic()
    broker = Broker(time.monotonic, Limits(sys_interval=0), store=store)
    broker.restore(state)
    restored = time.monotonic()
    rss = peak_rss()
    messages = [message for _, message in broker.retained.items()]
    reads = messages[:: max(1, len(messages) // 1000)]
    read_started = time.monotonic()
    read_bytes = sum(len(message.payload) for message in reads)
    read_seconds = time.monotonic() - read_started
    rows_started = time.monotonic()
    store.rows()
    rows_seconds = time.monotonic() - rows_started
    store.close()
    print(json.dumps({
        "open": opened - started,
        "restore": restored - opened,
        "retained": len(broker.retained),
        **rss,
        "lazy_read_us": 1e6 * read_seconds / max(1, len(reads)),
        "lazy_read_bytes": read_bytes,
        "rows_ms": 1000 * rows_seconds,
    }))


def peak_rss() -> dict[str, float]:
    """Peak RSS in MB, two ways.

    ``ru_maxrss`` (what the issue asks for) survives ``exec``: Linux folds the parent's peak
    into it when a vforked child execs, so a child of a big parent reports the parent's peak.
    ``VmHWM`` in /proc/self/status is this process image's own high-water mark.
    """
    peaks = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks["vmhwm_mb"] = int(line.split()[1]) / 1024
    return peaks


def child_baseline() -> None:
    """The same imports and an empty broker: the RSS floor to compare with."""
    Broker(time.monotonic, Limits(sys_interval=0))
    print(json.dumps(peak_rss()))


def child_costs(path: Path) -> None:
    """What start-up could read instead: the table's leaves, or every page (quick_check)."""
    db = sqlite3.connect(path)
    costs: dict[str, object] = {}
    for name, sql in (
        ("index_scan", "SELECT topic, qos FROM retained INDEXED BY retained_topic_qos"),
        ("table_scan", "SELECT topic, qos FROM retained NOT INDEXED"),
        ("quick_check", "PRAGMA quick_check"),
    ):
        if name != "index_scan" and cold:
            drop_file_cache(path)
        started = time.monotonic()
        rows = db.execute(sql).fetchall()
        costs[name] = time.monotonic() - started
        if name == "quick_check":
            costs["result"] = rows[:3]
    with contextlib.suppress(sqlite3.Error):  # dbstat is an optional part of sqlite
        costs["index_mb"] = db.execute(
            "SELECT sum(pgsize) / 1e6 FROM dbstat WHERE name = 'retained_topic_qos'"
        ).fetchone()[0]
    print(json.dumps(costs))


cold = "--cold" in sys.argv


def drop_file_cache(path: Path) -> None:
    """--cold: ask the kernel to forget this file's cached pages (per file, no root needed)."""
    for name in (path, Path(f"{path}-wal")):
        if name.exists():
            fd = os.open(name, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_child(*args: str) -> tuple[dict, float]:
    """(the child's JSON line, the child's whole wall time, interpreter start-up included)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.store_startup", *args],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), time.monotonic() - started


def startup(args: argparse.Namespace) -> None:
    default = Path(tempfile.gettempdir()) / "store_startup" / f"store-{args.retained}x{args.size}.db"
    path = Path(args.path or default)
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.rebuild or not path.exists():
        build(path, args.retained, args.size)
    size_mb = path.stat().st_size / 1e6
    with sqlite3.connect(path) as db:  # how big the start-up scan's b-tree is (dbstat may be absent)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    print(f"store {path}: {size_mb:.0f} MB ({pages} pages)")
    baseline, _ = run_child("--child-baseline")
    print(
        f"baseline (python + imports, empty broker): VmHWM {baseline.get('vmhwm_mb', 0):.0f} MB,"
        f" ru_maxrss {baseline['ru_maxrss_mb']:.0f} MB"
    )
    print(f"page cache: {'dropped for this file before each open (--cold)' if cold else 'left as it is'}")
    runs = []
    for n in range(1, args.repeats + 1):
        if cold:
            drop_file_cache(path)
        result, wall = run_child("--child-open", str(path))
        runs.append(result)
        print(
            f"  open {n}: open {result['open']:.2f} s + restore {result['restore']:.2f} s"
            f" (process {wall:.2f} s incl. interpreter start), {result['retained']} retained,"
            f" peak RSS: VmHWM {result.get('vmhwm_mb', 0):.0f} MB, ru_maxrss {result['ru_maxrss_mb']:.0f} MB;"
            f" lazy read {result['lazy_read_us']:.0f} us each, rows() {result['rows_ms']:.0f} ms"
        )
    totals = [r["open"] + r["restore"] for r in runs]
    rss = [r.get("vmhwm_mb", r["ru_maxrss_mb"]) for r in runs]
    print(
        f"open+restore: median {statistics.median(totals):.2f} s"
        f" (min {min(totals):.2f}, max {max(totals):.2f});"
        f" peak RSS median {statistics.median(rss):.0f} MB vs file {size_mb:.0f} MB"
    )
    if args.quick_check:
        if cold:
            drop_file_cache(path)
        costs, _ = run_child("--child-costs", str(path), *(["--cold"] if cold else []))
        print(
            f"start-up scan of (topic, qos): covering index ({costs.get('index_mb', 0):.1f} MB)"
            f" {costs['index_scan']:.2f} s, the table's leaves instead {costs['table_scan']:.2f} s;"
            f" PRAGMA quick_check on {size_mb:.0f} MB: {costs['quick_check']:.2f} s -> {costs['result']}"
        )


def stream(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="store_stream_"))
    path = directory / "store.db"
    autosave = None if args.inline else args.autosave
    wal_limit = 1 << 40 if args.inline else args.wal_limit << 20  # inline: the thread never fires
    store, _ = SqliteStore.open(path, LOG, None, autosave_interval=autosave, wal_limit=wal_limit)
    if args.inline:
        store._db.execute("PRAGMA wal_autocheckpoint = 1000")  # sqlite's default: inside commit
    store.session_saved("sub", None)
    store.commit()
    payload = os.urandom(args.payload)
    period = args.per_commit / args.rate
    turns = int(args.seconds / period)
    commits: list[float] = []
    hooks: list[float] = []
    seq = 0
    previous: list[int] = []
    next_turn = time.monotonic()
    for _ in range(turns):
        started = time.perf_counter()
        for done in previous:  # PUBACKs for last turn's deliveries
            store.outbound_done("sub", done)
        previous = []
        for _ in range(args.per_commit):
            seq += 1
            store.outbound_added("sub", seq, "bench/stream", payload, 1, False, seq % 65535 + 1)
            previous.append(seq)
        recorded = time.perf_counter()
        store.commit()
        commits.append(time.perf_counter() - recorded)
        hooks.append(recorded - started)
        next_turn += period
        time.sleep(max(0.0, next_turn - time.monotonic()))
    wal = Path(f"{path}-wal").stat().st_size
    checkpoints = store._checkpointer.runs if store._checkpointer else 0
    complete = store._checkpointer.complete if store._checkpointer else 0
    longest_checkpoint = store._checkpointer.longest if store._checkpointer else 0.0
    store.close()
    shutil.rmtree(directory)
    ms = sorted(1000 * c for c in commits)
    print(
        f"{args.rate} QoS 1 msg/s, {args.per_commit} per commit, {args.payload}-byte payloads,"
        f" {args.seconds:.0f} s:"
        f" {len(ms)} commits, max {ms[-1]:.2f} ms, p99 {ms[int(0.99 * len(ms))]:.2f} ms,"
        f" p50 {statistics.median(ms):.2f} ms, mean {statistics.fmean(ms):.2f} ms;"
        f" hooks {1e6 * statistics.fmean(hooks) / (2 * args.per_commit):.2f} us per call"
    )
    mode = (
        "inline (wal_autocheckpoint=1000)"
        if args.inline
        else f"background every {args.autosave:g} s or past {args.wal_limit} MB of WAL"
    )
    print(
        f"checkpoints: {mode}, {checkpoints} run ({complete} caught up with the last commit),"
        f" longest {1000 * longest_checkpoint:.0f} ms;"
        f" WAL at the end {wal / 1e6:.1f} MB"
    )


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--retained", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=10_240, help="payload bytes per retained message")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--path", help="store file (default: $TMPDIR/store_startup/store-NxS.db, reused)")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--quick-check", action="store_true", help="also time PRAGMA quick_check, scans")
    parser.add_argument("--cold", action="store_true", help="drop the file's cached pages before each open")
    parser.add_argument("--stream", action="store_true", help="measure commit() under a QoS 1 stream")
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--per-commit", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--payload", type=int, default=256)
    parser.add_argument("--autosave", type=float, default=1800.0, help="background checkpoint interval, s")
    parser.add_argument("--wal-limit", type=int, default=WAL_LIMIT >> 20, help="MB of WAL to checkpoint at")
    parser.add_argument("--inline", action="store_true", help="checkpoint inside commit instead")
    parser.add_argument("--child-open", help=argparse.SUPPRESS)
    parser.add_argument("--child-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-costs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_open:
        child_open(Path(args.child_open))
    elif args.child_baseline:
        child_baseline()
    elif args.child_costs:
        child_costs(Path(args.child_costs))
    elif args.stream:
        stream(args)
    else:
        startup(args)


if __name__ == "__main__":
    main()
