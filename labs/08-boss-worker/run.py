"""Lab 08: the notes' boss/worker server, where one silent client stops every thread, and the fix.

Runs ``threaded_boss_worker --blocking`` (the notes' C server: its mutex held across a
blocking read) with a publisher and a subscriber, then connects a client that sends nothing:
delivery stops for everyone, /proc and gdb show one worker asleep in the read and every other
thread waiting on the lock, and it resumes when that client speaks or is dropped. The default
model, with the same silent client, keeps delivering.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs``, ``servers`` and ``tui`` import from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from grade import SKELETON, grade_student  # this lab's grader, beside this file
from thread_states import describe, gdb_backtraces, one_reader_others_on_futex, thread_states

from labs.bench.progress import NullUi
from labs.bench.targets import Broker
from labs.bench.throughput import FlowSpec, run_flow
from labs.exercise import RawClient, student_arguments
from labs.lab import Lab, lab_arguments, running_server
from mqtt.codec import encode
from mqtt.packets import Publish
from servers.telemetry import TelemetryReader
from tui.sources.threads import ThreadMonitor

TOPIC = "lab08/news"
NAIVE_C = """\
boss:   lock(&m);
        fd = accept(listen_fd);        /* flaw 1: lock held across accept */
        while (full) wait(&not_empty, &m);      /* flaw 3: wrong cond var */
        push(fd); signal(&not_full);            /* flaw 3: wrong signal   */
        unlock(&m);
worker: lock(&m);
        while (empty) wait(&not_full, &m);      /* flaw 3 */
        fd = pop();
        read(fd, buf, n);              /* flaw 2: blocking read, lock held */
        close(fd);
        unlock(&m);"""


class Sizes:
    """How much the lab does: ``--quick`` keeps it under 30 s."""

    def __init__(self, quick: bool) -> None:
        self.messages = 100 if quick else 200
        self.window = 1.0 if quick else 2.0  # seconds the silent client stays silent
        self.connect_timeout = 2.5 if quick else 4.0  # the server's --connect-timeout
        self.load = 1.0 if quick else 3.0  # seconds of each throughput run


class EventLog:
    """Every telemetry event of one server, read by a thread while the lab works."""

    def __init__(self, port: int) -> None:
        self.reader = TelemetryReader(port)
        self.events: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._pump, name="telemetry", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while not self.stopping.is_set():
            self.events.extend(self.reader.read())
            time.sleep(0.005)  # the reader's 4 MiB buffer absorbs what arrives meanwhile

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in list(self.events) if event["k"] == kind]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.reader.close()


def poll(condition: Callable[[], Any], timeout: float) -> Any:
    """The first truthy ``condition()`` within ``timeout`` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    value = condition()
    while not value and time.monotonic() < deadline:
        time.sleep(0.02)
        value = condition()
    return value


class Clients:
    """A subscriber and a publisher on TOPIC, both connected before any silent client."""

    def __init__(self, port: int) -> None:
        self.subscriber = RawClient(port, "lab08-sub", keepalive=0)
        self.subscriber.connect()
        self.subscriber.subscribe(TOPIC)
        self.publisher = RawClient(port, "lab08-pub", keepalive=0)
        self.publisher.connect()
        self.sent = 0

    def publish(self, count: int) -> None:
        frames = [encode(Publish(TOPIC, b"%06d" % (self.sent + index))) for index in range(count)]
        self.publisher.send(b"".join(frames))  # one send: the server sees it all at once
        self.sent += count

    def delivered(self) -> int:
        return sum(isinstance(packet, Publish) for packet in self.subscriber.packets)

    def read_for(self, seconds: float, until: int | None = None) -> int:
        """Read the subscriber for ``seconds`` (or until ``until`` messages have come); the count."""
        deadline = time.monotonic() + seconds
        while (until is None or self.delivered() < until) and time.monotonic() < deadline:
            self.subscriber.read_some(min(0.05, max(0.001, deadline - time.monotonic())))
        return self.delivered()

    def close(self) -> None:
        self.subscriber.close()
        self.publisher.close()


def accepted(log: EventLog, client: RawClient) -> bool:
    """The server's telemetry reported accepting ``client``'s connection."""
    host, port = client.socket.getsockname()[:2]
    return any(event["peer"] == f"{host}:{port}" for event in log.of_kind("accept"))


def show_threads(lab: Lab, pid: int) -> None:
    lab.say(f"/proc/{pid}/task/TID/: comm, syscall (its number, named), wchan")
    for state in thread_states(pid):
        lab.say(f"  {state.tid:>7}  {state.name:<9} {state.syscall:<11} {state.wchan}")


def stall(lab: Lab, log: EventLog, clients: Clients, server: Broker, sizes: Sizes) -> tuple[RawClient, int]:
    """Connect a silent client, wait until a worker sleeps reading it, publish: how many arrive."""
    assert server.pid is not None
    silent = RawClient(server.address[1], "lab08-silent", keepalive=0)  # connected, sends nothing
    holder = poll(lambda: accepted(log, silent) and one_reader_reading(server.pid), 5.0)
    lab.say(f"silent client connected from port {silent.socket.getsockname()[1]}, sends nothing")
    lab.say(f"threads: {holder or 'none sleeps in a read'}")
    clients.publish(sizes.messages)
    lab.say(f"publisher sent {sizes.messages} messages; reading the subscriber for {sizes.window:g} s")
    count = clients.read_for(sizes.window) - (clients.sent - sizes.messages)
    lab.say(f"delivered while the silent client is silent: {count} of {sizes.messages}")
    return silent, count


def one_reader_reading(pid: int) -> str:
    """'' until one of the server's threads sleeps in a read; then where every thread sleeps."""
    states = thread_states(pid)
    return describe(states) if any(state.reading for state in states) else ""


def the_notes_server(lab: Lab) -> None:
    lab.step("The notes' C server, and what --blocking keeps of it.")
    for line in NAIVE_C.splitlines():
        lab.say(line)
    lab.say("--blocking: blocking sockets; the boss queues each new socket at once, and a")
    lab.say("worker reads its first bytes with the mutex held (servers/naive_boss_worker.py)")


def blocking_model(lab: Lab, sizes: Sizes) -> None:
    timeout = f"{sizes.connect_timeout:g}"
    args = ["--blocking", "--connect-timeout", timeout, "--telemetry", "--sys-interval", "0"]
    lab.step(f"--blocking: a subscriber and a publisher, {sizes.messages} messages.")
    lab.say("$ .venv/bin/python -m servers.threaded_boss_worker --port 0 \\")
    lab.say(f"      {' '.join(args)}")
    with running_server("threaded_boss_worker", *args) as server:
        assert server.pid is not None
        log = EventLog(server.address[1])
        clients = Clients(server.address[1])
        try:
            clients.publish(sizes.messages)
            count = clients.read_for(10.0, until=sizes.messages)
            lab.check(
                count == sizes.messages,
                f"before any silent client, --blocking delivered {count} of {sizes.messages}",
            )
            silent_speaks(lab, log, clients, server, sizes)
            silent_dropped(lab, log, clients, server, sizes)
        finally:
            clients.close()
            log.stop()


def silent_speaks(lab: Lab, log: EventLog, clients: Clients, server: Broker, sizes: Sizes) -> None:
    assert server.pid is not None
    lab.step("A client connects and sends nothing.")
    silent, count = stall(lab, log, clients, server, sizes)
    claim = f"while a silent client is connected, --blocking delivered {count} of {sizes.messages}"
    lab.check(count == 0, claim)
    show_threads(lab, server.pid)
    holder = poll(lambda: one_reader_others_on_futex(thread_states(server.pid)), 3.0)
    lab.check(
        holder is not None,
        f"/proc: one thread sleeps in a read ({holder}), every other thread in futex",
    )
    backtraces(lab, server.pid)

    lab.step("The silent client speaks at last: CONNECT.")
    before = clients.delivered()
    silent.connect()
    lab.say("silent client: CONNECT → CONNACK")
    total = clients.read_for(10.0, until=clients.sent)
    lab.check(total == clients.sent, f"once it spoke, delivery resumed: {total - before} of {sizes.messages}")
    silent.close()
    holds = poll(lambda: [event for event in log.of_kind("lock") if event["hold_s"] >= sizes.window], 3.0)
    longest = max(log.of_kind("lock"), key=lambda event: event["hold_s"])
    boss_waits = [event["wait_s"] for event in log.of_kind("lock") if event["thread"] == "boss"]
    lab.say(
        f"telemetry: the longest of {len(log.of_kind('lock')):,} lock holds: {longest['thread']}, "
        f"{longest['hold_s']:.2f} s"
    )
    lab.say(f"the boss's longest wait for the lock: {max(boss_waits, default=0):.2f} s")
    lab.check(
        len(holds) == 1 and longest["thread"].startswith("worker"),
        f"telemetry: one worker's single lock hold spanned the {sizes.window:g} s silence"
        f" ({longest['thread']}, {longest['hold_s']:.2f} s)",
    )


def backtraces(lab: Lab, pid: int) -> None:
    lab.say(f"$ gdb -p {pid} -batch -ex 'thread apply all bt 3'   (frame #0 of each thread)")
    traces, why_not = gdb_backtraces(pid)
    if why_not:
        lab.say(f"SKIP gdb: {why_not}")
        return
    for trace in traces:
        kind = "read" if trace.in_read else "futex" if trace.in_futex else "other"
        lab.say(f"  {trace.name:<9} #0 {trace.innermost():<34} {kind}  {trace.waits_on}".rstrip())
    readers = [trace for trace in traces if trace.in_read]
    waiters = [trace for trace in traces if trace.in_futex]
    addresses = {trace.waits_on for trace in waiters}
    if len(addresses) == 1 and "" not in addresses:
        lab.say(f"the {len(waiters)} waiters sleep on one address, {addresses.pop()}: the mutex")
    lab.check(
        len(readers) == 1 and len(waiters) == len(traces) - 1,
        f"gdb: one thread's backtrace is in a read, the other {len(waiters)} in futex waits",
    )


def silent_dropped(lab: Lab, log: EventLog, clients: Clients, server: Broker, sizes: Sizes) -> None:
    lab.step(f"Another silent client, one that never speaks (--connect-timeout {sizes.connect_timeout:g}).")
    silent, count = stall(lab, log, clients, server, sizes)
    closed = bool(poll(lambda: not silent.read_some(0.05), sizes.connect_timeout + 10.0))
    reasons = poll(lambda: never_connected(log), 3.0)
    lab.say(f"the server closed it (EOF): {closed}; reason (telemetry): {reasons[-1] if reasons else '-'}")
    total = clients.read_for(10.0, until=clients.sent)
    after = total - (clients.sent - sizes.messages) - count
    lab.say(f"delivered after the drop: {after} of {sizes.messages}")
    silent.close()
    lab.check(
        count == 0 and closed and bool(reasons) and after == sizes.messages,
        f"a silent client dropped by --connect-timeout: {count} delivered before, {after} of"
        f" {sizes.messages} after",
    )


def never_connected(log: EventLog) -> list[str]:
    """The reasons of the server's ``close`` events for connections that never sent CONNECT."""
    return [event["reason"] for event in log.of_kind("close") if event["client_id"] is None]


def default_model(lab: Lab, sizes: Sizes) -> None:
    lab.step("The default model with the same silent client: reads outside the lock.")
    lab.say("$ .venv/bin/python -m servers.threaded_boss_worker --port 0 --telemetry --sys-interval 0")
    with running_server("threaded_boss_worker", "--telemetry", "--sys-interval", "0") as server:
        assert server.pid is not None
        log = EventLog(server.address[1])
        clients = Clients(server.address[1])
        silent = RawClient(server.address[1], "lab08-silent", keepalive=0)
        try:
            poll(lambda: accepted(log, silent), 5.0)
            lab.say(f"silent client connected from port {silent.socket.getsockname()[1]}, accepted")
            clients.publish(sizes.messages)
            count = clients.read_for(sizes.window, until=sizes.messages)
            lab.say(f"delivered within {sizes.window:g} s: {count} of {sizes.messages}")
            lab.check(
                count == sizes.messages,
                f"with the same silent client connected, the default model delivered {count} of"
                f" {sizes.messages}",
            )
            pid = server.pid
            idle = poll(lambda: idle_in_epoll(pid), 3.0)
            show_threads(lab, pid)
            lab.check(bool(idle), "default: no thread sleeps in a read; boss and workers wait in epoll_wait")
            holds = [event["hold_s"] for event in log.of_kind("lock")]
            lab.say(f"telemetry: {len(holds):,} lock holds, longest {max(holds, default=0) * 1e6:,.0f} µs")
        finally:
            silent.close()
            clients.close()
            log.stop()
    lab.say("watch it live: .venv/bin/python -m tui --run threaded_boss_worker -- --blocking")


def idle_in_epoll(pid: int) -> bool:
    states = thread_states(pid)
    return bool(states) and all(state.syscall in ("epoll_wait", "epoll_pwait") for state in states)


def throughput(lab: Lab, sizes: Sizes) -> None:
    """msgs per broker CPU-second for each model, telemetry off, one after another: shown only."""
    lab.step(f"Under load (4 publishers → 4 subscribers, {sizes.load:g} s each): shown, not asserted.")
    lab.say(f"{'model':<10}{'msgs/s':>12}{'msgs/CPU-s':>14}{'CPU':>9}{'errors':>8}")
    per_cpu: dict[str, float] = {}
    for label, variant, args in (
        ("naive", "threaded_boss_worker", ["--naive"]),
        ("blocking", "threaded_boss_worker", ["--blocking"]),
        ("default", "threaded_boss_worker", []),
        ("epoll_et", "epoll_et", []),
    ):
        with running_server(variant, *args, "--sys-interval", "0") as server:
            assert server.pid is not None
            monitor = ThreadMonitor(server.pid)
            monitor.sample()
            spec = FlowSpec("mixed", 4, 4, sizes.load, publisher_procs=2, subscriber_procs=2, rate=0.0)
            metrics, errors = run_flow(server, spec, NullUi(), "lab08")
            cpu = sum(row.cpu_percent for row in monitor.sample())
        per_cpu[label] = metrics["msgs_per_cpu_s"] or 0.0
        error_count = errors.lost + errors.duplicated + errors.reordered + errors.disconnects
        rate = metrics["msgs_per_s"] or 0
        lab.say(f"{label:<10}{rate:>12,.0f}{per_cpu[label]:>14,.0f}{cpu:>8.0f}%{error_count:>8}")
    base = per_cpu["epoll_et"] or 1.0
    lab.say("msgs/CPU-s over epoll_et's: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in per_cpu.items()))
    lab.say("one run each, and a busy machine moves them as much as the model does. CPU: all")
    lab.say("of a server's threads together; the GIL lets one of them run Python at a time")


def main() -> int:
    parser = lab_arguments(__doc__.splitlines()[0])
    student_arguments(parser, SKELETON)
    arguments = parser.parse_args()
    if arguments.student:
        return grade_student(Path(arguments.student))
    sizes = Sizes(arguments.quick)
    lab = Lab("Lab 08: boss/worker threads and the silent client")
    the_notes_server(lab)
    blocking_model(lab, sizes)
    default_model(lab, sizes)
    throughput(lab, sizes)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
