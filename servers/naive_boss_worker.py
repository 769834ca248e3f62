"""The notes' boss/worker C server, flaws included: ``threaded_boss_worker --naive`` runs this.

The boss waits for readable sockets and, holding the one mutex (also across ``accept``),
pushes them onto a bounded queue; a condition variable wakes a worker. The worker takes the
same mutex, dequeues, does the ``recv`` and handles the packets before it lets go, so only
one thread does I/O at a time and the others queue on the mutex. Telemetry's ``lock`` events
show it: hold times include the ``recv`` (``across_recv`` is true).

Two differences from the C original, both noted where they happen: its recv was blocking
(here the socket is non-blocking, but epoll said it is readable, so recv returns at once
either way), and it mixed up which condition variable means "not empty" and which "not
full", which can leave a worker asleep with work queued. Here each is signalled correctly,
so the lesson is the lock, not a hang.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import select
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
                    while len(self.ready_fds) >= self.queue_size:
                        self.not_full.wait()
                    self.ready_fds.append((fd, events))
                    self.not_empty.notify()
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
            while not self.ready_fds and not self.stopping:
                self.not_empty.wait(timeout=0.5)  # releases the mutex while idle
            if not self.ready_fds:
                return
            acquired = time.monotonic()
            fd, events = self.ready_fds.popleft()
            self.not_full.notify()
            self.handle_ready([(fd, events)])  # FLAW: recv and packet handling with the mutex held
            self.flush_dirty()  # ... and every send too
            if fd in self.connections:
                self.rearm(fd)
            self.report(name, lock_wait, time.monotonic() - acquired)

    def report(self, thread: str, wait_s: float, hold_s: float) -> None:
        if self.telemetry:
            self.timed.report(thread, wait_s, hold_s, across_recv=True)
            self.telemetry.emit("queue", depth=len(self.ready_fds))

    def shutdown(self) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.is_alive():
                worker.join(timeout=5)
        with self.mutex:
            super().shutdown()
