"""Boss/worker threads: the boss accepts, each worker runs its own epoll loop; one lock guards the core.

New compared with epoll_et: threads. The boss (the main thread) only accepts and hands each
socket to a worker through a queue plus an eventfd wakeup, as in the notes' pstack of the
modified mosquitto. Workers ``recv`` and ``send`` outside the lock and take it only around
core calls. Fan-out often makes another worker's connection dirty; then the worker pokes
that worker's eventfd, because only a socket's owner writes to it.

``--naive`` runs the notes' flawed C server instead (see naive_boss_worker.py): one mutex
held across ``accept`` and across every worker's ``recv`` and packet handling.

Under CPython's GIL, threads overlap only inside syscalls, so neither model beats the
single-threaded loop; with the lock on top, that is the notes' case for one thread "like redis".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import sys
import time
from collections import deque

from mqtt.broker import Broker
from mqtt.connection import Connection

from .common import BaseServer, main
from .naive_boss_worker import NaiveServer
from .threading_tools import NamedThread, TimedLock, name_this_thread, start_named

WAKE_INTERVAL = 0.5  # seconds; a worker's longest sleep, so a missed poke cannot stall it for long


class Worker:
    """One thread, one epoll instance, and the connections handed to it."""

    def __init__(self, server: ThreadedServer, index: int) -> None:
        self.server = server
        self.name = f"worker-{index}"
        self.lock = server.core_lock
        self.epoll = select.epoll()
        self.wakeup = os.eventfd(0, os.EFD_NONBLOCK)  # others write to it to end our epoll_wait
        self.epoll.register(self.wakeup, select.EPOLLIN)
        self.inbox: deque[tuple[socket.socket, str]] = deque()  # (socket, peer) from the boss
        self.to_flush: set[Connection] = set()  # our connections with output, filled under the lock
        self.connections: dict[int, Connection] = {}
        self.read_buffer = bytearray(server.args.read_chunk)
        self.read_view = memoryview(self.read_buffer)
        self.writev = server.args.writev
        self.wait_calls = 0
        self.thread = NamedThread(self.name, self.run)

    def poke(self) -> None:
        os.eventfd_write(self.wakeup, 1)

    def run(self) -> None:
        while not self.server.stopping:
            try:
                self.turn()
            except Exception as error:
                # A worker that died would orphan its clients while the process looks alive:
                # whatever escaped the per-connection barrier is logged, and the loop goes on.
                with self.lock.held(self.name):
                    self.server.broker.contain(None, error)

    def turn(self) -> None:
        """One loop turn: wait, adopt new sockets, read, write."""
        telemetry = self.server.telemetry
        started = time.monotonic()
        ready = self.epoll.poll(WAKE_INTERVAL)
        if telemetry:
            self.wait_calls += 1
            blocked = time.monotonic() - started
            telemetry.emit_wait(
                self.server.variant, "ET", self.wait_calls, blocked, ready, len(self.connections) + 1,
                thread=self.name,
            )
        for fd, events in ready:
            if fd == self.wakeup:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self.wakeup)
                self.adopt()
                continue
            connection = self.connections.get(fd)
            if connection is None:
                continue
            try:  # the fault barrier: a bug met on this connection ends only this connection
                if events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                    self.read(fd)
                if fd in self.connections and events & select.EPOLLOUT:
                    self.flush(connection)  # a full send buffer drained
            except Exception as error:
                self.contain(fd, connection, error)
        self.flush_owned()

    def contain(self, fd: int, connection: Connection, error: Exception) -> None:
        """The fault barrier: the core ends this one connection (and logs why); close its socket now."""
        with self.lock.held(self.name):
            self.server.broker.contain(connection, error)
        if self.connections.get(fd) is connection:
            self.close(fd, connection.close_reason)

    def adopt(self) -> None:
        while self.inbox:
            sock, peer = self.inbox.popleft()
            with self.lock.held(self.name):
                connection = self.server.broker.open(peer, tag=sock)
                self.server.owner[connection] = self
            self.connections[sock.fileno()] = connection
            # Edge-triggered with EPOLLOUT: an edge when a full send buffer drains, no epoll_ctl.
            self.epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)

    def read(self, fd: int) -> None:
        connection = self.connections[fd]
        while True:  # edge-triggered: drain until EAGAIN
            try:
                count = connection.tag.recv_into(self.read_buffer)  # outside the lock
            except BlockingIOError:
                return
            except OSError as error:
                self.close(fd, f"recv failed: {error.strerror}")
                return
            if count == 0:
                self.close(fd, "peer closed the connection")
                return
            with self.lock.held(self.name):  # only the core call is serialised
                connection.receive(self.read_view[:count])
                self.server.route_dirty(self)

    def flush_owned(self) -> None:
        with self.lock.held(self.name):
            self.server.route_dirty(self)
            mine, self.to_flush = self.to_flush, set()
        for connection in mine:
            try:  # the fault barrier, around sent() and the session pump behind it
                self.flush(connection)
            except Exception as error:
                self.contain(connection.tag.fileno(), connection, error)

    def flush(self, connection: Connection) -> None:
        sock = connection.tag
        fd = sock.fileno()
        if fd < 0 or self.connections.get(fd) is not connection:
            return
        with self.lock.held(self.name):
            buffers = connection.pending_buffers() if self.writev else [connection.pending()]
            offered = sum(map(len, buffers))
        sent = 0
        if connection.output_bytes:
            try:
                # Outside the lock. Other threads may append meanwhile; sent() trims the front.
                sent = sock.sendmsg(buffers) if self.writev else sock.send(buffers[0])
            except BlockingIOError:
                pass
            except OSError as error:
                self.close(fd, f"send failed: {error.strerror}")
                return
        with self.lock.held(self.name):
            connection.sent(sent, offered)
            self.server.route_dirty(self)  # sent() may refill from the session queue
        if connection.wants_close:
            self.close(fd, connection.close_reason)

    def close(self, fd: int, reason: str) -> None:
        connection = self.connections.pop(fd)
        with self.lock.held(self.name):
            try:
                connection.lost(reason)
            except Exception as error:  # the fault barrier: the socket is closed all the same
                self.server.broker.contain(connection, error)
            self.server.owner.pop(connection, None)
            self.server.route_dirty(self)
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)
        connection.tag.close()
        self.server.log_close(fd, connection, reason)


class ThreadedServer(BaseServer):
    variant = "threaded_boss_worker"
    mode = "ET"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workers", type=int, default=2, help="worker threads (default 2)")
        parser.add_argument(
            "--naive", action="store_true", help="the notes' flawed model (naive_boss_worker.py)"
        )
        parser.add_argument(
            "--queue-size", type=int, default=64, help="--naive: bound of the shared fd queue"
        )

    def __init__(self, args: argparse.Namespace, broker: Broker | None = None) -> None:
        super().__init__(args, broker)
        self.core_lock = TimedLock(self.telemetry)
        self.stopping = False
        self.owner: dict[Connection, Worker] = {}  # who may write to a connection's socket
        self.workers = [Worker(self, index) for index in range(1, args.workers + 1)]
        self.next_worker = 0

    def route_dirty(self, caller: Worker | None) -> None:
        """With the lock held: hand each dirty connection to its owner, waking the others."""
        for connection in self.broker.drain_dirty():
            owner = self.owner.get(connection)
            if owner is not None:
                owner.to_flush.add(connection)
                if owner is not caller:
                    owner.poke()

    def add_connection(self, sock: socket.socket, peer: str) -> int:
        """Boss side: no core call here, just a hand-off to the next worker, round robin."""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        worker = self.workers[self.next_worker]
        self.next_worker = (self.next_worker + 1) % len(self.workers)
        fd = sock.fileno()
        if self.telemetry:  # before the hand-off, so 'accept' always precedes the worker's 'conn'
            self.telemetry.emit("accept", fd=fd, peer=peer)
            self.telemetry.emit("queue", depth=len(worker.inbox) + 1, worker=worker.name)
        worker.inbox.append((sock, peer))  # the peer as accept() saw it: it may reset before adoption
        worker.poke()
        return fd

    def start_threads(self) -> None:
        name_this_thread("boss")
        start_named([worker.thread for worker in self.workers])

    def serve_forever(self) -> None:
        boss_epoll = select.epoll()
        boss_epoll.register(self.listen_fd, select.EPOLLIN | select.EPOLLET)
        while True:
            with self.core_lock.held("boss"):  # timers: keepalive expiry and $SYS
                deadline = self.broker.tick(time.monotonic())
                self.route_dirty(None)
            timeout = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            if boss_epoll.poll(timeout):
                while self.accept_one():  # edge-triggered listener: accept until EAGAIN
                    pass
            if self.telemetry:
                self.telemetry.flush()

    def shutdown(self) -> None:
        self.stopping = True
        for worker in self.workers:
            worker.poke()
            if worker.thread.is_alive():
                worker.thread.join(timeout=5)
            for fd in list(worker.connections):
                worker.close(fd, "server shutting down")
        self.listener.close()
        if self.telemetry:
            self.telemetry.close()


def pick_model(args: argparse.Namespace) -> type[BaseServer]:
    return NaiveServer if args.naive else ThreadedServer


if __name__ == "__main__":
    sys.exit(main(ThreadedServer, __doc__.splitlines()[0], pick=pick_model))
