"""Starting a server variant for the TUI to watch, and finding the process behind a port.

``--run`` starts ``python -m servers.<variant> --port P --telemetry ...`` with its output in a
log file (the terminal belongs to the TUI) and waits for its ``listening on HOST:PORT`` line.
``--attach`` without ``--pid`` finds the process holding the LISTEN socket of the port: the
socket's inode from sock_diag, matched against ``/proc/*/fd`` links.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

from servers.process import parse_listening, stop_process
from tui.child import die_with_parent
from tui.sources.epoll_fdinfo import socket_inodes
from tui.sources.tcp_states import tcp_sockets

VARIANTS = ("select_srv", "poll_srv", "epoll_lt", "epoll_et", "threaded_boss_worker", "broker")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


class LaunchedServer:
    """A server variant started by the TUI; ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, variant: str, port: int, server_args: list[str]) -> None:
        variant = variant.removeprefix("servers.")
        if variant not in VARIANTS and find_spec(f"servers.{variant}") is None:
            raise ValueError(f"unknown variant {variant!r}; one of: {', '.join(VARIANTS)}")
        self.variant = variant
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix=f"tui-{variant}-", suffix=".log", delete=False
        )
        module = f"servers.{variant}"
        self.command = [sys.executable, "-m", module, "--port", str(port), "--telemetry", *server_args]
        self.process = subprocess.Popen(
            self.command,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C goes to the TUI, which then stops us
            preexec_fn=die_with_parent,
        )
        self.host, self.port = self._await_listening()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _await_listening(self) -> tuple[str, int]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                address = parse_listening(line)
                if address:
                    return address
            if self.process.poll() is not None:
                break
            time.sleep(0.02)  # polling the log file; the deadline bounds the wait
        self.stop()
        raise RuntimeError(f"{self.variant} did not start:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def exit_status(self) -> str | None:
        """None while running; else how it ended, for the status bar."""
        code = self.process.poll()
        if code is None:
            return None
        if code < 0:
            return f"server killed by {signal.Signals(-code).name}"
        return f"server exited with status {code} (log: {self.log.name})"

    def stop(self) -> int | None:
        stop_process(self.process, STOP_TIMEOUT_S)
        self.log.close()
        return self.process.returncode


def variant_of(pid: int) -> str:
    """The variant a process runs, from its command line (``-m servers.NAME``), or ""."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            arguments = cmdline.read().decode(errors="replace").split("\0")
    except OSError:
        return ""
    modules = [arguments[index + 1] for index, flag in enumerate(arguments[:-1]) if flag == "-m"]
    ours = [module.removeprefix("servers.") for module in modules if module.startswith("servers.")]
    variant = ours[0] if ours else ""
    switches = [flag for flag in ("--naive", "--blocking") if flag in arguments]
    return " ".join([variant, *switches]) if variant else variant


def listening_inodes(port: int) -> set[int]:
    """Inodes of the LISTEN sockets bound to ``port`` (IPv4 and IPv6)."""
    inodes = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for row in tcp_sockets(port, family):
            if row.state == "LISTEN" and row.local[1] == port and row.inode:
                inodes.add(row.inode)
    return inodes


def find_server_pid(port: int) -> int | None:
    """The process holding the port's listening socket, or None (not found, or not ours to see)."""
    wanted = listening_inodes(port)
    if not wanted:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if wanted & set(socket_inodes(int(entry)).values()):
                return int(entry)
        except (ProcessLookupError, PermissionError):
            continue  # gone, or another user's process
    return None
