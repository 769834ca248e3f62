"""Lab 03-select-poll-epoll: runs end to end with ``--quick`` and every self-check passes; its
exercise grader fails the poll() skeleton at the epoll stage and passes the reference."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.labs.lab_runner import ROOT, assert_quick_run_passes, run_lab, skip_without

EXERCISE = ROOT / "labs" / "03-select-poll-epoll" / "exercise"

EXPECTED_PASSES = [
    "select, poll and epoll each returned exactly the active fd",
    "select() refuses fd",
    "select grows with N:",
    "poll grows with N:",
    "at N = 10,000 epoll is",
]

# Half the swap: an epoll instance that holds every socket, but the wait is still poll().
HALF_SWAP = """
import select

import my_server


class HalfWaiter(my_server.Waiter):
    def __init__(self) -> None:
        super().__init__()
        self.epoll = select.epoll()

    def watch(self, fd: int) -> None:
        super().watch(fd)
        self.epoll.register(fd, select.EPOLLIN)


if __name__ == "__main__":
    my_server.Waiter = HalfWaiter
    my_server.main()
"""


def test_lab_03_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("03-select-poll-epoll", EXPECTED_PASSES)


def test_lab_03_exercise_skeleton_fails_at_the_epoll_stage_and_points_at_its_todo() -> None:
    completed = run_lab("03-select-poll-epoll", "--student")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "passed stage 2/4  CONNECT gets a CONNACK, and a PUBLISH reaches a subscriber" in output
    assert "FAILED at stage 3/4" in output
    assert "expected: an epoll fd watching 201 fds" in output
    assert "found none (0 epoll instances)" in output  # what /proc/PID/fd held, measured
    assert "exercise/my_server.py:" in output and "TODO(epoll)" in output


def test_lab_03_exercise_reference_passes_every_stage() -> None:
    completed = run_lab("03-select-poll-epoll", "--student", "labs/03-select-poll-epoll/exercise/solution.py")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "all 4 stages passed" in output
    assert "all 201 sockets in its tfd lines" in output
    if shutil.which("strace") is not None:  # without it stage 4 says "not checked" and passes
        assert "PINGREQ/PINGRESP exchanges: epoll_ctl 0," in output


def test_lab_03_exercise_strace_stage_catches_a_wait_still_in_poll(tmp_path: Path) -> None:
    skip_without("strace")
    shutil.copy(EXERCISE / "my_server.py", tmp_path / "my_server.py")
    (tmp_path / "half_swap.py").write_text(HALF_SWAP)
    completed = run_lab("03-select-poll-epoll", "--student", str(tmp_path / "half_swap.py"))
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "passed stage 3/4" in output  # the epoll instance does hold every socket
    assert "FAILED at stage 4/4" in output
    assert "strace counted epoll_ctl 0, epoll_wait 0" in output
    assert re.search(r"epoll_pwait 0, poll [1-9]", output), output  # every wait was a poll()
