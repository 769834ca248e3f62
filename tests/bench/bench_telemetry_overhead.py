"""What --telemetry costs a server: msgs per broker CPU-second with it off and on, in one run.

A watcher (TelemetryReader in a thread, as the TUI has) drains the datagrams, so the server
really formats and sends every event. Off and on alternate round by round, so a noisy
machine's drift hits both alike; the figure to quote is the ratio.

    .venv/bin/python tests/bench/bench_telemetry_overhead.py [--variant epoll_lt] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from labs.bench.progress import NullUi
from labs.bench.targets import project_target
from labs.bench.throughput import FlowSpec, run_flow
from servers.telemetry import TelemetryReader

SCENARIOS = {
    "fanin": FlowSpec("fanin", publishers=8, subscribers=1, duration=3.0),
    "fanout": FlowSpec("fanout", publishers=1, subscribers=50, duration=3.0),
}


def drain(reader: TelemetryReader, stop: threading.Event, counted: list[int]) -> None:
    import select

    while not stop.is_set():
        if select.select([reader], [], [], 0.1)[0]:
            counted[0] += len(reader.read())


def measure(variant: str, scenario: str, telemetry: bool) -> tuple[float, int]:
    """(msgs per broker CPU-second, telemetry events seen) for one fresh server."""
    broker = project_target(variant, ["--telemetry"] if telemetry else []).launch()
    stop, counted = threading.Event(), [0]
    reader = TelemetryReader(broker.address[1]) if telemetry else None
    watcher = threading.Thread(target=drain, args=(reader, stop, counted)) if reader else None
    if watcher:
        watcher.start()
    try:
        metrics, errors = run_flow(broker, SCENARIOS[scenario], NullUi(), scenario)
        assert not (errors.lost or errors.duplicated or errors.reordered), errors
        return metrics["msgs_per_cpu_s"], counted[0]
    finally:
        stop.set()
        if watcher:
            watcher.join()
        if reader:
            reader.close()
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="epoll_lt")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for scenario in SCENARIOS:
        ratios = []
        for round_number in range(1, args.rounds + 1):
            off, _ = measure(args.variant, scenario, telemetry=False)
            on, events = measure(args.variant, scenario, telemetry=True)
            ratios.append(on / off)
            print(
                f"{args.variant} {scenario} round {round_number}: off {off:,.0f} msgs/CPU-s, "
                f"on {on:,.0f} msgs/CPU-s ({events:,} events seen), on/off {on / off:.3f}",
                flush=True,
            )
        print(f"{args.variant} {scenario}: median on/off ratio {statistics.median(ratios):.3f}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
