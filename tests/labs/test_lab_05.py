"""Lab 05-ten-thousand-connections: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes

EXPECTED_PASSES = [
    "all 2,000 clients connected and subscribed",
    "the broker holds 2,001 ESTABLISHED: clients + publisher",
    "idle connections cost the epoll loop no CPU",
    "one publish reached every held client exactly once",
    "select_srv stops near 1,020 clients",
    "the clients select_srv kept are still served",
    "no holder process left running",
    "no connection left open: at most TIME_WAIT remains",
]


def test_lab_05_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("05-ten-thousand-connections", EXPECTED_PASSES)
