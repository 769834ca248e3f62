"""What every lab's run.py shares: numbered steps, a server to poke at, and a self-check verdict.

A lab prints what it does as it does it, so its output can be compared line by line with the
"expected output" in its README, and it ends with PASS or FAIL for each self-check (exit 1 on
any FAIL), which is also how the test suite runs every lab.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from rich.console import Console

from labs.bench.targets import Broker, project_target

console = Console(highlight=False)


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
