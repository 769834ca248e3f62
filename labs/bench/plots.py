"""PNG plots of a comparison: throughput per target, and the idle-scaling curve.

Plots show the summaries' medians (over ``--repeat N``). matplotlib runs headless (the Agg
backend) and is imported only here, when plots are wanted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import run_key
from .summary import median

Row = dict[str, Any]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def throughput_plot(rows: list[Row], path: Path) -> Path | None:
    """Two panels of grouped bars: msgs/s and msgs per broker CPU-second, per run and target."""
    flows = [row for row in rows if row["scenario"] in ("fanin", "fanout", "qos1") and row["usable"]]
    if not flows:
        return None
    runs = list(dict.fromkeys(" ".join(run_key(row)) for row in flows))
    targets = list(dict.fromkeys(row["target"] for row in flows))
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(2, 1, figsize=(max(7, 1.6 * len(runs) * max(1, len(targets)) / 3), 8))
    width = 0.8 / len(targets)
    for axis, key, label in (
        (axes[0], "msgs_per_s", "messages / s"),
        (axes[1], "msgs_per_cpu_s", "messages per broker CPU-second"),
    ):
        for index, target in enumerate(targets):
            mine = [row for row in flows if row["target"] == target]
            values = {" ".join(run_key(row)): median(row, key) or 0 for row in mine}
            positions = [slot + index * width for slot in range(len(runs))]
            axis.bar(positions, [values.get(run, 0) for run in runs], width, label=target)
        axis.set_xticks([slot + 0.4 - width / 2 for slot in range(len(runs))], runs)
        axis.set_yscale("log")  # saturation and matched-rate runs differ by orders of magnitude
        axis.set_ylabel(label)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_title("Throughput per target (higher is better)")
    axes[0].legend(fontsize="small")
    return _save(pyplot, figure, path)


def idle_scaling_plot(rows: list[Row], path: Path) -> Path | None:
    """Broker CPU µs per delivered message against idle connections, one line per target."""
    idle = [
        row
        for row in rows
        if row["scenario"] == "idle-scaling" and row["usable"] and row["status"] != "capped"
    ]
    if not idle:
        return None
    capped = {
        row["target"]: int(median(row, "idle_connected") or 0)
        for row in rows
        if row["scenario"] == "idle-scaling" and row["status"] == "capped"
    }
    pyplot = _pyplot()
    figure, axis = pyplot.subplots(figsize=(8, 5))
    for target in dict.fromkeys(row["target"] for row in idle):
        points = sorted(
            (row["params"]["idle"], median(row, "cpu_us_per_msg"))
            for row in idle
            if row["target"] == target and median(row, "cpu_us_per_msg") is not None
        )
        if not points:
            continue
        axis.plot([idle for idle, _ in points], [cost for _, cost in points], marker="o", label=target)
        if target in capped:  # where the curve stops, say why
            label = f"{target}: cap at {capped[target]:,}"
            axis.annotate(label, points[-1], textcoords="offset points", xytext=(6, 6), fontsize="small")
    axis.set_xscale("symlog", linthresh=100)
    axis.set_xlabel("idle connections held open")
    axis.set_ylabel("broker CPU µs per delivered message")
    axis.set_title("Idle scaling: select/poll grow with idle fds, epoll stays flat")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return _save(pyplot, figure, path)


def _save(pyplot: Any, figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path


def write_plots(rows: list[Row], directory: Path) -> list[Path]:
    """``rows`` are summaries (``summary.summarize``), not raw rows."""
    written = [
        throughput_plot(rows, directory / "throughput.png"),
        idle_scaling_plot(rows, directory / "idle-scaling.png"),
    ]
    return [path for path in written if path is not None]
