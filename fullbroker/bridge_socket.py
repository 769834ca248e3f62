"""The client end of a TCP connection inside an event loop: connect, send and receive without blocking.

A server only ever accepts; a bridge *connects*, which is where non-blocking sockets get
interesting. ``connect`` on a non-blocking socket starts the three-way handshake and returns
at once with EINPROGRESS; the socket becomes writable when the handshake ends either way, and
``SO_ERROR`` then says which way. Output waits in a buffer the loop drains whenever the socket
is writable, so a slow remote broker never stalls the loop for anyone else.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

RECV_CHUNK = 64 * 1024


class RemoteSocket:
    """One non-blocking TCP client socket with an output buffer."""

    def __init__(self, family: int, address: Any) -> None:
        self.address = address
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.fd = self.sock.fileno()
        self.write_interest = False  # whether EPOLLOUT is registered for this socket now
        self._out = bytearray()
        try:
            # Non-blocking before connect: a blocking connect would hold the whole loop for a
            # full handshake (or for minutes of SYN retries to a host that does not answer).
            self.sock.setblocking(False)
            # MQTT packets are small and latency-bound: do not let Nagle hold them back.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # connect_ex returns the errno instead of raising. EINPROGRESS is the normal answer
            # of a non-blocking TCP connect: the kernel goes on with the handshake and reports
            # its end as writability. 0 (done already) is possible too, e.g. on some loopbacks.
            result = self.sock.connect_ex(address)
        except OSError:
            self.sock.close()
            raise
        if result not in (0, errno.EINPROGRESS):
            self.sock.close()  # refused at once: no route, no address of that family, ...
            raise OSError(result, os.strerror(result))

    def connect_result(self) -> int | None:
        """After EPOLLOUT/EPOLLERR while connecting: 0 connected, an errno, or None (not yet)."""
        # SO_ERROR holds the outcome of the asynchronous connect (reading it also clears it):
        # ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ... or 0.
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            return error
        try:
            # 0 alone can also mean "still in progress" if this readiness was stale (an event
            # for an earlier socket that had the same fd number): only a connected socket has
            # a peer name.
            self.sock.getpeername()
        except OSError as name_error:
            if name_error.errno == errno.ENOTCONN:
                return None
            return name_error.errno or errno.ECONNABORTED
        return 0

    # -- output -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Bytes buffered and not yet accepted by the kernel."""
        return len(self._out)

    def buffer(self, data: bytes | bytearray | memoryview) -> None:
        self._out += data

    def send_some(self) -> int:
        """One ``send`` of the buffer; how much the kernel took (0: its send buffer is full).

        Raises OSError when the connection is broken (EPIPE, ECONNRESET).
        """
        if not self._out:
            return 0
        try:
            # MSG_NOSIGNAL is implied: Python ignores SIGPIPE, so a peer that went away shows
            # up here as EPIPE instead of killing the process.
            sent = self.sock.send(self._out)
        except BlockingIOError:
            return 0  # EAGAIN: the kernel's send buffer is full; EPOLLOUT says when it is not
        # Deleting from the front of a bytearray is cheap in CPython (it moves a start offset).
        del self._out[:sent]
        return sent

    # -- input --------------------------------------------------------------------------------

    def receive(self) -> bytes | None:
        """One ``recv``: bytes, b"" when the peer closed, None for EAGAIN. Raises on a reset."""
        try:
            # One recv per readiness: level-triggered epoll reports the socket again while
            # bytes remain, so one large read a turn is fair to every other socket.
            return self.sock.recv(RECV_CHUNK)
        except BlockingIOError:
            return None  # a spurious or stale readiness: nothing to read after all

    def close(self) -> None:
        # close(), not shutdown(): unsent kernel data still goes out, and a closed fd leaves
        # every epoll interest set by itself (the owner unregisters first to keep it exact).
        self._out.clear()
        self.sock.close()
