"""Is the server still there? Which process is it? Cheap answers from sock_diag and /proc.

The status line must never call a dead source live, and ``--attach`` must find a server that
starts (or restarts) after the TUI. Each probe costs one sock_diag dump restricted to LISTEN
sockets (the kernel then skips the established-connection hash entirely) and one read of
``/proc/PID/stat``; the expensive part, matching the listening socket's inode against every
process's ``/proc/*/fd`` links, runs only while the pid is unknown or gone and something
listens, at most about once a second.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from tui.sources.tcp_states import LISTEN_ONLY, tcp_sockets

RESCAN_PERIOD_S = 1.0  # at most one /proc scan a second while looking for the server
RESCAN_COST_MULTIPLIER = 20  # ...and less often if a scan is costly (many processes, many fds)
SERVER_MARKS = ("servers.", "mosquitto", "fullbroker")  # command lines looked at first


@dataclass(frozen=True, slots=True)
class Liveness:
    """What the status line needs to know, gathered in one probe.

    ``running`` is False once the process is gone (a zombie counts as gone: it has exited,
    its parent just has not reaped it yet). ``ended`` says how it ended when the TUI started
    it ("killed by SIGKILL"); "" otherwise. ``telemetry_flag`` is whether ``--telemetry`` is
    on its command line (None: unknown). ``telemetry_at`` is when the last datagram arrived.
    """

    checked_at: float
    pid: int | None
    running: bool
    ended: str
    listening: bool
    telemetry_flag: bool | None
    variant: str
    telemetry_at: float | None = None


def listening_inodes(port: int) -> set[int]:
    """Inodes of the LISTEN sockets bound to ``port``, IPv4 and IPv6: two tiny dumps."""
    inodes = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for row in tcp_sockets(port, family, states=LISTEN_ONLY):
            if row.local[1] == port and row.inode:
                inodes.add(row.inode)
    return inodes


def process_running(pid: int) -> bool:
    """True while ``pid`` exists and has not exited. kill(pid, 0) would also succeed for a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")  # zombie or dead: exited, waiting to be reaped


def command_line(pid: int) -> list[str] | None:
    """The process's argv from /proc/PID/cmdline, or None if it is gone or not ours to read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return None


def variant_in(arguments: list[str]) -> str:
    """The kit's variant in a command line (``-m servers.NAME`` plus --naive/--blocking), or ""."""
    modules = [arguments[index + 1] for index, flag in enumerate(arguments[:-1]) if flag == "-m"]
    ours = [module.removeprefix("servers.") for module in modules if module.startswith("servers.")]
    if not ours:
        return ""
    switches = [flag for flag in ("--naive", "--blocking") if flag in arguments]
    return " ".join([ours[0], *switches])


def socket_inodes_of(pid: int) -> set[int]:
    """Inodes of the sockets ``pid`` holds; empty if it is gone or not ours to see."""
    directory = f"/proc/{pid}/fd"
    inodes = set()
    try:
        entries = os.listdir(directory)
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(f"{directory}/{entry}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def find_pid_holding(inodes: set[int]) -> int | None:
    """The process holding any of ``inodes``: server-looking command lines are searched first."""
    if not inodes:
        return None
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and int(entry) != os.getpid()]

    def unlikely(pid: int) -> bool:
        arguments = " ".join(command_line(pid) or ())
        return not any(mark in arguments for mark in SERVER_MARKS)

    for pid in sorted(pids, key=unlikely):
        if inodes & socket_inodes_of(pid):
            return pid
    return None


class ServerWatch:
    """Follows the server behind ``port``: alive, listening, and which pid, rediscovered when needed.

    ``exit_status`` (for a server the TUI started, pid ``pid``) says how it ended, or None while
    it runs. ``listening`` and ``scan`` are injectable so the rediscovery rules can be unit tested.
    """

    def __init__(
        self,
        port: int,
        pid: int | None,
        exit_status: Callable[[], str | None] | None = None,
        listening: Callable[[int], set[int]] = listening_inodes,
        scan: Callable[[set[int]], int | None] = find_pid_holding,
    ) -> None:
        self.port = port
        self.pid = pid
        self.launched_pid = pid if exit_status is not None else None
        self.exit_status = exit_status
        self._listening, self._scan = listening, scan
        self.arguments = command_line(pid) if pid is not None else None
        self.scans = 0
        self._scan_due = 0.0
        self._inodes_seen: set[int] | None = None  # the listeners the current pid was seen to hold

    def probe(self, now: float) -> Liveness:
        """One cheap look; adopts a new pid when the server (re)appears."""
        inodes = self._listening(self.port)
        running, ended = self._process_state()
        if not inodes:
            self._inodes_seen = set()
        elif self._inodes_seen is None and running:
            self._inodes_seen = inodes  # the pid we were given holds them: no need to check
        elif (not running or inodes != self._inodes_seen) and now >= self._scan_due:
            self._rescan(inodes, now)  # gone, or a new listener: whose is it?
            running, ended = self._process_state()
            if running:
                self._inodes_seen = inodes
        arguments = self.arguments
        return Liveness(
            checked_at=now,
            pid=self.pid,
            running=running,
            ended=ended,
            listening=bool(inodes),
            telemetry_flag=None if arguments is None else "--telemetry" in arguments,
            variant=variant_in(arguments) if arguments else "",
        )

    def _process_state(self) -> tuple[bool, str]:
        if self.pid is None:
            return False, ""
        if self.pid == self.launched_pid and self.exit_status is not None:
            ended = self.exit_status()  # it also reaps our child, so no zombie lingers
            return ended is None, ended or ""
        return process_running(self.pid), ""

    def _rescan(self, inodes: set[int], now: float) -> None:
        started = time.thread_time()  # CPU time: a scan waiting for the GIL is not a costly scan
        found = self._scan(inodes)
        self.scans += 1
        cost = time.thread_time() - started
        self._scan_due = now + max(RESCAN_PERIOD_S, RESCAN_COST_MULTIPLIER * cost)
        if found is not None and found != self.pid:
            self.pid = found
            self.arguments = command_line(found)
