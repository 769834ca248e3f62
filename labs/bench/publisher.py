"""A publishing generator process: pre-encoded batches, one ``send`` each, flow-controlled.

Publishers run at most ``window`` messages ahead of the slowest subscriber, or at a fixed rate.
QoS 1 publishers also keep at most ``in_flight`` PUBLISHes unacknowledged per connection, and
time every PUBACK round trip.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from .clients import ClientOpener, close_all, raise_fd_limit
from .flow import FlowBoard
from .wire import BatchBuilder, FrameParser, LatencySampler, PublishLayout, connect_packet
from .workers import cpu_seconds, serve

RECEIVE_SIZE = 1 << 18


@dataclass(frozen=True)
class PublisherJob:
    address: tuple[str, int]
    process_index: int
    first_publisher: int
    connections: int
    layout: PublishLayout
    duration: float
    rate: float = 0.0  # messages/s for this process; 0 means as fast as flow control allows
    window: int = 1000  # QoS 0: messages this process may run ahead of the slowest subscriber
    in_flight: int = 0  # QoS 1: unacknowledged PUBLISHes per connection
    batch: int = 256
    tag: str = "b"


@dataclass
class Link:
    """One publisher connection."""

    sock: socket.socket
    publisher_id: int
    next_seq: int = 0
    backlog: bytes = b""  # the tail of a batch the socket would not take yet
    closed: bool = False
    leftover: bytes = b""
    outstanding: dict[int, int] = field(default_factory=dict)  # QoS 1: packet id -> send time (ns)
    next_packet_id: int = 1

    def take_packet_ids(self, count: int, now_ns: int) -> list[int]:
        packet_ids = []
        packet_id, outstanding = self.next_packet_id, self.outstanding
        for _ in range(count):
            while packet_id in outstanding:
                packet_id = packet_id % 65535 + 1
            outstanding[packet_id] = now_ns
            packet_ids.append(packet_id)
            packet_id = packet_id % 65535 + 1
        self.next_packet_id = packet_id
        return packet_ids


def main(job: PublisherJob, board: FlowBoard, channel: Connection) -> None:
    serve(channel, lambda: Publisher(job, board, channel).run())


class Publisher:
    def __init__(self, job: PublisherJob, board: FlowBoard, channel: Connection) -> None:
        self.job, self.board, self.channel = job, board, channel
        self.qos = job.layout.qos
        self.builder = BatchBuilder(job.layout, job.batch)
        self.acks = FrameParser.for_puback()
        self.buffer = bytearray(RECEIVE_SIZE)
        self.rtt = LatencySampler()
        self.counts = {"disconnects": 0, "acked": 0, "ack_duplicates": 0}
        # The least worth a send(): a quarter of the window, so flow control does not shred batches
        # into single messages; QoS 1 tops its in-flight window up as soon as an eighth is free.
        if job.rate:
            self.threshold = 1
        elif self.qos:
            self.threshold = max(1, min(job.batch, job.in_flight // 8))
        else:
            self.threshold = max(1, min(job.batch, job.window // 4))

    def run(self) -> None:
        raise_fd_limit()
        self.links = self._open()
        self.epoll = select.epoll()
        self.by_fd = {link.sock.fileno(): link for link in self.links}
        for fd in self.by_fd:
            self.epoll.register(fd, select.EPOLLIN)
        self.channel.send(("ready", {}))
        self.channel.recv()  # ("go", None)
        self.start, self.cpu_start = time.monotonic(), cpu_seconds()
        self._pump()
        self._finish()
        for link in self.links:
            self.board.final_sent[link.publisher_id] = link.next_seq
        self.channel.send(("result", self._result()))
        self.channel.recv()  # ("close", None)
        close_all([link.sock for link in self.links if not link.closed])

    def _open(self) -> list[Link]:
        job = self.job
        ids = range(job.first_publisher, job.first_publisher + job.connections)
        greetings = [connect_packet(f"{job.tag}-pub-{publisher_id}") for publisher_id in ids]
        report = ClientOpener(job.address, greetings, acks_expected=1).run()
        if report.failures:
            raise RuntimeError(f"publisher connections failed: {dict(report.failures)}")
        return [Link(sock, publisher_id) for sock, publisher_id in zip(report.opened, ids, strict=True)]

    def _pump(self) -> None:
        end = self.start + self.job.duration
        links, turn = self.links, 0
        while (now := time.monotonic()) < end:
            credit = self._credit(now)
            share = -(-credit // len(links)) if self.job.rate else credit  # paced: spread over links
            sent = False
            for _ in range(len(links)):
                link = links[turn]
                turn = (turn + 1) % len(links)
                count = min(credit, share, self.job.batch, self._link_credit(link))
                if count >= self.threshold and not link.backlog and not link.closed:
                    self._send_batch(link, count)
                    credit -= count
                    sent = True
            if sent:
                self._wait(0)
            elif self.qos or self.job.rate:
                # A PUBACK wakes epoll at once (RTTs stay exact); paced runs tick in whole milliseconds.
                self._wait(self._idle_timeout(now))
            elif not self._wait(0):
                # Saturation, window full: epoll_wait counts whole milliseconds, so nap in nanosleep
                # to notice a subscriber's progress within ~0.2 ms instead.
                time.sleep(0.0002)

    def _credit(self, now: float) -> int:
        job = self.job
        credit = job.window - self.board.ahead(job.process_index) if job.window else 1 << 30
        if job.rate:
            credit = min(credit, int(job.rate * (now - self.start)) - self.board.sent[job.process_index])
        return credit

    def _link_credit(self, link: Link) -> int:
        return self.job.in_flight - len(link.outstanding) if self.qos else 1 << 30

    def _idle_timeout(self, now: float) -> float:
        if self.job.rate:  # until the next message is due
            due = (self.board.sent[self.job.process_index] + 1) / self.job.rate
            return max(0.001, min(0.01, due - (now - self.start)))
        return 0.001

    def _send_batch(self, link: Link, count: int) -> None:
        now_ns = time.monotonic_ns()
        view = self.builder.fill(link.publisher_id, link.next_seq, count, now_ns)
        if self.qos:
            self.builder.set_packet_ids(link.take_packet_ids(count, now_ns))
        link.next_seq += count
        self.board.sent[self.job.process_index] += count
        self._write(link, view)

    def _write(self, link: Link, data: memoryview | bytes) -> None:
        try:
            written = link.sock.send(data)
        except BlockingIOError:
            written = 0
        except OSError:
            self._lose(link)
            return
        if written < len(data):  # the socket buffer is full: wait for EPOLLOUT
            link.backlog = bytes(data[written:])
            self.epoll.modify(link.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
        elif link.backlog:
            link.backlog = b""
            self.epoll.modify(link.sock.fileno(), select.EPOLLIN)

    def _wait(self, timeout: float) -> int:
        """Handle socket events (writable backlogs, PUBACKs, disconnects); how many there were."""
        events = self.epoll.poll(timeout)
        for fd, mask in events:
            link = self.by_fd[fd]
            if link.closed:
                continue
            if mask & select.EPOLLOUT and link.backlog:
                self._write(link, link.backlog)
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                self._read(link)
        return len(events)

    def _read(self, link: Link) -> None:
        start = len(link.leftover)
        self.buffer[:start] = link.leftover
        try:
            with memoryview(self.buffer) as view:
                received = link.sock.recv_into(view[start:])
        except BlockingIOError:
            return
        except OSError:
            received = 0
        if not received:
            self._lose(link)
            return
        parsed = self.acks.parse(self.buffer, start + received)
        link.leftover = parsed.leftover
        now_ns = time.monotonic_ns()
        for (packet_id,) in parsed.rows:
            sent_ns = link.outstanding.pop(packet_id, None)
            if sent_ns is None:
                self.counts["ack_duplicates"] += 1
            else:
                self.counts["acked"] += 1
                self.rtt.add(now_ns - sent_ns)

    def _lose(self, link: Link) -> None:
        link.closed = True
        self.counts["disconnects"] += 1
        self.epoll.unregister(link.sock.fileno())

    def _finish(self, quiet: float = 3.0) -> None:
        """Flush every backlog, then (QoS 1) wait for outstanding PUBACKs until quiet."""
        last_change, acked = time.monotonic(), -1
        while time.monotonic() - last_change < quiet:
            pending = [link for link in self.links if not link.closed and (link.backlog or link.outstanding)]
            if not pending:
                return
            if self.counts["acked"] != acked:
                acked, last_change = self.counts["acked"], time.monotonic()
            self._wait(0.01)

    def _result(self) -> dict[str, object]:
        return {
            "sent": {link.publisher_id: link.next_seq for link in self.links},
            "unacked": sum(len(link.outstanding) for link in self.links),
            "unflushed": sum(len(link.backlog) for link in self.links),
            "rtt_ns": list(self.rtt.samples),
            "cpu_s": cpu_seconds() - self.cpu_start,
            **self.counts,
        }
