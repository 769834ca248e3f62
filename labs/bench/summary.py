"""Raw rows to one summary per (scenario run, target): medians, spreads and ratios over repeats.

With ``--repeat N`` each (run, target) pair has N raw rows. Its summary holds, for every
figure, the median and the spread (min and max) of the N values, and for the figures that
are compared across targets the ratio to the baseline: one ratio per repeat (each divides two
figures measured moments apart in the same repeat), then their median, min and max. With
N = 1 every median is simply the one value, and min = max.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from .results import COMMON_KEYS, ERROR_KEYS, SCENARIO_KEYS, run_key
from .validity import verdicts

Row = dict[str, Any]
USABLE = ("ok", "capped")
STATUS_ORDER = ("ok", "capped", "failed", "not available")  # a summary shows its worst repeat's
RATIO_METRICS = (
    "msgs_per_s",
    "msgs_per_cpu_s",
    "connects_per_s",
    "connects_per_cpu_s",
    "rss_per_conn_bytes",
)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max (the median of an even count is the mean of the middle two)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def figures_of(row: Row) -> dict[str, float]:
    """Every numeric figure of a row under a flat name (``latency_us.p50``), plus CPU shares in %."""
    figures: dict[str, float] = {}
    for key in (*COMMON_KEYS, *SCENARIO_KEYS.get(row["scenario"], ())):
        value = row.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            figures[key] = float(value)
        elif isinstance(value, dict) and key.endswith("_us"):  # percentiles: p50, p99, max
            figures.update({f"{key}.{name}": float(number) for name, number in value.items()})
    duration = row.get("duration_s")
    for key in ("broker_cpu_s", "generator_cpu_s"):
        if duration and row.get(key) is not None:
            figures[f"{key}_pct"] = 100 * row[key] / duration  # % of one core over the run
    return figures


def _spreads(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    names = dict.fromkeys(name for sample in samples for name in sample)
    return {name: spread([sample[name] for sample in samples if name in sample]) for name in names}


def summarize(rows: list[Row], baseline: str | None) -> list[Row]:
    """One summary per (run, target), in the order the runs first appear."""
    groups: dict[tuple[tuple[str, str], str], list[Row]] = {}
    for row in rows:
        groups.setdefault((run_key(row), row["target"]), []).append(row)
    bases = {
        (run_key(row), row.get("repeat", 0)): row
        for row in rows
        if row["target"] == baseline and row["status"] in USABLE
    }
    validity = verdicts(rows, baseline)
    summaries = []
    for key, group in groups.items():
        summary = _summary(group, bases)
        if key in validity:
            summary.update(validity[key].as_dict())
        summaries.append(summary)
    return summaries


def _summary(group: list[Row], bases: dict[tuple[tuple[str, str], int], Row]) -> Row:
    first = group[0]
    usable = [row for row in group if row["status"] in USABLE]
    statuses = Counter(row["status"] for row in group)
    ratios: dict[str, list[float]] = {}
    for row in usable:
        base = bases.get((run_key(row), row.get("repeat", 0)))  # the baseline in the same repeat
        if base is None:
            continue
        for metric in RATIO_METRICS:
            if row.get(metric) and base.get(metric):  # a zero or missing figure has no ratio
                ratios.setdefault(metric, []).append(row[metric] / base[metric])
    return {
        "target": first["target"],
        "scenario": first["scenario"],
        "params": next((row["params"] for row in usable), first["params"]),
        "status": max(statuses, key=STATUS_ORDER.index),
        "statuses": dict(statuses),
        "repeats": len(group),
        "usable": len(usable),
        "note": "; ".join(dict.fromkeys(row["note"] for row in group if row["note"])),
        "errors": {name: sum(row["errors"][name] for row in group) for name in ERROR_KEYS},
        "figures": _spreads([figures_of(row) for row in usable]),
        "ratios": {metric: spread(values) for metric, values in ratios.items()},
    }


def median(summary: Row, metric: str) -> float | None:
    """A summary's median of one figure, or None where no repeat measured it."""
    found = summary["figures"].get(metric)
    return found["median"] if found else None
