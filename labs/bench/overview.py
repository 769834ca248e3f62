"""The closing table: each target's worst and best efficiency ratio, so no row hides in the crowd.

For every target other than the baseline: the lowest and the highest "msgs per CPU-s ×base"
over all throughput rows (fan-in, fan-out and QoS 1, at every load), with the row each came
from, and the conn run's ratios (connections per CPU-s, RSS per connection). A target that is
cheaper at saturation but dearer at a matched rate shows both here. The persistence row is
report only and left out.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from .tables import times, with_spread

Row = dict[str, Any]
THROUGHPUT_SCENARIOS = ("fanin", "fanout", "qos1")


def source(row: Row) -> str:
    """Where a ratio came from, e.g. 'fanout rate 20000/s', marked when it failed the rate rule."""
    text = f"{row['scenario']} {row['params'].get('load', '')}".strip()
    return text + (" [red](invalid)[/]" if row.get("valid") is False else "")


def ratio_cell(row: Row | None, metric: str) -> str:
    if row is None:
        return "–"
    return with_spread(row["ratios"].get(metric), times, row["usable"])


def extremes(summaries: list[Row], target: str) -> tuple[Row | None, Row | None]:
    """The target's throughput rows with the lowest and the highest median msgs/CPU-s ratio."""
    rated = [
        row
        for row in summaries
        if row["target"] == target
        and row["scenario"] in THROUGHPUT_SCENARIOS
        and "msgs_per_cpu_s" in row["ratios"]
    ]
    if not rated:
        return None, None
    key = lambda row: row["ratios"]["msgs_per_cpu_s"]["median"]  # noqa: E731
    return min(rated, key=key), max(rated, key=key)


def overview_table(summaries: list[Row], baseline: str | None) -> Table | None:
    """None when there is nothing to compare (no baseline, or no other target)."""
    targets = [
        target
        for target in dict.fromkeys(row["target"] for row in summaries if row["usable"])
        if target != baseline
    ]
    if not baseline or not targets:
        return None
    table = Table(
        title=f"summary — each target's worst and best msgs/CPU-s against {baseline}, and its conn ratios",
        title_justify="left",
        header_style="bold",
        caption="×base above 1 is better for msgs/CPU-s and conn/CPU-s; below 1 is better for RSS/conn",
        caption_justify="left",
    )
    for name in ("target", "worst ×base", "from", "best ×base", "from", "conn/CPU-s ×base", "RSS/conn ×base"):
        table.add_column(name, justify="left" if name in ("target", "from") else "right")
    for target in targets:
        worst, best = extremes(summaries, target)
        conn = next((row for row in summaries if row["target"] == target and row["scenario"] == "conn"), None)
        table.add_row(
            target,
            ratio_cell(worst, "msgs_per_cpu_s"),
            source(worst) if worst else "–",
            ratio_cell(best, "msgs_per_cpu_s"),
            source(best) if best else "–",
            ratio_cell(conn, "connects_per_cpu_s"),
            ratio_cell(conn, "rss_per_conn_bytes"),
        )
    return table
