"""Lab 03: what one wait call costs with N idle fds and one active one, for select, poll and epoll.

Field notes §8 (docs/field-notes.md): select and poll hand the kernel the whole interest set
on every call and it scans all of it, so their cost grows with N; epoll keeps the set in the
kernel and returns only the ready fds, so its cost stays flat. No MQTT here: just the three
syscalls, timed. ``--student [PATH]`` grades the exercise instead (grade.py).
"""

from __future__ import annotations

import json
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs`` imports from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from grade import SKELETON, grade_student  # this lab's grader, beside this file
from rich.markup import escape
from rich.table import Table

from labs.bench.targets import REPO_ROOT
from labs.exercise import student_arguments
from labs.lab import Lab, TimingComparison, console, lab_arguments

SIZES = (10, 100, 1_000, 10_000)
REPEATS = 5  # each figure is measured this many times: the verdicts need the spread
SELECT_MAX = 1_000  # select() cannot watch an fd >= FD_SETSIZE (1024); CPython raises ValueError
METHODS = ("select", "poll", "epoll")
COMPARE = [
    "labs/compare.py",
    "--quick",
    "--only",
    "select_srv,poll_srv,epoll_lt,idle-scaling",
    "--idle-points",
    "0,100,1000,5000",
    "--no-plots",
]


class Watched:
    """``idle`` sockets nobody writes to, plus one with a byte waiting: the fd every call must return.

    Idle fds are both ends of idle socketpairs (one pair, two watched fds), so 10,000 of them
    fit under this machine's 20,000-fd limit.
    """

    def __init__(self, idle: int) -> None:
        self.pairs = [socket.socketpair() for _ in range(idle // 2)]
        self.idle_fds = [sock.fileno() for pair in self.pairs for sock in pair]
        self.sender, self.receiver = socket.socketpair()
        self.sender.send(b"!")  # never read: the receiver stays readable for every call
        self.active = self.receiver.fileno()
        self.fds = [*self.idle_fds, self.active]

    def close(self) -> None:
        for sock in [self.sender, self.receiver, *(sock for pair in self.pairs for sock in pair)]:
            sock.close()


def waiters(watched: Watched) -> dict[str, Callable[[], list[int]]]:
    """One zero-timeout wait per method, each returning the ready fds; interest sets built once."""
    fds = watched.fds
    poller = select.poll()
    epoll = select.epoll()
    for fd in fds:
        poller.register(fd, select.POLLIN)  # kept in user space, copied in by every poll()
        epoll.register(fd, select.EPOLLIN)  # copied into the kernel once, here
    calls: dict[str, Callable[[], list[int]]] = {
        "poll": lambda: [fd for fd, _ in poller.poll(0)],
        "epoll": lambda: [fd for fd, _ in epoll.poll(0)],
    }
    if max(fds) < 1024:  # FD_SETSIZE
        calls["select"] = lambda: select.select(fds, [], [], 0)[0]
    return calls


def time_per_call(call: Callable[[], list[int]], batch_seconds: float) -> float:
    """CPU microseconds per call: the best of five batches, each long enough to time reliably.

    CPU time of this thread (user + kernel, where the scan happens), not wall time: on a busy
    machine a batch may sit preempted for milliseconds, which says nothing about the call.
    """
    calls = 1
    while True:  # grow the batch until it takes batch_seconds
        started = time.thread_time()
        for _ in range(calls):
            call()
        elapsed = time.thread_time() - started
        if elapsed >= batch_seconds:
            break
        calls *= 2
    best = elapsed / calls
    for _ in range(4):
        started = time.thread_time()
        for _ in range(calls):
            call()
        best = min(best, (time.thread_time() - started) / calls)
    return best * 1e6


Results = dict[int, dict[str, list[float]]]  # N -> method -> CPU µs per call, one per repeat


def measure(lab: Lab, batch_seconds: float) -> Results:
    lab.step("Time one wait call (timeout 0) with N idle fds and one readable fd.")
    lab.say("each call must return exactly the one readable fd; CPU µs per call, best of 5 batches,")
    lab.say(f"measured {REPEATS} times (the methods in turn); the table shows the medians")
    results: Results = {}
    all_correct = True
    for size in SIZES:
        watched = Watched(size)
        try:
            calls = waiters(watched)
            results[size] = {method: [] for method in calls}
            for _ in range(REPEATS):
                for method, call in calls.items():
                    all_correct &= call() == [watched.active]
                    results[size][method].append(time_per_call(call, batch_seconds))
        finally:
            watched.close()
    lab.check(all_correct, "select, poll and epoll each returned exactly the active fd")
    return results


def medians(results: Results) -> dict[int, dict[str, float]]:
    return {
        size: {method: statistics.median(times) for method, times in row.items()}
        for size, row in results.items()
    }


def show_table(results: Results) -> None:
    table = Table(title="CPU µs per wait call (N idle fds + 1 readable)", title_justify="left")
    table.add_column("idle fds N", justify="right")
    for method in METHODS:
        table.add_column(f"{method}()", justify="right")
    table.add_column("poll / epoll", justify="right")
    for size, row in medians(results).items():
        cells = [f"{row[method]:,.1f}" if method in row else "ValueError" for method in METHODS]
        table.add_row(f"{size:,}", *cells, f"{row['poll'] / row['epoll']:,.1f}×")
    console.print(table)


def select_limit(lab: Lab) -> None:
    lab.step("select() and an fd of 1024 or more: FD_SETSIZE is a compile-time bitmap size.")
    watched = Watched(1_100)
    try:
        high = max(watched.fds)
        lab.say(f">>> select.select([{high}], [], [], 0)")
        try:
            select.select([high], [], [], 0)
            raised = ""
        except ValueError as error:
            raised = str(error)
        lab.say(f"ValueError: {raised}" if raised else "(no error)")
    finally:
        watched.close()
    lab.check(bool(raised), f"select() refuses fd {high}: it cannot watch fds ≥ 1024")


def verdicts(lab: Lab, results: Results) -> None:
    """Timing claims, each over the repeats: asserted when large and stable, else only printed."""
    lab.step("Read the table: who grows with N, who stays flat?")
    small, large = results[SIZES[0]], results[SIZES[-1]]
    table = medians(results)
    select_small, select_large = table[SIZES[0]]["select"], table[SELECT_MAX]["select"]
    lab.check_timing(
        TimingComparison.of(results[SELECT_MAX]["select"], small["select"]),
        f"select grows with N: {select_small:.1f} µs at {SIZES[0]} → {select_large:.1f} µs at {SELECT_MAX:,}",
    )
    poll_small, poll_large = table[SIZES[0]]["poll"], table[SIZES[-1]]["poll"]
    lab.check_timing(
        TimingComparison.of(large["poll"], small["poll"]),
        f"poll grows with N: {poll_small:.1f} µs at {SIZES[0]} → {poll_large:.1f} µs at {SIZES[-1]:,}",
    )
    # Flat means no effect, and a ratio near 1 is within a busy machine's noise: shown, not asserted.
    # The claim that can fail if epoll scanned its fds is the next one: epoll ≪ poll at N = 10,000.
    flat = TimingComparison.of(large["epoll"], small["epoll"])
    epoll_small, epoll_large = table[SIZES[0]]["epoll"], table[SIZES[-1]]["epoll"]
    lab.say(f"epoll stays flat: {epoll_small:.2f} µs at {SIZES[0]} → {epoll_large:.2f} µs at {SIZES[-1]:,}")
    lab.say(f"  {flat.describe()}: shown, not asserted")
    cheaper = TimingComparison.of(large["poll"], large["epoll"])
    lab.check_timing(cheaper, f"at N = {SIZES[-1]:,} epoll is {cheaper.ratio:,.0f}× cheaper than poll")


def with_brokers(lab: Lab, quick: bool) -> None:
    lab.step("The same curve with real brokers: labs/compare.py's idle-scaling scenario.")
    lab.say(f"$ .venv/bin/python {' '.join(COMPARE[:4])} \\")
    lab.say(f"      {' '.join(COMPARE[4:])}")
    if quick:
        lab.say("(skipped under --quick: it takes about 30 s; the README shows a captured run)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "idle.json"
        completed = subprocess.run(
            [sys.executable, *COMPARE, "--json", str(report)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        rows = json.loads(report.read_text())["results"] if report.exists() else []
    lines = completed.stdout.splitlines()
    start = next((index for index, line in enumerate(lines) if line.startswith("idle-scaling")), 0)
    for line in lines[start:]:
        if not line.startswith("JSON:"):  # our temporary file, gone by now
            console.print(escape(line), soft_wrap=True)
    lab.check(
        completed.returncode == 0, "compare.py ran clean (exit 0): no lost, duplicated or reordered message"
    )
    cost = {
        (row["target"], row["params"]["idle"]): row["cpu_us_per_msg"]
        for row in rows
        if row["scenario"] == "idle-scaling" and row["status"] == "ok"
    }
    # One compare.py run per point gives no repeats, hence no spread: these ratios are printed,
    # not asserted (the wait-call timings above are, over their repeats).
    most = max((idle for _, idle in cost), default=0)
    growth = []
    for target in ("poll_srv", "epoll_lt"):
        first, last = cost.get((target, 0)), cost.get((target, most))
        if not most or not first or last is None:  # a point failed: its row in the table says why
            lab.say(f"(no CPU figures for {target} at both 0 and {most:,} idle clients: see the table)")
            return
        growth.append(f"{target} {last / first:.1f}×")
    lab.say(f"CPU per message, 0 → {most:,} idle clients: {', '.join(growth)}")
    lab.say("one run per point, so no spread to judge them by: shown, not asserted")


def main() -> int:
    parser = lab_arguments(__doc__.splitlines()[0])
    student_arguments(parser, SKELETON)
    args = parser.parse_args()
    if args.student:
        return grade_student(Path(args.student))
    lab = Lab("Lab 03: select vs poll vs epoll, one wait call at a time")
    results = measure(lab, 0.01 if args.quick else 0.05)
    show_table(results)
    select_limit(lab)
    verdicts(lab, results)
    with_brokers(lab, args.quick)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
