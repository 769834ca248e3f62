"""Is a fuzzed server still well? Liveness, responsiveness, and pinning a death on one case.

``server_health`` is what the fuzz runner polls: the process must be alive; for the threaded
variant, so must every named thread (a worker that dies of an exception leaves the process
running but its connections unserved); and stderr must hold no traceback (a fault barrier
that contains a bug would otherwise hide it). ``final_health`` adds a probe that pings
through every worker, the verdict once a run is over. ``fuzz_seed`` runs one seed and gives
that verdict; ``triage`` replays a dead run's cases one at a time on a fresh server to find
the case that kills it, and ``explain_death`` turns all that into a failure message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Iterator, Sequence

from mqtt.packets import Pingreq, Pingresp

from .clients import RawClient
from .fuzz import FuzzConfig, generate
from .fuzz_runner import RunResult, run_cases
from .servers import ServerProcess

THREADED = "threaded_boss_worker"
TRACEBACK = "Traceback (most recent call last)"
WORKERS = 2  # the threaded variant's default, passed explicitly so the expected threads are known


def server_args(variant: str, config: FuzzConfig) -> list[str]:
    return [*config.server_flags(), *(("--workers", str(WORKERS)) if variant == THREADED else ())]


def expected_threads(variant: str) -> tuple[str, ...]:
    """Kernel thread names that must stay alive (threaded variant: boss and each worker)."""
    if variant != THREADED:
        return ()
    return ("boss", *(f"worker-{index}" for index in range(1, WORKERS + 1)))


def probe_count(variant: str) -> int:
    """Probe connections that reach every worker: the boss hands them out round robin."""
    return WORKERS if variant == THREADED else 1


@contextlib.contextmanager
def fuzz_server(variant: str, config: FuzzConfig) -> Iterator[ServerProcess]:
    """A server with the fuzz limits; stopped on the way out, whatever happened."""
    server = ServerProcess(variant, *server_args(variant, config))
    try:
        yield server
    finally:
        server.stop()


def server_health(server: ServerProcess, threads: Sequence[str] = ()) -> str | None:
    """None while the server is well: process and ``threads`` alive, no traceback on stderr.

    A traceback counts as a death even when the process lives on: a fault barrier that
    contains a bug (closing one connection) would otherwise hide it from the fuzzer.
    """
    code = server.process.poll()
    if code is not None:
        return f"exited with status {code}"
    if threads:
        alive = server.thread_names()
        missing = [name for name in threads if name not in alive]
        if missing and server.process.poll() is None:
            return f"lost thread(s) {', '.join(missing)} (alive: {', '.join(sorted(alive))})"
    if TRACEBACK in server.stderr():
        return "logged a traceback"
    return None


def settled_stderr(server: ServerProcess, quiet: float = 0.3, timeout: float = 3.0) -> str:
    """The server's stderr once a traceback being written has ended (exit, or no growth for a while)."""
    deadline = time.monotonic() + timeout
    text, unchanged_since = server.stderr(), time.monotonic()
    while time.monotonic() < deadline and server.process.poll() is None:
        time.sleep(0.02)  # polling interval; the deadline bounds the wait
        latest = server.stderr()
        if latest != text:
            text, unchanged_since = latest, time.monotonic()
        elif time.monotonic() - unchanged_since >= quiet:
            break
    return server.stderr()


def final_health(server: ServerProcess, settle: float = 3.0) -> str | None:
    """``server_health`` after a probe through every worker: the verdict once the fuzz is over.

    The probe is the barrier: a server that dies of the last bytes sent may still be exiting
    (its sockets already closed) when the runner finishes; one that does not answer is dead
    or hung, and we wait a little for it to say which.
    """
    threads = expected_threads(server.variant)
    unanswered = responsive(server, probe_count(server.variant), timeout=settle)
    if unanswered is None:
        return server_health(server, threads)
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        death = server_health(server, threads)
        if death is not None:
            return death
        time.sleep(0.01)  # polling interval; the deadline bounds the wait
    return f"stopped answering ({unanswered})"


def responsive(server: ServerProcess, connections: int = 1, timeout: float = 3.0) -> str | None:
    """None if ``connections`` fresh clients (one per worker, round robin) each get a PINGRESP."""
    for index in range(connections):
        client = None
        try:
            client = RawClient(server.port)
            client.connect(f"fuzz-probe-{index}")
            client.send(Pingreq())
            client.expect(Pingresp, timeout)
        except (OSError, AssertionError) as error:
            return f"probe {index} got no answer: {error!r}"
        finally:
            if client is not None:
                client.close()
    return None


def fuzz_seed(
    server: ServerProcess, config: FuzzConfig, seed: int, count: int, concurrency: int
) -> RunResult:
    """Run one seed's cases against ``server``, then give the verdict (``result.death``)."""
    threads = expected_threads(server.variant)
    cases = generate(seed, count, config)
    result = run_cases(server.port, cases, lambda: server_health(server, threads), concurrency=concurrency)
    if result.death is None:
        death = final_health(server)
        if death is not None:
            result.blame_all(death)
    return result


def triage(
    variant: str, config: FuzzConfig, result: RunResult, budget: float = 30.0
) -> tuple[int | None, str]:
    """Replay a death's cases one by one on a fresh server: (the first that kills it, its stderr).

    The suspects go first, then every other case the run opened, in their original order, so
    a death that needs earlier cases' state (a retained message, a session) is found too.
    Reading cases close with a FIN and wait for the server's close, so the server has
    processed every byte before the next case starts; a probe then checks it still answers.
    """
    threads = expected_threads(variant)
    others = [index for index in range(result.opened) if index not in result.suspects]
    deadline = time.monotonic() + budget
    with fuzz_server(variant, config) as server:
        for index in [*result.suspects, *others]:
            if time.monotonic() > deadline:
                break
            case = result.cases[index]
            replay = dataclasses.replace(case, close="fin") if case.reads else case
            health = functools.partial(server_health, server, threads)
            run_cases(server.port, [replay], health, concurrency=1, linger=1.0)
            if final_health(server, settle=2.0) is not None:
                return index, settled_stderr(server)
    return None, ""


def explain_death(server: ServerProcess, config: FuzzConfig, seed: int, result: RunResult) -> str:
    """The failure message for a run that ended in a death: settle, re-check, triage, report."""
    stderr = settled_stderr(server)
    # Once the traceback is complete the process may have exited or the thread ended: say so.
    result.death = server_health(server, expected_threads(server.variant)) or result.death
    culprit = triage(server.variant, config, result)
    return crash_report(server.variant, seed, result, stderr, culprit)


def crash_report(
    variant: str, seed: int, result: RunResult, stderr: str, culprit: tuple[int | None, str]
) -> str:
    """Seed, suspects, the triaged culprit with its bytes, and the server's last stderr lines."""
    suspects = ", ".join(f"C{index} {result.cases[index].label}" for index in result.suspects) or "none"
    lines = [
        f"{variant} {result.death} while fuzzed with seed {seed} "
        f"({result.opened} of {len(result.cases)} cases opened).",
        f"Suspects (in flight or just ended when the death was seen; every case if only the final"
        f" probe saw it): {suspects}",
    ]
    index, triage_stderr = culprit
    if index is None:
        lines.append("Triage: replaying the cases one by one on a fresh server did not kill it.")
    else:
        lines.append(
            f"Triage: replayed one by one on a fresh server, seed {seed} connection C{index} killed it:"
        )
        lines.append(f"  {result.cases[index].describe()}")
        lines.append("  its stderr there, last lines:\n" + tail(triage_stderr, 6))
    lines.append("Server stderr, last lines:\n" + tail(stderr, 30))
    return "\n".join(lines)


def malformed_report(variant: str, seed: int, result: RunResult, most: int = 8) -> str:
    """The cases whose replies did not decode: the server built a malformed packet."""
    lines = [f"{variant} sent malformed packets while fuzzed with seed {seed}:"]
    for index, problem in sorted(result.malformed.items())[:most]:
        lines.append(f"  C{index} {result.cases[index].describe()}\n    server output: {problem}")
    return "\n".join(lines)


def tail(text: str, count: int) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-count:])
