"""Boss/worker threads: the boss accepts, each worker runs its own epoll loop; one lock guards the core.

New compared with epoll_et: threads. The boss (the main thread) only accepts and hands each
socket to a worker through a queue plus an eventfd wakeup, as in the notes' pstack of the
modified mosquitto. A worker is one more ``Loop`` (loop.py): the single-threaded servers'
read, write, close and fault-barrier code, with the core's lock as its ``core``, so it
``recv``s and ``send``s outside the lock and takes it only around core calls. Fan-out often
makes another worker's connection dirty; then the worker pokes that worker's eventfd, because
only a socket's owner writes to it.

``--naive`` runs the notes' flawed C server instead (see naive_boss_worker.py): one mutex
held across ``accept`` and across every worker's ``recv`` and packet handling. ``--blocking``
runs it with blocking sockets, as the C server had them: one client that connects and says
nothing stops every thread.

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
from .loop import Loop
from .naive_boss_worker import BlockingServer, NaiveServer
from .threading_tools import NamedThread, TimedLock, name_this_thread, start_named

WAKE_INTERVAL = 0.5  # seconds; a worker's longest sleep, so a missed poke cannot stall it for long


class Worker(Loop):
    """One thread, one epoll instance, and the connections handed to it: a Loop of its own."""

    mode = "ET"
    threaded = True

    def __init__(self, server: ThreadedServer, index: int) -> None:
        super().__init__(server.broker, server.telemetry, server.args.read_chunk, server.args.writev)
        self.use_io_modes(server.args.fresh_buffer, server.args.send_per_packet)
        self.server = server
        self.name = f"worker-{index}"
        self.core = server.core_lock.held_by(self.name)  # the lock, around core calls only
        self.epoll = select.epoll()
        self.wakeup = os.eventfd(0, os.EFD_NONBLOCK)  # others write to it to end our epoll_wait
        self.listen_fd = self.wakeup  # handle_ready calls accept_ready when it fires
        self.epoll.register(self.wakeup, select.EPOLLIN)
        self.inbox: deque[tuple[socket.socket, str]] = deque()  # (socket, peer) from the boss
        # Set by whoever writes our eventfd, cleared by us once we have read it: one write per
        # wake-up, however many of our connections another thread made dirty meanwhile.
        self.poked = False
        self.thread = NamedThread(self.name, self.run)

    def poke(self) -> None:
        """Wake this worker (an eventfd write), unless a wake-up is already on its way."""
        if not self.poked:
            self.poked = True
            os.eventfd_write(self.wakeup, 1)

    def run(self) -> None:
        while not self.server.stopping:
            try:
                self.turn()
            except Exception as error:
                # A worker that died would orphan its clients while the process looks alive:
                # whatever escaped the per-connection barrier is logged, and the loop goes on.
                with self.core:
                    self.broker.contain(None, error)

    def turn(self) -> None:
        """One loop turn: wait, adopt new sockets, read, write."""
        started = time.monotonic()
        ready = self.epoll.poll(WAKE_INTERVAL)
        self.wait_calls += 1
        if self.telemetry:
            blocked = time.monotonic() - started
            watched = len(self.connections) + 1
            self.telemetry.emit_wait(
                self.server.variant, self.mode, self.wait_calls, blocked, ready, watched, thread=self.name
            )
        self.handle_ready(ready)
        self.flush_dirty()
        if self.telemetry:  # else this worker's events wait for the boss's next flush (up to 1 s)
            self.telemetry.flush_if_due(time.monotonic())

    def accept_ready(self) -> None:
        """The eventfd fired: the boss handed us sockets, or another thread queued output for ours."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.wakeup)  # reset the counter, or the level-triggered wait repeats it
        # After the read, before this turn's flush: a poke that finds the flag set either came
        # before this point (its connection is flushed below) or follows one that wrote the
        # eventfd after the read (so the next wait returns at once).
        self.poked = False
        while self.inbox:
            sock, peer = self.inbox.popleft()
            self.server.owner[sock.fileno()] = self  # before the core knows it, so routing finds us
            self.adopt(sock, peer)

    def watch(self, fd: int) -> None:
        # Edge-triggered with EPOLLOUT: an edge when a full send buffer drains, no epoll_ctl.
        # (The OUT bit also rides on read edges; handle_ready heeds it only when backed up.)
        self.epoll.register(fd, select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)

    def unwatch(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)

    def set_write_interest(self, fd: int, wanted: bool) -> None:
        pass  # EPOLLOUT is registered for good; handle_ready heeds it only when backed up

    def on_readable(self, fd: int) -> None:
        self.read_until_eagain(fd)

    def after_core(self) -> None:
        self.server.route_dirty(self)  # the core's dirty list is shared: sort it while we hold the lock

    def drain_dirty(self) -> list[Connection]:
        """Our connections that any thread found dirty, plus our sockets that drained."""
        with self.core:
            self.server.route_dirty(self)
            mine, self.to_flush = self.to_flush, []  # others append under the lock, so swap under it
        return mine


class ThreadedServer(BaseServer):
    """The boss: accepts, hands each socket to a worker and runs the timers; its own Loop stays empty."""

    variant = "threaded_boss_worker"
    mode = "ET"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workers", type=int, default=2, help="worker threads (default 2)")
        parser.add_argument(
            "--naive", action="store_true", help="the notes' flawed model (naive_boss_worker.py)"
        )
        parser.add_argument(
            "--blocking",
            action="store_true",
            help="the notes' model with blocking reads under the mutex: a silent client stalls all",
        )
        parser.add_argument(
            "--queue-size", type=int, default=64, help="--naive/--blocking: bound of the shared fd queue"
        )

    def __init__(self, args: argparse.Namespace, broker: Broker | None = None) -> None:
        super().__init__(args, broker)
        self.core_lock = TimedLock(self.telemetry)
        self.core = self.core_lock.held_by("boss")
        self.stopping = False
        # fd -> the worker that owns the socket: only it writes there. An open fd's number is
        # unique in the process, and a reused number is claimed again by the worker that
        # adopts it, so entries never need removing. (A closed connection still tagged with a
        # reused number may reach the wrong worker; its flush finds the fd is not that
        # connection's any more and skips it.)
        self.owner: dict[int, Worker] = {}
        self.workers = [Worker(self, index) for index in range(1, args.workers + 1)]
        self.next_worker = 0

    def after_core(self) -> None:
        self.route_dirty(None)

    def route_dirty(self, caller: Worker | None) -> None:
        """With the lock held: hand each dirty connection to its owner, waking the others."""
        owner_of = self.owner
        for connection in self.broker.drain_dirty():
            owner = owner_of.get(connection.tag)
            if owner is not None:
                owner.to_flush.append(connection)
                if owner is not caller:
                    owner.poke()

    def add_connection(self, sock: socket.socket, peer: str) -> int:
        """Boss side: no core call here, just a hand-off to the next worker, round robin."""
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
            with self.core:  # timers: keepalive expiry and $SYS
                deadline = self.broker.tick(time.monotonic())
                self.after_core()
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
            worker.close_all("server shutting down")
        super().shutdown()  # the listener and telemetry


def pick_model(args: argparse.Namespace) -> type[BaseServer]:
    if args.blocking:
        return BlockingServer
    return NaiveServer if args.naive else ThreadedServer


if __name__ == "__main__":
    sys.exit(main(ThreadedServer, __doc__.splitlines()[0], pick=pick_model))
