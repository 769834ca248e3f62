"""The help screen: which keys work (first, one line each, so they are above the fold at 80×24),
then what pausing does, what each tab shows and where its data comes from."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown, Static

KEYS = (
    ("1 – 4", "switch tab"),
    ("↑ ↓ PgUp PgDn", "move the row cursor ([ and ] page too)"),
    ("Home End", "first / last row; Packets: End follows new segments"),
    ("/", "TCP: search id, address or port; Enter keeps, Esc cancels"),
    ("Enter", "TCP: the connection under the cursor: bytes, history, packets"),
    ("f", "TCP: one state (cycles through the states present)"),
    ("u", "TCP: only sockets with unsent data (Send-Q > 0)"),
    ("c", "TCP: only the connection under the cursor; again for all"),
    ("Esc", "TCP: clear every filter and the search"),
    ("s   r", "TCP: sort by state, client, Send-Q, Recv-Q, timer / reverse"),
    ("p", "pause / resume (see Pause below)"),
    ("?  F1", "this help; Esc closes it"),
    ("q  ctrl+c", "quit (stops a server the TUI started); works here too"),
)

HELP = """\
**Pause** (`p`): every view freezes on the frame shown when you pressed `p`, and the status
line gives the wall-clock time of that frame's TCP sample, so its numbers can be held against
`ss -tan` from that moment. Telemetry and the packet capture are still read in the background,
so no event or segment is lost and drop counts stay exact; they appear when you resume. The
kernel polls (sock_diag dumps, `/proc/PID/fd`, fdinfo, task) stop. Only a LISTEN-only dump and
`/proc/PID/stat` go on, four times a second, so the line still says if the server dies or the
port closes.

**1 Ready list**: one column per wait call (height = ready fds, yellow = an fd ready in three
or more waits in a row: level-triggered epoll does that while bytes stay unread), the
latest ready lists fd by fd with the MQTT client behind each fd, and the interest set the
kernel keeps, read from `/proc/PID/fdinfo/EPFD` (ET and ONESHOT flags, socket inode, Recv-Q).
ERR|HUP, which `epoll_ctl` adds to every fd, are left out; "ONESHOT (fired)" means nothing is
armed until the next EPOLL_CTL_MOD. The headline shows a streak as current only while it runs,
else "ended N s ago". Threaded servers: "w1 12" is worker-1's 12th wait (calls, gaps and
streaks are counted per thread).

**2 TCP**: every socket of the port from netlink sock_diag (the kernel filters by port):
state, Send-Q, Recv-Q (in K/M: powers of 1,024; `Enter` shows exact bytes), timer. The count
bar is the notes' `netstat -tan | awk '/^tcp/ {++S[$NF]} END {for (a in S) print a, S[a]}'`.
The drawing is TCP's close: the side that closes first goes FIN_WAIT_1 → FIN_WAIT_2 →
TIME_WAIT (60 s); the other sits in CLOSE_WAIT until it closes, then LAST_ACK.
FIN_WAIT_1 with a non-empty Send-Q (red) is a FIN stuck behind data the peer will not take.

**3 Threads**: one row per server thread from `/proc/PID/task`: the syscall it sleeps in
(`/proc/PID/task/TID/syscall`), CPU, context switches per second, and lock wait and hold from
the server's telemetry (units in the second header line). Below, a timeline per thread: how
much of each 0.25 s slice it held the lock and how much it waited for it. A hold still in
progress (a worker blocked in a read with the mutex held) is shown with its running length.

**4 Packets**: SYN, FIN and RST segments on the port, captured by a child process behind a
kernel BPF filter (needs root and libpcap). The summary counts the segments the kernel dropped
(capture buffer full); a connection that may have lost one says "state unknown" rather than
guessing. ↑ ↓ PgUp PgDn Home move the cursor and hold the ladder still; End follows new
segments again.
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100%; max-width: 110; height: 1fr; border: round $accent;
                                  background: $surface; padding: 0 1; }
    HelpScreen #help-keys { height: auto; margin-bottom: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,h,f1", "dismiss", "Close", key_display="Esc"),
        # A modal screen shields the app's bindings; these two must work everywhere.
        Binding("q", "app.quit", "Quit"),
        Binding("p", "app.toggle_pause", "Pause"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(key_table(), id="help-keys")
            yield Markdown(HELP)
        yield Footer()


def key_table() -> Table:
    """One line per key, short enough for 80 columns, so the whole table is above the fold."""
    table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True, width=15)
    table.add_column(no_wrap=True, overflow="ellipsis")
    for key, does in KEYS:
        table.add_row(key, does)
    return table
