"""Plumbing every server variant shares, so a variant's file holds only its I/O loop.

Here: the command line, the listening socket, the fd limit, the EMFILE spare-fd guard,
accept/recv/send helpers around the sans-I/O broker, logging, telemetry and clean shutdown.
A variant subclasses ``BaseServer`` and supplies ``serve_forever`` plus three hooks that say
how it watches an fd: ``watch``, ``unwatch`` and ``set_write_interest``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import ClassVar

from mqtt.broker import Broker
from mqtt.connection import Connection
from mqtt.limits import Limits

from .faults import FaultLog
from .listener import SpareFd, open_listener, peer_name, raise_fd_limit
from .telemetry import FLUSH_INTERVAL, TelemetryEmitter

log = logging.getLogger("server")

# epoll's bit values, used by every variant's telemetry so views need one decoder.
EVENT_READ, EVENT_WRITE, EVENT_ERROR, EVENT_HANGUP = 0x001, 0x004, 0x008, 0x010
READABLE = EVENT_READ | EVENT_ERROR | EVENT_HANGUP  # errors and hangups surface through recv


class Shutdown(BaseException):
    """Raised by the SIGINT/SIGTERM handler to unwind the loop from inside its wait call.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way
    (logging's handlers have one) can swallow it.
    """


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="TCP port; 0 picks a free one")
    parser.add_argument("--backlog", type=int, default=4096, help="listen() backlog")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each connect and disconnect")
    parser.add_argument(
        "--read-chunk",
        type=int,
        default=256 * 1024,
        metavar="BYTES",
        help="size of the reused receive buffer: at most this much per recv",
    )
    parser.add_argument("--telemetry", action="store_true", help="send telemetry to the TUI/labs")
    parser.add_argument(
        "--writev", action="store_true", help="send with sendmsg (scatter/gather), not join+send"
    )
    parser.add_argument(
        "--reuseport", action="store_true", help="SO_REUSEPORT: several processes on one port"
    )
    limits = parser.add_argument_group("limits")
    defaults = Limits()
    for name, help_text in (
        ("max_packet_size", "bytes in one MQTT packet"),
        ("max_connections", "connected clients (0 = unlimited)"),
        ("max_inflight", "outbound QoS 1/2 messages awaiting acknowledgement per client"),
        ("max_queued_messages", "messages queued per session beyond the in-flight window"),
        ("max_queued_bytes", "bytes queued per session"),
        ("max_pending_output", "unsent bytes per connection before QoS 0 messages are dropped"),
        ("max_topic_levels", "levels in a topic or filter; deeper filters get SUBACK 0x80"),
    ):
        limits.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=getattr(defaults, name),
            help=f"{help_text} (default {getattr(defaults, name)})",
        )
    limits.add_argument(
        "--sys-interval",
        type=float,
        default=defaults.sys_interval,
        help="seconds between $SYS publications, 0 = off",
    )
    limits.add_argument(
        "--connect-timeout",
        type=float,
        default=defaults.connect_timeout,
        help=f"seconds a socket may stay open before its CONNECT (default {defaults.connect_timeout:g})",
    )
    limits.add_argument(
        "--queue-qos0",
        action="store_true",
        help="queue QoS 0 messages for offline persistent sessions (mosquitto: off)",
    )
    return parser


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        max_packet_size=args.max_packet_size,
        max_connections=args.max_connections,
        max_inflight=args.max_inflight,
        max_queued_messages=args.max_queued_messages,
        max_queued_bytes=args.max_queued_bytes,
        max_pending_output=args.max_pending_output,
        max_topic_levels=args.max_topic_levels,
        sys_interval=args.sys_interval,
        connect_timeout=args.connect_timeout,
        queue_qos0=args.queue_qos0,
    )


class BaseServer:
    """Shared state and helpers; the subclass owns the loop."""

    variant: ClassVar[str] = "base"
    mode: ClassVar[str] = ""

    def __init__(self, args: argparse.Namespace, broker: Broker | None = None) -> None:
        """``broker``: the core to drive; by default one built from the limits in ``args``."""
        self.args = args
        self.fd_limit = raise_fd_limit()
        self.broker = broker or Broker(clock=time.monotonic, limits=limits_from_args(args))
        self.faults = FaultLog(log)
        self.broker.on_fault = self.faults.report
        self.listener = open_listener(args.host, args.port, args.backlog, args.reuseport)
        self.port = self.listener.getsockname()[1]
        self.listen_fd = self.listener.fileno()
        self.connections: dict[int, Connection] = {}  # fd -> connection: Python's data.ptr
        self.writing: set[int] = set()  # fds with write interest registered
        self.read_buffer = bytearray(args.read_chunk)  # one buffer, reused by every recv_into
        self.read_view = memoryview(self.read_buffer)
        self.send_pending = self.send_gathered if args.writev else self.send_joined
        self.spare = SpareFd()
        self.refused = 0
        self.wait_calls = 0
        self.telemetry = TelemetryEmitter(self.port) if args.telemetry else None
        if args.verbose or self.telemetry:
            self.broker.on_connected = self._announce

    # -- hooks a variant implements -------------------------------------------------------

    def watch(self, fd: int) -> None:
        raise NotImplementedError

    def unwatch(self, fd: int) -> None:
        raise NotImplementedError

    def set_write_interest(self, fd: int, wanted: bool) -> None:
        raise NotImplementedError

    def serve_forever(self) -> None:
        raise NotImplementedError

    def start_threads(self) -> None:
        """A threaded variant starts its threads here, before it announces that it listens."""

    # -- dispatch: what every loop does with its ready list ---------------------------------

    def handle_ready(self, ready: list[tuple[int, int]]) -> None:
        """Steps 2-4 for one wait's ready list of (fd, epoll-style mask)."""
        listen_fd = self.listen_fd
        connections = self.connections
        for fd, events in ready:
            if fd == listen_fd:
                self.accept_ready()
                continue
            connection = connections.get(fd)  # no epoll_data.ptr in Python: look the fd up
            if connection is None:
                continue  # closed earlier in this same batch
            try:  # the fault barrier: a bug met on this connection ends only this connection
                if events & READABLE:
                    self.on_readable(fd)
                if events & EVENT_WRITE and fd in connections:
                    self.write_pending(fd, connection)
            except Exception as error:
                self.contain(fd, connection, error)

    def accept_ready(self) -> None:
        """The listener is readable: accept one; a level-triggered wait reports it again if more wait."""
        self.accept_one()

    def on_readable(self, fd: int) -> None:
        """One recv per readiness: level-triggered waits report the fd again while bytes remain."""
        self.read_once(fd)

    # -- accept ----------------------------------------------------------------------------

    def accept_one(self) -> bool:
        """Accept one connection; False when the backlog is empty (EAGAIN)."""
        try:
            sock, address = self.listener.accept()
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE):
                if not self.spare.shed(self.listener):
                    return False  # nobody was waiting after all: stop accepting for now
                self.refuse(f"out of file descriptors ({os.strerror(error.errno)}): raise ulimit -n")
                return True
            if error.errno in (errno.ECONNABORTED, errno.EPROTO):
                return True  # the client gave up while queued; try the next one
            raise
        self.add_connection(sock, peer_name(address))
        return True

    def add_connection(self, sock: socket.socket, peer: str) -> int:
        sock.setblocking(False)
        # MQTT packets are small and latency-bound: do not let Nagle hold them back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()
        self.connections[fd] = self.broker.open(peer, tag=sock)
        self.watch(fd)
        if self.telemetry:
            self.telemetry.emit("accept", fd=fd, peer=peer)
        return fd

    def refuse(self, reason: str) -> None:
        self.refused += 1
        log.warning("refused a connection: %s", reason)
        if self.telemetry:
            self.telemetry.emit("refuse", reason=reason, total=self.refused)

    # -- read, write, close ---------------------------------------------------------------

    def read_once(self, fd: int) -> int:
        """One recv_into the reused buffer; returns bytes read, 0 for EAGAIN, -1 if closed."""
        connection = self.connections[fd]
        try:
            count = connection.tag.recv_into(self.read_buffer)
        except BlockingIOError:
            return 0
        except OSError as error:
            self.close_connection(fd, f"recv failed: {error.strerror}")
            return -1
        if count == 0:
            self.close_connection(fd, "peer closed the connection")
            return -1
        connection.receive(self.read_view[:count])
        return count

    def write_pending(self, fd: int, connection: Connection) -> None:
        """One send of everything queued; register write interest only if some is left."""
        if connection.output_bytes:
            try:
                connection.sent(self.send_pending(connection))
            except BlockingIOError:
                connection.sent(0)  # EAGAIN: the socket is backed up
            except OSError as error:
                self.close_connection(fd, f"send failed: {error.strerror}")
                return
        if connection.wants_close:
            self.close_connection(fd, connection.close_reason)
            return
        backed_up = connection.output_bytes > 0
        if backed_up != (fd in self.writing):
            if backed_up:
                self.writing.add(fd)
            else:
                self.writing.discard(fd)
            self.set_write_interest(fd, backed_up)

    @staticmethod
    def send_joined(connection: Connection) -> int:
        # One send of one joined buffer: for many small packets, cheaper than gathering them.
        return connection.tag.send(connection.pending())

    @staticmethod
    def send_gathered(connection: Connection) -> int:
        # writev/sendmsg: the kernel gathers the queued buffers, so nothing is copied to join them.
        return connection.tag.sendmsg(connection.pending_buffers())

    def flush_dirty(self) -> None:
        """Steps 5 and 6 of every loop: write what the core queued, close what wants closing."""
        dirty = self.broker.drain_dirty()
        while dirty:
            for connection in dirty:
                fd = connection.tag.fileno()
                if fd >= 0 and self.connections.get(fd) is connection:
                    try:  # the fault barrier, around sent() and the session pump behind it
                        self.write_pending(fd, connection)
                    except Exception as error:
                        self.contain(fd, connection, error)
            dirty = self.broker.drain_dirty()  # sent() may refill from a session queue

    def contain(self, fd: int, connection: Connection, error: Exception) -> None:
        """The fault barrier: the core ends this one connection (and logs why); close its socket now."""
        self.broker.contain(connection, error)
        self.close_connection(fd, connection.close_reason)

    def close_connection(self, fd: int, reason: str) -> None:
        connection = self.connections.pop(fd, None)
        if connection is None:
            return
        try:
            connection.lost(reason)
        except Exception as error:  # the fault barrier: the socket is closed all the same
            self.broker.contain(connection, error)
        self.unwatch(fd)
        self.writing.discard(fd)
        connection.tag.close()
        self.log_close(fd, connection, reason)

    def log_close(self, fd: int, connection: Connection, reason: str) -> None:
        reason = connection.close_reason or reason  # the core's reason is the more precise one
        peer, client_id = connection.peer, connection.client_id
        log.info("disconnect fd=%d peer=%s client_id=%s reason=%s", fd, peer, client_id, reason)
        if self.telemetry:
            self.telemetry.emit("close", fd=fd, peer=peer, client_id=client_id, reason=reason)

    def _announce(self, connection: Connection) -> None:
        fd = connection.tag.fileno()
        log.info("connect fd=%d peer=%s client_id=%s", fd, connection.peer, connection.client_id)
        if self.telemetry:
            self.telemetry.emit("conn", fd=fd, peer=connection.peer, client_id=connection.client_id)

    # -- time --------------------------------------------------------------------------------

    def tick(self) -> float | None:
        """Step 7: run the core's timers; return the next wait timeout in seconds (None = forever)."""
        now = time.monotonic()
        deadline = self.broker.tick(now)
        self.flush_dirty()
        timeout = None if deadline is None else max(0.0, deadline - now)
        if self.telemetry and self.telemetry.flush_if_due(now):
            # Lines are still buffered: come back soon to send them rather than sleep on them.
            timeout = FLUSH_INTERVAL if timeout is None else min(timeout, FLUSH_INTERVAL)
        return timeout

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.start_threads()
            self.announce()
            self.serve_forever()
        except Shutdown:
            pass
        finally:
            self.shutdown()
        return 0

    def announce(self) -> None:
        host, port = self.listener.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        print(
            f"{self.variant}: fd limit {self.fd_limit}. Try it from two other terminals:\n"
            f"  mosquitto_sub -h {host} -p {port} -t test\n"
            f"  mosquitto_pub -h {host} -p {port} -t test -m 123456\n"
            "Ctrl-C stops the server.",
            file=sys.stderr,
            flush=True,
        )

    def shutdown(self) -> None:
        for fd in list(self.connections):
            self.close_connection(fd, "server shutting down")
        self.listener.close()
        if self.telemetry:
            self.telemetry.close()


def _raise_shutdown(signum: int, frame: object) -> None:
    raise Shutdown(signal.Signals(signum).name)


def main(
    server_class: type[BaseServer],
    description: str,
    argv: list[str] | None = None,
    pick: Callable[[argparse.Namespace], type[BaseServer]] | None = None,
    broker_factory: Callable[[Limits], Broker] | None = None,
) -> int:
    """Parse flags (plus the class's ``add_arguments``), install signal handlers, run.

    ``pick`` chooses the class from the parsed flags; ``broker_factory`` builds the core from
    the flags' limits, for a test that hands a server a broker of its own.
    """
    parser = build_parser(description)
    add_arguments = getattr(server_class, "add_arguments", None)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if pick is not None:
        server_class = pick(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGINT, _raise_shutdown)
    signal.signal(signal.SIGTERM, _raise_shutdown)
    try:
        broker = broker_factory(limits_from_args(args)) if broker_factory is not None else None
        server = server_class(args, broker)
    except Shutdown:
        return 0  # stopped while still starting: nothing to clean up yet
    return server.run()
