"""Helpers for the threaded variants: a lock that reports its wait and hold times, thread names.

The TUI cannot tell a futex wait for our lock from a wait for the GIL (both are futexes), so
lock ownership has to come from the server's own telemetry: each acquisition reports how long
the thread waited for it, how long it held it, and whether it did socket I/O while holding it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from .telemetry import TelemetryEmitter


def name_this_thread(name: str) -> None:
    """Set the kernel's name for the calling thread, so ps/top and /proc/PID/task show it."""
    # /proc/self/task/TID/comm takes at most 15 bytes; pthread_setname_np is not in the stdlib.
    with contextlib.suppress(OSError), open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
        comm.write(name[:15])


class NamedThread(threading.Thread):
    """A daemon thread that first gives itself its kernel name, then says so, then works."""

    def __init__(self, name: str, work: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.work = work
        self.named = threading.Event()

    def run(self) -> None:
        name_this_thread(self.name)
        self.named.set()
        self.work()


def start_named(threads: list[NamedThread], timeout: float = 10.0) -> None:
    """Start ``threads`` and return once each has named itself.

    A server prints its readiness line after this, so whoever starts it (a test, a lab, the
    TUI) finds every thread there and named, and the /proc/self/task/TID/comm file each one
    opens to name itself is closed again before anyone counts the server's descriptors.
    """
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.named.wait(timeout)


class TimedLock:
    """A mutex whose every acquisition can be reported as a telemetry ``lock`` event."""

    def __init__(self, telemetry: TelemetryEmitter | None) -> None:
        self.lock = threading.Lock()
        self.telemetry = telemetry

    def held_by(self, thread: str) -> contextlib.AbstractContextManager[Any]:
        """A reusable ``with`` block for one thread's acquisitions: each reported when telemetry is on."""
        return self.lock if self.telemetry is None else TimedHold(self, thread)

    def report(
        self, thread: str, wait_s: float, hold_s: float, across_recv: bool, asked: float | None = None
    ) -> None:
        """``asked``: when the thread began to wait, if something else came between its wait and its hold."""
        if self.telemetry is not None:
            extra = {"asked": round(asked, 6)} if asked is not None else {}
            self.telemetry.emit(
                "lock",
                thread=thread,
                tid=threading.get_native_id(),
                wait_s=round(wait_s, 7),
                hold_s=round(hold_s, 7),
                across_recv=across_recv,
                **extra,
            )

    def announce(self, thread: str, fd: int) -> None:
        """Say at once that ``thread`` holds the lock and may keep it (``acquire``): a hold that
        never ends would otherwise never be reported, since ``lock`` events come on release."""
        if self.telemetry is not None:
            self.telemetry.emit("acquire", thread=thread, tid=threading.get_native_id(), fd=fd)
            self.telemetry.flush()  # now: whoever flushes next may be waiting for this very lock


class TimedHold:
    """One thread's ``with`` block around a TimedLock: times the wait and the hold, reports both."""

    __slots__ = ("acquired", "asked", "thread", "timed")

    def __init__(self, timed: TimedLock, thread: str) -> None:
        self.timed = timed
        self.thread = thread
        self.asked = self.acquired = 0.0  # one thread uses it, never nested: plain fields suffice

    def __enter__(self) -> None:
        self.asked = time.monotonic()
        self.timed.lock.acquire()
        self.acquired = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        released = time.monotonic()
        self.timed.lock.release()
        self.timed.report(self.thread, self.acquired - self.asked, released - self.acquired, False)
