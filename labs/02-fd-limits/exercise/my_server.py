"""Exercise 02: a level-triggered epoll MQTT server that must survive its fd limit without spinning.

Complete the two TODOs (in ``__init__`` and ``out_of_descriptors``), then grade your file
from the repository root (the grader starts it with ``ulimit -n 32``):

    .venv/bin/python labs/02-fd-limits/run.py --student

MQTT itself comes from the kit's sans-I/O core (``mqtt/``): bytes in, bytes out. The I/O loop
below is yours; the grader runs it in a sandbox that refuses the kit's own servers.
"""

from __future__ import annotations

import argparse
import errno
import select
import socket
import time

from mqtt.broker import Broker
from mqtt.connection import Connection

LONGEST_WAIT = 1.0  # seconds: wake at least this often to run the broker's keepalive timers
READ_SIZE = 65536


class LevelTriggeredServer:
    """One epoll instance, level-triggered: a ready fd is reported on every wait until handled."""

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.create_server((host, port), backlog=128)
        self.listener.setblocking(False)
        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        self.broker = Broker(clock=time.monotonic)
        self.sockets: dict[int, socket.socket] = {}
        self.connections: dict[int, Connection] = {}
        self.last_complaint = 0.0
        # TODO(spare-fd): keep one descriptor in reserve (open /dev/null here) for the day accept()
        # fails with EMFILE.

    def serve_forever(self) -> None:
        host, port = self.listener.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        while True:
            timeout = min(LONGEST_WAIT, max(0.0, self.broker.next_deadline - time.monotonic()))
            for fd, events in self.epoll.poll(timeout):
                if fd == self.listener.fileno():
                    self.accept_clients()
                    continue
                if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self.on_readable(fd)
                connection = self.connections.get(fd)
                if connection is not None and events & select.EPOLLOUT:
                    self.broker.mark_dirty(connection)  # room in the send buffer again
            self.flush()
            now = time.monotonic()
            if now >= self.broker.next_deadline:
                self.broker.tick(now)
                self.flush()

    def accept_clients(self) -> None:
        while True:
            try:
                client, address = self.listener.accept()
            except BlockingIOError:  # EAGAIN: the listen queue is empty
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    self.out_of_descriptors()
                    return
                raise
            client.setblocking(False)
            fd = client.fileno()
            self.sockets[fd] = client
            self.connections[fd] = self.broker.open(f"{address[0]}:{address[1]}", tag=fd)
            self.epoll.register(fd, select.EPOLLIN)

    def out_of_descriptors(self) -> None:
        """accept() failed with EMFILE: the connection it was for is still in the listen queue."""
        # TODO(spare-fd): the listener stays readable, so level-triggered epoll_wait returns at once
        # and this runs again: a spin at 100% CPU, while the client waits for an answer that never
        # comes. Close the spare fd, accept the waiting connection into the freed slot, close it at
        # once (the client learns it was refused), then open the spare again.
        now = time.monotonic()
        if now - self.last_complaint >= 1.0:  # at most one line a second: this runs in a tight loop
            print("accept: out of file descriptors (EMFILE); raise ulimit -n", flush=True)
            self.last_complaint = now

    def on_readable(self, fd: int) -> None:
        client = self.sockets.get(fd)
        if client is None:
            return
        try:
            data = client.recv(READ_SIZE)
        except BlockingIOError:
            return
        except ConnectionError:
            self.drop(fd, "connection reset")
            return
        if not data:
            self.drop(fd, "closed by client")
            return
        self.connections[fd].receive(data)

    def flush(self) -> None:
        """Send what the core queued; watch EPOLLOUT only while output is left; close what it wants closed."""
        for connection in self.broker.drain_dirty():
            fd = connection.tag
            if self.connections.get(fd) is not connection:
                continue  # already dropped, and its fd number may belong to a newer client by now
            client = self.sockets[fd]
            data = connection.pending()
            if data:
                try:
                    written = client.send(data)
                except BlockingIOError:
                    written = 0
                except ConnectionError:
                    self.drop(fd, "connection reset")
                    continue
                connection.sent(written)
                wanted = select.EPOLLIN | (select.EPOLLOUT if connection.output_bytes else 0)
                self.epoll.modify(fd, wanted)
            if connection.wants_close:
                self.drop(fd, connection.close_reason or "closed by the broker")

    def drop(self, fd: int, reason: str) -> None:
        client = self.sockets.pop(fd, None)
        connection = self.connections.pop(fd, None)
        if client is None:
            return
        self.epoll.unregister(fd)
        client.close()
        if connection is not None and not connection.ended:
            connection.lost(reason)  # fires the will, keeps a persistent session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    arguments = parser.parse_args()
    LevelTriggeredServer(arguments.host, arguments.port).serve_forever()


if __name__ == "__main__":
    main()
