"""The figures for people (tables, from ``tables`` and ``overview``) and for tools (JSON).

Each table is one scenario run, one row per target. "×base" divides a target's figure by the
baseline's from the same run (and the same repeat), which is the number to trust on a noisy
machine. The JSON keeps every raw row (one per repeat) and the summaries the tables show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from .overview import overview_table
from .results import SCHEMA_VERSION, error_total, run_key
from .tables import columns_for, idle_table, missing_table, run_table

Row = dict[str, Any]


def write_json(path: Path, environment: dict[str, Any], rows: list[Row], summaries: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"schema": SCHEMA_VERSION, "environment": environment, "results": rows, "summary": summaries}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def pick_baseline(rows: list[Row], wanted: str | None) -> str | None:
    names = [row["target"] for row in rows if row["status"] in ("ok", "capped")]
    if wanted and wanted in names:
        return wanted
    return "mosquitto" if "mosquitto" in names else (names[0] if names else None)


def print_tables(console: Console, summaries: list[Row], baseline: str | None, repeats: int = 1) -> None:
    """Every run's table, the idle-scaling table, then the worst/best summary."""
    missing = {row["target"]: row["note"] for row in summaries if row["status"] == "not available"}
    if missing:
        console.print(missing_table(missing))
    summaries = [row for row in summaries if row["status"] != "not available"]
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in summaries:
        if row["scenario"] != "idle-scaling":
            groups.setdefault(run_key(row), []).append(row)
    spread = f", median of {repeats} repeats (min–max below)" if repeats > 1 else ""
    for (scenario, detail), group in groups.items():
        has_base = any(row["target"] == baseline and row["usable"] for row in group)
        against = f" — ratios against {baseline}" if has_base else ""
        title = f"{scenario} {detail}".strip() + against + spread
        console.print(run_table(title, group, columns_for(scenario, group)))
    idle = [row for row in summaries if row["scenario"] == "idle-scaling"]
    if idle:
        console.print(idle_table(idle))
    overview = overview_table(summaries, baseline)
    if overview is not None:
        console.print(overview)


def exit_status(rows: list[Row]) -> int:
    """0 when every figure is clean; 1 when any error was counted or any run failed."""
    return 1 if any(error_total(row) or row["status"] == "failed" for row in rows) else 0
