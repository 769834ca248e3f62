"""One connection up close: both ends' queues to the byte, the states each end went through, and
its own packet ladder.

The TCP table shows every socket and rounds queues to fit (2.8M); here the same sample shows
exact byte counts, so a user can hold them against `ss -tn` at the moment the sample was taken.
The history comes from comparing successive sock_diag polls, so a state that lasted less than
one poll interval can be missed; the ladder (SYN, FIN, RST) fills that gap when capturing.
"""

from __future__ import annotations

from typing import ClassVar

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer

from tui.format import address, count_text, short_address, state_color, timer_text
from tui.model import Model
from tui.model.names import peer_key
from tui.model.tcp import Endpoint, is_stuck_closing

from .packets_view import ladder_table
from .panel import Panel


class DetailScreen(Screen[None]):
    """Opened with Enter on a TCP row; Esc (or Enter) goes back to the table."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter,backspace", "dismiss", "Back")]
    DEFAULT_CSS = """
    DetailScreen > VerticalScroll { height: 1fr; }
    DetailScreen Panel { height: auto; }
    """

    def __init__(self, client: Endpoint) -> None:
        super().__init__()
        self.client = client

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Panel(id="detail-ends")
            yield Panel(id="detail-history")
            yield Panel(id="detail-ladder")
        yield Footer()

    def refresh_from(self, model: Model) -> None:
        self.query_one("#detail-ends", Panel).show(ends_table(model, self.client))
        self.query_one("#detail-history", Panel).show(history_table(model, self.client))
        self.query_one("#detail-ladder", Panel).show(connection_ladder(model, self.client))


def title(model: Model, client: Endpoint) -> Text:
    client_id = model.names.by_peer.get(peer_key(client), "")
    text = Text.assemble(("connection ", "bold"), (address(client), "bold cyan"))
    text.append(f" ⇄ server port {model.port}")
    text.append(f" · client id {client_id}" if client_id else " · no client id (no CONNECT seen)")
    return text


def ends_table(model: Model, client: Endpoint) -> Group:
    """Both ends from the sample on screen, queues in exact bytes, and when that sample was taken."""
    tcp = model.tcp
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False, padding=(0, 1, 0, 0))
    for column in ("end", "state", "Send-Q", "Recv-Q", "timer", "inode"):
        table.add_column(column, no_wrap=True, justify="right" if column.endswith("-Q") else "left")
    ends = tcp.ends_of(client)
    for row in ends:
        stuck = is_stuck_closing(row)
        table.add_row(
            f"{tcp.side(row)} {short_address(row.local)}",
            Text(row.state, style="bold white on red" if stuck else state_color(row.state)),
            count_text(row.send_q),
            count_text(row.recv_q),
            timer_text(row.timer, row.timer_left_ms),
            str(row.inode) if row.inode else "-",
        )
    age = model.now - tcp.sampled_at if tcp.sampled_at else None
    when = f"queues in bytes · sock_diag poll {tcp.polls:,}"
    if age is not None:
        when += f", taken {age:.1f} s before this frame"
    caption = Text(when if ends else f"no socket of this connection in the latest poll ({when})", style="dim")
    return Group(title(model, client), table, caption)


def history_table(model: Model, client: Endpoint) -> Group:
    history = model.tcp.history_of(client)
    heading = Text("state history (one line per change seen between two polls)", style="bold")
    if not history:
        return Group(heading, Text("no change seen yet", style="dim"))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("when", justify="right", no_wrap=True)
    table.add_column("end", no_wrap=True)
    table.add_column("now in", no_wrap=True)
    for change in history:
        ago = model.now - change.t if change.t else 0.0
        if change.state:
            state = Text(change.state, style=state_color(change.state))
        else:
            state = Text("gone from the dump (closed)", style="dim")
        table.add_row(f"{ago:.1f} s ago", change.side, state)
    return Group(heading, table)


def connection_ladder(model: Model, client: Endpoint) -> Group:
    heading = Text("its packets (SYN, FIN, RST)", style="bold")
    if not model.capturing:
        return Group(heading, Text(model.note("packets") or "capture off", style="dim"))
    rungs = model.ladder.rungs_for(client)
    if not rungs:
        return Group(heading, Text("no segment of this connection captured", style="dim"))
    return Group(heading, ladder_table(rungs, model.ladder.first_t))
