"""Progress while a benchmark runs: rich bars on a terminal, nothing at all in tests.

Scenario code only calls ``ui.task(description, total)`` and ``task.update(completed, info)``,
so it never knows whether anyone is watching.
"""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


class Task(Protocol):
    def update(self, completed: float, info: str = "") -> None: ...
    def done(self) -> None: ...


class Ui(Protocol):
    def task(self, description: str, total: float) -> Task: ...
    def note(self, text: str) -> None: ...


class NullTask:
    def update(self, completed: float, info: str = "") -> None:
        pass

    def done(self) -> None:
        pass


class NullUi:
    """Silent: for tests and ``--quiet``."""

    def task(self, description: str, total: float) -> Task:
        return NullTask()

    def note(self, text: str) -> None:
        pass


class RichTask:
    def __init__(self, progress: Progress, description: str, total: float) -> None:
        self.progress = progress
        self.task_id = progress.add_task(description, total=total, info="")

    def update(self, completed: float, info: str = "") -> None:
        self.progress.update(self.task_id, completed=completed, info=info)

    def done(self) -> None:
        self.progress.remove_task(self.task_id)


class RichUi:
    """One line per run in progress, plus an overall bar; notes print above the bars."""

    def __init__(self, console: Console, runs: int) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=True,
        )
        self.overall = self.progress.add_task("all runs", total=runs, info="")

    def __enter__(self) -> RichUi:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def task(self, description: str, total: float) -> Task:
        return RichTask(self.progress, description, total)

    def note(self, text: str) -> None:
        self.progress.console.print(text)

    def advance(self) -> None:
        self.progress.advance(self.overall)
