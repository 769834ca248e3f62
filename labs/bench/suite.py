"""The loop over planned runs, repeats and targets, each target in a fresh broker process.

Runs go scenario run by scenario run; within one, repeat by repeat; within a repeat, target by
target. Interleaving targets like this spreads slow drifts of a noisy machine over all of them
alike, which is what makes the ratios between targets trustworthy: each repeat's ratio divides
two figures measured moments apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .plan import SCENARIOS, PlannedRun, Settings, failed_params, plan
from .progress import Ui
from .results import make_row
from .targets import Broker, BrokerFailed, Target
from .workers import WorkerFailed

__all__ = ["SCENARIOS", "Settings", "Suite"]  # the names the command line and the tests use


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
            for repeat in range(self.settings.repeat):
                for target in self.eligible(planned):
                    self._run_one(planned, target, repeat)
                    self.advance()
        return self.rows

    def eligible(self, planned: PlannedRun) -> list[Target]:
        """The available targets this run applies to (persistent runs: those we can configure)."""
        return [
            target
            for target in self.targets
            if target.available
            and (planned.targets is None or target.name in planned.targets)
            and (not planned.persistent or target.launch_persistent is not None)
        ]

    def run_count(self) -> int:
        return sum(len(self.eligible(planned)) for planned in plan(self.settings)) * self.settings.repeat

    def _run_one(self, planned: PlannedRun, target: Target, repeat: int) -> None:
        broker: Broker | None = None
        launch = target.launch_persistent if planned.persistent else target.launch
        assert launch is not None
        try:
            broker = launch()
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
                    repeat=repeat,
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
                repeat,
            )
            self.rows.append(row)
