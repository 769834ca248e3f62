"""The TCP view: every socket on the server's port, what `ss -tno` shows, read over netlink.

The kernel filters by port (sock_diag bytecode), so the cost is one dump per poll however
many other sockets the machine has. Both ends of a loopback connection appear, marked
server or client; FIN_WAIT_1 rows with unsent bytes (the notes' pile-up) are drawn in red.
Queues are shown in human units (2.8M) so no number is ever cut; the detail screen (Enter)
has the exact byte counts.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from tui.format import count_text, short_address, size_text, state_color, timer_text
from tui.model import Model
from tui.model.names import peer_key
from tui.model.tcp import SORT_KEYS, is_stuck_closing
from tui.sources.tcp_states import TcpSocket

from .navigation import Move
from .paged_table import Cells, PagedTable
from .panel import Panel
from .state_machine import CloseStateMachine, StateCountBar

COLUMNS = [  # (label, key = the sort key it stands for, width); the client id takes what is left
    ("state", "state", 12),
    ("side", "side", 6),
    ("client", "client", 15),
    ("Send-Q", "send-q", 7),
    ("Recv-Q", "recv-q", 7),
    ("timer", "timer", 13),
    ("client id", "client_id", 24),
]


def column_widths(total: int) -> list[int]:
    """Widths for a table ``total`` cells wide: the client id gets what the others leave.

    Below 100 columns the client end shrinks to a loopback port (":50004"), so that at 80 columns
    a client id such as sub-alice-00017 is still whole.
    """
    widths = [width for _, _, width in COLUMNS[:-1]]
    if total < 100:
        widths[2] = 8
    padding = 2 * len(COLUMNS)  # DataTable pads each cell by one on either side
    return [*widths, max(10, total - sum(widths) - padding)]


class TcpView(Vertical):
    DEFAULT_CSS = "TcpView > #tcp-status { height: 1; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.model: Model | None = None

    def compose(self) -> ComposeResult:
        yield CloseStateMachine()
        yield StateCountBar()
        yield Panel(id="tcp-status")
        yield PagedTable(
            COLUMNS,
            noun="sockets",
            id="sockets",
            widths=column_widths,
            row_key=lambda row: (row.local, row.remote),
        )

    @property
    def table(self) -> PagedTable[TcpSocket]:
        return self.query_one("#sockets", PagedTable)

    def navigate(self, move: Move) -> None:
        self.table.navigate(move)

    def selected(self) -> TcpSocket | None:
        """The socket under the cursor, as last drawn."""
        return self.table.cursor_row

    def refresh_from(self, model: Model) -> None:
        self.model = model
        tcp = model.tcp
        self.query_one(CloseStateMachine).draw(tcp.counts, tcp.stuck > 0)
        self.query_one(StateCountBar).draw(tcp.ordered_counts())
        self.query_one("#tcp-status", Panel).show(status_line(model))
        table = self.table
        table.set_labels(header_labels(tcp.sort_key, tcp.reverse))
        note = model.note("collector")
        table.show(tcp.shown(), lambda row: socket_cells(model, row), note)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """Click a column header to sort by it; click it again to reverse."""
        key = str(event.column_key.value)
        if self.model is None:
            return
        key = key if key in SORT_KEYS else "client"
        tcp = self.model.tcp
        tcp.set_sort(key, reverse=not tcp.reverse if key == tcp.sort_key else False)
        self.refresh_from(self.model)


def header_labels(sort_key: str, reverse: bool) -> list[str]:
    """Column labels with ▼ (or ▲ reversed) on the sort column, as htop marks it."""
    mark = "▲" if reverse else "▼"
    return [f"{label}{mark}" if key == sort_key else label for label, key, _ in COLUMNS]


def status_line(model: Model) -> Text:
    tcp = model.tcp
    arrow = "▲ reversed" if tcp.reverse else "▼"
    shown = len(tcp.shown())
    text = Text.assemble(
        ("showing ", "dim"), (tcp.filters.describe(), "bold"),
        ("" if not tcp.filters.any else f" ({count_text(shown)})", "bold"),
        (" by ", "dim"), (f"{tcp.sort_key} {arrow}", "bold"),
    )  # fmt: skip
    if tcp.filters.any:
        text.append(" · Esc clears", style="dim")
    if tcp.stuck:
        text.append(f" · {count_text(tcp.stuck)} FIN_WAIT_1 with unsent data", style="bold red")
    if model.closes:
        last = model.closes[-1]
        text.append(f" · closed {last.label or 'fd ' + str(last.fd)}: {last.reason}", style="dim")
    return text


def socket_cells(model: Model, row: TcpSocket) -> Cells:
    tcp = model.tcp
    stuck = is_stuck_closing(row)
    listening = row.state == "LISTEN"
    client_end = tcp.client_end(row)
    # LISTEN's Recv-Q is its accept queue and its Send-Q the backlog: counts, not bytes.
    send_q_text = str(row.send_q) if listening else size_text(row.send_q)
    recv_q_text = str(row.recv_q) if listening else size_text(row.recv_q)
    send_q_style = "bold red" if stuck else ("yellow" if row.send_q and not listening else "")
    send_q = Text(send_q_text, style=send_q_style)
    return (
        Text(row.state, style="bold white on red" if stuck else state_color(row.state)),
        tcp.side(row) if not listening else "server",
        short_address(client_end) if not listening else short_address(row.local),
        send_q,
        Text(recv_q_text, style="yellow" if row.recv_q and not listening else ""),
        timer_text(row.timer, row.timer_left_ms),
        model.names.by_peer.get(peer_key(client_end), ""),
    )
