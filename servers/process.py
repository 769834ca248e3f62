"""Running a server as a child process: its readiness line, and stopping it by pid.

Every server prints ``listening on HOST:PORT`` once it accepts connections; the TUI, the
labs, compare.py and the tests all start servers that way and wait for that line.
"""

from __future__ import annotations

import re
import signal
import subprocess

LISTENING = re.compile(r"^listening on (\S+):(\d+)\s*$")


def parse_listening(line: str) -> tuple[str, int] | None:
    """(host, port) from a server's readiness line, or None for any other line."""
    match = LISTENING.match(line)
    return (match.group(1), int(match.group(2))) if match else None


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> int:  # type: ignore[type-arg]
    """SIGTERM, then SIGKILL after ``grace`` seconds; return the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
