"""The full broker: the level-triggered epoll loop, plus what a mosquitto.conf asks for.

Nothing here changes how the loop waits, reads or writes: ``servers/epoll_lt.py`` does that.
This class plugs in the rest at the loop's hooks:

- ``before_output``: the store commits the turn's state changes in one transaction (group
  commit) before any byte of the turn is sent, so no PUBACK, PUBREC, PUBREL, PUBCOMP or
  forwarded PUBLISH leaves before the state it stands for is durable;
- ``handle_ready``: extra listeners, the signal wake-up pipe and bridge sockets share the
  epoll set with the clients;
- ``flush_foreign``: a bridge's in-process connection is flushed to its remote socket;
- ``add_connection``: ``max_connections`` refuses at accept, not after a CONNECT that may
  never come;
- signals: SIGHUP reloads the password and ACL files, SIGUSR1 commits and checkpoints the
  store, SIGTERM/SIGINT stop gracefully (store committed, sockets closed, exit 0).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import logging
import os
import select
import signal
import socket
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, TextIO

from mqtt.broker import Broker
from mqtt.connection import Connection
from mqtt.limits import Limits
from mqtt.policy import Policy
from servers.common import Shutdown
from servers.listener import open_listener, peer_name

from .access import FilePolicy
from .bridge import BridgeSet
from .broker_log import NOTICE, closed_line, connected_line
from .config import Config
from .store import SqliteStore

log = logging.getLogger("broker")

UNLIMITED = 1 << 62  # mosquitto's 0 ("no limit") for a queue bound


def limits_from_config(config: Config, flags: Limits, explicit: set[str]) -> Limits:
    """The config file's values, except where a command-line flag was given explicitly."""
    from_file = {
        "max_inflight": config.max_inflight_messages or 65535,
        "max_queued_messages": config.max_queued_messages or UNLIMITED,
        "max_queued_bytes": config.max_queued_bytes or UNLIMITED,
        "max_payload": config.message_size_limit,
        "max_keepalive": config.max_keepalive,
        "sys_interval": config.sys_interval,
        "session_expiry": config.persistent_client_expiration or 0.0,
    }
    chosen = {name: value for name, value in from_file.items() if name not in explicit}
    # max_connections is enforced at accept instead (see add_connection), so the core's is off.
    return dataclasses.replace(flags, max_connections=0, **chosen)


def build_policy(config: Config) -> Policy:
    """The open default when nothing restricts access: its per-message checks are skipped."""
    anonymous = config.anonymous_allowed()
    if anonymous and config.password_file is None and config.acl_file is None:
        return Policy()
    return FilePolicy(anonymous, config.password_file, config.acl_file, log)


class FullBroker:
    """A mixin for an epoll loop class (``servers/broker.py`` picks one): ``FullBroker, EpollLevelServer``."""

    core_class: ClassVar[type[Broker]] = Broker  # a test may inject a core that fails on purpose

    def __init__(self, args: argparse.Namespace, config: Config, limits: Limits) -> None:
        self.config = config
        self.policy = build_policy(config)
        self.store: SqliteStore | None = None
        self.store_failed = False
        store_path = config.store_path
        if store_path is not None:
            self.store_lock = lock_store(store_path)
            self.store, state = SqliteStore.open(
                store_path,
                log,
                config.persistent_client_expiration,
                autosave_interval=config.autosave_interval or None,
            )
        broker = self.core_class(clock=time.monotonic, limits=limits, policy=self.policy, store=self.store)
        if self.store is not None:
            broker.restore(state)
        super().__init__(args, broker)
        self.max_connections = config.max_connections
        self.extra_listeners: dict[int, socket.socket] = {}
        for listener in config.listeners[1:]:
            extra = open_listener(listener.address or "0.0.0.0", listener.port, args.backlog)
            self.extra_listeners[extra.fileno()] = extra
            self.epoll.register(extra.fileno(), self.listen_flags)
        self.signals = SignalPipe(self.epoll)
        self.bridges = BridgeSet(config.bridges, broker, self.epoll, log)
        if config.connection_messages:
            broker.on_connected = self.log_connected
        self.turn_started = 0.0
        self.longest_turn = 0.0
        self.turns = 0

    # -- the loop's hooks ---------------------------------------------------------------------

    def handle_ready(self, ready: Sequence[tuple[int, int]]) -> None:
        self.turn_started = time.monotonic()
        if self.bridges.active or self.extra_listeners:
            ready = self.bridges.split_ready(list(ready))
            for fd, _ in ready:
                extra = self.extra_listeners.get(fd)
                if extra is not None:
                    self.accept_from(extra)
        super().handle_ready(ready)
        if self.signals.pending:
            self.signals.handle(self)

    def before_output(self) -> None:
        if self.store is None:
            return
        try:
            self.store.commit()  # durable first: only then may this round's bytes leave
        except sqlite3.Error as error:
            # This round's acknowledgements would promise what the disk does not hold (a full
            # disk, an I/O error). Stop before one leaves: clients resend what is unacknowledged.
            log.critical("Error: the store could not commit (%s); stopping before any reply leaves.", error)
            self.store_failed = True
            raise Shutdown("store commit failed") from error

    def flush_foreign(self, connection: Connection) -> None:
        self.bridges.flush(connection)

    def tick(self) -> float | None:
        timeout = super().tick()  # reads the clock: self.now
        if self.turn_started:
            turn = self.now - self.turn_started
            self.turns += 1
            if turn > self.longest_turn:
                self.longest_turn = turn
        if not self.bridges.bridges:
            return timeout  # the usual case: no bridge, nothing more to time
        deadline = self.bridges.tick(self.now)
        if deadline is not None:
            self.flush_dirty()  # a bridge may have queued output (a PINGREQ, a reconnect)
            wait = max(0.0, deadline - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        return timeout

    # -- accept ---------------------------------------------------------------------------------

    def accept_from(self, listener: socket.socket) -> None:
        try:
            sock, address = listener.accept()
        except OSError:
            return  # EAGAIN or a client that gave up: level-triggered, so nothing is missed
        self.add_connection(sock, peer_name(address))

    def add_connection(self, sock: socket.socket, peer: str) -> int:
        if 0 <= self.max_connections <= len(self.connections):
            sock.close()  # at once: a CONNECT may never come, and the slot is what is scarce
            total = self.refused + 1
            self.refuse(f"max_connections {self.max_connections} reached: {peer} closed ({total} so far)")
            return -1
        if self.config.connection_messages and log.isEnabledFor(NOTICE):
            port = sock.getsockname()[1]  # a syscall: only when the line is really written
            log.log(NOTICE, "New connection from %s on port %d.", peer, port)
        return super().add_connection(sock, peer)

    # -- logging in mosquitto's words -----------------------------------------------------------

    def log_connected(self, connection: Connection) -> None:
        if log.isEnabledFor(NOTICE):  # build the line only if a log_type lets it through
            log.log(NOTICE, connected_line(connection))
        if self.telemetry:
            self._announce(connection)

    def log_close(self, fd: int, connection: Connection, reason: str) -> None:
        if self.config.connection_messages and log.isEnabledFor(NOTICE):
            log.log(NOTICE, closed_line(connection, connection.close_reason or reason))
        if self.telemetry:
            super().log_close(fd, connection, reason)

    # -- signals and shutdown -------------------------------------------------------------------

    def reload(self) -> None:
        log.log(NOTICE, "Reloading password and ACL files (SIGHUP).")
        if isinstance(self.policy, FilePolicy):
            self.policy.reload()

    def save(self) -> None:
        if self.store is not None:
            frames, copied = self.store.checkpoint()
            log.log(NOTICE, "Saved the store (SIGUSR1): %d of %d WAL frames copied into %s.",
                    copied, frames, self.store.path)

    def run(self) -> int:
        status = super().run()
        return 1 if self.store_failed else status

    def shutdown(self) -> None:
        self.bridges.close()
        super().shutdown()
        for extra in self.extra_listeners.values():
            extra.close()
        if self.store is not None:
            try:
                self.store.close()
            except sqlite3.Error as error:
                log.critical("Error: the store could not be closed cleanly: %s", error)
        log.log(
            NOTICE,
            "Longest loop turn %.1f ms over %d turns.",
            self.longest_turn * 1000,
            self.turns,
        )


def lock_store(path: Path) -> TextIO:
    """Hold ``PATH.lock`` for the broker's life: two brokers writing one store would corrupt it.

    ``flock`` is released by the kernel when the process dies, ``kill -9`` included, so a crash
    never leaves a stale lock behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        raise StoreInUse(f"the store {path} is in use by {holder}") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"broker pid {os.getpid()}\n")
    lock.flush()
    return lock


class StoreInUse(Exception):
    """Another broker holds the store's lock."""


class SignalPipe:
    """SIGHUP and SIGUSR1 without running broker code inside a signal handler.

    The handler only records the signal; ``signal.set_wakeup_fd`` writes its number to a pipe
    the epoll set watches, so the loop wakes at once and acts between two turns, where no core
    state is half-updated.
    """

    def __init__(self, epoll: select.epoll) -> None:
        self.read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        epoll.register(self.read_end, select.EPOLLIN)
        self.pending: list[int] = []
        for number in (signal.SIGHUP, signal.SIGUSR1):
            signal.signal(number, lambda signum, frame: self.pending.append(signum))

    def handle(self, server: FullBroker) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.read_end, 512)  # drain the wake-up bytes; the list says which signals
        pending, self.pending = self.pending, []
        for signum in pending:
            if signum == signal.SIGHUP:
                server.reload()
            elif signum == signal.SIGUSR1:
                server.save()
