"""Lab 08: the notes' boss/worker server, its mutex held across recv, and the fix, measured.

Runs ``threaded_boss_worker --naive`` (the notes' C server, flaws included) and the default
model under the same load, collects every ``lock`` event from --telemetry, and compares
lock wait and hold per thread; then compares messages per broker CPU-second with epoll_et,
one thread, to show what threads buy under CPython's GIL.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs``, ``servers`` and ``tui`` import from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs.bench.progress import NullUi
from labs.bench.targets import Broker
from labs.bench.throughput import FlowSpec, run_flow
from labs.lab import Lab, TimingComparison, lab_arguments, running_server
from servers.telemetry import TelemetryReader
from tui.sources.threads import ThreadMonitor, read_threads

PUBLISHERS, SUBSCRIBERS = 4, 4
THREAD_NAMES = {"boss", "worker-1", "worker-2"}
# The workers' lock acquisitions of one run, in time order, cut into this many equal stretches:
# each stretch gives the figures once more, and their spread says how stable a ratio is.
STRETCHES = 5
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


class LockLog:
    """Every telemetry event of one server, read by a thread while the load runs."""

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

    def stop(self) -> list[dict[str, Any]]:
        self.stopping.set()
        self.thread.join()
        self.events.extend(self.reader.read())
        self.reader.close()
        return self.events


def load(duration: float) -> FlowSpec:
    """Several publishers and subscribers on one topic, as fast as flow control allows."""
    return FlowSpec(
        "mixed", PUBLISHERS, SUBSCRIBERS, duration, publisher_procs=2, subscriber_procs=2, rate=0.0
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def lock_events(events: list[dict[str, Any]], prefix: str = "") -> list[dict[str, Any]]:
    """The ``lock`` events of threads whose name starts with ``prefix`` (all threads by default)."""
    return [event for event in events if event["k"] == "lock" and event["thread"].startswith(prefix)]


def lock_summary(lab: Lab, events: list[dict[str, Any]]) -> None:
    """Per thread: acquisitions, wait and hold p50/p99 (µs) and total (s), how many spanned a recv."""
    by_thread: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in lock_events(events):
        by_thread[event["thread"]].append(event)
    header = f"{'thread':<9}{'locks':>7}  {'wait p50/p99 µs':>16}{'total':>8}"
    lab.say(f"{header}  {'hold p50/p99 µs':>16}{'total':>8}  recv")
    for thread, rows in sorted(by_thread.items()):
        waits = [row["wait_s"] for row in rows]
        holds = [row["hold_s"] for row in rows]
        across = sum(1 for row in rows if row["across_recv"])
        lab.say(
            f"{thread:<9}{len(rows):>7,}  {microseconds(waits):>16}{sum(waits):>7.2f}s"
            f"  {microseconds(holds):>16}{sum(holds):>7.2f}s  {across:>4,}"
        )
    depths = [event["depth"] for event in events if event["k"] == "queue"]
    if depths:
        lab.say(f"hand-off queue depth: mean {statistics.fmean(depths):.1f}, max {max(depths)}")


def microseconds(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1e6:,.0f} / {percentile(values, 0.99) * 1e6:,.0f}"


def thread_names(pid: int) -> list[str]:
    """What `cat /proc/PID/task/*/comm` prints: the names the server gave its threads."""
    return [sample.name for sample in read_threads(pid)]


def settled_names(pid: int, expected: set[str], timeout: float = 3.0) -> list[str]:
    """Thread names once every thread has named itself (each writes its own comm as it starts)."""
    deadline = time.monotonic() + timeout
    names = thread_names(pid)
    while not expected <= set(names) and time.monotonic() < deadline:
        time.sleep(0.05)
        names = thread_names(pid)
    return names


def measured_run(broker: Broker, duration: float) -> tuple[dict[str, Any], int, dict[str, float]]:
    """One load run: the flow's figures, its error count, and each thread's CPU % over it."""
    assert broker.pid is not None
    monitor = ThreadMonitor(broker.pid)
    monitor.sample()
    metrics, errors = run_flow(broker, load(duration), NullUi(), "lab08")
    shares = {row.sample.name: row.cpu_percent for row in monitor.sample()}
    error_count = errors.lost + errors.duplicated + errors.reordered + errors.disconnects
    return metrics, error_count, shares


def lock_run(lab: Lab, model: str, duration: float) -> tuple[list[dict[str, Any]], list[str]]:
    args = ["--naive"] if model == "naive" else []
    lab.say("$ .venv/bin/python -m servers.threaded_boss_worker --port 0 \\")
    lab.say(f"      {' '.join([*args, '--telemetry', '--sys-interval', '0'])}")
    with running_server("threaded_boss_worker", *args, "--telemetry", "--sys-interval", "0") as broker:
        assert broker.pid is not None
        log = LockLog(broker.address[1])
        names = settled_names(broker.pid, THREAD_NAMES)
        lab.say(f"$ cat /proc/{broker.pid}/task/*/comm   → {' '.join(names)}")
        metrics, errors, shares = measured_run(broker, duration)
        events = log.stop()
    lab.say(f"{metrics['delivered']:,} deliveries in {metrics['duration_s']:.1f} s, {errors} errors")
    lab.say("CPU per thread over the run: " + ", ".join(f"{n} {p:.0f}%" for n, p in shares.items()))
    lock_summary(lab, events)
    return events, names


def throughput(lab: Lab, duration: float) -> dict[str, float]:
    """msgs per broker CPU-second for each model, telemetry off, one after another."""
    per_cpu: dict[str, float] = {}
    lab.say(f"{'model':<10}{'msgs/s':>12}{'msgs/CPU-s':>14}{'CPU':>9}{'errors':>8}")
    for label, variant, args in (
        ("naive", "threaded_boss_worker", ["--naive"]),
        ("default", "threaded_boss_worker", []),
        ("epoll_et", "epoll_et", []),
    ):
        with running_server(variant, *args, "--sys-interval", "0") as broker:
            metrics, errors, shares = measured_run(broker, duration)
        per_cpu[label] = metrics["msgs_per_cpu_s"] or 0.0
        lab.say(
            f"{label:<10}{metrics['msgs_per_s'] or 0:>12,.0f}{per_cpu[label]:>14,.0f}"
            f"{sum(shares.values()):>8.0f}%{errors:>8}"
        )
    base = per_cpu["epoll_et"] or 1.0
    lab.say("msgs/CPU-s ratios: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in per_cpu.items()))
    lab.say("CPU: all of a server's threads together. Only the thread holding the GIL")
    lab.say("runs Python; the others overlap only inside syscalls (recv, send, epoll_wait)")
    return per_cpu


def worker_figures(events: list[dict[str, Any]]) -> tuple[float, float]:
    """Over every worker's lock acquisitions: the median hold and the mean wait, in seconds."""
    workers = lock_events(events, "worker")
    if not workers:
        return 0.0, 0.0
    return statistics.median(e["hold_s"] for e in workers), statistics.fmean(e["wait_s"] for e in workers)


def stretch_figures(events: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """``worker_figures`` once per stretch of the run: the medians of hold, the means of wait."""
    workers = sorted(lock_events(events, "worker"), key=lambda event: event["t"])
    size = len(workers) // STRETCHES
    if size == 0:
        return [], []
    stretches = [workers[index * size : (index + 1) * size] for index in range(STRETCHES)]
    holds = [statistics.median(event["hold_s"] for event in stretch) for stretch in stretches]
    waits = [statistics.fmean(event["wait_s"] for event in stretch) for stretch in stretches]
    return holds, waits


def lock_verdicts(lab: Lab, naive: list[dict[str, Any]], default: list[dict[str, Any]]) -> None:
    """Hold: asserted, when large and stable over the stretches. Mean wait: shown only."""
    (naive_hold, naive_wait), (default_hold, default_wait) = worker_figures(naive), worker_figures(default)
    lab.say(f"workers' median hold: --naive {naive_hold * 1e6:.0f} µs, default {default_hold * 1e6:.0f} µs")
    lab.say(f"workers' mean wait:   --naive {naive_wait * 1e6:.0f} µs, default {default_wait * 1e6:.1f} µs")
    (naive_holds, naive_waits), (default_holds, default_waits) = (
        stretch_figures(naive),
        stretch_figures(default),
    )
    lab.say(f"per stretch of the run ({STRETCHES} equal runs of acquisitions), --naive over default:")
    lab.check_timing(
        TimingComparison.of(naive_holds, default_holds),
        "--naive workers hold the lock over 10x longer (median)",
        at_least=10,
    )
    # A mean wait jumps whenever a holder is preempted: beside busy loops, naive over default
    # went from 4.5x to 810x between the stretches of one run, and the spread reached 33x: far
    # too unstable to assert.
    if naive_waits and default_waits:
        lab.say(f"mean wait: {TimingComparison.of(naive_waits, default_waits).describe()}")
        lab.say("  shown, not asserted: a mean wait swings with every preempted holder")


def main() -> int:
    args = lab_arguments(__doc__.splitlines()[0]).parse_args()
    duration = 1.5 if args.quick else 3.0
    lab = Lab("Lab 08: boss/worker threads and their lock")

    lab.step("The notes' C server (servers/naive_boss_worker.py keeps its shape).")
    for line in NAIVE_C.splitlines():
        lab.say(line)
    lab.say("flaw 3, the swapped condition variables, is fixed in the Python copy;")
    lab.say("the lock around recv() is kept: that is what this lab measures")

    lab.step(f"--naive under load: {PUBLISHERS} publishers → {SUBSCRIBERS} subscribers, {duration:g} s.")
    naive, naive_names = lock_run(lab, "naive", duration)
    lab.step("The default model under the same load: recv/send outside the lock.")
    default, default_names = lock_run(lab, "default", duration)
    lab.say("watch it live: .venv/bin/python -m tui --run threaded_boss_worker -- --naive")

    lab.step("Messages per broker CPU-second, telemetry off, vs one epoll loop.")
    per_cpu = throughput(lab, duration)

    lab.step("Self-checks: the lock, and what threads buy.")
    lab.check(
        set(naive_names) >= THREAD_NAMES and set(default_names) >= THREAD_NAMES,
        "both models name their threads boss, worker-1, worker-2",
    )
    naive_locks, default_locks = lock_events(naive), lock_events(default)
    lab.check(
        bool(naive_locks) and all(event["across_recv"] for event in naive_locks),
        "--naive: every lock hold spans the socket I/O (across_recv)",
    )
    lab.check(
        bool(default_locks) and not any(event["across_recv"] for event in default_locks),
        "default: no lock hold ever spans a recv",
    )
    lock_verdicts(lab, naive, default)
    # The threaded models came out at 0.73x to 1.05x of epoll_et's msgs/CPU-s, one run each: a
    # difference within a busy machine's noise, so it is shown, not asserted.
    best_threaded = max(per_cpu["naive"], per_cpu["default"]) / (per_cpu["epoll_et"] or 1.0)
    lab.say(f"threads vs one epoll loop: the better threaded model made {best_threaded:.2f}x")
    lab.say("epoll_et's msgs/CPU-s (one run each: shown, not asserted)")
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
