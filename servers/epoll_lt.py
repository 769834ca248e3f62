"""Level-triggered epoll: the interest set lives in the kernel, and a wait returns only ready fds.

New compared with poll_srv: ``epoll_ctl`` registers each fd once, so a wait no longer copies
or scans every watched fd; its cost follows activity, not connection count. Level-triggered
means the kernel keeps reporting an fd while it stays readable, so one ``recv`` per readiness
is enough: bytes left behind make the fd ready again on the next ``epoll_wait``.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import sys
import time

from mqtt.broker import Broker

from .common import BaseServer, main


class EpollLevelServer(BaseServer):
    variant = "epoll_lt"
    mode = "LT"
    listen_flags = select.EPOLLIN
    client_flags = select.EPOLLIN

    def __init__(self, args: argparse.Namespace, broker: Broker | None = None) -> None:
        super().__init__(args, broker)
        self.epoll = select.epoll()
        # Registered once; the kernel keeps the interest set, so no wait copies it again.
        self.epoll.register(self.listen_fd, self.listen_flags)

    def watch(self, fd: int) -> None:
        self.epoll.register(fd, self.client_flags)

    def unwatch(self, fd: int) -> None:
        # Closing an fd removes it from the epoll set anyway; unregistering first keeps the
        # interest set exact even if another descriptor still shares the open file.
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)

    def set_write_interest(self, fd: int, wanted: bool) -> None:
        # EPOLLOUT only while output is pending: an idle socket is always writable and would
        # otherwise wake every wait for nothing.
        self.epoll.modify(fd, self.client_flags | select.EPOLLOUT if wanted else self.client_flags)

    def serve_forever(self) -> None:
        timeout = self.tick()
        while True:
            started = time.monotonic() if self.telemetry else 0.0  # the wait's length, for telemetry
            # 1. Wait, bounded by the broker's next deadline (-1: none). Returns ready fds only.
            ready = self.epoll.poll(-1 if timeout is None else timeout)
            self.wait_calls += 1
            if self.telemetry:
                blocked = time.monotonic() - started
                self.telemetry.emit_wait(
                    self.variant, self.mode, self.wait_calls, blocked, ready, len(self.connections) + 1
                )
            self.handle_ready(ready)  # 2-4. accept, read, hand the bytes to the core
            self.flush_dirty()  # 5-6. write what the core queued, close what wants closing
            timeout = self.tick()  # 7. keepalive and $SYS


if __name__ == "__main__":
    sys.exit(main(EpollLevelServer, __doc__.splitlines()[0]))
