"""A subscribing generator process: one large ``recv_into`` per readiness, every packet verified.

Each stream (subscriber connection) checks sequence numbers per publisher, so loss, duplicates
and reordering are counted exactly. The process posts its slowest stream's progress to the
flow board, which is what holds the publishers back.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from .clients import ClientOpener, close_all, raise_fd_limit
from .flow import FlowBoard
from .wire import (
    FrameParser,
    LatencySampler,
    PublishLayout,
    RunCheck,
    StreamChecker,
    connect_packet,
    subscribe_packet,
)
from .workers import cpu_seconds, serve

RECEIVE_SIZE = 1 << 20
PUBACK_HEADER = b"\x40\x02"


@dataclass(frozen=True)
class SubscriberJob:
    address: tuple[str, int]
    process_index: int
    streams: int
    layout: PublishLayout
    publisher_ranges: tuple[tuple[int, int], ...]  # publisher ids of each publisher process
    quiet: float = 1.5  # while draining, give up after this long without a new message
    tag: str = "b"
    clean_session: bool = True  # False: a persistent session (qos1-persist)

    @property
    def publishers(self) -> int:
        return self.publisher_ranges[-1][1]


@dataclass
class Stream:
    sock: socket.socket
    checker: StreamChecker
    leftover: bytes = b""
    outbox: bytes = b""  # QoS 1: PUBACKs the socket has not taken yet
    closed: bool = False


def main(job: SubscriberJob, board: FlowBoard, channel: Connection) -> None:
    serve(channel, lambda: Subscriber(job, board, channel).run())


class Subscriber:
    def __init__(self, job: SubscriberJob, board: FlowBoard, channel: Connection) -> None:
        self.job, self.board, self.channel = job, board, channel
        self.parser = FrameParser.for_publish(job.layout)
        self.run_check = RunCheck(job.layout)
        self.buffer = bytearray(RECEIVE_SIZE)
        self.latency = LatencySampler()
        self.seq_index = 2 if job.layout.qos else 1
        self.counts = {"disconnects": 0, "unexpected_packets": 0}
        self.first_ns = self.last_ns = 0
        self.draining = False

    def run(self) -> None:
        raise_fd_limit()
        self.streams = self._open()
        self.epoll = select.epoll()
        self.by_fd = {stream.sock.fileno(): stream for stream in self.streams}
        for fd in self.by_fd:
            self.epoll.register(fd, select.EPOLLIN)
        self.epoll.register(self.channel.fileno(), select.EPOLLIN)
        self.channel.send(("ready", {}))
        self.cpu_start = cpu_seconds()
        self._loop()
        self.channel.send(("result", self._result()))
        close_all([stream.sock for stream in self.streams if not stream.closed])

    def _open(self) -> list[Stream]:
        job = self.job
        base = job.process_index * job.streams
        greetings = [
            connect_packet(f"{job.tag}-sub-{base + index}", clean_session=job.clean_session)
            + subscribe_packet(job.layout.topic, job.layout.qos)  # QoS 1 deliveries are PUBACKed
            for index in range(job.streams)
        ]
        report = ClientOpener(job.address, greetings, acks_expected=2).run()
        if report.failures:
            raise RuntimeError(f"subscriber connections failed: {dict(report.failures)}")
        streams = [Stream(sock, StreamChecker(job.publishers, self.seq_index)) for sock in report.opened]
        for index, extra in report.leftovers.items():
            streams[index].leftover = extra
        return streams

    def _loop(self) -> None:
        channel_fd = self.channel.fileno()
        last_change, delivered = time.monotonic(), -1
        while True:
            for fd, _events in self.epoll.poll(0.02):
                if fd == channel_fd:
                    self.channel.recv()  # ("drain", None): publishers have stopped
                    self.draining = True
                else:
                    self._read(self.by_fd[fd])
            self._post_progress()
            if not self.draining:
                continue
            if self._complete():
                return
            total = self.board.delivered[self.job.process_index]
            if total != delivered:
                delivered, last_change = total, time.monotonic()
            elif time.monotonic() - last_change > self.job.quiet:
                return

    def _read(self, stream: Stream) -> None:
        start = len(stream.leftover)
        self.buffer[:start] = stream.leftover
        try:
            with memoryview(self.buffer) as view:
                received = stream.sock.recv_into(view[start:])
        except BlockingIOError:
            return
        except OSError:
            received = 0
        if not received:
            self._lose(stream)
            return
        now_ns, end = time.monotonic_ns(), start + received
        frames = self.parser.uniform_frames(self.buffer, end)
        if frames and self._take_run(stream, frames, now_ns):
            stream.leftover = bytes(self.buffer[frames * self.parser.frame_size : end])
            return
        parsed = self.parser.parse(self.buffer, end, frames)
        stream.leftover = parsed.leftover
        rows = parsed.rows
        if rows:
            stream.checker.check(rows)
            self.latency.add_rows(rows, now_ns)
            self._note_arrival(now_ns)
            if self.job.layout.qos:
                self._acknowledge(stream, [row[0] for row in rows])
        self.counts["unexpected_packets"] += len(parsed.others)

    def _take_run(self, stream: Stream, frames: int, now_ns: int) -> bool:
        """The fast path: QoS 0 frames that continue one publisher's sequence exactly, checked in C."""
        if self.job.layout.qos:
            return False
        publisher, seq = self.parser.row.unpack_from(self.buffer, 0)[:2]
        checker = stream.checker
        if publisher >= checker.publishers or seq != checker.expected[publisher]:
            return False
        if not self.run_check.matches(self.buffer, frames, publisher, seq):
            return False
        checker.expected[publisher] = seq + frames
        checker.received += frames
        run_check = self.run_check
        self.latency.add_frames(self.buffer, frames, run_check.frame_size, run_check.sent_at, now_ns)
        self._note_arrival(now_ns)
        return True

    def _note_arrival(self, now_ns: int) -> None:
        self.first_ns = self.first_ns or now_ns
        self.last_ns = now_ns

    def _acknowledge(self, stream: Stream, packet_ids: list[int]) -> None:
        stream.outbox += b"".join(PUBACK_HEADER + packet_id.to_bytes(2, "big") for packet_id in packet_ids)
        try:
            written = stream.sock.send(stream.outbox)
        except BlockingIOError:
            written = 0
        except OSError:
            written = len(stream.outbox)  # the read side will notice the loss
        stream.outbox = stream.outbox[written:]

    def _lose(self, stream: Stream) -> None:
        stream.closed = True
        self.counts["disconnects"] += 1
        self.epoll.unregister(stream.sock.fileno())

    def _post_progress(self) -> None:
        streams = self.streams
        self.board.delivered[self.job.process_index] = sum(stream.checker.received for stream in streams)
        counts = [
            min(sum(stream.checker.expected[first:stop]) for stream in streams)
            for first, stop in self.job.publisher_ranges
        ]
        self.board.post_progress(self.job.process_index, counts)

    def _complete(self) -> bool:
        final = self.board.final_sent[: self.job.publishers]
        return all(
            stream.closed
            or all(stream.checker.unique_from(index) >= count for index, count in enumerate(final))
            for stream in self.streams
        )

    def _result(self) -> dict[str, object]:
        final = list(self.board.final_sent[: self.job.publishers])
        live = [stream.checker for stream in self.streams]
        return {
            "streams": len(self.streams),
            "received": sum(checker.received for checker in live),
            "unique": sum(checker.unique_from(index) for checker in live for index in range(len(final))),
            "lost": sum(checker.lost(final) for checker in live),
            "duplicated": sum(checker.duplicated for checker in live),
            "reordered": sum(checker.reordered for checker in live),
            "foreign": sum(checker.foreign for checker in live),
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "latency_ns": list(self.latency.samples),
            "cpu_s": cpu_seconds() - self.cpu_start,
            **self.counts,
        }
