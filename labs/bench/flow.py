"""Shared counters between generator processes, and the flow control built on them.

Without flow control "sent per second" measures only how fast socket buffers and broker queues
fill. Each subscriber process posts how far its slowest stream has got with each publisher
process; a publisher process may run at most ``window`` messages ahead of that. Plain int64
slots in shared memory: one writer per slot, so no locks are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from typing import Any


@dataclass
class FlowBoard:
    """One run's shared counters (RawArrays of int64, created before the workers are spawned)."""

    publisher_procs: int
    subscriber_procs: int
    sent: Any  # [publisher process] messages committed so far
    progress: Any  # [subscriber process * publisher_procs + publisher process] slowest stream's count
    delivered: Any  # [subscriber process] rows received, for progress bars
    final_sent: Any  # [publisher id] the publisher's total, written when it stops
    opened: Any  # [holder process] connections open, for progress bars

    @classmethod
    def create(
        cls, ctx: SpawnContext, publisher_procs: int, subscriber_procs: int, publishers: int, holders: int = 0
    ) -> FlowBoard:
        return cls(
            publisher_procs,
            subscriber_procs,
            ctx.RawArray("q", max(1, publisher_procs)),
            ctx.RawArray("q", max(1, subscriber_procs * publisher_procs)),
            ctx.RawArray("q", max(1, subscriber_procs)),
            ctx.RawArray("q", max(1, publishers)),
            ctx.RawArray("q", max(1, holders)),
        )

    def ahead(self, publisher_proc: int) -> int:
        """How many of this publisher process's messages the slowest subscriber has not yet seen."""
        stride = self.publisher_procs
        progress = self.progress
        slowest = min(progress[sub * stride + publisher_proc] for sub in range(self.subscriber_procs))
        return self.sent[publisher_proc] - slowest

    def post_progress(self, subscriber_proc: int, counts: list[int]) -> None:
        """Record, per publisher process, the count the slowest of this process's streams reached."""
        base = subscriber_proc * self.publisher_procs
        for publisher_proc, count in enumerate(counts):
            self.progress[base + publisher_proc] = count

    def total_delivered(self) -> int:
        return sum(self.delivered[: self.subscriber_procs])

    def total_sent(self) -> int:
        return sum(self.sent[: self.publisher_procs])
