"""The wait calls a server makes, as its ``wait`` telemetry reports them: the ready-list view's data.

Each wait returns a ready list. A *streak* counts the consecutive waits that reported one fd.
Level-triggered epoll (and select/poll) report an fd again while unread bytes remain, so a
server that reads a small chunk per readiness shows long streaks; edge-triggered epoll reports
an fd once per arrival of data, so its streaks stay at 1.

A threaded server has one wait loop per worker, each numbering its own calls: call numbers,
lost calls and streaks are therefore kept per thread. Two workers' waits arrive interleaved
(worker-1's call 40 beside worker-2's call 7) and neither is a gap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

WAIT_HISTORY = 1_000  # waits kept for the timeline
READY_HISTORY = 300  # waits with a non-empty ready list kept for the table
STILL_RUNNING_S = 1.0  # a streak reported this recently still counts as "now" (frames are 0.1 s apart)
# A loop whose latest wait returned longer ago than this is blocked in its next wait: the fds in
# its latest ready list are no longer ready (LT would have returned at once), so their run is over.
BLOCKED_AFTER_S = 2.0
NOTABLE_STREAK = 3  # two in a row is often just new data arriving; three is bytes left unread


@dataclass(frozen=True, slots=True)
class ReadyFd:
    """One entry of a ready list. ``streak``: consecutive waits that reported ``fd``, this one included."""

    fd: int
    mask: int
    streak: int
    generation: int = 0  # which connection had this fd number (see FdNames)


@dataclass(slots=True)
class Wait:
    """One wait call (its ready list may have arrived split across several events)."""

    call: int
    t: float
    blocked_s: float
    watched: int
    thread: str = ""  # the worker whose wait it was; "" for single-threaded servers
    ready: list[ReadyFd] = field(default_factory=list)
    top: ReadyFd | None = None  # the entry with the longest streak


@dataclass(slots=True)
class ThreadWaits:
    """One thread's own sequence of waits: its latest call, its gaps, its fds' streaks."""

    latest: Wait | None = None
    calls: int = 0  # waits of this thread seen
    missed: int = 0  # gaps in this thread's call numbers: waits whose events never arrived
    streaks: dict[int, int] = field(default_factory=dict)  # fd -> streak as of the latest wait
    previous: dict[int, int] = field(default_factory=dict)  # the same for the wait before it


@dataclass(frozen=True, slots=True)
class Streak:
    """The longest run of one fd, where it stands now: still running, or ended ``age`` seconds ago."""

    entry: ReadyFd  # the run's latest entry: its streak is the run's length
    wait: Wait  # the wait that reported it last
    running: bool

    def age(self, now: float) -> float:
        """Seconds since the wait that last reported the fd (the server's clock is CLOCK_MONOTONIC too)."""
        return max(0.0, now - self.wait.t)


class WaitLog:
    """Recent waits, the latest ready lists, and each fd's streak, per thread."""

    def __init__(self) -> None:
        self.variant = ""
        self.mode = ""
        self.calls = 0  # wait calls seen, all threads (a split ready list is one call)
        self.missed = 0  # calls whose events never arrived: gaps within each thread's call numbers
        self.waits: deque[Wait] = deque(maxlen=WAIT_HISTORY)
        self.recent_ready: deque[Wait] = deque(maxlen=READY_HISTORY)
        self.threads: dict[str, ThreadWaits] = {}

    def add(self, event: dict[str, Any], generations: dict[int, int] | None = None) -> None:
        """Feed one ``wait`` event; ``generations`` tells which connection holds each fd now."""
        generations = generations or {}
        self.variant, self.mode = event.get("variant", self.variant), event.get("mode", self.mode)
        name = event.get("thread") or ""
        thread = self.threads.get(name)
        if thread is None:
            thread = self.threads[name] = ThreadWaits()
        latest = thread.latest
        if event.get("part", 0) and latest is not None and latest.call == event["call"]:
            wait = latest  # the next chunk of a long ready list
        else:
            wait = self._begin(thread, event, name)
        for fd, mask in event["ready"]:
            # A gap (lost waits) does not break a streak: the count is of the waits we saw.
            streak = thread.previous.get(fd, 0) + 1
            thread.streaks[fd] = streak
            entry = ReadyFd(fd, mask, streak, generations.get(fd, 0))
            wait.ready.append(entry)
            if wait.top is None or streak > wait.top.streak:
                wait.top = entry
        if wait.ready and (not self.recent_ready or self.recent_ready[-1] is not wait):
            self.recent_ready.append(wait)

    def _begin(self, thread: ThreadWaits, event: dict[str, Any], name: str) -> Wait:
        """A new wait call of ``thread``: count it, and any of its calls that never arrived."""
        wait = Wait(event["call"], event["t"], event["blocked_s"], event["watched"], name)
        latest = thread.latest
        if latest is not None and wait.call > latest.call + 1:
            gap = wait.call - latest.call - 1  # the server dropped them: our queue was full
            thread.missed += gap
            self.missed += gap
        thread.latest = wait
        thread.calls += 1
        self.calls += 1
        self.waits.append(wait)
        thread.previous, thread.streaks = thread.streaks, {}
        return wait

    @property
    def named_threads(self) -> list[str]:
        """The worker threads that sent waits, by name; [] for a single-threaded server."""
        return sorted(name for name in self.threads if name)

    def watched(self) -> int:
        """fds watched now: each thread's latest ``watched``, summed (every worker has its own epoll)."""
        return sum(thread.latest.watched for thread in self.threads.values() if thread.latest is not None)

    def rate(self, now: float, window: float = 1.0) -> float:
        """Wait calls per second over the last ``window`` seconds."""
        recent = 0
        for wait in reversed(self.waits):
            if wait.t < now - window:
                break
            recent += 1
        return recent / window

    def is_running(self, wait: Wait, now: float) -> bool:
        """True if the fds ``wait`` reported may still be in their streak: ``wait`` came within
        STILL_RUNNING_S (a frame may fall between two waits), or it is its thread's latest and
        that thread is not blocked yet (telemetry arrives in batches, a little late)."""
        age = now - wait.t
        thread = self.threads.get(wait.thread)
        latest = thread is not None and thread.latest is wait
        return age <= STILL_RUNNING_S or (latest and age <= BLOCKED_AFTER_S)

    def top_streak(self, now: float, within: int = 200) -> Streak | None:
        """The longest notable streak still running among the last ``within`` ready lists; if none
        runs, the longest of them all, which may have ended: a headline describes now, so it must
        say which it is (``Streak.running``)."""
        running: Streak | None = None
        longest: Streak | None = None
        for wait in list(self.recent_ready)[-within:]:
            if wait.top is None:
                continue
            candidate = Streak(wait.top, wait, self.is_running(wait, now))
            if candidate.running and (running is None or candidate.entry.streak >= running.entry.streak):
                running = candidate
            if longest is None or candidate.entry.streak >= longest.entry.streak:  # ties: the newer
                longest = candidate
        if running is not None and running.entry.streak >= NOTABLE_STREAK:
            return running
        return longest
