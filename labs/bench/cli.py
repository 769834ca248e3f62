"""The ``labs/compare.py`` command line: choose targets and scenarios, run them, report.

Exit status: 0 when every figure is clean, 1 when any error was counted (or a run failed),
2 for bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from . import environment, plots, report, summary
from .persistence import with_persistence
from .plan import plan
from .progress import NullUi, RichUi
from .references import reference_targets
from .suite import SCENARIOS, Settings, Suite
from .targets import (
    PROJECT_VARIANTS,
    REFERENCE_BROKERS,
    REPO_ROOT,
    Target,
    external_target,
    project_target,
    sink_target,
)

DEFAULT_PLOTS = REPO_ROOT / "labs" / "out" / "compare"
TARGET_NAMES = (*PROJECT_VARIANTS, *REFERENCE_BROKERS)
SETTING_FLAGS = {  # flag -> Settings field (only flags given on the command line override a preset)
    "duration": "duration",
    "publishers": "publishers",
    "subscribers": "subscribers",
    "procs": "procs",
    "rate": "rates",
    "saturation": "saturation",
    "repeat": "repeat",
    "window": "window",
    "payload": "payload",
    "clients": "clients",
    "in_flight": "in_flight",
    "idle_points": "idle_points",
    "idle_rate": "idle_rate",
    "idle_duration": "idle_duration",
}


def names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def rate_list(text: str) -> tuple[float, ...]:
    """``--rate 10000,50000``: deliveries/s of each matched-rate run; 0 (alone or listed) adds none."""
    try:
        rates = [float(name) for name in names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if any(rate < 0 for rate in rates):
        raise argparse.ArgumentTypeError("rates cannot be negative")
    return tuple(dict.fromkeys(rate for rate in rates if rate > 0))


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python labs/compare.py",
        description="Benchmark this project's server variants and reference MQTT brokers side by side.",
    )
    what = parser.add_argument_group("what to run")
    what.add_argument("--quick", action="store_true", help="a look in under 90 s (see labs/COMPARE.md)")
    what.add_argument(
        "--selftest", action="store_true", help="measure the load generator against a trivial sink"
    )
    what.add_argument(
        "--target", metavar="HOST:PORT", help="benchmark a running broker (client-side figures only)"
    )
    what.add_argument(
        "--only",
        type=names,
        action="extend",
        default=[],
        metavar="NAMES",
        help=f"comma-separated targets and/or scenarios to run ({', '.join(SCENARIOS)})",
    )
    what.add_argument(
        "--skip",
        type=names,
        action="extend",
        default=[],
        metavar="NAMES",
        help="comma-separated targets and/or scenarios to leave out",
    )
    what.add_argument(
        "--server-args",
        default="",
        metavar='"ARGS"',
        help="extra flags for this project's servers, e.g. --server-args=--telemetry",
    )
    what.add_argument("--baseline", help="target the ratios divide by (default: mosquitto when present)")
    what.add_argument(
        "--repeat",
        type=positive,
        metavar="N",
        help="run each (scenario run, target) N times, interleaved; tables show medians and min–max (1)",
    )
    what.add_argument(
        "--no-saturation",
        dest="saturation",
        action="store_const",
        const=False,
        help="skip the saturation fan-in / fan-out runs (matched rates only)",
    )
    sizes = parser.add_argument_group("sizes (defaults: the full run; --quick shrinks them)")
    sizes.add_argument(
        "--duration", type=float, help="seconds per fan-in / fan-out / QoS 1 run (3; 1 in flight: at most 2)"
    )
    sizes.add_argument("--publishers", type=int, help="fan-in publishers (8)")
    sizes.add_argument("--subscribers", type=int, help="fan-out subscribers (50)")
    sizes.add_argument("--procs", type=int, help="generator processes on the busy side (2)")
    sizes.add_argument(
        "--rate",
        type=rate_list,
        metavar="R[,R...]",
        help="deliveries/s of the matched-rate fan-in and fan-out runs, one pair per rate; 0 = none (20000)",
    )
    sizes.add_argument("--window", type=int, help="messages publishers may run ahead of subscribers (1000)")
    sizes.add_argument("--payload", type=int, help="payload bytes (64)")
    sizes.add_argument("--clients", type=int, help="idle clients in the conn scenario (10000; up to 19000)")
    sizes.add_argument("--in-flight", type=int, help="QoS 1 PUBLISHes in flight (100)")
    sizes.add_argument(
        "--idle-points",
        type=lambda text: tuple(int(count) for count in names(text)),
        help="idle connection counts for idle-scaling (0,100,1000,5000,15000)",
    )
    sizes.add_argument("--idle-rate", type=float, help="msgs/s of idle-scaling's paced pair (5000)")
    sizes.add_argument("--idle-duration", type=float, help="seconds per idle-scaling point (3)")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json", type=Path, metavar="FILE", help="write every raw figure and the environment"
    )
    output.add_argument(
        "--plots",
        type=Path,
        default=DEFAULT_PLOTS,
        metavar="DIR",
        help="where the PNG plots go (default labs/out/compare)",
    )
    output.add_argument("--no-plots", action="store_true")
    output.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def settings_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    overrides = {
        field: getattr(args, flag) for flag, field in SETTING_FLAGS.items() if getattr(args, flag) is not None
    }
    settings = Settings.quick_run(**overrides) if args.quick else Settings(**overrides)
    if args.selftest:
        rates = overrides.get("rates", ())  # the selftest measures saturation unless asked for a rate
        settings = dataclasses.replace(settings, scenarios=("fanin", "fanout"), rates=rates)
    chosen = [name for name in args.only if name in SCENARIOS]
    scenarios = [
        name for name in settings.scenarios if (not chosen or name in chosen) and name not in args.skip
    ]
    scenarios += [
        name for name in chosen if name not in settings.scenarios and name not in args.skip
    ]  # e.g. --quick --only qos1
    if not scenarios:
        parser.error("no scenario left to run")
    settings = dataclasses.replace(settings, scenarios=tuple(name for name in SCENARIOS if name in scenarios))
    if not plan(settings):  # e.g. --only fanin --no-saturation --rate 0
        parser.error("no run left: --no-saturation needs at least one --rate, or another scenario")
    return settings


def wanted_targets(args: argparse.Namespace) -> list[str]:
    """Target names to run: those --only names, else all (--quick: ours and mosquitto), minus --skip."""
    chosen = [name for name in args.only if name in TARGET_NAMES]
    if chosen:
        names = [name for name in TARGET_NAMES if name in chosen]
    elif args.quick:
        names = [*PROJECT_VARIANTS, "mosquitto"]
    else:
        names = list(TARGET_NAMES)
    return [name for name in names if name not in args.skip]


def select_targets(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Target]:
    if args.target:
        host, _, port = args.target.rpartition(":")
        if not host or not port.isdigit():
            parser.error(f"--target wants HOST:PORT, got {args.target!r}")
        return [external_target(host, int(port))]
    if args.selftest:
        return [sink_target()]
    server_args = shlex.split(args.server_args)
    wanted = wanted_targets(args)
    # Only a run that wants aedes installs it (one line on stderr says so).
    references = reference_targets(install_aedes="aedes" in wanted, say=Console(stderr=True).print)
    targets = [project_target(module, server_args) for module in PROJECT_VARIANTS] + references
    return [with_persistence(target, server_args) for target in targets if target.name in wanted]


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [name for name in [*args.only, *args.skip] if name not in (*TARGET_NAMES, *SCENARIOS)]
    if unknown:
        parser.error(f"unknown target or scenario: {', '.join(unknown)}")
    settings = settings_from(args, parser)
    targets = select_targets(args, parser)
    if args.baseline and args.baseline not in [target.name for target in targets]:
        parser.error(f"--baseline {args.baseline} is not among the targets")
    return execute(args, argv, settings, targets)


def execute(args: argparse.Namespace, argv: list[str], settings: Settings, targets: list[Target]) -> int:
    console, status = Console(), Console(stderr=True)
    if not console.is_terminal:  # piped or redirected: wide enough that no figure is cut
        console = Console(width=200)
    started = time.monotonic()
    rows = _run_suite(targets, settings, status, quiet=args.quiet)
    elapsed = time.monotonic() - started
    baseline = report.pick_baseline(rows, args.baseline)
    summaries = summary.summarize(rows, baseline)
    report.print_tables(console, summaries, baseline, settings.repeat)
    if args.selftest:
        print_selftest(console, rows)
    console.print(f"finished in {elapsed:.1f} s")
    if args.json:
        env = environment.collect(argv, dataclasses.asdict(settings), baseline)
        env["wall_s"] = round(elapsed, 2)
        env["server_args"] = args.server_args
        report.write_json(args.json, env, rows, summaries)
        console.print(f"JSON: {args.json}")
    if not args.no_plots:
        for path in plots.write_plots(summaries, args.plots):
            console.print(f"plot: {path}")
    code = report.exit_status(rows)
    if code:
        console.print("[bold red]errors were counted or a run failed: exit status 1[/]")
    return code


def _run_suite(
    targets: list[Target], settings: Settings, status: Console, quiet: bool
) -> list[dict[str, Any]]:
    if quiet:
        return Suite(targets, settings, NullUi()).run()
    suite = Suite(targets, settings, NullUi())
    with RichUi(status, suite.run_count()) as ui:
        suite.ui, suite.advance = ui, ui.advance
        return suite.run()


def print_selftest(console: Console, rows: list[dict[str, Any]]) -> None:
    """The generator's ceiling against the trivial sink, with the CPU each side used to reach it."""
    for row in rows:
        if row["status"] == "ok" and row["msgs_per_s"]:
            duration = row["duration_s"] or 1.0
            console.print(
                f"generator capacity, {row['scenario']}: [bold]{row['msgs_per_s']:,.0f}[/] deliveries/s "
                f"(generator {100 * (row['generator_cpu_s'] or 0) / duration:.0f} % of a core, "
                f"sink {100 * (row['broker_cpu_s'] or 0) / duration:.0f} %)"
            )
