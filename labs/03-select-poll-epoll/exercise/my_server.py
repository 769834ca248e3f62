"""Exercise 03: the poll → epoll swap. Register each socket once, and get the ready list back.

This server works as it is: a level-triggered MQTT server whose wait is ``select.poll()``. Each
``poll()`` call hands the kernel every watched socket and the kernel checks every one of them,
so a wait costs more with every client connected, busy or idle. Rewrite the ``Waiter`` class,
where the TODOs are, so that the kernel keeps the interest set (one ``epoll_ctl`` per socket,
at accept and at close) and each wait returns only the ready sockets. Nothing outside
``Waiter`` needs to change. Grade your file from the repository root:

    .venv/bin/python labs/03-select-poll-epoll/run.py --student

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

READ_SIZE = 65536  # bytes per recv; level-triggered, so bytes left behind are reported again
LONGEST_WAIT = 1.0  # seconds: wake at least this often to run the broker's keepalive timers
# poll and epoll use the same bit values (POLLIN == EPOLLIN == 1, POLLOUT == EPOLLOUT == 4, ...),
# so the loop reads either kind of ready list with these.
READABLE = select.POLLIN | select.POLLHUP | select.POLLERR
WRITABLE = select.POLLOUT


class Waiter:
    """The interest set and the wait: the only part of the server that knows which syscall waits."""

    def __init__(self) -> None:
        # TODO(epoll): one select.epoll() instead: the kernel keeps the set.
        # A poll object keeps the set in this process, and every poll() copies all of it in.
        self.poller = select.poll()

    def watch(self, fd: int) -> None:
        """A new socket to wait on (the listener, then each accepted client), for reading."""
        # TODO(epoll): register fd, once: one epoll_ctl(ADD).
        self.poller.register(fd, select.POLLIN)

    def want_output(self, fd: int, wanted: bool) -> None:
        """Also wait for room to write (a send came up short), or stop: an idle socket is always
        writable, so leaving POLLOUT set would make every wait return at once."""
        # TODO(epoll): modify the registration: one epoll_ctl(MOD).
        self.poller.modify(fd, select.POLLIN | select.POLLOUT if wanted else select.POLLIN)

    def forget(self, fd: int) -> None:
        """The socket is about to close: stop waiting on it."""
        # TODO(epoll): unregister fd: one epoll_ctl(DEL), before close.
        self.poller.unregister(fd)

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        """Block up to ``timeout`` seconds; return (fd, events) for the sockets that are ready."""
        # TODO(epoll): wait on the epoll instance (in seconds, not ms).
        # poll() makes the kernel check every registered fd on every call, ready or not.
        return self.poller.poll(timeout * 1000)


class Server:
    """One listener, one Waiter, and a dict from fd to socket and to the core's connection."""

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.create_server((host, port), backlog=128)
        self.listener.setblocking(False)
        self.waiter = Waiter()
        self.waiter.watch(self.listener.fileno())
        self.broker = Broker(clock=time.monotonic)
        self.sockets: dict[int, socket.socket] = {}
        # A wait hands back fds, not C's epoll_data pointer: find the connection by fd.
        self.connections: dict[int, Connection] = {}
        self.writing: set[int] = set()  # fds whose last send came up short

    def serve_forever(self) -> None:
        host, port = self.listener.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        while True:
            timeout = min(LONGEST_WAIT, max(0.0, self.broker.next_deadline - time.monotonic()))
            for fd, events in self.waiter.wait(timeout):
                if fd == self.listener.fileno():
                    self.accept_one()  # level-triggered: more queued connections report it again
                    continue
                if events & READABLE:
                    self.read_once(fd)
                connection = self.connections.get(fd)
                if connection is not None and events & WRITABLE:
                    connection.wake()  # the send buffer has room again: flush() sends the rest
            self.flush()
            now = time.monotonic()
            if now >= self.broker.next_deadline:
                self.broker.tick(now)
                self.flush()

    def accept_one(self) -> None:
        try:
            client, address = self.listener.accept()
        except BlockingIOError:  # another wake-up took it already
            return
        client.setblocking(False)
        fd = client.fileno()
        self.sockets[fd] = client
        self.connections[fd] = self.broker.open(f"{address[0]}:{address[1]}", tag=fd)
        self.waiter.watch(fd)

    def read_once(self, fd: int) -> None:
        """One recv, handed to the core; the next wait reports the fd again if bytes remain."""
        client = self.sockets.get(fd)
        if client is None:
            return
        try:
            data = client.recv(READ_SIZE)
        except BlockingIOError:  # EAGAIN: nothing after all
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
        dirty = self.broker.drain_dirty()
        while dirty:
            for connection in dirty:
                self.send_pending(connection)
            dirty = self.broker.drain_dirty()  # a send may release queued messages

    def send_pending(self, connection: Connection) -> None:
        fd = connection.tag
        client = self.sockets.get(fd)
        if client is None or self.connections.get(fd) is not connection:
            return  # closed this turn: its fd number may already be a new client's
        data = connection.pending()
        if data:
            try:
                written = client.send(data)
            except BlockingIOError:  # the send buffer is full
                written = 0
            except ConnectionError:
                self.drop(fd, "connection reset")
                return
            connection.sent(written)
        if connection.wants_close:
            self.drop(fd, connection.close_reason or "closed by the broker")
            return
        backed_up = connection.output_bytes > 0
        if backed_up != (fd in self.writing):  # changed: tell the Waiter, and only then
            if backed_up:
                self.writing.add(fd)
            else:
                self.writing.discard(fd)
            self.waiter.want_output(fd, backed_up)

    def drop(self, fd: int, reason: str) -> None:
        client = self.sockets.pop(fd, None)
        connection = self.connections.pop(fd, None)
        self.writing.discard(fd)
        if client is None:
            return
        self.waiter.forget(fd)
        client.close()
        if connection is not None and not connection.ended:
            connection.lost(reason)  # fires the will, keeps a persistent session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    arguments = parser.parse_args()
    Server(arguments.host, arguments.port).serve_forever()


if __name__ == "__main__":
    main()
