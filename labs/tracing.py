"""Attaching strace to a running process without missing a call, then counting what it saw.

``strace -p PID`` is running before the kernel has made it the tracer of PID's threads, so a
window that starts at once misses calls. ``strace_lines`` waits until every thread's TracerPid
(/proc/PID/task/TID/status) is strace's own pid, and ends by detaching strace and waiting for
it, so the output is whole. The parsers count calls in that output: one line per call started
(``-o``), or the rows of the ``-c`` summary table.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from servers.process import stop_process

ATTACH_TIMEOUT = 10.0  # seconds for strace to become the tracer of every thread
DETACH_GRACE = 10.0  # seconds for strace to detach and write the rest of its output
# "[PID ]name(args...": one line per call started ("<... name resumed>" lines do not match).
CALL = re.compile(r"^(?:\d+\s+)?(\w+)\(")


class AttachFailed(RuntimeError):
    """strace exited or never became the tracer: the message says which, and what strace said."""


def tracer_pids(pid: int, every_thread: bool) -> set[int]:
    """TracerPid of PID's threads (only of PID itself unless ``every_thread``): 0 means untraced."""
    tasks = os.listdir(f"/proc/{pid}/task") if every_thread else [str(pid)]
    found = set()
    for task in tasks:
        with contextlib.suppress(FileNotFoundError):  # a thread that exited meanwhile
            with open(f"/proc/{pid}/task/{task}/status") as status:
                line = next(line for line in status if line.startswith("TracerPid:"))
            found.add(int(line.split()[1]))
    return found


def traced_by(pid: int, tracer: int, every_thread: bool) -> bool:
    """True once ``tracer`` is attached to PID (to all its threads if ``every_thread``)."""
    with contextlib.suppress(OSError):
        return tracer_pids(pid, every_thread) == {tracer}
    return False


@contextlib.contextmanager
def strace_lines(
    pid: int, *options: str, attach_timeout: float = ATTACH_TIMEOUT, first_line_timeout: float = 0.0
) -> Iterator[list[str]]:
    """``strace OPTIONS -o FILE -p PID`` for a ``with`` block; the yielded list holds FILE's lines
    once the block has ended.

    The block starts only once strace traces PID: every thread with ``-f`` (strace then attaches
    them all), PID alone without. With ``first_line_timeout``, it also waits (that long at most)
    for strace's first line: the call PID sat in, resumed, so the trace is live. Raises
    AttachFailed if strace does not attach within ``attach_timeout`` seconds.
    """
    every_thread = "-f" in options
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lab-strace-") as folder, tempfile.TemporaryFile() as said:
        output = Path(folder) / "strace.out"
        command = ["strace", *options, "-o", str(output), "-p", str(pid)]
        tracer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=said)
        try:
            await_attached(pid, tracer, every_thread, attach_timeout, said)
            deadline = time.monotonic() + first_line_timeout
            while not (output.exists() and output.stat().st_size) and time.monotonic() < deadline:
                time.sleep(0.01)  # polls the file strace writes, bounded by the deadline
            yield lines
        finally:
            stop_process(tracer, grace=DETACH_GRACE)  # SIGTERM: strace detaches, PID carries on
        if output.exists():
            lines.extend(output.read_text().splitlines())


def await_attached(
    pid: int,
    tracer: subprocess.Popen[bytes],
    every_thread: bool,
    timeout: float,
    said: IO[bytes],
) -> None:
    """Return once ``tracer`` traces PID; AttachFailed if it exits or the deadline passes first."""
    deadline = time.monotonic() + timeout
    while not traced_by(pid, tracer.pid, every_thread):
        if tracer.poll() is not None or time.monotonic() > deadline:
            stop_process(tracer, grace=1.0)
            said.seek(0)
            last = said.read().decode(errors="replace").strip().splitlines()
            why = f"strace could not attach: {last[-1]}" if last else f"no tracer after {timeout:g} s"
            raise AttachFailed(why)
        time.sleep(0.01)  # polls the kernel's TracerPid, bounded by the deadline


def calls_in(lines: Iterable[str]) -> Counter[str]:
    """How many times each syscall was started, from strace's ``-o`` output (with or without -f)."""
    return Counter(match[1] for line in lines if (match := CALL.match(line)))


def summary_rows(lines: Iterable[str]) -> dict[str, tuple[int, int]]:
    """syscall → (calls, errors) from ``strace -c``'s table: '% time seconds usecs/call calls
    [errors] syscall' (the errors column is blank where none failed); the total row left out."""
    rows = {}
    for line in lines:
        fields = line.split()
        if len(fields) in (5, 6) and fields[3].isdigit() and fields[-1] != "total":
            rows[fields[-1]] = (int(fields[3]), int(fields[4]) if len(fields) == 6 else 0)
    return rows
