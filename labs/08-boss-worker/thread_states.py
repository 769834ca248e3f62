"""Where each thread of a server sleeps: the kernel's answer (/proc) and gdb's (backtraces).

``/proc/PID/task/TID/syscall`` names the system call a sleeping thread is in, and ``wchan``
the kernel function it sleeps in: a thread blocked in ``readv``/``recvfrom`` on a socket, or
in ``futex`` waiting for a lock. ``gdb -p PID -batch -ex 'thread apply all bt 3'`` shows the
same from user space, as the notes' ``pstack`` did. Lab 08 and its grader both read them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from tui.sources.threads import parse_syscall

READS = {"read", "readv", "recvfrom", "recvmsg"}
LOCK_WAITS = {"futex"}  # a mutex, a condition variable and the GIL all sleep in futex(2)
READ_FRAME = re.compile(r"\b(?:__GI___)?(?:__libc_)?(?:readv|recv|recvfrom|recvmsg|read)\b")
# A lock wait: libc's futex internals when its debug symbols are installed (libc6-dbg), else
# CPython's own frame, PyThread_acquire_lock_timed, two frames further out.
FUTEX_FRAME = re.compile(r"futex|sem_wait|sem_clockwait|pthread_cond_|lll_lock|PyThread_acquire_lock")
# What it waits on: libc's futex word, or CPython's lock; either way, one lock, one address.
WAIT_ADDRESS = re.compile(r"\b(futex_word|lock)=(?:\w+@entry=)?(0x[0-9a-f]+)")


@dataclass(frozen=True)
class ThreadState:
    """One thread at one instant: its name, the syscall it sleeps in, the kernel function."""

    tid: int
    name: str
    syscall: str  # "readv", "futex", "epoll_wait", "running" (on a CPU), "syscall N"
    wchan: str  # e.g. wait_woken (a socket read), futex_do_wait, do_epoll_wait

    @property
    def reading(self) -> bool:
        return self.syscall in READS

    @property
    def waiting_on_futex(self) -> bool:
        return self.syscall in LOCK_WAITS

    def __str__(self) -> str:
        return f"{self.name} in {self.syscall}"


def syscall_name(line: str) -> str:
    """The call named by a /proc/.../syscall line, with the TUI's table (numbers differ by
    architecture); "user space" for a thread blocked outside any system call."""
    name, _argument = parse_syscall(line)
    return "user space" if name == "user" else name


def read_text(path: str) -> str:
    with open(path) as file:
        return file.read().strip()


def thread_states(pid: int) -> list[ThreadState]:
    """Every thread of ``pid``, in tid order; threads that end meanwhile are left out."""
    states = []
    for tid in sorted(int(entry) for entry in os.listdir(f"/proc/{pid}/task")):
        task = f"/proc/{pid}/task/{tid}"
        try:
            name, syscall = read_text(f"{task}/comm"), read_text(f"{task}/syscall").split()[0]
            wchan = read_text(f"{task}/wchan")
        except (FileNotFoundError, ProcessLookupError):
            continue
        states.append(ThreadState(tid, name, syscall_name(syscall), wchan or "-"))
    return states


def describe(states: list[ThreadState]) -> str:
    """One line, as a stage or a lab prints it: 'boss in futex, worker-1 in readv, ...'."""
    return ", ".join(str(state) for state in states) or "(no threads)"


def one_reader_others_on_futex(states: list[ThreadState]) -> ThreadState | None:
    """The thread sleeping in a read, if exactly one does and every other sleeps in futex."""
    readers = [state for state in states if state.reading]
    others = [state for state in states if not state.reading]
    if len(readers) == 1 and others and all(state.waiting_on_futex for state in others):
        return readers[0]
    return None


# -- gdb ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backtrace:
    """One thread's innermost frames, as ``thread apply all bt 3`` prints them."""

    name: str
    tid: int
    frames: tuple[str, ...]

    @property
    def in_read(self) -> bool:
        return any(READ_FRAME.search(frame.split(" at ")[0]) for frame in self.frames)

    @property
    def in_futex(self) -> bool:
        return not self.in_read and any(FUTEX_FRAME.search(frame) for frame in self.frames)

    @property
    def waits_on(self) -> str:
        """'futex_word=0x...' or 'lock=0x...': the address it sleeps on, when a frame names it."""
        found = [f"{match[1]}={match[2]}" for frame in self.frames for match in WAIT_ADDRESS.finditer(frame)]
        return found[0] if found else ""

    def innermost(self) -> str:
        """Frame #0's function name: '__GI___readv', '__futex_abstimed_wait_common64'..."""
        text = self.frames[0] if self.frames else ""
        match = re.match(r"#0\s+(?:0x[0-9a-f]+ in )?(\S+)", text)
        return match.group(1) if match else "?"


THREAD_LINE = re.compile(r'^Thread \d+ \(.*?LWP (\d+)\) "([^"]*)"\)?:')


def gdb_backtraces(pid: int, timeout: float = 30.0) -> tuple[list[Backtrace], str]:
    """(backtraces, '') or ([], why not): gdb missing, ptrace refused, or nothing parsed."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return [], "gdb is not installed (scripts/install-system-deps.sh installs it)"
    command = [gdb, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt 3"]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return [], f"gdb did not finish within {timeout:g} s"
    traces = parse_backtraces(completed.stdout)
    if not traces:
        said = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return [], f"gdb could not attach (ptrace refused?): {said}"
    return traces, ""


def parse_backtraces(output: str) -> list[Backtrace]:
    traces: list[Backtrace] = []
    name, tid, frames = "", 0, []
    for line in output.splitlines():
        header = THREAD_LINE.match(line)
        if header:
            if tid:
                traces.append(Backtrace(name, tid, tuple(frames)))
            tid, name, frames = int(header.group(1)), header.group(2), []
        elif tid and line.startswith("#"):
            frames.append(line)
    if tid:
        traces.append(Backtrace(name, tid, tuple(frames)))
    return sorted(traces, key=lambda trace: trace.tid)
