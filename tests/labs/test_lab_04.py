"""Lab 04-level-vs-edge: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes, run_lab, skip_without

EXPECTED_PASSES = [
    "ET + read-once: no PUBACK within",
    "the unread bytes are visible in the kernel: Recv-Q > 0 on the server's socket",
    "the PINGREQ's edge lets the server read on: PUBACK, then PINGRESP",
    "LT: PUBACK with no new edge; the fd was reported again for the rest",
    "ET draining until EAGAIN: PUBACK with no new edge",
    "ET + read-once: the PUBACK waited for the keepalive PINGREQ",
    "LT: mosquitto_pub is done at once: PUBACK, no PINGREQ needed",
    "LT reported the fd in",
    "ET reported the fd in 1 wait",
]


def test_lab_04_runs_quick_and_every_self_check_passes() -> None:
    skip_without("mosquitto_pub")
    assert_quick_run_passes("04-level-vs-edge", EXPECTED_PASSES)


def test_lab_04_exercise_skeleton_fails_at_the_drain_stage_and_points_at_its_todo() -> None:
    completed = run_lab("04-level-vs-edge", "--student")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "passed stage 2/4  CONNECT gets a CONNACK" in output
    assert "FAILED at stage 3/4" in output
    assert "unread bytes on the server's socket (Recv-Q)" in output  # what the kernel held, measured
    assert "exercise/my_server.py:" in output and "TODO(drain)" in output


def test_lab_04_exercise_reference_passes_every_stage() -> None:
    completed = run_lab("04-level-vs-edge", "--student", "labs/04-level-vs-edge/exercise/solution.py")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "all 4 stages passed" in output
