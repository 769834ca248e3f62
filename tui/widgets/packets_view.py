"""The packets view: a ladder of the SYN, FIN and RST segments on the port, as they pass.

A child process captures them with scapy behind a kernel BPF filter (libpcap compiles it),
so only the segments that open and close connections cost any Python. Read a close from top
to bottom: FIN from the side that closes first, FIN back from the other when it closes too.
"""

from __future__ import annotations

from itertools import islice

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from tui.format import short_address
from tui.model import Model
from tui.model.packets import Rung

from .panel import Panel

ARROW_WIDTH = 18
FLAG_STYLES = {"SYN": "cyan", "FIN": "yellow", "RST": "bold red"}


class PacketsView(Vertical):
    DEFAULT_CSS = """
    PacketsView > #packets-summary { height: 1; }
    PacketsView > #ladder { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Panel(id="packets-summary")
        yield Panel(id="ladder")

    def refresh_from(self, model: Model) -> None:
        ladder = model.ladder
        note = model.note("packets")
        if note and not model.capturing:
            summary = Text(f"capture off: {note}", style="bold yellow")
        elif note:
            summary = Text(note, style="yellow")
        else:
            summary = Text.assemble(
                (f"{ladder.total:,} segments", "bold"),
                f" with SYN, FIN or RST on port {model.port}; the kernel filters out pure ACKs",
            )
        self.query_one("#packets-summary", Panel).show(summary)
        ladder_panel = self.query_one("#ladder", Panel)
        rows = max(1, ladder_panel.size.height - 2)
        rungs = list(islice(reversed(ladder.rungs), rows))[::-1]
        ladder_panel.show(ladder_table(rungs, ladder.first_t), key=(tuple(rungs), ladder.first_t))


def ladder_table(rungs: list[Rung], start: float) -> Table:
    """Times count from the first segment captured."""
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, padding=(0, 1))
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("client", no_wrap=True)
    table.add_column(f"{'client':<{ARROW_WIDTH - 6}}server", no_wrap=True, width=ARROW_WIDTH)
    table.add_column("the segment moves", ratio=1, no_wrap=True, overflow="ellipsis")
    for rung in rungs:
        when = f"+{rung.segment.t - start:.3f}s"
        table.add_row(when, short_address(rung.client), arrow(rung), Text(rung.note, style="dim"))
    return table


def arrow(rung: Rung) -> Text:
    """──SYN──────────▶ from the client, ◀─────FIN,ACK── from the server."""
    label = f" {rung.flags} "
    shaft = ARROW_WIDTH - 1 - len(label)
    style = next((style for flag, style in FLAG_STYLES.items() if flag in rung.flags), "")
    if rung.to_server:
        return Text.assemble("──", (label, style), "─" * (shaft - 2) + "▶")
    return Text.assemble("◀" + "─" * (shaft - 2), (label, style), "──")
