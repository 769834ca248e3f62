"""poll(): no fd-number limit, but every call still hands the kernel the whole interest list.

New compared with select_srv: one ``pollfd`` array of (fd, events) replaces three bitmaps,
so fds above 1023 are fine and the sets need not be rebuilt by hand. Still, each ``poll()``
copies the entire array into the kernel, which checks every entry and copies it back: the
cost of a call grows with the number of watched connections, idle or not.
"""

from __future__ import annotations

import argparse
import select
import sys
import time

from mqtt.broker import Broker

from .common import BaseServer, main


class PollServer(BaseServer):
    variant = "poll_srv"
    mode = "poll"

    def __init__(self, args: argparse.Namespace, broker: Broker | None = None) -> None:
        super().__init__(args, broker)
        # CPython keeps our registrations in a dict and rebuilds the pollfd array from it
        # whenever it changed; the kernel copies and scans all of it on every call.
        self.poller = select.poll()
        self.poller.register(self.listen_fd, select.POLLIN)

    def watch(self, fd: int) -> None:
        self.poller.register(fd, select.POLLIN)

    def unwatch(self, fd: int) -> None:
        self.poller.unregister(fd)

    def set_write_interest(self, fd: int, wanted: bool) -> None:
        self.poller.modify(fd, select.POLLIN | select.POLLOUT if wanted else select.POLLIN)

    def serve_forever(self) -> None:
        timeout = self.tick()
        while True:
            started = time.monotonic() if self.telemetry else 0.0  # the wait's length, for telemetry
            # 1. Wait: poll() takes milliseconds; the whole array crosses into the kernel again.
            ready = self.poller.poll(None if timeout is None else timeout * 1000)
            self.wait_calls += 1
            if self.telemetry:
                blocked = time.monotonic() - started
                self.telemetry.emit_wait(
                    self.variant, self.mode, self.wait_calls, blocked, ready, len(self.connections) + 1
                )
            self.handle_ready(ready)  # POLLIN/POLLOUT/POLLERR/POLLHUP share epoll's bit values
            self.flush_dirty()
            timeout = self.tick()


if __name__ == "__main__":
    sys.exit(main(PollServer, __doc__.splitlines()[0]))
