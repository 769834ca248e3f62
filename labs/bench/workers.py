"""Generator processes: how the parent spawns them, talks to them and gets their figures back.

Workers are spawned (not forked: the parent runs rich's refresh thread) and each gets one pipe.
Messages are ``(kind, payload)`` tuples. A worker that raises sends ``("error", traceback)``
before exiting, so a failure shows its cause instead of a hang.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

CONTEXT = multiprocessing.get_context("spawn")
Message = tuple[str, Any]


class WorkerFailed(RuntimeError):
    """A generator process raised, died, or did not answer in time."""


@dataclass
class Worker:
    name: str
    process: BaseProcess
    channel: Connection


def cpu_seconds() -> float:
    """This process's own CPU time (user + system): how hard the generator itself worked."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve(channel: Connection, body: Callable[[], None]) -> None:
    """Run a worker's body; report an exception to the parent instead of dying silently."""
    try:
        body()
    except BaseException:
        try:
            channel.send(("error", traceback.format_exc()))
        finally:
            raise SystemExit(1) from None


class WorkerGroup:
    """The generator processes of one scenario run; ``stop`` ends them by their own pids."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []

    def start(self, name: str, main: Callable[..., None], *args: Any) -> Worker:
        parent_end, child_end = CONTEXT.Pipe()
        process = CONTEXT.Process(target=main, args=(*args, child_end), name=name, daemon=True)
        process.start()
        child_end.close()
        worker = Worker(name, process, parent_end)
        self.workers.append(worker)
        return worker

    def send(self, workers: list[Worker], message: Message) -> None:
        for worker in workers:
            worker.channel.send(message)

    def collect(
        self,
        workers: list[Worker],
        kind: str,
        timeout: float,
        tick: Callable[[], None] = lambda: None,
    ) -> list[Any]:
        """Wait for one ``kind`` message from each worker, calling ``tick`` about ten times a second."""
        replies: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        waiting = {worker.channel: worker for worker in workers}
        while waiting:
            if time.monotonic() > deadline:
                names = ", ".join(worker.name for worker in waiting.values())
                raise WorkerFailed(f"no '{kind}' from {names} within {timeout:.0f} s")
            for channel in wait(list(waiting), timeout=0.1):
                worker = waiting.pop(channel)  # type: ignore[call-overload]
                replies[worker.name] = self._receive(worker, kind)
            tick()
        return [replies[worker.name] for worker in workers]

    def _receive(self, worker: Worker, kind: str) -> Any:
        try:
            got, payload = worker.channel.recv()
        except EOFError:
            raise WorkerFailed(f"{worker.name} exited (code {worker.process.exitcode})") from None
        if got == "error":  # the traceback's last line is the exception and its message
            raise WorkerFailed(f"{worker.name} failed: {payload.strip().splitlines()[-1]}")
        if got != kind:
            raise WorkerFailed(f"{worker.name} sent '{got}', expected '{kind}'")
        return payload

    def stop(self, grace: float = 5.0) -> None:
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.terminate()  # SIGTERM to this worker's own pid
                worker.process.join(1.0)
            worker.channel.close()
        self.workers.clear()
