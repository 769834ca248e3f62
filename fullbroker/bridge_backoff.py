"""How long a bridge waits before it tries again: exponential back-off with a cap.

Retrying at once after a failure hammers a broker that is restarting or refusing us; waiting
a fixed long time leaves a short outage unbridged for too long. Doubling from a small base up
to a cap does both jobs, and a successful CONNACK starts the series again. mosquitto's
``restart_timeout base cap`` names the same two numbers.
"""

from __future__ import annotations

MIN_DELAY = 0.01  # seconds: even "base 0" must not turn the loop into a busy retry spin


class Backoff:
    def __init__(self, base: float, cap: float) -> None:
        self.base = max(base, MIN_DELAY)
        self.cap = max(cap, self.base)
        self._next = self.base

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the following one, up to the cap."""
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        """A link came up: the next failure waits only ``base`` again."""
        self._next = self.base
