"""Long-running live fuzzing: seed after seed against every server variant until time is up.

The same generator and runner as tests/servers/test_fuzz_live.py (tests/support/fuzz*.py),
run for as long as asked: seeds S, S+1, ... each against every chosen variant in turn. A
server that dies (exits, loses a worker thread, logs a traceback or stops answering) is
triaged (its run replayed case by case on a fresh server to find the case that kills it),
recorded, and restarted. At the end the script prints how often each case label ran, the
seeds run, every crash with its seed, case and the server's last stderr lines, and every
case whose replies did not decode (a malformed packet from the server). The exit status is
1 if there was either. Ctrl-C ends the run early and still prints the summary.

    .venv/bin/python tests/bench/fuzz_live.py --minutes 10 --seed 1000
    .venv/bin/python tests/bench/fuzz_live.py --minutes 2 --seed 1 --variants epoll_lt,select_srv \\
        --connections 48 --save /tmp/fuzz-crashes

With ``--save DIR`` each crashing case's bytes are written to DIR; ``--replay FILE`` sends one
such file to a fresh server of each chosen variant and reports whether it survived:

    .venv/bin/python tests/bench/fuzz_live.py --replay /tmp/fuzz-crashes/epoll_lt-seed7-C12.bin
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from tests.support.fuzz import FuzzCase, FuzzConfig
from tests.support.fuzz_health import (
    expected_threads,
    final_health,
    fuzz_seed,
    fuzz_server,
    server_args,
    server_health,
    settled_stderr,
    tail,
    triage,
)
from tests.support.fuzz_runner import RunResult, run_cases
from tests.support.servers import ServerProcess, available_variants


@dataclass
class Crash:
    variant: str
    seed: int
    death: str
    suspects: list[str]
    culprit: str  # the case that killed a fresh server on its own, described, or why none did
    culprit_label: str
    stderr: str


class Campaign:
    """Seeds times variants until the deadline, one live server per variant, restarted on death."""

    def __init__(self, arguments: argparse.Namespace) -> None:
        self.arguments = arguments
        self.config = FuzzConfig(
            max_topic_levels=arguments.max_topic_levels, exclude=tuple(arguments.exclude)
        )
        self.servers: dict[str, ServerProcess] = {}
        self.labels: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.crashes: list[Crash] = []
        self.malformed: list[str] = []  # cases whose replies did not decode, one line each
        self.seeds_run: list[int] = []
        self.runs = 0

    def run(self, deadline: float) -> None:
        seed = self.arguments.seed
        while time.monotonic() < deadline:
            for variant in self.arguments.variants:
                if time.monotonic() >= deadline:
                    return
                self.fuzz(variant, seed)
            self.seeds_run.append(seed)
            seed += 1

    def fuzz(self, variant: str, seed: int) -> None:
        server = self.server(variant)
        result = fuzz_seed(server, self.config, seed, self.arguments.cases, self.arguments.connections)
        self.runs += 1
        self.labels.update(case.label for case in result.cases[: result.opened])
        self.outcomes.update(result.outcomes)
        for index, problem in sorted(result.malformed.items()):
            self.malformed.append(f"{variant}, seed {seed}, C{index} {result.cases[index].label}: {problem}")
        if result.death is not None:
            self.record_crash(server, seed, result)
            server.stop()
            del self.servers[variant]  # a fresh one for the next seed
        print(f"seed {seed} {variant}: {result.death or 'ok'} ({result.seconds:.1f} s)", flush=True)

    def server(self, variant: str) -> ServerProcess:
        if variant not in self.servers:
            self.servers[variant] = ServerProcess(variant, *server_args(variant, self.config))
        return self.servers[variant]

    def record_crash(self, server: ServerProcess, seed: int, result: RunResult) -> None:
        stderr = settled_stderr(server)
        death = server_health(server, expected_threads(server.variant)) or result.death or ""
        index, triage_stderr = triage(server.variant, self.config, result)
        culprit, culprit_label = "no single case killed a fresh server", "?"
        if index is not None:
            case = result.cases[index]
            culprit, culprit_label = f"connection C{index}, {case.describe()}", case.label
            stderr = triage_stderr or stderr  # the traceback of that case alone is the clearest
            self.save(server.variant, seed, index, case.data)
        suspects = [f"C{index} {result.cases[index].label}" for index in result.suspects]
        self.crashes.append(Crash(server.variant, seed, death, suspects, culprit, culprit_label, stderr))

    def save(self, variant: str, seed: int, index: int, data: bytes) -> None:
        if self.arguments.save is not None:
            self.arguments.save.mkdir(parents=True, exist_ok=True)
            (self.arguments.save / f"{variant}-seed{seed}-C{index}.bin").write_bytes(data)

    def distinct(self) -> list[str]:
        """One line per distinct failure: the last stderr line (the exception) and the culprit's label."""
        groups: dict[tuple[str, str], list[Crash]] = {}
        for crash in self.crashes:
            last_line = (crash.stderr.strip().splitlines() or [crash.death])[-1].strip()
            groups.setdefault((last_line, crash.culprit_label), []).append(crash)
        return [
            f"  {len(crashes)} x {exception}; culprit {culprit}; variants "
            f"{', '.join(sorted({crash.variant for crash in crashes}))}"
            for (exception, culprit), crashes in groups.items()
        ]

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()

    def summary(self) -> str:
        seeds = f"{self.seeds_run[0]}..{self.seeds_run[-1]}" if self.seeds_run else "none completed"
        lines = [
            f"\n{self.runs} runs: seeds {seeds} over {', '.join(self.arguments.variants)}",
            f"cases tried: {sum(self.labels.values())}; outcomes: {dict(self.outcomes)}",
            "per label:",
            *columns([f"{count:6d} {label}" for label, count in sorted(self.labels.items())]),
            f"crashes found: {len(self.crashes)}",
            *self.distinct(),
            f"cases answered with malformed packets: {len(self.malformed)}",
            *(f"  {line}" for line in self.malformed[:20]),
        ]
        for crash in self.crashes:
            lines += [
                f"- {crash.variant}, seed {crash.seed}: {crash.death}",
                f"  culprit: {crash.culprit}",
                f"  in flight or just finished: {', '.join(crash.suspects[:12])}"
                + (" ..." if len(crash.suspects) > 12 else ""),
                "  server stderr, last lines:\n" + tail(crash.stderr, 12),
            ]
        return "\n".join(lines)


def columns(entries: list[str], per_line: int = 2, width: int = 64) -> list[str]:
    """Entries side by side, so a few hundred labels stay readable."""
    return [
        "".join(entry.ljust(width) for entry in entries[start : start + per_line]).rstrip()
        for start in range(0, len(entries), per_line)
    ]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, help="how long to fuzz")
    parser.add_argument("--seed", type=int, help="first seed; each round uses the next")
    parser.add_argument("--variants", default=",".join(available_variants()), help="comma-separated")
    parser.add_argument(
        "--connections", type=int, default=40, help="concurrent fuzz connections (default 40)"
    )
    parser.add_argument("--cases", type=int, default=200, help="cases per seed (default 200)")
    parser.add_argument(
        "--max-topic-levels",
        type=int,
        default=FuzzConfig().max_topic_levels,
        help="the servers' limit; raise it past 65536 to let the deepest topics reach the trie",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="REGEX",
        help="never generate cases whose label matches (repeatable): skip a known bug to find the next",
    )
    parser.add_argument("--save", type=Path, default=None, help="directory for crashing cases' bytes")
    parser.add_argument("--replay", type=Path, default=None, help="send this file's bytes, then check health")
    arguments = parser.parse_args()
    if arguments.replay is None and (arguments.minutes is None or arguments.seed is None):
        parser.error("--minutes and --seed are required (unless --replay)")
    arguments.variants = [name for name in arguments.variants.split(",") if name]
    unknown = set(arguments.variants) - set(available_variants())
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if "select_srv" in arguments.variants and arguments.connections > 900:
        parser.error("select_srv cannot watch fds >= 1024: use at most 900 --connections")
    return arguments


def replay(path: Path, variants: list[str]) -> int:
    """Send one saved case to a fresh server of each variant; 1 if any of them died of it."""
    config = FuzzConfig()
    case = FuzzCase(path.name, (path.read_bytes(),), close="fin")
    deaths = 0
    for variant in variants:
        with fuzz_server(variant, config) as server:
            run_cases(server.port, [case], partial(server_health, server, expected_threads(variant)), 1)
            death = final_health(server)
            print(f"{variant}: {death or 'survived'}")
            if death is not None:
                deaths += 1
                print(tail(settled_stderr(server), 12))
    return 1 if deaths else 0


def main() -> int:
    arguments = parse_arguments()
    if arguments.replay is not None:
        return replay(arguments.replay, arguments.variants)
    campaign = Campaign(arguments)
    try:
        campaign.run(time.monotonic() + 60 * arguments.minutes)
    except KeyboardInterrupt:
        print("interrupted: summary so far", flush=True)
    finally:
        campaign.close()
    print(campaign.summary())
    return 1 if campaign.crashes or campaign.malformed else 0


if __name__ == "__main__":
    sys.exit(main())
