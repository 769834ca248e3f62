"""The listening socket and the descriptor budget: fd limit, port-in-use report, EMFILE guard.

Every client costs one file descriptor, so a server that means to hold ten thousand
connections raises its soft limit first and keeps one descriptor in reserve for the day
accept() runs out.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import sys


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit: each client costs one descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def who_listens(port: int) -> str | None:
    """Name the process listening on ``port`` (pid and command), when /proc lets us see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                for row in list(rows)[1:]:
                    fields = row.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A = LISTEN
                        inodes.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
                return f"pid {pid} ({command})"
        except OSError:
            continue
    return None


def open_listener(host: str, port: int, backlog: int, reuseport: bool = False) -> socket.socket:
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR lets a restarted server bind while old connections sit in TIME_WAIT.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        # Several processes may bind the same port; the kernel spreads new connections
        # across their listeners (the notes' "spawn-fcgi" style, one process per core).
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        if error.errno != errno.EADDRINUSE:
            raise
        holder = who_listens(port)
        held_by = f" by {holder}" if holder else ""
        sys.exit(f"error: port {port} on {host} is already in use{held_by}; choose another with --port")
    if listener.family in (socket.AF_INET, socket.AF_INET6):
        # MQTT packets are small and latency-bound: Nagle must not hold them back. Set here,
        # once: Linux copies it to every socket accept() returns, saving a syscall per client.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.listen(backlog)
    listener.setblocking(False)  # accept() must return EAGAIN, never block the loop
    return listener


class SpareFd:
    """The EMFILE guard: hold one descriptor in reserve for the day accept() runs out.

    Without it, a listener with a pending connection stays readable while accept() fails
    with EMFILE, and a level-triggered loop spins at 100% CPU. Closing the spare frees one
    slot: accept the connection, close it at once (the client sees a clean close), reopen.
    """

    def __init__(self) -> None:
        self.fd: int | None = os.open("/dev/null", os.O_RDONLY)

    def shed(self, listener: socket.socket) -> bool:
        """Accept and drop one waiting connection; False if none was waiting.

        At the limit accept() fails with EMFILE before it even looks at the backlog (the
        kernel reserves the new fd first), so only this accept tells whether anyone waits.
        """
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            connection, _ = listener.accept()
            connection.close()
            shed = True
        except OSError:
            shed = False  # EAGAIN: the backlog was empty after all
        try:
            self.fd = os.open("/dev/null", os.O_RDONLY)
        except OSError:
            self.fd = None  # still exhausted; the next shed retries
        return shed


def peer_name(address: tuple) -> str:
    return f"{address[0]}:{address[1]}"
