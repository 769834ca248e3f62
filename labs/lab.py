"""What every lab's run.py shares: numbered steps, a server to poke at, and a self-check verdict.

A lab prints what it does as it does it, so its output can be compared line by line with the
"expected output" in its README, and it ends with PASS or FAIL for each self-check (exit 1 on
any FAIL), which is also how the test suite runs every lab.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rich.console import Console

from labs.bench.targets import Broker, project_target

console = Console(highlight=False)

# A lab asserts a timing comparison only when the effect is large and stable, so that a busy
# machine cannot fail it at random; anything smaller is printed, not asserted.
LARGE_EFFECT = 5.0  # the slower figure must be at least this many times the faster one
STABLE_MARGIN = 3.0  # ... and the effect at least this many times the spread of its repeats


@dataclass(frozen=True)
class TimingComparison:
    """Two timing figures, the slower and the faster, each measured once per repeat in one run.

    The effect is the ratio of their medians; the spread is how far apart one figure's repeats
    landed, as a factor (largest over smallest), for the less steady of the two. Both are
    factors, so they are compared on a log scale: a busy machine slows a repeat by some factor
    (a preempted batch, a busy sibling hyperthread), whether the figure is 1 µs or 1 ms. "At
    least 3x the spread" thus reads: ratio ≥ spread³. Poll over 10,000 fds took 0.75 to 3 ms of
    CPU with two busy loops beside it, a 4x spread, yet it stayed hundreds of times dearer than
    epoll_wait: that passes. A 1.2x effect never can, however steady.
    """

    slower: tuple[float, ...]
    faster: tuple[float, ...]

    @classmethod
    def of(cls, slower: Sequence[float], faster: Sequence[float]) -> TimingComparison:
        return cls(tuple(slower), tuple(faster))

    @property
    def ratio(self) -> float:
        if not self.slower or not self.faster:
            return math.nan
        faster = statistics.median(self.faster)
        return statistics.median(self.slower) / faster if faster > 0 else math.inf

    @property
    def spread(self) -> float:
        return max(spread_of(self.slower), spread_of(self.faster))

    def large_and_stable(self, at_least: float = LARGE_EFFECT) -> bool:
        ratio, spread = self.ratio, self.spread
        if not (math.isfinite(ratio) and math.isfinite(spread)):
            return False
        large = ratio >= max(at_least, LARGE_EFFECT)
        return large and math.log(ratio) >= STABLE_MARGIN * math.log(spread)

    def describe(self) -> str:
        if not self.slower or not self.faster:
            return "no repeats measured"
        repeats = min(len(self.slower), len(self.faster))
        return f"ratio of the medians {times(self.ratio)}; over {repeats} repeats, spread {self.spread:.2f}x"


def spread_of(values: Sequence[float]) -> float:
    """How far apart repeats landed, as a factor: 1.0 when all alike; infinite without a measure."""
    if not values or min(values) <= 0:
        return math.inf
    return max(values) / min(values)


def times(ratio: float) -> str:
    """A ratio as '0.85x' or '775.2x': two decimals only where they matter."""
    return f"{ratio:,.2f}x" if ratio < 10 else f"{ratio:,.1f}x"


class Lab:
    """A lab's running state: its step counter and the self-checks that failed."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.step_number = 0
        self.failures: list[str] = []
        console.rule(f"[bold]{title}")

    def step(self, text: str) -> None:
        self.step_number += 1
        console.print(f"\n[bold cyan]Step {self.step_number}.[/] {text}")

    def say(self, text: str) -> None:
        """Print a line as it is: brackets in command output are not rich markup."""
        console.print(f"  {text}", markup=False)

    def check(self, passed: bool, claim: str) -> bool:
        """One self-check: a claim the learner should now be able to see for themselves."""
        console.print(f"  [{'green' if passed else 'red'}]{'PASS' if passed else 'FAIL'}[/] {claim}")
        if not passed:
            self.failures.append(claim)
        return passed

    def check_timing(self, timing: TimingComparison, claim: str, at_least: float = LARGE_EFFECT) -> bool:
        """A timing self-check: PASS only if the ratio is at least ``at_least`` (and 5x) and stable."""
        needed = max(at_least, LARGE_EFFECT)
        spread = timing.spread
        self.say(timing.describe())
        self.say(f"asserted: ratio ≥ {needed:g}x and ≥ spread³ = {spread:.2f}³ = {spread**3:,.1f}x")
        return self.check(timing.large_and_stable(at_least), claim)

    def finish(self) -> int:
        verdict = (
            "[green]all self-checks passed" if not self.failures else f"[red]{len(self.failures)} failed"
        )
        console.print(f"\n{self.title}: {verdict}")
        return 1 if self.failures else 0


def lab_arguments(description: str) -> argparse.ArgumentParser:
    """The flags every lab accepts; ``--quick`` keeps a lab under about 30 s for the test suite."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for the test suite")
    return parser


@contextlib.contextmanager
def running_server(variant: str, *server_args: str) -> Iterator[Broker]:
    """``python -m servers.<variant> --port 0 ...`` for the duration of a ``with`` block."""
    broker = project_target(variant, list(server_args)).launch()
    try:
        yield broker
    finally:
        broker.stop()
