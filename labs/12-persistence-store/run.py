"""Lab 12: the 445 MB mosquitto.db, a store that must be loaded whole before the broker listens.

Field notes §6: the broker would not start until mosquitto.db was deleted. Part A fills Debian's
mosquitto with retained messages and shows that its start-up reads the whole store into memory,
so a memory limit or a damaged file keeps the port shut. Part B does the same to the kit's
broker, whose sqlite store reads topics only and moves a damaged file aside.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# and this folder on sys.path so that ``labs``, ``mqtt`` and ``store_client`` import from here.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from store_client import await_connack, fill, retained, topics

from labs.bench.references import free_port, mosquitto_path
from labs.lab import Lab, lab_arguments
from labs.proc import status_numbers
from servers.process import stop_process

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
PAYLOAD_SIZE = 10_000  # bytes per retained message
MB = 1_000_000
MIB = 1 << 20
BATCH = 50  # topics per SUBSCRIBE when reading every retained message back: 500 KB a burst
START_TIMEOUT = 30.0  # seconds a start may take before we call it failed
MOSQUITTO_USER = "mosquitto"  # Debian's mosquitto, started as root, drops to this user


@dataclass
class Start:
    """One start of a broker: when it answered CONNECT (None: never), its memory, how it ended."""

    seconds: float | None
    rss_kib: int = 0
    size_kib: int = 0
    exit_code: int | None = None
    log: list[str] = field(default_factory=list)  # the lines it logged during this start


@dataclass
class StoreBroker:
    """A broker with persistence on: its command line, port, store file and log file."""

    name: str
    command: list[str]
    port: int
    store: Path
    log_path: Path

    def store_mb(self) -> float:
        return self.store.stat().st_size / MB if self.store.exists() else 0.0


@contextlib.contextmanager
def started(broker: StoreBroker, memory_limit: int | None = None) -> Iterator[Start]:
    """Start ``broker`` (under RLIMIT_AS ``memory_limit`` bytes, via prlimit) and stop it after.

    A start that never answers is waited for until it exits; its exit code and log are in the
    Start the block receives once the block ends.
    """
    offset = broker.log_path.stat().st_size if broker.log_path.exists() else 0
    limit = ["prlimit", f"--as={memory_limit}", "--"] if memory_limit else []
    began = time.monotonic()
    with broker.log_path.open("ab") as log:
        process = subprocess.Popen(
            [*limit, *broker.command],  # prlimit sets the limit, then execs the broker: one pid
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    start = Start(await_connack(broker.port, process, began, START_TIMEOUT))
    try:
        if start.seconds is not None:
            start.rss_kib, start.size_kib = status_numbers(process.pid, "VmRSS", "VmSize")
        start.log = new_log_lines(broker, offset)
        yield start
    finally:
        start.exit_code = stop_process(process, grace=30)  # SIGTERM: mosquitto writes its store now
        start.log = new_log_lines(broker, offset)


def new_log_lines(broker: StoreBroker, offset: int) -> list[str]:
    with broker.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace").splitlines()


@dataclass(frozen=True)
class Row:
    messages: int
    store_mb: float
    start: Start
    empty: Start

    @property
    def payload_bytes(self) -> int:
        return self.messages * PAYLOAD_SIZE

    @property
    def rss_growth_bytes(self) -> int:
        return (self.start.rss_kib - self.empty.rss_kib) * 1024


def grow_store(lab: Lab, broker: StoreBroker, counts: tuple[int, ...]) -> list[Row]:
    """Start empty, then fill up to each count, stop (the store is written) and start again."""
    lab.say(f"{'messages':>9}{'payload':>10}{'store file':>12}{'start':>9}{'RSS':>11}{'RSS growth':>12}")
    rows: list[Row] = []
    filled = 0
    with started(broker) as empty:
        show_row(lab, 0, broker, empty, empty)
    for count in counts:
        with started(broker) as running:  # the start that measured the previous size, or empty
            if running.seconds is None:
                raise RuntimeError(f"{broker.name} did not start: {running.log}")
            fill(broker.port, filled, count - filled, PAYLOAD_SIZE)
        filled = count
        with started(broker) as restarted:
            row = Row(count, broker.store_mb(), restarted, empty)
        rows.append(row)
        show_row(lab, count, broker, restarted, empty)
    return rows


def show_row(lab: Lab, count: int, broker: StoreBroker, start: Start, empty: Start) -> None:
    seconds = f"{start.seconds:.2f} s" if start.seconds is not None else "never"
    growth = (start.rss_kib - empty.rss_kib) / 1024
    lab.say(
        f"{count:>9,}{count * PAYLOAD_SIZE / MB:>7.0f} MB{broker.store_mb():>9.1f} MB{seconds:>9}"
        f"{start.rss_kib / 1024:>7.1f} MiB{growth:>8.1f} MiB"
    )


def show_log(lab: Lab, start: Start, directory: Path, containing: str = "") -> None:
    """The log lines holding ``containing``, the temporary directory shown as DIR, wrapped."""
    for line in start.log:
        if containing in line:
            text = line.replace(str(directory), "DIR")
            for number, part in enumerate(textwrap.wrap(text, 92)):
                lab.say(("  " if number == 0 else "      ") + part)


def mosquitto_part(lab: Lab, directory: Path, counts: tuple[int, ...]) -> None:
    binary = mosquitto_path()
    lab.step("Part A: Debian's mosquitto with persistence on. Its config:")
    if binary is None:
        lab.say("skipped: mosquitto not found (apt-get install mosquitto)")
        return
    store_dir = directory / "mosquitto"
    store_dir.mkdir()
    port = free_port()
    config = store_dir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {store_dir}/\nlog_dest stderr\n"
    )
    config.chmod(0o644)
    # mosquitto started as root drops to user mosquitto before it opens the store, as Debian's
    # packaged broker does with /var/lib/mosquitto: so the directory is the user's, not root's.
    if os.geteuid() == 0:
        with contextlib.suppress(LookupError):  # no such user: mosquitto then stays root
            shutil.chown(store_dir, user=MOSQUITTO_USER)
    lab.say("(DIR: a temporary directory, removed at the end)")
    for line in config.read_text().splitlines():
        lab.say(f"  {line.replace(str(directory), 'DIR')}")
    lab.say(
        f"$ chown {MOSQUITTO_USER} DIR/mosquitto   (it drops root for that user before opening the store)"
    )
    broker = StoreBroker(
        "mosquitto",
        [binary, "-c", str(config)],
        port,
        store_dir / "mosquitto.db",
        store_dir / "mosquitto.log",
    )

    lab.step("Fill it with retained 10 KB messages; SIGTERM writes mosquitto.db; start it again.")
    rows = grow_store(lab, broker, counts)
    lab.say("start: until a CONNECT gets its CONNACK; RSS: VmRSS right after")
    lab.check(
        all(row.rss_growth_bytes >= row.payload_bytes / 2 for row in rows),
        "mosquitto loads the whole store: RSS grows by at least half the payload, at each size",
    )
    mosquitto_fails(lab, broker, rows[-1])


def limit_for(largest: Row) -> int:
    """RLIMIT_AS for a start: the broker's VmSize with an empty store, plus half the payload."""
    return largest.empty.size_kib * 1024 + largest.payload_bytes // 2


def mosquitto_fails(lab: Lab, broker: StoreBroker, largest: Row) -> None:
    limit = limit_for(largest)
    lab.step("Under a memory limit smaller than the store needs (RLIMIT_AS, ulimit -v).")
    lab.say(
        f"its VmSize with an empty store, {largest.empty.size_kib / 1024:.1f} MiB, + half the "
        f"payload, {largest.payload_bytes / 2 / MB:.0f} MB"
    )
    lab.say(f"$ prlimit --as={limit} -- mosquitto -c DIR/mosquitto/mosquitto.conf")
    with started(broker, limit) as limited:
        pass
    report_failure(lab, limited)
    lab.check(
        never_listened(limited) and any("Out of memory" in line for line in limited.log),
        "under the limit: 'Error: Out of memory.', exit status 1, the port never listened",
    )

    lab.step("A damaged store: cut mosquitto.db to half its length.")
    size = broker.store.stat().st_size
    os.truncate(broker.store, size // 2)
    lab.say(f"$ truncate -s {size // 2} DIR/mosquitto/mosquitto.db   (from {size:,} bytes)")
    with started(broker) as damaged:
        pass
    report_failure(lab, damaged)
    lab.check(
        never_listened(damaged) and any("Couldn't open database" in line for line in damaged.log),
        "truncated: 'Error: Couldn't open database.', exit status 1, the port never listened",
    )

    lab.step("The notes' fix: delete mosquitto.db. Same memory limit as before.")
    broker.store.unlink()
    lab.say("$ rm DIR/mosquitto/mosquitto.db")
    with started(broker, limit) as fresh:
        messages = retained(broker.port, ["lab12/#"]) if fresh.seconds is not None else (-1, 0)
    seconds = f"{fresh.seconds:.2f} s" if fresh.seconds is not None else "never"
    lab.say(f"answered CONNECT after {seconds}; retained messages left: {messages[0]}")
    lab.check(
        fresh.seconds is not None and messages == (0, 0),
        "mosquitto.db deleted: it starts under the same limit, and every retained message is gone",
    )


def never_listened(start: Start) -> bool:
    return start.seconds is None and start.exit_code not in (None, 0)


def report_failure(lab: Lab, start: Start) -> None:
    status = "answered CONNECT" if start.seconds is not None else "never answered: nothing listened"
    lab.say(f"exit status {start.exit_code}; {status}. It printed:")
    for line in start.log:
        lab.say(f"  {line}")


def broker_part(lab: Lab, directory: Path, counts: tuple[int, ...]) -> None:
    lab.step("Part B: the kit's full broker, persistence true, its store in sqlite. Its config:")
    store_dir = directory / "broker"
    store_dir.mkdir()
    port = free_port()
    config = store_dir / "broker.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {store_dir}/\nlog_dest stderr\nconnection_messages false\n"
    )
    for line in config.read_text().splitlines():
        lab.say(f"  {line.replace(str(directory), 'DIR')}")
    command = [sys.executable, "-m", "servers.broker", "-c", str(config)]
    broker = StoreBroker("broker", command, port, store_dir / "mosquitto.db", store_dir / "broker.log")

    lab.step("The same retained messages; SIGTERM commits; start it again.")
    rows = grow_store(lab, broker, counts)
    lab.say("what the broker logs at each start (the last one):")
    show_log(lab, rows[-1].start, directory, "opened in")
    lab.check(
        all(row.rss_growth_bytes < row.payload_bytes / 4 for row in rows),
        "the kit's broker reads topics only: RSS grows by under a quarter of the payload",
    )
    largest = rows[-1]
    broker_survives(lab, broker, largest, directory)


def broker_survives(lab: Lab, broker: StoreBroker, largest: Row, directory: Path) -> None:
    limit = limit_for(largest)
    lab.step("The same kind of limit: its own VmSize with an empty store, + half the payload.")
    lab.say(
        f"{largest.empty.size_kib / 1024:.1f} MiB + {largest.payload_bytes / 2 / MB:.0f} MB: "
        f"{limit / MIB:.0f} MiB of address space"
    )
    lab.say(f"$ prlimit --as={limit} -- .venv/bin/python -m servers.broker -c DIR/broker/broker.conf")
    with started(broker, limit) as limited:
        everything = retained(broker.port, ["lab12/#"]) if limited.seconds is not None else (0, 0)
        count, size = retained(broker.port, topics(largest.messages), BATCH) if limited.seconds else (0, 0)
    seconds = f"{limited.seconds:.2f} s" if limited.seconds is not None else "never"
    lab.say(f"answered CONNECT after {seconds}. A subscriber to lab12/# got {everything[0]:,} retained")
    lab.say("messages: one burst of QoS 0 retained copies stops at max_pending_output (1 MiB), the")
    lab.say(f"rest counted as dropped. Subscribing {BATCH} topics at a time, it got {count:,} messages,")
    lab.say(f"{size:,} bytes, each payload read from disk as it was sent")
    lab.check(
        limited.seconds is not None and (count, size) == (largest.messages, largest.payload_bytes),
        "under that limit it starts, and serves every retained message, byte for byte",
    )

    lab.step("A damaged store: cut it to half its length, as mosquitto's.")
    size = broker.store.stat().st_size
    os.truncate(broker.store, size // 2)
    lab.say(f"$ truncate -s {size // 2} DIR/broker/mosquitto.db   (from {size:,} bytes)")
    with started(broker) as damaged:
        messages = retained(broker.port, ["lab12/#"]) if damaged.seconds is not None else (-1, 0)
    show_log(lab, damaged, directory, "store ")
    aside = sorted(broker.store.parent.glob("mosquitto.db.corrupt-*"))
    lab.say(f"moved aside: {', '.join(f'{p.name} ({p.stat().st_size:,} bytes)' for p in aside) or 'nothing'}")
    seconds = f"{damaged.seconds:.2f} s" if damaged.seconds is not None else "never"
    lab.say(f"answered CONNECT after {seconds}; retained messages: {messages[0]}")
    lab.check(
        damaged.seconds is not None
        and messages == (0, 0)
        and any("is damaged (truncated" in line for line in damaged.log)
        and [p.stat().st_size for p in aside] == [size // 2],
        "truncated: logged as damaged, moved aside whole, and the broker listens, empty",
    )


def main() -> int:
    args = lab_arguments(__doc__.splitlines()[0]).parse_args()
    lab = Lab("Lab 12: the 445 MB mosquitto.db")
    counts = (500, 2000) if args.quick else (2000, 10_000, 20_000)
    directory = Path(tempfile.mkdtemp(prefix="epoll-mqtt-lab12-"))
    directory.chmod(0o755)  # mosquitto, once it is user mosquitto, must reach its folder inside
    try:
        mosquitto_part(lab, directory, counts)
        broker_part(lab, directory, counts)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    lab.say(f"$ rm -r DIR → {'gone' if not directory.exists() else 'STILL THERE'}")
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
