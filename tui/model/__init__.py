"""Plain-Python state behind the TUI's views, fed in batches; no Textual here.

The collector thread reads telemetry and the kernel sources and hands over a ``Batch``; the
UI thread applies it with ``Model.apply`` and then draws. Tests and snapshot fixtures build a
Model directly from made-up batches, so every view can be checked without a live server.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tui.sources.epoll_fdinfo import EpollInterest
from tui.sources.packet_capture import Segment
from tui.sources.tcp_states import TcpSocket
from tui.sources.threads import ThreadRow

from .names import FdNames
from .packets import Ladder
from .tcp import TcpTable
from .threads import ThreadLanes
from .waits import WaitLog

EVENTS_PENDING_MAX = 200_000  # telemetry events a paused or busy UI may owe before dropping the oldest


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

    def merge(self, newer: Batch) -> None:
        """Fold a later batch into this one: events accumulate, samples keep the latest."""
        self.now = newer.now
        self.events.extend(newer.events)
        overflow = len(self.events) - EVENTS_PENDING_MAX
        if overflow > 0:
            del self.events[:overflow]
            self.dropped_events += overflow
        self.dropped_events += newer.dropped_events
        for name in ("tcp", "threads", "threads_at", "interest", "inodes"):
            if getattr(newer, name) is not None:
                setattr(self, name, getattr(newer, name))
        self.segments.extend(newer.segments)
        self.notes.update(newer.notes)


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
        self.names = FdNames()
        self.waits = WaitLog()
        self.tcp = TcpTable(port)
        self.threads = ThreadLanes()
        self.ladder = Ladder(port)
        self.interest: dict[int, list[EpollInterest]] = {}
        self.inodes: dict[int, int] = {}  # fd -> socket inode, from /proc/PID/fd
        self.interest_rows: list[InterestRow] = []
        self.stalled: InterestRow | None = None  # unread bytes over two /proc samples in a row
        self._unread_before: set[tuple[int, int]] = set()
        self.closes: deque[Close] = deque(maxlen=100)
        self.refusals: deque[tuple[float, str]] = deque(maxlen=100)
        self.notes: dict[str, str] = {}
        self.events_seen = 0
        self.dropped_events = 0
        self.capturing = False  # the packet capture child is running

    def apply(self, batch: Batch) -> None:
        self.now = batch.now
        names_changed = False
        for event in batch.events:
            names_changed |= self._on_event(event)
        self.events_seen += len(batch.events)
        self.dropped_events += batch.dropped_events
        if batch.tcp is not None:
            self.tcp.update(batch.tcp)
        if batch.threads is not None:
            self.threads.update(batch.threads, batch.threads_at or batch.now)
        if batch.inodes is not None:
            self.inodes = batch.inodes
        if batch.interest is not None:
            self.interest = batch.interest
        for segment in batch.segments:
            self.ladder.add(segment)
        self.notes.update(batch.notes)
        sampled = batch.tcp is not None or batch.inodes is not None or batch.interest is not None
        if sampled or names_changed:
            self._join()
        if batch.interest is not None:
            self._find_stalled()

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
        elif kind == "queue":
            self.threads.on_queue(event)
        elif kind == "refuse":
            self.refusals.append((event["t"], event.get("reason", "")))
        return False

    def _join(self) -> None:
        """fd -> inode -> sock_diag row: the listener's fd, peers of fds telemetry never named."""
        by_inode = self.tcp.by_inode
        self.names.listeners = {
            fd for fd, inode in self.inodes.items() if inode in by_inode and by_inode[inode].state == "LISTEN"
        }
        self.names.joined_peers = {
            fd: f"{row.remote[0]}:{row.remote[1]}"
            for fd, inode in self.inodes.items()
            if (row := by_inode.get(inode)) is not None and row.state != "LISTEN"
        }
        rows = []
        for epfd, interests in self.interest.items():
            for interest in interests:
                tcp_row = by_inode.get(interest.inode)
                is_socket = self.inodes.get(interest.tfd) == interest.inode
                rows.append(
                    InterestRow(
                        epfd,
                        interest.tfd,
                        interest.events,
                        interest.inode,
                        self.names.label(interest.tfd) if is_socket else "(not a socket)",
                        tcp_row.state if tcp_row else "",
                        tcp_row.recv_q if tcp_row and tcp_row.state != "LISTEN" else None,
                    )
                )
        self.interest_rows = rows

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
