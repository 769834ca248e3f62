"""Keepalive and CONNECT deadlines for thousands of connections, at a few bytes each: a timer wheel.

A heap entry per connection costs a tuple, a float and an int (about 120 bytes), and every
reschedule pushes another. Here deadlines are rounded up to a slot of ``resolution`` seconds
and a connection is one reference in its slot's list. The heap holds slot numbers only, one
per slot in use: connections that arrived within the same quarter second share one. A check
therefore runs up to one slot late (0.25 s by default), never early.

Entries are not removed when a connection's deadline moves: the owner keeps the slot it
currently wants in ``next_check``, and entries of any other slot are skipped as stale.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from typing import Protocol


class Scheduled(Protocol):
    next_check: int  # the slot of this item's live entry; any other entry of it is stale


class DeadlineWheel:
    """Items filed by deadline slot; ``due(now)`` yields the live ones whose slot has come."""

    def __init__(self, resolution: float = 0.25) -> None:
        self.resolution = resolution
        self._slots: dict[int, list[Scheduled]] = {}
        self._order: list[int] = []  # heap of the slot numbers in use

    def slot_of(self, deadline: float) -> int:
        return math.ceil(deadline / self.resolution)

    def schedule(self, item: Scheduled, deadline: float) -> float:
        """File ``item`` under the slot holding ``deadline``; returns when that slot comes due."""
        slot = math.ceil(deadline / self.resolution)
        item.next_check = slot
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [item]
            heapq.heappush(self._order, slot)
        else:
            bucket.append(item)
        return slot * self.resolution

    def next_due(self) -> float:
        """When the earliest slot in use comes due; infinity when none is."""
        return self._order[0] * self.resolution if self._order else math.inf

    def due(self, now: float) -> Iterator[Scheduled]:
        """Take out every slot due by ``now`` and yield its live items (each at most once).

        The caller may schedule again while iterating: a slot it files into is later than now.
        """
        order, slots = self._order, self._slots
        current = math.floor(now / self.resolution)
        while order and order[0] <= current:
            slot = heapq.heappop(order)
            for item in slots.pop(slot):
                if item.next_check == slot:
                    item.next_check = 0  # handled: a second entry in this slot is now stale
                    yield item

    def __len__(self) -> int:
        """Entries held, stale ones included (for tests and $SYS-style introspection)."""
        return sum(map(len, self._slots.values()))
