"""What one ``compare.py`` invocation runs: the plan of (scenario, load) runs and the loop over targets.

Runs go scenario by scenario, and within a scenario target by target, each target in a fresh
broker process. Interleaving targets like this spreads slow drifts of a noisy machine over all
of them alike, which is what makes the ratios between targets trustworthy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .connections import run_conn, run_idle_scaling
from .progress import Ui
from .results import Outcome, make_row
from .targets import Broker, BrokerFailed, Target
from .throughput import FlowSpec, run_flow
from .workers import WorkerFailed

SCENARIOS = ("conn", "fanin", "fanout", "qos1", "idle-scaling")
QUICK_IDLE_TARGETS = ("select_srv", "poll_srv", "epoll_lt")
Runner = Callable[[Broker, Ui], list[Outcome]]


@dataclass(frozen=True)
class Settings:
    """Sizes of every scenario; the defaults are the full run, sized for a 2-core machine."""

    duration: float = 3.0
    publishers: int = 8
    subscribers: int = 50
    procs: int = 2  # generator processes on the busy side of fan-in / fan-out
    rate: float = 20_000.0  # deliveries/s for the matched-rate runs; 0 skips them
    window: int = 1_000  # at most the brokers' per-client queue (1,000), or a healthy broker may drop
    payload: int = 64
    clients: int = 10_000
    in_flight: int = 100
    idle_points: tuple[int, ...] = (0, 100, 1_000, 5_000, 15_000)
    idle_rate: float = 5_000.0
    idle_duration: float = 3.0
    quick: bool = False
    scenarios: tuple[str, ...] = SCENARIOS

    @classmethod
    def quick_run(cls, **overrides: Any) -> Settings:
        base = cls(
            duration=2.0,
            rate=0.0,
            clients=1_000,
            idle_points=(0, 1_000),
            idle_duration=2.0,
            quick=True,
            scenarios=("conn", "fanin", "fanout", "idle-scaling"),
        )
        return replace(base, **overrides)


@dataclass
class PlannedRun:
    scenario: str
    label: str
    runner: Runner
    targets: tuple[str, ...] | None = None  # None: every target


def flow_outcome(spec: FlowSpec) -> Runner:
    def run(broker: Broker, ui: Ui) -> list[Outcome]:
        load = "saturation" if not spec.rate else f"{spec.offered_delivery_rate:,.0f}/s"
        metrics, errors = run_flow(broker, spec, ui, f"{broker.name} {spec.scenario} ({load})")
        return [Outcome(spec.params(), metrics, errors)]

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


def plan(settings: Settings) -> list[PlannedRun]:
    """The runs in order; fan-in and fan-out both at saturation and (if --rate) at a matched rate."""
    runs: list[PlannedRun] = []
    chosen = set(settings.scenarios)
    if "conn" in chosen:
        runs.append(PlannedRun("conn", "conn", lambda broker, ui: _conn(broker, ui, settings.clients)))
    for load in [0.0, settings.rate] if settings.rate else [0.0]:
        specs = [
            flow_spec(settings, "fanin", settings.publishers, 1, publisher_procs=settings.procs, rate=load),
            flow_spec(
                settings,
                "fanout",
                1,
                settings.subscribers,
                subscriber_procs=settings.procs,
                rate=load / settings.subscribers,
            ),
        ]
        runs += [
            PlannedRun(spec.scenario, spec.params()["load"], flow_outcome(spec))
            for spec in specs
            if spec.scenario in chosen
        ]
    if "qos1" in chosen:
        spec = flow_spec(settings, "qos1", 1, 1, qos=1, in_flight=settings.in_flight)
        runs.append(PlannedRun("qos1", spec.params()["load"], flow_outcome(spec)))
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
    return {"load": planned.label} if planned.scenario in ("fanin", "fanout", "qos1") else {}


@dataclass
class Suite:
    targets: list[Target]
    settings: Settings
    ui: Ui
    advance: Callable[[], None] = lambda: None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def run(self) -> list[dict[str, Any]]:
        runs = plan(self.settings)
        for target in self.targets:
            if not target.available:
                for scenario in dict.fromkeys(run.scenario for run in runs):
                    self.rows.append(
                        make_row(target.name, scenario, {}, status="not available", note=target.reason)
                    )
        for planned in runs:
            for target in self.targets:
                if target.available and (planned.targets is None or target.name in planned.targets):
                    self._run_one(planned, target)
                    self.advance()
        return self.rows

    def run_count(self) -> int:
        runs = plan(self.settings)
        available = [target.name for target in self.targets if target.available]
        return sum(
            len([name for name in available if run.targets is None or name in run.targets]) for run in runs
        )

    def _run_one(self, planned: PlannedRun, target: Target) -> None:
        broker: Broker | None = None
        try:
            broker = target.launch()
            outcomes = planned.runner(broker, self.ui)
        except (BrokerFailed, WorkerFailed, RuntimeError, OSError) as error:
            self.ui.note(f"[red]{target.name} {planned.scenario} ({planned.label}) failed:[/] {error}")
            self.rows.append(
                make_row(
                    target.name,
                    planned.scenario,
                    failed_params(planned),
                    status="failed",
                    note=str(error)[:2000],
                )
            )
            return
        finally:
            exit_code = broker.stop() if broker else None
        exited = f"broker exited with code {exit_code} on SIGTERM" if exit_code not in (0, None) else ""
        for outcome in outcomes:
            note = "; ".join(text for text in (outcome.note, exited) if text)
            row = make_row(
                target.name,
                planned.scenario,
                outcome.params,
                outcome.metrics,
                outcome.errors,
                outcome.status,
                note,
            )
            self.rows.append(row)
