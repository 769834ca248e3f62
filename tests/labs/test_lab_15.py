"""Lab 15-big-reads: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes

EXPECTED_PASSES = [
    "every run delivered all its messages",
    "reads per message fall ≥ 10x from 64 B to 256 KiB",
    "wait calls per message fall ≥ 10x from 64 B to 256 KiB",
]


def test_lab_15_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("15-big-reads", EXPECTED_PASSES)
