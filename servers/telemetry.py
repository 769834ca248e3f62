"""Telemetry schema v1: what a server tells a watcher (the TUI, a lab script), and how.

Transport: datagrams of newline-separated JSON objects sent to the abstract Unix socket
``\\0epoll-mqtt-lab.<port>``. The *consumer* binds that name; the server only sends, never
blocks, and drops lines silently while nobody listens. Each datagram stays under 64 KiB.

Every event has ``v`` (1), ``t`` (monotonic seconds) and ``k`` (kind). Kinds and fields:
  accept  fd, peer                         a socket was accepted
  conn    fd, peer, client_id              its CONNECT completed (lets views name fds)
  close   fd, peer, client_id, reason      the server closed or lost it
  refuse  reason, total                    an accept that could not be kept (EMFILE, FD_SETSIZE);
                                           ``total`` counts them since start
  wait    variant, mode, call, blocked_s,  one wait call: mode is select/poll/LT/ET, ``ready``
          ready [[fd, mask], ...],         the ready list (split across several events, with
          watched, part, parts,            ``part``/``parts``, when long), ``watched`` the fd count;
          thread (threaded variants)       ``thread`` names the worker whose epoll_wait it was
  lock    thread, tid, wait_s, hold_s,     one acquisition of the core's lock, sent on release;
          across_recv, asked (optional)    ``across_recv`` is true when the holder did socket I/O
                                           inside it; ``asked`` (--naive workers) is when the wait
                                           began, if the thread did something else before the hold
  acquire thread, tid, fd                  a hold that may last has begun (--blocking, before the
                                           first read of a new socket); its ``lock`` event follows
  queue   depth                            the boss->worker hand-off queue's depth
Masks use the epoll bit values (EPOLLIN=1, EPOLLOUT=4, EPOLLERR=8, EPOLLHUP=16) for every mode.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

SCHEMA_VERSION = 1
MAX_DATAGRAM = 60_000  # bytes; under the 64 KiB datagram limit with room to spare
READY_PER_EVENT = 2_000  # [fd, mask] pairs per wait event; ~20 bytes each
# A consumer's datagram queue is short (net.unix.max_dgram_qlen is 10 here), so a server doing
# thousands of loop turns a second must batch several turns per datagram: at most one
# datagram per FLUSH_INTERVAL, unless MAX_DATAGRAM bytes pile up first.
FLUSH_INTERVAL = 0.002  # seconds


def socket_name(port: int) -> str:
    """The abstract-namespace address (leading NUL) of a server's telemetry for ``port``."""
    return f"\0epoll-mqtt-lab.{port}"


class TelemetryEmitter:
    """Buffers event lines and sends them as a few datagrams per loop turn (``flush``)."""

    def __init__(self, port: int) -> None:
        self.address = socket_name(port)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)  # a slow watcher must never stall the server
        self.dropped = 0
        self._lock = threading.Lock()  # the threaded variants emit from several threads
        self._lines: list[str] = []
        self._size = 0
        self._last_flush = 0.0

    def emit(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"v": SCHEMA_VERSION, "t": round(time.monotonic(), 6), "k": kind, **fields})
        with self._lock:
            self._lines.append(line)
            self._size += len(line) + 1
            full = self._size >= MAX_DATAGRAM
        if full:
            self.flush()

    def emit_wait(
        self,
        variant: str,
        mode: str,
        call: int,
        blocked_s: float,
        ready: list[tuple[int, int]],
        watched: int,
        thread: str | None = None,
    ) -> None:
        extra = {"thread": thread} if thread else {}
        parts = max(1, -(-len(ready) // READY_PER_EVENT))
        for part in range(parts):
            chunk = ready[part * READY_PER_EVENT : (part + 1) * READY_PER_EVENT]
            self.emit(
                "wait",
                variant=variant,
                mode=mode,
                call=call,
                blocked_s=round(blocked_s, 6),
                ready=chunk,
                watched=watched,
                part=part,
                parts=parts,
                **extra,
            )

    def flush_if_due(self, now: float) -> bool:
        """Flush if FLUSH_INTERVAL has passed since the last flush; True if lines stay buffered."""
        if now - self._last_flush >= FLUSH_INTERVAL:
            self.flush()
        return bool(self._lines)

    def flush(self) -> None:
        with self._lock:
            lines, self._lines, self._size = self._lines, [], 0
            self._last_flush = time.monotonic()
        if not lines:
            return
        datagram: list[str] = []
        size = 0
        for line in lines:
            if size + len(line) + 1 > MAX_DATAGRAM and datagram:
                self._send("\n".join(datagram))
                datagram, size = [], 0
            datagram.append(line)
            size += len(line) + 1
        self._send("\n".join(datagram))

    def _send(self, text: str) -> None:
        try:
            self.socket.sendto(text.encode(), self.address)
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # nobody has bound the name: nobody is watching
        except (BlockingIOError, OSError):
            self.dropped += 1  # the watcher's receive buffer is full: drop rather than block

    def close(self) -> None:
        self.flush()
        self.socket.close()


class TelemetryReader:
    """The consumer side: binds the abstract name and returns decoded events without blocking."""

    def __init__(self, port: int, receive_buffer: int = 4 << 20) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # A bigger buffer absorbs bursts while the consumer is busy drawing.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.socket.bind(socket_name(port))
        self.socket.setblocking(False)

    def fileno(self) -> int:
        return self.socket.fileno()

    def read(self, max_datagrams: int = 1000) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for _ in range(max_datagrams):
            try:
                datagram = self.socket.recv(1 << 16)
            except BlockingIOError:
                break
            events.extend(json.loads(line) for line in datagram.decode().splitlines() if line)
        return events

    def close(self) -> None:
        self.socket.close()
