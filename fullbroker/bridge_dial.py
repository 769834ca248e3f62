"""Dialing: from ``host:port`` to a connected TCP socket, while the loop goes on serving others.

Two waits hide in an ordinary blocking ``create_connection``: the name lookup and the TCP
handshake. Here neither blocks. A numeric address needs no lookup; a name is looked up on a
thread that signals an eventfd in the loop's epoll set (``bridge_resolve``). A lookup may
give several addresses (``localhost`` is often ::1 and 127.0.0.1): each is tried in turn, its
handshake run by the kernel while the loop waits, its end reported as writability.
"""

from __future__ import annotations

import os
from typing import Any

from .bridge_remote import Interest, LinkDown
from .bridge_resolve import Candidate, Resolver, numeric_candidates
from .bridge_socket import RemoteSocket


class Dialer:
    """One connection attempt to one ``host:port``; ``owner`` is who epoll events are routed to."""

    def __init__(self, host: str, port: int, interest: Interest, owner: Any) -> None:
        self.host = host
        self.port = port
        self._interest = interest
        self._owner = owner
        self._candidates: list[Candidate] = []
        self._resolver: Resolver | None = None
        self._socket: RemoteSocket | None = None  # the handshake in progress
        self._last_error = ""

    def start(self) -> None:
        """Resolve (a name: on a thread) and start the first handshake; raises LinkDown."""
        candidates = numeric_candidates(self.host, self.port)
        if candidates is None:
            self._resolver = Resolver(self.host, self.port)
            self._interest.watch(self._resolver.fd, self._owner, writable=False)
            return
        self._candidates = candidates
        self._next()

    def owns(self, fd: int) -> bool:
        return (self._resolver is not None and fd == self._resolver.fd) or (
            self._socket is not None and fd == self._socket.fd
        )

    def on_event(self, fd: int) -> RemoteSocket | None:
        """The connected socket once a handshake succeeded, else None; raises LinkDown.

        The socket returned stays registered in epoll (with EPOLLOUT): it is the caller's now.
        """
        resolver = self._resolver
        if resolver is not None and fd == resolver.fd:
            self._resolver = None
            self._interest.unwatch(resolver.fd)  # before take() closes it
            try:
                self._candidates = resolver.take()
            except OSError as error:
                raise LinkDown(str(error)) from None
            self._next()
            return None
        remote = self._socket
        if remote is None or fd != remote.fd:
            return None
        result = remote.connect_result()
        if result is None:
            return None  # a stale readiness: the handshake goes on
        if result:
            self._last_error = self._describe(os.strerror(result), remote.address)
            self._drop_socket()
            self._next()
            return None
        self._socket = None
        return remote

    def cancel(self) -> None:
        """Give up: close the handshake in progress, abandon the lookup."""
        self._drop_socket()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            self._interest.unwatch(resolver.fd)
            resolver.cancel()

    def _next(self) -> None:
        while self._candidates:
            family, address = self._candidates.pop(0)
            try:
                remote = RemoteSocket(family, address)
            except OSError as error:
                self._last_error = self._describe(error.strerror or str(error), address)
                continue
            self._socket = remote
            remote.write_interest = True  # writability is how the kernel reports the handshake's end
            self._interest.watch(remote.fd, self._owner, writable=True)
            return
        raise LinkDown(self._last_error or "no address to connect to")

    def _drop_socket(self) -> None:
        remote, self._socket = self._socket, None
        if remote is not None:
            self._interest.unwatch(remote.fd)  # before close: the fd number may be reused at once
            remote.close()

    def _describe(self, error: str, address: Any) -> str:
        """The error, and which address of a name it was (the caller logs the name and port)."""
        host = address[0]
        if host == self.host:
            return error
        return f"{error} ([{host}]:{self.port})" if ":" in host else f"{error} ({host}:{self.port})"
