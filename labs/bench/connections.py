"""Connection runs: ``conn`` (N idle clients and one final publish to all) and ``idle-scaling``.

Clients are spread over holder processes of at most ``PER_HOLDER`` sockets each (the fd limit
is per process), from many source addresses (ephemeral ports run out per address). A broker
that refuses clients (select's fd 1024, the 20,000 fd limit) is reported as capped, not hidden.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from . import holder
from .clients import ClientOpener, close_all, run_tag
from .flow import FlowBoard
from .progress import Ui
from .results import Errors, Outcome, percentiles_us, refusals
from .targets import Broker, ProcessSample
from .throughput import FlowSpec, run_flow
from .wire import CONN_TOPIC, IDLE_TOPIC, BatchBuilder, PublishLayout, connect_packet
from .workers import CONTEXT, Worker, WorkerGroup

PER_HOLDER = 5_000
HANDSHAKES_IN_FLIGHT = 64  # over all holders: more overflows small listen backlogs (mosquitto's is 100)
SETUP_TIMEOUT = 120.0


@dataclass
class Holders:
    """Holder processes and the clients they have open so far."""

    group: WorkerGroup
    workers: list[Worker]
    board: FlowBoard
    opened: int = 0

    @classmethod
    def start(cls, broker: Broker, clients: int, topic: bytes, tag: str) -> Holders:
        count = max(1, math.ceil(clients / PER_HOLDER))
        board = FlowBoard.create(CONTEXT, 0, 0, 0, holders=count)
        group = WorkerGroup()
        concurrency = max(8, HANDSHAKES_IN_FLIGHT // count)
        workers = [
            group.start(
                f"holder-{index}",
                holder.main,
                holder.HolderJob(broker.address, index, topic, concurrency, tag),
                board,
            )
            for index in range(count)
        ]
        try:
            group.collect(workers, "ready", SETUP_TIMEOUT, broker.check_alive)
        except BaseException:
            group.stop()
            raise
        return cls(group, workers, board)

    def open(self, more: int, broker: Broker, ui: Ui, label: str) -> dict[str, Any]:
        """Open ``more`` clients spread over the holders; returns counts, failures and latencies."""
        task = ui.task(label, more)
        start_total = self.opened

        def tick() -> None:
            broker.check_alive()
            task.update(sum(self.board.opened[: len(self.workers)]) - start_total)

        shares = [
            more // len(self.workers) + (index < more % len(self.workers))
            for index in range(len(self.workers))
        ]
        for worker, share in zip(self.workers, shares, strict=True):
            self.group.send([worker], ("open", share))
        try:
            replies = self.group.collect(self.workers, "opened", SETUP_TIMEOUT + more / 100, tick)
        finally:
            task.done()
        opened = sum(reply["opened"] for reply in replies)
        self.opened += opened
        failures: Counter[str] = Counter()
        for reply in replies:
            failures.update(reply["failures"])
        latencies = [value for reply in replies for value in reply["latencies_ns"]]
        return {"opened": opened, "failures": dict(failures), "latencies_ns": latencies}

    def ask(self, command: str, argument: Any, reply: str, timeout: float) -> list[dict[str, Any]]:
        self.group.send(self.workers, (command, argument))
        return self.group.collect(self.workers, reply, timeout)

    def close(self) -> int:
        """Close every client; the number the broker had dropped meanwhile."""
        try:
            return sum(reply["disconnects"] for reply in self.ask("close", None, "closed", SETUP_TIMEOUT))
        finally:
            self.group.stop()


def run_conn(broker: Broker, clients: int, ui: Ui, tag: str | None = None) -> Outcome:
    """Open ``clients`` idle subscribers, measure, publish once to all, check each got it once."""
    tag = tag or run_tag()
    holders = Holders.start(broker, clients, CONN_TOPIC, tag)
    try:
        # The publisher connects first: a broker at its connection cap still gets its final message.
        with _FinalPublisher(broker, tag) as final:
            # The final publisher is also the warm-up connection: RSS per connection is measured
            # from a broker that has already accepted one client and set up what that costs.
            baseline = settled_sample(broker)
            started = time.monotonic()
            opened = holders.open(clients, broker, ui, f"{broker.name} conn: connecting")
            connect_s = time.monotonic() - started
            loaded = broker.sample()
            final.publish()
            received = holders.ask("expect", 10.0 + clients / 2000, "received", SETUP_TIMEOUT)
    finally:
        disconnects = holders.close()
    connected = opened["opened"]
    metrics: dict[str, Any] = {
        "requested": clients,
        "connected": connected,
        "failed": clients - connected,
        "failure_reasons": opened["failures"],
        "cap_hit": connected < clients,
        "connect_s": connect_s,
        "connects_per_s": connected / connect_s if connect_s else None,
        "handshake_us": percentiles_us(opened["latencies_ns"]),
        "latency_us": percentiles_us(opened["latencies_ns"]),
        "sent": 1,
        "delivered": sum(reply["received"] for reply in received),
        "duration_s": connect_s,
    }
    if baseline and loaded:
        cpu = loaded.cpu_since(baseline)
        metrics.update(
            broker_cpu_s=cpu,
            broker_rss_bytes=loaded.rss_bytes,
            connects_per_cpu_s=connected / cpu if cpu > 0 else None,
            rss_per_conn_bytes=(loaded.rss_bytes - baseline.rss_bytes) / connected if connected else None,
        )
    errors = Errors(
        lost=sum(reply["lost"] for reply in received),
        duplicated=sum(reply["duplicated"] for reply in received),
        disconnects=disconnects,
    )
    params = {"clients": clients, "keepalive": holder.KEEPALIVE}
    status = "capped" if metrics["cap_hit"] else "ok"
    return Outcome(params, metrics, errors, status, refusals(opened["failures"]))


def settled_sample(
    broker: Broker, interval: float = 0.02, quiet_cpu: float = 0.001, timeout: float = 1.0
) -> ProcessSample | None:
    """A sample once the broker has gone quiet: RSS unchanged and under 1 ms of CPU between polls.

    A broker may still be allocating just after it answered a CONNECT (buffers, session
    tables); sampling then would charge that to the N clients that follow. Polls every
    ``interval`` and gives up waiting after ``timeout`` (a broker with a busy timer never idles).
    """
    deadline = time.monotonic() + timeout
    previous = broker.sample()
    while previous is not None and time.monotonic() < deadline:
        time.sleep(interval)
        current = broker.sample()
        if current is None:
            return None
        if current.rss_bytes == previous.rss_bytes and current.cpu_since(previous) < quiet_cpu:
            return current
        previous = current
    return previous


class _FinalPublisher:
    """One extra client that publishes a single message (publisher 0, sequence 0) to CONN_TOPIC."""

    def __init__(self, broker: Broker, tag: str) -> None:
        self.broker, self.tag = broker, tag

    def __enter__(self) -> _FinalPublisher:
        report = ClientOpener(self.broker.address, [connect_packet(f"{self.tag}-final")], 1).run()
        if not report.opened:
            raise RuntimeError(f"the final publisher could not connect: {dict(report.failures)}")
        self.sock = report.opened[0]
        return self

    def publish(self) -> None:
        frame = BatchBuilder(PublishLayout(topic=CONN_TOPIC), 1).fill(0, 0, 1, time.monotonic_ns())
        self.sock.setblocking(True)
        self.sock.sendall(frame)

    def __exit__(self, *exc: object) -> None:
        close_all([self.sock])


def run_idle_scaling(
    broker: Broker, points: list[int], pair: FlowSpec, ui: Ui, tag: str | None = None
) -> list[Outcome]:
    """For each idle count, one paced publisher/subscriber pair's figures (or the cap that stopped it)."""
    rows: list[Outcome] = []
    refused = ""
    tag = tag or run_tag()
    holders = Holders.start(broker, max(points), IDLE_TOPIC, tag)
    capped_at: int | None = None
    try:
        for point in points:
            params = {"idle": point, **pair.params()}
            if capped_at is None and point > holders.opened:
                opened = holders.open(
                    point - holders.opened, broker, ui, f"{broker.name} idle: opening {point:,}"
                )
                if opened["failures"]:
                    capped_at, refused = holders.opened, refusals(opened["failures"])
            if capped_at is not None and point > capped_at:
                metrics = {"idle_requested": point, "idle_connected": capped_at, "cap_hit": True}
                rows.append(Outcome(params, metrics, Errors(), "capped", refused))
                continue
            metrics, errors = run_flow(broker, pair, ui, f"{broker.name} idle-scaling {point:,}")
            metrics.update(idle_requested=point, idle_connected=holders.opened, cap_hit=False)
            rows.append(Outcome(params, metrics, errors))
    finally:
        idle_disconnects = holders.close()
    if rows:
        rows[-1].errors.disconnects += idle_disconnects
    return rows
