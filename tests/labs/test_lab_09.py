"""Lab 09-writev-vs-join: runs end to end with ``--quick``, and its exercise grades as it should."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes, run_lab, skip_without

EXPECTED_PASSES = [
    "--send-per-packet: one write per packet: 200 writes, 200 delivered in order",
    "join: at most one write per loop turn:",
    "writev: at most one write per loop turn:",
    "every mode delivered the fan-out, no errors",
    "fan-out: one write per packet costs ≥ 5x the CPU per delivery of join + write",
]


def test_lab_09_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("09-writev-vs-join", EXPECTED_PASSES)


def test_lab_09_exercise_skeleton_fails_at_the_write_stage_and_points_at_its_todo() -> None:
    skip_without("strace")
    completed = run_lab("09-writev-vs-join", "--student")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "passed stage 3/4  a burst of 200 PUBLISHes reaches a subscriber in order" in output
    assert "FAILED at stage 4/4" in output
    # What strace saw: one write per packet, all in one loop turn.
    assert "200 sends (sendto x200) to the subscriber's socket" in output
    assert "200 in one loop turn" in output
    assert "exercise/my_server.py:" in output and "TODO(batch)" in output


def test_lab_09_exercise_reference_passes_every_stage() -> None:
    skip_without("strace")
    completed = run_lab("09-writev-vs-join", "--student", "labs/09-writev-vs-join/exercise/solution.py")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "all 4 stages passed" in output
