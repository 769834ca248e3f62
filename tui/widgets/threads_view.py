"""The threads view: one lane per server thread, kernel accounting beside lock telemetry.

CPU, context switches and the system call each thread sleeps in come from /proc/PID/task (read
here, never inside the server); lock waits and holds come from the server's ``lock`` events.
The timeline below shows, a quarter second a cell, how much of it each thread held the lock
and how much it waited: under ``--naive`` the workers take turns, each waiting while the other
holds. A hold that has not ended sends no event, so the summary also reads /proc: a worker
asleep in ``readv`` while the others sleep in ``futex`` is the ``--blocking`` stall.
"""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from tui.format import bar, count_text, duration, spark
from tui.model import Model
from tui.model.threads import LOCK_WINDOW_S, SLICE_S, SOCKET_CALLS, STALL_S, TIMELINE_SLICES, Lane, Stall

from .navigation import Move, moved, page_start
from .panel import Panel

NAME_WIDTH = 10
COLUMNS = (  # header (two lines: what, then its unit), width, justify
    ("thread\n", NAME_WIDTH, "left"),
    ("syscall\nnow", 11, "left"),
    ("CPU\n% core", 8, "left"),
    ("ctx sw/s\nvol/invol", 11, "right"),
    ("wait\nmean", 8, "right"),
    ("hold\nmax", 8, "right"),
    ("holds\n/s", 6, "right"),
    (f"held %\nof {LOCK_WINDOW_S:g} s", 6, "right"),
)
# One space between columns (the box's divider), no outer edge: 75 cells, so 80 columns hold them all.
FIXED_COLUMNS_WIDTH = sum(width for _, width, _ in COLUMNS) + len(COLUMNS)  # the gaps, and the one before
MIN_HISTORY_WIDTH = 6  # narrower than this, the CPU history column is left out
SUMMARY_HEIGHT = 3
TABLE_CHROME = 3  # two header lines and the rule under them
TIMELINE_CHROME = 3  # a blank line, its title and its column heads
CURSOR_STYLE = "on grey30"
STATE_STYLES = {"R": "bold green", "S": "", "D": "bold red", "T": "yellow", "Z": "red"}
SLICES_PER_SECOND = round(1 / SLICE_S)
MIN_SCALE = 0.01  # a full timeline cell stands for at least 1% of a slice (2.5 ms)


def plural(count: int, noun: str) -> str:
    return f"{count_text(count)} {noun if count == 1 else noun + 's'}"


class ThreadsView(Vertical):
    DEFAULT_CSS = f"""
    ThreadsView > #threads-summary {{ height: {SUMMARY_HEIGHT}; }}
    ThreadsView > #lanes {{ height: auto; }}
    ThreadsView > #lock-timeline {{
        height: auto; margin-top: 1; text-wrap: nowrap; text-overflow: ellipsis;
    }}
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.cursor = 0  # an index into all lanes, not into the page on screen
        self.start = 0  # the first lane on screen
        self.lane_count = 0

    def compose(self) -> ComposeResult:
        yield Panel(id="threads-summary")
        yield Panel(id="lanes")
        yield Panel(id="lock-timeline")

    @property
    def page_rows(self) -> int:
        """Lanes that fit: each takes a row in the table and a row in the timeline."""
        free = self.size.height - SUMMARY_HEIGHT - TABLE_CHROME - TIMELINE_CHROME
        return max(1, free // 2)

    def navigate(self, move: Move) -> None:
        self.cursor = moved(self.cursor, move, self.lane_count, self.page_rows)

    def refresh_from(self, model: Model) -> None:
        lanes = model.threads.lanes(model.now)
        self.lane_count = len(lanes)
        self.cursor = min(self.cursor, max(0, len(lanes) - 1))
        page = self.page_rows
        self.start = page_start(self.cursor, self.start, page, len(lanes))
        shown = lanes[self.start : self.start + page]
        marked = self.cursor - self.start
        self.query_one("#threads-summary", Panel).show(summary(model, len(lanes)))
        table_panel = self.query_one("#lanes", Panel)
        history = table_panel.size.width - FIXED_COLUMNS_WIDTH
        rows = [lane_cells(lane, history) for lane in shown]
        table_panel.show(lane_table(rows, marked, history), key=(rows, marked))
        timeline = self.query_one("#lock-timeline", Panel)
        width = timeline.size.width or 80
        scale = timeline_scale(lanes, timeline_slices(width))  # all lanes: paging keeps the scale
        text = timeline_text(model, shown, marked, width, scale)
        if len(lanes) > len(shown):
            text.append(f"\nthreads {self.start + 1}–{self.start + len(shown)} of {len(lanes)}", style="dim")
        timeline.show(text)


# ---------------------------------------------------------------------- summary


def summary(model: Model, thread_count: int) -> Text:
    """Three lines: the process and its queues, then who stops whom now or how the lock was used."""
    threads = model.threads
    pid = model.pid if model.pid is not None else "?"
    text = Text.assemble(
        (plural(thread_count, "thread"), "bold"), f" in pid {pid}"
    )  # the variant: status bar
    if threads.queue_depths:
        queues = ", ".join(
            f"{name or 'shared'} {count_text(depth)}/{count_text(threads.queue_max[name])}"
            for name, depth in sorted(threads.queue_depths.items())
        )
        text.append(f" · hand-off queue, last/max: {queues}")
    for line in verdict(model):
        text.append("\n")
        text.append_text(line)
    return text


def verdict(model: Model) -> tuple[Text, ...]:
    """Who stops whom now, or how the lock was used over the statistics window."""
    threads = model.threads
    stall = threads.stall(model.now)
    if stall is not None:
        return tuple(Text(line, style="bold red") for line in stall_lines(model, stall))
    flawed = threads.flawed_threads(model.now)
    if flawed:
        return (
            Text(f"{', '.join(flawed)} held the lock across socket I/O (accept, recv)", style="bold red"),
            Text("one thread at a time: the others wait while it reads (the timeline below)", style="red"),
        )
    if threads.recent_holds(model.now):
        return (Text("the lock is held only around core calls; recv and send run outside it", style="green"),)
    if threads.lock_events:
        return (Text(f"nobody took the lock in the last {LOCK_WINDOW_S:g} s", style="dim"),)
    if model.note("proc"):
        return (Text(model.note("proc"), style="yellow"),)
    return (Text("no lock telemetry: a single-threaded loop has no lock to wait for", style="dim"),)


def stall_lines(model: Model, stall: Stall) -> tuple[str, ...]:
    """'worker-1 has held the lock 3.2 s, blocked in readv on fd 7 (127.0.0.1:50004)', then who waits."""
    if stall.held_s is not None:
        text = f"{stall.thread} has held the lock {stall.held_s:.1f} s"
        if stall.syscall:
            text += f", {'blocked in' if stall.syscall in SOCKET_CALLS else 'now'} {stall.syscall}"
    else:  # only /proc saw it: a lower bound, from the samples that found it asleep there
        text = f"{stall.thread} blocked in {stall.syscall} for {stall.blocked_s or 0:.1f} s or more"
    if stall.fd is not None:
        label = model.names.label(stall.fd)
        text += f" on fd {stall.fd}" + (f" ({label})" if label else "")
    if not stall.waiting:
        return (text,)
    waiting = f"{', '.join(stall.waiting)} {'waits' if len(stall.waiting) == 1 else 'wait'} in futex"
    if stall.held_s is None:  # a futex is any lock, the GIL too: say what is known, and what is not
        return text, f"{waiting} (a lock's hold is reported only once it ends)"
    return text, f"{waiting}: nobody else gets the lock until it returns"


# ---------------------------------------------------------------------- the table


def lane_table(rows: list[tuple[Text, ...]], marked: int, history_width: int) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, padding=0)
    for header, width, justify in COLUMNS:
        table.add_column(header, no_wrap=True, width=width, justify=justify, overflow="ellipsis")  # type: ignore[arg-type]
    if history_width >= MIN_HISTORY_WIDTH:
        table.add_column("CPU history\nnewest right", no_wrap=True, ratio=1, overflow="crop")
    for index, row in enumerate(rows):
        table.add_row(*row, style=CURSOR_STYLE if index == marked else None)
    return table


def lane_cells(lane: Lane, history_width: int) -> tuple[Text, ...]:
    """The cells of one lane; the CPU history shows its newest ``history_width`` samples."""
    cpu = lane.row.cpu_percent
    voluntary, involuntary = lane.switches_per_s
    cells = (
        Text(lane.name, style="bold"),
        syscall_cell(lane),
        Text.assemble((bar(cpu / 100, 3), "green"), f"{cpu:4.0f}%"),
        Text(f"{count_text(round(voluntary))}/{count_text(round(involuntary))}"),
        *lock_cells(lane),
    )
    if history_width < MIN_HISTORY_WIDTH:
        return cells
    return (*cells, Text(spark(lane.cpu_history[-history_width:], ceiling=100.0), style="green"))


def syscall_cell(lane: Lane) -> Text:
    """Where the thread is now: on a CPU, or the call it sleeps in (red: a socket call it is stuck in)."""
    sample = lane.row.sample
    if not sample.syscall:
        return Text(sample.state or "?", style=STATE_STYLES.get(sample.state, "dim"))
    asleep = lane.asleep
    stuck = sample.syscall in SOCKET_CALLS and asleep is not None and asleep.seconds >= STALL_S
    if stuck:
        return Text(sample.syscall, style="bold red")
    styles = {"running": "bold green", "futex": "yellow"}
    return Text(sample.syscall, style=styles.get(sample.syscall, ""))


def lock_cells(lane: Lane) -> tuple[Text, Text, Text, Text]:
    """wait mean, hold max, holds/s, held %: of the holds that ended in the window, or an open one."""
    lock = lane.lock
    dash = Text("-", style="dim")
    if lock is None:
        return dash, dash, dash, dash
    flaw = "bold red" if lock.across_recv else ""
    held = Text(f"{lock.held_share * 100:.0f}%", style="red" if lock.across_recv else "magenta")
    if lane.open_hold_s is not None and lane.open_hold_s >= STALL_S:
        hold = Text(duration(lane.open_hold_s), style="bold white on red")  # still held: its length so far
        held.stylize("bold red")
    else:
        hold = Text(duration(lock.hold_max_s), style=flaw) if lock.acquisitions else dash
    wait = Text(duration(lock.wait_mean_s), style=flaw) if lock.acquisitions else dash
    return wait, hold, Text(rate_text(lock.holds_per_s)), held


def rate_text(per_second: float) -> str:
    """0.5, 9.5, 1,250: a tenth where it matters (a 2 s window counts in halves), else a count."""
    return f"{per_second:.1f}" if 0 < per_second < 10 else count_text(round(per_second))


# ---------------------------------------------------------------------- the timeline


def timeline_slices(width: int) -> int:
    """Slices per strip: two strips side by side beside the names, in whole seconds."""
    fits = (width - NAME_WIDTH - 4) // 2
    whole_seconds = fits - fits % SLICES_PER_SECOND
    return max(SLICES_PER_SECOND, min(TIMELINE_SLICES, whole_seconds))


def timeline_scale(lanes: list[Lane], slices: int) -> float:
    """The share of a slice a full cell stands for: the busiest cell shown, held or waited.

    One scale for every strip, so a wait compares with the hold it waited for; never below
    MIN_SCALE, so holds of microseconds stay low cells instead of filling the strips.
    """
    shares = [share for lane in lanes for row in (lane.held, lane.waited) for share in row[-slices:]]
    return max([MIN_SCALE, *shares])


def timeline_text(model: Model, lanes: list[Lane], marked: int, width: int, scale: float) -> Text:
    """A title, then per thread: held strip, waited strip; a cell is a slice, the newest is now."""
    slices = timeline_slices(width)
    seconds = slices * SLICE_S
    text = Text("lock timeline", style="bold")
    if not model.threads.lock_events and not model.threads.open_holds:
        text.append(f" · a cell = {SLICE_S:g} s\n")
        text.append("no lock events: nothing to draw", style="dim")
        return text
    text.append(
        f" · a cell = {SLICE_S:g} s · █ = {duration(scale * SLICE_S)} held or waited · newest right\n"
    )
    text.append(" " * (NAME_WIDTH + 1))
    text.append(f"held the lock, last {seconds:g} s".ljust(slices + 2), style="magenta")
    text.append(f"waited for it, last {seconds:g} s", style="yellow")
    for index, lane in enumerate(lanes):
        line = Text(lane.name[:NAME_WIDTH].ljust(NAME_WIDTH) + " ", style="bold")
        held_style = "bold red" if lane.open_hold_s is not None else "magenta"
        line.append(strip(lane.held, slices, scale), style=held_style)
        line.append("  ")
        line.append(strip(lane.waited, slices, scale), style="yellow")
        if index == marked:
            line.pad_right(width - len(line))
            line.stylize(CURSOR_STYLE)
        text.append("\n")
        text.append_text(line)
    return text


def strip(shares: tuple[float, ...], slices: int, scale: float = 1.0) -> str:
    """The newest ``slices`` shares as sparkline cells, █ for ``scale`` (blank: none of the slice)."""
    shown = shares[-slices:]
    return spark(shown, ceiling=scale).rjust(slices) if shown else " " * slices
