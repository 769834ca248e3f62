"""The figures for people (rich tables with ratios against a baseline) and for tools (JSON).

Each table is one scenario run, one row per target. "×base" divides a target's figure by the
baseline's from the same run, which is the number to trust on a noisy machine. Error counters
are printed in every table, and in red when they are not zero.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .results import ERROR_KEYS, SCHEMA_VERSION, error_total, run_key

Row = dict[str, Any]


def write_json(path: Path, environment: dict[str, Any], rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"schema": SCHEMA_VERSION, "environment": environment, "results": rows}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def number(value: float | None, digits: int = 0, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value / scale:,.{digits}f}"


def ratio(value: float | None, base: float | None) -> str:
    return "–" if not value or not base else f"{value / base:.2f}×"


def errors_text(row: Row) -> str:
    errors = row["errors"]
    text = "/".join(f"{errors[key]}" for key in ERROR_KEYS)
    return f"[bold red]{text}[/]" if error_total(row) else f"[green]{text}[/]"


def status_text(row: Row) -> str:
    status = row["status"]
    colour = {"ok": "green", "capped": "yellow", "not available": "dim", "failed": "bold red"}[status]
    return f"[{colour}]{status}[/]"


def pick_baseline(rows: list[Row], wanted: str | None) -> str | None:
    names = [row["target"] for row in rows if row["status"] in ("ok", "capped")]
    if wanted and wanted in names:
        return wanted
    return "mosquitto" if "mosquitto" in names else (names[0] if names else None)


ERRORS_HEADER = "lost/dup/reord/disc"
Column = tuple[str, Callable[[Row, Row | None], str]]

FLOW_COLUMNS: list[Column] = [
    ("msgs/s", lambda row, base: number(row["msgs_per_s"])),
    ("×base", lambda row, base: ratio(row["msgs_per_s"], base and base["msgs_per_s"])),
    ("msgs/CPU-s", lambda row, base: number(row["msgs_per_cpu_s"])),
    ("×base", lambda row, base: ratio(row["msgs_per_cpu_s"], base and base["msgs_per_cpu_s"])),
    ("CPU %", lambda row, base: cpu_share(row, "broker_cpu_s")),
    ("gen CPU %", lambda row, base: cpu_share(row, "generator_cpu_s")),
    ("RSS MB", lambda row, base: number(row["broker_rss_bytes"], 1, 1e6)),
    ("p50/p99 ms", lambda row, base: latency(row["latency_us"])),
]
QOS1_COLUMNS: list[Column] = [
    *FLOW_COLUMNS[:4],
    ("PUBACK p50/p99 ms", lambda row, base: latency(row.get("puback_rtt_us"))),
    ("unacked", lambda row, base: number(row.get("unacked"))),
]
CONN_COLUMNS: list[Column] = [
    ("connected", lambda row, base: f"{number(row.get('connected'))}/{number(row.get('requested'))}"),
    ("connect s", lambda row, base: number(row.get("connect_s"), 2)),
    ("conn/s", lambda row, base: number(row.get("connects_per_s"))),
    ("handshake p50/p99 ms", lambda row, base: latency(row.get("handshake_us"))),
    ("RSS/conn KB", lambda row, base: number(row.get("rss_per_conn_bytes"), 1, 1e3)),
    (
        "×base",
        lambda row, base: ratio(row.get("rss_per_conn_bytes"), base and base.get("rss_per_conn_bytes")),
    ),
    ("got final", lambda row, base: number(row.get("delivered"))),
]


def cpu_share(row: Row, key: str) -> str:
    """CPU as a percentage of one core over the run (a broker well below 100 % was not the bottleneck)."""
    cpu, duration = row[key], row["duration_s"]
    return "–" if cpu is None or not duration else f"{100 * cpu / duration:.0f}"


def latency(value: dict[str, float] | None) -> str:
    return "–" if not value else f"{value['p50'] / 1000:.2f} / {value['p99'] / 1000:.2f}"


def print_tables(console: Console, rows: list[Row], baseline: str | None) -> None:
    missing = {row["target"]: row["note"] for row in rows if row["status"] == "not available"}
    if missing:
        console.print(missing_table(missing))
    rows = [row for row in rows if row["status"] != "not available"]
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row["scenario"] != "idle-scaling":
            groups.setdefault(run_key(row), []).append(row)
    for (scenario, detail), group in groups.items():
        columns = {"conn": CONN_COLUMNS, "qos1": QOS1_COLUMNS}.get(scenario, FLOW_COLUMNS)
        base = next((row for row in group if row["target"] == baseline and row["status"] != "failed"), None)
        title = f"{scenario} {detail}".strip() + (f" — ratios against {baseline}" if base else "")
        console.print(_table(title, group, columns, base))
    idle = [row for row in rows if row["scenario"] == "idle-scaling"]
    if idle:
        console.print(idle_table(idle))


def _table(title: str, rows: list[Row], columns: list[Column], base: Row | None) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("target")
    table.add_column("status")
    for name, _ in columns:
        table.add_column(name, justify="right")
    table.add_column(ERRORS_HEADER, justify="right")
    table.add_column("note", overflow="fold", max_width=40)
    for row in rows:
        usable = row["status"] in ("ok", "capped")
        cells = [render(row, base) if usable else "" for _, render in columns]
        table.add_row(
            row["target"], status_text(row), *cells, errors_text(row) if usable else "", row["note"][:200]
        )
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
        table.add_row(target, *cells, errors_text({"errors": errors}), note[:200])
    return table


def _idle_cell(row: Row | None) -> str:
    if row is None:
        return "–"
    if row["status"] == "capped":
        return f"[yellow]cap at {row.get('idle_connected') or 0:,}[/]"
    if row["status"] != "ok":
        return f"[dim]{row['status']}[/]"
    return number(row["cpu_us_per_msg"], 1)


def exit_status(rows: list[Row]) -> int:
    """0 when every figure is clean; 1 when any error was counted or any run failed."""
    return 1 if any(error_total(row) or row["status"] == "failed" for row in rows) else 0
