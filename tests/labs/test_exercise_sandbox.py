"""A "solution" that borrows the kit's own server fails the grader at start, whichever door it tries.

The grader runs a learner's file through labs/exercise_sandbox.py: importing the kit's servers,
reading their source, or starting another process is refused, and the refusal is what the
grader reports. Lab 04's grader stands in for all of them: they share labs/exercise.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.labs.lab_runner import ROOT, run_lab

BORROWINGS = {
    "import": ('import runpy\nrunpy.run_module("servers.epoll_et", run_name="__main__")\n', "ImportError"),
    "exec": (
        "import os, sys\nos.execv(sys.executable, [sys.executable, '-m', 'servers.epoll_et'])\n",
        "os.exec is refused",
    ),
    "spawn": (
        "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'servers.epoll_et', *sys.argv[1:]])\n",
        "subprocess.Popen is refused",
    ),
    "read source": (
        f"exec(open({str(ROOT / 'servers' / 'epoll_et.py')!r}).read())\n",
        "may not read the kit's server sources",
    ),
}


@pytest.mark.parametrize("borrowing", sorted(BORROWINGS))
def test_a_solution_borrowing_the_kits_server_fails_at_start_and_says_why(
    borrowing: str, tmp_path: Path
) -> None:
    source, refusal = BORROWINGS[borrowing]
    solution = tmp_path / "my_server.py"
    solution.write_text(source)
    completed = run_lab("04-level-vs-edge", "--student", str(solution))
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "FAILED at stage 1/4" in output
    assert refusal in output


def test_the_sandbox_still_lets_a_solution_use_the_mqtt_core(tmp_path: Path) -> None:
    reference = ROOT / "labs" / "04-level-vs-edge" / "exercise"
    solution = tmp_path / "my_server.py"
    solution.write_text(
        (reference / "my_server.py")
        .read_text()
        .replace("self.read_once(fd)\n", "while self.read_once(fd):\n            pass\n")
    )
    completed = run_lab("04-level-vs-edge", "--student", str(solution))
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output


def test_a_chatty_solution_is_graded_all_the_same(tmp_path: Path) -> None:
    """A banner in the same write as the listening line, and 200 KB of log per connection (more
    than a pipe holds): the grader still finds the port, and the server never blocks on output."""
    reference = ROOT / "labs" / "04-level-vs-edge" / "exercise"
    chatty = (
        (reference / "my_server.py")
        .read_text()
        .replace("self.read_once(fd)\n", "while self.read_once(fd):\n            pass\n")
        .replace(
            'print(f"listening on {host}:{port}", flush=True)',
            'print(f"starting up\\nlistening on {host}:{port}", flush=True)',
        )
        .replace(
            "            client.setblocking(False)\n",
            "            client.setblocking(False)\n"
            "            print(('accepted ' + 'x' * 100 + '\\n') * 2000, flush=True)\n",
        )
    )
    assert chatty.count("starting up") == 1 and chatty.count("accepted ") == 1
    solution = tmp_path / "my_server.py"
    solution.write_text(chatty)
    completed = run_lab("04-level-vs-edge", "--student", str(solution))
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "all 4 stages passed" in output
