"""Counting a kit server's loop turns from outside: its telemetry numbers every wait call.

A server started with ``--telemetry`` sends a datagram per event; each ``wait`` event carries the
number of that epoll_wait call. The highest number seen, once the datagrams stop, is how many
times the loop went round, exactly, without strace slowing it down.
"""

from __future__ import annotations

import select
import threading
import time

from servers.telemetry import TelemetryReader

QUIET = 0.2  # seconds without telemetry after which the server's waits are all counted


class WaitCounter:
    """The server's wait calls, from its telemetry: every ``wait`` event carries the call's number.

    A thread drains the datagrams as they come (the socket queues only 10) and keeps the highest
    number seen; ``settled()`` returns it once nothing new has come for QUIET seconds.
    """

    def __init__(self, port: int) -> None:
        self.reader = TelemetryReader(port)
        self.highest = 0
        self.last_event = time.monotonic()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.drain, daemon=True)
        self.thread.start()

    def drain(self) -> None:
        while not self.stopping.is_set():
            if select.select([self.reader], [], [], 0.05)[0]:
                calls = [event["call"] for event in self.reader.read() if event["k"] == "wait"]
                self.highest = max([self.highest, *calls])
                self.last_event = time.monotonic()

    def settled(self, deadline: float = 10.0) -> int:
        """Wait calls so far: telemetry leaves within 2 ms of a turn, so after QUIET s without any
        (counted from this call, or from the last event if later) every turn so far is in."""
        asked = time.monotonic()
        stop = asked + deadline
        while (now := time.monotonic()) - max(asked, self.last_event) < QUIET and now < stop:
            time.sleep(0.02)  # polls the drain thread's clock, bounded by the deadline
        return self.highest

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.reader.close()
