"""The TUI's background threads: one drains telemetry, one samples the kernel; both merge batches.

Nothing here runs in the server: telemetry arrives as datagrams the server sends anyway, and
TCP states, threads and epoll interest sets are read from netlink and /proc in this process.
The UI thread calls ``take()`` about ten times a second; bursts in between merge into one
Batch (as toolong merges file updates), so a slow frame never queues a backlog of frames.

Telemetry gets a thread of its own that blocks in select(): the kernel queues only
net.unix.max_dgram_qlen datagrams (often 10) for the reader, and a server sends one per
loop turn, so a reader that polls on a timer, or waits behind a 30 ms netlink dump, loses
whole bursts. Lost waits still show: their call numbers are missing.

Paused (``set_paused(True)``): telemetry and the packet capture are still drained, so nothing
is lost and drop counts stay honest, but the kernel polls (sock_diag dumps, /proc/PID/fd,
fdinfo, task) stop. Only the status line's probe goes on: a LISTEN-only dump and
/proc/PID/stat, four times a second (see tui/sources/server_process.py).
"""

from __future__ import annotations

import dataclasses
import select
import threading
import time
from collections.abc import Callable

from servers.telemetry import TelemetryReader
from tui.model import Batch
from tui.sources.epoll_fdinfo import ProcFds
from tui.sources.packet_capture import PacketCapture
from tui.sources.server_process import Liveness, ServerWatch
from tui.sources.tcp_activity import DumpGate, tcp_counters
from tui.sources.tcp_sampler import TcpSampler
from tui.sources.threads import ThreadMonitor, ThreadRow

TICK_S = 0.05  # the sampler thread wakes this often; each source has its own period
# The TCP look runs at every tick: the kernel's counters (0.1 ms) say whether to dump at all,
# and DumpGate keeps dumps at most 0.2 s apart, which keeps the counts on screen under 0.5 s
# old (period + dump + frame + drawing). proc (fd links, fdinfo) is looked at right after
# threads, whose sample says whether the server ran at all.
PERIODS_S = {"probe": 0.25, "threads": 0.5}
# A sample that costs 30 ms of this thread's CPU waits at least 300 ms for the next. CPU time,
# not wall time: a read that waited for the GIL behind a frame was not expensive.
COST_MULTIPLIER = 10


class ProcessSamplers:
    """The per-process sources, rebuilt when the watched pid changes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads = ThreadMonitor(pid)
        self.fds = ProcFds(pid)
        self.read_after: tuple[object, ...] | None = None  # the threads' activity just before fds were read
        self.fds_due = 0.0  # a costly read (10,000 fdinfo lines) is not repeated too soon

    def server_ran_since_fds(self, rows: list[ThreadRow]) -> tuple[bool, tuple[object, ...]]:
        """(did any thread run since the last fd read?, this activity signature).

        A thread that ran was woken from a wait and will block again: its context switches
        move; one running now shows state R. Only a running server changes its fd table or its
        epoll interest sets, so a server that did neither needs no readlink and no fdinfo."""
        signature = tuple(
            (row.sample.tid, row.sample.state, row.sample.utime_ticks, row.sample.stime_ticks,
             row.sample.voluntary_ctxt_switches, row.sample.nonvoluntary_ctxt_switches)
            for row in rows
        )  # fmt: skip
        running = any(row.sample.state == "R" for row in rows)
        return running or signature != self.read_after, signature


class Collector:
    """Polls the sources for ``port`` (and process ``pid``, found from the port if None) until ``stop()``."""

    def __init__(
        self,
        port: int,
        pid: int | None,
        reader: TelemetryReader | None,
        capture: PacketCapture | None = None,
        exit_status: Callable[[], str | None] | None = None,
    ) -> None:
        self.port = port
        self.reader = reader
        self.capture = capture
        self.watch = ServerWatch(port, pid, exit_status)
        self.tcp = TcpSampler(port)
        self._process = ProcessSamplers(pid) if pid is not None else None
        self._denied_pid: int | None = None  # /proc refused: do not retry it every probe
        self._lock = threading.Lock()
        self._pending: Batch | None = None
        self._stopping = threading.Event()
        self._paused = False
        self._due = dict.fromkeys(PERIODS_S, 0.0)
        self._liveness: Liveness | None = None
        self._telemetry_at: float | None = None
        self.clock: Callable[[], float] = time.monotonic  # tests step it
        # Called from the sampler thread when a dump changed the rows; must be thread-safe, e.g.
        # loop.call_soon_threadsafe(app.next_frame). None: the UI finds them at its next frame.
        self.on_change: Callable[[], object] | None = None
        self.gate = DumpGate()
        self.dumps = 0  # sock_diag dumps made (the rest of the looks found nothing changed)
        self._threads = [
            threading.Thread(target=self._sample_forever, name="tui-sampler", daemon=True),
            threading.Thread(target=self._drain_telemetry, name="tui-telemetry", daemon=True),
        ]

    @property
    def pid(self) -> int | None:
        return self.watch.pid

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
        self.tcp.close()
        if self.capture is not None:
            self.capture.stop()

    def set_paused(self, paused: bool) -> None:
        """Stop (or resume) the kernel polls; on resume every source is sampled at the next tick."""
        self._paused = paused
        if not paused:
            self._due = dict.fromkeys(PERIODS_S, 0.0)
            self.gate.resume()

    def status(self) -> Liveness | None:
        """The latest probe with the latest datagram's time: what the status line shows while paused."""
        liveness = self._liveness
        if liveness is None:
            return None
        return dataclasses.replace(liveness, telemetry_at=self._telemetry_at)

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
                    now = self._telemetry_at = time.monotonic()
                    self._hand_over(Batch(now=now, events=events, sampled_at={"telemetry": now}))

    def _sample_forever(self) -> None:
        while not self._stopping.wait(TICK_S):
            rows_before = self.tcp.rows
            self._run(self.collect_first)
            if self.on_change is not None and self.tcp.rows is not rows_before:
                self.on_change()  # new rows: the UI may draw now rather than at its next frame
            self._run(self.collect_rest)

    def _run(self, step: Callable[[float], Batch]) -> None:
        """One step, its batch handed over at once: fresh TCP rows must not wait behind /proc or packets."""
        try:
            batch = step(self.clock())
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
        if self.watch.pid is None:
            notes["proc"] = f"server pid unknown: waiting for a process to listen on port {self.port}"
        return Batch(now=time.monotonic(), notes=notes)

    def collect(self) -> Batch:
        """One pass: the liveness probe; the kernel sources that are due (none while paused); packets."""
        now = self.clock()
        batch = self.collect_first(now)
        batch.merge(self.collect_rest(now))
        return batch

    def collect_first(self, now: float) -> Batch:
        """What the status line and the counts need first: the probe and the TCP look."""
        batch = Batch(now=now, notes={"collector": ""})  # "": no error this time
        if self._is_due("probe", now):
            self._probe(batch)
        if not self._paused:
            self._look_at_tcp(batch)
        return batch

    def collect_rest(self, now: float) -> Batch:
        """The process's threads and fds (not while paused), and the captured packets (always)."""
        batch = Batch(now=now)
        if not self._paused and self._process is not None:
            self._sample_process(batch, self._process)
        self._poll_capture(batch)
        return batch

    def _probe(self, batch: Batch) -> None:
        liveness = self.watch.probe(batch.now)
        self._liveness = batch.liveness = dataclasses.replace(liveness, telemetry_at=self._telemetry_at)
        self._due["probe"] = batch.now + PERIODS_S["probe"]
        process = self._process
        found = liveness.pid is not None and liveness.running and liveness.pid != self._denied_pid
        if found and (process is None or process.pid != liveness.pid):
            assert liveness.pid is not None
            self._process = ProcessSamplers(liveness.pid)  # found, or a new server on the port
            self._due["threads"] = 0.0
            batch.notes["proc"] = ""
        elif process is not None and not liveness.running:
            self._process_gone(batch, process)

    def _look_at_tcp(self, batch: Batch) -> None:
        """Each tick: dump the port, or vouch for the last dump if the kernel says nothing changed."""
        cpu_started, wall, now = time.thread_time(), time.time(), batch.now
        counters = tcp_counters()  # before the dump: a segment during the dump shows next time
        decision = self.gate.decide(counters, now, self._telemetry_at)
        if decision == "wait":
            return  # dumped less than a period ago: the rows on screen keep their age
        if decision == "dump":
            previous = self.tcp.rows
            batch.tcp = self.tcp.sample()
            self.dumps += 1
            self.gate.dumped(counters, now, batch.tcp is not previous, time.thread_time() - cpu_started)
        else:
            batch.tcp = self.tcp.rows  # the same object: the model skips counts, sort and join
        batch.tcp_wall = wall
        batch.sampled_at["tcp"] = now  # the look's start: the rows are at least this fresh

    def _sample_process(self, batch: Batch, process: ProcessSamplers) -> None:
        try:
            if not self._is_due("threads", batch.now):
                return
            batch.threads, batch.threads_at = process.threads.sample(), time.monotonic()
            batch.sampled_at["threads"] = batch.threads_at
            self._due["threads"] = batch.now + PERIODS_S["threads"]
            ran, activity = process.server_ran_since_fds(batch.threads)
            if ran and batch.now >= process.fds_due:
                cpu_started = time.thread_time()
                batch.inodes, batch.interest = process.fds.sample(batch.threads_at)
                process.read_after = activity
                process.fds_due = batch.now + COST_MULTIPLIER * (time.thread_time() - cpu_started)
                batch.sampled_at["proc"] = batch.threads_at
            elif not ran:  # the server has not run since its fds were read: they still stand
                batch.inodes, batch.interest = process.fds.inodes, process.fds.interest
                batch.sampled_at["proc"] = batch.threads_at
        except ProcessLookupError:
            self._process_gone(batch, process)
        except PermissionError as error:
            self._process, self._denied_pid = None, process.pid
            why = f"{error.strerror} (run as its user or root)"
            batch.notes["proc"] = f"cannot read /proc/{process.pid}: {why}"

    def _process_gone(self, batch: Batch, process: ProcessSamplers) -> None:
        self._process = None
        batch.notes["proc"] = f"process {process.pid} has exited"
        batch.threads, batch.inodes, batch.interest = [], {}, {}

    def _poll_capture(self, batch: Batch) -> None:
        capture = self.capture
        if capture is None:
            return
        batch.segments = capture.poll()
        if capture.error:
            batch.notes["packets"] = capture.error
        else:
            batch.notes["packets"] = "" if capture.ready else "starting the capture process…"

    def _is_due(self, source: str, now: float) -> bool:
        return now >= self._due[source]
