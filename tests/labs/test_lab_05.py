"""Lab 05-ten-thousand-connections: runs end to end with ``--quick`` and every self-check passes.

Its state-counting one-liners, as the lab prints them and as its README gives them, are run
through ``bash -c`` the way a learner pastes them, against a port with known sockets.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.labs.lab_runner import ROOT, assert_quick_run_passes

EXPECTED_PASSES = [
    "all 2,000 clients connected and subscribed",
    "the broker holds 2,001 ESTABLISHED: clients + publisher",
    "the idle epoll loop does not wake",
    "one publish reached every held client exactly once",
    "the spin never sleeps: thousands of accept() a second, every one EMFILE",
    "200 idle clients, yet the loop wakes about 10 times a second",
    "2,000 idle clients, yet the loop wakes about 10 times a second",
    "poll_srv holds 2,000 idle clients and does not wake",
    "select_srv stops near 1,020 clients",
    "the clients select_srv kept are still served",
    "no holder process left running",
    "no connection left open: at most TIME_WAIT remains",
]
# The poll() calls are read with strace; without it the lab says so and skips that check.
STRACE_PASSES = [
    "200 clients: 5-12 poll() calls a second, each timing out with all 202 fds",
    "2,000 clients: 5-12 poll() calls a second, each timing out with all 2,002 fds",
]
COUNT_LINE = re.compile(r"^[A-Z][A-Z0-9_-]* \d+$")  # what the awk END block prints: STATE COUNT


@pytest.fixture
def port_with_sockets() -> Iterator[int]:
    """A listening port with one connection to it: 1 LISTEN, and 2 ESTAB (both ends on loopback)."""
    # No SO_REUSEADDR (create_server would set it): then bind(0) never picks a port that still
    # has TIME_WAIT sockets from earlier tests, which the one-liners would count too.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = listener.accept()
            with accepted:
                yield port


def run_pasted(command: str, port: int) -> list[str]:
    """The command with its port replaced by ``port``, run by bash; its output lines (no stderr allowed)."""
    pasted = re.sub(r":\d{2,5}\b", f":{port}", command)
    completed = subprocess.run(
        ["bash", "-c", pasted], capture_output=True, text=True, timeout=30, check=False
    )
    assert completed.returncode == 0 and not completed.stderr, f"{pasted!r}: {completed.stderr}"
    return completed.stdout.splitlines()


def printed_one_liners(output: str) -> list[str]:
    """The counting commands the lab printed after '$ ', a backslash-newline kept as bash reads it."""
    lines = [line.strip() for line in output.splitlines()]
    commands = []
    for index, line in enumerate(lines):
        if (
            line.startswith("$ ")
            and ("| awk" in line or line.endswith("\\"))
            and "awk" in line + lines[index + 1]
        ):
            commands.append(line[2:] + ("\n" + lines[index + 1] if line.endswith("\\") else ""))
    return commands


def readme_one_liners() -> list[str]:
    text = (ROOT / "labs" / "05-ten-thousand-connections" / "README.md").read_text()
    return sorted(
        {
            line.strip()
            for line in text.splitlines()
            if "| awk" in line and line.strip().startswith(("ss", "netstat"))
        }
    )


def check_counts(command: str, port: int) -> None:
    if command.startswith("netstat") and shutil.which("netstat") is None:
        return  # net-tools is not installed: the lab says so instead of running it
    lines = run_pasted(command, port)
    assert lines and all(COUNT_LINE.match(line) for line in lines), f"{command!r} printed {lines}"
    if command.startswith("ss"):
        assert sorted(lines) == ["ESTAB 2", "LISTEN 1"], f"{command!r} printed {lines}"


def test_lab_05_runs_quick_and_every_self_check_passes(port_with_sockets: int) -> None:
    expected = EXPECTED_PASSES + (STRACE_PASSES if shutil.which("strace") else [])
    output = assert_quick_run_passes("05-ten-thousand-connections", expected)
    commands = printed_one_liners(output)
    assert len(commands) == 2, output  # the notes' netstat line and the ss one
    for command in commands:
        check_counts(command, port_with_sockets)


def test_lab_05_readme_one_liners_work_when_pasted_into_bash(port_with_sockets: int) -> None:
    commands = readme_one_liners()
    assert any(command.startswith("ss") for command in commands), commands
    assert any(command.startswith("netstat") for command in commands), commands
    for command in commands:
        check_counts(command, port_with_sockets)
