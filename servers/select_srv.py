"""select(): the oldest readiness API, where the interest set is a bitmap rebuilt on every call.

Each call passes fd_set bitmaps for read and write interest; the kernel scans every bit up to
the highest fd, overwrites the sets with the ready ones, and the program scans them again.
A bitmap holds FD_SETSIZE (1024) bits, so an fd of 1024 or more cannot be watched at all:
this server closes such a connection with a clear log line instead of crashing.
"""

from __future__ import annotations

import select
import socket
import sys
import time

from .common import EVENT_READ, EVENT_WRITE, BaseServer, main

FD_SETSIZE = 1024  # glibc's fixed fd_set size; CPython's select() refuses larger fds


class SelectServer(BaseServer):
    variant = "select_srv"
    mode = "select"

    def watch(self, fd: int) -> None:
        pass  # nothing to register: the sets are rebuilt from self.connections every call

    def unwatch(self, fd: int) -> None:
        pass

    def set_write_interest(self, fd: int, wanted: bool) -> None:
        pass  # self.writing, kept by the base class, is the write set

    def add_connection(self, sock: socket.socket, peer: str) -> int:
        fd = sock.fileno()
        if fd >= FD_SETSIZE:
            sock.close()
            self.refuse(
                f"closed {peer}: fd {fd} >= FD_SETSIZE ({FD_SETSIZE}); select() cannot watch it. "
                "Use poll_srv or epoll_lt for more connections."
            )
            return -1
        return super().add_connection(sock, peer)

    def serve_forever(self) -> None:
        timeout = self.tick()
        while True:
            # Rebuilt every call: select() overwrites its arguments with the ready subset.
            read_set = [self.listen_fd, *self.connections]
            write_set = list(self.writing)
            started = time.monotonic() if self.telemetry else 0.0  # the wait's length, for telemetry
            # 1. Wait: the kernel walks every bit up to the highest fd in both sets.
            readable, writable, _ = select.select(read_set, write_set, [], timeout)
            self.wait_calls += 1
            ready = [(fd, EVENT_READ) for fd in readable] + [(fd, EVENT_WRITE) for fd in writable]
            if self.telemetry:
                blocked = time.monotonic() - started
                self.telemetry.emit_wait(
                    self.variant, self.mode, self.wait_calls, blocked, ready, len(read_set)
                )
            self.handle_ready(ready)
            self.flush_dirty()
            timeout = self.tick()


if __name__ == "__main__":
    sys.exit(main(SelectServer, __doc__.splitlines()[0]))
