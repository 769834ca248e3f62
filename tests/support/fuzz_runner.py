"""Send fuzz cases to a live server over many concurrent connections, watching its health.

``run_cases`` keeps up to ``concurrency`` non-blocking sockets open at once, all driven by one
``selectors`` loop in this process: each connection sends its chunks one ``send`` per loop
turn (so the fragmentation reaches the server's reads), reads and discards whatever the server
sends unless the case is a slow consumer (checking that it decodes: a server must never send a
malformed packet), then closes as the case says: a reset (SO_LINGER 0),
a FIN, or waiting for the server to close first. Every connection and the whole run have
deadlines. ``health()`` is polled throughout; once it reports a death the run stops and
names the suspects: the cases in flight, or just finished, when the server died.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from mqtt.codec import Decoder
from mqtt.errors import ProtocolError

from .fuzz import FuzzCase

HEALTH_INTERVAL = 0.05  # seconds between health checks while cases run
RECENT = 0.5  # a case that finished this recently is still a suspect: the server may lag behind
LINGER_OFF = struct.pack("ii", 1, 0)  # SO_LINGER on with timeout 0: close() sends a reset


@dataclass
class Flight:
    """One case's connection while it runs."""

    index: int
    case: FuzzCase
    sock: socket.socket
    deadline: float
    state: str = "connecting"  # -> sending -> draining (waiting for the server's close)
    chunk: int = 0
    offset: int = 0
    decoder: Decoder | None = field(default_factory=Decoder)  # None after the output went bad


@dataclass
class RunResult:
    cases: list[FuzzCase]
    outcomes: Counter[str] = field(default_factory=Counter)
    opened: int = 0
    death: str | None = None  # what health() reported, if the server died
    suspects: list[int] = field(default_factory=list)  # case indexes, in the order they started
    seconds: float = 0.0
    finish_order: list[int] = field(default_factory=list)  # case indexes, in the order they ended
    malformed: dict[int, str] = field(default_factory=dict)  # case index -> what the server sent wrong

    def blame_all(self, death: str) -> None:
        """A death found after the run (by a final probe): any case that ended may be the cause."""
        self.death = death
        self.suspects = sorted(self.finish_order)


class FuzzRun:
    """The state of one ``run_cases`` call: the sockets in flight and what became of each case."""

    def __init__(
        self, port: int, cases: list[FuzzCase], concurrency: int, case_timeout: float, linger: float
    ) -> None:
        self.port = port
        self.cases = cases
        self.concurrency = concurrency
        self.case_timeout = case_timeout  # sending one case's bytes must end by then
        self.linger = linger  # how long to wait for the server's close after sending
        self.selector = selectors.DefaultSelector()
        self.flights: dict[int, Flight] = {}  # by fd
        self.finished_at: dict[int, float] = {}  # case index -> when its connection ended
        self.result = RunResult(cases)

    # -- the loop --------------------------------------------------------------------------

    def run(self, health: Callable[[], str | None], total_timeout: float) -> RunResult:
        started = time.monotonic()
        deadline, next_health = started + total_timeout, started
        try:
            while self.result.opened < len(self.cases) or self.flights:
                if time.monotonic() > deadline:
                    self.result.outcomes["run-timed-out"] += 1
                    break
                self.open_more()
                for key, mask in self.selector.select(timeout=HEALTH_INTERVAL):
                    self.on_event(key.data, mask)
                self.expire()
                if time.monotonic() >= next_health:
                    next_health = time.monotonic() + HEALTH_INTERVAL
                    if self.died(health()):
                        break
        finally:
            for flight in list(self.flights.values()):
                self.close(flight, "abandoned", reset=True)
            self.selector.close()
        self.result.seconds = time.monotonic() - started
        return self.result

    def finished(self, index: int, outcome: str) -> None:
        self.finished_at[index] = time.monotonic()
        self.result.finish_order.append(index)
        self.result.outcomes[outcome] += 1

    def died(self, death: str | None) -> bool:
        if death is None:
            return False
        now = time.monotonic()
        recent = {index for index, when in self.finished_at.items() if now - when <= RECENT}
        self.result.death = death
        self.result.suspects = sorted(recent | {flight.index for flight in self.flights.values()})
        return True

    def open_more(self) -> None:
        while self.result.opened < len(self.cases) and len(self.flights) < self.concurrency:
            index = self.result.opened
            self.result.opened += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each chunk its own segment
            code = sock.connect_ex(("127.0.0.1", self.port))
            flight = Flight(index, self.cases[index], sock, time.monotonic() + self.case_timeout)
            if code not in (0, errno.EINPROGRESS):
                self.finished(index, "connect-failed")
                sock.close()
                continue
            self.flights[sock.fileno()] = flight
            self.selector.register(sock, self.interest(flight), flight)

    def interest(self, flight: Flight) -> int:
        reading = selectors.EVENT_READ if flight.case.reads or flight.state == "draining" else 0
        return reading | (selectors.EVENT_WRITE if flight.state != "draining" else 0)

    # -- one connection ------------------------------------------------------------------

    def on_event(self, flight: Flight, mask: int) -> None:
        if self.flights.get(flight.sock.fileno()) is not flight:
            return  # closed earlier in this batch
        if mask & selectors.EVENT_READ and not self.read(flight):
            return
        if mask & selectors.EVENT_WRITE:
            if flight.state == "connecting":
                if flight.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self.close(flight, "connect-failed", reset=False)
                    return
                flight.state = "sending"
            self.send_chunk(flight)

    def read(self, flight: Flight) -> bool:
        """Read and discard; False once the server has closed (the flight is then closed)."""
        try:
            data = flight.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""  # a reset: the server is gone as surely as after a FIN
        if data:
            self.check_output(flight, data)
            return True
        outcome = "server-closed" if flight.state == "draining" else "server-closed-early"
        self.close(flight, outcome, reset=False)
        return False

    def check_output(self, flight: Flight, data: bytes) -> None:
        """Decode what the server sent (strictly, as a client would); note the first malformed packet."""
        if flight.decoder is None:
            return
        try:
            flight.decoder.feed(data)
        except ProtocolError as error:
            self.result.malformed[flight.index] = (
                f"{error} (in a read of {len(data)} bytes: {data[:24].hex(' ')})"
            )
            flight.decoder = None

    def send_chunk(self, flight: Flight) -> None:
        """One ``send`` of (the rest of) the current chunk; then the close the case asks for."""
        chunks = flight.case.chunks
        if flight.chunk < len(chunks):
            try:
                sent = flight.sock.send(memoryview(chunks[flight.chunk])[flight.offset :])
            except BlockingIOError:
                return
            except OSError:
                self.close(flight, "server-closed-early", reset=False)
                return
            flight.offset += sent
            if flight.offset == len(chunks[flight.chunk]):
                flight.chunk, flight.offset = flight.chunk + 1, 0
        if flight.chunk == len(chunks):
            self.end_sending(flight)

    def end_sending(self, flight: Flight) -> None:
        """Close as the case says; a reading case that is not reset waits for the server's close."""
        close = flight.case.close
        if close == "fin":
            with contextlib.suppress(OSError):
                flight.sock.shutdown(socket.SHUT_WR)
        if close == "reset" or not flight.case.reads:
            self.close(flight, "sent", reset=close == "reset")
            return
        flight.state = "draining"
        flight.deadline = time.monotonic() + self.linger
        self.selector.modify(flight.sock, self.interest(flight), flight)

    def expire(self) -> None:
        now = time.monotonic()
        for flight in [flight for flight in self.flights.values() if flight.deadline <= now]:
            outcome = "server-kept-open" if flight.state == "draining" else "timed-out-sending"
            self.close(flight, outcome, reset=True)

    def close(self, flight: Flight, outcome: str, reset: bool) -> None:
        self.flights.pop(flight.sock.fileno(), None)
        self.finished(flight.index, outcome)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(flight.sock)
        if reset:
            with contextlib.suppress(OSError):
                flight.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_OFF)
        flight.sock.close()


def run_cases(
    port: int,
    cases: list[FuzzCase],
    health: Callable[[], str | None],
    concurrency: int = 48,
    case_timeout: float = 5.0,
    linger: float = 1.0,
    total_timeout: float = 60.0,
) -> RunResult:
    """Send every case (``concurrency`` at a time) unless ``health()`` reports a death first."""
    return FuzzRun(port, cases, concurrency, case_timeout, linger).run(health, total_timeout)
