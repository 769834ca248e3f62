"""The packets view: a ladder of the SYN, FIN and RST segments on the port, as they pass.

A child process captures them behind a kernel BPF filter (libpcap compiles it), so only the
segments that open and close connections cost any Python. Read a close from top to bottom:
FIN from the side that closes first, FIN back from the other when it closes too. The summary
counts the segments the kernel dropped because the capture buffer was full; the notes of a
connection that may have lost some say so instead of guessing its states.

The row cursor works like ``less +F``: on the newest row the ladder follows new segments; moved
up, it holds its place (new segments do not scroll it) until End.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.color import Color
from textual.containers import Vertical

from tui.format import count_text, short_address
from tui.model import Model
from tui.model.packets import Ladder, Rung

from .navigation import Move, moved, page_start
from .panel import Panel

ARROW_WIDTH = 18
NARROW_ARROW_WIDTH = 16  # below WIDE_COLUMNS the arrows give two cells to the notes
WIDE_COLUMNS = 100
COLUMN_GAP = 3  # a column's right padding, the box's blank divider, the next one's left padding
HEADER_LINES = 2  # the column titles and the rule under them
FLAG_STYLES = {"SYN": "cyan", "FIN": "yellow", "RST": "bold red"}
# Shorter wording, a step at a time, for a notes column too narrow: every state name stays whole.
SHORTER = (
    (" (60 s)", ""),
    ("server", "srv"),
    ("client", "cli"),
    ("segments dropped", "drops"),
    ("SYN not seen", "no SYN"),
    ("CLOSED at once, no", "CLOSED, no"),
)


class PacketsView(Vertical):
    DEFAULT_CSS = """
    PacketsView > #packets-summary { height: 1; }
    PacketsView > #ladder { height: 1fr; }
    PacketsView > #ladder-position { height: 1; color: $text-muted; }
    PacketsView > #ladder-position { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cursor: int | None = None  # the rung number under the cursor; None: the newest, following
        self.start = 0  # the rung number of the first row on screen
        self._ladder: Ladder | None = None
        self._cursor_style = ""

    def compose(self) -> ComposeResult:
        yield Panel(id="packets-summary")
        yield Panel(id="ladder")
        yield Panel(id="ladder-position")

    @property
    def following(self) -> bool:
        return self.cursor is None

    @property
    def page_rows(self) -> int:
        return max(1, self.query_one("#ladder", Panel).size.height - HEADER_LINES)

    def navigate(self, move: Move) -> None:
        """Move the row cursor; landing on the newest row follows new segments again."""
        ladder = self._ladder
        if ladder is None or not ladder.rungs:
            return
        first, rows = ladder.first_kept, len(ladder.rungs)
        index = rows - 1 if self.cursor is None else max(0, self.cursor - first)
        index = moved(index, move, rows, self.page_rows)
        self.cursor = None if index == rows - 1 else first + index

    def refresh_from(self, model: Model) -> None:
        ladder = self._ladder = model.ladder
        self.query_one("#packets-summary", Panel).show(summary_text(model))
        ladder_panel = self.query_one("#ladder", Panel)
        page, highlight = self._page(ladder)
        width, style = ladder_panel.size.width or None, self._style()
        table = ladder_table(page, ladder.first_t, width=width, highlight=highlight, highlight_style=style)
        ladder_panel.show(table, key=(tuple(page), ladder.first_t, highlight, width, style))
        self.query_one("#ladder-position", Panel).show(self._position(ladder))

    def _page(self, ladder: Ladder) -> tuple[list[Rung], int | None]:
        """The rungs on screen and the cursor's row among them (None if the ladder is empty)."""
        rows, first, page_rows = len(ladder.rungs), ladder.first_kept, self.page_rows
        if not rows:
            return [], None
        if self.cursor is None:
            cursor_index, start_index = rows - 1, max(0, rows - page_rows)
        else:
            cursor_index = max(0, min(rows - 1, self.cursor - first))  # its rung may have been let go
            self.cursor = first + cursor_index
            start_index = page_start(cursor_index, self.start - first, page_rows, rows)
        self.start = first + start_index
        page = [ladder.rungs[index] for index in range(start_index, min(rows, start_index + page_rows))]
        return page, cursor_index - start_index

    def _position(self, ladder: Ladder) -> Text:
        if not ladder.rungs:
            return Text("")
        let_go = f" · the oldest {count_text(ladder.first_kept)} let go" if ladder.first_kept else ""
        if self.cursor is None:
            newest = f"following the newest of {count_text(ladder.total)}"
            return Text(f"{newest}{let_go} · ↑ PgUp Home scroll back")
        return Text.assemble(
            (f"held at {count_text(self.cursor + 1)} of {count_text(ladder.total)}", "bold yellow"),
            f" · End follows{let_go}",
        )

    def _style(self) -> str:
        """The cursor row's style: the accent at 45% over the background, as the tables' cursor."""
        if not self._cursor_style:
            variables = self.app.get_css_variables()
            background, accent = Color.parse(variables["background"]), Color.parse(variables["accent"])
            self._cursor_style = f"bold on {background.blend(accent, 0.45).hex}"
        return self._cursor_style


def summary_text(model: Model) -> Text:
    """Segments captured and dropped first: the numbers that say whether the ladder is whole."""
    ladder, note = model.ladder, model.note("packets")
    if note and not model.capturing:
        return Text(f"capture off: {note}", style="bold yellow")
    if note:
        return Text(note, style="yellow")
    if ladder.dropped:
        dropped = (f"{count_text(ladder.dropped)} dropped by the kernel (capture buffer full)", "bold red")
    else:
        dropped = ("0 dropped by the kernel", "")
    skipped = f", {count_text(ladder.skipped)} let go unseen during a pause" if ladder.skipped else ""
    return Text.assemble(
        (f"{count_text(ladder.total)} segments", "bold"),
        ", ",
        dropped,
        (skipped, "bold red"),
        f" · SYN, FIN or RST on port {model.port}; the kernel filters out pure ACKs",
    )


def ladder_table(
    rungs: list[Rung],
    start: float,
    *,
    width: int | None = None,
    highlight: int | None = None,
    highlight_style: str = "reverse",
) -> Table:
    """Times count from ``start``, the first segment captured. ``width``: the cells available, so
    narrow screens get narrower arrows and short notes; ``highlight``: the cursor's index in ``rungs``."""
    arrow_width = ARROW_WIDTH if width is None or width >= WIDE_COLUMNS else NARROW_ARROW_WIDTH
    times = [f"+{rung.segment.t - start:.3f}s" for rung in rungs]
    clients = [short_address(rung.client) for rung in rungs]
    fixed = max(map(len, times), default=0) + max(map(len, clients), default=0) + arrow_width
    note_width = None if width is None else width - fixed - 3 * COLUMN_GAP
    table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, pad_edge=False, padding=(0, 1))
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("client", no_wrap=True)
    table.add_column(f"{'client':<{arrow_width - 6}}server", no_wrap=True, width=arrow_width)
    table.add_column("the segment moves", ratio=1, no_wrap=True, overflow="ellipsis")
    for index, (rung, when, client) in enumerate(zip(rungs, times, clients, strict=True)):
        note = rung.note if note_width is None else shortened(rung.note, note_width)
        style = highlight_style if index == highlight else None
        table.add_row(when, client, arrow(rung, arrow_width), Text(note, style="dim"), style=style)
    return table


def shortened(note: str, width: int = 0) -> str:
    """``note`` in ``width`` cells if it can be, shortened only as far as needed: "client LAST_ACK;
    server TIME_WAIT (60 s)", then "client LAST_ACK; server TIME_WAIT", ... "cli LAST_ACK; srv TIME_WAIT"."""
    for long, short in SHORTER:
        if len(note) <= width:
            break
        note = note.replace(long, short)
    return note


def arrow(rung: Rung, width: int = ARROW_WIDTH) -> Text:
    """──SYN──────────▶ from the client, ◀─────FIN,ACK── from the server."""
    label = f" {rung.flags} "
    shaft = width - 1 - len(label)
    style = next((style for flag, style in FLAG_STYLES.items() if flag in rung.flags), "")
    if rung.to_server:
        return Text.assemble("──", (label, style), "─" * (shaft - 2) + "▶")
    return Text.assemble("◀" + "─" * (shaft - 2), (label, style), "──")
