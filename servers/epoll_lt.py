"""Level-triggered epoll: the interest set lives in the kernel, and a wait returns only ready fds.

New compared with poll_srv: ``epoll_ctl`` registers each fd once, so a wait no longer copies
or scans every watched fd; its cost follows activity, not connection count. Level-triggered
means the kernel keeps reporting an fd while it stays readable, so one ``recv`` per readiness
is enough: bytes left behind make the fd ready again on the next ``epoll_wait``.
"""

from __future__ import annotations

import contextlib
import select
import sys
import time

from .common import BaseServer, main


class EpollLevelServer(BaseServer):
    variant = "epoll_lt"
    mode = "LT"
    listen_flags = select.EPOLLIN
    client_flags = select.EPOLLIN | select.EPOLLRDHUP

    def __init__(self, args) -> None:  # type: ignore[no-untyped-def]
        super().__init__(args)
        self.epoll = select.epoll()
        # Registered once; the kernel remembers it until unregister (no per-call copy).
        self.epoll.register(self.listener.fileno(), self.listen_flags)

    def watch(self, fd: int) -> None:
        self.epoll.register(fd, self.client_flags)

    def unwatch(self, fd: int) -> None:
        with contextlib.suppress(OSError):  # already gone
            self.epoll.unregister(fd)

    def set_write_interest(self, fd: int, wanted: bool) -> None:
        # EPOLLOUT only while output is pending: an idle socket is always writable and would
        # otherwise wake every wait for nothing.
        self.epoll.modify(fd, self.client_flags | select.EPOLLOUT if wanted else self.client_flags)

    def on_readable(self, fd: int) -> None:
        self.read_once(fd)  # one recv per readiness: LT tells us again if bytes remain

    def accept_ready(self) -> None:
        self.accept_one()  # one per readiness; LT reports the listener again while the backlog is non-empty

    def serve_forever(self) -> None:
        listen_fd = self.listener.fileno()
        timeout = self.tick()
        while True:
            started = time.monotonic()
            # 1. Wait: the broker's next deadline bounds the sleep (-1 = no deadline).
            ready = self.epoll.poll(-1 if timeout is None else timeout)
            self.wait_calls += 1
            if self.telemetry:
                self.telemetry.emit_wait(
                    self.variant,
                    self.mode,
                    self.wait_calls,
                    time.monotonic() - started,
                    ready,
                    len(self.connections) + 1,
                )
            for fd, events in ready:
                if fd == listen_fd:
                    self.accept_ready()  # 2. accept
                    continue
                connection = self.connections.get(fd)  # no epoll_data.ptr in Python: look it up
                if connection is None:
                    continue
                if events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP):
                    self.on_readable(fd)  # 3-4. read, hand the bytes to the core
                if events & select.EPOLLOUT and fd in self.connections:
                    self.write_pending(fd, connection)
            self.flush_dirty()  # 5-6. write what the core queued, close what wants closing
            timeout = self.tick()  # 7. keepalive, $SYS


if __name__ == "__main__":
    sys.exit(main(EpollLevelServer, __doc__.splitlines()[0]))
