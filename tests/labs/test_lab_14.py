"""Lab 14-buffer-reuse: runs end to end with ``--quick``, and its exercise grades as it should."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes, run_lab

EXPECTED_PASSES = [
    "light load, reused buffer: < 0.1 fault per message in every run",
    "light load, fresh buffer, new server: ≥ 1 fault per message",
    "light load, fresh buffer, after an EOF read: glibc raised its threshold, < 0.1",
    "light load, fresh buffer, threshold pinned: ≥ 1 fault per message",
    "saturation, threshold pinned: fresh buffers cost ≥ 128 more faults per MiB read",
]


def test_lab_14_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("14-buffer-reuse", EXPECTED_PASSES)


def test_lab_14_exercise_skeleton_fails_at_the_fault_stage_and_points_at_its_todo() -> None:
    completed = run_lab("14-buffer-reuse", "--student")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "passed stage 3/4  messages are acknowledged and delivered" in output
    assert "FAILED at stage 4/4" in output
    assert "minor page faults for 300 messages" in output  # what /proc/PID/stat counted
    assert "exercise/my_server.py:" in output and "TODO(reuse)" in output


def test_lab_14_exercise_reference_passes_every_stage() -> None:
    completed = run_lab("14-buffer-reuse", "--student", "labs/14-buffer-reuse/exercise/solution.py")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "all 4 stages passed" in output
