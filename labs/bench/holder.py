"""A generator process that holds idle MQTT clients open: the ``conn`` and ``idle-scaling`` load.

It opens clients on command (CONNECT with keepalive 900 and a SUBSCRIBE, as in the notes'
stress test), then waits. On ``expect`` it checks that every client received the one final
PUBLISH; on ``close`` it counts the clients the broker dropped meanwhile and closes the rest.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from .clients import ClientOpener, close_all, raise_fd_limit
from .flow import FlowBoard
from .wire import FrameParser, PublishLayout, connect_packet, subscribe_packet
from .workers import serve

KEEPALIVE = 900


@dataclass(frozen=True)
class HolderJob:
    address: tuple[str, int]
    process_index: int
    topic: bytes
    concurrency: int = 128
    tag: str = "b"


@dataclass
class Held:
    sock: socket.socket
    leftover: bytes = b""
    received: int = 0
    bad: int = 0
    closed: bool = False


def main(job: HolderJob, board: FlowBoard, channel: Connection) -> None:
    serve(channel, lambda: Holder(job, board, channel).run())


class Holder:
    def __init__(self, job: HolderJob, board: FlowBoard, channel: Connection) -> None:
        self.job, self.board, self.channel = job, board, channel
        self.held: dict[int, Held] = {}
        self.epoll = select.epoll()
        self.parser = FrameParser.for_publish(PublishLayout(topic=job.topic))
        self.buffer = bytearray(65536)
        self.disconnects = 0

    def run(self) -> None:
        raise_fd_limit()
        self.channel.send(("ready", {}))
        while True:
            command, argument = self.channel.recv()
            if command == "open":
                self.channel.send(("opened", self._open(argument)))
            elif command == "expect":
                self.channel.send(("received", self._expect(argument)))
            else:  # "close"
                self._poll(0)
                self.channel.send(("closed", {"disconnects": self.disconnects}))
                close_all([held.sock for held in self.held.values() if not held.closed])
                return

    def _open(self, count: int) -> dict[str, object]:
        job = self.job
        first = len(self.held)
        greetings = [
            connect_packet(f"{job.tag}-h{job.process_index}-{first + index}", KEEPALIVE)
            + subscribe_packet(job.topic)
            for index in range(count)
        ]
        slot = self.job.process_index

        def progress(opened: int) -> None:
            self.board.opened[slot] = first + opened

        report = ClientOpener(job.address, greetings, 2, job.concurrency, progress=progress).run()
        for sock in report.opened:
            self.held[sock.fileno()] = Held(sock)
            self.epoll.register(sock.fileno(), select.EPOLLIN)
        self.board.opened[slot] = len(self.held)
        return {
            "opened": len(report.opened),
            "failures": dict(report.failures),
            "latencies_ns": report.latencies_ns,
        }

    def _expect(self, timeout: float) -> dict[str, int]:
        """Wait until every live client has received one PUBLISH, or until ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(held.received or held.closed for held in self.held.values()):
                break
            self._poll(0.05)
        self._poll(0.05)  # a duplicate arriving just behind the first copy is still counted
        live = [held for held in self.held.values() if not held.closed]
        return {
            "clients": len(live),
            "received": sum(1 for held in live if held.received),
            "lost": sum(1 for held in live if not held.received),
            "duplicated": sum(max(0, held.received - 1) for held in live),
            "bad": sum(held.bad for held in live),
            "disconnects": self.disconnects,
        }

    def _poll(self, timeout: float) -> None:
        for fd, _events in self.epoll.poll(timeout):
            self._read(self.held[fd])

    def _read(self, held: Held) -> None:
        start = len(held.leftover)
        self.buffer[:start] = held.leftover
        try:
            with memoryview(self.buffer) as view:
                received = held.sock.recv_into(view[start:])
        except BlockingIOError:
            return
        except OSError:
            received = 0
        if not received:
            held.closed = True
            self.disconnects += 1
            self.epoll.unregister(held.sock.fileno())
            return
        parsed = self.parser.parse(self.buffer, start + received)
        held.leftover = parsed.leftover
        held.received += len(parsed.rows)
        held.bad += sum(1 for row in parsed.rows if row[:2] != (0, 0)) + len(parsed.others)
