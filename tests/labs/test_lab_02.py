"""Lab 02-fd-limits: runs end to end with ``--quick``, every self-check passes, and its exercise grades."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes, run_lab

EXPECTED_PASSES = [
    "at ulimit -n 64, open() fails with EMFILE once fds 0-63 are all open",
    "the soft limit may not exceed the hard one: EINVAL",
    "lowering the hard limit is one-way without CAP_SYS_RESOURCE",
    "no hard limit above nr_open, whoever asks: EPERM",
    "file-nr counts file handles: one per open(), none per dup() of the same file",
    "started with soft 1024, the server now has soft = hard =",
    "its fd table full (64 of 64), every other client was refused, none lost",
    "the log says why: 'raise ulimit -n'",
    "at the limit the loop sleeps:",
    "clients connected before the limit still publish and receive",
    "unguarded:",
]


def test_lab_02_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("02-fd-limits", EXPECTED_PASSES)


def test_lab_02_exercise_skeleton_spins_at_the_limit_and_points_at_its_todo() -> None:
    completed = run_lab("02-fd-limits", "--student")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "passed stage 2/5  CONNECT gets a CONNACK" in output
    assert "FAILED at stage 3/5" in output
    assert "still waits in the listen queue (LISTEN Recv-Q 1)" in output  # the kernel's view, measured
    assert "possible CPU ticks" in output
    assert "exercise/my_server.py:" in output and "TODO(spare-fd)" in output


def test_lab_02_exercise_reference_passes_every_stage() -> None:
    completed = run_lab("02-fd-limits", "--student", "labs/02-fd-limits/exercise/solution.py")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "all 5 stages passed" in output
