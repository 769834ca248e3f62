"""What one ``compare.py`` invocation runs: the sizes (``Settings``) and the ordered list of runs.

A planned run is one (scenario, load) pair, such as "fanin at saturation" or "qos1 with 1 in
flight"; the suite runs each of them against every eligible target, ``repeat`` times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .connections import run_conn, run_idle_scaling
from .progress import Ui
from .results import Outcome
from .targets import Broker
from .throughput import FlowSpec, run_flow

SCENARIOS = ("conn", "fanin", "fanout", "qos1", "qos1-persist", "idle-scaling")
FLOW_SCENARIOS = ("fanin", "fanout", "qos1", "qos1-persist")  # rows that carry a "load" param
QUICK_SCENARIOS = ("conn", "fanin", "fanout", "idle-scaling")
QUICK_IDLE_TARGETS = ("select_srv", "poll_srv", "epoll_lt")
Runner = Callable[[Broker, Ui], list[Outcome]]


@dataclass(frozen=True)
class Settings:
    """Sizes of every scenario; the defaults are the full run, sized for a 2-core machine."""

    duration: float = 3.0  # seconds per saturation fan-in / fan-out and QoS 1 throughput run
    rate_duration: float = 3.0  # at most this many seconds per matched-rate run
    latency_duration: float = 2.0  # at most this many seconds for the QoS 1 "1 in flight" run
    publishers: int = 8
    subscribers: int = 50
    procs: int = 2  # generator processes on the busy side of fan-in / fan-out
    rates: tuple[float, ...] = (20_000.0,)  # deliveries/s of the matched-rate runs; () skips them
    saturation: bool = True  # fan-in / fan-out as fast as flow control allows
    window: int = 1_000  # at most the brokers' per-client queue (1,000), or a healthy broker may drop
    payload: int = 64
    clients: int = 10_000
    in_flight: int = 100
    idle_points: tuple[int, ...] = (0, 100, 1_000, 5_000, 15_000)
    idle_rate: float = 5_000.0
    idle_duration: float = 3.0
    repeat: int = 1  # runs of each (scenario run, target), each in a fresh broker process
    quick: bool = False
    scenarios: tuple[str, ...] = SCENARIOS

    @classmethod
    def quick_run(cls, **overrides: Any) -> Settings:
        base = cls(
            duration=2.0,
            rates=(),
            clients=1_000,
            idle_points=(0, 1_000),
            idle_duration=2.0,
            quick=True,
            scenarios=QUICK_SCENARIOS,
        )
        return replace(base, **overrides)


@dataclass
class PlannedRun:
    scenario: str
    label: str
    runner: Runner
    targets: tuple[str, ...] | None = None  # None: every target
    persistent: bool = False  # start brokers with persistence on (only targets that support it)


def flow_outcome(spec: FlowSpec) -> Runner:
    def run(broker: Broker, ui: Ui) -> list[Outcome]:
        params = spec.params()
        metrics, errors = run_flow(broker, spec, ui, f"{broker.name} {spec.scenario} ({params['load']})")
        return [Outcome(params, metrics, errors)]

    return run


def flow_spec(
    settings: Settings, scenario: str, publishers: int, subscribers: int, **options: Any
) -> FlowSpec:
    options = {
        "duration": settings.duration,
        "window": settings.window,
        "payload_size": settings.payload,
    } | options
    return FlowSpec(scenario, publishers, subscribers, **options)


def flow_run(spec: FlowSpec, persistent: bool = False) -> PlannedRun:
    return PlannedRun(spec.scenario, spec.params()["load"], flow_outcome(spec), persistent=persistent)


def fan_runs(settings: Settings) -> list[PlannedRun]:
    """Fan-in and fan-out at saturation (unless --no-saturation), then at each matched rate."""
    runs: list[PlannedRun] = []
    loads = ([0.0] if settings.saturation else []) + [rate for rate in settings.rates if rate > 0]
    for load in loads:
        duration = min(settings.duration, settings.rate_duration) if load else settings.duration
        specs = [
            flow_spec(
                settings,
                "fanin",
                settings.publishers,
                1,
                publisher_procs=settings.procs,
                rate=load,
                duration=duration,
            ),
            flow_spec(
                settings,
                "fanout",
                1,
                settings.subscribers,
                subscriber_procs=settings.procs,
                rate=load / settings.subscribers,  # one publish reaches every subscriber
                duration=duration,
            ),
        ]
        runs += [flow_run(spec) for spec in specs if spec.scenario in settings.scenarios]
    return runs


def qos1_runs(settings: Settings) -> list[PlannedRun]:
    """QoS 1 throughput with a window in flight, and PUBLISH→PUBACK latency with 1 in flight."""
    throughput = flow_spec(settings, "qos1", 1, 1, qos=1, in_flight=settings.in_flight)
    runs = [flow_run(throughput)]
    if settings.in_flight != 1:  # otherwise the throughput run already is the latency run
        duration = min(settings.duration, settings.latency_duration)
        latency = flow_spec(settings, "qos1", 1, 1, qos=1, in_flight=1, duration=duration)
        runs.append(flow_run(latency))
    return runs


def plan(settings: Settings) -> list[PlannedRun]:
    """The runs in order: conn, fan-in/fan-out per load, QoS 1, persistent QoS 1, idle-scaling."""
    chosen = set(settings.scenarios)
    runs: list[PlannedRun] = []
    if "conn" in chosen:
        runs.append(PlannedRun("conn", "conn", lambda broker, ui: _conn(broker, ui, settings.clients)))
    runs += fan_runs(settings)
    if "qos1" in chosen:
        runs += qos1_runs(settings)
    if "qos1-persist" in chosen:
        # Subscriber with a persistent session (clean_session=0) and QoS 1 subscription.
        spec = flow_spec(
            settings, "qos1-persist", 1, 1, qos=1, in_flight=settings.in_flight, clean_session=False
        )
        runs.append(flow_run(spec, persistent=True))
    if "idle-scaling" in chosen:
        pair = flow_spec(
            settings, "idle-scaling", 1, 1, duration=settings.idle_duration, rate=settings.idle_rate
        )
        only = QUICK_IDLE_TARGETS if settings.quick else None
        runs.append(
            PlannedRun(
                "idle-scaling", "idle-scaling", lambda broker, ui: _idle(broker, ui, settings, pair), only
            )
        )
    return runs


def _conn(broker: Broker, ui: Ui, clients: int) -> list[Outcome]:
    return [run_conn(broker, clients, ui)]


def _idle(broker: Broker, ui: Ui, settings: Settings, pair: FlowSpec) -> list[Outcome]:
    return run_idle_scaling(broker, list(settings.idle_points), pair, ui)


def failed_params(planned: PlannedRun) -> dict[str, Any]:
    """Enough params for a failed row to sit in the same table as its scenario run's other rows."""
    return {"load": planned.label} if planned.scenario in FLOW_SCENARIOS else {}
