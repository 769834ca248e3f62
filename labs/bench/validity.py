"""The matched-rate rule: when is a row of a fixed-rate fan-in / fan-out run a fair comparison?

At a matched rate every target is offered the same deliveries per second, so "msgs per CPU-s"
compares the cost of the same work, but only if the work was actually done, and done as well:

* the target delivered the offered rate, within 2 %;
* its delivery latency is no worse than the baseline's in the same run and repeat:
  p50 ≤ baseline p50 + 0.2 ms and p99 ≤ 1.5 × baseline p99. A broker that saves CPU by
  batching (and so delays) deliveries is not cheaper, it is slower.

The baseline row itself is judged by the delivered-rate rule only. Under ``--repeat N`` a row
is valid when every repeat is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .results import run_key

Row = dict[str, Any]
RATE_TOLERANCE = 0.02
P50_SLACK_US = 200.0
P99_FACTOR = 1.5
USABLE = ("ok", "capped")


@dataclass
class Verdict:
    """A (matched-rate run, target) pair's validity over its repeats, and what went wrong."""

    repeats: int = 0
    valid_repeats: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.repeats > 0 and self.valid_repeats == self.repeats

    def as_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "valid_repeats": self.valid_repeats, "invalid_reasons": self.reasons}


def is_matched_rate(row: Row) -> bool:
    return row["scenario"] in ("fanin", "fanout") and bool(row["params"].get("rate"))


def offered_rate(row: Row) -> float:
    """Deliveries per second offered: publishes/s times subscribers (fan-out multiplies)."""
    params = row["params"]
    return float(params["rate"]) * int(params.get("subscribers", 1))


def problems(row: Row, base: Row | None, is_baseline: bool) -> list[str]:
    """Why one repeat's row breaks the rule (empty when it keeps it)."""
    if row["status"] not in USABLE:
        return [row["status"]]
    found = []
    offered, delivered = offered_rate(row), row["msgs_per_s"] or 0.0
    if abs(delivered - offered) > RATE_TOLERANCE * offered:
        found.append(f"delivered {100 * delivered / offered:.0f}% of the offered rate")
    if is_baseline:
        return found
    if base is None or base["status"] not in USABLE or not base["latency_us"]:
        return [*found, "no baseline latency in this repeat"]
    latency, base_latency = row["latency_us"], base["latency_us"]
    if not latency:
        return [*found, "no latency samples"]
    if latency["p50"] > base_latency["p50"] + P50_SLACK_US:
        found.append(f"p50 +{(latency['p50'] - base_latency['p50']) / 1000:.2f} ms over base")
    if latency["p99"] > P99_FACTOR * base_latency["p99"]:
        found.append(f"p99 {latency['p99'] / base_latency['p99']:.2f}× base")
    return found


def verdicts(rows: list[Row], baseline: str | None) -> dict[tuple[tuple[str, str], str], Verdict]:
    """Validity of every matched-rate (run, target) pair, keyed by (run_key, target)."""
    matched = [row for row in rows if is_matched_rate(row)]
    bases = {(run_key(row), row["repeat"]): row for row in matched if row["target"] == baseline}
    found: dict[tuple[tuple[str, str], str], Verdict] = {}
    for row in matched:
        if row["status"] == "not available":
            continue
        verdict = found.setdefault((run_key(row), row["target"]), Verdict())
        reasons = problems(row, bases.get((run_key(row), row["repeat"])), row["target"] == baseline)
        verdict.repeats += 1
        verdict.valid_repeats += not reasons
        verdict.reasons += [reason for reason in reasons if reason not in verdict.reasons]
    return found
