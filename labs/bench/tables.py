"""Rich tables of summaries: one per scenario run, one row per target, ratios against a baseline.

A cell shows a figure's median over the repeats; under ``--repeat N`` (N > 1) a dim second line
gives its spread, min–max. "×base" is the median of per-repeat ratios (target ÷ baseline in
the same repeat), with the min–max of those ratios below it. Error counters (summed over the
repeats) are printed in every table, and in red when they are not zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.table import Table

from .results import ERROR_KEYS

Row = dict[str, Any]
Render = Callable[[Row], str]
Column = tuple[str, Render]
ERRORS_HEADER = "lost/dup/reord/disc"


def number(value: float | None, digits: int = 0, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value / scale:,.{digits}f}"


def times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def with_spread(found: dict[str, float] | None, text: Callable[[float], str], repeats: int) -> str:
    """The median, and below it (only when there were several repeats) the dim min–max."""
    if not found:
        return "–"
    if repeats <= 1:
        return text(found["median"])
    return f"{text(found['median'])}\n[dim]{text(found['min'])}–{text(found['max'])}[/]"


def figure(metric: str, digits: int = 0, scale: float = 1.0) -> Render:
    return lambda row: with_spread(
        row["figures"].get(metric), lambda value: number(value, digits, scale), row["usable"]
    )


def times_base(metric: str) -> Render:
    return lambda row: with_spread(row["ratios"].get(metric), times, row["usable"])


def percentiles(key: str) -> Render:
    """``p50 / p99`` in milliseconds, each with its own spread."""

    def render(row: Row) -> str:
        p50, p99 = row["figures"].get(f"{key}.p50"), row["figures"].get(f"{key}.p99")
        if not p50 or not p99:
            return "–"
        milliseconds = lambda value: f"{value / 1000:.2f}"  # noqa: E731
        text = f"{milliseconds(p50['median'])} / {milliseconds(p99['median'])}"
        if row["usable"] > 1:
            low = f"{milliseconds(p50['min'])}–{milliseconds(p50['max'])}"
            high = f"{milliseconds(p99['min'])}–{milliseconds(p99['max'])}"
            text += f"\n[dim]{low} / {high}[/]"
        return text

    return render


def validity(row: Row) -> str:
    """Matched-rate runs: is this row a fair comparison (see validity.py)?"""
    if "valid" not in row:
        return "–"
    if row["valid"]:
        return "[green]yes[/]"
    counted = f" ({row['valid_repeats']}/{row['usable']} ok)" if row["usable"] > 1 else ""
    return f"[bold red]no[/]: {', '.join(row['invalid_reasons'])}{counted}"


FLOW_COLUMNS: list[Column] = [
    ("msgs/s", figure("msgs_per_s")),
    ("×base", times_base("msgs_per_s")),
    ("msgs/CPU-s", figure("msgs_per_cpu_s")),
    ("×base", times_base("msgs_per_cpu_s")),
    ("CPU %", figure("broker_cpu_s_pct")),
    ("gen CPU %", figure("generator_cpu_s_pct")),
    ("RSS MB", figure("broker_rss_bytes", 1, 1e6)),
    ("p50/p99 ms", percentiles("latency_us")),
]
RATE_COLUMNS: list[Column] = [*FLOW_COLUMNS, ("valid", validity)]
QOS1_COLUMNS: list[Column] = [
    *FLOW_COLUMNS[:4],
    ("PUBACK p50/p99 ms", percentiles("puback_rtt_us")),
    ("unacked", figure("unacked")),
]
CONN_COLUMNS: list[Column] = [
    (
        "connected",
        lambda row: f"{number(_median(row, 'connected'))}/{number(_median(row, 'requested'))}",
    ),
    ("connect s", figure("connect_s", 2)),
    ("conn/s", figure("connects_per_s")),
    ("conn/CPU-s", figure("connects_per_cpu_s")),
    ("×base", times_base("connects_per_cpu_s")),
    ("handshake p50/p99 ms", percentiles("handshake_us")),
    ("RSS/conn KB", figure("rss_per_conn_bytes", 1, 1e3)),
    ("×base", times_base("rss_per_conn_bytes")),
    ("got final", figure("delivered")),
]


def columns_for(scenario: str, rows: list[Row]) -> list[Column]:
    if scenario == "conn":
        return CONN_COLUMNS
    if scenario in ("qos1", "qos1-persist"):
        return QOS1_COLUMNS
    return RATE_COLUMNS if any("valid" in row for row in rows) else FLOW_COLUMNS


def _median(row: Row, metric: str) -> float | None:
    found = row["figures"].get(metric)
    return found["median"] if found else None


def errors_text(errors: dict[str, int]) -> str:
    text = "/".join(f"{errors[key]}" for key in ERROR_KEYS)
    return f"[bold red]{text}[/]" if sum(errors.values()) else f"[green]{text}[/]"


def status_text(row: Row) -> str:
    status = row["status"]
    colour = {"ok": "green", "capped": "yellow", "not available": "dim", "failed": "bold red"}[status]
    mixed = f" {row['statuses'][status]}/{row['repeats']}" if len(row.get("statuses", {})) > 1 else ""
    return f"[{colour}]{status}{mixed}[/]"


def run_table(title: str, rows: list[Row], columns: list[Column]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("target")
    table.add_column("status")
    for name, _ in columns:
        table.add_column(name, justify="right")
    table.add_column(ERRORS_HEADER, justify="right")
    table.add_column("note", overflow="fold", max_width=40)
    for row in rows:
        usable = row["usable"] > 0
        cells = [render(row) if usable else "" for _, render in columns]
        errors = errors_text(row["errors"]) if usable else ""
        table.add_row(row["target"], status_text(row), *cells, errors, row["note"][:200])
    return table


def missing_table(missing: dict[str, str]) -> Table:
    table = Table(title="not available on this machine", title_justify="left", header_style="bold")
    table.add_column("target")
    table.add_column("why, and how to get it")
    for target, reason in missing.items():
        table.add_row(target, reason)
    return table


def idle_table(rows: list[Row]) -> Table:
    """Broker CPU µs per delivered message, one column per idle-connection count."""
    points = sorted({row["params"].get("idle", 0) for row in rows if "idle" in row["params"]})
    table = Table(
        title="idle-scaling — broker CPU µs per delivered message (paced pair)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("target")
    for point in points:
        table.add_column(f"{point:,} idle", justify="right")
    table.add_column(ERRORS_HEADER, justify="right")
    table.add_column("note", overflow="fold", max_width=40)
    for target in dict.fromkeys(row["target"] for row in rows):
        mine = [row for row in rows if row["target"] == target]
        by_point = {row["params"].get("idle"): row for row in mine}
        cells = [_idle_cell(by_point.get(point)) for point in points]
        errors = {key: sum(row["errors"][key] for row in mine) for key in ERROR_KEYS}
        note = "; ".join(dict.fromkeys(row["note"] for row in mine if row["note"]))
        table.add_row(target, *cells, errors_text(errors), note[:200])
    return table


def _idle_cell(row: Row | None) -> str:
    if row is None:
        return "–"
    if row["status"] == "capped":
        return f"[yellow]cap at {number(_median(row, 'idle_connected'))}[/]"
    if row["status"] != "ok":
        return f"[dim]{row['status']}[/]"
    return figure("cpu_us_per_msg", 1)(row)
