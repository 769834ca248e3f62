"""Lab 08-boss-worker: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes

EXPECTED_PASSES = [
    "both models name their threads boss, worker-1, worker-2",
    "--naive: every lock hold spans the socket I/O (across_recv)",
    "default: no lock hold ever spans a recv",
    "--naive workers hold the lock over 10x longer (median)",
]


def test_lab_08_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("08-boss-worker", EXPECTED_PASSES)
