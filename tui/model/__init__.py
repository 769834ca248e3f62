"""Plain-Python state behind the TUI's views, fed in batches; no Textual here.

The collector thread reads telemetry and the kernel sources and hands over a ``Batch``; the
UI thread applies it with ``Model.apply`` and then draws. Tests and snapshot fixtures build a
Model directly from made-up batches, so every view can be checked without a live server.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tui.sources.epoll_fdinfo import EpollInterest
from tui.sources.packet_capture import Segment
from tui.sources.server_process import Liveness
from tui.sources.tcp_states import TcpSocket
from tui.sources.threads import ThreadRow

from .names import FdNames
from .packets import Ladder
from .tcp import TcpTable
from .threads import ThreadLanes
from .waits import WaitLog

EVENTS_PENDING_MAX = 200_000  # telemetry events a paused or busy UI may owe before dropping the oldest
SEGMENTS_PENDING_MAX = 100_000  # captured segments likewise (a long pause during heavy churn)


@dataclass
class Batch:
    """What the collector gathered since the UI last looked. ``None`` means "not sampled"."""

    now: float
    events: list[dict[str, Any]] = field(default_factory=list)
    tcp: list[TcpSocket] | None = None
    threads: list[ThreadRow] | None = None
    threads_at: float = 0.0  # when ``threads`` was sampled: context switches per second need it
    interest: dict[int, list[EpollInterest]] | None = None
    inodes: dict[int, int] | None = None
    segments: list[Segment] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # source -> why it shows nothing ("" = fine)
    dropped_events: int = 0
    dropped_segments: int = 0  # captured, then trimmed here during a long pause: a gap in the ladder
    segments_gap_drops: int = 0  # kernel drops those trimmed segments carried
    segments_gap_until: float = 0.0  # every trimmed segment (and its drops) came before this time
    # source ("tcp", "proc", "threads", "telemetry") -> time.monotonic() of its sample in this batch
    sampled_at: dict[str, float] = field(default_factory=dict)
    tcp_wall: float | None = None  # time.time() of the ``tcp`` sample: to compare with a kernel dump
    liveness: Liveness | None = None  # the latest probe: process alive? something listening?

    def merge(self, newer: Batch) -> None:
        """Fold a later batch into this one: events accumulate, samples keep the latest."""
        self.now = newer.now
        self.events.extend(newer.events)
        self.dropped_events += newer.dropped_events + _trim(self.events, EVENTS_PENDING_MAX)
        for name in ("tcp", "threads", "threads_at", "interest", "inodes", "tcp_wall", "liveness"):
            if getattr(newer, name) is not None:
                setattr(self, name, getattr(newer, name))
        self.segments.extend(newer.segments)
        self.dropped_segments += newer.dropped_segments
        self.segments_gap_drops += newer.segments_gap_drops
        self.segments_gap_until = max(self.segments_gap_until, newer.segments_gap_until)
        overflow = len(self.segments) - SEGMENTS_PENDING_MAX
        if overflow > 0:  # the ladder is told, so it says "state unknown" rather than guess
            gone, self.segments[:overflow] = self.segments[:overflow], []
            self.dropped_segments += overflow
            self.segments_gap_drops += sum(segment.dropped for segment in gone)
            latest = max(max(segment.t, segment.dropped_until) for segment in gone)
            self.segments_gap_until = max(self.segments_gap_until, latest)
        self.notes.update(newer.notes)
        self.sampled_at.update(newer.sampled_at)


def _trim(items: list[Any], most: int) -> int:
    """Drop the oldest items beyond ``most``; return how many were dropped."""
    overflow = len(items) - most
    if overflow <= 0:
        return 0
    del items[:overflow]
    return overflow


@dataclass(frozen=True, slots=True)
class InterestRow:
    """One fd in an epoll interest set, joined to its client name and its sock_diag row."""

    epfd: int
    tfd: int
    events: int
    inode: int
    label: str
    state: str
    recv_q: int | None  # None: no TCP row (the listener's accept queue is shown as LISTEN)


def _row_of(by_inode: dict[int, TcpSocket], interest: EpollInterest) -> tuple[str, int | None]:
    """(state, Recv-Q) of a watched fd's socket; Recv-Q None for the listener (its accept queue)."""
    row = by_inode.get(interest.inode)
    if row is None:
        return "", None
    return row.state, row.recv_q if row.state != "LISTEN" else None


class JoinedPeers(Mapping[int, str]):
    """fd -> "host:port" of its socket's peer, from /proc (fd -> inode) and sock_diag (inode -> row).

    Looked up lazily: labels fall back to it only for fds telemetry never named (an attach after
    the connections were made), so building all 10,000 strings at every join would be waste."""

    def __init__(self, inodes: dict[int, int], by_inode: dict[int, TcpSocket]) -> None:
        self._inodes, self._by_inode = inodes, by_inode

    def get(self, fd: int, default: str | None = None) -> str | None:  # type: ignore[override]
        """No KeyError raised and caught per miss: most fds asked about have no row any more."""
        row = self._by_inode.get(self._inodes.get(fd, 0))
        if row is None or row.state == "LISTEN":
            return default
        return f"{row.remote[0]}:{row.remote[1]}"

    def __getitem__(self, fd: int) -> str:
        peer = self.get(fd)
        if peer is None:
            raise KeyError(fd)
        return peer

    def __iter__(self) -> Iterator[int]:
        return (fd for fd in self._inodes if fd in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass(frozen=True, slots=True)
class Close:
    t: float
    fd: int
    label: str
    reason: str


class Model:
    """All views' state. Only the UI thread touches it (the collector hands over Batches)."""

    def __init__(self, port: int, pid: int | None = None, variant: str = "") -> None:
        self.port = port
        self.pid = pid
        self.variant = variant
        self.now = 0.0
        self.clock: Callable[[], float] = time.monotonic  # ages on the status line; tests fix it
        self.tcp = TcpTable(port)
        self.ladder = Ladder(port)
        self._forget_process()
        self.closes: deque[Close] = deque(maxlen=100)
        self.refusals: deque[tuple[float, str]] = deque(maxlen=100)
        self.notes: dict[str, str] = {}
        self.events_seen = 0
        self.dropped_events = 0
        self.dropped_segments = 0
        self.capturing = False  # the packet capture child is running
        self.sampled_at: dict[str, float] = {}  # source -> time.monotonic() of the sample shown
        self.tcp_wall: float | None = None  # time.time() of the TCP sample shown
        self.liveness: Liveness | None = None

    def _forget_process(self) -> None:
        """State that belongs to one server process: fd names, waits, threads, interest sets."""
        self.names = FdNames()
        self.waits = WaitLog()
        self.threads = ThreadLanes()
        self.interest: dict[int, list[EpollInterest]] = {}
        self.inodes: dict[int, int] = {}  # fd -> socket inode, from /proc/PID/fd and fdinfo
        self.interest_rows: list[InterestRow] = []
        self._joined: list[tuple[int, EpollInterest]] = []  # (epfd, interest) behind each interest row
        self.stalled: InterestRow | None = None  # unread bytes over two /proc samples in a row
        self._unread_before: set[tuple[int, int]] = set()

    def apply(self, batch: Batch) -> None:
        self.now = batch.now
        if batch.liveness is not None:
            self._follow(batch.liveness)
        renamed: set[int] = set()  # fds whose name an event changed
        for event in batch.events:
            if self._on_event(event):
                renamed.add(event["fd"])
        self.events_seen += len(batch.events)
        self.dropped_events += batch.dropped_events
        self.dropped_segments += batch.dropped_segments
        # The sources hand back the very same objects when nothing changed: then the counts,
        # the sort and the join are skipped, and only the sample time moves (the data is fresh).
        tcp_changed = self._apply_tcp(batch)
        if batch.threads is not None:
            self.threads.update(batch.threads, batch.threads_at or batch.now)
        fds_changed = False
        if batch.inodes is not None and batch.inodes is not self.inodes:
            self.inodes, fds_changed = batch.inodes, True
        if batch.interest is not None and batch.interest is not self.interest:
            self.interest, fds_changed = batch.interest, True
        if batch.dropped_segments:
            self.ladder.skip(batch.dropped_segments, batch.segments_gap_drops, batch.segments_gap_until)
        for segment in batch.segments:
            self.ladder.add(segment)
        self.notes.update(batch.notes)
        self.sampled_at.update(batch.sampled_at)
        if fds_changed or tcp_changed or renamed:
            self._join(rebuild=fds_changed, renamed=renamed)
        if batch.interest is not None:
            self._find_stalled()

    def _apply_tcp(self, batch: Batch) -> bool:
        """Take the batch's sock_diag rows; True if they differ from the rows already shown."""
        if batch.tcp is None:
            return False
        self.tcp_wall = batch.tcp_wall
        changed = batch.tcp is not self.tcp.rows
        self.tcp.update(batch.tcp, batch.sampled_at.get("tcp", batch.now))  # same rows: only the time moves
        return changed

    def _follow(self, liveness: Liveness) -> None:
        """Adopt a newly found server process: the old one's fds and threads mean nothing now."""
        self.liveness = liveness
        if liveness.pid is None or liveness.pid == self.pid:
            self.variant = self.variant or liveness.variant
            return
        if self.pid is not None:
            self._forget_process()
        self.pid, self.variant = liveness.pid, liveness.variant

    def _on_event(self, event: dict[str, Any]) -> bool:
        """Dispatch one telemetry event; True if it changed an fd's name."""
        kind = event.get("k")
        if kind == "wait":
            self.waits.add(event, self.names.generations)
            self.variant = self.variant or event.get("variant", "")
        elif kind in ("accept", "conn", "close"):
            if kind == "close":
                label = event.get("client_id") or event.get("peer", "")
                self.closes.append(Close(event["t"], event["fd"], label, event.get("reason", "")))
            self.names.on_event(event)
            return True
        elif kind == "lock":
            self.threads.on_lock(event)
        elif kind == "acquire":
            self.threads.on_acquire(event)
        elif kind == "queue":
            self.threads.on_queue(event)
        elif kind == "refuse":
            self.refusals.append((event["t"], event.get("reason", "")))
        return False

    def _join(self, rebuild: bool, renamed: set[int]) -> None:
        """fd -> inode -> sock_diag row: the listener's fd, peers of fds telemetry never named, and
        each watched fd's row. Only rows whose socket row or name changed are built again (rows
        the sampler found unchanged are the same objects): at 10,000 fds a full join costs ~20 ms."""
        by_inode = self.tcp.by_inode
        listen_inodes = {row.inode for row in self.tcp.rows if row.state == "LISTEN"}
        listeners = {fd for fd, inode in self.inodes.items() if inode in listen_inodes}
        if listeners != self.names.listeners:
            self.names.listeners, rebuild = listeners, True
        self.names.joined_peers = JoinedPeers(self.inodes, by_inode)  # looked up only for unnamed fds
        if rebuild or len(self._joined) != len(self.interest_rows):
            self._joined = [
                (epfd, interest) for epfd, interests in self.interest.items() for interest in interests
            ]
            self.interest_rows = [self._interest_row(epfd, interest) for epfd, interest in self._joined]
            return
        rows = self.interest_rows
        changed = [
            index
            for index, (row, (_, interest)) in enumerate(zip(rows, self._joined, strict=True))
            if interest.tfd in renamed or _row_of(by_inode, interest) != (row.state, row.recv_q)
        ]
        if changed:
            rows = list(rows)  # a new list: a view holding the old one sees a consistent snapshot
            for index in changed:
                rows[index] = self._interest_row(*self._joined[index])
            self.interest_rows = rows

    def _interest_row(self, epfd: int, interest: EpollInterest) -> InterestRow:
        is_socket = self.inodes.get(interest.tfd) == interest.inode
        state, recv_q = _row_of(self.tcp.by_inode, interest)
        label = self.names.label(interest.tfd) if is_socket else "(not a socket)"
        return InterestRow(epfd, interest.tfd, interest.events, interest.inode, label, state, recv_q)

    def _find_stalled(self) -> None:
        """The watched socket with the most unread bytes that also had some at the last sample.

        Under ET that is the notes' hang: bytes wait in Recv-Q and no new edge will announce them.
        One sample is not enough: data may simply have arrived between a read and the sample.
        """
        unread = {(row.tfd, row.inode): row for row in self.interest_rows if row.recv_q}
        lasting = [row for key, row in unread.items() if key in self._unread_before]
        self.stalled = max(lasting, key=lambda row: row.recv_q or 0, default=None)
        self._unread_before = set(unread)

    def note(self, source: str) -> str:
        """Why ``source`` shows nothing, or ""."""
        return self.notes.get(source, "")
