"""The TUI's background threads: one drains telemetry, one samples the kernel; both merge batches.

Nothing here runs in the server: telemetry arrives as datagrams the server sends anyway, and
TCP states, threads and epoll interest sets are read from netlink and /proc in this process.
The UI thread calls ``take()`` about ten times a second; bursts in between merge into one
Batch (as toolong merges file updates), so a slow frame never queues a backlog of frames.

Telemetry gets a thread of its own that blocks in select(): the kernel queues only
net.unix.max_dgram_qlen datagrams (often 10) for the reader, and a server sends one per
loop turn, so a reader that polls on a timer, or waits behind a 30 ms netlink dump, loses
whole bursts. Lost waits still show: their call numbers are missing.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable

from servers.telemetry import TelemetryReader
from tui.model import Batch
from tui.sources.epoll_fdinfo import epoll_interest, socket_inodes
from tui.sources.packet_capture import PacketCapture
from tui.sources.tcp_states import tcp_sockets
from tui.sources.threads import ThreadMonitor

TICK_S = 0.05  # the kernel sources and packets are looked at this often
MIN_PERIODS_S = {"tcp": 0.1, "threads": 0.5, "proc": 0.5}
COST_MULTIPLIER = 10  # a source that takes 30 ms (10k sockets) is polled at most every 300 ms


class Collector:
    """Polls the sources for ``port`` (and process ``pid``) until ``stop()``."""

    def __init__(
        self,
        port: int,
        pid: int | None,
        reader: TelemetryReader | None,
        capture: PacketCapture | None = None,
        exit_status: Callable[[], str | None] | None = None,
    ) -> None:
        self.port = port
        self.pid = pid
        self.reader = reader
        self.capture = capture
        self.exit_status = exit_status  # says how a server we launched ended, None while it runs
        self.monitor = ThreadMonitor(pid) if pid is not None else None
        self._lock = threading.Lock()
        self._pending: Batch | None = None
        self._stopping = threading.Event()
        self._due = dict.fromkeys(MIN_PERIODS_S, 0.0)
        self._process_gone = pid is None
        self._threads = [
            threading.Thread(target=self._sample_forever, name="tui-sampler", daemon=True),
            threading.Thread(target=self._drain_telemetry, name="tui-telemetry", daemon=True),
        ]

    def start(self) -> None:
        if self.capture is not None:
            self.capture.start()
        self._hand_over(self._initial_notes())
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=2)
        if self.capture is not None:
            self.capture.stop()

    def take(self) -> Batch | None:
        """Everything gathered since the last call, merged; None if nothing new."""
        with self._lock:
            batch, self._pending = self._pending, None
        return batch

    def backlog(self) -> int:
        """Telemetry events gathered but not yet taken (they pile up while the UI is paused)."""
        with self._lock:
            return len(self._pending.events) if self._pending is not None else 0

    def _drain_telemetry(self) -> None:
        """Read datagrams the moment they arrive; the timeout only lets stop() end the thread."""
        reader = self.reader
        if reader is None:
            return
        while not self._stopping.is_set():
            readable, _, _ = select.select([reader], [], [], 0.2)
            if readable:
                events = reader.read()
                if events:
                    self._hand_over(Batch(now=time.monotonic(), events=events))

    def _sample_forever(self) -> None:
        while not self._stopping.wait(TICK_S):
            try:
                batch = self.collect()
            except Exception as error:  # e.g. netlink refused: say so, keep sampling, keep the UI alive
                batch = Batch(now=time.monotonic(), notes={"collector": f"{type(error).__name__}: {error}"})
            self._hand_over(batch)

    def _hand_over(self, batch: Batch) -> None:
        with self._lock:
            if self._pending is None:
                self._pending = batch
            else:
                self._pending.merge(batch)

    def _initial_notes(self) -> Batch:
        notes = {}
        if self.reader is None:
            notes["telemetry"] = "no telemetry socket"
        if self.pid is None:
            notes["proc"] = "server pid unknown: pass --pid to see threads and epoll interest"
        return Batch(now=time.monotonic(), notes=notes)

    def collect(self) -> Batch:
        """One pass: drain packets; sample whichever kernel sources are due."""
        batch = Batch(now=time.monotonic(), notes={"collector": ""})  # "": no error this time
        if self._is_due("tcp", batch.now):
            started = time.monotonic()
            batch.tcp = tcp_sockets(self.port)
            self._reschedule("tcp", started)
        if not self._process_gone:
            self._sample_process(batch)
        self._poll_capture(batch)
        if self.exit_status is not None and (status := self.exit_status()) is not None:
            batch.notes["server"] = status
        return batch

    def _sample_process(self, batch: Batch) -> None:
        assert self.pid is not None and self.monitor is not None
        try:
            if self._is_due("threads", batch.now):
                batch.threads, batch.threads_at = self.monitor.sample(), time.monotonic()
                self._due["threads"] = batch.now + MIN_PERIODS_S["threads"]
            if self._is_due("proc", batch.now):
                started = time.monotonic()
                batch.inodes = socket_inodes(self.pid)
                batch.interest = epoll_interest(self.pid)
                self._reschedule("proc", started)
        except ProcessLookupError:
            self._process_gone = True
            batch.notes["proc"] = f"process {self.pid} has exited"
            batch.threads, batch.inodes, batch.interest = [], {}, {}
        except PermissionError as error:
            self._process_gone = True
            batch.notes["proc"] = f"cannot read /proc/{self.pid}: {error.strerror} (run as its user or root)"

    def _poll_capture(self, batch: Batch) -> None:
        capture = self.capture
        if capture is None:
            return
        batch.segments = capture.poll()
        if capture.error:
            batch.notes["packets"] = capture.error
        else:
            batch.notes["packets"] = "" if capture.ready else "starting the capture process (scapy)…"

    def _is_due(self, source: str, now: float) -> bool:
        return now >= self._due[source]

    def _reschedule(self, source: str, started: float) -> None:
        """Poll again after the source's minimum period, or longer if reading it was costly."""
        finished = time.monotonic()
        period = max(MIN_PERIODS_S[source], COST_MULTIPLIER * (finished - started))
        self._due[source] = started + period
