"""Watching a process from outside, for labs 02 and 05: its CPU split and sleeps, and its syscalls.

``usage_of`` sums /proc/PID/task/*/stat (user and system ticks) and status (context switches):
a process that blocks in poll or epoll_wait and is woken counts one voluntary switch. The
``strace_lines`` block starts only once the kernel names strace as the tracer, so a
counting window misses no call.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tui.sources.threads import read_threads

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # utime and stime count these (100 a second)


@dataclass(frozen=True)
class Usage:
    """A process's CPU time split into user and system (kernel), and how often it went to sleep."""

    user_ticks: int
    system_ticks: int
    voluntary_switches: int  # the process blocked (poll, epoll_wait, read...) and was woken again
    involuntary_switches: int  # preempted while it still wanted the CPU

    def since(self, earlier: Usage) -> Usage:
        return Usage(
            self.user_ticks - earlier.user_ticks,
            self.system_ticks - earlier.system_ticks,
            self.voluntary_switches - earlier.voluntary_switches,
            self.involuntary_switches - earlier.involuntary_switches,
        )

    def describe(self, seconds: float) -> str:
        """'97.0% of a core (31% user, 69% system)' over a window of ``seconds``."""
        total = self.user_ticks + self.system_ticks
        if not total:
            return "0 ticks: 0% of a core"
        share = 100 * total / CLOCK_TICKS / seconds
        split = f"{100 * self.user_ticks / total:.0f}% user, {100 * self.system_ticks / total:.0f}% system"
        return f"{share:.1f}% of a core ({split})"


def usage_of(pid: int) -> Usage:
    """Summed over the process's threads: /proc/PID/task/*/stat (ticks) and status (switches)."""
    threads = read_threads(pid)
    return Usage(
        sum(thread.utime_ticks for thread in threads),
        sum(thread.stime_ticks for thread in threads),
        sum(thread.voluntary_ctxt_switches for thread in threads),
        sum(thread.nonvoluntary_ctxt_switches for thread in threads),
    )


def tracer_of(pid: int) -> int:
    """TracerPid from /proc/PID/status: who ptrace-attached to it (0: nobody)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def strace_lines(pid: int, *options: str) -> Iterator[list[str]]:
    """``strace OPTIONS -p PID`` for the ``with`` block; the yielded list holds its output afterwards."""
    handle, name = tempfile.mkstemp(prefix="lab-strace-", suffix=".txt")
    os.close(handle)
    output, lines = Path(name), []
    tracer = subprocess.Popen(
        ["strace", *options, "-o", name, "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 5.0
        while tracer_of(pid) == 0:  # attached once the kernel says so
            if time.monotonic() > deadline or tracer.poll() is not None:
                raise RuntimeError(f"strace did not attach to pid {pid} within 5 s")
            time.sleep(0.01)
        yield lines
    finally:
        tracer.send_signal(signal.SIGINT)  # strace detaches and finishes its output
        try:
            tracer.wait(5)
        except subprocess.TimeoutExpired:
            tracer.kill()  # our own child, by pid
            tracer.wait()
        lines.extend(output.read_text().splitlines())
        output.unlink(missing_ok=True)
