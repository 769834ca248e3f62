"""Turning a bridge's ``address`` into socket addresses without blocking the event loop.

``getaddrinfo`` for a host name may ask DNS and wait seconds; there is no non-blocking form
of it in the standard library. A numeric address needs no lookup at all (``AI_NUMERICHOST``
answers from the string alone, at once), so only a real name costs a thread: the thread does
the one blocking call and then writes to an ``eventfd`` that the loop watches in its epoll set,
so the answer arrives as an ordinary readiness event. The thread touches nothing else.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

Candidate = tuple[int, Any]  # (address family, socket address) to try to connect to


def numeric_candidates(host: str, port: int) -> list[Candidate] | None:
    """The socket address of a numeric host (IPv4 or IPv6), or None if ``host`` is a name."""
    try:
        # AI_NUMERICHOST: parse only, never consult DNS or /etc/hosts, so this cannot block.
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None
    return [(family, address) for family, _, _, _, address in found]


class Resolver:
    """One host name lookup on a daemon thread; ``fd`` becomes readable when it is done."""

    def __init__(self, host: str, port: int) -> None:
        # EFD_NONBLOCK: the loop's read never waits; EFD_CLOEXEC: no child process inherits it.
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.host = host
        self._port = port
        self._lock = threading.Lock()  # orders "thread finished" against "loop gave up"
        self._finished = False
        self._abandoned = False  # the loop no longer wants the answer (and may have closed)
        self._closed = False
        self._result: list[Candidate] = []
        self._error = ""
        # A daemon thread: a lookup stuck on a dead DNS server must not hold up shutdown.
        threading.Thread(target=self._run, name=f"resolve {host}", daemon=True).start()

    def _run(self) -> None:
        try:
            found = socket.getaddrinfo(self.host, self._port, type=socket.SOCK_STREAM)
            result = [(family, address) for family, _, _, _, address in found]
            error = ""
        except OSError as lookup_error:  # socket.gaierror included
            result, error = [], f"cannot resolve {self.host}: {lookup_error}"
        with self._lock:
            self._result, self._error = result, error
            self._finished = True
            if self._abandoned:
                # The loop gave up while we looked; it left the fd open for us so that its
                # number could not be reused by another socket before this thread was done.
                self._close_fd()
                return
            # Wake the loop: the eventfd's counter becomes non-zero, epoll reports EPOLLIN.
            os.eventfd_write(self.fd, 1)

    def take(self) -> list[Candidate]:
        """In the loop, after EPOLLIN on ``fd``: the addresses (raises OSError on failure)."""
        with self._lock:
            self._close_fd()
            result, error = self._result, self._error
        if error or not result:
            raise OSError(error or f"no address for {self.host}")
        return result

    def cancel(self) -> None:
        """The loop gives up on this lookup (link closed); the fd closes once the thread is done."""
        with self._lock:
            self._abandoned = True
            if self._finished:
                self._close_fd()

    def _close_fd(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)
