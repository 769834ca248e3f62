"""``python -m tui`` as a user runs it: finding a server by port, no terminal, a pty and ``q``.

The pty tests drive the real command line: it starts a server, draws into a pseudo-terminal,
and must stop the server it started when ``q`` arrives, leaving no log file behind (each run
gets a TMPDIR of its own to prove it). Waits poll with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


def test_help_documents_where_the_server_log_goes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tui", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert "--server-log PATH" in result.stdout
    assert "nothing is left in /tmp" in result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Terminal:
    """``python -m tui ARGS`` on a pseudo-terminal; ``screen()`` is everything it wrote so far."""

    def __init__(self, arguments: list[str], temporary: Path) -> None:
        self.leader, follower = pty.openpty()
        os.set_blocking(self.leader, False)
        environment = {**os.environ, "TMPDIR": str(temporary)}  # where tempfile would put a log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tui", *arguments],
            cwd=ROOT, stdin=follower, stdout=follower, stderr=follower, env=environment,
        )  # fmt: skip
        os.close(follower)
        self.output = bytearray()

    def screen(self) -> str:
        while select.select([self.leader], [], [], 0)[0]:
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            self.output.extend(chunk)
        return self.output.decode(errors="replace")

    def finish(self, timeout: float = 15) -> int:
        """Wait for the process to exit, reading the terminal meanwhile (a full pty would block it)."""
        wait_until(
            lambda: self.screen() is not None and self.process.poll() is not None, timeout, what="exit"
        )
        self.screen()
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.leader)


@contextlib.contextmanager
def terminal(arguments: list[str], temporary: Path) -> Iterator[Terminal]:
    session = Terminal(arguments, temporary)
    try:
        yield session
    finally:
        session.close()


def run_arguments(port: int, *extra: str) -> list[str]:
    return ["--run", "epoll_lt", "--port", str(port), "--no-capture", *extra]


def test_cli_run_starts_the_server_and_q_stops_it_leaving_no_log(tmp_path: Path) -> None:
    port = free_port()
    # -v: a server flag; its log goes to a file, not over the TUI
    with terminal([*run_arguments(port), "--", "-v"], tmp_path) as tui:
        wait_until(lambda: listening_inodes(port), timeout=15, what="the server to listen")
        pid = find_server_pid(port)
        assert pid is not None and pid != tui.process.pid
        wait_until(lambda: "live" in tui.screen(), timeout=15, what="the TUI's status bar")
        assert list(tmp_path.iterdir()) == []  # the log has no name, even while the server runs
        os.write(tui.leader, b"q")
        assert tui.finish() == 0
        wait_until(lambda: not listening_inodes(port), timeout=10, what="the server to stop")
        assert not os.path.exists(f"/proc/{pid}")  # stopped and reaped
        assert (
            "log" not in tui.screen().split("stopped servers.epoll_lt")[-1]
        )  # a clean exit: nothing to show
    assert list(tmp_path.iterdir()) == []


def test_a_failed_start_prints_the_servers_last_lines_and_leaves_no_log(tmp_path: Path) -> None:
    with terminal([*run_arguments(free_port()), "--", "--no-such-flag"], tmp_path) as tui:
        assert tui.finish() == 1
        output = tui.screen()
    assert "servers.epoll_lt did not start (exited with status 2)" in output
    assert "unrecognized arguments: --no-such-flag" in output  # the server's own words, from its log
    assert list(tmp_path.iterdir()) == []


def test_a_server_killed_while_the_tui_runs_has_its_last_lines_printed_at_exit(tmp_path: Path) -> None:
    port = free_port()
    with terminal(run_arguments(port), tmp_path) as tui:
        wait_until(lambda: "live" in tui.screen(), timeout=15, what="the TUI's status bar")
        pid = find_server_pid(port)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: "SERVER GONE" in tui.screen(), timeout=10, what="the status bar to say so")
        os.write(tui.leader, b"q")
        assert tui.finish() == 0
        farewell = tui.screen().split("stopped servers.epoll_lt")[-1]
    assert "servers.epoll_lt killed by SIGKILL while the TUI ran; its last output:" in farewell
    assert f"listening on 127.0.0.1:{port}" in farewell
    assert list(tmp_path.iterdir()) == []


def test_server_log_keeps_the_whole_log_where_asked(tmp_path: Path) -> None:
    port = free_port()
    kept = tmp_path / "kept" / "server.log"
    kept.parent.mkdir()
    with terminal(run_arguments(port, "--server-log", str(kept)), tmp_path) as tui:
        wait_until(lambda: "live" in tui.screen(), timeout=15, what="the TUI's status bar")
        os.write(tui.leader, b"q")
        assert tui.finish() == 0
        assert f"its log: {kept}" in tui.screen()
    assert f"listening on 127.0.0.1:{port}" in kept.read_text()
    assert [path.name for path in tmp_path.iterdir()] == ["kept"]
