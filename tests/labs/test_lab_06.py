"""Lab 06-close-states: runs end to end with ``--quick``, every self-check passes, and its exercise grades."""

from __future__ import annotations

import subprocess

import pytest

from tests.labs.lab_runner import ROOT, assert_quick_run_passes, can_use_namespaces, run_lab

EXPECTED_PASSES = [
    "each stalled subscriber's server socket: bytes in Send-Q, persist timer",
    "closed by the server, yet each sits orphaned in FIN_WAIT_1, KBs in Send-Q",
    "still FIN_WAIT_1 after 2 s: nothing times them out soon",
    "reading the backlog, or a reset, is what frees a FIN_WAIT_1 socket",
    "server FIN_WAIT_2, client CLOSE_WAIT: half closed until the client closes",
    "the side that closed first ends in TIME_WAIT, about 60 s on its timer",
]
# The namespace part runs only as root with iproute2; otherwise the lab says it skipped.
NAMESPACE_PASSES = [
    "the orphaned FIN_WAIT_2 vanished on tcp_fin_timeout (5 s here), not after 60",
    "a FIN_WAIT_2 whose fd is still open stays: no timer",
    "TIME_WAIT still counts down from 60 s",
    "the host's sysctl is untouched and the namespace is gone",
]


def test_lab_06_runs_quick_and_every_self_check_passes() -> None:
    expected = EXPECTED_PASSES + (NAMESPACE_PASSES if can_use_namespaces() else [])
    assert_quick_run_passes("06-close-states", expected)


def test_lab_06_leaves_no_network_namespace_behind() -> None:
    if not can_use_namespaces():
        pytest.skip("network namespaces need root and iproute2")
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "epoll-mqtt-lab06-" not in listing


def test_lab_06_readme_commands_are_for_a_root_shell() -> None:
    assert "sudo" not in (ROOT / "labs" / "06-close-states" / "README.md").read_text()


def test_lab_06_exercise_skeleton_leaves_fin_wait_1_and_points_at_its_todo() -> None:
    completed = run_lab("06-close-states", "--student")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "passed stage 2/4  CONNECT gets a CONNACK" in output
    assert "FAILED at stage 3/4" in output
    assert "1 socket in FIN_WAIT_1 with Send-Q" in output  # the kernel's view of the closed socket
    assert "exercise/my_server.py:" in output and "TODO(abort)" in output


def test_lab_06_exercise_reference_passes_every_stage() -> None:
    completed = run_lab("06-close-states", "--student", "labs/06-close-states/exercise/solution.py")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "all 4 stages passed" in output
    assert "recv(): ECONNRESET" in output
