"""Process plumbing every server variant shares, so a variant's file holds only its I/O loop.

Here: the command line, the core, the listening socket, the fd limit, the EMFILE spare-fd
guard, accept, telemetry, the fault log, the readiness line and clean shutdown. What one
event loop owns (its connections, read buffer, read/write/close and the fault barrier) is in
loop.py; ``BaseServer`` *is* such a loop for the single-threaded variants. A variant
subclasses it and supplies ``serve_forever`` plus three hooks that say how it watches an fd:
``watch``, ``unwatch`` and ``set_write_interest``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from mqtt.broker import Broker
from mqtt.connection import Connection
from mqtt.limits import Limits

from .faults import FaultLog
from .listener import SpareFd, open_listener, peer_name, raise_fd_limit
from .loop import EVENT_READ as EVENT_READ  # re-exported for the variants
from .loop import EVENT_WRITE as EVENT_WRITE
from .loop import Loop
from .telemetry import FLUSH_INTERVAL, TelemetryEmitter

log = logging.getLogger("server")


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
    sends = parser.add_mutually_exclusive_group()
    sends.add_argument(
        "--writev", action="store_true", help="send with writev (scatter/gather), not join+write"
    )
    sends.add_argument(
        "--send-per-packet",
        action="store_true",
        help="teaching switch (lab 09): one write per queued MQTT packet, not one per connection",
    )
    parser.add_argument(
        "--fresh-buffer",
        action="store_true",
        help="teaching switch (lab 14): a new buffer per recv instead of the one reused buffer",
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
        ("max_payload", "payload bytes; a longer PUBLISH is acked and dropped (0 = no limit)"),
        ("max_keepalive", "longest keepalive a client may ask for; longer gets CONNACK 0x02"),
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
        "--slow-client-grace",
        type=float,
        default=defaults.slow_client_grace,
        help="seconds a congested client may keep losing messages before it is reset "
        f"(default {defaults.slow_client_grace:g})",
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
        max_payload=args.max_payload,
        max_keepalive=args.max_keepalive,
        slow_client_grace=args.slow_client_grace,
    )


class BaseServer(Loop):
    """Process plumbing around the loop it is; the subclass owns the wait."""

    def __init__(self, args: argparse.Namespace, broker: Broker | None = None) -> None:
        """``broker``: the core to drive; by default one built from the limits in ``args``."""
        self.args = args
        self.fd_limit = raise_fd_limit()
        broker = broker or Broker(clock=time.monotonic, limits=limits_from_args(args))
        self.faults = FaultLog(log)
        broker.on_fault = self.faults.report
        self.listener = open_listener(args.host, args.port, args.backlog, args.reuseport)
        self.port = self.listener.getsockname()[1]
        self.listen_fd = self.listener.fileno()
        telemetry = TelemetryEmitter(self.port) if args.telemetry else None
        super().__init__(broker, telemetry, args.read_chunk, args.writev)
        self.use_io_modes(args.fresh_buffer, args.send_per_packet)
        self.spare = SpareFd()
        self.refused = 0
        self.now = 0.0  # the clock at the end of the last turn (see tick)
        if args.verbose or telemetry:
            broker.on_connected = self._announce

    def serve_forever(self) -> None:
        raise NotImplementedError

    def start_threads(self) -> None:
        """A threaded variant starts its threads here, before it announces that it listens."""

    def accept_ready(self) -> None:
        """The listener is readable: accept one; a level-triggered wait reports it again if more wait."""
        self.accept_one()

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
        fd = self.adopt(sock, peer)
        if self.telemetry:
            self.telemetry.emit("accept", fd=fd, peer=peer)
        return fd

    def refuse(self, reason: str) -> None:
        self.refused += 1
        log.warning("refused a connection: %s", reason)
        if self.telemetry:
            self.telemetry.emit("refuse", reason=reason, total=self.refused)

    def _announce(self, connection: Connection) -> None:
        fd = connection.tag  # the loops tag each connection with its fd
        log.info("connect fd=%d peer=%s client_id=%s", fd, connection.peer, connection.client_id)
        if self.telemetry:
            self.telemetry.emit("conn", fd=fd, peer=connection.peer, client_id=connection.client_id)

    # -- time --------------------------------------------------------------------------------

    def tick(self) -> float | None:
        """Step 7: the core's timers, if one is due; return the next wait timeout (None = forever).

        The turn's one clock read is here, at its end, so the timeout counts from now. Most
        turns are a message or two and no timer is due: they skip the core's tick (and the
        flush after it) by comparing one float with ``broker.next_deadline``.
        """
        self.now = now = time.monotonic()
        broker = self.broker
        if now >= broker.next_deadline:
            broker.tick(now)
            self.flush_dirty()  # a timer may have closed a connection or published $SYS
        deadline = broker.next_deadline
        timeout = None if deadline == math.inf else max(0.0, deadline - now)
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
        self.close_all("server shutting down")
        self.listener.close()
        if self.telemetry:
            self.telemetry.close()


def _raise_shutdown(signum: int, frame: object) -> None:
    raise Shutdown(signal.Signals(signum).name)


def install_stop_signals() -> None:
    """SIGINT and SIGTERM unwind the loop from inside its wait (see ``Shutdown``)."""
    signal.signal(signal.SIGINT, _raise_shutdown)
    signal.signal(signal.SIGTERM, _raise_shutdown)


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
    install_stop_signals()
    try:
        broker = broker_factory(limits_from_args(args)) if broker_factory is not None else None
        server = server_class(args, broker)
    except Shutdown:
        return 0  # stopped while still starting: nothing to clean up yet
    return server.run()
