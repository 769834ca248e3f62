"""Exercise 08: a boss/worker MQTT server whose workers must not hold the lock across a read.

Complete the one TODO in ``handle``, then grade your file from the repository root:

    .venv/bin/python labs/08-boss-worker/run.py --student

The boss thread accepts clients and waits (epoll) for sockets with bytes to read, and queues
each one for the workers. A worker takes a socket off the queue, reads it, and hands the bytes
to the kit's sans-I/O MQTT core (``mqtt/``), which one lock guards: the core is not thread-safe.
The grader runs your file in a sandbox that refuses the kit's own servers.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import select
import socket
import threading
import time

from mqtt.broker import Broker
from mqtt.connection import Connection

READ_CHUNK = 65536  # bytes per recv
WORKERS = 2
LONGEST_WAIT = 0.5  # seconds: the boss wakes at least this often to run the core's timers
ARMED = select.EPOLLIN | select.EPOLLONESHOT  # reported once, then silent until re-armed


def name_this_thread(name: str) -> None:
    """The kernel's name for the calling thread, so ps, top and /proc/PID/task show it."""
    with contextlib.suppress(OSError), open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
        comm.write(name)


class BossWorkerServer:
    """One boss thread (the main one) and WORKERS worker threads; ``lock`` guards the core."""

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.create_server((host, port), backlog=128)
        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        self.broker = Broker(clock=time.monotonic)
        self.lock = threading.Lock()  # guards the core and the two dicts below
        self.sockets: dict[int, socket.socket] = {}  # fd -> socket (blocking, as in the notes)
        self.connections: dict[int, Connection] = {}  # fd -> the core's connection
        self.ready: queue.Queue[socket.socket] = queue.Queue(maxsize=64)  # boss -> workers

    # -- the boss -------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        name_this_thread("boss")
        for index in range(1, WORKERS + 1):
            threading.Thread(target=self.work, args=(f"worker-{index}",), daemon=True).start()
        host, port = self.listener.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        while True:
            for fd, _events in self.epoll.poll(LONGEST_WAIT):
                if fd == self.listener.fileno():
                    self.accept()
                    continue
                client = self.sockets.get(fd)
                if client is not None:
                    self.ready.put(client)  # ARMED is one-shot: nobody else gets this socket now
            with self.lock:  # the core's timers: keepalives, clients that never send CONNECT
                now = time.monotonic()
                if now >= self.broker.next_deadline:
                    self.broker.tick(now)
                    self.flush()

    def accept(self) -> None:
        client, address = self.listener.accept()  # epoll said a connection is waiting
        with self.lock:
            fd = client.fileno()
            self.sockets[fd] = client
            self.connections[fd] = self.broker.open(f"{address[0]}:{address[1]}", tag=fd)
        # Queued at once, as the notes' boss did: a worker reads its CONNECT. It joins the
        # boss's epoll after that first read (see ``process``).
        self.ready.put(client)

    # -- the workers ----------------------------------------------------------------------------

    def work(self, name: str) -> None:
        name_this_thread(name)
        while True:
            self.handle(self.ready.get())

    def handle(self, client: socket.socket) -> None:
        """Read what one socket sent and let the core act on it."""
        # TODO(lock-scope): read before taking the lock; hold it only around self.process().
        # As written, this worker sleeps in a blocking recv with the lock held: a client that
        # connects and sends nothing stops every other thread, each waiting for the lock.
        with self.lock:
            data = self.read(client)
            self.process(client, data)

    def read(self, client: socket.socket) -> bytes:
        """One blocking recv: what arrived, or b"" once the client closed (or was dropped)."""
        try:
            return client.recv(READ_CHUNK)
        except OSError:
            return b""

    def process(self, client: socket.socket, data: bytes) -> None:
        """Hand ``data`` to the core, send what it queued, re-arm the socket. Lock held."""
        fd = client.fileno()  # -1 once dropped: whatever another thread closed is ignored here
        connection = self.connections.get(fd)
        if connection is None or self.sockets.get(fd) is not client:
            return
        if not data:
            self.drop(fd, "closed by client")
            return
        connection.receive(data)
        self.flush()
        if fd in self.sockets:
            try:
                self.epoll.modify(fd, ARMED)
            except FileNotFoundError:  # its first read: not in the boss's epoll yet
                self.epoll.register(fd, ARMED)

    # -- output and closing (lock held) ---------------------------------------------------------

    def flush(self) -> None:
        """Send what the core queued; close what it wants closed."""
        for connection in self.broker.drain_dirty():
            fd = connection.tag
            client = self.sockets.get(fd)
            if client is None:
                continue
            data = connection.pending()
            if data:
                try:
                    client.sendall(data)  # blocking: on loopback to a reading client, at once
                except OSError:
                    self.drop(fd, "send failed")
                    continue
                connection.sent(len(data))
            if connection.wants_close:
                self.drop(fd, connection.close_reason or "closed by the broker")

    def drop(self, fd: int, reason: str) -> None:
        client = self.sockets.pop(fd, None)
        connection = self.connections.pop(fd, None)
        if client is None:
            return
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)  # wakes a worker asleep in recv on it
        client.close()
        if connection is not None and not connection.ended:
            connection.lost(reason)  # fires the will, keeps a persistent session
            self.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    arguments = parser.parse_args()
    BossWorkerServer(arguments.host, arguments.port).serve_forever()


if __name__ == "__main__":
    main()
