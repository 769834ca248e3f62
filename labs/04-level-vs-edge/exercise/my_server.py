"""Exercise 04: an edge-triggered epoll MQTT server that must drain each socket until EAGAIN.

Complete the one TODO in ``on_readable``, then grade your file from the repository root:

    .venv/bin/python labs/04-level-vs-edge/run.py --student

MQTT itself comes from the kit's sans-I/O core (``mqtt/``): bytes in, bytes out. The I/O loop
below is yours; the grader runs it in a sandbox that refuses the kit's own servers.
"""

from __future__ import annotations

import argparse
import select
import socket
import time

from mqtt.broker import Broker
from mqtt.connection import Connection

READ_CHUNK = 1024  # bytes per recv: small on purpose, so a 2 KB request needs two reads
LONGEST_WAIT = 1.0  # seconds: wake at least this often to run the broker's keepalive timers


class EdgeTriggeredServer:
    """One epoll instance; every socket registered once with EPOLLET."""

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.create_server((host, port), backlog=128)
        self.listener.setblocking(False)
        self.epoll = select.epoll()
        # Edge-triggered on the listener too: one edge may stand for many queued connections.
        self.epoll.register(self.listener.fileno(), select.EPOLLIN | select.EPOLLET)
        self.broker = Broker(clock=time.monotonic)
        self.sockets: dict[int, socket.socket] = {}
        # Python's epoll hands back only (fd, events), not C's epoll_data: find the connection by fd.
        self.connections: dict[int, Connection] = {}

    def serve_forever(self) -> None:
        host, port = self.listener.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        while True:
            timeout = min(LONGEST_WAIT, max(0.0, self.broker.next_deadline - time.monotonic()))
            for fd, events in self.epoll.poll(timeout):
                if fd == self.listener.fileno():
                    self.accept_all()
                    continue
                if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self.on_readable(fd)
                connection = self.connections.get(fd)
                if connection is not None and events & select.EPOLLOUT and connection.output_bytes:
                    self.broker.mark_dirty(connection)  # the send buffer drained: send the rest
            self.flush()
            now = time.monotonic()
            if now >= self.broker.next_deadline:
                self.broker.tick(now)
                self.flush()

    def accept_all(self) -> None:
        while True:  # under ET, accept until EAGAIN: no new edge comes for connections already queued
            try:
                client, address = self.listener.accept()
            except BlockingIOError:
                return
            client.setblocking(False)
            fd = client.fileno()
            self.sockets[fd] = client
            self.connections[fd] = self.broker.open(f"{address[0]}:{address[1]}", tag=fd)
            # EPOLLOUT too, once: a new edge comes whenever a full send buffer drains.
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)

    def read_once(self, fd: int) -> bool:
        """One ``recv`` of at most READ_CHUNK bytes, handed to the core.

        Returns True if it read something, False once nothing is left to read (EAGAIN) or the
        connection is finished (end of stream, reset, or the core decided to close it).
        """
        client = self.sockets.get(fd)
        if client is None:
            return False
        try:
            data = client.recv(READ_CHUNK)
        except BlockingIOError:  # EAGAIN: the kernel holds no more bytes for this socket
            return False
        except ConnectionError:
            self.drop(fd, "connection reset")
            return False
        connection = self.connections[fd]
        if not data:  # end of stream: the client closed its side
            self.drop(fd, "closed by client")
            return False
        connection.receive(data)
        return not connection.wants_close

    def on_readable(self, fd: int) -> None:
        # TODO(drain): under EPOLLET the kernel reports this fd once per arrival of new data, not
        # while data remains. One read_once() takes at most READ_CHUNK bytes; the rest stays in
        # the kernel and no new edge will come for it. Call read_once() until it returns False.
        self.read_once(fd)

    def flush(self) -> None:
        """Send what the core queued; close what it wants closed."""
        for connection in self.broker.drain_dirty():
            fd = connection.tag
            client = self.sockets.get(fd)
            if client is None or self.connections.get(fd) is not connection:
                continue  # closed this turn: its fd number may already be a new client's
            data = connection.pending()
            if data:
                try:
                    written = client.send(data)
                except BlockingIOError:  # the send buffer is full: EPOLLOUT will say when it drains
                    written = 0
                except ConnectionError:
                    self.drop(fd, "connection reset")
                    continue
                connection.sent(written)
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
    EdgeTriggeredServer(arguments.host, arguments.port).serve_forever()


if __name__ == "__main__":
    main()
