"""mosquitto 1.x's main loop in miniature: poll() with a 100 ms timeout, and every client walked each wake.

What this copies, from ``mosquitto_main_loop`` in mosquitto 1.3/1.4's src/loop.c (1.0.3's own
file was not at hand; a 2011 version of the function had the same shape with a 1,000 ms
timeout): on every turn, walk every client context to check its keepalive, write its queued
messages and rebuild the pollfd array; ``poll(pollfds, count, 100)``; then walk every context
again to look at its revents. An idle broker therefore still wakes ten times a second and pays
for N clients each time, in user space (the walks) and in the kernel (poll scans N fds).

Run by hand: ``.venv/bin/python labs/05-ten-thousand-connections/mosquitto1_loop.py --port 1883``.
``--nofile N`` lowers its fd limit: it has no spare fd, so at the limit it also spins (lab 02).
"""

from __future__ import annotations

import argparse
import resource
import select
import socket
import sys
import time
from pathlib import Path

# Run as a script from the repository root: put the root on sys.path for ``mqtt``.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mqtt.broker import Broker
from mqtt.connection import Connection

POLLIN, POLLOUT, POLLERR, POLLHUP = select.POLLIN, select.POLLOUT, select.POLLERR, select.POLLHUP


class Context:
    """One client, as mosquitto's ``struct mosquitto``: its socket and its protocol state."""

    __slots__ = ("connection", "fd", "sock")

    def __init__(self, sock: socket.socket, connection: Connection) -> None:
        self.sock, self.fd, self.connection = sock, sock.fileno(), connection


class Mosquitto1Loop:
    def __init__(self, host: str, port: int, timeout_ms: int) -> None:
        self.listener = socket.create_server((host, port), backlog=1024)
        self.listener.setblocking(False)
        self.timeout_ms = timeout_ms
        self.broker = Broker(clock=time.monotonic)
        self.contexts: list[Context] = []  # mosquitto 1.x: db->contexts, an array walked by index
        self.by_fd: dict[int, Context] = {}

    def serve_forever(self) -> None:
        host, port = self.listener.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        while True:
            pollfds = self.prepare(time.monotonic())
            # The kernel checks every one of the N+1 fds, then sleeps up to 100 ms, then checks
            # them all again on the way out: every call, whether anything happened or not.
            ready = dict(pollfds.poll(self.timeout_ms))
            self.handle_reads_writes(ready)
            if ready.get(self.listener.fileno(), 0) & POLLIN:
                self.accept_all()
            if time.monotonic() >= self.broker.next_deadline:
                self.broker.tick(time.monotonic())

    def prepare(self, now: float) -> select.poll:
        """The walk before poll: keepalive check, queued writes, a fresh pollfd entry per client."""
        pollfds = select.poll()
        pollfds.register(self.listener.fileno(), POLLIN)
        for context in list(self.contexts):
            connection = context.connection
            deadline = connection.deadline()
            if deadline is not None and now > deadline:  # "Client has exceeded timeout"
                self.disconnect(context, "keepalive expired")
                continue
            if connection.output_bytes:  # mqtt3_db_message_write: queued messages go out now
                self.write(context)
            pollfds.register(context.fd, POLLIN | (POLLOUT if connection.output_bytes else 0))
        return pollfds

    def handle_reads_writes(self, ready: dict[int, int]) -> None:
        """loop_handle_reads_writes: every context's revents looked at, ready or not."""
        for context in list(self.contexts):
            revents = ready.get(context.fd, 0)
            if revents & POLLOUT:
                self.write(context)
            if revents & (POLLIN | POLLERR | POLLHUP):
                self.read(context)
        for connection in self.broker.drain_dirty():  # a PUBLISH read above queued output elsewhere
            context = self.by_fd.get(connection.tag)
            if context is not None and context.connection is connection:
                self.write(context)

    def accept_all(self) -> None:
        while True:  # mqtt3_socket_accept until it returns -1: EAGAIN, or EMFILE with no spare fd
            try:
                sock, address = self.listener.accept()
            except OSError:
                return
            sock.setblocking(False)
            context = Context(sock, self.broker.open(f"{address[0]}:{address[1]}", tag=sock.fileno()))
            self.contexts.append(context)
            self.by_fd[context.fd] = context

    def read(self, context: Context) -> None:
        try:
            data = context.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.disconnect(context, "closed by client")
            return
        context.connection.receive(data)
        if context.connection.wants_close:
            self.write(context)

    def write(self, context: Context) -> None:
        connection = context.connection
        data = connection.pending()
        if data:
            try:
                connection.sent(context.sock.send(data))
            except BlockingIOError:
                connection.sent(0)
            except OSError:
                self.disconnect(context, "write error")
                return
        if connection.wants_close:
            self.disconnect(context, connection.close_reason or "closed by the broker")

    def disconnect(self, context: Context, reason: str) -> None:
        if self.by_fd.pop(context.fd, None) is None:
            return
        self.contexts.remove(context)
        context.sock.close()
        if not context.connection.ended:
            context.connection.lost(reason)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--timeout-ms", type=int, default=100, help="poll() timeout (mosquitto 1.3/1.4: 100)")
    parser.add_argument("--nofile", type=int, default=0, help="lower RLIMIT_NOFILE to this (0: leave it)")
    arguments = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = arguments.nofile or hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # the hard limit, as mosquitto asks of ulimit
    Mosquitto1Loop(arguments.host, arguments.port, arguments.timeout_ms).serve_forever()


if __name__ == "__main__":
    main()
