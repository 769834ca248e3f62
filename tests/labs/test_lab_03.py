"""Lab 03-select-poll-epoll: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes

EXPECTED_PASSES = [
    "select, poll and epoll each returned exactly the active fd",
    "select() refuses fd",
    "select grows with N:",
    "poll grows with N:",
    "at N = 10,000 epoll is",
]


def test_lab_03_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("03-select-poll-epoll", EXPECTED_PASSES)
