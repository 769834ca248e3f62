"""The wait calls a server makes, as its ``wait`` telemetry reports them: the ready-list view's data.

Each wait returns a ready list. A *streak* counts the consecutive waits that reported one fd.
Level-triggered epoll (and select/poll) report an fd again while unread bytes remain, so a
server that reads a small chunk per readiness shows long streaks; edge-triggered epoll reports
an fd once per arrival of data, so its streaks stay at 1.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

WAIT_HISTORY = 1_000  # waits kept for the timeline
READY_HISTORY = 300  # waits with a non-empty ready list kept for the table


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
    ready: list[ReadyFd] = field(default_factory=list)
    top: ReadyFd | None = None  # the entry with the longest streak


class WaitLog:
    """Recent waits, the latest ready lists, and each fd's streak."""

    def __init__(self) -> None:
        self.variant = ""
        self.mode = ""
        self.calls = 0  # wait calls seen (not events: a split ready list is one call)
        self.missed = 0  # calls whose events never arrived: gaps in the call numbers
        self.waits: deque[Wait] = deque(maxlen=WAIT_HISTORY)
        self.recent_ready: deque[Wait] = deque(maxlen=READY_HISTORY)
        self._streaks: dict[int, int] = {}  # fd -> streak as of the latest wait
        self._previous: dict[int, int] = {}  # the same for the wait before it

    def add(self, event: dict[str, Any], generations: dict[int, int] | None = None) -> None:
        """Feed one ``wait`` event; ``generations`` tells which connection holds each fd now."""
        generations = generations or {}
        self.variant, self.mode = event.get("variant", self.variant), event.get("mode", self.mode)
        latest = self.waits[-1] if self.waits else None
        if event.get("part", 0) and latest is not None and latest.call == event["call"]:
            wait = latest  # the next chunk of a long ready list
        else:
            wait = Wait(event["call"], event["t"], event["blocked_s"], event["watched"])
            if latest is not None and wait.call > latest.call + 1:
                self.missed += wait.call - latest.call - 1  # the server dropped them: our queue was full
            self.waits.append(wait)
            self.calls += 1
            self._previous, self._streaks = self._streaks, {}
        for fd, mask in event["ready"]:
            streak = self._previous.get(fd, 0) + 1
            self._streaks[fd] = streak
            entry = ReadyFd(fd, mask, streak, generations.get(fd, 0))
            wait.ready.append(entry)
            if wait.top is None or streak > wait.top.streak:
                wait.top = entry
        if wait.ready and (not self.recent_ready or self.recent_ready[-1] is not wait):
            self.recent_ready.append(wait)

    def rate(self, now: float, window: float = 1.0) -> float:
        """Wait calls per second over the last ``window`` seconds."""
        recent = 0
        for wait in reversed(self.waits):
            if wait.t < now - window:
                break
            recent += 1
        return recent / window

    def top_streak(self, within: int = 200) -> ReadyFd | None:
        """The entry with the longest streak among the last ``within`` ready lists."""
        best: ReadyFd | None = None
        for wait in list(self.recent_ready)[-within:]:
            if wait.top is not None and (best is None or wait.top.streak > best.streak):
                best = wait.top
        return best
