"""Exercise 06: an epoll MQTT server that cuts off a stalled subscriber without leaving FIN_WAIT_1 behind.

Complete the TODO in ``drop``, then grade your file from the repository root:

    .venv/bin/python labs/06-close-states/run.py --student

MQTT itself comes from the kit's sans-I/O core (``mqtt/``): bytes in, bytes out. It decides
when a subscriber that stopped reading has to go (``connection.abortive``); closing its socket
is yours. The grader runs this file in a sandbox that refuses the kit's own servers.
"""

from __future__ import annotations

import argparse
import select
import socket
import time

from mqtt.broker import Broker
from mqtt.connection import Connection
from mqtt.limits import Limits

LONGEST_WAIT = 1.0  # seconds: wake at least this often to run the broker's timers
READ_SIZE = 65536
# A subscriber whose socket is full and who has 256 KiB more waiting here is congested: its
# QoS 0 messages are dropped, and after 1 s of that the core cuts it off (connection.abortive).
LIMITS = Limits(max_pending_output=256 * 1024, slow_client_grace=1.0)


class FloodSafeServer:
    """One level-triggered epoll instance; EPOLLOUT is watched only while output is left over."""

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.create_server((host, port), backlog=128)
        self.listener.setblocking(False)
        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        self.broker = Broker(clock=time.monotonic, limits=LIMITS)
        self.sockets: dict[int, socket.socket] = {}
        self.connections: dict[int, Connection] = {}

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
            client.setblocking(False)
            fd = client.fileno()
            self.sockets[fd] = client
            self.connections[fd] = self.broker.open(f"{address[0]}:{address[1]}", tag=fd)
            self.epoll.register(fd, select.EPOLLIN)

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
                except BlockingIOError:  # the send buffer is full: the peer is not reading
                    written = 0
                except ConnectionError:
                    self.drop(fd, "connection reset")
                    continue
                connection.sent(written)
                wanted = select.EPOLLIN | (select.EPOLLOUT if connection.output_bytes else 0)
                self.epoll.modify(fd, wanted)
            if connection.wants_close:
                self.drop(fd, connection.close_reason or "closed by the broker", connection.abortive)

    def drop(self, fd: int, reason: str, abortive: bool = False) -> None:
        """Forget the socket and close it; ``abortive``: the core cut off a client that stopped reading."""
        client = self.sockets.pop(fd, None)
        connection = self.connections.pop(fd, None)
        if client is None:
            return
        self.epoll.unregister(fd)
        # TODO(abort): a plain close() of a socket whose peer stopped reading does not free it. The
        # kernel keeps it, now owned by no process, in FIN_WAIT_1 with its whole Send-Q (megabytes
        # here), probing a zero window for minutes. When ``abortive``, set SO_LINGER to (on, 0 s)
        # first: close() then sends RST, discards the queue and frees the socket at once.
        client.close()
        if connection is not None and not connection.ended:
            connection.lost(reason)  # fires the will, keeps a persistent session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    arguments = parser.parse_args()
    FloodSafeServer(arguments.host, arguments.port).serve_forever()


if __name__ == "__main__":
    main()
