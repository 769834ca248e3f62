"""One benchmark figure set per (target, scenario, params): the rows of the JSON ``results`` list.

Every row has the same keys, ``None`` where a metric does not apply, so tools reading the JSON
never guess. Scenario-specific figures (handshake latency, PUBACK round trips...) are extra keys
listed in ``SCENARIO_KEYS``. The four error counters are always present and never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 2  # 2: rows carry ``repeat``; a ``summary`` list sits beside ``results``
ERROR_KEYS = ("lost", "duplicated", "reordered", "disconnects")
COMMON_KEYS = (
    "msgs_per_s",  # messages delivered to subscribers per wall-clock second
    "msgs_per_cpu_s",  # messages delivered per second of broker CPU (its whole process tree)
    "cpu_us_per_msg",  # the inverse, in microseconds
    "broker_cpu_s",
    "broker_rss_bytes",
    "latency_us",  # {"p50", "p99", "max"}: publish-to-delivery, or handshake / PUBACK as named
    "sent",
    "delivered",
    "duration_s",
    "generator_cpu_s",  # CPU the load generator's processes used over the same run
)
SCENARIO_KEYS = {
    "conn": (
        "requested",
        "connected",
        "failed",
        "failure_reasons",
        "cap_hit",
        "connect_s",
        "connects_per_s",
        "connects_per_cpu_s",  # connections accepted per broker CPU-second over the connect phase
        "handshake_us",
        "rss_per_conn_bytes",
    ),
    "qos1": ("acked", "unacked", "puback_rtt_us"),
    "qos1-persist": ("acked", "unacked", "puback_rtt_us"),
    "idle-scaling": ("idle_requested", "idle_connected", "cap_hit"),
}
STATUSES = ("ok", "not available", "failed", "capped")


@dataclass
class Errors:
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    disconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {key: int(getattr(self, key)) for key in ERROR_KEYS}


@dataclass
class Outcome:
    """What one scenario run measured, before it becomes a row: params, metrics, errors, status, note."""

    params: dict[str, Any]
    metrics: dict[str, Any]
    errors: Errors
    status: str = "ok"
    note: str = ""


def refusals(failures: dict[str, int]) -> str:
    """A note such as '1,982 refused (closed by broker during handshake)'."""
    reasons = ", ".join(f"{reason}: {count:,}" for reason, count in sorted(failures.items()))
    return f"{sum(failures.values()):,} refused ({reasons})" if failures else ""


def percentiles_us(samples_ns: list[int]) -> dict[str, float] | None:
    """p50, p99 and max of nanosecond samples, in microseconds (nearest-rank)."""
    if not samples_ns:
        return None
    ordered = sorted(samples_ns)

    def rank(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000

    return {"p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1] / 1000}


def make_row(
    target: str,
    scenario: str,
    params: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    errors: Errors | None = None,
    status: str = "ok",
    note: str = "",
    repeat: int = 0,
) -> dict[str, Any]:
    """A results row with every common key present; unknown metric keys are a bug, so they raise.

    ``repeat`` numbers the runs of one (scenario run, target) pair under ``--repeat N`` from 0.
    """
    metrics = metrics or {}
    allowed = set(COMMON_KEYS) | set(SCENARIO_KEYS.get(scenario, ()))
    unknown = set(metrics) - allowed
    if unknown:
        raise KeyError(f"metrics {sorted(unknown)} are not part of the {scenario!r} schema")
    row: dict[str, Any] = {
        "target": target,
        "scenario": scenario,
        "params": params,
        "repeat": repeat,
        "status": status,
        "note": note,
    }
    row.update({key: metrics.get(key) for key in COMMON_KEYS})
    row.update({key: metrics.get(key) for key in SCENARIO_KEYS.get(scenario, ())})
    row["errors"] = (errors or Errors()).as_dict()
    return row


def rates(delivered: int, duration_s: float, cpu_s: float | None) -> dict[str, float | None]:
    """msgs/s, msgs per broker CPU-second and CPU µs per message (None where undefined)."""
    per_cpu = delivered / cpu_s if cpu_s else None
    return {
        "msgs_per_s": delivered / duration_s if duration_s > 0 else None,
        "msgs_per_cpu_s": per_cpu,
        "cpu_us_per_msg": cpu_s / delivered * 1e6 if cpu_s is not None and delivered else None,
    }


def error_total(row: dict[str, Any]) -> int:
    return sum(row["errors"].values())


def run_key(row: dict[str, Any]) -> tuple[str, str]:
    """Rows of one scenario run that compare across targets share this key."""
    params = row["params"]
    # idle-scaling rows also carry their paced pair's "load", the same at every idle count
    detail = f"idle={params['idle']}" if "idle" in params else params.get("load", "")
    return row["scenario"], str(detail)
