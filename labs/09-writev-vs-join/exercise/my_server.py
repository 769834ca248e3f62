"""Exercise 09: a level-triggered epoll MQTT server that must batch its writes.

Complete the one TODO in ``send_queued``, then grade your file from the repository root:

    .venv/bin/python labs/09-writev-vs-join/run.py --student

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

READ_CHUNK = 256 * 1024  # bytes per recv: a whole burst of small PUBLISHes in one read
LONGEST_WAIT = 1.0  # seconds: wake at least this often to run the broker's keepalive timers
READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR


class LevelTriggeredServer:
    """One epoll instance, level-triggered: one recv per readiness, EPOLLOUT only while backed up."""

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.create_server((host, port), backlog=128)
        self.listener.setblocking(False)
        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        self.broker = Broker(clock=time.monotonic)
        self.sockets: dict[int, socket.socket] = {}
        # Python's epoll hands back only (fd, events), not C's epoll_data: find the connection by fd.
        self.connections: dict[int, Connection] = {}
        self.writing: set[int] = set()  # fds registered for EPOLLOUT

    def serve_forever(self) -> None:
        host, port = self.listener.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        while True:
            timeout = min(LONGEST_WAIT, max(0.0, self.broker.next_deadline - time.monotonic()))
            for fd, events in self.epoll.poll(timeout):  # one loop turn per wait
                if fd == self.listener.fileno():
                    self.accept_one()
                    continue
                if events & READABLE:
                    self.read_once(fd)
                connection = self.connections.get(fd)
                if connection is not None and events & select.EPOLLOUT:
                    self.broker.mark_dirty(connection)  # the send buffer drained: send the rest
            self.flush()  # once per turn, after every read of the turn
            now = time.monotonic()
            if now >= self.broker.next_deadline:
                self.broker.tick(now)
                self.flush()

    def accept_one(self) -> None:
        try:  # level-triggered: if more connections wait, the next wait reports the listener again
            client, address = self.listener.accept()
        except BlockingIOError:
            return
        client.setblocking(False)
        fd = client.fileno()
        self.sockets[fd] = client
        self.connections[fd] = self.broker.open(f"{address[0]}:{address[1]}", tag=fd)
        self.epoll.register(fd, select.EPOLLIN)

    def read_once(self, fd: int) -> None:
        """One ``recv`` handed to the core; level-triggered, so bytes left behind are reported again."""
        client = self.sockets[fd]
        try:
            data = client.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except ConnectionError:
            self.drop(fd, "connection reset")
            return
        if not data:  # end of stream: the client closed its side
            self.drop(fd, "closed by client")
            return
        self.connections[fd].receive(data)

    def flush(self) -> None:
        """Send what the core queued; close what it wants closed."""
        for connection in self.broker.drain_dirty():
            fd = connection.tag
            if self.connections.get(fd) is not connection:
                continue  # closed this turn (its fd may already be a new client's)
            client = self.sockets[fd]
            if connection.output_bytes and not self.send_queued(client, connection):
                self.drop(fd, "connection reset")
                continue
            if connection.wants_close:
                self.drop(fd, connection.close_reason or "closed by the broker")
                continue
            # EPOLLOUT only while bytes wait: an idle socket is always writable and would wake every
            # wait. epoll_ctl only when that changes, not once per flush.
            backed_up = connection.output_bytes > 0
            if backed_up and fd not in self.writing:
                self.writing.add(fd)
                self.epoll.modify(fd, select.EPOLLIN | select.EPOLLOUT)
            elif not backed_up and fd in self.writing:
                self.writing.discard(fd)
                self.epoll.modify(fd, select.EPOLLIN)

    def send_queued(self, client: socket.socket, connection: Connection) -> bool:
        """Send what the core queued for this connection; False if the connection broke.

        ``connection.pending_buffers()`` is the queue as a list: one ``bytes`` per packet (or per
        run of PUBLISHes the core routed together). ``connection.pending()`` is the same queue
        joined into one ``bytes``. After a send, ``connection.sent(written, offered)`` drops the
        ``written`` bytes from the front of the queue (``offered``: how many the send was given).
        """
        # TODO(batch): one send() per queued packet means one system call per packet: 200 of them
        # for a burst of 200 small PUBLISHes, all in one loop turn. Send the whole queue in ONE
        # call per loop turn instead (join it with pending(), or hand the list to sendmsg()).
        for packet in connection.pending_buffers():
            try:
                written = client.send(packet)
            except BlockingIOError:  # the send buffer is full: EPOLLOUT will say when it drains
                written = 0
            except ConnectionError:
                return False
            connection.sent(written, len(packet))
            if written < len(packet):
                break  # short: the rest waits for EPOLLOUT
        return True

    def drop(self, fd: int, reason: str) -> None:
        client = self.sockets.pop(fd, None)
        connection = self.connections.pop(fd, None)
        if client is None:
            return
        self.writing.discard(fd)
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
