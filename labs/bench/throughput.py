"""Message-flow runs: fan-in, fan-out and QoS 1, at saturation or at an offered rate.

Subscribers connect first, then publishers; the broker's CPU is sampled just before "go" and
after the subscribers have drained, so every message delivered is paid for in the figure.
msgs/s counts deliveries (a fan-out to S subscribers delivers S per publish).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import publisher, subscriber
from .clients import run_tag
from .flow import FlowBoard
from .progress import Task, Ui
from .results import Errors, percentiles_us, rates
from .targets import Broker, ProcessSample
from .wire import PublishLayout
from .workers import CONTEXT, WorkerGroup

SETUP_TIMEOUT = 120.0


@dataclass(frozen=True)
class FlowSpec:
    """One flow run: who publishes, who subscribes, for how long, how hard."""

    scenario: str
    publishers: int
    subscribers: int
    duration: float
    publisher_procs: int = 1
    subscriber_procs: int = 1
    qos: int = 0
    rate: float = 0.0  # total publishes per second; 0 = saturation (flow control only)
    window: int = 1000  # messages publishers may run ahead of the slowest subscriber
    in_flight: int = 0  # QoS 1: unacknowledged PUBLISHes per publisher connection
    payload_size: int = 64
    batch: int = 256
    clean_session: bool = True  # False: subscribers keep persistent sessions (qos1-persist)

    def params(self) -> dict[str, Any]:
        params = asdict(self)
        del params["scenario"]
        if self.qos:
            params["load"] = f"{self.in_flight} in flight"
        else:
            params["load"] = f"rate {self.offered_delivery_rate:g}/s" if self.rate else "saturation"
        return params

    @property
    def offered_delivery_rate(self) -> float:
        return self.rate * self.subscribers


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """``total`` items as ``parts`` contiguous (first, stop) ranges, as even as possible."""
    parts = max(1, min(parts, total))
    bounds = [total * index // parts for index in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def run_flow(
    broker: Broker, spec: FlowSpec, ui: Ui, label: str, tag: str | None = None
) -> tuple[dict[str, Any], Errors]:
    """Run one flow against a running broker; return (metrics, errors)."""
    run = FlowRun(broker, spec, tag or run_tag())
    task = ui.task(label, spec.duration)
    try:
        run.start()
        return run.measure(task)
    finally:
        task.done()
        run.group.stop()


class FlowRun:
    """The generator processes of one flow run: subscribers first, then publishers, then "go"."""

    def __init__(self, broker: Broker, spec: FlowSpec, tag: str) -> None:
        self.broker, self.spec, self.tag = broker, spec, tag
        self.layout = PublishLayout(payload_size=spec.payload_size, qos=spec.qos)
        self.publisher_ranges = split(spec.publishers, spec.publisher_procs)
        self.subscriber_ranges = split(spec.subscribers, spec.subscriber_procs)
        self.board = FlowBoard.create(
            CONTEXT, len(self.publisher_ranges), len(self.subscriber_ranges), spec.publishers
        )
        self.group = WorkerGroup()

    def start(self) -> None:
        broker, spec, layout, group = self.broker, self.spec, self.layout, self.group
        self.subscribers = [
            group.start(
                f"subscriber-{index}",
                subscriber.main,
                subscriber.SubscriberJob(
                    broker.address,
                    index,
                    stop - first,
                    layout,
                    tuple(self.publisher_ranges),
                    tag=self.tag,
                    clean_session=spec.clean_session,
                ),
                self.board,
            )
            for index, (first, stop) in enumerate(self.subscriber_ranges)
        ]
        group.collect(self.subscribers, "ready", SETUP_TIMEOUT, broker.check_alive)
        processes = len(self.publisher_ranges)
        window, rate = max(spec.batch, spec.window // processes), spec.rate / processes
        self.publishers = [
            group.start(
                f"publisher-{index}",
                publisher.main,
                publisher.PublisherJob(
                    broker.address,
                    index,
                    first,
                    stop - first,
                    layout,
                    spec.duration,
                    rate,
                    window,
                    spec.in_flight,
                    spec.batch,
                    self.tag,
                ),
                self.board,
            )
            for index, (first, stop) in enumerate(self.publisher_ranges)
        ]
        group.collect(self.publishers, "ready", SETUP_TIMEOUT, broker.check_alive)

    def measure(self, task: Task) -> tuple[dict[str, Any], Errors]:
        """Broker CPU from just before "go" to after the subscribers have drained."""
        broker, group, board, duration = self.broker, self.group, self.board, self.spec.duration
        before, started_ns = broker.sample(), time.monotonic_ns()

        def tick() -> None:
            broker.check_alive()
            elapsed = (time.monotonic_ns() - started_ns) / 1e9
            rate = board.total_delivered() / max(elapsed, 1e-3)
            task.update(min(elapsed, duration), f"{rate:,.0f} msg/s")

        group.send(self.publishers, ("go", None))
        sent = group.collect(self.publishers, "result", duration + SETUP_TIMEOUT, tick)
        group.send(self.subscribers, ("drain", None))
        received = group.collect(self.subscribers, "result", SETUP_TIMEOUT, tick)
        after = broker.sample()
        group.send(self.publishers, ("close", None))
        return _figures(self.spec, sent, received, before, after, started_ns)


def _figures(
    spec: FlowSpec,
    sent: list[dict[str, Any]],
    received: list[dict[str, Any]],
    before: ProcessSample | None,
    after: ProcessSample | None,
    started_ns: int,
) -> tuple[dict[str, Any], Errors]:
    published = sum(sum(result["sent"].values()) for result in sent)
    delivered = sum(result["unique"] for result in received)
    last_ns = max((result["last_ns"] for result in received), default=0)
    duration = max(0.0, (last_ns - started_ns) / 1e9) if last_ns else 0.0
    cpu = after.cpu_since(before) if before and after else None
    latency = [sample for result in received for sample in result["latency_ns"]]
    metrics: dict[str, Any] = {
        **rates(delivered, duration, cpu),
        "broker_cpu_s": cpu,
        "broker_rss_bytes": after.rss_bytes if after else None,
        "latency_us": percentiles_us(latency),
        "sent": published,
        "delivered": delivered,
        "duration_s": duration,
        "generator_cpu_s": sum(result["cpu_s"] for result in [*sent, *received]),
    }
    unacked = sum(result["unacked"] for result in sent)
    lost = sum(result["lost"] for result in received)
    if spec.qos:
        acked = sum(result["acked"] for result in sent)
        rtt = [sample for result in sent for sample in result["rtt_ns"]]
        metrics.update(acked=acked, unacked=unacked, puback_rtt_us=percentiles_us(rtt))
    errors = Errors(
        lost=max(lost, unacked),
        duplicated=sum(result["duplicated"] for result in received)
        + sum(result["ack_duplicates"] for result in sent),
        reordered=sum(result["reordered"] for result in received),
        disconnects=sum(result["disconnects"] for result in [*sent, *received]),
    )
    return metrics, errors
