"""A process's threads as the kernel accounts for them: /proc/PID/task/TID/{stat,status}.

Each thread is a task with its own name, scheduler state, CPU ticks and context-switch
counters. CPU % is the tick delta between two samples over the wall-clock delta. Read it
from another process: inside a busy server the reads themselves compete for the GIL.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")  # utime/stime are in these "jiffies"


@dataclass(frozen=True, slots=True)
class ThreadSample:
    """One thread at one instant. ``state`` is R running, S sleeping, D disk wait, T stopped..."""

    tid: int
    name: str
    state: str
    utime_ticks: int
    stime_ticks: int
    voluntary_ctxt_switches: int
    nonvoluntary_ctxt_switches: int


@dataclass(frozen=True, slots=True)
class ThreadRow:
    """A sample plus the share of one CPU the thread used since the previous sample."""

    sample: ThreadSample
    cpu_percent: float


def parse_stat(text: str) -> tuple[str, str, int, int]:
    """(name, state, utime, stime) from a /proc/.../stat line.

    The name sits in parentheses and may itself contain spaces and ')', so split on the
    LAST ')': everything after it is space-separated numbers, starting at field 3 (state).
    """
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    fields = text[close_paren + 2 :].split()
    # fields[0] is field 3 of proc(5) (state); utime and stime are fields 14 and 15.
    return text[open_paren + 1 : close_paren], fields[0], int(fields[11]), int(fields[12])


def parse_context_switches(status_text: str) -> tuple[int, int]:
    """(voluntary, nonvoluntary) from /proc/.../status: blocked in a wait vs preempted."""
    counts = {"voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key in counts:
            counts[key] = int(value)
    return counts["voluntary_ctxt_switches"], counts["nonvoluntary_ctxt_switches"]


def read_thread(pid: int, tid: int) -> ThreadSample | None:
    """One thread, or None if it exited between listing the task directory and reading it."""
    task = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{task}/stat") as stat_file:
            name, state, utime, stime = parse_stat(stat_file.read())
        with open(f"{task}/status") as status_file:
            voluntary, nonvoluntary = parse_context_switches(status_file.read())
    except (FileNotFoundError, ProcessLookupError):
        return None  # ESRCH reads as ProcessLookupError once the task is being reaped
    return ThreadSample(tid, name, state, utime, stime, voluntary, nonvoluntary)


def read_threads(pid: int) -> list[ThreadSample]:
    """Every thread of ``pid`` in tid order; raises ProcessLookupError if the process is gone."""
    try:
        tids = sorted(int(entry) for entry in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    samples = (read_thread(pid, tid) for tid in tids)
    return [sample for sample in samples if sample is not None]


class ThreadMonitor:
    """Samples one process's threads repeatedly; CPU % comes from consecutive samples."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._previous_ticks: dict[int, int] = {}
        self._previous_time: float | None = None

    def sample(self) -> list[ThreadRow]:
        """Current threads; a thread's first appearance (or the first call) shows 0 % CPU."""
        now = time.monotonic()  # not time.time(): a wall-clock step must not fake a CPU spike
        samples = read_threads(self.pid)
        elapsed = now - self._previous_time if self._previous_time is not None else 0.0
        rows = [ThreadRow(sample, self._cpu_percent(sample, elapsed)) for sample in samples]
        self._previous_ticks = {sample.tid: sample.utime_ticks + sample.stime_ticks for sample in samples}
        self._previous_time = now
        return rows

    def _cpu_percent(self, sample: ThreadSample, elapsed: float) -> float:
        previous = self._previous_ticks.get(sample.tid)
        if previous is None or elapsed <= 0:
            return 0.0
        used_seconds = (sample.utime_ticks + sample.stime_ticks - previous) / CLOCK_TICKS_PER_SECOND
        return 100.0 * used_seconds / elapsed
