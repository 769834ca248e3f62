"""``python -m tui`` as a user runs it: finding a server by port, no terminal, a pty and ``q``.

The pty test drives the real command line: it starts a server, draws into a pseudo-terminal,
and must stop the server it started when ``q`` arrives. Waits poll with a deadline.
"""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import sys

import pytest

from tests.support.servers import ROOT, ServerProcess
from tests.support.waiting import wait_until
from tui.launch import find_server_pid, listening_inodes, variant_of


@pytest.mark.parametrize("switch", ["--naive", "--blocking"])
def test_attach_finds_the_server_pid_and_variant_from_its_port(switch: str) -> None:
    server = ServerProcess("threaded_boss_worker", switch)
    try:
        assert listening_inodes(server.port)
        assert find_server_pid(server.port) == server.pid
        assert variant_of(server.pid) == f"threaded_boss_worker {switch}"
    finally:
        server.stop()


def test_cli_without_a_terminal_says_so_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tui", "--run", "epoll_lt"],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "needs a terminal" in result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_run_starts_the_server_and_q_stops_it() -> None:
    port = free_port()
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    command = [sys.executable, "-m", "tui", "--run", "epoll_lt", "--port", str(port), "--no-capture"]
    command += ["--", "-v"]  # a server flag: its log goes to a file, not over the TUI
    process = subprocess.Popen(command, cwd=ROOT, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    screen = bytearray()

    def read_screen() -> bytes:
        while select.select([leader], [], [], 0)[0]:
            try:
                screen.extend(os.read(leader, 65536))
            except OSError:
                break
        return bytes(screen)

    try:
        wait_until(lambda: listening_inodes(port), timeout=15, what="the server to listen")
        pid = find_server_pid(port)
        assert pid is not None and pid != process.pid
        wait_until(lambda: b"live" in read_screen(), timeout=15, what="the TUI's status bar")
        os.write(leader, b"q")
        assert process.wait(timeout=15) == 0
        wait_until(lambda: not listening_inodes(port), timeout=10, what="the server to stop")
        assert not os.path.exists(f"/proc/{pid}")  # stopped and reaped
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
