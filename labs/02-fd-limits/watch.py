"""Watching a process from outside, for labs 02 and 05: its CPU split and how often it slept.

``usage_of`` sums /proc/PID/task/*/stat (user and system ticks) and status (context switches):
a process that blocks in poll or epoll_wait and is woken counts one voluntary switch. Its
syscalls are counted with ``labs/tracing.py``'s ``strace_lines``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
