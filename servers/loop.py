"""One event loop's own state: its connections, its reused read buffer, and how it does I/O.

A ``Loop`` owns the fd -> connection dict of the sockets it watches and one receive buffer
that every read reuses. Like a C server it keeps plain fds, not socket objects: an accepted
socket is ``detach``ed (its 88-byte Python object goes) and the loop reads and writes the fd
with ``readv``/``write``/``writev``, the calls mosquitto makes too. It knows how to take over
an accepted socket, read from it, flush what the core queued, close it (abortively when the
core asks), and contain a bug met on one connection so that only that connection ends. How
it *waits* (select, poll, epoll) is the variant's business: a subclass supplies ``watch``,
``unwatch`` and ``set_write_interest`` and calls ``handle_ready`` and ``flush_dirty`` from
its own loop.

Every core call goes through two seams, so one copy of this code serves every model:
``with self.core:`` around the call (no lock for a single-threaded loop; the core's lock for
a worker thread, taken around core calls only, never around a read or a write), and
``after_core()`` inside it (a worker routes what became dirty to the worker owning it).
On the two hot paths, a read and a write, a single-threaded loop (``threaded`` False) skips
both seams: they are no-ops for it, yet cost about 0.2 µs per call, several times a turn.

Hooks for a subclass, each cheap or a no-op by default: ``before_output`` (start of every
flush round, before any byte of it is sent), ``flush_foreign`` (a dirty connection that is
not one of this loop's sockets) and ``drain_dirty`` (where a round's connections come from).

Two teaching switches swap a hot-path method once, at start-up (``use_io_modes``), so the
default paths test no flag per read or write: ``--fresh-buffer`` reads into a new bytes object
each time (lab 14) and ``--send-per-packet`` writes each queued MQTT packet on its own (lab 09).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from mqtt.broker import Broker
from mqtt.codec import frame_span
from mqtt.connection import Connection
from mqtt.errors import ProtocolError

from .telemetry import TelemetryEmitter

log = logging.getLogger("server")

# epoll's bit values, used by every variant's telemetry so views need one decoder.
EVENT_READ, EVENT_WRITE, EVENT_ERROR, EVENT_HANGUP = 0x001, 0x004, 0x008, 0x010
READABLE = EVENT_READ | EVENT_ERROR | EVENT_HANGUP  # errors and hangups surface through recv

# struct linger {int l_onoff; int l_linger;}: on, zero seconds, the abortive close.
LINGER_ABORT = struct.pack("ii", 1, 0)


class Loop:
    """The connections one event loop watches, and its read, write, close and fault barrier."""

    # No lock by default: a single-threaded loop is the core's only caller. Stateless, so shared.
    core: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    threaded: ClassVar[bool] = False  # True where other threads call the core: take the seams
    listen_fd: int = -1  # the fd whose readiness means "new sockets to take" (see accept_ready)
    variant: ClassVar[str] = "base"
    mode: ClassVar[str] = ""

    def __init__(
        self, broker: Broker, telemetry: TelemetryEmitter | None, read_chunk: int, writev: bool
    ) -> None:
        self.broker = broker
        self.telemetry = telemetry
        self.connections: dict[int, Connection] = {}  # fd -> connection: Python's data.ptr
        self.writing: set[int] = set()  # fds with write interest registered
        # Connections to flush this round besides the core's dirty ones: sockets that drained.
        self.to_flush: list[Connection] = []
        self.read_buffer = bytearray(read_chunk)  # one buffer, reused by every read
        self.read_view = memoryview(self.read_buffer)
        self.read_into = [self.read_buffer]  # readv's list of buffers: ours has one
        self.writev = writev
        self.wait_calls = 0

    def use_io_modes(self, fresh_buffer: bool = False, send_per_packet: bool = False) -> None:
        """The teaching switches, chosen once: an instance attribute shadows the method.

        Off, nothing changes, so the default read and write paths test no flag per call.
        """
        if fresh_buffer:
            self.read_once = self.read_once_fresh  # type: ignore[method-assign]
        if send_per_packet:
            self.write_pending = self.write_pending_per_packet  # type: ignore[method-assign]

    # -- hooks --------------------------------------------------------------------------------

    def watch(self, fd: int) -> None:
        raise NotImplementedError

    def unwatch(self, fd: int) -> None:
        raise NotImplementedError

    def set_write_interest(self, fd: int, wanted: bool) -> None:
        raise NotImplementedError

    def after_core(self) -> None:
        """Called inside ``with self.core`` after each core call; a worker routes dirty connections."""

    def before_output(self) -> None:
        """Start of every flush round, before any byte of it is sent (a store commits here)."""

    def flush_foreign(self, connection: Connection) -> None:
        """A dirty connection that is not one of this loop's open sockets: ignored by default.

        Either a connection driven without a socket of ours (a bridge's in-process one; its
        tag need not be a socket), or a socket this loop closed earlier in the round: closing
        marks a connection dirty, and a closed socket's ``fileno()`` is -1.
        """

    # -- dispatch: what the loop does with a wait's ready list -------------------------------

    def handle_ready(self, ready: Sequence[tuple[int, int]]) -> None:
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
            if events & EVENT_WRITE and connection.backed_up:
                # The send buffer drained. Only a socket whose last send was short waits for
                # that: EPOLLOUT also rides along on every edge of an ET socket that has room
                # (mask 0x5 for a read), which says nothing new. The send itself waits for
                # flush_dirty, like every other, so it comes after before_output().
                self.to_flush.append(connection)
            if events & READABLE:
                try:  # the fault barrier: a bug met on this connection ends only this connection
                    self.on_readable(fd)
                except Exception as error:
                    self.contain(fd, connection, error)

    def accept_ready(self) -> None:
        """``listen_fd`` is readable: a server accepts, a worker adopts what the boss handed it."""

    def on_readable(self, fd: int) -> None:
        """One recv per readiness: level-triggered waits report the fd again while bytes remain."""
        self.read_once(fd)

    # -- taking over a socket, reading ------------------------------------------------------

    def adopt(self, sock: socket.socket, peer: str) -> int:
        """Make an accepted socket this loop's: non-blocking, opened in the core, watched."""
        sock.setblocking(False)  # TCP_NODELAY came with it from the listener (open_listener)
        # From here on the fd is all we keep: the core's tag for it, and the dict's key (one
        # int object for both). Closing it is now our job, in close_connection.
        fd = sock.detach()
        with self.core:
            self.connections[fd] = self.broker.open(peer, tag=fd)
        self.watch(fd)
        return fd

    def read_once(self, fd: int) -> int:
        """One read into the reused buffer; returns bytes read, 0 for EAGAIN, -1 if closed."""
        connection = self.connections[fd]
        try:
            # readv with one buffer: Python has no os.read into a buffer of ours, and readv
            # fills the reused one in place. Outside any lock: it may block a while.
            count = os.readv(fd, self.read_into)
        except BlockingIOError:
            return 0
        except OSError as error:
            self.close_connection(fd, f"recv failed: {error.strerror}")
            return -1
        if count == 0:
            self.close_connection(fd, "peer closed the connection")
            return -1
        if self.threaded:
            with self.core:
                connection.receive(self.read_view[:count])
                self.after_core()
        else:
            connection.receive(self.read_view[:count])
        return count

    def read_once_fresh(self, fd: int) -> int:
        """``--fresh-buffer`` (lab 14): ``read_once`` with a new bytes object per read.

        ``os.read(fd, N)``, like ``sock.recv(N)``, asks malloc for N bytes every call, shrinks
        the block to what arrived and frees it once the core is done with it. At 256 KiB that
        is past glibc's mmap threshold: fresh pages, so minor faults, on every read.
        """
        connection = self.connections[fd]
        try:
            data = os.read(fd, len(self.read_buffer))
        except BlockingIOError:
            return 0
        except OSError as error:
            self.close_connection(fd, f"recv failed: {error.strerror}")
            return -1
        if not data:
            self.close_connection(fd, "peer closed the connection")
            return -1
        if self.threaded:
            with self.core:
                connection.receive(data)
                self.after_core()
        else:
            connection.receive(data)
        return len(data)

    def read_until_eagain(self, fd: int) -> None:
        """Edge-triggered: no new edge comes for bytes already queued, so recv until EAGAIN."""
        connection = self.connections[fd]
        while self.read_once(fd) > 0 and not connection.wants_close:
            pass

    # -- writing ------------------------------------------------------------------------------

    def drain_dirty(self) -> list[Connection]:
        """One flush round's connections: the ones the core made dirty, then sockets that drained.

        A connection may appear twice; its second write finds nothing left, or EAGAIN.
        """
        dirty = self.broker.drain_dirty()
        if not self.to_flush:
            return dirty
        marked, self.to_flush = self.to_flush, []
        marked += dirty  # the core's list is its own: extend ours, never that one
        return marked

    def flush_dirty(self) -> None:
        """Steps 5 and 6 of every loop: write what the core queued, close what wants closing."""
        dirty = self.drain_dirty()
        connections = self.connections
        while dirty:
            self.before_output()
            for connection in dirty:
                tag = connection.tag
                fd = tag if type(tag) is int else -1  # a bridge's connection has no fd of ours
                try:  # the fault barrier, around sent() and the session pump behind it
                    if connections.get(fd) is connection:
                        self.write_pending(fd, connection)
                    else:
                        self.flush_foreign(connection)
                except Exception as error:
                    self.contain(fd, connection, error)
            dirty = self.drain_dirty()  # sent() may refill from a session queue

    def write_pending(self, fd: int, connection: Connection) -> None:
        """One send of everything queued; register write interest only if some is left."""
        if connection.wants_close and connection.abortive:
            self.close_connection(fd, connection.close_reason)  # dropped hard: its output with it
            return
        if connection.output_bytes:
            writev, threaded = self.writev, self.threaded
            if threaded:
                with self.core:  # a worker's neighbours may queue more meanwhile: send what we take
                    output = connection.pending_buffers() if writev else connection.pending()
            else:
                output = connection.pending_buffers() if writev else connection.pending()
            offered = sum(map(len, output)) if writev else len(output)
            try:
                # --writev: the kernel gathers the queued buffers, so nothing is copied to join
                # them. Default: one write of one joined buffer, which is cheaper for many small
                # packets. Either way outside any lock.
                count = os.writev(fd, output) if writev else os.write(fd, output)
            except BlockingIOError:
                count = 0  # EAGAIN: the socket is backed up
            except OSError as error:
                self.close_connection(fd, f"send failed: {error.strerror}")
                return
            if threaded:
                with self.core:
                    connection.sent(count, offered)
                    self.after_core()
            else:
                connection.sent(count, offered)
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

    def write_pending_per_packet(self, fd: int, connection: Connection) -> None:
        """``--send-per-packet`` (lab 09): one ``write`` per queued MQTT packet, the notes' baseline.

        mosquitto wrote packet by packet. A queued buffer may hold several packets
        (a routed run of PUBLISHes), so each is split at its frame boundaries. Takes the queue
        1,024 buffers at a time, so a backlog is not copied whole on every turn, and stops at
        the first short write; what is left goes when EPOLLOUT says the socket drained.
        """
        while connection.output_bytes and not (connection.wants_close and connection.abortive):
            with self.core:
                buffers = connection.pending_buffers()
            offered, written = sum(map(len, buffers)), 0
            try:
                for packet in packets_in(buffers):
                    count = os.write(fd, packet)
                    written += count
                    if count < len(packet):
                        break  # short: the send buffer is full
            except BlockingIOError:
                pass  # EAGAIN: the socket is backed up; ``written`` went
            except OSError as error:
                self.close_connection(fd, f"send failed: {error.strerror}")
                return
            with self.core:
                connection.sent(written, offered)
                self.after_core()
            if written < offered:
                if connection.wants_close:
                    break  # write_pending tries once more, then closes
                # Backed up: write_pending would only try again now and meet EAGAIN.
                if fd not in self.writing:
                    self.writing.add(fd)
                    self.set_write_interest(fd, True)
                return
        Loop.write_pending(self, fd, connection)  # closes, or drops write interest: nothing left to send

    # -- faults and closing -------------------------------------------------------------------

    def contain(self, fd: int, connection: Connection, error: Exception) -> None:
        """The fault barrier: the core ends this one connection (and logs why); close its socket now."""
        with self.core:
            self.broker.contain(connection, error)
            self.after_core()
        if self.connections.get(fd) is connection:
            self.close_connection(fd, connection.close_reason)

    def close_connection(self, fd: int, reason: str) -> None:
        connection = self.connections.pop(fd, None)
        if connection is None:
            return
        with self.core:
            try:
                connection.lost(reason)
            except Exception as error:  # the fault barrier: the socket is closed all the same
                self.broker.contain(connection, error)
            self.after_core()
        self.unwatch(fd)
        self.writing.discard(fd)
        if connection.abortive:
            # SO_LINGER on with a zero timeout: close() sends RST and discards the Send-Q at once.
            # A plain close() would queue a FIN behind the unsent bytes, and against a peer that
            # never reads, the socket would sit in FIN_WAIT_1 holding that memory for minutes.
            with contextlib.suppress(OSError):  # already reset by the peer: nothing to discard
                view = socket.socket(fileno=fd)  # a socket object only to call setsockopt on fd
                try:
                    view.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
                finally:
                    view.detach()  # the fd stays ours: closed just below
        os.close(fd)
        self.log_close(fd, connection, reason)

    def close_all(self, reason: str) -> None:
        for fd in list(self.connections):
            self.close_connection(fd, reason)

    def log_close(self, fd: int, connection: Connection, reason: str) -> None:
        reason = connection.close_reason or reason  # the core's reason is the more precise one
        peer, client_id = connection.peer, connection.client_id
        log.info("disconnect fd=%d peer=%s client_id=%s reason=%s", fd, peer, client_id, reason)
        if self.telemetry:
            self.telemetry.emit("close", fd=fd, peer=peer, client_id=client_id, reason=reason)


def packets_in(buffers: Sequence[bytes]) -> Iterator[memoryview]:
    """Each MQTT frame in the queued buffers, as a view (``--send-per-packet``).

    Framing follows the remaining length (1-4 bytes of 7 bits after the first byte). A buffer's
    front may be the tail of a frame a short write cut, and is then split in the wrong places;
    that changes only how many writes it takes, never the bytes or their order.
    """
    for buffer in buffers:
        view, size, start = memoryview(buffer), len(buffer), 0
        while start < size:
            try:
                span = frame_span(buffer, start, size, size)
            except ProtocolError:  # too long for what is left, or malformed: the rest goes whole
                span = None
            end = min(span[1], size) if span else size  # a frame cut by a short write: the rest
            yield view[start:end]
            start = end
