"""A server's threads: kernel accounting from /proc plus lock and queue telemetry, per thread.

/proc/PID/task gives each thread's name, state, CPU, context switches and the system call it
sleeps in, but a futex wait for the core's lock looks like any other wait (the GIL included).
So lock wait and hold times come from the server's own ``lock`` events, joined to the /proc
rows by thread id, and binned into 0.25 s slices: the timeline shows, slice by slice, how much
of it each thread held the lock and how much it waited for it.

A ``lock`` event comes on release, so a hold that never ends sends nothing. Two things still
show it: an ``acquire`` event (``--blocking`` sends one before a read that may wait for ever)
gives the hold's running length, and /proc shows a thread asleep in the same read across
samples while the others sleep in futex.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from tui.sources.threads import ThreadRow

SLICE_S = 0.25  # the timeline's resolution: one cell per slice
TIMELINE_SLICES = 40  # slices kept, the newest (partial) one included: 10 s
STATS_SLICES = 8  # the lock statistics cover the last 8 complete slices...
LOCK_WINDOW_S = STATS_SLICES * SLICE_S  # ... that is, 2 s
CPU_HISTORY = 40  # CPU samples kept per thread for its lane
STALL_S = 0.5  # a hold, or one blocking call, this long stops the other threads noticeably
SOCKET_CALLS = frozenset(
    {"read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg", "accept", "accept4"}
)


def spread(start: float, end: float, slice_s: float = SLICE_S) -> list[tuple[int, float]]:
    """[(slice index, seconds of [start, end) inside it)] for every slice the interval touches.

    Slice ``i`` covers [i * slice_s, (i + 1) * slice_s); the overlaps add up to ``end - start``.
    """
    if end <= start:
        return []
    pieces = []
    index = math.floor(start / slice_s)
    while index * slice_s < end:
        overlap = min(end, (index + 1) * slice_s) - max(start, index * slice_s)
        if overlap > 0:
            pieces.append((index, overlap))
        index += 1
    return pieces


@dataclass(slots=True)
class Slice:
    """One thread's lock activity in one slice: time held and waited, and the holds that ended in it."""

    held_s: float = 0.0
    waited_s: float = 0.0
    holds: int = 0
    wait_sum_s: float = 0.0
    hold_max_s: float = 0.0
    across_recv: bool = False


@dataclass(frozen=True, slots=True)
class LockStats:
    """One thread's use of the core lock over the last ``LOCK_WINDOW_S`` seconds of complete slices."""

    acquisitions: int
    wait_mean_s: float
    hold_max_s: float
    holds_per_s: float
    held_share: float  # fraction of the window this thread held the lock
    across_recv: bool  # it did socket I/O while holding the lock (the naive flaw)


@dataclass(frozen=True, slots=True)
class OpenHold:
    """A hold announced by an ``acquire`` event whose ``lock`` event has not come yet."""

    thread: str
    since: float
    fd: int | None


@dataclass(frozen=True, slots=True)
class Asleep:
    """A thread /proc found in the same system call, not having run in between, since ``since``."""

    syscall: str
    argument: int | None
    since: float
    seen_at: float  # the latest sample that still found it there

    @property
    def seconds(self) -> float:
        """How long it has slept there at least (from the samples; it may have begun earlier)."""
        return self.seen_at - self.since


@dataclass(frozen=True, slots=True)
class Stall:
    """One thread stops the others: a long hold still open, or a socket call it sleeps in."""

    thread: str
    held_s: float | None  # the open hold's running length; None if only /proc saw it
    syscall: str  # where it is now ("" if /proc cannot tell)
    blocked_s: float | None  # how long /proc has seen it asleep in that call
    fd: int | None
    waiting: tuple[str, ...]  # the other threads asleep in futex


@dataclass(frozen=True, slots=True)
class Lane:
    """Everything the threads view shows for one thread."""

    row: ThreadRow
    name: str
    cpu_history: tuple[float, ...]
    switches_per_s: tuple[float, float]  # voluntary (blocked), involuntary (preempted)
    lock: LockStats | None  # None: no lock event from this thread yet
    queue_depth: int | None
    held: tuple[float, ...] = ()  # share of each slice it held the lock, oldest first, newest = now
    waited: tuple[float, ...] = ()  # share of each slice it waited for the lock
    open_hold_s: float | None = None  # a hold still in progress, this long so far
    asleep: Asleep | None = None


class ThreadLanes:
    def __init__(self) -> None:
        self.rows: list[ThreadRow] = []
        self.cpu_history: dict[int, deque[float]] = {}
        self.switch_rates: dict[int, tuple[float, float]] = {}
        self.slices: dict[int, dict[int, Slice]] = {}  # tid -> slice index -> Slice
        self.lock_events = 0  # lock events seen so far
        self.telemetry_names: dict[int, str] = {}  # tid -> the name the server gave in lock events
        self.open_holds: dict[int, OpenHold] = {}
        self.released: dict[int, float] = {}  # tid -> when its latest reported hold ended
        self.asleep: dict[int, Asleep] = {}
        self.queue_depths: dict[str, int] = {}  # worker name ("" = the one shared queue) -> depth
        self.queue_max: dict[str, int] = {}
        self._last_sample: tuple[float, dict[int, tuple[int, int, int]]] | None = None

    # ------------------------------------------------------------------ input

    def update(self, rows: list[ThreadRow], now: float) -> None:
        """A new /proc sample: CPU history, context switches per second, who sleeps where."""
        counters = {row.sample.tid: counters_of(row) for row in rows}
        before = self._last_sample[1] if self._last_sample is not None else {}
        if self._last_sample is not None and now > self._last_sample[0]:
            elapsed = now - self._last_sample[0]
            self.switch_rates = {
                tid: ((vol - before[tid][0]) / elapsed, (invol - before[tid][1]) / elapsed)
                for tid, (vol, invol, _) in counters.items()
                if tid in before
            }
        self._last_sample = (now, counters)
        for row in rows:
            history = self.cpu_history.setdefault(row.sample.tid, deque(maxlen=CPU_HISTORY))
            history.append(row.cpu_percent)
        self.asleep = {row.sample.tid: self._still_asleep(row, before, now) for row in rows}
        alive = set(counters)
        for table in (self.cpu_history, self.open_holds, self.slices, self.released):
            for tid in [tid for tid in table if tid not in alive]:
                del table[tid]
        self.rows = rows
        self._forget_before(math.floor(now / SLICE_S) - TIMELINE_SLICES)

    def _still_asleep(self, row: ThreadRow, before: dict[int, tuple[int, int, int]], now: float) -> Asleep:
        """Same call, same argument, and no context switch or CPU tick since: the same sleep goes on."""
        sample = row.sample
        previous = self.asleep.get(sample.tid)
        unmoved = before.get(sample.tid) == counters_of(row)
        where = (sample.syscall, sample.syscall_arg)
        since = (
            previous.since if previous and unmoved and (previous.syscall, previous.argument) == where else now
        )
        return Asleep(sample.syscall, sample.syscall_arg, since, now)

    def on_lock(self, event: dict[str, Any]) -> None:
        """One finished hold: its wait and its hold spread over the slices they covered."""
        tid, released = event["tid"], event["t"]
        wait_s, hold_s = event["wait_s"], event["hold_s"]
        self.telemetry_names[tid] = event["thread"]
        self.lock_events += 1
        self.released[tid] = max(released, self.released.get(tid, released))
        open_hold = self.open_holds.get(tid)
        if open_hold is not None and released >= open_hold.since:
            del self.open_holds[tid]  # its release: a lock event sent before it may arrive after it
        slices = self.slices.setdefault(tid, {})
        acquired = released - hold_s
        asked = event.get("asked", acquired - wait_s)  # --naive workers wait, then idle, then hold
        for index, seconds in spread(asked, asked + wait_s):
            slices.setdefault(index, Slice()).waited_s += seconds
        for index, seconds in spread(acquired, released):
            slices.setdefault(index, Slice()).held_s += seconds
        ended = slices.setdefault(math.floor(released / SLICE_S), Slice())
        ended.holds += 1
        ended.wait_sum_s += wait_s
        ended.hold_max_s = max(ended.hold_max_s, hold_s)
        ended.across_recv |= bool(event.get("across_recv"))
        if len(slices) > 4 * TIMELINE_SLICES:  # never drawn (no /proc rows): keep it bounded anyway
            self._forget_before(math.floor(released / SLICE_S) - TIMELINE_SLICES)

    def on_acquire(self, event: dict[str, Any]) -> None:
        tid = event["tid"]
        self.telemetry_names[tid] = event["thread"]
        self.open_holds[tid] = OpenHold(event["thread"], event["t"], event.get("fd"))

    def on_queue(self, event: dict[str, Any]) -> None:
        worker = event.get("worker", "")
        self.queue_depths[worker] = event["depth"]
        self.queue_max[worker] = max(self.queue_max.get(worker, 0), event["depth"])

    def _forget_before(self, oldest: int) -> None:
        for slices in self.slices.values():
            for index in [index for index in slices if index < oldest]:
                del slices[index]

    # ------------------------------------------------------------------ output

    def timeline(self, tid: int, now: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(held, waited): the share of each of the last TIMELINE_SLICES slices, newest (now) last.

        An open hold counts as held up to ``now``: the lock event that will say so has not come.
        """
        current = math.floor(now / SLICE_S)
        first = current - TIMELINE_SLICES + 1
        slices = self.slices.get(tid, {})
        held = [0.0] * TIMELINE_SLICES
        waited = [0.0] * TIMELINE_SLICES
        for index, piece in slices.items():
            if first <= index <= current:
                held[index - first] += piece.held_s
                waited[index - first] += piece.waited_s
        open_hold = self.open_holds.get(tid)
        if open_hold is not None:
            for index, seconds in spread(max(open_hold.since, first * SLICE_S), now):
                if index <= current:
                    held[index - first] += seconds
        share = [min(1.0, seconds / SLICE_S) for seconds in held]
        return tuple(share), tuple(min(1.0, seconds / SLICE_S) for seconds in waited)

    def lock_stats(self, tid: int, now: float) -> LockStats | None:
        """Statistics over the last STATS_SLICES complete slices (exactly LOCK_WINDOW_S seconds).

        Counts, means and maxima are of the holds that ended there; the held share also counts
        an open hold's part of the window, as the timeline draws it.
        """
        open_hold = self.open_holds.get(tid)
        if tid not in self.slices and open_hold is None:
            return None
        slices = self.slices.get(tid, {})
        current = math.floor(now / SLICE_S)
        window = [slices[index] for index in range(current - STATS_SLICES, current) if index in slices]
        holds = sum(piece.holds for piece in window)
        held_s = sum(piece.held_s for piece in window)
        if open_hold is not None:
            held_s += max(0.0, current * SLICE_S - max(open_hold.since, (current - STATS_SLICES) * SLICE_S))
        return LockStats(
            acquisitions=holds,
            wait_mean_s=sum(piece.wait_sum_s for piece in window) / holds if holds else 0.0,
            hold_max_s=max((piece.hold_max_s for piece in window), default=0.0),
            holds_per_s=holds / LOCK_WINDOW_S,
            held_share=min(1.0, held_s / LOCK_WINDOW_S),
            across_recv=any(piece.across_recv for piece in window),
        )

    def lanes(self, now: float) -> list[Lane]:
        lanes = []
        for row in self.rows:
            tid = row.sample.tid
            name = self.telemetry_names.get(tid, row.sample.name)
            known = tid in self.slices or tid in self.open_holds
            held, waited = self.timeline(tid, now) if known else ((), ())
            open_hold = self.open_holds.get(tid)
            lanes.append(
                Lane(
                    row=row,
                    name=name,
                    cpu_history=tuple(self.cpu_history.get(tid, ())),
                    switches_per_s=self.switch_rates.get(tid, (0.0, 0.0)),
                    lock=self.lock_stats(tid, now),
                    queue_depth=self.queue_depths.get(name),
                    held=held,
                    waited=waited,
                    open_hold_s=now - open_hold.since if open_hold is not None else None,
                    asleep=self.asleep.get(tid),
                )
            )
        return lanes

    def flawed_threads(self, now: float) -> list[str]:
        """Names of threads that recently held the lock across socket I/O."""
        names = []
        for tid in self.slices:
            stats = self.lock_stats(tid, now)
            if stats is not None and stats.across_recv:
                names.append(self.telemetry_names.get(tid, str(tid)))
        return sorted(names)

    def recent_holds(self, now: float) -> int:
        """Lock acquisitions, all threads together, in the statistics window."""
        return sum(stats.acquisitions for tid in self.slices if (stats := self.lock_stats(tid, now)))

    def stall(self, now: float) -> Stall | None:
        """The thread that stops the others, if one does: the longest open hold of STALL_S or more,
        else a thread /proc has seen asleep in one socket call that long while others sleep in futex."""
        rows = {row.sample.tid: row for row in self.rows}
        holds = [(now - hold.since, tid) for tid, hold in self.open_holds.items()]
        holds = [(held_s, tid) for held_s, tid in holds if held_s >= STALL_S]
        if holds:
            held_s, tid = max(holds)
            open_hold = self.open_holds[tid]
            return self._stall(tid, open_hold.thread, held_s, open_hold.fd, rows)
        for tid, asleep in sorted(self.asleep.items(), key=lambda item: -item[1].seconds):
            if self.released.get(tid, asleep.seen_at) > asleep.seen_at:
                continue  # it let go of the lock after the sample that saw it asleep: that sleep is over
            if asleep.syscall in SOCKET_CALLS and asleep.seconds >= STALL_S and tid in rows:
                stall = self._stall(tid, self.name_of(rows[tid]), None, asleep.argument, rows)
                if stall.waiting:
                    return stall
        return None

    def _stall(
        self, tid: int, name: str, held_s: float | None, fd: int | None, rows: dict[int, ThreadRow]
    ) -> Stall:
        asleep = self.asleep.get(tid)
        row = rows.get(tid)
        syscall = row.sample.syscall if row is not None else ""
        blocked_s = asleep.seconds if asleep is not None and asleep.syscall == syscall else None
        if row is not None and syscall in SOCKET_CALLS and row.sample.syscall_arg is not None:
            fd = row.sample.syscall_arg  # the kernel's word on which fd it reads
        waiting = tuple(
            self.name_of(other)
            for other in self.rows
            if other.sample.tid != tid and other.sample.syscall == "futex"
        )
        return Stall(name, held_s, syscall, blocked_s, fd, waiting)

    def name_of(self, row: ThreadRow) -> str:
        return self.telemetry_names.get(row.sample.tid, row.sample.name)


def counters_of(row: ThreadRow) -> tuple[int, int, int]:
    """(voluntary switches, involuntary switches, CPU ticks): any change means the thread ran."""
    sample = row.sample
    ticks = sample.utime_ticks + sample.stime_ticks
    return sample.voluntary_ctxt_switches, sample.nonvoluntary_ctxt_switches, ticks
