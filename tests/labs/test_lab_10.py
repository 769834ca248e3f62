"""Lab 10-reuseport: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes

EXPECTED_PASSES = [
    "two listening sockets share one port",
    "a process without SO_REUSEPORT cannot join them: EADDRINUSE",
    "both processes got connections",
    "all 50 clients are accounted for",
    "B delivered the message to its own subscriber",
    "subscriber-A never got it: two processes are two brokers",
]


def test_lab_10_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("10-reuseport", EXPECTED_PASSES)
