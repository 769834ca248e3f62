"""The threads view: one lane per server thread, kernel accounting beside lock telemetry.

CPU and context switches come from /proc/PID/task (read here, never inside the server);
lock wait, hold and the share of time a thread held the core's lock come from the server's
``lock`` events. In ``--naive`` mode the workers hold the lock across recv(), so one works
while the rest wait: long holds, long waits, and the "across recv" flag in red.
"""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from tui.format import bar, duration, spark
from tui.model import Model
from tui.model.threads import LOCK_WINDOW_S, Lane

from .panel import Panel

FIXED_COLUMNS_WIDTH = 72  # every column but the CPU history, with the gaps between them
STATE_STYLES = {"R": "bold green", "S": "dim", "D": "bold red", "T": "yellow", "Z": "red"}


class ThreadsView(Vertical):
    DEFAULT_CSS = """
    ThreadsView > #threads-summary { height: 2; }
    ThreadsView > #lanes { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Panel(id="threads-summary")
        yield Panel(id="lanes")

    def refresh_from(self, model: Model) -> None:
        lanes = model.threads.lanes(model.now)
        self.query_one("#threads-summary", Panel).show(summary(model, len(lanes)))
        panel = self.query_one("#lanes", Panel)
        history = max(1, panel.size.width - FIXED_COLUMNS_WIDTH)
        rows = [lane_cells(lane, history) for lane in lanes]
        panel.show(lane_table(rows), key=rows)


def summary(model: Model, thread_count: int) -> Text:
    threads = model.threads
    pid = model.pid if model.pid is not None else "?"
    text = Text.assemble((f"{thread_count} threads", "bold"), f" in pid {pid}")
    if model.variant:
        text.append(f" ({model.variant})")
    if threads.queue_depths:
        queues = ", ".join(
            f"{name or 'shared'} {depth} (max {threads.queue_max[name]})"
            for name, depth in sorted(threads.queue_depths.items())
        )
        text.append(f" · hand-off queue, last reported: {queues}")
    text.append("\n")
    flawed = threads.flawed_threads(model.now)
    if flawed:
        text.append(
            f"{', '.join(flawed)} held the lock across socket I/O (accept, recv): one thread at a time",
            style="bold red",
        )
    elif threads.lock_events:
        text.append("the lock is held only around core calls; recv and send run outside it", style="green")
    elif model.note("proc"):
        text.append(model.note("proc"), style="yellow")
    else:
        text.append("no lock telemetry: a single-threaded loop has no lock to wait for", style="dim")
    return text


def lane_table(rows: list[tuple[Text | str, ...]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, padding=(0, 1, 0, 0))
    # Fixed widths fit 80 columns; the CPU history lane takes whatever is left.
    table.add_column("thread", no_wrap=True, width=12, overflow="ellipsis")
    table.add_column("st", no_wrap=True, width=2)
    table.add_column("CPU", no_wrap=True, width=9)
    table.add_column("ctx/s", no_wrap=True, width=9, justify="right")
    table.add_column("lock wait", no_wrap=True, width=9, justify="right")
    table.add_column("hold", no_wrap=True, width=8, justify="right")
    table.add_column(f"held/{LOCK_WINDOW_S:.0f}s", no_wrap=True, width=8)
    table.add_column("CPU history", no_wrap=True, ratio=1, overflow="crop", min_width=4)
    for row in rows:
        table.add_row(*row)
    return table


def lane_cells(lane: Lane, history_width: int) -> tuple[Text | str, ...]:
    """The cells of one lane; the CPU history shows its newest ``history_width`` samples."""
    sample = lane.row.sample
    cpu = lane.row.cpu_percent
    voluntary, involuntary = lane.switches_per_s
    name = Text(sample.name, style="bold")
    lock = lane.lock
    if lock is None or lock.acquisitions == 0:
        wait = hold = Text("-", style="dim")
        held = Text("")
    else:
        flaw = "bold red" if lock.across_recv else ""
        wait = Text(duration(lock.wait_mean_s), style=flaw)
        hold = Text(duration(lock.hold_mean_s), style=flaw)
        held = Text(bar(lock.held_share, 4), style="red" if lock.across_recv else "magenta")
        held.append(f"{lock.held_share * 100:3.0f}%")
    return (
        name,
        Text(sample.state, style=STATE_STYLES.get(sample.state, "")),
        Text.assemble((bar(cpu / 100, 4), "green"), f"{cpu:4.0f}%"),
        f"{voluntary:.0f}/{involuntary:.0f}",
        wait,
        hold,
        held,
        Text(spark(lane.cpu_history[-history_width:], ceiling=100.0), style="green"),
    )
