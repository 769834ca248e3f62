"""The TCP view: every socket on the server's port, what `ss -tno` shows, read over netlink.

The kernel filters by port (sock_diag bytecode), so the cost is one dump per poll however
many other sockets the machine has. Both ends of a loopback connection appear, marked
server or client; FIN_WAIT_1 rows with unsent bytes (the notes' pile-up) are drawn in red.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from tui.format import address, state_color, timer_text
from tui.model import Model
from tui.model.names import peer_key
from tui.model.tcp import SORT_KEYS, is_stuck_closing
from tui.sources.tcp_states import TcpSocket

from .paged_table import Cells, PagedTable
from .panel import Panel
from .state_machine import CloseStateMachine, StateCountBar

COLUMNS = [
    ("state", "state", 12),
    ("side", "side", 6),
    ("client end", "client", 17),
    ("Send-Q", "send-q", 7),
    ("Recv-Q", "recv-q", 7),
    ("timer", "timer", 15),
    ("client id", "client_id", 18),
]


class TcpView(Vertical):
    DEFAULT_CSS = "TcpView > #tcp-status { height: 1; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.model: Model | None = None

    def compose(self) -> ComposeResult:
        yield CloseStateMachine()
        yield StateCountBar()
        yield Panel(id="tcp-status")
        yield PagedTable(COLUMNS, noun="sockets", id="sockets")

    def turn(self, pages: int) -> None:
        self.query_one(PagedTable).turn(pages)

    def refresh_from(self, model: Model) -> None:
        self.model = model
        tcp = model.tcp
        self.query_one(CloseStateMachine).draw(tcp.counts, tcp.stuck > 0)
        self.query_one(StateCountBar).draw(tcp.ordered_counts())
        self.query_one("#tcp-status", Panel).show(status_line(model))
        note = model.note("collector")
        self.query_one(PagedTable).show(tcp.shown(), lambda row: socket_cells(model, row), note)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """Click a column header to sort by it (the client id column sorts by client end)."""
        key = str(event.column_key.value)
        if self.model is not None:
            self.model.tcp.set_sort(key if key in SORT_KEYS else "client")
            self.refresh_from(self.model)


def status_line(model: Model) -> Text:
    tcp = model.tcp
    text = Text.assemble(
        ("showing ", "dim"), (tcp.state_filter or "all", "bold"), (" by ", "dim"), (tcp.sort_key, "bold")
    )
    if tcp.stuck:
        text.append(f" · {tcp.stuck} FIN_WAIT_1 with unsent data", style="bold red")
    if model.closes:
        last = model.closes[-1]
        text.append(f" · closed {last.label or 'fd ' + str(last.fd)}: {last.reason}", style="dim")
    return text


def socket_cells(model: Model, row: TcpSocket) -> Cells:
    tcp = model.tcp
    stuck = is_stuck_closing(row)
    client_end = tcp.client_end(row)
    send_q = Text(f"{row.send_q:,}", style="bold red" if stuck else ("yellow" if row.send_q else ""))
    return (
        Text(row.state, style="bold white on red" if stuck else state_color(row.state)),
        tcp.side(row) if row.state != "LISTEN" else "server",
        address(client_end) if row.state != "LISTEN" else address(row.local),
        send_q,
        Text(f"{row.recv_q:,}", style="yellow" if row.recv_q and row.state != "LISTEN" else ""),
        timer_text(row.timer, row.timer_left_ms),
        model.names.by_peer.get(peer_key(client_end), ""),
    )
