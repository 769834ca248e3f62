"""A level-triggered accept loop with no spare descriptor, at its fd limit: it spins (labs 02 and 05).

By hand: ``.venv/bin/python labs/02-fd-limits/spin.py --nofile 64`` prints its port and waits in
epoll_wait; connect once (the lab's README, step 5) and it takes a whole core, because
accept() fails with EMFILE and leaves the connection readable in the listen queue. SIGUSR1 makes it
print its counters; ``Spinner`` below runs it for a lab.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


# -- the spinning loop itself (runs in its own process) -----------------------------------------


def fill_fd_table() -> list[int]:
    """Open /dev/null until EMFILE, as a server full of clients has used every descriptor."""
    hoard = []
    while True:
        try:
            hoard.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            return hoard


def slots_in_use(nofile: int) -> int:
    """How many of fds 0..nofile-1 are open (fstat needs no new fd; listing /proc/self/fd would)."""
    in_use = 0
    for fd in range(nofile):
        try:
            os.fstat(fd)
        except OSError:
            continue
        in_use += 1
    return in_use


def spin(nofile: int, host: str, port: int) -> None:
    listener = socket.create_server((host, port), backlog=16)
    listener.setblocking(False)
    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN)  # level-triggered, the default
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    fill_fd_table()  # raw fds from os.open stay open: nothing closes them behind our back
    counts = {"wakeups": 0, "accept_calls": 0, "emfile": 0, "fds_open": slots_in_use(nofile)}

    def report(_signal: int, _frame: Any) -> None:
        print(json.dumps(counts), flush=True)  # stdout is already open: no new fd needed

    signal.signal(signal.SIGUSR1, report)
    print(f"listening on {host}:{listener.getsockname()[1]}", flush=True)
    while True:
        epoll.poll()  # LT: returns at once while the listen queue holds a connection...
        counts["wakeups"] += 1
        try:
            connection, _ = listener.accept()
        except OSError as error:  # ...and at the limit accept() can never empty the queue
            failure = error.errno
        else:
            failure = 0
            connection.close()  # only when the table had room after all
        # Both counts move together, after the call: a SIGUSR1 report never sees one without
        # the other (CPython runs a signal handler at calls and jumps, not between these lines).
        counts["accept_calls"] += 1
        counts["emfile"] += failure == errno.EMFILE


# -- running it for a lab -------------------------------------------------------------------------


class Spinner:
    """``spin.py`` in a child process, with one client connected and left in its listen queue."""

    def __init__(self, nofile: int) -> None:
        from servers.process import parse_listening

        self.process = subprocess.Popen(
            [sys.executable, str(HERE), "--nofile", str(nofile)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C in the terminal reaches only the lab
        )
        assert self.process.stdout is not None
        address = parse_listening(self.read_line(10.0))
        if address is None:
            self.stop()
            raise RuntimeError("spin.py printed no 'listening on' line")
        self.port = address[1]
        # The handshake completes in the kernel: the connection waits in the listen queue,
        # and from now on the listener is readable.
        self.client = socket.create_connection(("127.0.0.1", self.port), timeout=5)

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"spin.py said nothing within {timeout:g} s")
        return self.process.stdout.readline()

    def counts(self) -> dict[str, int]:
        """Its counters so far, printed on SIGUSR1."""
        os.kill(self.pid, signal.SIGUSR1)
        return json.loads(self.read_line(5.0))

    def stop(self) -> None:
        from servers.process import stop_process

        with contextlib.suppress(AttributeError):
            self.client.close()
        stop_process(self.process, grace=2.0)  # SIGTERM to its own pid, then SIGKILL


@contextlib.contextmanager
def spinning(nofile: int) -> Iterator[Spinner]:
    spinner = Spinner(nofile)
    try:
        yield spinner
    finally:
        spinner.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nofile", type=int, default=64, help="RLIMIT_NOFILE, soft and hard (default 64)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    spin(arguments.nofile, arguments.host, arguments.port)


if __name__ == "__main__":
    main()
