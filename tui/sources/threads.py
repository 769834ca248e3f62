"""A process's threads as the kernel accounts for them: /proc/PID/task/TID/{stat,status,syscall}.

Each thread is a task with its own name, scheduler state, CPU ticks and context-switch
counters, and, while it sleeps, the system call it sleeps in. CPU % is the tick delta
between two samples over the wall-clock delta. Read it from another process: inside a busy
server the reads themselves compete for the GIL.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")  # utime/stime are in these "jiffies"
# /proc gives system call numbers, and they differ by architecture (asm/unistd_64.h on x86-64,
# asm-generic/unistd.h on aarch64). These are the calls a server thread sleeps or blocks in.
SYSCALL_NAMES = {
    "x86_64": {
        0: "read", 1: "write", 7: "poll", 19: "readv", 20: "writev", 23: "select", 35: "nanosleep",
        42: "connect", 43: "accept", 44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg",
        61: "wait4", 202: "futex", 230: "clock_nanosleep", 232: "epoll_wait", 247: "waitid",
        270: "pselect6", 271: "ppoll", 281: "epoll_pwait", 288: "accept4", 441: "epoll_pwait2",
        449: "futex_waitv",
    },
    "aarch64": {
        22: "epoll_pwait", 63: "read", 64: "write", 65: "readv", 66: "writev", 72: "pselect6",
        73: "ppoll", 95: "waitid", 98: "futex", 101: "nanosleep", 115: "clock_nanosleep",
        202: "accept", 203: "connect", 206: "sendto", 207: "recvfrom", 211: "sendmsg",
        212: "recvmsg", 242: "accept4", 260: "wait4", 441: "epoll_pwait2", 449: "futex_waitv",
    },
}  # fmt: skip
KNOWN_SYSCALLS = SYSCALL_NAMES.get(platform.machine(), {})


@dataclass(frozen=True, slots=True)
class ThreadSample:
    """One thread at one instant. ``state`` is R running, S sleeping, D disk wait, T stopped..."""

    tid: int
    name: str
    state: str
    utime_ticks: int
    stime_ticks: int
    voluntary_ctxt_switches: int
    nonvoluntary_ctxt_switches: int
    # Where it is now: "running", a call's name ("futex", "readv"...), "user" (asleep outside any
    # call), or "" when /proc/PID/task/TID/syscall is not ours to read. ``syscall_arg`` is the
    # call's first argument: the fd of a read, the futex word of a lock wait.
    syscall: str = ""
    syscall_arg: int | None = None


@dataclass(frozen=True, slots=True)
class ThreadRow:
    """A sample plus the share of one CPU the thread used since the previous sample."""

    sample: ThreadSample
    cpu_percent: float


def parse_stat(text: str) -> tuple[str, str, int, int]:
    """(name, state, utime, stime) from a /proc/.../stat line.

    The name sits in parentheses and may itself contain spaces and ')', so split on the
    LAST ')': everything after it is space-separated numbers, starting at field 3 (state).
    """
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    fields = text[close_paren + 2 :].split()
    # fields[0] is field 3 of proc(5) (state); utime and stime are fields 14 and 15.
    return text[open_paren + 1 : close_paren], fields[0], int(fields[11]), int(fields[12])


def parse_context_switches(status_text: str) -> tuple[int, int]:
    """(voluntary, nonvoluntary) from /proc/.../status: blocked in a wait vs preempted."""
    counts = {"voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key in counts:
            counts[key] = int(value)
    return counts["voluntary_ctxt_switches"], counts["nonvoluntary_ctxt_switches"]


def parse_syscall(text: str) -> tuple[str, int | None]:
    """(name, first argument) from /proc/.../syscall: "202 0x55cc5d77cf50 0x80 ..." is a futex wait.

    The kernel writes "running" for a thread on a CPU, and "-1 sp pc" for one that sleeps
    outside any system call; otherwise the call's number, then its six arguments in hex.
    """
    fields = text.split()
    if not fields or fields[0] == "running":
        return "running", None
    number = int(fields[0])
    if number < 0:
        return "user", None
    argument = int(fields[1], 16) if len(fields) > 1 else None
    return KNOWN_SYSCALLS.get(number, f"syscall {number}"), argument


def read_syscall(task: str) -> tuple[str, int | None]:
    """Where the thread sleeps; ("", None) if /proc refuses (it needs ptrace rights: root, same user)."""
    try:
        with open(f"{task}/syscall") as syscall_file:
            return parse_syscall(syscall_file.read())
    except PermissionError:
        return "", None


def read_thread(pid: int, tid: int) -> ThreadSample | None:
    """One thread, or None if it exited between listing the task directory and reading it."""
    task = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{task}/stat") as stat_file:
            name, state, utime, stime = parse_stat(stat_file.read())
        with open(f"{task}/status") as status_file:
            voluntary, nonvoluntary = parse_context_switches(status_file.read())
        syscall, argument = read_syscall(task)
    except (FileNotFoundError, ProcessLookupError):
        return None  # ESRCH reads as ProcessLookupError once the task is being reaped
    return ThreadSample(tid, name, state, utime, stime, voluntary, nonvoluntary, syscall, argument)


def read_threads(pid: int) -> list[ThreadSample]:
    """Every thread of ``pid`` in tid order; raises ProcessLookupError if the process is gone."""
    try:
        tids = sorted(int(entry) for entry in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    samples = (read_thread(pid, tid) for tid in tids)
    return [sample for sample in samples if sample is not None]


class ThreadMonitor:
    """Samples one process's threads repeatedly; CPU % comes from consecutive samples."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._previous_ticks: dict[int, int] = {}
        self._previous_time: float | None = None

    def sample(self) -> list[ThreadRow]:
        """Current threads; a thread's first appearance (or the first call) shows 0 % CPU."""
        now = time.monotonic()  # not time.time(): a wall-clock step must not fake a CPU spike
        samples = read_threads(self.pid)
        elapsed = now - self._previous_time if self._previous_time is not None else 0.0
        rows = [ThreadRow(sample, self._cpu_percent(sample, elapsed)) for sample in samples]
        self._previous_ticks = {sample.tid: sample.utime_ticks + sample.stime_ticks for sample in samples}
        self._previous_time = now
        return rows

    def _cpu_percent(self, sample: ThreadSample, elapsed: float) -> float:
        previous = self._previous_ticks.get(sample.tid)
        if previous is None or elapsed <= 0:
            return 0.0
        used_seconds = (sample.utime_ticks + sample.stime_ticks - previous) / CLOCK_TICKS_PER_SECOND
        return 100.0 * used_seconds / elapsed
