"""Polling with a deadline: the only way tests wait for something to become true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 5.0, interval: float = 0.005, what: str = ""
) -> T:
    """Return the first truthy value of ``condition()``; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)  # polling interval, not synchronisation: the deadline decides


def stays_false(condition: Callable[[], object], duration: float, interval: float = 0.01) -> bool:
    """True if ``condition()`` never became truthy during ``duration`` (for 'must not happen')."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if condition():
            return False
        time.sleep(interval)
    return not condition()
