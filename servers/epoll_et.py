"""Edge-triggered epoll: the kernel reports an fd only when its state changes, so drain it.

New compared with epoll_lt: EPOLLET. A wait reports a socket once per arrival of new data,
not while data remains, so the loop must ``recv`` (and the listener must ``accept``) until
EAGAIN, or the rest sits unread until the peer happens to send again. ``--bug read-once``
reproduces the notes' trap: one ``--read-chunk`` per edge, and a request larger than the
chunk stalls. EPOLLOUT is registered once with the rest, so write interest needs no epoll_ctl
at all. Under ET a new EPOLLOUT edge comes when a full send buffer drains, but every edge
reports the whole current mask: a read edge on a socket with room arrives as 0x5 (IN|OUT).
So the OUT bit alone says nothing new; the loop acts on it only for a socket whose last send
was short (``Connection.backed_up``), or every read would be followed by a pointless write.
"""

from __future__ import annotations

import argparse
import select
import sys

from .common import main
from .epoll_lt import EpollLevelServer


class EpollEdgeServer(EpollLevelServer):
    variant = "epoll_et"
    mode = "ET"
    listen_flags = select.EPOLLIN | select.EPOLLET
    client_flags = select.EPOLLIN | select.EPOLLOUT | select.EPOLLET

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--bug",
            choices=["read-once"],
            help="teaching switch: read only one chunk per edge (the notes' ET trap)",
        )

    def set_write_interest(self, fd: int, wanted: bool) -> None:
        pass  # EPOLLOUT is registered for good; handle_ready heeds it only for a backed-up socket

    def accept_ready(self) -> None:
        while self.accept_one():  # one edge may stand for many queued connections
            pass

    def on_readable(self, fd: int) -> None:
        if self.args.bug == "read-once":
            self.read_once(fd)  # BUG (on purpose): bytes beyond one chunk wait for a new edge
            return
        connection = self.connections[fd]
        # No new edge will come for bytes already queued: read until EAGAIN (0) or close (-1).
        while self.read_once(fd) > 0 and not connection.wants_close:
            pass


if __name__ == "__main__":
    sys.exit(main(EpollEdgeServer, __doc__.splitlines()[0]))
