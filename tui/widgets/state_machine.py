"""TCP's close handshake as a drawing, each state lit up with how many sockets are in it now.

Top row, the active closer (it called close() first): FIN_WAIT_1, FIN_WAIT_2 once its FIN is
ACKed, TIME_WAIT once the peer's FIN arrives. Bottom row, the passive closer: CLOSE_WAIT
until its application calls close(), then LAST_ACK. Middle: both sent FIN at once (CLOSING).
Also here: the count bar, the notes' `netstat -tan | awk '{++S[$NF]} END {...}'` drawn live.
"""

from __future__ import annotations

from rich.text import Text

from tui.format import state_color

from .panel import Panel

# The drawing: each state name sits at a fixed (row, column); its count goes one row below,
# at count_column. 76 columns wide, so it fits an 80-column terminal.
DRAWING = (
    "ESTABLISHED ─close▶ FIN_WAIT_1 ─ACK▶ FIN_WAIT_2 ─FIN▶ TIME_WAIT ─60s▶ CLOSED",
    " │                   │                                ▲",
    " │                   └─FIN▶ CLOSING ─ACK──────────────┘",
    " │",
    " └─FIN▶ CLOSE_WAIT ─close▶ LAST_ACK ─ACK▶ CLOSED",
    "",
)
LABELS = ((1, 63, "active close"), (3, 36, "simultaneous close"), (5, 49, "passive close"))
STATES = (  # (name, row, count row, count column)
    ("ESTABLISHED", 0, 1, 4),
    ("FIN_WAIT_1", 0, 1, 24),
    ("FIN_WAIT_2", 0, 1, 40),
    ("TIME_WAIT", 0, 1, 58),
    ("CLOSING", 2, 3, 28),
    ("CLOSE_WAIT", 4, 5, 10),
    ("LAST_ACK", 4, 5, 28),
)


def _place(line: str, column: int, text: str) -> str:
    return line.ljust(column)[:column] + text + line[column + len(text) :]


def draw_close_machine(counts: dict[str, int], stuck_fin_wait_1: bool = False) -> Text:
    """The drawing with counts; states holding sockets are highlighted, the rest dimmed."""
    lines = list(DRAWING)
    for row, column, label in LABELS:
        lines[row] = _place(lines[row], column, label)
    for name, _row, count_row, count_column in STATES:
        lines[count_row] = _place(lines[count_row], count_column, f"{counts.get(name, 0):,}")
    text = Text("\n".join(lines), style="grey62")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    for row, _column, label in LABELS:
        position = starts[row] + lines[row].index(label)
        text.stylize("italic grey50", position, position + len(label))
    for name, row, count_row, count_column in STATES:
        count = counts.get(name, 0)
        position = starts[row] + lines[row].index(name)
        count_position = starts[count_row] + count_column
        count_width = len(f"{count:,}")
        if count:
            urgent = name == "FIN_WAIT_1" and stuck_fin_wait_1
            background = "red" if urgent else state_color(name)
            text.stylize(f"bold black on {background}", position, position + len(name))
            text.stylize(f"bold {state_color(name)}", count_position, count_position + count_width)
        else:
            text.stylize("grey50", position, position + len(name))
            text.stylize("grey35", count_position, count_position + count_width)
    return text


SHORT_NAMES = {  # `ss` spells these the short way too; used when the full legend would not fit
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
        self.show(draw_close_machine(counts, stuck_fin_wait_1))


class StateCountBar(Panel):
    DEFAULT_CSS = "StateCountBar { height: 2; }"

    def draw(self, ordered_counts: list[tuple[str, int]]) -> None:
        self.show(draw_count_bar(ordered_counts, max(1, self.size.width)))
