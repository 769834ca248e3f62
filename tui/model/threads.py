"""A server's threads: kernel accounting from /proc plus lock and queue telemetry, per thread.

/proc/PID/task gives each thread's name, state, CPU and context switches, but a futex wait
for the core's lock looks like any other wait (the GIL included). So lock wait and hold times
come from the server's own ``lock`` events, joined to the /proc rows by thread id.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from tui.sources.threads import ThreadRow

LOCK_WINDOW_S = 2.0  # lock statistics cover this many recent seconds
CPU_HISTORY = 40  # CPU samples kept per thread for its lane
LOCK_EVENTS_KEPT = 20_000  # per thread; a busy naive server emits thousands per second


@dataclass(frozen=True, slots=True)
class LockStats:
    """One thread's use of the core lock over the last ``LOCK_WINDOW_S`` seconds."""

    acquisitions: int
    wait_mean_s: float
    wait_max_s: float
    hold_mean_s: float
    held_share: float  # fraction of the window this thread held the lock
    across_recv: bool  # it did socket I/O while holding the lock (the naive flaw)


@dataclass(frozen=True, slots=True)
class Lane:
    """Everything the threads view shows for one thread."""

    row: ThreadRow
    cpu_history: tuple[float, ...]
    switches_per_s: tuple[float, float]  # voluntary (blocked), involuntary (preempted)
    lock: LockStats | None
    queue_depth: int | None


class ThreadLanes:
    def __init__(self) -> None:
        self.rows: list[ThreadRow] = []
        self.cpu_history: dict[int, deque[float]] = {}
        self.switch_rates: dict[int, tuple[float, float]] = {}
        self.lock_events: dict[int, deque[tuple[float, float, float, bool]]] = {}
        self.telemetry_names: dict[int, str] = {}  # tid -> the name the server gave in lock events
        self.queue_depths: dict[str, int] = {}  # worker name ("" = the one shared queue) -> depth
        self.queue_max: dict[str, int] = {}
        self._last_sample: tuple[float, dict[int, tuple[int, int]]] | None = None

    def update(self, rows: list[ThreadRow], now: float) -> None:
        """A new /proc sample: CPU history and context switches per second."""
        switches = {
            row.sample.tid: (row.sample.voluntary_ctxt_switches, row.sample.nonvoluntary_ctxt_switches)
            for row in rows
        }
        if self._last_sample is not None and now > self._last_sample[0]:
            elapsed = now - self._last_sample[0]
            before = self._last_sample[1]
            self.switch_rates = {
                tid: ((vol - before[tid][0]) / elapsed, (invol - before[tid][1]) / elapsed)
                for tid, (vol, invol) in switches.items()
                if tid in before
            }
        self._last_sample = (now, switches)
        for row in rows:
            history = self.cpu_history.setdefault(row.sample.tid, deque(maxlen=CPU_HISTORY))
            history.append(row.cpu_percent)
        alive = set(switches)
        for tid in [tid for tid in self.cpu_history if tid not in alive]:
            del self.cpu_history[tid]
        self.rows = rows

    def on_lock(self, event: dict[str, Any]) -> None:
        tid = event["tid"]
        self.telemetry_names[tid] = event["thread"]
        kept = self.lock_events.setdefault(tid, deque(maxlen=LOCK_EVENTS_KEPT))
        kept.append((event["t"], event["wait_s"], event["hold_s"], bool(event.get("across_recv"))))

    def on_queue(self, event: dict[str, Any]) -> None:
        worker = event.get("worker", "")
        self.queue_depths[worker] = event["depth"]
        self.queue_max[worker] = max(self.queue_max.get(worker, 0), event["depth"])

    def lock_stats(self, tid: int, now: float) -> LockStats | None:
        events = self.lock_events.get(tid)
        if not events:
            return None
        start = now - LOCK_WINDOW_S
        while events and events[0][0] < start - LOCK_WINDOW_S:
            events.popleft()  # older than two windows: never needed again
        recent = [event for event in events if event[0] >= start]
        if not recent:
            return LockStats(0, 0.0, 0.0, 0.0, 0.0, False)
        waits = [event[1] for event in recent]
        holds = [event[2] for event in recent]
        return LockStats(
            acquisitions=len(recent),
            wait_mean_s=sum(waits) / len(recent),
            wait_max_s=max(waits),
            hold_mean_s=sum(holds) / len(recent),
            held_share=min(1.0, sum(holds) / LOCK_WINDOW_S),
            across_recv=any(event[3] for event in recent),
        )

    def lanes(self, now: float) -> list[Lane]:
        lanes = []
        for row in self.rows:
            tid = row.sample.tid
            name = self.telemetry_names.get(tid, row.sample.name)
            lanes.append(
                Lane(
                    row=row,
                    cpu_history=tuple(self.cpu_history.get(tid, ())),
                    switches_per_s=self.switch_rates.get(tid, (0.0, 0.0)),
                    lock=self.lock_stats(tid, now),
                    queue_depth=self.queue_depths.get(name),
                )
            )
        return lanes

    def flawed_threads(self, now: float) -> list[str]:
        """Names of threads that recently held the lock across socket I/O."""
        names = []
        for tid in self.lock_events:
            stats = self.lock_stats(tid, now)
            if stats is not None and stats.across_recv:
                names.append(self.telemetry_names.get(tid, str(tid)))
        return sorted(names)
