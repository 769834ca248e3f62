"""Lab 08-boss-worker: runs end to end with ``--quick``, every self-check passes, and its exercise grades."""

from __future__ import annotations

import os
import shutil

from tests.labs.lab_runner import assert_quick_run_passes, run_lab

EXPECTED_PASSES = [
    "before any silent client, --blocking delivered",
    "while a silent client is connected, --blocking delivered 0 of",
    "/proc: one thread sleeps in a read",
    "once it spoke, delivery resumed",
    "telemetry: one worker's single lock hold spanned the",
    "a silent client dropped by --connect-timeout: 0 delivered before",
    "with the same silent client connected, the default model delivered",
    "default: no thread sleeps in a read; boss and workers wait in epoll_wait",
]
# Without gdb, or without the right to ptrace the server, the lab prints SKIP for this one.
GDB_PASS = "gdb: one thread's backtrace is in a read"


def test_lab_08_runs_quick_and_every_self_check_passes() -> None:
    can_attach = shutil.which("gdb") is not None and os.geteuid() == 0
    assert_quick_run_passes("08-boss-worker", EXPECTED_PASSES + ([GDB_PASS] if can_attach else []))


def test_lab_08_exercise_skeleton_stalls_behind_the_silent_client_and_points_at_its_todo() -> None:
    completed = run_lab("08-boss-worker", "--student")
    output = " ".join((completed.stdout + completed.stderr).split())  # rich may wrap long lines
    assert completed.returncode == 1, output
    assert "passed stage 2/5 CONNECT gets a CONNACK" in output
    assert "FAILED at stage 3/5" in output
    assert "0 of 50 delivered in 3 s while a silent client is connected" in output  # counted
    assert "sleeps in recvfrom on the silent socket, and every other thread in futex" in output  # /proc
    assert "exercise/my_server.py:" in output and "TODO(lock-scope)" in output


def test_lab_08_exercise_reference_passes_every_stage() -> None:
    completed = run_lab("08-boss-worker", "--student", "labs/08-boss-worker/exercise/solution.py")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "all 5 stages passed" in output
