"""Lab 09-writev-vs-join: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes

EXPECTED_PASSES = [
    "both modes delivered the fan-out",
]


def test_lab_09_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("09-writev-vs-join", EXPECTED_PASSES)
