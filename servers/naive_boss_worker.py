"""The notes' boss/worker C server, flaws included: ``--naive`` keeps its shape, ``--blocking`` its failure.

The boss waits for readable sockets and, holding the one mutex (also across ``accept``),
pushes them onto a bounded queue; a condition variable wakes a worker. The worker takes the
same mutex, dequeues, does the ``recv`` and handles the packets before it lets go, so only
one thread does I/O at a time and the others queue on the mutex. Telemetry's ``lock`` events
show it: hold times include the ``recv`` (``across_recv`` is true).

``--naive`` (``NaiveServer``) differs from the C original in two ways, both noted where they
happen: its recv was blocking (here the socket is non-blocking, but epoll said it is
readable, so recv returns at once either way), and it mixed up which condition variable
means "not empty" and which "not full". Here each is signalled correctly, so the lesson is
the lock's cost, not a hang.

``--blocking`` (``BlockingServer``) keeps what makes the C server fail: blocking sockets, and
each accepted socket pushed onto the queue at once, so a worker reads its first bytes with a
blocking read while it holds the mutex. A client that connects and sends nothing stops every
thread until it speaks, closes, or ``--connect-timeout`` passes (field notes §7).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import select
import socket
import struct
import threading
import time
from collections import deque

from mqtt.broker import Broker

from .common import BaseServer
from .threading_tools import NamedThread, TimedLock, name_this_thread, start_named

CLIENT_FLAGS = select.EPOLLIN | select.EPOLLONESHOT  # one hand-off per readiness until re-armed


class NaiveServer(BaseServer):
    variant = "threaded_boss_worker"
    mode = "naive"

    def __init__(self, args: argparse.Namespace, broker: Broker | None = None) -> None:
        super().__init__(args, broker)
        self.timed = TimedLock(self.telemetry)  # for its telemetry; the flaw needs the bare mutex
        self.mutex = self.timed.lock
        self.not_empty = threading.Condition(self.mutex)
        self.not_full = threading.Condition(self.mutex)
        self.ready_fds: deque[tuple[int, int]] = deque()  # (fd, events) handed from boss to workers
        self.queue_size = args.queue_size
        self.stopping = False
        self.epoll = select.epoll()
        self.epoll.register(self.listen_fd, select.EPOLLIN)
        self.workers = [
            NamedThread(f"worker-{index}", functools.partial(self.work, f"worker-{index}"))
            for index in range(1, args.workers + 1)
        ]

    # Interest hooks used by BaseServer's helpers; all run with the mutex held.
    def watch(self, fd: int) -> None:
        self.epoll.register(fd, CLIENT_FLAGS)

    def unwatch(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)

    def set_write_interest(self, fd: int, wanted: bool) -> None:
        self.rearm(fd)

    def rearm(self, fd: int) -> None:
        flags = CLIENT_FLAGS | select.EPOLLOUT if fd in self.writing else CLIENT_FLAGS
        with contextlib.suppress(OSError):  # closed meanwhile
            self.epoll.modify(fd, flags)

    def start_threads(self) -> None:
        name_this_thread("boss")
        start_named(self.workers)

    def serve_forever(self) -> None:
        while True:
            with self.mutex:
                deadline = self.broker.tick(time.monotonic())
                self.flush_dirty()
            timeout = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            ready = self.epoll.poll(timeout)
            asked = time.monotonic()
            with self.mutex:  # FLAW: held across accept and while queueing
                acquired = time.monotonic()
                for fd, events in ready:
                    if fd == self.listen_fd:
                        self.accept_one()
                        continue
                    self.hand_off(fd, events)
                self.report("boss", acquired - asked, time.monotonic() - acquired)
            if self.telemetry:
                self.telemetry.flush()

    def work(self, name: str) -> None:
        while not self.stopping:
            try:
                self.take_one(name)
            except Exception as error:  # keep the worker alive: a dead one serves nobody
                with self.mutex:
                    self.broker.contain(None, error)

    def take_one(self, name: str) -> None:
        """Wait for a ready fd from the boss and handle it, all with the mutex held."""
        asked = time.monotonic()
        with self.mutex:
            lock_wait = time.monotonic() - asked
            taken = self.take_ready()
            if taken is None:
                return
            acquired = time.monotonic()
            fd, events = taken
            self.holding(name, fd)
            self.handle_ready([(fd, events)])  # FLAW: recv and packet handling with the mutex held
            self.flush_dirty()  # ... and every send too
            if fd in self.connections:
                self.rearm(fd)
            # The condition wait between lock_wait and acquired was neither: say when it asked.
            self.report(name, lock_wait, time.monotonic() - acquired, asked)

    def hand_off(self, fd: int, events: int) -> None:
        """Boss side, mutex held: queue a ready fd for the workers, waiting while the queue is full."""
        while len(self.ready_fds) >= self.queue_size:
            self.not_full.wait()
        self.ready_fds.append((fd, events))
        self.not_empty.notify()

    def take_ready(self) -> tuple[int, int] | None:
        """Worker side, mutex held: the next queued fd, or None after half a second without one."""
        while not self.ready_fds and not self.stopping:
            self.not_empty.wait(timeout=0.5)  # releases the mutex while idle
        if not self.ready_fds:
            return None
        taken = self.ready_fds.popleft()
        self.not_full.notify()
        return taken

    def holding(self, thread: str, fd: int) -> None:
        """Worker side, mutex held, before handling ``fd``: the reads here never wait, nothing to say."""

    def report(self, thread: str, wait_s: float, hold_s: float, asked: float | None = None) -> None:
        if self.telemetry:
            self.timed.report(thread, wait_s, hold_s, across_recv=True, asked=asked)
            self.telemetry.emit("queue", depth=len(self.ready_fds))

    def shutdown(self) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.is_alive():
                worker.join(timeout=5)
        with self.mutex:
            super().shutdown()


class BlockingServer(NaiveServer):
    """``--blocking``: the C server's blocking reads and writes, and its queue of new sockets.

    What the boss queues: an accepted socket at once (as the C boss did, before the client
    has sent a byte), then, once that first read is done, the fd again each time epoll reports
    it readable. Sockets stay in blocking mode, so a worker's read of a socket that has sent
    nothing waits in the kernel, mutex held, and nobody else can take the mutex: not the other
    workers, not the boss that would queue their sockets or run the timers.

    One difference from the C boss, which slept in ``accept`` holding the mutex: with MQTT's
    long-lived connections that would stop every worker until the next client arrived, so this
    boss sleeps in ``epoll_wait`` without it and takes it for the ``accept`` (a blocking call
    here too, which returns at once because epoll said a connection is waiting) and the push.
    """

    mode = "blocking"

    def __init__(self, args: argparse.Namespace, broker: Broker | None = None) -> None:
        super().__init__(args, broker)
        self.listener.setblocking(True)  # as in the C server; epoll says when accept will not wait
        # Accepted and queued, not yet read, so not yet in the boss's epoll: a worker's first
        # read of one of these is the read that can wait for ever.
        self.fresh: set[int] = set()
        # The core's connect timeout is a timer the boss runs, and it cannot run while a worker
        # sleeps in read holding the mutex: the kernel enforces it instead (SO_RCVTIMEO).
        seconds = args.connect_timeout if 0 < args.connect_timeout < 1e9 else 0.0  # 0: no timeout
        self.receive_timeout = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))

    def add_connection(self, sock: socket.socket, peer: str) -> int:
        """Boss side, mutex held: open the connection in the core and queue the socket at once."""
        sock.setblocking(True)  # every read and write waits until it can be done
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.receive_timeout)
        fd = sock.detach()
        self.connections[fd] = self.broker.open(peer, tag=fd)
        self.fresh.add(fd)
        if self.telemetry:
            self.telemetry.emit("accept", fd=fd, peer=peer)
        self.hand_off(fd, select.EPOLLIN)  # FLAW: queued before it has sent a byte
        return fd

    # FLAW 3, kept: the C code's names say the opposite of what they wait for. The boss waits on
    # ``not_empty`` for room and signals ``not_full`` for work; the workers do the reverse. Each
    # wait is paired with the signal that wakes it, so the mix-up costs the reader, not a hang.
    def hand_off(self, fd: int, events: int) -> None:
        while len(self.ready_fds) >= self.queue_size:
            self.not_empty.wait()
        self.ready_fds.append((fd, events))
        self.not_full.notify()

    def take_ready(self) -> tuple[int, int] | None:
        while not self.ready_fds and not self.stopping:
            self.not_full.wait(timeout=0.5)
        if not self.ready_fds:
            return None
        taken = self.ready_fds.popleft()
        self.not_empty.notify()
        return taken

    def holding(self, thread: str, fd: int) -> None:
        """Before the first read of a new socket, which may wait for ever: announce the hold."""
        if self.telemetry and fd in self.fresh:
            self.timed.announce(thread, fd)

    def on_readable(self, fd: int) -> None:
        """FLAW 2: a blocking read, mutex held. A new socket's first read waits for its first bytes."""
        if self.read_once(fd) == 0 and fd in self.fresh:
            # EAGAIN from a blocking socket: SO_RCVTIMEO ran out before the client sent a byte.
            self.close_connection(fd, f"no CONNECT within {self.args.connect_timeout:g} s")

    def rearm(self, fd: int) -> None:
        """After its first read a new socket joins the boss's epoll; the others are re-armed."""
        if fd in self.fresh:
            self.fresh.discard(fd)
            flags = CLIENT_FLAGS | select.EPOLLOUT if fd in self.writing else CLIENT_FLAGS
            with contextlib.suppress(OSError):
                self.epoll.register(fd, flags)
            return
        super().rearm(fd)

    def close_connection(self, fd: int, reason: str) -> None:
        self.fresh.discard(fd)
        super().close_connection(fd, reason)

    def shutdown(self) -> None:
        self.stopping = True
        for fd in list(self.fresh):
            # A worker may be asleep in read on it, mutex held: end that read (it returns 0).
            with contextlib.suppress(OSError):
                view = socket.socket(fileno=fd)
                try:
                    view.shutdown(socket.SHUT_RD)
                finally:
                    view.detach()
        super().shutdown()
