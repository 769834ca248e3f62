"""TCP's close handshake as a drawing, each state lit up with how many sockets are in it now.

Top row, the active closer (it called close() first): FIN_WAIT_1, FIN_WAIT_2 once its FIN is
ACKed, TIME_WAIT once the peer's FIN arrives. Bottom row, the passive closer: CLOSE_WAIT
until its application calls close(), then LAST_ACK. Middle: both sent FIN at once (CLOSING).
Counts of any size stay clear of the lines and labels (20,000 sockets in TIME_WAIT is a normal
churn); a terminal narrower than the drawing gets ss's short names (ESTAB...), then a clean crop.
Also here: the count bar, the notes' `netstat -tan | awk '{++S[$NF]} END {...}'` drawn live.
"""

from __future__ import annotations

from rich.text import Text

from tui.format import count_text, state_color

from .panel import Panel

ARROWS = ("─close▶", "─ACK▶", "─FIN▶", "─60s▶")  # between the active closer's states, left to right
ACTIVE = ("ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT")
ROWS = 6
ART_STYLE, LABEL_STYLE = "grey62", "italic grey50"


class Canvas:
    """Rows of (column, text, style) pieces. A piece never overwrites another: one that would
    start inside its left neighbour is pushed right, so a long count can misalign the drawing
    but never hide a label or a line."""

    def __init__(self) -> None:
        self.rows: list[list[tuple[int, str, str]]] = [[] for _ in range(ROWS)]

    def put(self, row: int, column: int, text: str, style: str = ART_STYLE) -> int:
        """Place ``text``; returns the column just after it."""
        self.rows[row].append((column, text, style))
        return column + len(text)

    def end(self, row: int) -> int:
        return max((column + len(text) for column, text, _ in self.rows[row]), default=0)

    @property
    def width(self) -> int:
        return max(self.end(row) for row in range(ROWS))

    def render(self, width: int) -> Text:
        """The rows as one Text, each cut at ``width`` (cropped, never wrapped)."""
        lines = []
        for pieces in self.rows:
            line, cursor = Text(style=ART_STYLE), 0
            for column, text, style in sorted(pieces, key=lambda piece: piece[0]):
                column = max(column, cursor)
                line.append(" " * (column - cursor) + text, style=None)
                line.stylize(style, len(line) - len(text), len(line))
                cursor = column + len(text)
            line.truncate(width, overflow="crop")
            lines.append(line)
        return Text("\n", style=ART_STYLE, no_wrap=True, overflow="crop").join(lines)


def count_fitting(count: int, room: int | None) -> str:
    """10,002 with separators; in a slot too narrow for that, 12M (the unit marks it as rounded)."""
    text = count_text(count)
    if room is None or len(text) <= room:
        return text
    value = float(count)
    for unit in "KMGT":
        value /= 1000
        if value < 999.5:
            return f"{value:.1f}{unit}" if value < 9.95 else f"{value:.0f}{unit}"
    return f"{value:.0f}P"


class CloseMachineLayout:
    """Where every piece of the drawing goes for one spelling of the state names."""

    def __init__(self, names: dict[str, str], counts: dict[str, int], stuck: bool, width: int) -> None:
        self.names, self.counts, self.stuck, self.width = names, counts, stuck, width
        self.canvas = Canvas()
        self.labels_dropped = 0

    def state(self, row: int, column: int, state: str) -> int:
        count = self.counts.get(state, 0)
        background = "red" if state == "FIN_WAIT_1" and self.stuck else state_color(state)
        style = f"bold black on {background}" if count else "grey50"
        return self.canvas.put(row, column, self.names.get(state, state), style)

    def count(self, row: int, column: int, state: str, before: int | None = None) -> int:
        """The count of ``state`` at ``column``; it must end one cell before ``before`` (art)."""
        count = self.counts.get(state, 0)
        room = None if before is None else before - 1 - column
        style = f"bold {state_color(state)}" if count else "grey35"
        return self.canvas.put(row, column, count_fitting(count, room), style)

    def label(self, row: int, column: int, text: str) -> None:
        """A label floats right of whatever precedes it, and is left out where it would be cut."""
        column = max(column, self.canvas.end(row) + 2)
        if column + len(text) <= self.width:
            self.canvas.put(row, column, text, LABEL_STYLE)
        else:
            self.labels_dropped += 1

    def draw(self) -> Canvas:
        put = self.canvas.put
        column = 0
        starts: dict[str, int] = {}
        for state, arrow in zip(ACTIVE, ARROWS, strict=True):  # row 0: the active closer
            starts[state] = column
            column = put(0, self.state(0, column, state), f" {arrow} ")
        put(0, column, "CLOSED")
        established, fin_wait_1, fin_wait_2, time_wait = (starts[state] for state in ACTIVE)
        for row in (1, 2, 3):
            put(row, established + 1, "│")
        put(1, fin_wait_1 + 1, "│")
        put(1, time_wait, "▲")
        self.count(1, established + 4, "ESTABLISHED", before=fin_wait_1 + 1)
        self.count(1, fin_wait_1 + 4, "FIN_WAIT_1", before=fin_wait_2 + 3)
        self.count(1, fin_wait_2 + 3, "FIN_WAIT_2", before=time_wait)
        self.label(1, max(time_wait + 9, self.count(1, time_wait + 4, "TIME_WAIT") + 2), "active close")
        closing = put(2, fin_wait_1 + 1, "└─FIN▶ ")  # rows 2-3: both sent FIN at once
        after = self.state(2, closing, "CLOSING")
        put(2, after, " ─ACK" + "─" * max(0, time_wait - after - 5) + "┘")
        self.label(3, max(closing + 8, self.count(3, closing, "CLOSING") + 2), "simultaneous close")
        close_wait = put(4, established + 1, "└─FIN▶ ")  # rows 4-5: the passive closer
        last_ack = put(4, self.state(4, close_wait, "CLOSE_WAIT"), " ─close▶ ")
        put(4, self.state(4, last_ack, "LAST_ACK"), " ─ACK▶ CLOSED")
        self.count(5, close_wait + 2, "CLOSE_WAIT", before=last_ack + 1)
        after = self.count(5, last_ack + 1, "LAST_ACK")
        self.label(5, max(self.canvas.end(4) + 1, after + 2), "passive close")
        return self.canvas


def draw_close_machine(counts: dict[str, int], stuck_fin_wait_1: bool = False, width: int = 80) -> Text:
    """The drawing with counts, at most ``width`` cells wide: full state names if they fit, else
    the short ones `ss` uses (ESTAB, FIN_W1...), else cropped. Never wrapped, nothing overlapping."""
    layout = CloseMachineLayout({}, counts, stuck_fin_wait_1, width)
    canvas = layout.draw()
    if canvas.width > width or layout.labels_dropped:
        layout = CloseMachineLayout(SHORT_NAMES, counts, stuck_fin_wait_1, width)
        canvas = layout.draw()
    return canvas.render(width)


SHORT_NAMES = {  # `ss` spells ESTAB the short way too; used when the full legend or drawing would not fit
    "ESTABLISHED": "ESTAB", "FIN_WAIT_1": "FIN_W1", "FIN_WAIT_2": "FIN_W2", "TIME_WAIT": "TIME_W",
    "CLOSE_WAIT": "CLOSE_W", "NEW_SYN_RECV": "NEW_SYN", "SYN_RECV": "SYN_R", "SYN_SENT": "SYN_S",
}  # fmt: skip


def bar_cells(counts: list[int], width: int) -> list[int]:
    """Split ``width`` cells in proportion to ``counts``; every non-zero count gets at least one."""
    total = sum(counts)
    cells = [max(1, count * width // total) if count else 0 for count in counts]
    largest = cells.index(max(cells))
    cells[largest] = max(1, cells[largest] + width - sum(cells))  # rounding goes to the biggest
    return cells


def legend(ordered_counts: list[tuple[str, int]], width: int) -> Text:
    """ "■ STATE count" per state; shorter spellings, then no squares, when the line is too narrow."""
    text = Text()
    for names, square, gap in (({}, "■ ", "  "), (SHORT_NAMES, "■ ", "  "), (SHORT_NAMES, "", " ")):
        text = Text(no_wrap=True, overflow="ellipsis")
        for state, count in ordered_counts:
            text.append(square, style=state_color(state))
            name_style = "bold" if square else f"bold {state_color(state)}"  # no square: colour the name
            text.append(f"{names.get(state, state)} ", style=name_style)
            text.append(f"{count:,}{gap}")
        if text.cell_len <= width:
            break
    return text


def draw_count_bar(ordered_counts: list[tuple[str, int]], width: int) -> Text:
    """A stacked bar of sockets per state, then a legend: the awk one-liner, live."""
    if not ordered_counts:
        return Text("no sockets on this port", style="dim")
    text = Text()
    widths = bar_cells([count for _, count in ordered_counts], width)
    for (state, _), cells in zip(ordered_counts, widths, strict=True):
        text.append("█" * cells, style=state_color(state))
    text.append("\n")
    text.append_text(legend(ordered_counts, width))
    return text


class CloseStateMachine(Panel):
    DEFAULT_CSS = "CloseStateMachine { height: 6; }"

    def draw(self, counts: dict[str, int], stuck_fin_wait_1: bool) -> None:
        # Before the first layout the width is 0: draw for 80 columns, the next frame fits it.
        self.show(draw_close_machine(counts, stuck_fin_wait_1, self.size.width or 80))


class StateCountBar(Panel):
    DEFAULT_CSS = "StateCountBar { height: 2; }"

    def draw(self, ordered_counts: list[tuple[str, int]]) -> None:
        self.show(draw_count_bar(ordered_counts, max(1, self.size.width)))
