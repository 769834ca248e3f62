"""Starting a server variant for the TUI to watch, and finding the process behind a port.

``--run`` starts ``python -m servers.<variant> --port P --telemetry ...`` with its output in a
log file (the terminal belongs to the TUI) and waits for its ``listening on HOST:PORT`` line.
The log lives only as long as the TUI: it is a file without a name (the server and the TUI
write and read it through their open descriptors), so no run, not even a killed one, leaves
a file behind, unless ``--server-log PATH`` asks to keep it.
``--attach`` without ``--pid`` finds the process holding the LISTEN socket of the port: the
socket's inode from sock_diag, matched against ``/proc/*/fd`` links.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import IO

from servers.process import parse_listening, stop_process
from tui.child import die_with_parent
from tui.sources.server_process import command_line, find_pid_holding, listening_inodes, variant_in

VARIANTS = ("select_srv", "poll_srv", "epoll_lt", "epoll_et", "threaded_boss_worker", "broker")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
TAIL_LINES = 20  # of the server's log, shown after a failed start or an abnormal exit

__all__ = ["LaunchedServer", "describe_exit", "find_server_pid", "listening_inodes", "variant_of"]


def describe_exit(code: int | None) -> str | None:
    """How a process ended, from its Popen returncode: "killed by SIGKILL", "exited with status 1"."""
    if code is None:
        return None
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def open_log(variant: str, keep_at: Path | None) -> IO[bytes]:
    """The server's stdout and stderr: ``keep_at`` if given, else a file that is already unlinked."""
    if keep_at is not None:
        return open(keep_at, "w+b")  # read back too: the readiness line, the tail
    # A file without a name (O_TMPFILE, or unlinked at once): the open descriptors keep it alive,
    # and when the server and the TUI have both closed it, nothing is left to clean up.
    return tempfile.TemporaryFile(prefix=f"tui-{variant}-", suffix=".log")


class LaunchedServer:
    """A server variant started by the TUI; ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, variant: str, port: int, server_args: list[str], log_path: Path | None = None) -> None:
        variant = variant.removeprefix("servers.")
        if variant not in VARIANTS and find_spec(f"servers.{variant}") is None:
            raise ValueError(f"unknown variant {variant!r}; one of: {', '.join(VARIANTS)}")
        self.variant = variant
        self.log_path = log_path
        self.log = open_log(variant, log_path)
        self.ended_by_itself: str | None = None  # how it ended, if not by our stop()
        self.farewell = ""  # set by stop(): what to print once the terminal is ours again
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
        how = describe_exit(self.process.poll()) or f"no 'listening on' line within {START_TIMEOUT_S:g} s"
        message = f"servers.{self.variant} did not start ({how}); its last output:\n{self.tail()}"
        self.stop()
        raise RuntimeError(message)

    def output(self) -> str:
        """Everything the server wrote so far. pread: the server shares this file's offset."""
        descriptor = self.log.fileno()
        return os.pread(descriptor, os.fstat(descriptor).st_size, 0).decode(errors="replace")

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join("  " + line for line in self.output().splitlines()[-lines:])

    def exit_status(self) -> str | None:
        """None while running; else how it ended, for the status bar."""
        ended = describe_exit(self.process.poll())
        if ended is not None and self.ended_by_itself is None:
            self.ended_by_itself = ended
        return ended

    def stop(self) -> int | None:
        self.exit_status()  # a server that died before we stop it ended by itself
        stop_process(self.process, STOP_TIMEOUT_S)
        if not self.log.closed:
            self.farewell = self._farewell()
            self.log.close()
        return self.process.returncode

    def _farewell(self) -> str:
        """What to tell the user on the way out: the log's tail after an abnormal exit; where it is kept."""
        ended = self.ended_by_itself
        abnormal = ended is not None and ended != "exited with status 0"
        message = f"servers.{self.variant} {ended} while the TUI ran" if abnormal else ""
        if abnormal:
            message += f"; its last output:\n{self.tail()}"
        if self.log_path is not None:
            message += f"\nits log: {self.log_path}"
        return message.strip()


def variant_of(pid: int) -> str:
    """The variant a process runs, from its command line (``-m servers.NAME``), or ""."""
    arguments = command_line(pid)
    return variant_in(arguments) if arguments else ""


def find_server_pid(port: int) -> int | None:
    """The process holding the port's listening socket, or None (not found, or not ours to see)."""
    return find_pid_holding(listening_inodes(port))
